"""The admin secret stays home: `notify_server` goes straight to the server it names, whatever
the proxy settings say, and follows no redirect. A real listening proxy socket records whether
anything reached it."""

from __future__ import annotations

import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tarn.lifecycle.promote import notify_server

SECRET = "s3cret-admin-token"


class Listener:
    """A threaded TCP server on 127.0.0.1 that records every byte it receives (a proxy, or a
    host a redirect points at) and answers nothing useful."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += data
                    if b"\r\n\r\n" in self.received:  # a whole request head: answer as a proxy
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                        return
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


class Backend:
    """The tarn server stand-in: answers /admin/reconcile, or redirects to ``redirect``."""

    def __init__(self, redirect: str = "") -> None:
        seen: list[dict] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if redirect:
                    self.send_response(307)
                    self.send_header("Location", redirect)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"production": "1"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(monkeypatch):
    p = Listener()
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{p.port}")
    urllib.request.install_opener(None)  # an opener cached earlier would not see the proxy
    yield p
    p.close()
    # urlopen's default opener reads the proxy settings once and is kept for the process:
    # drop it, or every later urlopen in this process goes to this (closed) proxy
    urllib.request.install_opener(None)


def test_the_secret_never_reaches_a_configured_proxy(proxy):
    import urllib.request

    backend = Backend()
    try:
        # the proxy is real: the default opener does send this very request to it
        with urllib.request.urlopen(urllib.request.Request(
                f"{backend.url}/probe", data=b"{}", method="POST"), timeout=5) as r:
            assert r.read() == b"{}"
        assert b"POST http://127.0.0.1" in proxy.received and backend.seen == []
        proxy.received.clear()

        out = notify_server(backend.url, SECRET)
        assert "reconciled" in out and SECRET not in out
        assert backend.seen == [{"path": "/admin/reconcile", "auth": f"Bearer {SECRET}"}]
        assert proxy.received == b""  # nothing at all went through the proxy
    finally:
        backend.close()


def test_a_redirect_is_not_followed_so_the_secret_stays_with_the_named_server(proxy):
    elsewhere = Listener()
    backend = Backend(redirect=f"http://127.0.0.1:{elsewhere.port}/steal")
    try:
        out = notify_server(backend.url, SECRET)
        assert "redirected (not followed)" in out
        assert len(backend.seen) == 1
        assert elsewhere.connections == 0 and elsewhere.received == b""
        assert proxy.received == b""
    finally:
        backend.close()
        elsewhere.close()


def test_plain_http_to_another_host_is_not_sent(proxy):
    out = notify_server("http://192.0.2.1:8000", SECRET)  # TEST-NET-1: never routed
    assert "not notified" in out and "https" in out
    assert proxy.connections == 0
