"""Process wiring for ``tarn serve``: prediction log, reconciler, uvicorn."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tarn.config import Params
from tarn.serve.app import ServerState, create_app
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.predlog import PredictionLog


def build_state(params: Params, root: Path, *, admin_secret: str = "", webhook_secret: str = "",
                server_url: str = "", log_predictions: bool = True) -> ServerState:
    holder = ModelHolder()
    reconciler = Reconciler(params, root, holder, server_url)
    cfg = params.serve
    predlog = PredictionLog(root / cfg.prediction_log, cfg.log_flush_rows,
                            cfg.log_flush_interval_s) if log_predictions else None
    return ServerState(params, root, holder, reconciler, predlog, admin_secret, webhook_secret)


def run(params: Params, root: Path, host: str, port: int, admin_secret: str,
        webhook_secret: str) -> None:
    import uvicorn

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
