"""Request payloads -> validated columns. Pure functions, no web framework.

Accepts the four payloads of ``mlflow models serve`` (``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs``) and plain record lists for ``/predict``.
Column names and values follow the one rule of :mod:`tarn.core.columns` (the served version's
contract): a name or alias of a model input (compared as the ETL compares a header) is that
input; a column the model does not use (excluded features, the target, the lake's ``batch``) is
accepted and ignored, so a row as it appears in the lake is scored; other names are refused
(``schema.extra_columns: error``) or ignored; a whole number in a category column of integer
codes is that code's category. A wrong type, a required input missing, an unknown column, a
non-finite number, an integer beyond 64 bits, an empty list or too many rows raise
:class:`InputError` naming the field and row (client values echoed at most
:data:`~tarn.core.columns.ECHO_CHARS` characters, names at most ten and a count), which the app
turns into a 4xx. :func:`contract_violations` then applies the contract's category and
range rules (what the ETL would quarantine); the app refuses or flags those rows
(``serve.unknown_values``). :func:`parse_json` is the one way a body becomes Python values:
bounded nesting, integers and strings, and no parser that can recurse without limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tarn.core.columns import ColumnRules, InputColumn, clip, code_text, required_message
from tarn.serve.jsonslices import parse_sliced

MAX_DEPTH = 32  # a scoring payload is 3 levels deep; orjson itself stops at 1024
MAX_INT_DIGITS = 4300  # Python's own str->int limit; larger ones are malformed JSON
LONG_LIMIT = 2.0 ** 63  # "long" columns hold 64-bit integers


class InputError(ValueError):
    """A request that cannot be scored; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> Any:
    """The body as JSON values; InputError (400) for anything else.

    orjson parses almost every request (it bounds nesting and rejects invalid UTF-8 and lone
    surrogates). Only a body orjson refuses goes to the standard library, for the one thing it
    adds: NaN / Infinity literals, so the field holding them can be named (422) instead of a
    bare "malformed JSON". That path bounds nesting before parsing (the standard parser
    recurses), integer length, and rejects lone surrogates after."""
    if not body:
        raise InputError("empty body: send JSON", 400)
    try:
        return parse_sliced(body)  # a large body in slices: the event loop keeps answering
    except orjson.JSONDecodeError as e:
        first = e
    depth = nesting_depth(body)
    if depth > MAX_DEPTH:
        raise InputError(f"JSON nested {depth} levels deep; at most {MAX_DEPTH} are accepted", 400)
    try:
        value = json.loads(body, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        raise InputError(f"malformed JSON: {first}", 400) from None
    _check_strings(value)
    return value


def nesting_depth(body: bytes) -> int:
    """The deepest bracket nesting of a JSON text, brackets inside strings excluded.

    Linear and without recursion (numpy over the bytes): a quote counts unless an odd run of
    backslashes precedes it; brackets count outside strings only."""
    b = np.frombuffer(body, dtype=np.uint8)
    n = len(b)
    if not n:
        return 0
    idx = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    backslash = b == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, idx))  # last non-backslash
    run_before = np.empty(n, dtype=idx.dtype)  # backslashes right before each position
    run_before[0] = 0
    run_before[1:] = idx[:-1] - last_other[:-1]
    quote = (b == ord('"')) & (run_before & 1 == 0)
    outside = np.cumsum(quote, dtype=idx.dtype) & 1 == 0  # a closing quote itself counts as outside
    opens = (b == ord("[")) | (b == ord("{"))
    closes = (b == ord("]")) | (b == ord("}"))
    step = (opens.astype(np.int8) - closes.astype(np.int8)) * outside
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits")
    return int(text)


