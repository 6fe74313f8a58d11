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
import pyarrow.compute as pc

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
DUPLICATE = "duplicate"
NOT_A_TIME = "not_a_time"


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


@dataclass
class ConformedArrow:
    rows: pa.Table  # typed as :func:`arrow_schema` (contract columns + target)
    kept: np.ndarray  # positions in the raw chunk of ``rows``
    rejected: np.ndarray  # positions in the raw chunk of the rejected records
    reasons: list[str]  # per rejected record, in order
    details: list[str]


def arrow_schema(schema: SchemaConfig, extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """The curated table's Arrow schema, fixed by the contract (stable across chunks)."""
    kinds = {"int": pa.int64(), "float": pa.float64(), "category": pa.string(),
             "string": pa.string()}
    fields = [pa.field(c.name, kinds[c.dtype], nullable=True) for c in schema.columns]
    # class index for classification, the measured value for regression
    fields.append(pa.field(schema.target.name, pa.float64() if schema.numeric_target
                           else pa.int8(), nullable=False))
    for k, v in (extra or {}).items():
        fields.append(pa.field(k, v))
    return pa.schema(fields)


# What pandas.to_numeric reads as a number (checked against it in tests/unit/test_schema.py).
_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_INFINITY = r"^[+-]?(?i:inf|infinity)$"
_INTEGER = r"^[+-]?[0-9]{1,18}$"  # exact in int64


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False).astype(bool, copy=False)


def _texts(values: pa.Array, idx: np.ndarray) -> list[str]:
    return [str(v) for v in values.take(pa.array(idx)).to_pylist()]


def _with_nulls(s: pa.Array, absent: np.ndarray) -> pa.Array:
    """``s`` with nulls where ``absent`` (its buffers reused: no copy of the values)."""
    if not absent.any():
        return s
    if s.offset:
        return pc.if_else(pa.array(absent), pa.scalar(None, s.type), s)
    bitmap = pa.py_buffer(np.packbits(~absent, bitorder="little"))
    _, offsets, data = s.buffers()
    return pa.Array.from_buffers(s.type, len(s), [bitmap, offsets, data], offset=s.offset)


def _all_int64(s: pa.Array) -> pa.Array | None:
    """``s`` as int64 if every present value is a plain integer (Arrow's strict parse)."""
    try:
        ints = pc.cast(s, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # Arrow also reads hexadecimal ("0x10"), pandas does not
    data = s.buffers()[2]
    if data is not None:
        raw = np.frombuffer(data, dtype=np.uint8)
        if ((raw == ord("x")) | (raw == ord("X"))).any():
            return None
    return ints


def _numbers(s: pa.Array) -> np.ndarray:
    """Values as pandas.to_numeric reads them; NaN where it reads no number."""
    number = _np(pc.match_substring_regex(s, _NUMBER))
    infinite = _np(pc.match_substring_regex(s, _INFINITY))
    parsed = pc.cast(pc.if_else(pa.array(number | infinite), s, pa.scalar(None, pa.string())),
                     pa.float64())
    num = parsed.to_numpy(zero_copy_only=False)
    return np.where(number & np.isinf(num), np.nan, num)  # "1e400" is not a number to pandas


def _exact_ints(s: pa.Array, num: np.ndarray, ok: np.ndarray) -> pa.Array:
    """Integers of the kept values: exact for up to 18 digits, rounded floats otherwise."""
    n = len(num)
    exact = _np(pc.match_substring_regex(s, _INTEGER)) & ok
    ints = np.zeros(n, dtype=np.int64)
    fin = ok & ~exact & np.isfinite(num) & (np.abs(num) < 2.0 ** 63)
    ints[fin] = np.round(num[fin]).astype(np.int64)
    if exact.any():
        digits = pc.replace_substring_regex(
            pc.if_else(pa.array(exact), s, pa.scalar("0")), r"^\+", "")
        ints = np.where(exact, pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False), ints)
    return pa.array(ints, mask=~(fin | exact), type=pa.int64())


