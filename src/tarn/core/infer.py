"""Propose a schema contract from a sample of raw rows (``tarn init``). Pure: frames in, a
contract and the reasons for each decision out.

Values are read as text, exactly as the ETL sees them, so the proposed contract accepts every
row of the sample: a column is ``int`` when every present value is an integer, ``float`` when
every one is a number, ``category`` when it has few distinct values, ``string`` otherwise;
markers such as ``?`` or ``NA`` that stand for "missing" become ``missing_values``; numeric
ranges get a margin so that new data a little outside the sample is not quarantined.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tarn.core.schema import normalize_name
from tarn.errors import TarnError

MISSING_MARKERS = ("", "?", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "-")
MAX_CATEGORIES = 50  # more distinct values than this (and than 5 % of rows): a free string
RANGE_MARGIN = 0.1  # ranges widened by this share of the observed span
_INT = re.compile(r"^[+-]?\d+$")


class InitError(TarnError):
    """The files cannot be turned into a contract as they are."""


@dataclass
class Proposal:
    schema: dict  # the ``schema:`` section of params.yaml
    task: str
    notes: list[str] = field(default_factory=list)  # what was decided and why
    warnings: list[str] = field(default_factory=list)  # identifiers, leakage


def contract_name(raw: str) -> str:
    """A snake_case column name for an odd header (``Hours-per-week`` -> ``hours_per_week``)."""
    name = re.sub(r"_+", "_", re.sub(r"[^0-9a-z_]+", "_", normalize_name(raw))).strip("_")
    return name if name and not name[0].isdigit() else f"c_{name}"


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _widen(lo: float, hi: float, integer: bool) -> tuple[float, float]:
    span = (hi - lo) or abs(hi) or 1.0
    new_lo, new_hi = lo - RANGE_MARGIN * span, hi + RANGE_MARGIN * span
    if lo >= 0:
        new_lo = max(0.0, new_lo)  # counts and amounts stay non-negative
    if integer:
        return float(math.floor(new_lo)), float(math.ceil(new_hi))
    return float(f"{new_lo:.6g}"), float(f"{new_hi:.6g}")


def infer_column(raw: str, values: pd.Series, markers: set[str]) -> tuple[dict, str]:
    """(column spec, why) for one feature column of text values."""
    stripped = values.astype(str).str.strip()
    present = stripped[~stripped.isin(markers)]
    spec: dict = {"name": contract_name(raw)}
    if spec["name"] != raw:
        spec["aliases"] = [raw]
    if present.empty:
        raise InitError(f"column {raw!r} holds no value in the sample (only missing markers)",
                        "drop the column, or give a sample where it is filled")
    nums = _numbers(present)
    numeric_share = float(nums.notna().mean())
    if 0.5 <= numeric_share < 1.0:
        bad = present[nums.isna()].unique()[:3].tolist()
        raise InitError(f"column {raw!r} mixes numbers ({numeric_share:.0%}) with text such as "
                        f"{bad}", "clean those values, or list them as missing markers in the "
                                  "file, then run tarn init again")
    distinct = present.nunique()
    if numeric_share == 1.0 and np.isfinite(nums).all():
        integer = bool(present.str.fullmatch(_INT).all())
        lo, hi = _widen(float(nums.min()), float(nums.max()), integer)
        spec.update(dtype="int" if integer else "float", min=lo, max=hi)
        why = (f"{'integers' if integer else 'numbers'} {nums.min():g}..{nums.max():g}, "
               f"allowed {lo:g}..{hi:g}")
    elif distinct <= 12 or (distinct <= MAX_CATEGORIES and distinct <= 0.05 * len(present)):
        cats = sorted(present.unique().tolist())
        spec.update(dtype="category", categories=cats)
        why = f"{distinct} categories"
    else:
        spec.update(dtype="string")
        why = f"free text ({distinct:,} distinct values)"
    if len(present) < len(stripped):
        spec["nullable"] = True
        why += f", {len(stripped) - len(present):,} missing"
    return spec, why


def infer_task(target: pd.Series, markers: set[str]) -> str:
    present = target.astype(str).str.strip()
    present = present[~present.isin(markers)]
    distinct = present.nunique()
    if distinct < 2:
        raise InitError(f"the target is constant ({present.unique().tolist()[:1]})",
                        "a model needs at least two target values")
    if distinct == 2:
        return "binary"
    nums = _numbers(present)
    if nums.notna().all() and (distinct > 20 or not present.str.fullmatch(_INT).all()):
        return "regression"
    return "multiclass"


def propose(frame: pd.DataFrame, target: str, task: str = "auto",
            sensitive: list[str] | None = None, key: list[str] | None = None) -> Proposal:
    """The contract for ``frame`` (text values, one column per raw header)."""
    if frame.empty:
        raise InitError("the sample has no rows", "give files that hold data rows")
    if target not in frame.columns:
        raise InitError(f"target column {target!r} is not in the files (columns: "
                        f"{list(frame.columns)})", "pass --target with one of those names")
    text = frame.astype(str).apply(lambda s: s.str.strip())
    markers = sorted({m for m in MISSING_MARKERS if (text == m).to_numpy().any()})
    found = set(markers) or {""}
    inferred = infer_task(frame[target], found)
    task = inferred if task == "auto" else task
    notes = [f"task: {task} (target {target!r}: {text[target].nunique()} distinct values)"]
    if task != "binary":
        raise InitError(f"the target {target!r} looks like a {task} task; this tarn version "
                        "trains binary classifiers only",
                        "pick a yes/no target, or map the target to two classes first")
    labels = text[target][~text[target].isin(found)]
    counts = labels.value_counts()
    if counts.min() < 2:
        raise InitError(f"target class {counts.idxmin()!r} has {counts.min()} row(s)",
                        "a class needs rows to learn from and to test on")
    positive = counts.idxmin()  # the rarer class is the one of interest, as usual
    mapping = {str(v): int(v == positive) for v in counts.index}
    notes.append(f"target mapping {mapping} (the rarer value, {positive!r}, is 1)")
    columns, warnings = [], []
    n = len(frame)
    for raw in frame.columns:
        if raw == target:
            continue
        spec, why = infer_column(raw, frame[raw], found)
        columns.append(spec)
        notes.append(f"{spec['name']}: {spec['dtype']} ({why})")
        col = text[raw]
        if spec["dtype"] == "string" and col.nunique() > 0.9 * n:
            warnings.append(f"{spec['name']} looks like an identifier ({col.nunique():,} "
                            f"distinct in {n:,} rows): list it under prepare.exclude_features, "
                            "or as schema.key")
        if (col.groupby(text[target]).nunique() <= 1).all() and \
                col.nunique() == text[target].nunique():
            warnings.append(f"{spec['name']} determines the target exactly: leakage? list it "
                            "under prepare.exclude_features")
    target_spec: dict = {"name": contract_name(target), "mapping": mapping}
    if target_spec["name"] != target:
        target_spec["aliases"] = [target]
    names = {c["name"]: c for c in columns}
    by_raw = {c.get("aliases", [c["name"]])[0]: c["name"] for c in columns}
    sens = [by_raw.get(s, contract_name(s)) for s in (sensitive or [])]
    keys = [by_raw.get(k, contract_name(k)) for k in (key or [])]
    for s in [*sens, *keys]:
        if s not in names:
            raise InitError(f"column {s!r} is not among the feature columns",
                            f"use one of {sorted(names)}")
    schema = {"name": "dataset", "missing_values": markers or [""],
              "extra_columns": "error", "unknown_categories": "quarantine",
              "target": target_spec, "sensitive": sens, "key": keys, "columns": columns}
    return Proposal(schema, task, notes, warnings)
