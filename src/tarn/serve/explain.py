"""Explanations of served rows: ``POST /explain`` and ``/predict`` with ``"explain": true``.

The rows go through exactly the parsing, checks, limits and errors of ``/predict`` (the app's
one scoring path, :mod:`tarn.serve.inputs`); this module only adds, per row, the contributions
of :mod:`tarn.core.explain` (exact TreeSHAP by XGBoost, summed back onto the request's own
columns), the base value and the raw score they add up to. The served version's fitted
Pipeline is all it needs, so a version registered before explanations existed is explained
from the model itself; one that cannot be (not an XGBoost Pipeline) is refused with 409 and
the reason, and ``/predict`` keeps answering for it.

Contributions are listed largest |contribution| first, so the first entries are the answer
to "why". Binary: one set (log-odds of class 1); multiclass: one set per class; regression:
one set (the value).

Everything that does not depend on the rows is prepared once per loaded version, on its first
explanation (:func:`prepared`: the one-row encoder, the trees laid out for compiled TreeSHAP,
the bias, the encoded -> user column map), so one row costs a few milliseconds, not XGBoost's
single-threaded TreeSHAP plus scikit-learn's transform.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tarn.core.explain import Contributions, Explainer, NotExplainable, explainer, fast_road
from tarn.serve.inputs import InputError

# the values are XGBoost's pred_contribs whichever path computes them (core/treeshap.py is
# checked against it when a version loads)
METHOD = ("exact TreeSHAP (the values of XGBoost's pred_contribs), encoded columns summed back "
          "per input column")
DIGITS = 6  # rounding of the numbers in a response: sums stay within 1e-5 of the raw score

_cache: list = [None, None]  # [the Deployed explained last, its Explainer or why not]
_building = threading.Lock()  # one thread prepares a version; the others wait for it
# one row's trees are shared between the calling thread and this pool (TreeSHAP's kernel
# releases the GIL): ~2.7 -> ~1.5 ms a row of the demo model (152,266 nodes) on two cores
THREADS = min(2, os.cpu_count() or 1)
_pool = ThreadPoolExecutor(THREADS - 1, thread_name_prefix="tarn-explain") if THREADS > 1 \
    else None


def wanted(endpoint: str, payload: Any) -> bool:
    """Whether this request asks for explanations: always on /explain; on /predict when the
    body object says ``"explain": true`` (anything but a boolean is refused, 422)."""
    if endpoint == "explain":
        return True
    if endpoint != "predict" or not isinstance(payload, dict) or "explain" not in payload:
        return False
    value = payload["explain"]
    if not isinstance(value, bool):
        raise InputError(f"explain must be true or false, got {str(value)[:20]!r}")
    return value


def _pipeline(predictor) -> Any:
    """The fitted Pipeline behind a predictor (the Python one, or a hybrid's Python half)."""
    for p in (predictor, getattr(predictor, "python", None)):
        pipe = getattr(p, "pipe", None)
        if pipe is not None:
            return pipe
    return None


def ready(d) -> bool:
    """Whether ``d``'s explainer is built (the first explanation of a version prepares it:
    about a second on a large model, which the app keeps off its event loop)."""
    return _cache[0] is d


def explainer_of(d) -> Explainer:
    """The served version's Explainer (built once per loaded version); InputError 409 with
    the reason when this version cannot be explained."""
    cached = _cache[:]
    if cached[0] is not d:
        with _building:
            cached = _cache[:]
            if cached[0] is not d:
                pipe = _pipeline(d.predictor)
                try:
                    if pipe is None:
                        raise NotExplainable("the server holds no Python model for it")
                    found: Explainer | str = prepared(explainer(pipe, d.task))
                except NotExplainable as e:
                    found = str(e)
                cached = [d, found]
                _cache[:] = cached
    found = cached[1]
    if isinstance(found, str):
        raise InputError(f"version {d.version} cannot be explained: {found}; /predict still "
                         "scores it, and a version trained by tarn (XGBoost) is explained",
                         409)
    return found


def prepared(e: Explainer) -> Explainer:
    """``e`` with the few-rows road (once per served version), one row's trees shared
    between the calling thread and the pool."""
    return fast_road(e, _pool, THREADS)


def _named(values: np.ndarray, columns: tuple[str, ...]) -> dict[str, float]:
    order = np.argsort(-np.abs(values), kind="stable")
    return {columns[i]: round(float(values[i]), DIGITS) for i in order}


def rows(c: Contributions, multiclass: bool) -> list[dict]:
    """One explanation per row: ``contributions`` (largest first), ``base_value`` and
    ``raw_score`` (= base_value + the contributions); per class for multiclass."""
    raw = c.raw
    out = []
    for i in range(len(c.values)):
        if multiclass:
            out.append({
                "raw_score": {k: round(float(raw[i, j]), DIGITS)
                              for j, k in enumerate(c.outputs)},
                "base_value": {k: round(float(c.base[j]), DIGITS)
                               for j, k in enumerate(c.outputs)},
                "contributions": {k: _named(c.values[i, j], c.columns)
                                  for j, k in enumerate(c.outputs)}})
        else:
            out.append({"raw_score": round(float(raw[i, 0]), DIGITS),
                        "base_value": round(float(c.base[0]), DIGITS),
                        "contributions": _named(c.values[i, 0], c.columns)})
    return out


def explanations(d, columns: dict[str, np.ndarray]) -> tuple[list[dict], str]:
    """(per-row explanations, what the raw score means) for validated request columns."""
    e = explainer_of(d)
    c = e.explain_columns(columns, [col.name for col in d.columns])
    return rows(c, len(e.outputs) > 1), e.scale


def attach(body: dict, explained: tuple[list[dict], str]) -> dict:
    """Each prediction of a ``/predict`` body gets its ``explanation``; the body says once
    how they were computed and what the raw score is."""
    per_row, scale = explained
    for row, e in zip(body["predictions"], per_row, strict=True):
        row["explanation"] = e
    body["explanation"] = {"method": METHOD, "raw_score": scale}
    return body
