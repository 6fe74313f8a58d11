"""A trained small project and a real `tarn serve` process on 127.0.0.1: one per module
(``served_project``, ``server``: for modules that promote, register or break things), and one
for the whole session (``shared_served_project``, ``shared_server``: for modules that only read,
with version 1 in production; a module opts in by returning them from its own
``served_project`` and ``server``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tarn.config import Params
from tarn.lifecycle.promote import promote
from tests.support.project import make_version, small_project
from tests.support.servers import free_port
from tests.support.serving import Server, server_env, wait_version


def _served(root: Path) -> tuple[Params, Path]:
    params = small_project(root, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.01,
        "serve.log_flush_interval_s": 0.5, "serve.max_body_bytes": 1_000_000})
    make_version(params, root)
    return params, root


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    """(params, root) with version 1 registered (not yet promoted)."""
    return _served(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(served_project):
    params, root = served_project
    s = Server(root, root / "params.yaml", free_port(), server_env())
    yield s
    s.stop()


@pytest.fixture(scope="session")
def shared_served_project(tmp_path_factory):
    """(params, root) as ``served_project``, version 1 promoted; shared by read-only modules:
    they must not promote, register, or change what is there."""
    params, root = _served(tmp_path_factory.mktemp("shared-served"))
    promote(params, root, "1")
    return params, root


@pytest.fixture(scope="session")
def shared_server(shared_served_project):
    """One `tarn serve` for the read-only modules, serving version 1."""
    params, root = shared_served_project
    s = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        wait_version(s, "1", timeout=120)
    except BaseException:
        s.stop()
        raise
    yield s
    s.stop()
