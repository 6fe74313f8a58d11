"""A fresh clone stays clean: the pipeline rewrites no tracked file, so the version it
registers carries the commit it was built from (not ``-dirty``) and `git status` after a run
shows only the one file a user decides to commit: dvc.lock (DVC refuses a git-ignored lock)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tarn.config import load_params
from tarn.core.registry import Registry
from tests.support.project import BIN, FAST_TUNE, REPO, set_param, sh, write_small_lake

pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    """The venv's tools first on PATH, no DVC analytics (as tests.support.project.sh)."""
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _clone(dest: Path) -> Path:
    """The repository's tracked files as they are now (a clone of the working tree)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def test_a_run_on_a_fresh_clone_rewrites_no_tracked_file(tmp_path: Path):
    root = _clone(tmp_path / "clone")
    assert not (root / "dvc.lock").exists()  # a lock describes one machine's outputs
    assert not list((root / "reports").glob("*.json"))  # no stale figures shipped
    for key, value in [("tune.max_evals", 3), *FAST_TUNE.items(),
                       ("tune.early_stopping_rounds", 5), ("evaluate.evidently", False),
                       ("mlflow.registered_model", "tarn-clean")]:
        set_param(root, key, value)
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone")
    head = sh(root, "git", "rev-parse", "HEAD").stdout.strip()
    write_small_lake(root / "data" / "lake")  # the lake is input, outside git
    sh(root, "tarn", "lake", "seed", "--if-empty")  # what `make run` does first: a no-op here
    repro = subprocess.run(["dvc", "repro"], cwd=root, capture_output=True, text=True,
                           timeout=1800, env=_env())  # slow on a loaded machine
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    status = sh(root, "git", "status", "--porcelain", "--untracked-files=all").stdout
    assert status.splitlines() == ["?? dvc.lock"], status
    assert (root / "reports" / "tune.json").is_file()  # written, and ignored
    reg = Registry(load_params(root / "params.yaml", env={}).mlflow, root)
    assert reg.lineage("1").git_commit == head  # not "-dirty"
