"""The dataset contract applied to raw records: pure functions, no I/O.

:func:`resolve_columns` maps a file's header onto contract columns (names and aliases) and
fails for a missing or (by policy) extra column. :func:`conform` trims, marks missing values,
coerces types, checks categories and ranges and maps the target, returning the typed rows that
pass and, for every row that does not, a reason code and a readable detail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from tarn.config import SchemaConfig
from tarn.errors import EtlError

# Reason codes (stable: reports and tests count by them).
MALFORMED = "malformed_line"
MISSING = "missing_value"
NOT_NUMBER = "not_a_number"
NOT_INTEGER = "not_an_integer"
OUT_OF_RANGE = "out_of_range"
UNKNOWN_CATEGORY = "unknown_category"
UNKNOWN_LABEL = "unknown_label"
MISSING_COLUMN = "missing_column"
DUPLICATE = "duplicate"


def normalize_name(name: str) -> str:
    """The form a header name is matched in: ``Hours-per-week`` = ``hours_per_week``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def resolve_columns(header: list[str], schema: SchemaConfig, source: str,
                    strict_missing: bool = True) -> dict[str, str]:
    """Map raw header names to contract names. Raises EtlError naming the file and column."""
    wanted: dict[str, str] = {}
    specs = [(c.name, c.aliases) for c in schema.columns]
    specs.append((schema.target.name, schema.target.aliases))
    for name, aliases in specs:
        for alias in (name, *aliases):
            wanted[normalize_name(alias)] = name
    mapping: dict[str, str] = {}
    extra: list[str] = []
    for raw in header:
        target = wanted.get(normalize_name(raw))
        if target is None:
            extra.append(raw)
        elif target in mapping.values():
            raise EtlError(f"{source}: columns map twice to {target!r}",
                           "remove the duplicate column or fix the aliases in params.yaml")
        else:
            mapping[raw] = target
    missing = [n for n, _ in specs if n not in mapping.values()]
    if missing and strict_missing:
        raise EtlError(f"{source}: missing column(s) {missing}",
                       "fix the file's header, or add the header name as an alias under "
                       "schema.columns in params.yaml")
    if extra and schema.extra_columns == "error":
        raise EtlError(f"{source}: unexpected column(s) {extra}",
                       "remove them, add them to schema.columns, or set "
                       "schema.extra_columns: ignore in params.yaml")
    return mapping


@dataclass
class Conformed:
    rows: pd.DataFrame  # typed, contract columns + target
    rejects: pd.DataFrame  # index-aligned with the raw chunk: reason, detail


def arrow_schema(schema: SchemaConfig, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The curated table's Arrow schema, fixed by the contract (stable across chunks)."""
    kinds = {"int": pa.int64(), "float": pa.float64(), "category": pa.string(),
             "string": pa.string()}
    fields = [pa.field(c.name, kinds[c.dtype], nullable=True) for c in schema.columns]
    fields.append(pa.field(schema.target.name, pa.int8(), nullable=False))
    for k, v in (extra or {}).items():
        fields.append(pa.field(k, v))
    return pa.schema(fields)


def conform(raw: pd.DataFrame, schema: SchemaConfig, mapping: dict[str, str]) -> Conformed:
    """Apply the contract to a chunk of raw string values (pure)."""
    df = raw.rename(columns=mapping)
    n = len(df)
    reasons = pd.Series([None] * n, index=df.index, dtype=object)
    details = pd.Series([None] * n, index=df.index, dtype=object)
    missing_markers = set(schema.missing_values)

    def flag(mask: pd.Series, code: str, msg: pd.Series | str) -> None:
        new = mask & reasons.isna()
        if not new.any():
            return
        reasons[new] = code
        details[new] = msg[new] if isinstance(msg, pd.Series) else msg

    def clean(col: str) -> pd.Series:
        if col not in df:
            return pd.Series([None] * n, index=df.index, dtype=object)
        s = df[col].astype(object).where(df[col].notna(), None)
        s = s.map(lambda v: v.strip() if isinstance(v, str) else v)
        return s.where(~s.isin(missing_markers), None)

    out: dict[str, pd.Series] = {}
    for spec in schema.columns:
        s = clean(spec.name)
        absent = s.isna()
        if not spec.nullable:
            flag(absent, MISSING, f"{spec.name}: missing value")
        if spec.numeric:
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & ~absent
            flag(bad, NOT_NUMBER, spec.name + ": " + s.astype(str).map(repr) + " is not a number")
            if spec.dtype == "int":
                frac = num.notna() & (np.floor(num) != num)
                flag(frac, NOT_INTEGER, spec.name + ": " + s.astype(str) + " is not an integer")
            lo = spec.min if spec.min is not None else -np.inf
            hi = spec.max if spec.max is not None else np.inf
            oor = num.notna() & ((num < lo) | (num > hi))
            flag(oor, OUT_OF_RANGE,
                 spec.name + ": " + s.astype(str) + f" outside [{spec.min}, {spec.max}]")
            ok = num.where(~(bad | oor))
            out[spec.name] = ok.round().astype("Int64") if spec.dtype == "int" else ok.astype(float)
        else:
            if spec.categories is not None and schema.unknown_categories == "quarantine":
                unknown = s.notna() & ~s.isin(spec.categories)
                flag(unknown, UNKNOWN_CATEGORY,
                     spec.name + ": unknown category " + s.astype(str).map(repr))
            out[spec.name] = s
    t = clean(schema.target.name)
    label = t.map(schema.target.mapping)
    flag(t.isna(), MISSING, f"{schema.target.name}: missing label")
    flag(label.isna() & t.notna(), UNKNOWN_LABEL,
         schema.target.name + ": unknown label " + t.astype(str).map(repr))
    out[schema.target.name] = label

    rows = pd.DataFrame(out, index=df.index)
    good = reasons.isna()
    rows = rows[good].copy()
    rows[schema.target.name] = rows[schema.target.name].astype("int8")
    rejects = pd.DataFrame({"reason": reasons[~good], "detail": details[~good]})
    return Conformed(rows, rejects)


def raw_json(raw: pd.DataFrame) -> pd.Series:
    """Each raw record as a JSON object string: what the quarantine keeps, verbatim."""
    cols = list(raw.columns)
    return pd.Series(
        [json.dumps(dict(zip(cols, vals, strict=True)), ensure_ascii=False)
         for vals in raw.itertuples(index=False, name=None)],
        index=raw.index, dtype=object,
    )
