"""Process wiring for ``tarn serve``: prediction log, reconciler, uvicorn, and the process
settings a long-running server needs (redacted logs, no death on a file size limit).

``serve.workers: N`` (N > 1) runs a pre-fork server of our own rather than uvicorn's
``--workers``: the parent checks the port, then starts N worker processes (spawned, so no
thread or lock state is inherited) that each bind the port with ``SO_REUSEPORT`` and run the
whole server: prediction log, reconciler (every worker follows the production alias and swaps
on its own), uvicorn. uvicorn's own multi-process mode would need the app as an import string
configured from the environment and gives no hook to tell workers apart; here each worker knows
its index: worker 0 is the leader that publishes the client bundle and records the deployment,
the others load the bundle it wrote. A nudge (admin call, webhook) reaching one worker is
passed to all through a shared counter, so every worker swaps at once rather than at its next
poll. The parent restarts a worker that dies and stops them all on SIGTERM/SIGINT.

Bounded clients: a client may hold only what ``serve.*`` allows. uvicorn parses with httptools
when it is installed (else h11) and bounds neither the head's size (with httptools: a 100 MB
header was read and answered 200) nor the time a client takes to send a request (2,000
half-sent requests held 2,000 descriptors). :func:`bounded_protocol` subclasses uvicorn's
protocol: the request head must arrive within ``header_timeout_s`` and the body within
``body_timeout_s`` (a 408), at most ``max_connections`` connections per worker (a 503 at once,
so descriptors stay bounded), a head of at most ``max_header_bytes`` (a 431, counted as bytes
arrive) and ``max_headers`` lines (a 431), an idle kept-alive connection closed after
``keepalive_timeout_s``. Every refusal made below the application (these, and the parser's
own: a bad chunk size, conflicting lengths, a CR in a header) is a JSON body like every other
error, written straight to the socket, and the connection is closed.

Why ``SO_REUSEPORT`` and not one shared listening socket: with a shared socket the event loop
that wakes first accepts every connection waiting (asyncio and uvloop accept in a batch), so 8
keep-alive clients connecting together mostly landed on one worker (measured: 8/0 in four of six
tries). With one socket per worker the kernel spreads connections across workers by hash. The
price: connections still queued on a worker that dies are reset (clients retry; the parent
starts the worker again).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from tarn.config import Params, ServeConfig
from tarn.core.signing import DeployKey, project_key
from tarn.core.tracking import redact
from tarn.serve.app import ServerState, create_app
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.predlog import PredictionLog


def build_state(params: Params, root: Path, *, admin_secret: str = "", webhook_secret: str = "",
                server_url: str = "", log_predictions: bool = True, worker: int = 0,
                workers: int = 1, deploy_key: DeployKey | None = None) -> ServerState:
    holder = ModelHolder()
    # the deployment key, read here at the server's edge (created 0600 on first use): the
    # reconciler deploys only versions `tarn promote` signed with it
    key = deploy_key or project_key(params, root)
    reconciler = Reconciler(params, root, holder, server_url, leader=worker == 0, key=key)
    cfg = params.serve
    predlog = PredictionLog(
        root / cfg.prediction_log, cfg.log_flush_rows, cfg.log_flush_interval_s,
        file_rows=cfg.log_file_rows, file_max_age_s=cfg.log_file_max_age_s,
        file_idle_s=cfg.log_file_idle_s, retention_bytes=cfg.log_retention_bytes,
        retention_days=cfg.log_retention_days,
        max_pending_rows=cfg.log_queue_rows) if log_predictions else None
    return ServerState(params, root, holder, reconciler, predlog, admin_secret, webhook_secret,
                       worker=worker, workers=workers)


class RedactFilter(logging.Filter):
    """Credentials in URIs never reach the log, whoever logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info:  # the traceback text is formatted here, redacted
            record.msg = redact(f"{record.getMessage()}\n"
                                f"{logging.Formatter().formatException(record.exc_info)}")
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def setup_process() -> None:
    """Log tarn's messages to stderr through the redaction filter; a write beyond a file size
    limit (RLIMIT_FSIZE) must fail with EFBIG, which the prediction log handles, instead of
    killing the server with SIGXFSZ."""
    logger = logging.getLogger("tarn")
    if not any(isinstance(f, RedactFilter) for h in logger.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                               "%(message)s"))
        handler.addFilter(RedactFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactFilter())
    # scoring threads hold the GIL in stretches (parsing, validation): hand it to the event
    # loop every 1 ms instead of 5 so /health and /metrics answer while 5 MB requests score
    sys.setswitchinterval(0.001)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # it found: with the default one the process would die before the prediction log's
    # shutdown flush. This one unwinds through `run`'s finally instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (its traffic never crosses a network)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str) -> str:
    """The warning for a server reachable from other machines over plain HTTP ('' if none)."""
    if is_loopback(host):
        return ""
    return (f"serving plain HTTP on {host}, reachable from other machines: the admin secret, "
            "webhook signatures and scored rows travel unencrypted. Put a TLS-terminating "
            "proxy in front and bind to 127.0.0.1 (README: 'Behind a TLS proxy')")


