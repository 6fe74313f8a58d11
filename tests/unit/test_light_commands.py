"""The commands that only read state load none of the heavy libraries: importing the CLI
(`tarn --help`), status and report, and the registry's read-only view, in a fresh process,
leaves MLflow, scikit-learn, XGBoost, ONNX, Evidently, Dask and FastAPI out of sys.modules
(their imports are what made `tarn status` take 6-10 s; bench/bench_cli.py times them)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("mlflow", "sklearn", "xgboost", "onnx", "onnxruntime", "skl2onnx", "onnxmltools",
         "evidently", "dask", "distributed", "fastapi", "uvicorn", "matplotlib", "shap")


def loaded_after(*modules: str) -> list[str]:
    """The heavy top-level packages in sys.modules after importing ``modules`` afresh."""
    code = (f"import importlib, json, sys\nfor m in {list(modules)!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(h for h in {list(HEAVY)!r} if h in sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.mark.parametrize("modules", [
    ("tarn.cli",),
    ("tarn.lifecycle.status",),
    ("tarn.lifecycle.report",),
    ("tarn.core.registry", "tarn.core.registry.view"),
])
def test_the_read_paths_import_no_heavy_library(modules):
    assert loaded_after(*modules) == []


def test_the_check_sees_a_heavy_import():
    """The assertion above can fail: a module that does pull one in is seen."""
    assert loaded_after("tarn.core.registry.view", "fastapi") == ["fastapi"]
