"""`tarn serve --port N` records where it listens, and the other commands find it there."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tarn.cli import app
from tarn.config import load_params
from tarn.core import address
from tests.support.project import write_params
from tests.support.servers import free_port
from tests.support.serving import Server, server_env

pytestmark = pytest.mark.slow


def test_status_finds_a_server_started_on_another_port(tmp_path, monkeypatch):
    configured, port = free_port(), free_port()
    write_params(tmp_path, {"mlflow.registered_model": "tarn-address",
                            "serve.port": configured})
    params = load_params(tmp_path / "params.yaml")
    s = Server(tmp_path, tmp_path / "params.yaml", port, server_env())
    try:
        assert address.server_url(params.serve, tmp_path)[0] == s.url
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(app, ["status"], terminal_width=250)
        assert res.exit_code == 0, res.output
        assert f"backend {s.url}: version" in res.output, res.output
    finally:
        s.stop()
    # stopped (SIGTERM): the record is gone, and the configured port is the address again
    assert not (tmp_path / address.STATE).exists()
    assert address.server_url(params.serve, tmp_path)[0] == f"http://127.0.0.1:{configured}"
