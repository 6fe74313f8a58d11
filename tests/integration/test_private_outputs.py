"""Owner-only outputs (issue 21): the tracking database, the curated and quarantine tables and
the snapshot are 0600 files in 0700 folders, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tarn.stages import etl, snapshot
from tests.support.perms import mode, open_umask  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("open_umask")


def test_snapshot_curated_and_quarantine_are_owner_only(lake_project):
    params, root = lake_project
    (root / params.paths.curated).mkdir(parents=True, exist_ok=True)
    os.chmod(root / params.paths.curated, 0o755)  # left by an older release
    snapshot.run(params, root)
    res = etl.run(params, root)
    snap = root / params.paths.snapshot
    for folder, _dirs, files in os.walk(snap):
        assert mode(Path(folder)) == 0o700, folder
        for f in files:
            assert mode(Path(folder) / f) == 0o600, f
    assert len(list(snap.rglob("*.csv"))) >= 1
    assert mode(res.curated) == mode(res.quarantine) == 0o600
    assert mode(res.curated.parent) == 0o700


def test_the_tracking_store_is_owner_only(tmp_path):
    from tarn.config import MlflowConfig
    from tarn.core.tracking import connect

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    try:
        connect(MlflowConfig(experiment="private"), tmp_path)
    finally:  # mlflow.set_tracking_uri writes the environment (docs/facts.md)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    store = tmp_path / MlflowConfig().store_dir
    assert mode(store) == 0o700
    assert mode(store / "mlflow.db") == 0o600
