"""A trained small project and a real `tarn serve` process on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.support.project import make_version, small_project
from tests.support.servers import free_port
from tests.support.serving import Server, server_env


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    """(params, root) with version 1 registered (not yet promoted)."""
    root = tmp_path_factory.mktemp("served")
    params = small_project(root, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.01,
        "serve.log_flush_interval_s": 0.5, "serve.max_body_bytes": 1_000_000})
    make_version(params, root)
    return params, root


@pytest.fixture(scope="module")
def server(served_project):
    params, root = served_project
    s = Server(root, root / "params.yaml", free_port(), server_env())
    yield s
    s.stop()
