"""The whole loop against a running server: a new batch lands, `tarn retrain` monitors,
decides, retrains, promotes, and the server serves the new version."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml

from tarn.core.registry import Registry
from tarn.datasets import ADULT_COLUMNS
from tarn.lifecycle.promote import promote
from tests.support.project import BIN, REPO, make_version, prior_shifted, small_project
from tests.support.serving import server_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):  # overrides conftest's: a DVC repo, gentler gates
    root = tmp_path_factory.mktemp("loop")
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    params = small_project(root, lake=(2000, 600), **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.2,
        "monitor.min_rows": 50, "evaluate.evidently": False})
    make_version(params, root, rounds=40)
    return params, root


def test_new_batch_to_retrained_model_in_production(server, served_project):
    params, root = served_project
    promote(params, root, "1")
    server.admin()
    deadline = time.monotonic() + 30
    while server.http.get("/version").json()["version"] != "1":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    batch = root / "data" / "lake" / "0004-new"
    batch.mkdir()
    (batch / "adult.csv").write_text("\n".join([", ".join(ADULT_COLUMNS),
                                                *prior_shifted(800)]) + "\n")
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["serve"]["notify_url"] = server.url
    (root / "params-cli.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([str(BIN / "tarn"), "--params", str(root / "params-cli.yaml"),
                          "retrain", "--mode", "auto"], env=server_env(), capture_output=True,
                         text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # a prior shift drags most features with it: severe drift, so a full retraining
    assert "decision: full" in out and "full retraining from version 1 -> version 2" in out
    assert "version 2 is production" in out, out
    assert "old vs new model" in out  # the summary table, on the test split and the new data
    assert server.http.get("/version").json()["version"] == "2"  # nudged: already serving
    reg = Registry(params.mlflow, root)
    tags = reg.record_tags("2")
    assert tags["tarn.kind"] == "full" and "tarn.promoted_at" in tags
    assert "0004-new" in tags["tarn.batches"].split(",")  # the fresh snapshot saw it
    assert reg.stage_versions() == ["2"]
