"""The FastAPI application: scoring, health, metrics, admin and webhook endpoints.

Scoring bodies must be UTF-8 JSON sent as exactly ``application/json`` (an optional
``charset=utf-8``; 415 otherwise: a web page cannot make a browser score and log rows, and a
UTF-16 body or an ``application/*+json`` type is refused rather than guessed at). A body with a
``Content-Encoding`` is refused with 415 on every route: tarn decodes none (a compressed body
would make the size cap count compressed bytes while the decoded ones fill memory; a proxy in
front can decompress). Bodies are read with a size cap, then parsed and validated column-wise
(:mod:`tarn.serve.inputs`) and scored in a worker thread, so one large request never stalls
``/health`` or ``/metrics``. The request handler reads the serving model once, so a swap in the
middle of a request cannot mix two versions. Every error is a 4xx JSON body naming the field;
anything unexpected becomes a JSON 500 with an ``error_id`` that is logged and counted.

Error codes follow MLflow's scoring server where it has one (``MALFORMED_REQUEST``,
``INVALID_PARAMETER_VALUE``, ``RESOURCE_DOES_NOT_EXIST``, ``UNAUTHENTICATED``) and name the
status otherwise (``REQUEST_TOO_LARGE``, ``UNSUPPORTED_MEDIA_TYPE``, ``UNAVAILABLE``).

Every response carries a request id (``X-Request-Id``; a client's own is kept when it is a
short safe token) and scoring bodies repeat it as ``request_id``; the prediction log stores it
with each row, so a response can be tied to its rows.

What a scoring request means (media type, parsing, validation against the version's card,
the contract, scoring, explanations, the response shape, the error bodies) is
:mod:`tarn.serve.scoring`, framework-free; this module is wiring and routes. The hot path:
``POST /predict``, ``/invocations`` and ``/explain`` are answered by :class:`Front`, a plain
ASGI callable in front of FastAPI (no routing, request objects or response classes per
call); a body small enough to score in well under a millisecond is scored on the event loop,
a larger one in a worker thread. Everything else goes to the FastAPI app.

With ``serve.workers`` > 1, ``/metrics`` describes the worker that answered the scrape (the
one that accepted the connection): ``tarn_worker_info{worker, pid, workers}`` says which, and
every response names its worker in ``X-Tarn-Worker`` (``/version`` in ``worker``). Counters
are that process's own; they are not summed across workers (prometheus_client's multiprocess
mode would do that, at the price of files written per sample and gauges per pid).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import logging
import os
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from tarn.config import Params
from tarn.core.tracking import redact
from tarn.serve import explain as explaining
from tarn.serve import scoring as scoring_
from tarn.serve.deploy import ModelHolder, Reconciler
from tarn.serve.inputs import InputError, parse_json
from tarn.serve.predlog import PredictionLog
from tarn.serve.scoring import ERROR_CODES, error_body, error_code, require_utf8

__all__ = ["ERROR_CODES", "CatchAll", "Deliveries", "Front", "ServerState", "create_app",
           "error_code", "request_id", "require_utf8", "verify_webhook"]

CLIENT_DIR = Path(__file__).parent / "client"
WEBHOOK_MAX_AGE_S = 300
SCORING_THREADS = 8  # requests parsed and scored at once; the rest wait their turn
INLINE_BYTES = 8_192  # bodies up to this size (a few rows) are scored on the event loop: a
#                       thread hop would cost more than the work; larger ones go to a thread
SCORING_PATHS = {"/predict": "predict", "/invocations": "invocations", "/explain": "explain"}
_SAFE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
log = logging.getLogger("tarn.serve")


class Deliveries:
    """Webhook delivery ids accepted within the replay window: each is accepted once."""

    def __init__(self, window_s: float = WEBHOOK_MAX_AGE_S, max_ids: int = 100_000) -> None:
        self.window, self.max_ids = window_s, max_ids
        self._until: dict[str, float] = {}  # delivery id -> when its timestamp goes stale
        self._lock = threading.Lock()

    def accept(self, delivery: str, stamp: int, now: float) -> str:
        """'' the first time a delivery id is seen in its window, else why not."""
        with self._lock:
            if len(self._until) >= 1_000:
                self._until = {k: t for k, t in self._until.items() if t >= now}
            if delivery in self._until:
                return "webhook delivery already accepted (replay?)"
            if len(self._until) >= self.max_ids:
                return "too many webhook deliveries in the replay window; retry later"
            self._until[delivery] = stamp + self.window
            return ""


@dataclass
class ServerState:
    params: Params
    root: Path
    holder: ModelHolder
    reconciler: Reconciler
    predlog: PredictionLog | None
    admin_secret: str = ""
    webhook_secret: str = ""
    deliveries: Deliveries = field(default_factory=Deliveries)
    worker: int = 0  # this process's index among `serve.workers` (0 publishes the bundle)
    workers: int = 1
    nudge_all: object = None  # tells the other workers to reconcile now (None: one process)

    def nudge_siblings(self) -> None:
        if callable(self.nudge_all):
            self.nudge_all()


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
        self.unsigned = Gauge("tarn_unsigned_refusals", "Production versions refused: no valid "
                              "deployment signature (moved there by hand)", registry=r)
        self.unhandled = Counter("tarn_unhandled_errors", "Unexpected errors (JSON 500s, "
                                 "logged with their error_id)", registry=r)
        self.violations = Counter("tarn_contract_violations", "Request values the contract "
                                  "does not allow (the ETL would quarantine them), refused or "
                                  "flagged (serve.unknown_values)", ["column", "reason", "action"],
                                  registry=r)
        self.unauthorized = Counter("tarn_unauthorized", "401s: a missing or wrong admin "
                                    "secret, a bad webhook signature", ["route"], registry=r)
        self.worker = Gauge("tarn_worker_info", "The server process that answered this scrape "
                            "(metrics are per process)", ["worker", "pid", "workers"],
                            registry=r)
        self._requests: dict = {}
        self._latency: dict = {}

    def request(self, endpoint: str, status: int, seconds: float | None = None) -> None:
        """Count one request (children cached: no label lookup per call)."""
        key = (endpoint, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(endpoint, str(status))
        child.inc()
        if seconds is not None:
            h = self._latency.get(endpoint)
            if h is None:
                h = self._latency[endpoint] = self.latency.labels(endpoint)
            h.observe(seconds)


class _PredlogCollector:
    """The prediction log's own counts, read when /metrics is scraped."""

    def __init__(self, predlog: PredictionLog) -> None:
        self.p = predlog

    def collect(self):
        s = self.p.stats()
        for name, doc in (("flush_failures", "Prediction-log writes that failed (retried)"),
                          ("written_rows", "Rows written to the prediction log"),
                          ("dropped_rows", "Rows acknowledged but not logged (queue full)"),
                          ("bad_rows", "Rows whose values could not be logged"),
                          ("deadletter_rows", "Rows written to a dead-letter file"),
                          ("files", "Prediction-log files closed"),
                          ("retention_deleted_files", "Files removed by retention")):
            yield CounterMetricFamily(f"tarn_predlog_{name}", doc, value=s[name])
        yield GaugeMetricFamily("tarn_predlog_pending_rows", "Rows held in memory, not yet "
                                "written", value=s["pending_rows"])
        yield GaugeMetricFamily("tarn_prediction_log_dropped_rows", "Unlogged rows (same as "
                                "tarn_predlog_dropped_rows_total)", value=s["dropped_rows"])


