"""Which columns a served version accepts, and what a value must be to reach the model: the one
rule of the server (:mod:`tarn.serve.inputs`) and the monitor, mirrored by the edge runner and
the browser page (they ship without tarn; a test runs one table of cases through the server's
function and the runner's and asserts the same outcome). Pure: no I/O.

The rule, from the served version's contract (its card: ``schema`` and
``prepare.exclude_features``):

- **Names.** A name or alias of a model input (compared after
  :func:`tarn.core.schema.normalize_name`, as the ETL reads a header) is that input. A column
  the model does not use is accepted and ignored: a contract column excluded from the features
  (``prepare.exclude_features``, where ``tarn init --exclude`` puts them), the target, and the
  lake's ``batch`` column. So a row as it appears in the lake is accepted everywhere. Any other
  name is refused when the contract refuses unknown columns (``schema.extra_columns: error``, as
  the ETL refuses such a file) and ignored with ``extra_columns: ignore``.
- **Missing values.** A model input that is not nullable (``required: true`` implies it) must
  have a value: a row lacking it (no key, or null) is refused naming the column, not imputed.
- **Integer codes.** In a category column whose categories include integer codes (``"1"``,
  ``"2"``), a whole number (an integer, or a float such as ``2.0``) is read as its integer text
  (``2`` is ``"2"``), as the ETL reads the cell ``2`` of a file; the category rule then applies
  as to any string (unknown categories refused, flagged or kept by the contract).
- **The monitor.** A log lacking a column the model never used is not a schema change: only the
  model's own inputs count (:meth:`ColumnRules.missing_inputs`).

Every echo of client data in a refusal is bounded: a value is cut to :data:`ECHO_CHARS`
characters (:func:`clip`), a list of names shows the first :data:`ECHO_NAMES` and a count
(:func:`name_list`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tarn.config import PrepareConfig, SchemaConfig
from tarn.core.schema import normalize_name

BATCH = "batch"  # the lake's batch column the curated table carries (tarn.core.ingest)
ECHO_CHARS = 80  # characters of a client's value an error repeats
ECHO_NAMES = 10  # names of a client's columns an error lists
EXACT_INT = 2.0 ** 53  # whole numbers read as integer codes: exact in a float (and in JS)
_CODE = re.compile(r"-?(?:0|[1-9][0-9]*)")  # the text a whole number prints as


@dataclass(frozen=True)
class InputColumn:
    """One model input and what its values must be."""

    name: str
    kind: str  # "long" | "double" | "string"
    required: bool  # a missing value (no key, null) refuses the row
    aliases: tuple[str, ...] = ()  # other header names of the column in the contract
    categories: frozenset[str] | None = None  # checked values (None: any string)
    min: float | None = None  # the contract's range (None: open)
    max: float | None = None
    codes: frozenset[str] | None = None  # declared categories that are integer codes


def input_kind(dtype: str, nullable: bool) -> str:
    """The signature type of a contract column (as :func:`tarn.core.features.input_schema`
    writes it: integers that can never be missing stay integers)."""
    if dtype == "int" and not nullable:
        return "long"
    return "double" if dtype in ("int", "float") else "string"


def integer_codes(categories: Iterable[str] | None) -> frozenset[str] | None:
    """The categories a whole number can name (``"1"``, ``"-2"``; not ``"01"``), or None."""
    codes = frozenset(c for c in categories or () if _CODE.fullmatch(c))
    return codes or None


def code_text(value: Any) -> str | None:
    """A whole number's integer text (``2`` and ``2.0`` -> ``"2"``), None for anything else
    (booleans, fractions, non-finite or inexact numbers, strings)."""
    t = type(value)
    if t is int:
        return str(value) if abs(value) < EXACT_INT else None
    if t is float and math.isfinite(value) and value.is_integer() and abs(value) < EXACT_INT:
        return str(int(value))
    return None


def clip(value: Any, limit: int = ECHO_CHARS) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length said: an error
    never repeats a client's megabytes."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}... ({len(text):,} characters)"


def name_list(names: Sequence[Any], shown: int = ECHO_NAMES) -> str:
    """``['a', 'b']``, or the first ``shown`` (each clipped) and how many more."""
    head = "[" + ", ".join(clip(str(n)) for n in names[:shown]) + "]"
    return head if len(names) <= shown else f"{head} and {len(names) - shown:,} more"


class ColumnRules:
    """A served version's input columns, the names it accepts and ignores, and the policy for
    other names. Built once per version (:meth:`of`, :meth:`from_signature`)."""

    def __init__(self, columns: Sequence[InputColumn], ignored: Iterable[str] = (),
                 extra_columns: str = "error") -> None:
        self.columns = list(columns)
        self.names = [c.name for c in self.columns]
        self.name_set = frozenset(self.names)
        self.lookup: dict[str, str] = {}
        for c in self.columns:
            for alias in (c.name, *c.aliases):
                self.lookup.setdefault(normalize_name(alias), c.name)
        self.ignored_names = tuple(sorted({str(n) for n in ignored}))
        self.ignored = frozenset(normalize_name(n) for n in self.ignored_names) \
            - frozenset(self.lookup)  # a model input is never ignored
        self.extra_columns = extra_columns

    # ------------------------------------------------------------------ constructors
    @classmethod
    def of(cls, schema: SchemaConfig, prepare: PrepareConfig | Iterable[str]) -> ColumnRules:
        """From the contract and the excluded features (``prepare`` or their names): the rules
        of a version trained on them."""
        from tarn.core.features import feature_columns

        cfg = prepare if isinstance(prepare, PrepareConfig) else PrepareConfig(
            exclude_features=list(prepare))
        num, cat = feature_columns(schema, cfg)  # the signature's order
        signature = [{"name": n, "type": input_kind(c.dtype, c.nullable),
                      "required": not c.nullable}
                     for n in num + cat for c in (schema.column(n),)]
        return cls.from_signature(signature, schema)

    @classmethod
    def from_signature(cls, signature_inputs: Sequence[Mapping[str, Any]],
                       schema: SchemaConfig | None = None) -> ColumnRules:
        """From an MLflow signature's ``inputs`` ({name, type, required}) and the version's
        contract: each input with its aliases, categories (checked when the contract
        quarantines unknown ones), integer codes and range; contract columns outside the
        signature (excluded), the target and the lake's batch column ignored. Without a
        contract: the names only, nothing ignored."""
        specs = {c.name: c for c in schema.columns} if schema is not None else {}
        quarantine = schema is not None and schema.unknown_categories == "quarantine"
        cols = []
        for s in signature_inputs:
            spec = specs.get(s["name"])
            col = InputColumn(s["name"], s["type"], bool(s.get("required", True)))
            if spec is not None:
                col = InputColumn(col.name, col.kind, col.required, tuple(spec.aliases),
                                  frozenset(spec.categories) if spec.categories is not None
                                  and quarantine else None, spec.min, spec.max,
                                  integer_codes(spec.categories) if col.kind == "string"
                                  else None)
            cols.append(col)
        if schema is None:
            return cls(cols)
        inputs = {c.name for c in cols}
        ignored = [BATCH, schema.target.name, *schema.target.aliases]
        for c in schema.columns:
            if c.name not in inputs:
                ignored.extend((c.name, *c.aliases))
        return cls(cols, ignored, schema.extra_columns)

    # ------------------------------------------------------------------ names
    def resolve(self, name: Any) -> str | None:
        """The input a request name means (its name or an alias), or None."""
        if name in self.name_set:
            return name
        return self.lookup.get(normalize_name(name)) if isinstance(name, str) else None

    def sort(self, names: Iterable[Any]) -> tuple[dict[Any, str], list[Any]]:
        """({request name: input} for names that are an input's but not its own name,
        [refused names]). Names of ignored columns, and any other name under
        ``extra_columns: ignore``, are in neither: they are accepted and not read."""
        rename: dict[Any, str] = {}
        unknown: list[Any] = []
        for k in names:
            if k in self.name_set:
                continue
            key = normalize_name(k) if isinstance(k, str) else None
            target = self.lookup.get(key) if key is not None else None
            if target is not None:
                rename[k] = target
            elif key is None or (key not in self.ignored and self.extra_columns == "error"):
                unknown.append(k)
        return rename, unknown

    def unknown_message(self, unknown: Sequence[Any]) -> str:
        """The refusal of unknown names: the first ten (each clipped), a count, and what the
        contract accepts."""
        names = sorted(map(str, unknown))
        ignored = f"; accepted and ignored: {list(self.ignored_names)}" \
            if self.ignored_names else ""
        return (f"unknown column(s) {name_list(names)}; expected {self.names} (or their "
                f"aliases in the contract){ignored}")

    # ------------------------------------------------------------------ the monitor
    def missing_inputs(self, columns: Iterable[str]) -> list[str]:
        """The model inputs a table (a prediction log) lacks: a schema change for the monitor.
        Columns the model never used (excluded, ignored, unknown) never count."""
        have = set(columns)
        return [n for n in self.names if n not in have]

    # ------------------------------------------------------------------ the bundle
    def bundle_fields(self) -> dict:
        """What the edge runner and the page need besides the columns (``schema.json``): the
        names accepted and ignored, and the policy for other names."""
        return {"ignored": list(self.ignored_names), "extra_columns": self.extra_columns}


def required_message(row: int, name: str) -> str:
    """The refusal of a row that lacks a required input (the runner and the page say the
    same)."""
    return (f"row {row}: column {name!r} is required: the model cannot answer without it "
            "(send a value; the contract does not impute it)")
