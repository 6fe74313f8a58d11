"""An MLflow registry webhook from a real `mlflow server` deploys on our server.

The tarn server polls only every 10 minutes here, so a deployment within seconds can only
come from the webhook. docs/facts.md: a loopback http webhook needs
MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https and MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true.
"""

from __future__ import annotations

import time

import pytest
from cryptography.fernet import Fernet

from tarn.core.registry import Registry, RegistryError
from tarn.lifecycle.promote import promote
from tests.support.project import make_version, small_project
from tests.support.servers import free_port, start_shared_mlflow
from tests.support.serving import HOOK, Server, server_env, wait_version

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture
def remote(tmp_path, postgres, s3):
    """A team's tracking server: PostgreSQL backend, artifacts in an S3 bucket."""
    stack = start_shared_mlflow(
        tmp_path, postgres, s3, MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
        MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true", MLFLOW_WEBHOOK_CACHE_TTL="1",
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=Fernet.generate_key().decode())
    yield stack.mlflow
    stack.mlflow.stop()


def test_alias_set_on_the_tracking_server_deploys_through_the_webhook(tmp_path, remote):
    root = tmp_path / "p"
    root.mkdir()
    params = small_project(root, **{"mlflow.tracking_uri": remote.url,
                                    "serve.poll_interval_s": 600,
                                    "serve.notify_url": "",
                                    "promote.max_demographic_parity_difference": 0.6})
    make_version(params, root)
    server = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        assert server.http.get("/version").json()["version"] is None
        reg = Registry(params.mlflow, root)
        reg.register_webhook(f"{server.url}/webhooks/mlflow", HOOK)
        # no wait needed: the tracking server caches an event kind's webhooks (for
        # MLFLOW_WEBHOOK_CACHE_TTL) only once that kind has fired, and no alias has been set on
        # this fresh server yet
        promote(params, root, "1")
        start = time.monotonic()
        while time.monotonic() - start < 20:
            if server.http.get("/version").json()["version"] == "1":
                break
            time.sleep(0.1)
        assert server.http.get("/version").json()["version"] == "1"
        text = server.http.get("/metrics").text
        assert 'tarn_requests_total{endpoint="predict"' not in text  # nothing else touched it

        deadline = time.monotonic() + 20
        while "tarn.deployed_at" not in reg.record_tags("1"):  # deployment recorded
            assert time.monotonic() < deadline
            time.sleep(0.1)
        remote.stop()  # the registry goes away: the last good model keeps serving
        r = server.admin()
        assert r.status_code == 200 and "registry unreachable" in r.json()["last_error"]
        row = {"age": 39, "workclass": None, "fnlwgt": 77516, "education": "Bachelors",
               "education_num": 13, "marital_status": "Never-married", "occupation": None,
               "relationship": "Not-in-family", "race": "White", "sex": "Male",
               "capital_gain": 0, "capital_loss": 0, "hours_per_week": 40,
               "native_country": None}
        p = server.http.post("/predict", json=[row])
        assert p.status_code == 200 and p.json()["model_version"] == "1"
        assert "tarn_registry_errors 1.0" in server.http.get("/metrics").text
    finally:
        server.stop()


def test_a_stage_transition_on_the_tracking_server_deploys(tmp_path, remote):
    """The stage API of a real `mlflow server` (what its registry page calls): the server
    follows within a poll, and alias and stage end up agreeing."""
    import warnings

    import mlflow

    from tests.support.signing import sign_by_hand

    root = tmp_path / "p"
    root.mkdir()
    params = small_project(root, **{"mlflow.tracking_uri": remote.url,
                                    "serve.poll_interval_s": 0.5, "serve.notify_url": "",
                                    "promote.max_demographic_parity_difference": 0.6})
    v1, v2 = make_version(params, root), make_version(params, root, rounds=20)
    promote(params, root, v1)
    server = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        wait_version(server, v1)
        sign_by_hand(params, root, v2)  # unsigned, the server would refuse it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlflow.MlflowClient(remote.url).transition_model_version_stage(
                "tarn-test", v2, "Production")
        wait_version(server, v2)
        reg = Registry(params.mlflow, root)
        assert reg.production() == v2 and reg.stage_versions() == [v2]
        assert reg.promotion_record(v2).previous_production == v1
    finally:
        server.stop()


def test_webhooks_need_a_remote_server(tmp_path):
    params = small_project(tmp_path)
    with pytest.raises(RegistryError, match="remote MLflow tracking server"):
        Registry(params.mlflow, tmp_path).register_webhook("http://127.0.0.1:1/x", HOOK)
