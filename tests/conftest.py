"""Shared fixtures: a project folder with params.yaml and a small raw lake, a git + DVC copy
of the repository, and real servers shared by the session. Helpers live in tests/support."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tarn.config import Params
from tests.support.project import copy_repo, write_params, write_small_lake
from tests.support.servers import Postgres, S3Server, SharedStack, start_shared_mlflow

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

# MLflow writes these into os.environ (set_tracking_uri, set_experiment, mlflow run): a test
# must not inherit another test's store, experiment or run through them
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


_PRISTINE = {k: os.environ.get(k) for k in _MLFLOW_ENV}  # as the session started


def _restore_mlflow_env() -> None:
    for k, v in _PRISTINE.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _no_mlflow_env_leaks() -> Iterator[None]:
    """Before and after every test (module and session fixtures may have set them)."""
    _restore_mlflow_env()
    yield
    _restore_mlflow_env()


@pytest.fixture
def lake_project(tmp_path: Path) -> tuple[Params, Path]:
    """(params, root) of a fresh project with a small lake at data/lake."""
    params = write_params(tmp_path)
    write_small_lake(tmp_path / "data" / "lake")
    return params, tmp_path


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A git + DVC repo holding this project's pipeline files (src/, dvc.yaml, params.yaml)."""
    return copy_repo(tmp_path / "repo")


# ------------------------------------------------------------------ shared real servers
# One PostgreSQL cluster and one S3 server (moto_server) per session; `mlflow server` on both.

@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    """An S3 server; the AWS variables point every client in this process (and its children)
    at it, as a user's environment would."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    yield pg
    pg.close()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory, postgres, s3) -> Iterator[SharedStack]:
    stack = start_shared_mlflow(tmp_path_factory.mktemp("mlflow-shared"), postgres, s3)
    yield stack
    stack.mlflow.stop()
