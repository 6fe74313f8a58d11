"""One setting for where the server listens: the address every command derives from
serve.host/serve.port, a running server's record, or an explicit serve.notify_url."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tarn.config import ServeConfig
from tarn.core import address


def test_a_wildcard_bind_is_reached_on_loopback():
    assert address.local_url("0.0.0.0", 8123) == "http://127.0.0.1:8123"
    assert address.local_url("::", 8123) == "http://127.0.0.1:8123"
    assert address.local_url("10.0.0.5", 80) == "http://10.0.0.5:80"
    assert address.local_url("::1", 9000) == "http://[::1]:9000"


def test_the_address_follows_serve_port_then_the_record_then_the_override(tmp_path):
    cfg = ServeConfig(host="127.0.0.1", port=8123)
    assert address.server_url(cfg, tmp_path) == ("http://127.0.0.1:8123",
                                                 "serve.host/serve.port")
    address.record(tmp_path, "0.0.0.0", 9124)  # `tarn serve --host 0.0.0.0 --port 9124`
    url, source = address.server_url(cfg, tmp_path)
    assert url == "http://127.0.0.1:9124" and str(os.getpid()) in source
    remote = ServeConfig(port=8123, notify_url="https://models.example.com/")
    assert address.server_url(remote, tmp_path) == ("https://models.example.com",
                                                    "serve.notify_url")
    address.clear(tmp_path, pid=os.getpid() + 1)  # another process's exit leaves it
    assert (tmp_path / address.STATE).is_file()
    address.clear(tmp_path)
    assert not (tmp_path / address.STATE).exists()
    assert address.server_url(cfg, tmp_path)[0] == "http://127.0.0.1:8123"


def test_a_record_of_a_gone_process_or_another_host_is_ignored(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    address.record(tmp_path, "127.0.0.1", 9125, pid=int(done.stdout))  # exited already
    cfg = ServeConfig(port=8123)
    assert address.recorded(tmp_path) is None
    assert address.server_url(cfg, tmp_path)[0] == "http://127.0.0.1:8123"
    path = address.record(tmp_path, "127.0.0.1", 9126)
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "hostname": "elsewhere"}))
    assert address.server_url(cfg, tmp_path)[0] == "http://127.0.0.1:8123"
    path.write_text("{not json")
    assert address.server_url(cfg, tmp_path)[0] == "http://127.0.0.1:8123"
