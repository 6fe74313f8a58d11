"""The deployment targets are read light: `tarn status` asks each what it holds, and that
must not import MLflow, scikit-learn or the ONNX tooling (they cost seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.project import write_params

PROBE = """
import sys
from pathlib import Path
from tarn.config import load_params
from tarn.core.targets import Site
from tarn.lifecycle.targets import holdings, stale
root = Path(sys.argv[1])
site = Site(load_params(root / "params.yaml"), root, server_url="http://127.0.0.1:1")
held = holdings(site)
print([(h.target, h.version, h.reachable) for _, h in held])
print(stale(held, "4"))
print(sorted(m for m in ("mlflow", "sklearn", "onnx", "skl2onnx", "xgboost", "pandas")
             if m in sys.modules))
"""


def test_what_each_target_holds_is_read_without_the_heavy_stacks(tmp_path):
    write_params(tmp_path)
    bundles = tmp_path / "bundles"
    (bundles / "tarn-test-v3").mkdir(parents=True)
    (bundles / "current.json").write_text(json.dumps(
        {"name": "tarn-test", "version": "3", "path": "tarn-test-v3", "sha256": "x"}))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0] == "[('backend', None, False), ('bundle', '3', True)]"
    assert "client bundle holds version 3, production is 4" in out[1]
    assert "tarn bundle publish" in out[1] and "backend" not in out[1]  # unreachable: no claim
    assert out[2] == "[]"
