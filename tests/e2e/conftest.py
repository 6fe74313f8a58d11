"""A trained small project and a real `tarn serve` process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx
import pytest

from tarn import train
from tarn.config import Params
from tests.integration.test_training import small_project
from tests.servers import ServerProcess, free_port

BIN = Path(sys.executable).parent
ADMIN = "admin-secret-for-tests"
HOOK = "webhook-secret-for-tests"


def make_version(params: Params, root: Path, rounds: int = 30, depth: int = 4,
                 lr: float = 0.2) -> str:
    """Register a new version with the given capacity (few rounds = a worse model)."""
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "best_params.json").write_text(json.dumps(
        {"params": {"max_depth": depth, "learning_rate": lr}, "best_iteration": rounds - 1,
         "parent_run_id": "test"}))
    return train.run(params, root).version


class Server(ServerProcess):
    """A real `tarn serve` process for the project at ``root``."""

    def __init__(self, root: Path, params_file: Path, port: int, env: dict) -> None:
        self.url = f"http://127.0.0.1:{port}"
        super().__init__([str(BIN / "tarn"), "--params", str(params_file), "serve", "--port",
                          str(port)], env, root / f"server-{port}.log", f"{self.url}/health",
                         cwd=root)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def admin(self, body: dict | None = None, secret: str = ADMIN) -> httpx.Response:
        return self.http.post("/admin/reconcile", json=body or {},
                              headers={"Authorization": f"Bearer {secret}"})

    def stop(self) -> None:
        if hasattr(self, "http"):
            self.http.close()
        super().stop()


def server_env(**extra: str) -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TARN_ADMIN_SECRET": ADMIN,
            "TARN_WEBHOOK_SECRET": HOOK, "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """(params, root) with version 1 registered (not yet promoted)."""
    root = tmp_path_factory.mktemp("served")
    params = small_project(root, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.01,
        "serve.log_flush_interval_s": 0.5, "serve.max_body_bytes": 1_000_000})
    make_version(params, root)
    return params, root


@pytest.fixture(scope="module")
def server(project):
    params, root = project
    s = Server(root, root / "params.yaml", free_port(), server_env())
    yield s
    s.stop()
