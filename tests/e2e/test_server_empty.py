"""A server with nothing in production yet: alive, not ready, and it says what to do."""

from __future__ import annotations

import pytest

from tests.support.project import write_params
from tests.support.servers import free_port
from tests.support.serving import Server, server_env

pytestmark = pytest.mark.slow


def test_not_ready_before_any_promotion(tmp_path):
    write_params(tmp_path, {"mlflow.registered_model": "tarn-empty", "serve.notify_url": ""})
    s = Server(tmp_path, tmp_path / "params.yaml", free_port(), server_env())
    try:
        assert s.http.get("/health").json() == {"status": "ok"}
        assert s.http.get("/ready").status_code == 503
        r = s.http.post("/predict", json=[{"age": 1}])
        assert r.status_code == 503 and "tarn promote" in r.json()["message"]
    finally:
        s.stop()
