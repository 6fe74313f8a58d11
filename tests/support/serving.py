"""A real `tarn serve` process and helpers to talk to it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd

from tests.support.project import BIN
from tests.support.servers import ServerProcess

ADMIN = "admin-secret-for-tests"
HOOK = "webhook-secret-for-tests"


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


def sample_rows(root, n=20) -> list[dict]:
    """The first ``n`` test rows as JSON records (model inputs only)."""
    df = pd.read_parquet(root / "data" / "prepared" / "test.parquet").head(n)
    df = df.drop(columns=["income", "batch"]).astype(object)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in
            df.to_dict("records")]


def wait_version(server, version: str, timeout: float = 30) -> float:
    """Seconds until the server reports ``version``; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.http.get("/version").json()["version"] == version:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"server never served version {version}: "
                         f"{server.http.get('/version').json()}")


def until(ok: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``ok()`` until it holds (instead of sleeping a fixed time and hoping); fail naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.05)