def _check_strings(value: Any) -> None:
    """Every string (keys too) must be encodable as UTF-8: no lone surrogates."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _utf8(v)
        elif isinstance(v, dict):
            for k in v:
                _utf8(k)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def _utf8(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"string {s[:40]!r} is not valid Unicode (lone surrogate)", 400) \
            from None


Column = InputColumn  # one model input (tarn.core.columns)


class Columns(list):
    """The input columns of a version (a list of :class:`Column`) with the rest of its rules:
    the names accepted and ignored and the policy for others (:class:`ColumnRules`)."""

    rules: ColumnRules


def columns_from_signature(signature_inputs: list[dict], schema=None) -> Columns:
    """Columns from an MLflow signature's ``inputs`` (list of {name, type, required}); with
    the contract (:class:`tarn.config.SchemaConfig`), each carries its aliases, categories
    (when the contract quarantines unknown ones), integer codes and range, and the list the
    names the version accepts and ignores (:meth:`ColumnRules.from_signature`)."""
    rules = ColumnRules.from_signature(signature_inputs, schema)
    out = Columns(rules.columns)
    out.rules = rules
    return out


class InputSchema(ColumnRules):
    """The model's input columns and how request names map onto them, built once per model
    (:class:`~tarn.core.columns.ColumnRules`; from a plain list of columns: those names only,
    any other refused)."""

    def __init__(self, columns: list[Column]) -> None:
        rules = getattr(columns, "rules", None)
        if rules is None:
            super().__init__(columns)
        else:
            super().__init__(columns, rules.ignored_names, rules.extra_columns)
        self.checked = [c for c in self.columns if c.categories is not None
                        or c.min is not None or c.max is not None]

    def rename(self, keys) -> dict[str, str]:
        """{request name: column name} for names that are not the column's own; InputError
        for a name the rules refuse (the first ten listed, with a count)."""
        out, unknown = self.sort(keys)
        if unknown:
            raise InputError(self.unknown_message(unknown))
        return out


def as_schema(columns: list[Column] | InputSchema) -> InputSchema:
    return columns if isinstance(columns, InputSchema) else InputSchema(columns)


@dataclass(frozen=True)
class Split:
    """Rows as lists with the column names given once (``dataframe_split``): kept columnar."""

    columns: list[str]
    data: list


@dataclass(frozen=True)
class Columnar:
    """One list of values per column (``inputs`` as an object): never expanded into rows."""

    values: dict[str, list]
    rows: int


def records_from_payload(payload: Any, columns: list[Column] | InputSchema,
                         max_rows: int | None = None) -> list | Split | Columnar:
    """Normalize any accepted payload to a list of records (dicts) or rows (lists), a
    :class:`Split` or a :class:`Columnar`. With ``max_rows``, a larger row count is refused
    (413) here, before anything is built per row."""
    if isinstance(payload, list):
        _limit(len(payload), max_rows)
        return payload
    if not isinstance(payload, dict):
        raise InputError("body must be a JSON object or a list of records")
    keys = set(payload) & {"dataframe_split", "dataframe_records", "instances", "inputs"}
    if len(keys) != 1:
        raise InputError("body must have exactly one of dataframe_split, dataframe_records, "
                         "instances, inputs")
    key = keys.pop()
    body = payload[key]
    if key == "dataframe_split":
        if not isinstance(body, dict) or "data" not in body:
            raise InputError("dataframe_split needs 'columns' and 'data'")
        cols = body.get("columns") or [c.name for c in as_schema(columns).columns]
        data = body["data"]
        if not isinstance(cols, list) or not isinstance(data, list):
            raise InputError("dataframe_split.columns and .data must be lists")
        _limit(len(data), max_rows)
        return Split([str(c) for c in cols], data)
    if key == "inputs" and isinstance(body, dict):  # columnar: {"col": [values...]}
        lengths = {len(v) if isinstance(v, list) else -1 for v in body.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise InputError("inputs as an object needs equal-length lists per column")
        n = lengths.pop()
        _limit(n, max_rows)
        return Columnar({str(k): v for k, v in body.items()}, n)
    if not isinstance(body, list):
        raise InputError(f"{key} must be a list of records")
    _limit(len(body), max_rows)
    return body


def _limit(n: int, max_rows: int | None) -> None:
    if max_rows is not None and n > max_rows:
        raise InputError(f"{n} rows exceed the limit of {max_rows} per request", 413)


_NUMBER = {int, float}


def to_columns(records: list | Split | Columnar, columns: list[Column] | InputSchema,
               max_rows: int) -> dict[str, np.ndarray]:
    """Validate records and build one array per column: float64 (NaN = missing) or object
    (None = missing). Column-wise, so a 10,000-row request costs milliseconds. Raises
    InputError naming the first bad field. Names may be the contract's aliases."""
    schema = as_schema(columns)
    if isinstance(records, Split):
        return _from_split(records, schema, max_rows)
    if isinstance(records, Columnar):
        return _from_columnar(records, schema, max_rows)
    if not isinstance(records, list) or not records:
        raise InputError("no rows to score: send at least one record")
    _limit(len(records), max_rows)
    names = schema.names
    if len(records) == 1 and type(records[0]) is dict:  # the common single-row request
        rec = records[0]
        if not rec.keys() <= schema.name_set:
            rec = _renamed(rec, schema.rename(rec.keys()), 0)
        return {c.name: _column(c, [rec.get(c.name)]) for c in schema.columns}
    kinds = set(map(type, records))
    if kinds == {dict}:
        keys = set().union(*map(dict.keys, records))
        rename = schema.rename(keys)
        if rename:
            records = [_renamed(r, rename, i) for i, r in enumerate(records)]
        raw = {n: [r.get(n) for r in records] for n in names}
    elif kinds == {list}:
        bad = next((i for i, r in enumerate(records) if len(r) != len(names)), None)
        if bad is not None:
            raise InputError(f"row {bad}: expected {len(names)} values in the order {names}, "
                             f"got {len(records[bad])}")
        raw = dict(zip(names, map(list, zip(*records, strict=True)), strict=True))
    else:
        raise InputError("each row must be an object of column values (or a list in column "
                         "order)")
    return {c.name: _column(c, raw[c.name]) for c in schema.columns}