_error_body = error_body


def _err(status: int, message: str, request: Request | None = None) -> Response:
    rid = request.scope.get("tarn_request_id", "") if request is not None else ""
    return Response(_error_body(status, message, rid), status_code=status,
                    media_type="application/json")


_ID_PREFIX = uuid.uuid4().hex[:16]  # per process: ids from two workers never collide
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


def _reseed_ids() -> None:  # a forked child must not repeat its parent's ids
    global _ID_PREFIX
    _ID_PREFIX = uuid.uuid4().hex[:16]


os.register_at_fork(after_in_child=_reseed_ids)


def request_id(headers) -> str:
    """The client's X-Request-Id when it is a short safe token, else a new one: 32 hex
    characters, a random per-process prefix and a counter (no system call per request)."""
    for k, v in headers:
        if k == b"x-request-id":
            if _SAFE_ID.fullmatch(v):
                return v.decode()
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


def _endpoint(path: str) -> str:
    """A bounded metrics label for any path (fuzzed paths must not grow the label set)."""
    p = path.strip("/").split("/", 1)[0]
    return p if p in {"predict", "invocations", "explain", "health", "ready", "version", "metrics",
                      "admin", "webhooks", "client"} else "other"


class CatchAll:
    """ASGI middleware: any exception a route lets through becomes a JSON 500 with an
    ``error_id``, logged with its traceback (credentials redacted) and counted."""

    def __init__(self, app, on_error) -> None:
        self.app, self.on_error = app, on_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - the point of this middleware
            error_id = uuid.uuid4().hex[:16]
            path = scope.get("path", "")
            log.error("unhandled error %s on %s %s: %s", error_id, scope.get("method"),
                      redact(path[:200]), redact(traceback.format_exc()))
            self.on_error(path)
            if started:  # the response is on its way: nothing valid can be sent any more
                return
            body = {"error_code": "INTERNAL_ERROR",
                    "message": "internal error; the server log has the details under this "
                               "error_id", "error_id": error_id}
            rid = scope.get("tarn_request_id")
            if rid:
                body["request_id"] = rid
            body = orjson.dumps(body)
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]
            if rid:
                headers.append((b"x-request-id", rid.encode()))
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if re.fullmatch(r"[0-9]{1,30}", declared) and int(declared) > limit:
        raise InputError(f"payload of {int(declared):,} bytes exceeds the {limit:,}-byte limit",
                         413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"payload exceeds the {limit:,}-byte limit", 413)
        chunks.append(chunk)
    return b"".join(chunks)


