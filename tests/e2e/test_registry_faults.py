"""The registry goes away in the middle of a deployment and comes back: the server keeps
answering with the version it has, then deploys the new one (retried with backoff)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tarn.core.registry import Registry
from tarn.lifecycle.promote import promote
from tests.support.project import make_version, small_project
from tests.support.servers import free_port, start_shared_mlflow
from tests.support.serving import ADMIN, Server, sample_rows, server_env, until, wait_version
from tests.support.signing import sign_by_hand

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_registry_away_and_back_during_a_swap(tmp_path, postgres, s3):
    (tmp_path / "mlflow").mkdir()
    stack = start_shared_mlflow(tmp_path / "mlflow", postgres, s3)
    root = tmp_path / "p"
    root.mkdir()
    params = small_project(root, **{"mlflow.tracking_uri": stack.url, "serve.notify_url": "",
                                    "serve.poll_interval_s": 1,
                                    "promote.max_demographic_parity_difference": 0.6})
    v1, v2 = make_version(params, root), make_version(params, root, rounds=20)
    promote(params, root, v1)
    server = Server(root, root / "params.yaml", free_port(), server_env())
    statuses: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def load():
        rows = sample_rows(root, 2)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json=rows)
                statuses.append((r.status_code, r.json().get("model_version")))

    try:
        wait_version(server, v1)
        worker = threading.Thread(target=load)
        worker.start()
        sign_by_hand(params, root, v2)  # as `tarn promote` would: the server deploys it
        Registry(params.mlflow, root).client.set_registered_model_alias(
            "tarn-test", "production", v2)  # the new version, then the registry goes away
        stack.mlflow.kill()
        until(lambda: _failures(server) >= 1, "a failed poll while the registry is away",
              timeout=120)  # polls every 1 s
        assert server.http.get("/version").json()["version"] == v1
        stack.mlflow.restart()
        wait_version(server, v2, timeout=90)
        time.sleep(0.5)
        stop.set()
        worker.join()
        assert len(statuses) > 20 and all(code == 200 for code, _ in statuses)
        assert {v for _, v in statuses} == {v1, v2}
        assert _failures(server) >= 1
        info = server.http.get("/version", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert info["version"] == v2
    finally:
        stop.set()
        server.stop()
        stack.mlflow.stop()


def _failures(server: Server) -> float:
    """Failed polls so far: the registry unreachable, or a version that failed to load."""
    metrics = server.http.get("/metrics").text
    return sum(float(ln.split()[-1]) for ln in metrics.splitlines()
               if ln.startswith(("tarn_registry_errors ", "tarn_model_swap_failures ")))