def _renamed(record: dict, rename: dict[str, str], row: int) -> dict:
    """``record`` under the columns' own names; InputError if two names mean one column."""
    out: dict = {}
    for k, v in record.items():
        name = rename.get(k, k)
        if name in out:
            names = sorted(str(k2) for k2 in record if rename.get(k2, k2) == name)
            raise InputError(f"row {row}: two names for column {name!r} ({names[0]!r} and "
                             f"{names[1]!r})" if len(names) == 2 else
                             f"row {row}: {len(names)} names for column {name!r}")
        out[name] = v
    return out


def _canonical(names: list[str], schema: InputSchema, what: str) -> list[str]:
    rename = schema.rename(names)
    out = [rename.get(n, n) for n in names]
    inputs = [n for n in out if n in schema.name_set]  # ignored names are never read
    if len(set(inputs)) != len(inputs):
        dupes = sorted({n for n in inputs if inputs.count(n) > 1})
        raise InputError(f"{what} has duplicates (names or aliases of {dupes})")
    return out


def _from_columnar(cols: Columnar, schema: InputSchema,
                   max_rows: int) -> dict[str, np.ndarray]:
    if not cols.rows:
        raise InputError("no rows to score: send at least one record")
    _limit(cols.rows, max_rows)
    names = _canonical(list(cols.values), schema, "inputs")
    values = dict(zip(names, cols.values.values(), strict=True))
    nones = [None] * cols.rows
    return {c.name: _column(c, values.get(c.name, nones)) for c in schema.columns}


def _from_split(split: Split, schema: InputSchema, max_rows: int) -> dict[str, np.ndarray]:
    data = split.data
    if not data:
        raise InputError("no rows to score: send at least one record")
    _limit(len(data), max_rows)
    names = _canonical(split.columns, schema, "dataframe_split.columns")
    if set(map(type, data)) != {list} or any(len(r) != len(names) for r in data):
        i = next(i for i, r in enumerate(data) if not isinstance(r, list) or len(r) != len(names))
        raise InputError(f"dataframe_split.data[{i}]: expected a list of {len(names)} values")
    by_name = dict(zip(names, map(list, zip(*data, strict=True)), strict=True))
    nones = [None] * len(data)
    return {c.name: _column(c, by_name.get(c.name, nones)) for c in schema.columns}