_parse = parse_json


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


class Front:
    """The ASGI application uvicorn runs: scoring requests are answered here, directly;
    everything else goes to the FastAPI app. Every HTTP response gets an ``X-Request-Id``."""

    def __init__(self, fastapi_app: FastAPI, scoring) -> None:
        self.fastapi = fastapi_app
        self.state = fastapi_app.state
        self.scoring = scoring

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.fastapi(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope["tarn_request_id"] = rid
        encoding = _content_encoding(scope["headers"])
        if encoding:
            await _send_error(send, 415, f"Content-Encoding {encoding[:40]!r} is not decoded "
                              "here: send the body uncompressed", rid)
            self.state.tarn_metrics.request(_endpoint(scope["path"]), 415)
            return
        if scope["method"] == "POST" and scope["path"] in SCORING_PATHS:
            await self.scoring(scope, receive, send)
            return
        header = (b"x-request-id", rid.encode())

        async def with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        await self.fastapi(scope, receive, with_id)


class _TooLarge(InputError):
    pass


async def _receive_body(receive, headers, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 beyond: a declared length is checked
    before anything is read)."""
    for k, v in headers:
        if k == b"content-length":
            if re.fullmatch(rb"[0-9]{1,30}", v) and int(v) > limit:
                raise _TooLarge(f"payload of {int(v):,} bytes exceeds the {limit:,}-byte limit",
                                413)
            break
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client went away")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge(f"payload exceeds the {limit:,}-byte limit", 413)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _content_type(headers) -> bytes | None:
    for k, v in headers:
        if k == b"content-type":
            return v
    return None


def _content_encoding(headers) -> str:
    """The request's Content-Encoding unless absent or ``identity`` ('' then)."""
    for k, v in headers:
        if k == b"content-encoding" and v.strip().lower() not in (b"", b"identity"):
            return v.decode("latin-1")
    return ""


async def _send_error(send, status: int, message: str, rid: str) -> None:
    body = _error_body(status, message, rid)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(state: ServerState) -> Front:
    app = FastAPI(title="tarn model server", version="1", docs_url=None, redoc_url=None)
    m = _Metrics()
    if state.predlog is not None:
        m.registry.register(_PredlogCollector(state.predlog))
    m.worker.labels(str(state.worker), str(os.getpid()), str(state.workers)).set(1)
    cfg = state.params.serve
    action = "refused" if cfg.unknown_values == "refuse" else "flagged"
    app.state.tarn = state
    app.state.tarn_metrics = m
    limiter = []  # one anyio CapacityLimiter, made inside the event loop on first use
    worker_header = (b"x-tarn-worker", str(state.worker).encode())

    def on_error(path: str) -> None:
        m.unhandled.inc()
        m.requests.labels(_endpoint(path), "500").inc()

    app.add_middleware(CatchAll, on_error=on_error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """The framework's own 404 / 405 in the same JSON shape as every other error."""
        resp = _err(exc.status_code, str(exc.detail), request)
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    def score(body: bytes, content_type: bytes | None, endpoint: str,
              rid: str) -> scoring_.Answer:
        """:func:`tarn.serve.scoring.invocations` on the model served now (read once: a swap
        in the middle of a request cannot mix two versions), its contract findings counted.
        CPU work: on the event loop for small bodies, else a thread."""
        answer = scoring_.invocations(body, content_type, state.holder.current, cfg,
                                      endpoint=endpoint, request_id=rid,
                                      predlog=state.predlog)
        for v in answer.violations:
            m.violations.labels(v.column, v.reason, action).inc()
        if answer.status == 200:
            m.rows.inc(answer.rows)
        return answer

    async def scoring(scope, receive, send) -> None:
        start = time.perf_counter()
        endpoint = SCORING_PATHS[scope["path"]]
        rid = scope.get("tarn_request_id") or uuid.uuid4().hex
        headers = scope["headers"]
        content_type = _content_type(headers)
        extra = []
        try:
            answer = scoring_.media_error(content_type, rid)  # before reading the body
            if answer is None:
                body = await _receive_body(receive, headers, cfg.max_body_bytes)
                if len(body) <= INLINE_BYTES and (endpoint != "explain" or explaining.ready(
                        state.holder.current)):  # a version's first /explain builds: a thread
                    answer = score(body, content_type, endpoint, rid)
                else:
                    import anyio.to_thread

                    if not limiter:
                        limiter.append(anyio.CapacityLimiter(SCORING_THREADS))
                    answer = await anyio.to_thread.run_sync(
                        score, body, content_type, endpoint, rid, limiter=limiter[0])
            status, content = answer.status, answer.body
            if status == 200:
                extra.append((b"x-model-version", answer.version.encode()))
                if answer.violations:
                    extra.append((b"x-contract-violations",
                                  str(len(answer.violations)).encode()))
        except InputError as e:  # the body over its size cap
            status, content = e.status, _error_body(e.status, str(e), rid)
        except ConnectionAbortedError:
            return
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            (b"x-request-id", rid.encode()), worker_header, *extra]})
        await send({"type": "http.response.body", "body": content})
        m.request(endpoint, status, time.perf_counter() - start)

    # The scoring routes below are reached only by other methods' paths (Front answers
    # POST /predict and /invocations); they document the endpoints in /openapi.json.
    async def handle(request: Request, endpoint: str) -> Response:
        sent: dict = {}

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                sent["headers"] = message["headers"]
            else:
                sent["body"] = message.get("body", b"")

        await scoring({**request.scope, "path": f"/{endpoint}"}, request.receive, capture)
        resp = Response(sent.get("body", b""), status_code=sent.get("status", 500),
                        media_type="application/json")
        for k, v in sent.get("headers", []):
            if k not in (b"content-type", b"content-length"):
                resp.headers[k.decode()] = v.decode()
        return resp

    def is_admin(request: Request) -> bool:
        """``Authorization: Bearer <secret>``: the scheme is required (RFC 6750)."""
        if not state.admin_secret:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                   state.admin_secret.encode())

    def unauthorized(route: str, message: str, request: Request) -> Response:
        """A 401, counted by route (tarn_unauthorized_total, tarn_requests_total)."""
        m.unauthorized.labels(route).inc()
        m.request(route, 401)
        return _err(401, message, request)

    @app.post("/invocations", openapi_extra=_body_doc(_INVOCATIONS_SCHEMA),
              summary="Score rows (compatible with `mlflow models serve`)")
    async def invocations(request: Request) -> Response:
        return await handle(request, "invocations")

    @app.post("/predict", openapi_extra=_body_doc(_RECORDS_SCHEMA),
              summary="Score JSON records: probability, label, model version and request id")
    async def predict(request: Request) -> Response:
        return await handle(request, "predict")

    @app.post("/explain", openapi_extra=_body_doc(_RECORDS_SCHEMA),
              summary="Score and explain records: /predict's answer plus, per row, each "
                      "column's contribution and the base value they add to")
    async def explain(request: Request) -> Response:
        return await handle(request, "explain")

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: a model is loaded")
    async def ready(request: Request) -> Response:
        d = state.holder.current
        if d is None:
            return _err(503, "no model loaded yet", request)
        return JSONResponse({"status": "ready", "model_version": d.version})

    @app.get("/version", summary="What is deployed, from where, and the last problem "
                                 "(details with the admin secret)")
    async def version(request: Request) -> dict:
        d = state.holder.current
        st = state.reconciler.status
        full = is_admin(request)
        bundle = d.bundle if d and d.bundle else None
        if bundle and not full:
            bundle = Path(bundle).name  # no internal paths for strangers
        # the reconciler's messages are "<what happened>: <raw error>"; strangers get the first
        last_error = st.last_error if full else st.last_error.split(":", 1)[0]
        return {"worker": state.worker, "workers": state.workers,
                "name": d.name if d else state.params.mlflow.registered_model,
                "version": d.version if d else None, "source": d.source if d else None,
                "task": d.task.kind if d else None,
                "classes": list(d.task.classes) if d else None,
                "threshold": d.task.decision_threshold if d else None,
                "loaded_at": d.loaded_at if d else None, "bundle": bundle,
                "alias": state.params.promote.alias, "last_error": redact(last_error),
                "swaps": st.swaps, "history": st.history[-10:]}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        d = state.holder.current
        st = state.reconciler.status
        m.version.set(int(d.version) if d and d.version.isdigit() else 0)
        m.swaps.set(st.swaps)
        m.swap_failures.set(st.swap_failures)
        m.registry_errors.set(st.registry_errors)
        m.unsigned.set(st.unsigned_refusals)
        return PlainTextResponse(generate_latest(m.registry).decode(),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/admin/reconcile", summary="Reconcile to the production alias now (secret)",
              openapi_extra={"parameters": [{"name": "Authorization", "in": "header",
                                             "required": True, "schema": {"type": "string"}}]})
    async def admin_reconcile(request: Request) -> Response:
        if not state.admin_secret:
            return _err(503, "admin endpoint disabled: start the server with "
                        "TARN_ADMIN_SECRET", request)
        if not is_admin(request):
            return unauthorized("admin", "bad or missing admin secret (Authorization: Bearer "
                                "<secret>)", request)
        try:
            raw = await _read_body(request, 10_000) if request.headers.get(
                "content-length", "0") != "0" else b""
            if raw:
                require_utf8(raw)
            body = _parse(raw) if raw else {}
        except InputError as e:
            return _err(e.status, str(e), request)
        wanted = body.get("version") if isinstance(body, dict) else None
        if wanted is not None:
            try:
                state.reconciler.registry().version(str(wanted))
            except Exception:  # noqa: BLE001 - unknown version
                return _err(404, f"model version {wanted!r} does not exist", request)
        import asyncio
        state.nudge_siblings()  # the other workers load in parallel
        target = await asyncio.to_thread(state.reconciler.reconcile)
        d = state.holder.current
        return JSONResponse({"production": target, "serving": d.version if d else None,
                             "last_error": redact(state.reconciler.status.last_error)})

    @app.post("/webhooks/mlflow", summary="MLflow registry webhook (HMAC-signed)")
    async def webhook(request: Request) -> Response:
        if not state.webhook_secret:
            return _err(503, "webhook disabled: start the server with TARN_WEBHOOK_SECRET", request)
        try:
            body = await _read_body(request, 100_000)
        except InputError as e:
            return _err(e.status, str(e), request)
        problem = verify_webhook(request.headers, body, state.webhook_secret,
                                 seen=state.deliveries)
        if problem:
            return unauthorized("webhooks", problem, request)
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _err(400, "malformed JSON", request)
        if not isinstance(event, dict):
            return _err(400, "webhook body must be a JSON object", request)
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        relevant = (event.get("entity") == "model_version_alias"
                    and data.get("name") == state.params.mlflow.registered_model
                    and data.get("alias") == state.params.promote.alias)
        if relevant:
            state.reconciler.nudge()
            state.nudge_siblings()
        return JSONResponse({"accepted": True, "reconciling": bool(relevant)})

    @app.get("/client", include_in_schema=False)
    async def client_page(request: Request) -> Response:
        page = CLIENT_DIR / "index.html"
        if not page.is_file():
            return _err(404, "client page not built", request)
        return FileResponse(page)

    @app.get("/client/{path:path}", include_in_schema=False)
    async def client_files(path: str, request: Request) -> Response:
        if _UNSAFE_PATH.search(path) or len(path) > 512:  # NUL or control characters
            return _err(404, "not found", request)
        try:
            return _client_file(path)
        except (OSError, ValueError):  # names the file system refuses: nothing to serve
            return _err(404, "not found", request)

    def _client_file(path: str) -> Response:
        if path.startswith("bundle/"):
            from tarn.edge.pointer import current_bundle

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

    return Front(app, CatchAll(scoring, on_error))


_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f]")
_STAMP = re.compile(r"[0-9]{1,12}")  # seconds since 1970: ten digits until the year 2286


def verify_webhook(headers, body: bytes, secret: str, now: float | None = None,
                   seen: Deliveries | None = None) -> str:
    """'' if the MLflow signature is valid and fresh (and, with ``seen``, its delivery id
    not accepted before in the window), else why not."""
    delivery = headers.get("x-mlflow-delivery-id", "")
    stamp = headers.get("x-mlflow-timestamp", "")
    signature = headers.get("x-mlflow-signature", "")
    if not (delivery and stamp and signature.startswith("v1,")) or len(delivery) > 200 \
            or len(signature) > 200:
        return "missing or malformed X-MLflow-* signature headers"
    if not _STAMP.fullmatch(stamp):  # checked before any arithmetic: no overflow
        return "bad X-MLflow-Timestamp"
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > WEBHOOK_MAX_AGE_S:
        return "stale webhook timestamp (replay?)"
    signed = f"{delivery}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature[3:].encode("utf-8", "replace")):
        return "bad webhook signature"
    return seen.accept(delivery, int(stamp), now) if seen is not None else ""
