"""Propose a schema contract from a sample of raw rows (``tarn init``). Pure: frames in, a
contract and the reasons for each decision out.

Values are read as text, exactly as the ETL sees them, so the proposed contract accepts every
row of the sample: a column is ``int`` when every present value is an integer, ``float`` when
every one is a number, ``category`` when it has few distinct values, ``string`` otherwise;
markers such as ``?`` or ``NA`` that stand for "missing" become ``missing_values``; numeric
ranges get a margin so that new data a little outside the sample is not quarantined. The
target decides the task (two values: binary; labels or a few integers: multiclass; other
numbers: regression) unless the user names it.
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

    @property
    def classification(self) -> bool:
        return self.task != "regression"


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


def infer_column(raw: str, values: pd.Series, markers: set[str],
                 groups: bool = False) -> tuple[dict, str]:
    """(column spec, why) for one feature column of text values. ``groups``: a sensitive
    feature, whose few numeric codes (sex as 1/2) are groups to compare, not a range."""
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
    numeric = numeric_share == 1.0 and bool(np.isfinite(nums).all())
    if numeric and not (groups and distinct <= 12):
        integer = bool(present.str.fullmatch(_INT).all())
        lo, hi = _widen(float(nums.min()), float(nums.max()), integer)
        spec.update(dtype="int" if integer else "float", min=lo, max=hi)
        why = (f"{'integers' if integer else 'numbers'} {nums.min():g}..{nums.max():g}, "
               f"allowed {lo:g}..{hi:g}")
    elif distinct <= 12 or (distinct <= MAX_CATEGORIES and distinct <= 0.05 * len(present)):
        cats = _class_order(present.unique().tolist())
        spec.update(dtype="category", categories=cats)
        why = f"{distinct} categories" + (" (numeric codes of a sensitive feature: groups)"
                                          if numeric else "")
    else:
        spec.update(dtype="string")
        why = f"free text ({distinct:,} distinct values)"
    if len(present) < len(stripped):
        spec["nullable"] = True
        why += f", {len(stripped) - len(present):,} missing"
    return spec, why


MAX_CLASSES = 20  # a numeric target with at most this many distinct integers: classes
TASKS = ("binary", "multiclass", "regression")


def _labels(target: pd.Series, markers: set[str]) -> pd.Series:
    """The target's present values, as text (rows without a label are quarantined)."""
    text = target.astype(str).str.strip()
    return text[~text.isin(markers)]


def infer_task(target: pd.Series, markers: set[str]) -> tuple[str, str]:
    """(task, why) for a target column of text values: two values are a yes/no label, text or
    at most ``MAX_CLASSES`` distinct integers (a 1-5 rating) are classes, other numbers a
    quantity."""
    present = _labels(target, markers)
    distinct = present.nunique()
    if distinct < 2:
        raise InitError(f"the target is constant ({present.unique().tolist()[:1]})",
                        "a model needs at least two target values")
    if distinct == 2:
        return "binary", "2 distinct values"
    nums = _numbers(present)
    if not nums.notna().all():
        return "multiclass", f"{distinct} distinct labels, not all numbers"
    if not present.str.fullmatch(_INT).all():
        return "regression", f"{distinct:,} distinct numbers, not all integers"
    if distinct > MAX_CLASSES:
        return "regression", f"{distinct:,} distinct integers (more than {MAX_CLASSES})"
    return "multiclass", (f"{distinct} distinct integers (at most {MAX_CLASSES}); pass --task "
                          "regression if they measure an amount")


def _class_order(labels: list[str]) -> list[str]:
    """Labels in a stable order: numerically when they are all numbers (``2`` before ``10``),
    else alphabetically."""
    nums = pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce")
    if nums.notna().all():
        return [labels[i] for i in np.argsort(nums.to_numpy(), kind="stable")]
    return sorted(labels)