def _first(values: list, bad) -> int:
    return next(i for i, v in enumerate(values) if bad(v))


def _one(c: Column, v) -> np.ndarray:
    """:func:`_column` for one row (the common request): scalar checks, one small array, the
    same errors word for word."""
    t = type(v)
    if v is None:
        if c.required:
            raise InputError(required_message(0, c.name))
        if c.kind == "string":
            out = np.empty(1, dtype=object)
            return out  # holds None
        return np.array([np.nan])
    if c.kind == "string":
        if t is not str:
            v = code_text(v) if c.codes is not None else None
            if v is None:
                raise InputError(f"row 0: column {c.name!r} must be a string"
                                 f"{_codes_hint(c)}, got {t.__name__}")
        if not _encodes(v):
            raise InputError(f"row 0: column {c.name!r} is not valid Unicode (lone "
                             "surrogate)")
        out = np.empty(1, dtype=object)
        out[0] = v
        return out
    if t is not int and t is not float:
        raise InputError(f"row 0: column {c.name!r} must be a number, got {t.__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise InputError(f"row 0: column {c.name!r} is out of range (an integer of "
                         f"{len(str(abs(v)))} digits)") from None
    if not math.isfinite(f):
        raise InputError(f"row 0: column {c.name!r} must be finite, got {v}")
    if c.kind == "long":
        if abs(f) >= LONG_LIMIT:
            raise InputError(f"row 0: column {c.name!r} is beyond the 64-bit integer range, "
                             f"got {f:.4g}")
        if not f.is_integer():
            raise InputError(f"row 0: column {c.name!r} must be an integer, got {v}")
    return np.array([f])


def _column(c: Column, values: list) -> np.ndarray:
    if len(values) == 1:
        return _one(c, values[0])
    types = set(map(type, values))
    has_none = type(None) in types
    if has_none and c.required:
        i = _first(values, lambda v: v is None)
        raise InputError(required_message(i, c.name))
    types.discard(type(None))
    if c.kind == "string":
        if types - {str} and c.codes is not None:  # whole numbers name integer codes
            values = [v if v is None or type(v) is str else code_text(v) or v for v in values]
            types = set(map(type, values)) - {type(None)}
        if types - {str}:
            i = _first(values, lambda v: v is not None and not isinstance(v, str))
            raise InputError(f"row {i}: column {c.name!r} must be a string{_codes_hint(c)}, "
                             f"got {type(values[i]).__name__}")
        try:  # one C call: a lone surrogate cannot be logged or fed to the graph
            "".join([v for v in values if v is not None] if has_none else values).encode()
        except UnicodeEncodeError:
            i = _first(values, lambda v: v is not None and not _encodes(v))
            raise InputError(f"row {i}: column {c.name!r} is not valid Unicode (lone "
                             "surrogate)") from None
        return np.array(values, dtype=object)
    if types - _NUMBER:
        i = _first(values, lambda v: v is not None and type(v) not in _NUMBER)
        raise InputError(f"row {i}: column {c.name!r} must be a number, got "
                         f"{type(values[i]).__name__}")
    try:
        arr = np.array([np.nan if v is None else v for v in values] if has_none else values,
                       dtype=np.float64)
    except OverflowError:  # a Python int beyond any float (only from the NaN-literal parser)
        i = _first(values, lambda v: isinstance(v, int) and abs(v) >= LONG_LIMIT)
        raise InputError(f"row {i}: column {c.name!r} is out of range (an integer of "
                         f"{len(str(abs(values[i])))} digits)") from None
    present = np.fromiter((v is not None for v in values), dtype=bool, count=len(values)) \
        if has_none else np.ones(len(arr), dtype=bool)
    bad = present & ~np.isfinite(arr)  # inf, or NaN sent as a number (null means missing)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"row {i}: column {c.name!r} must be finite, got {values[i]}")
    if c.kind == "long":
        huge = present & (np.abs(arr) >= LONG_LIMIT)
        if huge.any():
            i = int(np.argmax(huge))
            raise InputError(f"row {i}: column {c.name!r} is beyond the 64-bit integer range, "
                             f"got {float(values[i]):.4g}")
        frac = present & (np.floor(arr) != arr)
        if frac.any():
            i = int(np.argmax(frac))
            raise InputError(f"row {i}: column {c.name!r} must be an integer, got {values[i]}")
    return arr


def _codes_hint(c: Column) -> str:
    return " (or a whole number naming one of its integer codes)" if c.codes else ""


def _encodes(s: str) -> bool:
    try:
        s.encode()
        return True
    except UnicodeEncodeError:
        return False


# --------------------------------------------------------------------------- the contract
@dataclass(frozen=True)
class Violation:
    """A value the ETL would quarantine: an unknown category or a number out of range."""

    row: int
    column: str
    reason: str  # tarn.core.schema.UNKNOWN_CATEGORY | OUT_OF_RANGE
    detail: str  # "workclass: unknown category 'Spaceship'" (the ETL's wording)

    def as_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "reason": self.reason,
                "detail": self.detail}


