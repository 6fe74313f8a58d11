"""Scoring without a web framework: a request body and its content type in, a status and a
JSON body out.

The app (:mod:`tarn.serve.app`) only moves bytes: it reads the body under its size cap, picks
the event loop or a worker thread, counts, and writes the :class:`Answer` to the socket.
Everything a scoring request *means* is here, callable by a test without HTTP (as MLflow's
scoring server keeps ``invocations(data, content_type, model, schema)`` apart from its
routes): the media type and encoding, parsing, the row limits, validation against the served
version's card (:mod:`tarn.serve.inputs`, which applies :mod:`tarn.core.columns`' one rule),
the contract (refused or flagged), scoring, the prediction log, explanations
(:mod:`tarn.serve.explain`) and the response shape (:mod:`tarn.serve.responses`).

A bad request is an :class:`Answer` with its 4xx status and the JSON error body the server
sends (``error_code``, ``message``, ``request_id``), never an exception; anything else that
goes wrong propagates, and the app turns it into a JSON 500 with an ``error_id``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from tarn.config import ServeConfig
from tarn.core.predictions import log_columns
from tarn.core.tracking import redact
from tarn.serve import explain as explaining
from tarn.serve.deploy import Deployed
from tarn.serve.inputs import (
    InputError,
    Violation,
    contract_violations,
    parse_json,
    records_from_payload,
    refusal,
    to_columns,
)
from tarn.serve.predlog import PredictionLog
from tarn.serve.responses import invocations_body, predict_body

ENDPOINTS = ("predict", "invocations", "explain")

ERROR_CODES = {400: "MALFORMED_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "RESOURCE_DOES_NOT_EXIST", 405: "METHOD_NOT_ALLOWED",
               413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
               422: "INVALID_PARAMETER_VALUE", 429: "REQUEST_LIMIT_EXCEEDED",
               500: "INTERNAL_ERROR", 503: "UNAVAILABLE"}


def error_code(status: int) -> str:
    """The error code a status answers with (MLflow's names where it has them)."""
    return ERROR_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")


def error_body(status: int, message: str, request_id: str = "") -> bytes:
    """The JSON body of every error the server sends (credentials in the message redacted)."""
    body = {"error_code": error_code(status), "message": redact(message)}
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


_CHARSET_UTF8 = re.compile(rb'\s*charset\s*=\s*"?utf-8"?\s*', re.I)
MEDIA_ERROR = "send the rows as UTF-8 JSON with Content-Type: application/json"


def json_media(content_type: bytes | str | None) -> bool:
    """Exactly ``application/json``, with no parameter but ``charset=utf-8`` (a web page
    cannot make a browser send that type without asking first, and ``application/*+json`` or
    another charset is refused rather than guessed at)."""
    if content_type is None:
        return False
    if isinstance(content_type, str):
        content_type = content_type.encode("latin-1", "replace")
    media, _, param = content_type.partition(b";")
    if media.strip().lower() != b"application/json":
        return False
    return not param.strip() or bool(_CHARSET_UTF8.fullmatch(param))


def require_utf8(body: bytes) -> None:
    """A JSON text in UTF-16 or UTF-32 (a byte-order mark, or a NUL among its first bytes,
    which UTF-8 JSON never has) is refused with 415 instead of decoded by a fallback."""
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        raise InputError("the body is not UTF-8 (UTF-16 or UTF-32?): send UTF-8 JSON", 415)


@dataclass(frozen=True)
class Answer:
    """What a scoring request gets: ``status`` and ``body`` (JSON bytes); on success the
    ``version`` that scored and the ``rows`` scored. ``violations`` are the contract's
    findings (flagged on a 200, the reason for a refusal's 422) for the caller to count."""

    status: int
    body: bytes
    version: str = ""
    rows: int = 0
    violations: tuple[Violation, ...] = ()


def media_error(content_type: bytes | str | None, request_id: str = "") -> Answer | None:
    """The 415 a body of another media type gets (checked before the body is read), or None."""
    if json_media(content_type):
        return None
    return Answer(415, error_body(415, MEDIA_ERROR, request_id))


def invocations(data: bytes, content_type: bytes | str | None, deployed: Deployed | None,
                serve: ServeConfig, *, endpoint: str = "invocations", request_id: str = "",
                predlog: PredictionLog | None = None) -> Answer:
    """Answer one scoring request for ``endpoint`` (``predict``, ``invocations`` or
    ``explain``) on the ``deployed`` version (None: nothing in production yet, 503), with the
    row limits and contract policy of ``serve``. Scored rows go to ``predlog`` (not those of
    ``/explain``: asking why is no new score)."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown scoring endpoint {endpoint!r}: one of {ENDPOINTS}")
    found: list[Violation] = []
    try:
        if not json_media(content_type):
            raise InputError(MEDIA_ERROR, 415)
        require_utf8(data)
        return _score(data, deployed, serve, endpoint, request_id, predlog, found)
    except InputError as e:
        return Answer(e.status, error_body(e.status, str(e), request_id),
                      violations=tuple(found))


def _score(data: bytes, d: Deployed | None, serve: ServeConfig, endpoint: str, rid: str,
           predlog: PredictionLog | None, found: list[Violation]) -> Answer:
    """Parse, validate, apply the contract, score, log, render. Raises InputError (after
    putting the contract's findings in ``found``)."""
    if d is None:
        raise InputError("no model in production yet: promote a version "
                         "(`tarn promote --latest`)", 503)
    inputs = d.inputs
    payload = parse_json(data)
    explain = explaining.wanted(endpoint, payload)
    limit = serve.explain_max_rows if explain else serve.max_rows
    records = records_from_payload(payload, inputs, limit)
    columns = to_columns(records, inputs, limit)
    if inputs.checked:
        found += contract_violations(columns, inputs)
    if found and serve.unknown_values == "refuse":
        raise refusal(found, inputs)
    scores = d.predictor.scores(columns)
    explained = explaining.explanations(d, columns) if explain else None  # 409: cannot
    n = len(scores)
    if predlog is not None and endpoint != "explain":
        predlog.append(columns, log_columns(d.task, scores), d.version, rid, _per_row(found, n))
    if endpoint == "invocations":
        out = invocations_body(d.task, scores, rid, found)
    else:
        out = predict_body(d.task, scores, d.version, rid, found)
        if explained is not None:
            explaining.attach(out, explained)
    return Answer(200, orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), d.version, n,
                  tuple(found))


def _per_row(found: list[Violation], n: int) -> list | None:
    """Each row's flagged values as one text for the prediction log (None: none flagged)."""
    if not found:
        return None
    per_row: list = [None] * n
    for v in found:
        per_row[v.row] = f"{per_row[v.row]}; {v.detail}" if per_row[v.row] else v.detail
    return per_row
