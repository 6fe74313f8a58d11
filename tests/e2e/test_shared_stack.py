"""The lifecycle against what a team shares: `mlflow server` on PostgreSQL with artifacts in an
S3 bucket (moto_server), checked through the server's REST API and the bucket itself."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from tarn.core.tags import Lineage
from tarn.lifecycle import retrain
from tarn.lifecycle.promote import promote
from tarn.stages import train, tune
from tests.support.project import prior_shifted, small_project, write_batch
from tests.support.servers import free_port
from tests.support.serving import Server, sample_rows, server_env, wait_version

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=data,
                                 headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def version_tags(url: str, name: str, version: str) -> dict:
    q = urllib.parse.urlencode({"name": name, "version": version})
    mv = api(url, f"model-versions/get?{q}")["model_version"]
    return {**mv, "tags": {t["key"]: t["value"] for t in mv.get("tags", [])}}


def test_tune_train_promote_serve_retrain_on_postgres_and_s3(tmp_path, shared_stack):
    url = shared_stack.url
    root = tmp_path / "p"
    root.mkdir()
    params = small_project(root, lake=(2000, 600), **{
        "mlflow.tracking_uri": url, "mlflow.experiment": "shared",
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.2,
        "monitor.min_rows": 50})
    tuned = tune.run(params, root)
    trained = train.run(params, root)

    # what the UI shows: the experiment, one child run per trial, the version with its lineage
    exp = api(url, "experiments/get-by-name?experiment_name=shared")["experiment"]
    assert exp["artifact_location"].startswith("mlflow-artifacts:")  # proxied to the bucket
    runs = api(url, "runs/search", {
        "experiment_ids": [exp["experiment_id"]],
        "filter": f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'", "max_results": 100})
    assert len(runs["runs"]) == params.tune.max_evals
    mv = version_tags(url, "tarn-test", trained.version)
    assert mv["status"] == "READY" and mv["run_id"] == trained.run_id
    assert Lineage.from_tags(mv["tags"]).tune_run_id == tuned.parent_run_id
    # the model's files are objects in the S3 bucket, written by the server
    s3 = shared_stack.s3.client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=shared_stack.bucket) for o in page.get("Contents", [])]
    assert any(k.endswith("/MLmodel") for k in keys) and any(k.endswith(".skops") for k in keys)

    # promotion deploys on a server that knows only the tracking URL
    promote(params, root, trained.version)
    server = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        wait_version(server, trained.version, timeout=60)
        r = server.http.post("/predict", json=sample_rows(root, 5))
        assert r.status_code == 200 and len(r.json()["predictions"]) == 5

        # new data: monitor, retrain incrementally, promote; the server follows
        write_batch(root, "0004-shifted", prior_shifted(800))
        mon, res = retrain.run(params, root, mode="incremental")
        assert mon.new_batches == ["0004-shifted"] and res.promoted, res.refused
        lineage = Lineage.from_tags(version_tags(url, "tarn-test", res.version)["tags"])
        assert lineage.kind == "incremental" and lineage.parent_version == "1"
        wait_version(server, res.version, timeout=60)
        alias = api(url, "registered-models/alias?" + urllib.parse.urlencode(
            {"name": "tarn-test", "alias": "production"}))["model_version"]
        assert alias["version"] == res.version
    finally:
        server.stop()
