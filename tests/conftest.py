"""Shared fixtures: a project folder with params.yaml and a small lake cut from the bundled
raw Adult data (same raw format, a few hundred rows a batch)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from tarn.config import Params, params_from_dict
from tarn.datasets import ADULT_COLUMNS, adult_lines

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def repo_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(root: Path, overrides: dict | None = None) -> Params:
    """params.yaml in ``root``: the repo's, with nested ``overrides`` applied."""
    raw = repo_params_dict()
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return params_from_dict(raw)


def adult_csv(part: str, start: int, n: int) -> str:
    lines = adult_lines(part)[start:start + n]
    return "\n".join([", ".join(ADULT_COLUMNS), *lines]) + "\n"


def write_small_lake(lake: Path, n_train: int = 400, n_test: int = 200) -> None:
    """Two train batches and one test batch, raw format, as `tarn lake seed` would write."""
    for name, part, start, n in [("0001-adult-train", "train", 0, n_train),
                                 ("0002-adult-train", "train", n_train, n_train),
                                 ("0003-adult-test", "test", 0, n_test)]:
        (lake / name).mkdir(parents=True)
        (lake / name / "adult.csv").write_text(adult_csv(part, start, n))


@pytest.fixture
def project(tmp_path: Path) -> tuple[Params, Path]:
    """(params, root) of a fresh project with a small lake at data/lake."""
    params = write_params(tmp_path)
    write_small_lake(tmp_path / "data" / "lake")
    return params, tmp_path


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A git + DVC repo holding this project's pipeline files (src/, dvc.yaml, params.yaml)."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    return root
