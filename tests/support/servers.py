"""Real server processes on 127.0.0.1 for the tests: `mlflow server`, PostgreSQL, an
S3-compatible server (moto_server) and a Dask scheduler with workers. Each one is started,
waited for and stopped here, so tests only say which pieces they want."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
AWS_KEYS = {"AWS_ACCESS_KEY_ID": "tarn-test-key", "AWS_SECRET_ACCESS_KEY": "tarn-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1"}


def need(ok: bool, why: str) -> None:
    """A missing system prerequisite fails under CI and skips (saying how to get it) elsewhere."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


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


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port} not open in {timeout} s")


class ServerProcess:
    """A server subprocess (in its own process group) with its log in a file, ready when
    ``ready_url`` answers 200 (or, without one, when ``port`` accepts connections)."""

    def __init__(self, argv: list[str], env: dict, log_path: Path, ready_url: str | None,
                 cwd: Path | None = None, timeout: float = 120, port: int | None = None) -> None:
        self.log_path = log_path
        self._start = (argv, env, cwd, timeout, port, ready_url)
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self._launch()

    def _launch(self) -> None:
        argv, env, cwd, timeout, port, ready_url = self._start
        log_path = self.log_path
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if ready_url:
                wait_http(ready_url, self.proc, timeout)
            else:
                wait_port(port, self.proc, timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start: {e}\n{log_path.read_text()[-3000:]}") \
                from e

    def restart(self) -> None:
        """Start the same command again (same port, same stores) after a stop or a kill."""
        if self.log.closed:
            self.log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self._launch()

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, not a shutdown."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self.log.closed:
            self.log.close()


class MlflowServer(ServerProcess):
    """A real `mlflow server`: SQLite backend in ``d`` by default, proxied artifacts."""

    def __init__(self, d: Path, backend: str | None = None, artifacts: str | None = None,
                 **extra_env: str) -> None:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ['PATH']}",
               **extra_env}
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", backend or f"sqlite:///{d}/mlflow.db",
             "--artifacts-destination", artifacts or str(d / "artifacts")],
            env, d / "mlflow-server.log", f"{self.url}/health")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's binaries) on 127.0.0.1, trust auth, no fsync.
    As root, the server runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        need(bindir is not None, "PostgreSQL missing: run `make system-deps` "
                                 "(apt-get install postgresql)")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="tarn-pg-"))
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "tarn", "-A", "trust", "-E", "UTF8",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} "
                  "-c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.data = data

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run([*self.prefix, str(self.bindir / tool), *args],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{tool} failed: {res.stdout}{res.stderr}")

    def create_db(self, name: str) -> str:
        """A new database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="tarn", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://tarn@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                            "-m", "immediate", "stop"], capture_output=True, timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class S3Server(ServerProcess):
    """moto_server: an S3-compatible endpoint on 127.0.0.1. With ``auth_after`` set, requests
    after the first ``auth_after`` ones must carry credentials moto's IAM knows."""

    def __init__(self, d: Path, auth_after: int | None = None) -> None:
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        env = {**os.environ, **AWS_KEYS}
        if auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
        super().__init__([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env,
                         d / f"moto-{port}.log", None, port=port)

    def env(self) -> dict[str, str]:
        """The usual AWS variables that point boto3, s3fs, DVC and MLflow at this server."""
        return {**AWS_KEYS, "AWS_ENDPOINT_URL": self.endpoint,
                "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self, **keys: str):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint,
                            **{k.lower(): v for k, v in {**AWS_KEYS, **keys}.items()
                               if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")


class DaskCluster:
    """A real ``dask scheduler`` and ``dask worker`` processes (one thread each)."""

    def __init__(self, d: Path, n_workers: int = 2) -> None:
        self.d = d
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.scheduler = ServerProcess(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard"], self.env, d / "scheduler.log", None, port=self.port)
        self.workers: list[ServerProcess] = []
        for _ in range(n_workers):
            self.add_worker()
        self.wait_for(n_workers)

    def add_worker(self) -> ServerProcess:
        i = len(self.workers)
        w = ServerProcess([str(BIN / "dask"), "worker", self.address, "--nthreads", "1",
                           "--nworkers", "1", "--no-dashboard", "--name", f"w{i}"],
                          self.env, self.d / f"worker-{i}.log", None, port=self.port)
        self.workers.append(w)
        return w

    def wait_for(self, n: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.address, timeout=30) as c:
            c.wait_for_workers(n, timeout=timeout)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.scheduler.stop()


# ------------------------------------------------------------------ a team's shared stack
@dataclass
class SharedStack:
    """What a team would run: MLflow on PostgreSQL with artifacts in an S3 bucket."""

    postgres: Postgres
    s3: S3Server
    mlflow: MlflowServer
    bucket: str

    @property
    def url(self) -> str:
        return self.mlflow.url


def start_shared_mlflow(d, postgres: Postgres, s3: S3Server, **env: str) -> SharedStack:
    """A new `mlflow server` on a fresh database and bucket."""
    name = f"mlflow-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=name)
    server = MlflowServer(d, backend=postgres.create_db(name.replace("-", "_")),
                          artifacts=f"s3://{name}/artifacts", **s3.env(), **env)
    return SharedStack(postgres, s3, server, name)
