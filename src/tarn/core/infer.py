"""Propose a schema contract from a sample of raw rows (``tarn init``). Pure: frames in, a
contract and the reasons for each decision out.

Values are read as text, exactly as the ETL sees them, so the proposed contract accepts every
row of the sample: a column is ``int`` when every present value is an integer, ``float`` when
every one is a number, ``category`` when it has few distinct values, ``string`` otherwise;
markers such as ``?`` or ``NA`` that stand for "missing" become ``missing_values``; numeric
ranges get a margin so that new data a little outside the sample is not quarantined. The
target decides the task (two values: binary; labels or a few integers: multiclass; other
numbers: regression) unless the user names it. The checks of :mod:`tarn.core.contract_checks`
shape some types (a timestamp is text, never free text; a constant gets no range; a few integer
codes are categories) and name the columns to keep away from the model (leakage, identifiers,
constants, timestamps): ``Proposal.excluded``, written to ``prepare.exclude_features``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tarn.config import TASKS  # the task literal's names (one place)
from tarn.core import contract_checks as checks
from tarn.core.schema import normalize_name
from tarn.errors import TarnError

MISSING_MARKERS = ("", "?", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "-")
MAX_CATEGORIES = 50  # more distinct values than this (and than 5 % of rows): a free string...
MAX_OPEN_CATEGORIES = 500  # ...unless at most this many, hardly any seen once (a closed set)
RANGE_MARGIN = 0.1  # ranges widened by this share of the observed span
_INT = re.compile(r"^[+-]?\d+$")


class InitError(TarnError):
    """The files cannot be turned into a contract as they are."""


@dataclass
class Proposal:
    schema: dict  # the ``schema:`` section of params.yaml
    task: str
    notes: list[str] = field(default_factory=list)  # what was decided and why
    # one line per finding of the checks: the reason, then the action taken
    warnings: list[str] = field(default_factory=list)
    findings: list[checks.Finding] = field(default_factory=list)
    # contract name -> why it is not a feature (a finding's kind, or --exclude):
    # prepare.exclude_features
    excluded: dict[str, str] = field(default_factory=dict)

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
                 groups: bool = False) -> tuple[dict, str, checks.Finding | None]:
    """(column spec, why, finding) for one feature column of text values; the finding says
    when the column is a timestamp, a constant or integer codes (see
    :mod:`tarn.core.contract_checks`). ``groups``: a sensitive feature, whose few numeric
    codes (sex as 1/2) are groups to compare, not a range."""
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
    stamps = checks.timestamps(present) if numeric_share < 0.5 else None
    if 0.5 <= numeric_share < 1.0:
        bad = present[nums.isna()].unique()[:3].tolist()
        raise InitError(f"column {raw!r} mixes numbers ({numeric_share:.0%}) with text such as "
                        f"{bad}", "clean those values, or list them as missing markers in the "
                                  "file, then run tarn init again")
    distinct = present.nunique()
    numeric = numeric_share == 1.0 and bool(np.isfinite(nums).all())
    integer = numeric and bool(present.str.fullmatch(_INT).all())
    constant = distinct == 1 and len(present) == len(stripped)
    name = spec["name"]
    codes = checks.integer_codes(name, nums.to_numpy()) if integer and not groups else None
    fact = None
    if constant:
        fact = checks.Finding(name, "constant", f"one value, {present.iloc[0]!r}, in every row",
                              True)
    if stamps:
        spec.update(dtype="string")
        why = (f"timestamps {stamps[0]} .. {stamps[1]}: kept as text in the contract, not a "
               "feature")
        fact = checks.Finding(name, "timestamp", f"dates {stamps[0]} .. {stamps[1]} (a raw "
                              "timestamp is new in every batch)", True)
    elif numeric and distinct == 1:
        spec.update(dtype="int" if integer else "float")
        why = f"one value, {present.iloc[0]}: no range proposed"
    elif codes:
        fact = checks.Finding(name, "codes", codes, False)
        spec.update(dtype="category", categories=_class_order(present.unique().tolist()))
        why = f"{codes}: codes, proposed as categories"
    elif numeric and not (groups and distinct <= 12):
        lo, hi = _widen(float(nums.min()), float(nums.max()), integer)
        spec.update(dtype="int" if integer else "float", min=lo, max=hi)
        why = (f"{'integers' if integer else 'numbers'} {nums.min():g}..{nums.max():g}, "
               f"allowed {lo:g}..{hi:g}")
    elif constant:
        spec.update(dtype="string")
        why = f"one value, {present.iloc[0]!r}: no categories proposed"
    elif distinct <= 12 or _closed_set(present, distinct):
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
    return spec, why, fact


def _closed_set(present: pd.Series, distinct: int) -> bool:
    """Text values that are categories: at most one value per 20 rows, and either at most
    :data:`MAX_CATEGORIES` of them, or at most :data:`MAX_OPEN_CATEGORIES` of which hardly any
    is seen once (new data would rarely bring a value the sample lacks: a 105-value airport
    code, not a name)."""
    n = len(present)
    if distinct > 0.05 * n:
        return False
    if distinct <= MAX_CATEGORIES:
        return True
    if distinct > MAX_OPEN_CATEGORIES:
        return False
    once = int((present.value_counts() == 1).sum())
    return once <= 0.001 * n


MAX_CLASSES = 20  # a numeric target with at most this many distinct integers: classes


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
            name: str = "dataset", exclude: list[str] | None = None,
            include: list[str] | None = None, time_col: str | None = None) -> Proposal:
    """The contract for ``frame`` (text values, one column per raw header), named ``name``,
    with the findings of the checks (:mod:`tarn.core.contract_checks`). Flagged columns
    (leakage, identifiers, constants, timestamps) and ``exclude`` go to ``excluded``
    (``prepare.exclude_features``), except those in ``include`` and sensitive features.
    ``time_col``: the time key the batches follow (``--time``), named in the findings."""
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
    columns, facts = [], {}
    for raw in frame.columns:
        if raw == target:
            continue
        spec, why, facts[raw] = infer_column(
            raw, text[raw], found, groups=bool({raw, contract_name(raw)} & set(sensitive or [])))
        columns.append(spec)
        notes.append(f"{spec['name']}: {spec['dtype']} ({why})")
    if not columns:
        raise InitError(f"the files hold no column besides the target {target!r}",
                        "give files with feature columns")
    names = {c["name"]: c for c in columns}
    by_raw = {c.get("aliases", [c["name"]])[0]: c["name"] for c in columns}
    sens = [by_raw.get(s, contract_name(s)) for s in (sensitive or [])]
    keys = [by_raw.get(k, contract_name(k)) for k in (key or [])]
    for s in [*sens, *keys]:
        if s not in names:
            raise InitError(f"column {s!r} is not among the feature columns",
                            f"use one of {sorted(names)}")
    chosen = {flag: _named(flag, cols, by_raw, target, target_spec["name"])
              for flag, cols in (("--exclude", exclude), ("--include", include))}
    both = set(chosen["--exclude"]) & set(chosen["--include"])
    if both:
        raise InitError(f"{sorted(both)} given both to --exclude and --include",
                        "name each column in one of them")
    findings = _findings(text, target, target_spec, task, found,
                         {raw: names[name] for raw, name in by_raw.items()}, facts)
    schema = {"name": name, "task": task, "missing_values": markers or [""],
              "extra_columns": "error", "unknown_categories": "quarantine",
              "target": target_spec, "sensitive": sens, "key": keys, "columns": columns}
    excluded: dict[str, str] = {}
    warnings = []
    time_name = by_raw.get(time_col, time_col) if time_col else None
    if time_name and any(c["name"] == time_name and c["dtype"] == "string" for c in columns):
        schema["time_key"] = time_name  # the ETL checks it parses; never a model feature
    for f in findings:
        if f.exclude and f.column in chosen["--include"]:
            action = "kept as a feature (--include)"
        elif f.exclude and f.column in sens:
            action = "kept: a sensitive feature (--sensitive) is measured, never dropped"
        elif f.exclude:
            excluded.setdefault(f.column, f.kind)
            action = f"excluded from the features (--include {f.column} keeps it)"
            if f.kind == "timestamp":
                action += ("; it is the time key (--time): batches follow it" if f.column ==
                           time_name else f"; --time {f.column} would order the batches and "
                           "the held-out test rows by it")
        elif f.kind == "codes":
            action = "proposed as categories (set dtype int if they count or measure)"
        else:
            action = f"kept (--exclude {f.column} drops it)"
        warnings.append(f"{f.kind}: {f.column}: {f.reason} -> {action}")
    for col in chosen["--exclude"]:
        excluded.setdefault(col, "--exclude")
    if not set(names) - set(excluded):
        raise InitError(f"no feature is left: every column is excluded ({sorted(excluded)})",
                        "keep some with --include COL")
    order = list(names)
    excluded = dict(sorted(excluded.items(), key=lambda kv: order.index(kv[0])))
    return Proposal(schema, task, notes, warnings, findings, excluded)


def _named(flag: str, cols: list[str] | None, by_raw: dict[str, str], target: str,
           target_name: str) -> list[str]:
    """The contract names of the columns given to ``--exclude`` / ``--include`` (raw headers
    or contract names); the target or an unknown column is an error."""
    out = []
    names = set(by_raw.values())
    for c in cols or []:
        if c in (target, target_name):
            raise InitError(f"{flag} {c!r}: that is the target, never a feature",
                            "name feature columns only")
        name = by_raw.get(c, c if c in names else None)
        if name is None:
            raise InitError(f"{flag} {c!r}: no such column", f"use one of {sorted(names)}")
        out.append(name)
    return out


def _findings(text: pd.DataFrame, target: str, target_spec: dict, task: str,
              markers: set[str], specs: dict[str, dict],
              facts: dict[str, checks.Finding | None]) -> list[checks.Finding]:
    """What the checks of :mod:`tarn.core.contract_checks` find, in the order they matter:
    leakage, identifiers, constants, near-constants, timestamps, integer codes. ``specs``:
    raw header -> proposed column; ``facts``: what :func:`infer_column` found per column."""
    labels = text[target]
    labelled = np.flatnonzero(~labels.isin(markers).to_numpy())
    rows = labelled[checks.sample_rows(len(labelled))]
    feats, y_text = text.iloc[rows][list(specs)], labels.iloc[rows]
    if task == "regression":
        y = pd.to_numeric(y_text, errors="coerce").to_numpy(np.float64)
    else:
        y = y_text.map(target_spec["mapping"]).to_numpy(np.float64)
    n_classes = len(set(target_spec.get("mapping", {}).values())) or 2
    numeric = {raw for raw, spec in specs.items() if spec["dtype"] in ("int", "float")}
    measured = checks.single_column_scores(feats, numeric, y, task)
    score = {specs[c]["name"]: s for c, s in measured.items()}
    leaks = checks.leakage(score, task, n_classes)
    metric = checks.METRIC[task]
    found: dict[str, list[checks.Finding]] = {k: [] for k in (
        "leakage", "identifier", "constant", "near-constant", "timestamp", "codes")}
    for raw, spec in specs.items():
        name, fact, col = spec["name"], facts[raw], text[raw]
        if fact is not None:
            found[fact.kind].append(fact)
        if fact is not None and fact.kind == "constant":
            continue
        value, share = checks.dominant(col, markers)
        if share >= checks.NEAR_CONSTANT:
            found["near-constant"].append(checks.Finding(
                name, "near-constant", f"{value!r} in {share:.1%} of the rows", False))
        if spec["dtype"] in ("string", "category", "int") and fact is None:
            present = col[~col.isin(markers)]
            ints = pd.to_numeric(present).to_numpy() if spec["dtype"] == "int" else None
            why = checks.identifier(name, present, ints, integer=ints is not None)
            if why:
                found["identifier"].append(checks.Finding(name, "identifier", why, True))
            elif ints is None and (many := checks.high_cardinality(present)):
                found["identifier"].append(checks.Finding(name, "high-cardinality", many,
                                                          False))
        why = checks.function_of_target(feats[raw], y_text, task, raw in numeric)
        if why and name in score:
            why += f"; alone it scores {metric} {score[name]:.3f}"
        why = why or leaks.get(name)
        if why:
            found["leakage"].append(checks.Finding(name, "leakage", why, True))
    flagged = {f.column for f in found["leakage"]}
    pairs = {(specs[a]["name"], specs[b]["name"]): s
             for (a, b), s in checks.pair_scores(feats, numeric, y, task).items()}
    for col, why in checks.pair_leakage(pairs, score, task).items():
        if col not in flagged:
            found["leakage"].append(checks.Finding(col, "leakage", why, True))
    return [f for group in found.values() for f in group]