class _Checks:
    """The first failed check of each row wins; details are built for failed rows only."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int32)
        self.checks: list[tuple[str, object]] = [("", None)]

    def flag(self, mask: np.ndarray, reason: str, detail) -> None:
        new = mask & (self.code == 0)
        if new.any():
            self.checks.append((reason, detail))
            self.code[new] = len(self.checks) - 1

    def outcome(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        kept = np.flatnonzero(self.code == 0)
        rejected = np.flatnonzero(self.code)
        codes = self.code[rejected]
        reasons: list[str] = [""] * len(rejected)
        details: list[str] = [""] * len(rejected)
        for k in np.unique(codes).tolist():
            where = np.flatnonzero(codes == k)
            reason, detail = self.checks[k]
            texts = detail(rejected[where]) if callable(detail) else [detail] * len(where)
            for j, t in zip(where.tolist(), texts, strict=True):
                reasons[j] = reason
                details[j] = t
        return kept, rejected, reasons, details


_DATE = re.compile(r"\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}")  # 2016-03-01, 01/03/2016, 1.3.16


def parses_as_time(s: pa.Array) -> np.ndarray:
    """Which values read as a date or date-time: ISO 8601, or a day, month and year in
    another order (a lenient parser alone would read ``12`` or ``May`` as a date); a null
    is not one."""
    values = pd.Series(s.to_pandas(), dtype=object)
    iso = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True).notna()
    dated = values.astype(str).str.contains(_DATE) & pd.to_datetime(
        values, errors="coerce", format="mixed", utc=True).notna()
    return (iso | dated).to_numpy() & values.notna().to_numpy()


def conform_arrow(raw: pa.Table, schema: SchemaConfig, mapping: dict[str, str]) -> ConformedArrow:
    """Apply the contract to a chunk of raw string values, column by column in Arrow (pure).

    ``raw`` holds strings (null = absent) under the file's names; ``mapping`` maps them to
    contract names (:func:`resolve_columns`). Contract columns the chunk lacks (JSON Lines
    keys) are absent values."""
    n = raw.num_rows
    by_name = {mapping[c]: raw.column(c) for c in raw.column_names if c in mapping}
    checks = _Checks(n)

    def clean(name: str) -> tuple[pa.Array, np.ndarray]:
        col = by_name.get(name)
        if col is None:
            return pa.nulls(n, pa.string()), np.ones(n, dtype=bool)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        s = pc.utf8_trim_whitespace(col.cast(pa.string()))
        absent = _np(pc.is_null(s)) if s.null_count else np.zeros(n, dtype=bool)
        for marker in schema.missing_values:  # a few markers: one comparison each
            absent |= _np(pc.equal(s, marker))
        return _with_nulls(s, absent), absent

    columns: list[pa.Array] = []
    for spec in schema.columns:
        s, absent = clean(spec.name)
        name = spec.name
        if not spec.nullable:  # required: true implies it (the server refuses such rows too)
            checks.flag(absent, MISSING, f"{name}: missing value" + (
                " (required: the model cannot answer without it)" if spec.required else ""))
        if spec.numeric:
            ints = _all_int64(s) if spec.dtype == "int" else None
            if ints is not None:  # every value a plain integer (the common case): exact
                valid = ~absent
                num = ints.to_numpy(zero_copy_only=False).astype(np.float64)
            else:
                num = _numbers(s)
                checks.flag(~absent & np.isnan(num), NOT_NUMBER,
                            lambda i, s=s, name=name: [f"{name}: {t!r} is not a number"
                                                       for t in _texts(s, i)])
                valid = ~np.isnan(num)
            with np.errstate(invalid="ignore"):
                if spec.dtype == "int" and ints is None:
                    frac = valid & (np.floor(num) != num)
                    checks.flag(frac, NOT_INTEGER,
                                lambda i, s=s, name=name: [f"{name}: {t} is not an integer"
                                                           for t in _texts(s, i)])
                lo = spec.min if spec.min is not None else -np.inf
                hi = spec.max if spec.max is not None else np.inf
                oor = valid & ((num < lo) | (num > hi))
            checks.flag(oor, OUT_OF_RANGE,
                        lambda i, s=s, name=name, spec=spec: [
                            f"{name}: {t} outside [{spec.min}, {spec.max}]" for t in _texts(s, i)])
            ok = valid & ~oor
            if ints is not None:
                columns.append(ints)
            elif spec.dtype == "int":
                columns.append(_exact_ints(s, num, ok))
            else:
                columns.append(pa.array(num, mask=~ok, type=pa.float64()))
        else:
            if spec.categories is not None and schema.unknown_categories == "quarantine":
                known = pa.array(list(spec.categories), type=pa.string())
                unknown = ~absent & ~_np(pc.is_in(s, value_set=known))
                checks.flag(unknown, UNKNOWN_CATEGORY,
                            lambda i, s=s, name=name: [f"{name}: unknown category {t!r}"
                                                       for t in _texts(s, i)])
            if name == schema.time_key:
                checks.flag(~absent & ~parses_as_time(s), NOT_A_TIME,
                            lambda i, s=s, name=name: [
                                f"{name}: {t!r} is not a date or date-time (the time key)"
                                for t in _texts(s, i)])
            columns.append(s)
    target = schema.target
    t, t_absent = clean(target.name)
    checks.flag(t_absent, MISSING, f"{target.name}: missing label")
    if schema.numeric_target:  # a number, optionally within [min, max]
        num = _numbers(t)
        checks.flag(~t_absent & ~np.isfinite(num), NOT_NUMBER,
                    lambda i: [f"{target.name}: {v!r} is not a number" for v in _texts(t, i)])
        lo = target.min if target.min is not None else -np.inf
        hi = target.max if target.max is not None else np.inf
        with np.errstate(invalid="ignore"):
            oor = np.isfinite(num) & ((num < lo) | (num > hi))
        checks.flag(oor, OUT_OF_RANGE,
                    lambda i: [f"{target.name}: {v} outside [{target.min}, {target.max}]"
                               for v in _texts(t, i)])
        columns.append(pa.array(np.where(np.isfinite(num), num, 0.0), type=pa.float64()))
    else:
        keys = pa.array(list(target.mapping), type=pa.string())
        codes = pa.array(list(target.mapping.values()), type=pa.int8())
        pos = pc.index_in(t, value_set=keys)
        checks.flag(~t_absent & _np(pc.is_null(pos)), UNKNOWN_LABEL,
                    lambda i: [f"{target.name}: unknown label {v!r}" for v in _texts(t, i)])
        columns.append(pc.take(codes, pos))
    kept, rejected, reasons, details = checks.outcome()
    table = pa.Table.from_arrays(columns, schema=arrow_schema(schema)) if len(columns) else None
    rows = table.take(pa.array(kept)) if len(rejected) else table
    return ConformedArrow(rows, kept, rejected, reasons, details)


def to_pandas(rows: pa.Table) -> pd.DataFrame:
    """Curated rows as pandas: ``Int64`` integers, ``float64``, ``str``/``None`` text, an
    ``int8`` target."""
    return rows.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def conform(raw: pd.DataFrame, schema: SchemaConfig, mapping: dict[str, str]) -> Conformed:
    """Apply the contract to a chunk of raw string values (pure): :func:`conform_arrow` on a
    pandas frame, results index-aligned with it."""
    table = pa.table({c: pa.array(raw[c].astype(object).where(raw[c].notna(), None).tolist(),
                                  type=pa.string()) for c in raw.columns})
    res = conform_arrow(table, schema, mapping)
    rows = to_pandas(res.rows)
    rows.index = raw.index[res.kept]
    rejects = pd.DataFrame({"reason": pd.Series(res.reasons, dtype=object),
                            "detail": pd.Series(res.details, dtype=object)})
    rejects.index = raw.index[res.rejected]
    return Conformed(rows, rejects)


def _json_strings(col: pa.Array) -> pa.Array:
    """Each value as a JSON literal, as ``json.dumps(..., ensure_ascii=False)`` writes it."""
    s = col.cast(pa.string())
    s = pc.replace_substring(s, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    if pc.any(pc.match_substring_regex(s, "[\\x00-\\x1f]")).as_py():
        for code in range(0x20):
            ch = chr(code)
            esc = json.dumps(ch)[1:-1]
            s = pc.replace_substring(s, ch, esc)
    quoted = pc.binary_join_element_wise('"', s, '"', "")
    return pc.fill_null(quoted, "null")


def raw_json(raw: pa.Table | pd.DataFrame) -> pa.Array:
    """Each raw record as a JSON object string: what the quarantine keeps, verbatim (the same
    text as ``json.dumps(dict(record), ensure_ascii=False)``, built column-wise)."""
    if isinstance(raw, pd.DataFrame):
        raw = pa.table({c: pa.array(raw[c].astype(object).where(raw[c].notna(), None).tolist(),
                                    type=pa.string()) for c in raw.columns})
    if raw.num_columns == 0:
        return pa.array(["{}"] * raw.num_rows, type=pa.string())
    parts: list = []
    for i, c in enumerate(raw.column_names):
        key = json.dumps(str(c), ensure_ascii=False)
        parts.append(("{" if i == 0 else ", ") + key + ": ")
        col = raw.column(c)
        parts.append(_json_strings(col.combine_chunks() if isinstance(col, pa.ChunkedArray)
                                   else col))
    parts.append("}")
    return pc.binary_join_element_wise(*parts, "")