def run(params: Params, root: Path, host: str, port: int, admin_secret: str,
        webhook_secret: str, workers: int = 1) -> None:
    warning = plain_http_warning(host)
    if warning:
        setup_process()
        logging.getLogger("tarn.serve").warning(warning)
    if workers <= 1:
        _serve(params, root, host, port, admin_secret, webhook_secret)
    else:
        _supervise(params, root, host, port, admin_secret, webhook_secret, workers)


def _serve(params: Params, root: Path, host: str, port: int, admin_secret: str,
           webhook_secret: str, *, worker: int = 0, workers: int = 1,
           reuse_port: bool = False, nudges=None) -> None:
    """One server process: log, reconciler, uvicorn (on its own ``SO_REUSEPORT`` socket for
    a worker, bound only once the model is loaded: no connection waits for a loading
    worker)."""
    import uvicorn

    setup_process()
    state = build_state(params, root, admin_secret=admin_secret, webhook_secret=webhook_secret,
                        server_url=f"http://{host}:{port}", worker=worker, workers=workers)
    if nudges is not None:
        state.nudge_all = nudges.send
        nudges.listen(state.reconciler.nudge)
    if state.predlog is not None:
        state.predlog.start()
    state.reconciler.reconcile()  # serve the production model from the first request on
    state.reconciler.start()
    cfg = params.serve
    config = uvicorn.Config(HeaderCount(create_app(state), cfg.max_headers), host=host,
                            port=port, log_level="warning", access_log=False,
                            server_header=False, http=bounded_protocol(cfg),
                            h11_max_incomplete_event_size=cfg.max_header_bytes,
                            timeout_keep_alive=cfg.keepalive_timeout_s)
    # the libraries and the model are a few million long-lived objects: move them out of the
    # garbage collector's reach, so a full collection (triggered by the objects a large request
    # creates) walks only the request's own objects instead of stalling every thread ~100 ms
    gc.collect()
    gc.freeze()
    try:
        uvicorn.Server(config).run(sockets=[_bind(host, port)] if reuse_port else None)
    finally:
        state.reconciler.stop()
        if state.predlog is not None:
            with contextlib.suppress(Exception):
                state.predlog.close()


# ------------------------------------------------------------------------ bounded clients
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}
_CODES = {400: "MALFORMED_REQUEST", 408: "REQUEST_TIMEOUT", 431: "REQUEST_HEADER_TOO_LARGE",
          503: "UNAVAILABLE"}


