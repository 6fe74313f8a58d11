"""tune and train against a real `mlflow server`, checked through its REST API (what the UI
shows: the experiment, a parent run with one child per trial, the registered version)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from tarn import train, tune
from tests.integration.test_training import small_project

pytestmark = pytest.mark.slow


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_runs_trials_and_versions_are_visible_on_the_server(tmp_path, mlflow_server):
    params = small_project(tmp_path, **{"mlflow.tracking_uri": mlflow_server,
                                        "mlflow.experiment": "remote-test"})
    tuned = tune.run(params, tmp_path)
    trained = train.run(params, tmp_path)

    exp = api(mlflow_server, "experiments/get-by-name?experiment_name=remote-test")["experiment"]
    runs = api(mlflow_server, "runs/search", {
        "experiment_ids": [exp["experiment_id"]],
        "filter": f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'", "max_results": 100})
    assert len(runs["runs"]) == 4
    q = urllib.parse.urlencode({"name": "tarn-test", "version": trained.version})
    mv = api(mlflow_server, f"model-versions/get?{q}")["model_version"]
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags["tarn.tune_run_id"] == tuned.parent_run_id
    assert mv["run_id"] == trained.run_id and mv["status"] == "READY"
    arts = api(mlflow_server, f"artifacts/list?run_id={trained.run_id}")
    assert arts is not None
    # the model's files went through the server's artifact proxy, not a local path
    import mlflow
    model = mlflow.pyfunc.load_model(f"models:/tarn-test/{trained.version}")
    assert model.metadata.signature.inputs.input_names()[0] == "age"
