"""Fuzz the server's OpenAPI schema with schemathesis over a real socket: no request, however
odd, may produce a 5xx. (The schemathesis CLI: its pytest plugin does not load with this
pytest.)"""

from __future__ import annotations

import subprocess

import pytest

from tarn.core.registry import Registry
from tarn.lifecycle.promote import promote
from tests.support.project import BIN

pytestmark = pytest.mark.slow


def test_no_request_produces_a_server_error(server, project, tmp_path):
    params, root = project
    reg = Registry(params.mlflow, root)
    if reg.production() is None:
        promote(params, root, "1")
        server.admin()
    res = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "60", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "/invocations" in out and "/predict" in out  # the scoring endpoints were fuzzed
