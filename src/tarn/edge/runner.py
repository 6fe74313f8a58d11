"""The client-side runtime of a published bundle: score rows with the ONNX graph, nothing else.

It imports only the standard library, numpy and onnxruntime, so it runs on an edge device
without the training stack; the backend server uses it too, as its fast path. A bundle is a
folder with ``model.onnx``, ``schema.json``, ``metadata.json`` and ``SHA256SUMS``
(see :mod:`tarn.edge`); the model's checksum is verified before anything is loaded.

Input contract (the same as the Python model's): one 1-D array per input column; numeric
columns as numbers with NaN for missing, string columns as objects with None (or NaN) for
missing. The exported graph has no string imputer (the ONNX converter cannot match None or
NaN), so the feed builder maps a missing string to the category the Python pipeline imputes,
which the graph names in its metadata: missing means the same on both sides.

Column names and values follow the contract the bundle carries (``schema.json``), by the one
rule the server applies (``tarn.core.columns``, mirrored here because the runner cannot import
tarn; tests run one table of cases through both): a header may use a column's name or one of
its aliases (``education-num`` is ``education_num``; names are compared after
:func:`normalize_name`, the ETL's rule); a column the model does not use (``ignored``: excluded
features, the target, the lake's ``batch``) is accepted and ignored, so a lake file is scored
as it is; another name is refused when ``extra_columns`` is ``error`` (ignored with
``ignore``, and by bundles published before the rule); a required input (``required``) with a
missing value refuses the row, naming it; in a category column of integer codes a whole number
is that code's text. A value the ETL would quarantine (an unknown category, a number outside the
column's range) is refused with its line and column named, or, with ``--unknown-values flag``,
scored and listed in a third output column. :func:`columns_from_records` applies the same rule
to JSON-like records, with the server's messages.

What a row's output is depends on the task the bundle's model was trained for
(``metadata.json``: ``task``, ``classes``, ``threshold``): binary, the probability of class 1
and the label (1 when the probability reaches the version's threshold); multiclass, one
probability per class and the most probable class; regression, the predicted value.

Usage: ``python -m tarn.edge.runner BUNDLE_DIR FILE.csv [--unknown-values refuse|flag]``
prints per row ``proba,label`` (binary), ``proba_0,...,proba_<K-1>,label,class``
(multiclass) or ``prediction`` (regression), and ``violations`` when flagging.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MODEL = "model.onnx"
SCHEMA = "schema.json"
METADATA = "metadata.json"
SUMS = "SHA256SUMS"
MISSING_KEY = "tarn.missing_category"  # ONNX metadata_props key: what a missing string becomes
DEFAULT_MISSING = "missing"
DEFAULT_THRESHOLD = 0.5
PROBA_OUTPUT = "probabilities"  # classification graphs: (n, K) class probabilities
VALUE_OUTPUT = "variable"  # regression graphs: (n, 1) predicted values (skl2onnx's name)
CSV_MISSING = frozenset({"", "?"})
ECHO_CHARS = 80  # characters of a client's value an error repeats (tarn.core.columns)
ECHO_NAMES = 10  # names of a client's columns an error lists
EXACT_INT = 2.0 ** 53  # whole numbers read as integer codes
LONG_LIMIT = 2.0 ** 63
_CODE = re.compile(r"-?(?:0|[1-9][0-9]*)")


class BundleError(Exception):
    """A bundle that is incomplete, altered or unreadable: never score with it."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_session(model_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    """One session per model, made once. One intra-op thread by default: a single row gains
    nothing from a thread pool, and the server already runs requests concurrently."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # warnings about unused initializers are noise here
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """An ONNX graph and the feed builder that turns input columns into its tensors.

    The input names and kinds come from the graph itself, so feeds cannot drift from it.
    """

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        self.session = make_session(model_bytes, threads)
        self.fields: list[tuple[str, bool]] = [
            (i.name, i.type == "tensor(string)") for i in self.session.get_inputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        self.missing = meta.get(MISSING_KEY, DEFAULT_MISSING)
        outputs = {o.name: o for o in self.session.get_outputs()}
        if PROBA_OUTPUT in outputs:  # a classifier: binary when it has two classes
            width = outputs[PROBA_OUTPUT].shape[-1]
            self.kind = "binary" if width == 2 else "multiclass"
            self._outputs = [PROBA_OUTPUT]
        elif VALUE_OUTPUT in outputs:
            self.kind = "regression"
            self._outputs = [VALUE_OUTPUT]
        else:
            raise BundleError(f"the ONNX graph has neither a {PROBA_OUTPUT!r} nor a "
                              f"{VALUE_OUTPUT!r} output (has {sorted(outputs)})")

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.fields]

    def feeds(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """(n, 1) float32 tensors for numbers, (n, 1) string tensors for categories."""
        return build_feeds(columns, self.fields, self.missing)

    def scores(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Per row, as the Python model's scores: binary, P(class 1) (n,); multiclass, the
        class probabilities (n, K); regression, the predicted value (n,)."""
        feeds = self.feeds(columns)
        if not feeds or next(iter(feeds.values())).shape[0] == 0:
            return np.empty((0, 0) if self.kind == "multiclass" else 0, dtype=np.float32)
        out = self.session.run(self._outputs, feeds)[0]
        if self.kind == "binary":
            return out[:, 1]
        return out if self.kind == "multiclass" else out.reshape(-1)

    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities: binary P(class 1) (n,), multiclass (n, K)."""
        if self.kind == "regression":
            raise TypeError("a regression model has no probabilities: use scores()")
        return self.scores(columns)


def build_feeds(columns: Mapping[str, Any], fields: Sequence[tuple[str, bool]],
                missing: str) -> dict[str, np.ndarray]:
    """The graph's feeds from input columns; raises ValueError naming a missing column."""
    feeds: dict[str, np.ndarray] = {}
    n = -1
    for name, is_string in fields:
        try:
            values = columns[name]
        except KeyError:
            raise ValueError(f"missing input column {name!r}") from None
        arr = _string_feed(values, missing) if is_string else _number_feed(values)
        if n not in (-1, arr.shape[0]):
            raise ValueError(f"column {name!r} has {arr.shape[0]} values, others have {n}")
        n = arr.shape[0]
        feeds[name] = arr
    return feeds


def _number_feed(values: Any) -> np.ndarray:
    arr = values if type(values) is np.ndarray else np.asarray(values)
    if arr.dtype == object:  # None from JSON null means missing, as NaN does
        arr = np.array([np.nan if v is None else v for v in arr], dtype=np.float64)
    return arr.astype(np.float32).reshape(-1, 1)


def _string_feed(values: Any, missing: str) -> np.ndarray:
    arr = values if type(values) is np.ndarray else np.asarray(values, dtype=object)
    if arr.size == 1:  # one row (the common request): no list building
        v = arr.flat[0]
        out = np.empty((1, 1), dtype=object)
        out[0, 0] = missing if v is None or v != v else v
        return out
    out = np.array([missing if v is None or v != v else v for v in arr.ravel()], dtype=object)
    return out.reshape(-1, 1)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read(path))
    except ValueError as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def _check_sums(bundle: Path) -> None:
    """Every file SHA256SUMS lists must match (schema and metadata included)."""
    path = bundle / SUMS
    if not path.is_file():
        raise BundleError(f"{path}: missing")
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if not name or "/" in name or name.startswith("."):
            raise BundleError(f"{path}: malformed line {line!r}")
        if sha256_bytes(_read(bundle / name)) != digest:
            raise BundleError(f"{bundle / name}: sha256 does not match {SUMS}")


class EdgeModel:
    """A verified bundle, ready to score: ``EdgeModel(dir).predict_proba(columns)``."""

    def __init__(self, bundle_dir: str | Path, threads: int = 1) -> None:
        self.path = Path(bundle_dir)
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: no such bundle folder")
        self.metadata = _read_json(self.path / METADATA)
        self.schema = _read_json(self.path / SCHEMA)
        model_bytes = _read(self.path / MODEL)
        expected = self.metadata.get("sha256")
        if sha256_bytes(model_bytes) != expected:
            raise BundleError(f"{self.path / MODEL}: sha256 does not match the one in "
                              f"{METADATA}; the model was altered or is incomplete")
        _check_sums(self.path)
        self.version = str(self.metadata.get("version", ""))
        self.threshold = float(self.metadata.get("threshold", DEFAULT_THRESHOLD))
        self.task = str(self.metadata.get("task") or "binary")  # bundles before tasks: binary
        try:
            self._scorer = OnnxScorer(model_bytes, threads)  # the bytes checked above
        except BundleError:
            raise
        except Exception as e:  # onnxruntime raises its own types on a bad graph
            raise BundleError(f"{self.path / MODEL}: onnxruntime cannot load it ({e})") from None
        if self._scorer.kind != self.task:
            raise BundleError(f"{self.path / METADATA} says the task is {self.task!r}, the "
                              f"graph's outputs are a {self._scorer.kind} model's")
        classes = self.metadata.get("classes")
        self.classes = ([str(c) for c in classes] if isinstance(classes, list) and classes
                        else [] if self.task == "regression" else ["0", "1"])
        self.input_fields = self._scorer.fields

    @property
    def input_names(self) -> list[str]:
        return self._scorer.input_names

    def scores(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The Python model's scores (see :meth:`OnnxScorer.scores`), within the bundle's
        parity tolerance."""
        return self._scorer.scores(columns)

    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities: binary P(class 1) (n,), multiclass (n, K)."""
        return self._scorer.predict_proba(columns)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Labels (class indexes) from scores, as the server decides; regression: the values."""
        if self.task == "binary":
            return (np.asarray(scores) >= self.threshold).astype(np.int64)
        if self.task == "multiclass":
            return np.argmax(scores, axis=1).astype(np.int64)
        return np.asarray(scores, dtype=np.float64)

    def predict(self, columns: Mapping[str, Any]) -> np.ndarray:
        return self.decide(self.scores(columns))

    def rows(self, scores: np.ndarray) -> list[dict]:
        """Pure: one output row per score, in the CSV's columns (:func:`output_header`)."""
        labels = self.decide(scores)
        if self.task == "binary":
            return [{"proba": float(p), "label": int(k)} for p, k in zip(scores, labels,
                                                                          strict=True)]
        if self.task == "multiclass":
            return [{**{f"proba_{i}": float(p) for i, p in enumerate(row)}, "label": int(k),
                     "class": self.classes[int(k)]} for row, k in zip(scores, labels,
                                                                       strict=True)]
        return [{"prediction": float(v)} for v in scores]

    def output_header(self) -> list[str]:
        """The output columns per row, by task."""
        if self.task == "binary":
            return ["proba", "label"]
        if self.task == "multiclass":
            return [*(f"proba_{i}" for i in range(len(self.classes))), "label", "class"]
        return ["prediction"]


# --------------------------------------------------------------------------- the contract
def normalize_name(name: str) -> str:
    """The form a header name is matched in (``Hours-per-week`` = ``hours_per_week``): the
    same rule as ``tarn.core.schema.normalize_name`` (tested to agree), kept here so the runner
    needs nothing but the standard library, numpy and onnxruntime."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def clip(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``tarn.core.columns.clip``)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(text):,} characters)"


def name_list(names: Sequence[Any], shown: int = ECHO_NAMES) -> str:
    head = "[" + ", ".join(clip(str(n)) for n in names[:shown]) + "]"
    return head if len(names) <= shown else f"{head} and {len(names) - shown:,} more"


def code_text(value: Any) -> str | None:
    """A whole number's integer text (``2``, ``2.0`` -> ``"2"``), else None."""
    t = type(value)
    if t is int:
        return str(value) if abs(value) < EXACT_INT else None
    if t is float and math.isfinite(value) and value.is_integer() and abs(value) < EXACT_INT:
        return str(int(value))
    return None


def required_text(name: str) -> str:
    return (f"column {name!r} is required: the model cannot answer without it (send a value; "
            "the contract does not impute it)")


class Contract:
    """What ``schema.json`` says about the inputs: names and aliases, kinds, which must have a
    value, categories (and their integer codes), ranges, missing markers, the names accepted
    and ignored and the policy for others. A bundle published before these were written gives
    names only (and ignores other names, as the runner did then)."""

    def __init__(self, schema: Mapping[str, Any] | None) -> None:
        schema = schema or {}
        cols = [c for c in schema.get("columns", []) if isinstance(c, dict) and "name" in c]
        self.names = [c["name"] for c in cols]
        self.kinds = {c["name"]: str(c.get("type") or "double") for c in cols}
        self.required = frozenset(c["name"] for c in cols if c.get("required"))
        self.lookup: dict[str, str] = {}
        for c in cols:
            for alias in (c["name"], *(c.get("aliases") or [])):
                self.lookup.setdefault(normalize_name(alias), c["name"])
        check_categories = schema.get("unknown_categories", "quarantine") == "quarantine"
        self.categories = {c["name"]: frozenset(c["categories"]) for c in cols
                           if check_categories and c.get("categories") is not None}
        self.codes = {c["name"]: codes for c in cols if self.kinds[c["name"]] == "string"
                      and (codes := frozenset(k for k in c.get("categories") or ()
                                              if _CODE.fullmatch(str(k))))}
        self.ranges = {c["name"]: (c.get("min"), c.get("max")) for c in cols
                       if c.get("min") is not None or c.get("max") is not None}
        markers = schema.get("missing_values")
        self.missing = frozenset(markers) if isinstance(markers, list) else CSV_MISSING
        ignored = schema.get("ignored")
        self.ignored_names = sorted(map(str, ignored)) if isinstance(ignored, list) else []
        self.ignored = frozenset(map(normalize_name, self.ignored_names)) - set(self.lookup)
        self.extra_columns = str(schema.get("extra_columns") or "ignore")

    def resolve(self, name: str) -> str | None:
        return self.lookup.get(normalize_name(name))

    def accepts_unread(self, name: str) -> bool:
        """A name that is no input's: accepted (and not read), or refused."""
        return normalize_name(name) in self.ignored or self.extra_columns != "error"

    def unknown_message(self, unknown: Sequence[Any]) -> str:
        """The server's wording (``ColumnRules.unknown_message``)."""
        ignored = f"; accepted and ignored: {self.ignored_names}" if self.ignored_names else ""
        return (f"unknown column(s) {name_list(sorted(map(str, unknown)))}; expected "
                f"{self.names} (or their aliases in the contract){ignored}")

    def violations(self, columns: Mapping[str, Any]) -> list[tuple[int, str, str, str]]:
        """(row, column, reason, detail) for every value the ETL would quarantine, in row
        order; reasons and details worded as the ETL's quarantine words them."""
        out: list[tuple[int, str, str, str]] = []
        for name, cats in self.categories.items():
            if name in columns:
                for i, v in enumerate(columns[name]):
                    if v is not None and v == v and v not in cats:
                        out.append((i, name, "unknown_category",
                                    f"{name}: unknown category {clip(v)}"))
        for name, (lo, hi) in self.ranges.items():
            if name not in columns:
                continue
            arr = np.asarray(columns[name], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                bad = ((arr < lo) if lo is not None else False) | \
                    ((arr > hi) if hi is not None else False)
            for i in np.flatnonzero(bad).tolist():
                out.append((i, name, "out_of_range",
                            f"{name}: {_num(arr[i])} outside [{_num(lo)}, {_num(hi)}]"))
        out.sort(key=lambda v: v[0])
        return out


def _num(x: Any) -> str:
    if x is None:
        return "None"
    f = float(x)
    return str(int(f)) if f.is_integer() and abs(f) < 2 ** 53 else repr(f)


# --------------------------------------------------------------------------- records
def columns_from_records(records: Any, contract: Contract,
                         fields: Sequence[tuple[str, bool]] | None = None
                         ) -> dict[str, np.ndarray]:
    """Input columns from records (objects of JSON values) by the server's rule and with its
    messages (``tarn.serve.inputs``; ValueError): names (inputs, accepted and ignored, or
    refused), required values, types (integer codes read as their category), then the
    contract's categories and ranges. Numbers as float64 (NaN = missing), strings as objects
    (None = missing)."""
    if not isinstance(records, list) or not records:
        raise ValueError("no rows to score: send at least one record")
    if any(type(r) is not dict for r in records):
        raise ValueError("each row must be an object of column values (or a list in column "
                         "order)")
    names = [n for n, _ in fields] if fields is not None else list(contract.names)
    wanted = set(names)
    rename: dict[Any, str] = {}
    unknown: list[Any] = []
    for k in dict.fromkeys(k for r in records for k in r):
        if k in wanted:
            continue
        target = contract.resolve(k) if isinstance(k, str) else None
        if target in wanted:
            rename[k] = target
        elif not isinstance(k, str) or not contract.accepts_unread(k):
            unknown.append(k)
    if unknown:
        raise ValueError(contract.unknown_message(unknown))
    raw: dict[str, list] = {n: [] for n in names}
    for i, r in enumerate(records):
        row: dict[str, Any] = {}
        for k, v in r.items():
            name = rename.get(k, k)
            if name not in wanted:
                continue
            if name in row:
                spelled = sorted(str(k2) for k2 in r if rename.get(k2, k2) == name)
                raise ValueError(f"row {i}: two names for column {name!r} ({spelled[0]!r} and "
                                 f"{spelled[1]!r})" if len(spelled) == 2 else
                                 f"row {i}: {len(spelled)} names for column {name!r}")
            row[name] = v
        for n in names:
            raw[n].append(row.get(n))
    out = {n: _record_values(n, raw[n], contract) for n in names}
    found = contract.violations(out)
    if found:
        row_i, name, reason, detail = found[0]
        cats = contract.categories.get(name)
        hint = ""
        if cats is not None and reason == "unknown_category":
            known = sorted(cats)
            hint = "; the contract's categories: " + ", ".join(known[:12]) + (
                f", ... ({len(known)} in all)" if len(known) > 12 else "")
        more = f" ({len(found) - 1} more value(s) outside the contract)" if len(found) > 1 \
            else ""
        raise ValueError(f"row {row_i}: column {name!r}: {detail.split(': ', 1)[1]}{hint}{more}")
    return out


def _record_values(name: str, values: list, contract: Contract) -> np.ndarray:
    """One column of record values, checked in the server's order (tarn.serve.inputs)."""
    if name in contract.required:
        i = next((i for i, v in enumerate(values) if v is None), None)
        if i is not None:
            raise ValueError(f"row {i}: {required_text(name)}")
    if contract.kinds.get(name) == "string":
        codes = contract.codes.get(name)
        out = []
        for i, v in enumerate(values):
            if v is not None and type(v) is not str:
                text = code_text(v) if codes else None
                if text is None:
                    hint = " (or a whole number naming one of its integer codes)" if codes \
                        else ""
                    raise ValueError(f"row {i}: column {name!r} must be a string{hint}, got "
                                     f"{type(v).__name__}")
                v = text
            out.append(v)
        return np.array(out, dtype=object)
    for i, v in enumerate(values):
        if v is not None and type(v) not in (int, float):
            raise ValueError(f"row {i}: column {name!r} must be a number, got "
                             f"{type(v).__name__}")
    nums = []
    for i, v in enumerate(values):
        try:
            nums.append(math.nan if v is None else float(v))
        except OverflowError:
            raise ValueError(f"row {i}: column {name!r} is out of range (an integer of "
                             f"{len(str(abs(v)))} digits)") from None
    arr = np.array(nums, dtype=np.float64)
    present = np.array([v is not None for v in values], dtype=bool)
    checks = [(~np.isfinite(arr), "must be finite, got {v}")]
    if contract.kinds.get(name) == "long":
        with np.errstate(invalid="ignore"):
            checks += [(np.abs(arr) >= LONG_LIMIT, "is beyond the 64-bit integer range, got "
                                                   "{f:.4g}"),
                       (np.floor(arr) != arr, "must be an integer, got {v}")]
    for bad, text in checks:
        bad = present & bad
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"row {i}: column {name!r} " + text.format(v=values[i],
                                                                        f=float(values[i])))
    return arr


# --------------------------------------------------------------------------- CSV
def read_csv_columns(csv_path: str | Path, fields: Sequence[tuple[str, bool]],
                     schema: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Input columns from a CSV with a header row; empty or ``?`` cells (the contract's
    missing markers) are missing. Header names may be the contract's aliases (``schema``:
    the bundle's schema.json).

    Extra columns (an id, the label) are ignored. Raises ValueError naming the missing
    column, or the line and column of a cell that is not a number.
    """
    return read_csv(csv_path, fields, Contract(schema))[0]


def read_csv(csv_path: str | Path, fields: Sequence[tuple[str, bool]], contract: Contract
             ) -> tuple[dict[str, np.ndarray], list[int]]:
    """(input columns, the line each row ends on) from a CSV; see :func:`read_csv_columns`."""
    path = Path(csv_path)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ValueError(f"{path}: empty file (expected a header row of column names)")
        wanted = {name for name, _ in fields}
        index: dict[str, int] = {}
        unknown: list[str] = []
        for i, h in enumerate(header):
            name = h if h in wanted else contract.resolve(h)
            if name not in wanted:
                if not contract.accepts_unread(h):
                    unknown.append(h)
                continue  # excluded, the target, batch: accepted, not an input
            if name in index:
                raise ValueError(f"{path}: columns {header[index[name]]!r} and {h!r} both "
                                 f"name {name!r}")
            index[name] = i
        if unknown:
            raise ValueError(f"{path}: {contract.unknown_message(unknown)}")
        missing = [name for name, _ in fields if name not in index]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        raw: dict[str, list] = {name: [] for name, _ in fields}
        lines: list[int] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}, line {reader.line_num}: {len(row)} fields, "
                                 f"the header has {len(header)}")
            for name, is_string in fields:
                cell = row[index[name]].strip()
                if name in contract.required and cell in contract.missing:
                    raise ValueError(f"{path}, line {reader.line_num}: "
                                     f"{required_text(name)}")
                raw[name].append(_cell(cell, is_string, name, path, reader.line_num,
                                       contract.missing))
            lines.append(reader.line_num)
    return ({name: np.array(raw[name], dtype=object if is_string else np.float64)
             for name, is_string in fields}, lines)


def _cell(cell: str, is_string: bool, name: str, path: Path, line: int,
          missing: frozenset[str] = CSV_MISSING) -> Any:
    if cell in missing:
        return None if is_string else math.nan
    if is_string:
        return cell
    try:
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}, line {line}: column {name!r}: {clip(cell)} is not a "
                         "number") from None


def predict_csv(bundle_dir: str | Path, csv_path: str | Path,
                unknown_values: str = "refuse") -> list[dict]:
    """Score every row of a CSV, in file order: binary ``{"proba": p, "label": 0|1}``,
    multiclass ``{"proba_0": p0, ..., "label": i, "class": name}``, regression
    ``{"prediction": v}`` (:meth:`EdgeModel.rows`).

    A value outside the contract (unknown category, number out of range) raises ValueError
    naming its line and column (``unknown_values="refuse"``), or is scored and listed under
    the row's ``"violations"`` (``"flag"``)."""
    if unknown_values not in ("refuse", "flag"):
        raise ValueError(f"unknown_values must be refuse or flag, not {unknown_values!r}")
    model = EdgeModel(bundle_dir)
    contract = Contract(model.schema)
    columns, lines = read_csv(csv_path, model.input_fields, contract)
    found = contract.violations(columns)
    if found and unknown_values == "refuse":
        row, name, _, detail = found[0]
        more = f" ({len(found) - 1} more value(s) outside the contract)" if len(found) > 1 \
            else ""
        raise ValueError(f"{csv_path}, line {lines[row]}: column {name!r}: "
                         f"{detail.split(': ', 1)[1]}{more} (--unknown-values flag scores "
                         "such rows and lists them)")
    rows = model.rows(model.scores(columns))
    if unknown_values == "flag":
        for r in rows:
            r["violations"] = []
        for row, _, _, detail in found:
            rows[row]["violations"].append(detail)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tarn.edge.runner",
                                     description="Score a CSV with a published tarn bundle.")
    parser.add_argument("bundle", help="bundle folder (model.onnx, schema.json, ...)")
    parser.add_argument("csv", help="CSV file with a header row of input column names (or "
                                     "their aliases in the contract)")
    parser.add_argument("--unknown-values", choices=("refuse", "flag"), default="refuse",
                        help="a value the contract does not allow (unknown category, number "
                             "out of range): refuse the file naming it, or score the row and "
                             "list it in a 'violations' column")
    args = parser.parse_args(argv)
    try:
        rows = predict_csv(args.bundle, args.csv, args.unknown_values)
        header = EdgeModel(args.bundle).output_header() if not rows else list(rows[0])
    except (BundleError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(header)
    out.writerows([_cell_text(r[k]) for k in header] for r in rows)
    return 0


def _cell_text(v: Any) -> str:
    if isinstance(v, float):
        return format(v, ".9g")
    if isinstance(v, list):  # violations
        return "; ".join(v)
    return str(v)


if __name__ == "__main__":
    sys.exit(main())
