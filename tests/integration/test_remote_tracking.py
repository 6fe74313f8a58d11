"""Remote tracking stores: MLflow straight on PostgreSQL, and the faults a shared store has
(a server or database that is down gives a clear error in bounded time, not a long retry)."""

from __future__ import annotations

import socket

import mlflow
import pytest

from tarn.config import MlflowConfig
from tarn.core.tracking import TrackingError, connect
from tarn.stages import tune
from tests.support.project import small_project
from tests.support.servers import Postgres

pytestmark = pytest.mark.cluster


@pytest.mark.slow
def test_tune_tracks_straight_to_postgres(tmp_path, postgres):
    uri = postgres.create_db("direct")
    params = small_project(tmp_path, **{"mlflow.tracking_uri": uri})
    tuned = tune.run(params, tmp_path)
    client = mlflow.MlflowClient(uri)
    children = client.search_runs(
        [client.get_experiment_by_name(params.mlflow.experiment).experiment_id],
        f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'")
    assert len(children) == params.tune.max_evals
    assert {r.data.tags["tarn.status"] for r in children} == {"ok"}


@pytest.mark.timeout(60)
def test_a_tracking_server_that_does_not_answer(tmp_path):
    # a port held bound but not listening: refused, and no other process can take it meanwhile
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{held.getsockname()[1]}"
        with pytest.raises(TrackingError, match="does not answer") as e:
            connect(MlflowConfig(tracking_uri=url), tmp_path)
    assert url in e.value.message and "Scaling out" in e.value.hint


@pytest.mark.timeout(60)
def test_postgres_down_at_start_is_named_without_its_password(tmp_path):
    pg = Postgres()
    try:
        pg.create_db("gone")
        pg.stop()
        uri = pg.url("gone").replace("tarn@", "tarn:s3cret@")
        with pytest.raises(TrackingError, match="not reachable") as e:
            connect(MlflowConfig(tracking_uri=uri), tmp_path)
        assert f"127.0.0.1:{pg.port}/gone" in e.value.message
        assert "s3cret" not in str(e.value)
    finally:
        pg.close()