def refusal_bytes(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response (JSON body, connection closed), written straight to the
    socket: below the application no framework shapes the answer."""
    import orjson

    body = orjson.dumps({"error_code": _CODES[status], "message": message})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))) + body


class HeaderCount:
    """ASGI: a request with more than ``limit`` header lines gets a JSON 431 (h11 bounds the
    head's bytes, not its lines)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and len(scope["headers"]) > self.limit:
            body = refusal_bytes(431, f"{len(scope['headers'])} header lines; at most "
                                 f"{self.limit} are accepted").split(b"\r\n\r\n", 1)[1]
            await send({"type": "http.response.start", "status": 431, "headers": [
                (b"content-type", b"application/json"), (b"connection", b"close"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def bounded_protocol(cfg: ServeConfig) -> type:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn picks, else h11) with the
    limits of ``cfg`` (see the module docstring)."""
    import sys

    log = logging.getLogger("tarn.serve")

    class Bounds:
        """Timers, the connection cap and JSON refusals, shared by both parsers."""

        max_connections = cfg.max_connections
        max_header_bytes = cfg.max_header_bytes
        header_timeout_s = cfg.header_timeout_s
        body_timeout_s = cfg.body_timeout_s
        refused = 0  # connections turned away at the cap (logged every 1,000)

        def connection_made(self, transport) -> None:
            self._timer: asyncio.TimerHandle | None = None
            self._timing = ""  # "head" | "body" | ""
            super().connection_made(transport)
            if len(self.connections) > self.max_connections:
                Bounds.refused += 1
                if Bounds.refused % 1000 == 1:
                    log.warning("connection cap reached (serve.max_connections: %d per "
                                "worker): new connections get 503 (%d so far)",
                                self.max_connections, Bounds.refused)
                self._refuse(503, f"server busy: {self.max_connections} connections open "
                             "(serve.max_connections); retry shortly")
                return
            self._arm("head")

        def _arm(self, what: str) -> None:
            if self._timing == what:
                return
            self._disarm()
            delay = self.header_timeout_s if what == "head" else self.body_timeout_s
            self._timing = what
            self._timer = self.loop.call_later(delay, self._expired, what)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timing = None, ""

        def _refuse(self, status: int, message: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(refusal_bytes(status, message))
                self.transport.close()

        def _expired(self, what: str) -> None:
            self._timer, self._timing = None, ""
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if what == "body" and cycle is not None:
                started = cycle.response_started
                if not cycle.response_complete:
                    cycle.disconnected = True  # the application reads a disconnect
                    cycle.message_event.set()
                if started:  # answered (e.g. a 413) or answering: no room for a second one
                    self.transport.close()
                    return
            limit = self.header_timeout_s if what == "head" else self.body_timeout_s
            self._refuse(408, f"request {'headers' if what == 'head' else 'body'} not received "
                         f"within {limit:g} s (serve.{'header' if what == 'head' else 'body'}"
                         "_timeout_s)")

        def _head_too_large(self) -> None:
            self._refuse(431, f"request head beyond {self.max_header_bytes:,} bytes "
                         "(serve.max_header_bytes)")

        def send_400_response(self, msg: str) -> None:
            """The parser refused the request (called inside its ``except``): the same
            refusal as JSON (431 when h11 says the head is too large)."""
            exc = sys.exc_info()[1]
            if getattr(exc, "error_status_hint", 400) == 431:
                self._head_too_large()
                return
            self._refuse(400, f"invalid HTTP request: {exc or msg}"[:300])

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    try:
        import httptools  # noqa: F401 - uvicorn's choice when installed
    except ImportError:
        httptools = None
    if httptools is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class BoundedHttpTools(Bounds, HttpToolsProtocol):
            """httptools buffers a header until it ends: the head's bytes are counted as
            they arrive, before the parser sees them. The parser's callbacks set the phase;
            the timer follows it once per read (a request that arrives whole arms none)."""

            def connection_made(self, transport) -> None:
                self._phase, self._head_bytes = "idle", 0  # "idle" | "head" | "body"
                super().connection_made(transport)

            def data_received(self, data: bytes) -> None:
                if self._phase != "body":
                    self._head_bytes += len(data)  # the head and maybe a body's start
                    if self._phase == "head" and self._head_bytes > self.max_header_bytes:
                        self._head_too_large()  # before the parser buffers any more
                        return
                super().data_received(data)
                if self._phase == "head" and self._head_bytes > self.max_header_bytes:
                    self._head_too_large()  # one read's worth buffered, no more
                    return
                if self._phase == "idle":
                    if self._timing:
                        self._disarm()
                elif self._timing != self._phase:
                    self._arm(self._phase)

            def on_message_begin(self) -> None:
                super().on_message_begin()
                self._phase = "head"

            def on_headers_complete(self) -> None:
                super().on_headers_complete()
                self._phase, self._head_bytes = "body", 0

            def on_message_complete(self) -> None:
                super().on_message_complete()
                self._phase, self._head_bytes = "idle", 0  # a pipelined next head counts anew

        return BoundedHttpTools

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(Bounds, H11Protocol):
        """h11 bounds the head itself (``h11_max_incomplete_event_size``); its states say
        which timer runs."""

        def data_received(self, data: bytes) -> None:
            if self._timing == "" and self.conn.their_state is h11.IDLE:
                self._arm("head")  # the next request on a kept-alive connection began
            super().data_received(data)
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                self._arm("body")
            elif state is not h11.IDLE:  # the whole request is in (or the connection ended)
                self._disarm()

    return BoundedH11


class Nudges:
    """A counter all workers share: a nudge increments it, every worker's listener thread
    sees the change and nudges its own reconciler."""

    def __init__(self, ctx) -> None:
        self.counter = ctx.Value("Q", 0)
        self.cond = ctx.Condition()

    def send(self) -> None:
        with self.cond:
            self.counter.value += 1
            self.cond.notify_all()

    def listen(self, nudge) -> None:
        def loop() -> None:
            seen = self.counter.value
            while True:
                with self.cond:
                    self.cond.wait_for(lambda s=seen: self.counter.value != s, timeout=5)
                    now = self.counter.value
                if now != seen:
                    seen = now
                    nudge()

        threading.Thread(target=loop, name="nudges", daemon=True).start()


def _worker(params, root, host, port, admin_secret, webhook_secret, index, workers,
            nudges) -> None:
    _serve(params, root, host, port, admin_secret, webhook_secret, worker=index,
           workers=workers, reuse_port=True, nudges=nudges)


def _bind(host: str, port: int, listen: bool = True) -> socket.socket:
    """A socket on (host, port) that other workers' sockets share (``SO_REUSEPORT``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _supervise(params: Params, root: Path, host: str, port: int, admin_secret: str,
               webhook_secret: str, workers: int) -> None:
    """Bind once, start the workers, restart one that dies, stop all on SIGTERM/SIGINT."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    setup_process()
    log = logging.getLogger("tarn.serve")
    ctx = mp.get_context("spawn")
    _bind(host, port, listen=False).close()  # the port is free (else fail here, once)
    nudges = Nudges(ctx)
    stopping = threading.Event()

    def start(i: int):
        p = ctx.Process(target=_worker, name=f"tarn-serve-{i}", args=(
            params, root, host, port, admin_secret, webhook_secret, i, workers, nudges))
        p.start()
        return p

    def stop(signum, frame) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = {i: start(i) for i in range(workers)}
    log.info("serving with %d workers (pids %s)", workers,
             ", ".join(str(p.pid) for p in procs.values()))
    try:
        while not stopping.is_set():
            wait([p.sentinel for p in procs.values()], timeout=0.5)
            for i, p in list(procs.items()):
                if not p.is_alive() and not stopping.is_set():
                    log.error("worker %d (pid %s) exited with %s; starting it again", i, p.pid,
                              p.exitcode)
                    time.sleep(1)  # a worker that cannot start must not spin
                    procs[i] = start(i)
    finally:
        for p in procs.values():
            if p.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
