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

Why ``SO_REUSEPORT`` and not one shared listening socket: with a shared socket the event loop
that wakes first accepts every connection waiting (asyncio and uvloop accept in a batch), so 8
keep-alive clients connecting together mostly landed on one worker (measured: 8/0 in four of six
tries). With one socket per worker the kernel spreads connections across workers by hash. The
price: connections still queued on a worker that dies are reset (clients retry; the parent
starts the worker again).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from tarn.config import Params
from tarn.core.tracking import redact
from tarn.serve.app import ServerState, create_app
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.predlog import PredictionLog


def build_state(params: Params, root: Path, *, admin_secret: str = "", webhook_secret: str = "",
                server_url: str = "", log_predictions: bool = True, worker: int = 0,
                workers: int = 1) -> ServerState:
    holder = ModelHolder()
    reconciler = Reconciler(params, root, holder, server_url, leader=worker == 0)
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


def run(params: Params, root: Path, host: str, port: int, admin_secret: str,
        webhook_secret: str, workers: int = 1) -> None:
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
    config = uvicorn.Config(create_app(state), host=host, port=port, log_level="warning",
                            access_log=False, server_header=False)
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