def target_contract(name: str, labels: pd.Series, task: str) -> tuple[dict, str]:
    """(the ``schema.target`` spec, why) for the present target values under ``task``.
    Classification: every raw label maps to a class index (binary: the rarer value is 1, the
    class of interest as usual; multiclass: 0..K-1 in label order), and every class needs
    rows to learn from and to test on. Regression: a number, within the observed range widened
    like a feature's."""
    spec: dict = {"name": contract_name(name)}
    if spec["name"] != name:
        spec["aliases"] = [name]
    distinct = labels.nunique()
    if task == "regression":
        nums = _numbers(labels)
        if not (nums.notna().all() and np.isfinite(nums).all()):
            bad = labels[nums.isna()].unique()[:3].tolist()
            raise InitError(f"a regression target must be a number; {name!r} holds {bad}",
                            "pass --task multiclass (or binary) for labels, or clean those "
                            "values")
        integer = bool(labels.str.fullmatch(_INT).all())
        lo, hi = _widen(float(nums.min()), float(nums.max()), integer)
        spec.update(min=lo, max=hi)
        return spec, f"numbers {nums.min():g}..{nums.max():g}, allowed {lo:g}..{hi:g}"
    counts = labels.value_counts()
    if counts.min() < 2:
        raise InitError(f"target class {counts.idxmin()!r} has {counts.min()} row(s)",
                        "a class needs rows to learn from and to test on")
    if task == "binary":
        if distinct != 2:
            raise InitError(f"a binary target has 2 values; {name!r} has {distinct}",
                            "pass --task multiclass (or --task auto)")
        positive = counts.idxmin()  # the rarer class is the one of interest, as usual
        spec["mapping"] = {str(v): int(v == positive) for v in counts.index}
        return spec, f"mapping {spec['mapping']} (the rarer value, {positive!r}, is 1)"
    if distinct < 3:
        raise InitError(f"a multiclass target has 3 or more classes; {name!r} has {distinct}",
                        "pass --task binary (or --task auto)")
    spec["mapping"] = {v: i for i, v in enumerate(_class_order(counts.index.tolist()))}
    sizes = ", ".join(f"{v} {counts[v]:,}" for v in spec["mapping"])
    return spec, f"mapping {spec['mapping']} (rows per class: {sizes})"


def propose(frame: pd.DataFrame, target: str, task: str = "auto",
            sensitive: list[str] | None = None, key: list[str] | None = None,
            name: str = "dataset") -> Proposal:
    """The contract for ``frame`` (text values, one column per raw header), named ``name``."""
    if task not in ("auto", *TASKS):
        raise InitError(f"unknown task {task!r}", f"use auto or one of {', '.join(TASKS)}")
    if frame.empty:
        raise InitError("the sample has no rows", "give files that hold data rows")
    if target not in frame.columns:
        raise InitError(f"target column {target!r} is not in the files (columns: "
                        f"{list(frame.columns)})", "pass --target with one of those names")
    text = frame.astype(str).apply(lambda s: s.str.strip())
    markers = sorted({m for m in MISSING_MARKERS if (text == m).to_numpy().any()})
    found = set(markers) or {""}
    inferred, why = infer_task(frame[target], found)
    if task == "auto":
        task, how = inferred, f"auto: {why}"
    else:
        how = f"--task; auto would pick {inferred} ({why})"
    notes = [f"task: {task} (target {target!r}, {how})"]
    target_spec, why = target_contract(target, _labels(frame[target], found), task)
    notes.append(f"target {target_spec['name']}: {why}")
    columns, warnings = [], []
    n = len(frame)
    for raw in frame.columns:
        if raw == target:
            continue
        spec, why = infer_column(raw, frame[raw], found,
                                 groups=bool({raw, contract_name(raw)} & set(sensitive or [])))
        columns.append(spec)
        notes.append(f"{spec['name']}: {spec['dtype']} ({why})")
        col = text[raw]
        if spec["dtype"] == "string" and col.nunique() > 0.9 * n:
            warnings.append(f"{spec['name']} looks like an identifier ({col.nunique():,} "
                            f"distinct in {n:,} rows): list it under prepare.exclude_features, "
                            "or as schema.key")
        # one value per target value and back; a target unique per row (a measured quantity)
        # pairs that way with any unique column, which says nothing
        if text[target].nunique() <= 0.5 * n and \
                (col.groupby(text[target]).nunique() <= 1).all() and \
                col.nunique() == text[target].nunique():
            warnings.append(f"{spec['name']} determines the target exactly: leakage? list it "
                            "under prepare.exclude_features")
    names = {c["name"]: c for c in columns}
    by_raw = {c.get("aliases", [c["name"]])[0]: c["name"] for c in columns}
    sens = [by_raw.get(s, contract_name(s)) for s in (sensitive or [])]
    keys = [by_raw.get(k, contract_name(k)) for k in (key or [])]
    for s in [*sens, *keys]:
        if s not in names:
            raise InitError(f"column {s!r} is not among the feature columns",
                            f"use one of {sorted(names)}")
    schema = {"name": name, "task": task, "missing_values": markers or [""],
              "extra_columns": "error", "unknown_categories": "quarantine",
              "target": target_spec, "sensitive": sens, "key": keys, "columns": columns}
    return Proposal(schema, task, notes, warnings)
