"""A real `mlflow server` process on 127.0.0.1 for tests that talk to a remote registry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready in {timeout} s")


class ServerProcess:
    """A server subprocess with its log in a file, ready when ``ready_url`` answers 200."""

    def __init__(self, argv: list[str], env: dict, log_path: Path, ready_url: str,
                 cwd: Path | None = None, timeout: float = 120) -> None:
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_http(ready_url, self.proc, timeout)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.log.closed:
            self.log.close()


class MlflowServer(ServerProcess):
    """A real `mlflow server` process: SQLite backend, proxied artifacts, one worker."""

    def __init__(self, d: Path, **extra_env: str) -> None:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ['PATH']}",
               **extra_env}
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{d}/mlflow.db",
             "--artifacts-destination", str(d / "artifacts")],
            env, d / "server.log", f"{self.url}/health")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URL of a real tracking server."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield server.url
    server.stop()
