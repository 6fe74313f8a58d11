"""Process wiring for ``tarn serve``: prediction log, reconciler, uvicorn, and the process
settings a long-running server needs (redacted logs, no death on a file size limit)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path

from tarn.config import Params
from tarn.core.tracking import redact
from tarn.serve.app import ServerState, create_app
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.predlog import PredictionLog


def build_state(params: Params, root: Path, *, admin_secret: str = "", webhook_secret: str = "",
                server_url: str = "", log_predictions: bool = True) -> ServerState:
    holder = ModelHolder()
    reconciler = Reconciler(params, root, holder, server_url)
    cfg = params.serve
    predlog = PredictionLog(
        root / cfg.prediction_log, cfg.log_flush_rows, cfg.log_flush_interval_s,
        file_rows=cfg.log_file_rows, file_max_age_s=cfg.log_file_max_age_s,
        file_idle_s=cfg.log_file_idle_s, retention_bytes=cfg.log_retention_bytes,
        retention_days=cfg.log_retention_days,
        max_pending_rows=cfg.log_queue_rows) if log_predictions else None
    return ServerState(params, root, holder, reconciler, predlog, admin_secret, webhook_secret)


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
        webhook_secret: str) -> None:
    import uvicorn

    setup_process()
    state = build_state(params, root, admin_secret=admin_secret, webhook_secret=webhook_secret,
                        server_url=f"http://{host}:{port}")
    if state.predlog is not None:
        state.predlog.start()
    state.reconciler.reconcile()  # serve the production model from the first request on
    state.reconciler.start()
    try:
        uvicorn.run(create_app(state), host=host, port=port, log_level="warning",
                    access_log=False)
    finally:
        state.reconciler.stop()
        if state.predlog is not None:
            with contextlib.suppress(Exception):
                state.predlog.close()
