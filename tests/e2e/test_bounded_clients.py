"""Bounded clients (issue 21): a real `tarn serve` with small `serve.*` limits cuts each kind of
hold (a huge header, too many header lines, an unfinished head, a slow body, an idle kept-alive
connection, more connections than the cap) with a JSON refusal, and keeps answering /health."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tarn.lifecycle.promote import promote
from tests.support.project import make_version, small_project
from tests.support.servers import free_port
from tests.support.serving import Server, server_env

pytestmark = pytest.mark.slow

LIMITS = {"serve.header_timeout_s": 1.0, "serve.body_timeout_s": 2.0,
          "serve.keepalive_timeout_s": 1.0, "serve.max_connections": 30,
          "serve.max_header_bytes": 8192, "serve.max_headers": 20}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    params = small_project(root, **{"serve.poll_interval_s": 0.5, "serve.notify_url": "",
                                    **LIMITS})
    promote(params, root, make_version(params, root), force=True, reason="test")
    s = Server(root, root / "params.yaml", free_port(), server_env())
    yield s
    s.stop()


def _connect(server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _answer(sock: socket.socket, timeout: float = 10) -> tuple[int, dict, float]:
    """(status, JSON body, seconds waited) of the server's answer; the connection must then
    be closed by the server."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    while True:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            break
        if not more:
            break
        data += more
    waited = time.monotonic() - start
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, f"no answer before the connection closed ({waited:.1f} s)"
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body), waited


def _healthy(server) -> None:
    assert server.http.get("/health").status_code == 200


def test_a_header_beyond_max_header_bytes_gets_a_json_431(server):
    s = _connect(server)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
        for _ in range(64):  # 4 MB, far past the 8 KB limit: the server cuts it early
            s.sendall(b"a" * 65536)
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, body, _ = _answer(s)
    assert status == 431 and body["error_code"] == "REQUEST_HEADER_TOO_LARGE"
    assert "serve.max_header_bytes" in body["message"]
    _healthy(server)


def test_too_many_header_lines_get_a_json_431(server):
    s = _connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n"
              + b"".join(b"X-H%d: v\r\n" % i for i in range(40)) + b"\r\n")
    status, body, _ = _answer(s)
    assert status == 431 and "at most 20" in body["message"]


def test_an_unfinished_head_is_cut_by_the_header_timeout(server):
    s = _connect(server)
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: applic")
    status, body, waited = _answer(s)
    assert status == 408 and "serve.header_timeout_s" in body["message"]
    assert 0.5 < waited < 5


def test_a_silent_connection_is_cut_by_the_header_timeout(server):
    s = _connect(server)
    status, _, waited = _answer(s)
    assert status == 408 and waited < 5


def test_a_slow_body_is_cut_by_the_body_timeout(server):
    s = _connect(server)
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              b"Content-Length: 1000\r\n\r\n[")
    deadline = time.monotonic() + 10
    s.setblocking(False)
    while time.monotonic() < deadline:  # a byte every 0.2 s: never idle, never done
        try:
            s.send(b" ")
            if s.recv(1, socket.MSG_PEEK):
                break
        except BlockingIOError:
            pass
        except OSError:
            break
        time.sleep(0.2)
    s.setblocking(True)
    status, body, _ = _answer(s)
    assert status == 408 and "serve.body_timeout_s" in body["message"]
    assert time.monotonic() < deadline
    _healthy(server)


def test_an_idle_keep_alive_connection_is_closed(server):
    s = _connect(server)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
    # the whole answer (in however many segments), then the end of the stream: closed by the
    # server, not by us; a connection kept open would hit the 30 s timeout and raise instead
    # (the keep-alive limit is 1 s)
    status, body, _ = _answer(s, timeout=30)
    assert status == 200 and body == {"status": "ok"}


@pytest.mark.parametrize(("name", "raw"), [
    ("bad chunk size", b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                       b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n"),
    ("conflicting lengths", b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n[]"),
    ("CR in a header", b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n"),
    ("NUL in the method", b"G\x00T /health HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("space in a header name", b"GET /health HTTP/1.1\r\nHost: t\r\nX A: b\r\n\r\n"),
])
def test_protocol_errors_are_json(server, name, raw):
    s = _connect(server)
    s.sendall(raw)
    status, body, _ = _answer(s)
    assert status == 400 and body["error_code"] == "MALFORMED_REQUEST", name


def test_connections_beyond_the_cap_get_a_json_503_and_health_still_answers(server):
    import select

    held = []
    try:
        for _ in range(40):  # the cap is 30, health checks included
            held.append(_connect(server))
        time.sleep(0.3)  # accepted and answered at once; the others time out after 1 s
        readable, _, _ = select.select(held, [], [], 0)
        answers = [_answer(s) for s in readable]
        assert len(answers) >= 10
        assert all(status == 503 and "serve.max_connections" in body["message"]
                   for status, body, _ in answers), answers
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 10
    while True:  # the held ones are closed: room again
        try:
            _healthy(server)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
