"""A fitted preprocessor's transform for a few rows, without scikit-learn's per-call cost.

``ColumnTransformer.transform`` on one row costs ~4 ms (input validation, pandas indexing,
one call per step): more than exact TreeSHAP itself once that is fast. :func:`row_encoder`
reads what the fitted steps of :func:`tarn.core.features.build_preprocessor` learned (the
imputers' statistics, a scaler's mean and scale, the one-hot categories, the ordered codes)
into plain arrays and dictionaries once per model, and :meth:`RowEncoder.encode` applies them
to validated request columns. It is proved equal to ``pre.transform`` on probe rows (fitted
values, missing ones, unknown categories) when built; a step it does not know, or any
difference, gives None, and the caller keeps scikit-learn's transform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

_Step = Callable[[np.ndarray], np.ndarray]  # (n,) values of one input -> (n, width) outputs


@dataclass(frozen=True)
class _Block:
    column: str
    start: int  # first output column
    width: int
    steps: tuple[_Step, ...]  # applied in order; the last gives (n, width)


class RowEncoder:
    """The design matrix of a fitted ColumnTransformer for validated request columns."""

    def __init__(self, blocks: list[_Block], width: int) -> None:
        self.blocks, self.width = blocks, width

    def encode(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, width) float32, as ``pre.transform`` then a float32 cast give it."""
        n = len(next(iter(columns.values())))
        out = np.zeros((n, self.width), dtype=np.float32)
        for b in self.blocks:
            v = np.asarray(columns[b.column])
            for step in b.steps:
                v = step(v)
            out[:, b.start:b.start + b.width] = v.reshape(n, b.width)
        return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _impute(imp) -> _Step | None:
    stats = getattr(imp, "statistics_", None)
    if stats is None or len(stats) != 1 or getattr(imp, "add_indicator", False):
        return None
    fill = stats[0]
    marker = imp.missing_values
    if marker is None:
        return lambda v: np.array([fill if x is None else x for x in v], dtype=object) \
            if v.dtype == object else v
    if not (isinstance(marker, float) and math.isnan(marker)):
        return None
    if isinstance(fill, str):
        return lambda v: np.array([fill if _missing(x) else x for x in v], dtype=object)
    fill = float(fill)

    def numeric(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return np.where(np.isnan(v), fill, v)
    return numeric


def _scale(scaler) -> _Step:
    mean = 0.0 if scaler.mean_ is None else float(scaler.mean_[0])
    scale = 1.0 if scaler.scale_ is None else float(scaler.scale_[0])
    return lambda v: (np.asarray(v, dtype=np.float64) - mean) / scale


def _onehot(enc, j: int) -> tuple[_Step, int] | None:
    if getattr(enc, "drop_idx_", None) is not None or getattr(enc, "_infrequent_enabled",
                                                              False):
        return None
    if enc.handle_unknown != "ignore":
        return None
    cats = list(enc.categories_[j])
    index = {c: i for i, c in enumerate(cats)}
    width = len(cats)

    def onehot(v: np.ndarray) -> np.ndarray:
        out = np.zeros((len(v), width), dtype=np.float64)
        for r, x in enumerate(v):
            i = index.get(x)
            if i is not None:
                out[r, i] = 1.0
        return out
    return onehot, width


def _codes(enc, j: int) -> _Step | None:
    if enc.handle_unknown != "use_encoded_value":
        return None
    index = {c: float(i) for i, c in enumerate(enc.categories_[j])}
    unknown = float(enc.unknown_value)
    return lambda v: np.array([index.get(x, unknown) for x in v], dtype=np.float64)


def _steps(trans, cols: list[str], j: int) -> tuple[list[_Step], int] | None:
    """The steps of input ``j`` of one transformer (a Pipeline of known steps), and its
    output width; None for anything else."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from tarn.core.features import OrderedCodes

    parts = [s for _, s in trans.steps] if hasattr(trans, "steps") else [trans]
    steps: list[_Step] = []
    width = 1
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        sub = _slice_of(part, j)
        if isinstance(part, SimpleImputer) and sub is not None:
            step = _impute(sub)
        elif isinstance(part, StandardScaler) and sub is not None:
            step = _scale(sub)
        elif isinstance(part, OneHotEncoder) and last:
            found = _onehot(part, j)
            step, width = found if found else (None, 1)
        elif isinstance(part, OrderedCodes) and last:
            step = _codes(part.encoder_, j)
        else:
            return None
        if step is None:
            return None
        steps.append(step)
    return steps, width


class _One:
    """A fitted imputer or scaler restricted to input ``j`` (its per-input arrays sliced)."""

    def __init__(self, part, j: int) -> None:
        self.missing_values = getattr(part, "missing_values", None)
        self.add_indicator = getattr(part, "add_indicator", False)
        stats = getattr(part, "statistics_", None)
        self.statistics_ = None if stats is None else stats[j:j + 1]
        for name in ("mean_", "scale_"):
            arr = getattr(part, name, None)
            setattr(self, name, None if arr is None else arr[j:j + 1])


def _slice_of(part, j: int) -> _One | None:
    try:
        return _One(part, j)
    except (IndexError, TypeError):
        return None


def row_encoder(pre) -> RowEncoder | None:
    """The :class:`RowEncoder` of a fitted ColumnTransformer, proved equal to its transform
    on probe rows; None when a step is unknown or any output differs."""
    transformers = getattr(pre, "transformers_", None)
    if transformers is None:
        return None
    blocks: list[_Block] = []
    width = 0
    for name, trans, cols in transformers:
        if trans == "drop":
            continue
        sl = pre.output_indices_.get(name)
        if trans == "passthrough" or sl is None or isinstance(cols, slice):
            return None
        start = sl.start
        for j, c in enumerate(cols):
            found = _steps(trans, list(cols), j)
            if found is None:
                return None
            steps, w = found
            blocks.append(_Block(str(c), start, w, tuple(steps)))
            start += w
        if start != sl.stop:
            return None
        width = max(width, sl.stop)
    encoder = RowEncoder(blocks, width)
    return encoder if _same_as_sklearn(encoder, pre) else None


def _probe(pre) -> dict[str, np.ndarray]:
    """A few rows that take every branch: fitted values, missing ones, unknown categories."""
    from sklearn.preprocessing import OneHotEncoder

    from tarn.core.features import OrderedCodes

    rows = 6
    out: dict[str, np.ndarray] = {}
    for _, trans, cols in pre.transformers_:
        if trans == "drop":
            continue
        last = trans.steps[-1][1] if hasattr(trans, "steps") else trans
        cats = (last.categories_ if isinstance(last, OneHotEncoder) else
                last.encoder_.categories_ if isinstance(last, OrderedCodes) else None)
        for j, c in enumerate(cols):
            if cats is None:
                out[str(c)] = np.array([0.0, np.nan, 1.5, -3.0, 1e6, np.nan])
            else:
                known = [x for x in cats[j] if isinstance(x, str)][:3] or ["a"]
                vals = [known[0], None, "\u2603 never seen", known[-1], np.nan,
                        known[len(known) // 2]]
                out[str(c)] = np.array(vals[:rows], dtype=object)
    return out


def _same_as_sklearn(encoder: RowEncoder, pre) -> bool:
    try:
        probe = _probe(pre)
        mine = encoder.encode(probe)
        theirs = np.asarray(pre.transform(pd.DataFrame(probe)), dtype=np.float32)
    except Exception:  # noqa: BLE001 - any failure means: use scikit-learn's transform
        return False
    return mine.shape == theirs.shape and np.array_equal(mine, theirs, equal_nan=True)
