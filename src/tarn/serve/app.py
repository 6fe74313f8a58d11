"""The FastAPI application: scoring, health, metrics, admin and webhook endpoints.

Bodies are read with a size cap and parsed with orjson, then validated column-wise
(:mod:`tarn.serve.inputs`); the request handler reads the serving model once, so a swap in the
middle of a request cannot mix two versions. Every error is a 4xx with a message naming the
field; a 5xx is a bug.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tarn.config import Params
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.inputs import InputError, records_from_payload, to_columns
from tarn.serve.predlog import PredictionLog

CLIENT_DIR = Path(__file__).parent / "client"
WEBHOOK_MAX_AGE_S = 300


@dataclass
class ServerState:
    params: Params
    root: Path
    holder: ModelHolder
    reconciler: Reconciler
    predlog: PredictionLog | None
    admin_secret: str = ""
    webhook_secret: str = ""


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tarn_requests", "HTTP requests", ["endpoint", "status"],
                                registry=r)
        self.rows = Counter("tarn_predicted_rows", "Rows scored", registry=r)
        self.latency = Histogram("tarn_request_seconds", "Scoring latency", ["endpoint"],
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5,
                                          1, 2.5), registry=r)
        self.version = Gauge("tarn_model_version", "Serving model version", registry=r)
        self.swaps = Gauge("tarn_model_swaps", "Model swaps since start", registry=r)
        self.swap_failures = Gauge("tarn_model_swap_failures", "Failed loads", registry=r)
        self.registry_errors = Gauge("tarn_registry_errors", "Registry unreachable", registry=r)
        self.log_dropped = Gauge("tarn_prediction_log_dropped_rows", "Unlogged rows", registry=r)


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": "BAD_REQUEST" if status < 500 else "UNAVAILABLE",
                         "message": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InputError(f"payload of {int(declared):,} bytes exceeds the {limit:,}-byte limit",
                         413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"payload exceeds the {limit:,}-byte limit", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes):
    if not body:
        raise InputError("empty body: send JSON", 400)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:  # NaN / Infinity literals: not JSON, but say which field holds them
            return json.loads(body)
        except ValueError:
            raise InputError(f"malformed JSON: {e}", 400) from None


_RECORDS_SCHEMA = {"type": "array", "minItems": 1, "items": {"type": "object"}}
_INVOCATIONS_SCHEMA = {
    "type": "object",
    "description": "One of the payloads of `mlflow models serve`.",
    "properties": {
        "dataframe_split": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array"}}}},
        "dataframe_records": _RECORDS_SCHEMA,
        "instances": _RECORDS_SCHEMA,
        "inputs": {"oneOf": [_RECORDS_SCHEMA, {"type": "object"}]},
    },
}


def _body_doc(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema":
                                                                                schema}}}}


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="tarn model server", version="1", docs_url=None, redoc_url=None)
    m = _Metrics()
    cfg = state.params.serve
    app.state.tarn = state

    def score(payload, endpoint: str):
        """(deployed, columns, proba) for a parsed payload; raises InputError."""
        d = state.holder.current
        if d is None:
            raise InputError("no model in production yet: promote a version "
                             "(`tarn promote --latest`)", 503)
        records = records_from_payload(payload, d.columns)
        columns = to_columns(records, d.columns, cfg.max_rows)
        proba = np.asarray(d.predictor.predict_proba(columns), dtype=np.float64)
        if state.predlog is not None:
            state.predlog.append(columns, proba, d.version)
        m.rows.inc(len(proba))
        return d, proba

    async def handle(request: Request, endpoint: str, render) -> Response:
        start = time.perf_counter()
        try:
            payload = _parse(await _read_body(request, cfg.max_body_bytes))
            d, proba = score(payload, endpoint)
            resp = Response(orjson.dumps(render(d, proba), option=orjson.OPT_SERIALIZE_NUMPY),
                            media_type="application/json", headers={"X-Model-Version": d.version})
        except InputError as e:
            resp = _err(e.status, str(e))
        m.requests.labels(endpoint, str(resp.status_code)).inc()
        m.latency.labels(endpoint).observe(time.perf_counter() - start)
        return resp

    @app.post("/invocations", openapi_extra=_body_doc(_INVOCATIONS_SCHEMA),
              summary="Score rows (compatible with `mlflow models serve`)")
    async def invocations(request: Request) -> Response:
        def render(d, proba):
            return {"predictions": np.column_stack([1 - proba, proba])}
        return await handle(request, "invocations", render)

    @app.post("/predict", openapi_extra=_body_doc(_RECORDS_SCHEMA),
              summary="Score JSON records: probability, label and model version per row")
    async def predict(request: Request) -> Response:
        def render(d, proba):
            labels = (proba >= d.threshold).astype(int)
            return {"model_version": d.version, "predictions": [
                {"probability": p, "label": int(lab)} for p, lab in zip(proba.tolist(),
                                                                        labels.tolist(),
                                                                        strict=True)]}
        return await handle(request, "predict", render)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: a model is loaded")
    async def ready() -> Response:
        d = state.holder.current
        if d is None:
            return _err(503, "no model loaded yet")
        return JSONResponse({"status": "ready", "model_version": d.version})

    @app.get("/version", summary="What is deployed, from where, and the last problem")
    async def version() -> dict:
        d = state.holder.current
        st = state.reconciler.status
        return {"name": d.name if d else state.params.mlflow.registered_model,
                "version": d.version if d else None, "source": d.source if d else None,
                "loaded_at": d.loaded_at if d else None, "bundle": d.bundle if d else None,
                "alias": state.params.promote.alias, "last_error": st.last_error,
                "swaps": st.swaps, "history": st.history[-10:]}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        d = state.holder.current
        st = state.reconciler.status
        m.version.set(int(d.version) if d and d.version.isdigit() else 0)
        m.swaps.set(st.swaps)
        m.swap_failures.set(st.swap_failures)
        m.registry_errors.set(st.registry_errors)
        if state.predlog is not None:
            m.log_dropped.set(state.predlog.dropped_rows)
        return PlainTextResponse(generate_latest(m.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/admin/reconcile", summary="Reconcile to the production alias now (secret)",
              openapi_extra={"parameters": [{"name": "Authorization", "in": "header",
                                             "required": True, "schema": {"type": "string"}}]})
    async def admin_reconcile(request: Request) -> Response:
        if not state.admin_secret:
            return _err(503, "admin endpoint disabled: start the server with TARN_ADMIN_SECRET")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), state.admin_secret.encode()):
            return _err(401, "bad or missing admin secret (Authorization: Bearer <secret>)")
        try:
            body = _parse(await _read_body(request, 10_000)) if request.headers.get(
                "content-length", "0") != "0" else {}
        except InputError as e:
            return _err(e.status, str(e))
        wanted = body.get("version") if isinstance(body, dict) else None
        if wanted is not None:
            try:
                state.reconciler.registry().version(str(wanted))
            except Exception:  # noqa: BLE001 - unknown version
                return _err(404, f"model version {wanted!r} does not exist")
        import asyncio
        target = await asyncio.to_thread(state.reconciler.reconcile)
        d = state.holder.current
        return JSONResponse({"production": target, "serving": d.version if d else None,
                             "last_error": state.reconciler.status.last_error})

    @app.post("/webhooks/mlflow", summary="MLflow registry webhook (HMAC-signed)")
    async def webhook(request: Request) -> Response:
        if not state.webhook_secret:
            return _err(503, "webhook disabled: start the server with TARN_WEBHOOK_SECRET")
        try:
            body = await _read_body(request, 100_000)
        except InputError as e:
            return _err(e.status, str(e))
        problem = verify_webhook(request.headers, body, state.webhook_secret)
        if problem:
            return _err(401, problem)
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _err(400, "malformed JSON")
        data = event.get("data", {}) if isinstance(event, dict) else {}
        relevant = (event.get("entity") == "model_version_alias"
                    and data.get("name") == state.params.mlflow.registered_model
                    and data.get("alias") == state.params.promote.alias)
        if relevant:
            state.reconciler.nudge()
        return JSONResponse({"accepted": True, "reconciling": bool(relevant)})

    @app.get("/client", include_in_schema=False)
    async def client_page() -> Response:
        page = CLIENT_DIR / "index.html"
        if not page.is_file():
            return _err(404, "client page not built")
        return FileResponse(page)

    @app.get("/client/{path:path}", include_in_schema=False)
    async def client_files(path: str) -> Response:
        if path.startswith("bundle/"):
            from tarn.edge.export import current_bundle

            base = current_bundle(state.root / state.params.edge.bundle_dir)
            if base is None:
                return _err(404, "no client bundle published yet")
            target = (base / path.removeprefix("bundle/")).resolve()
            if not target.is_relative_to(base.resolve()):
                return _err(404, "not found")
        else:
            target = (CLIENT_DIR / path).resolve()
            if not target.is_relative_to(CLIENT_DIR.resolve()):
                return _err(404, "not found")
        if not target.is_file():
            return _err(404, f"{path} not found")
        return FileResponse(target, headers={"Cache-Control": "no-store"})

    return app


def verify_webhook(headers, body: bytes, secret: str, now: float | None = None) -> str:
    """'' if the MLflow signature is valid and fresh, else why not."""
    delivery = headers.get("x-mlflow-delivery-id", "")
    stamp = headers.get("x-mlflow-timestamp", "")
    signature = headers.get("x-mlflow-signature", "")
    if not (delivery and stamp and signature.startswith("v1,")):
        return "missing or malformed X-MLflow-* signature headers"
    try:
        age = abs((now or time.time()) - int(stamp))
    except ValueError:
        return "bad X-MLflow-Timestamp"
    if age > WEBHOOK_MAX_AGE_S:
        return "stale webhook timestamp (replay?)"
    signed = f"{delivery}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature[3:].encode()):
        return "bad webhook signature"
    return ""