def contract_violations(values: dict[str, np.ndarray],
                        columns: list[Column] | InputSchema) -> list[Violation]:
    """Every value outside the contract's categories or range, in row order per column
    (missing values are the required/nullable check's business, not this one's)."""
    from tarn.core.schema import OUT_OF_RANGE, UNKNOWN_CATEGORY

    out: list[Violation] = []
    checked = as_schema(columns).checked
    if len(next(iter(values.values()), ())) == 1:  # one row: scalar checks only
        for c in checked:
            v = values[c.name][0]
            if c.categories is not None:
                if v is not None and v not in c.categories:
                    out.append(Violation(0, c.name, UNKNOWN_CATEGORY,
                                         f"{c.name}: unknown category {clip(v)}"))
            elif (c.min is not None and v < c.min) or (c.max is not None and v > c.max):
                out.append(Violation(0, c.name, OUT_OF_RANGE, f"{c.name}: {_num(v)} outside "
                                     f"[{_num(c.min)}, {_num(c.max)}]"))
        return out
    for c in checked:
        arr = values[c.name]
        if c.categories is not None:
            cats = c.categories
            bad = [i for i, v in enumerate(arr.tolist()) if v is not None and v not in cats]
            out.extend(Violation(i, c.name, UNKNOWN_CATEGORY,
                                 f"{c.name}: unknown category {clip(arr[i])}") for i in bad)
        else:
            lo = -np.inf if c.min is None else c.min
            hi = np.inf if c.max is None else c.max
            with np.errstate(invalid="ignore"):
                idx = np.flatnonzero((arr < lo) | (arr > hi)).tolist()
            out.extend(Violation(i, c.name, OUT_OF_RANGE,
                                 f"{c.name}: {_num(arr[i])} outside [{_num(c.min)}, "
                                 f"{_num(c.max)}]") for i in idx)
    out.sort(key=lambda v: v.row)
    return out


def refusal(violations: list[Violation], columns: list[Column] | InputSchema) -> InputError:
    """The 422 for a request with values the contract refuses: the first one named, with what
    the contract allows, and how many more there are."""
    v = violations[0]
    col = next(c for c in as_schema(columns).columns if c.name == v.column)
    if col.categories is not None and v.reason == "unknown_category":
        known = sorted(col.categories)
        allowed = ", ".join(known[:12]) + (f", ... ({len(known)} in all)" if len(known) > 12
                                           else "")
        hint = f"; the contract's categories: {allowed}"
    else:
        hint = ""
    more = f" ({len(violations) - 1} more value(s) outside the contract)" \
        if len(violations) > 1 else ""
    return InputError(f"row {v.row}: column {v.column!r}: {v.detail.split(': ', 1)[1]}"
                      f"{hint}{more}")


def _num(x) -> str:
    if x is None:
        return "None"
    f = float(x)
    return str(int(f)) if f.is_integer() and abs(f) < 2 ** 53 else repr(f)
