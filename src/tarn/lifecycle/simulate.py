"""``tarn lake simulate``: a realistic new lake batch with a chosen kind of drift.

A batch is drawn, with a seed, from the bundled raw Adult rows (``adult.data`` by default:
drawing from ``adult.test`` would leak held-out rows into retraining, whose gates score on
them) and written in the raw form ``tarn lake seed`` writes: the same
header, ``, `` separators, ``?`` for missing values, labels ``>50K`` / ``<=50K``. Only source rows
the schema contract accepts are drawn, so every row of a ``none``, ``covariate`` or ``prior``
batch passes the ETL (it may still be a duplicate of a row already in the lake).

Kinds of drift:

* ``none``: a plain random sample.
* ``covariate``: the chosen columns' distribution moves, P(y|x) does not. Rows are drawn with
  replacement (importance resampling) with weight ``exp(strength * sum of tilts)``: a numeric
  column adds ``0.5 * z`` (z its standardized value, clipped to +-3), a categorical column adds
  1.5 for rows in the rarest half of its values (missing counted as a value). Values are never
  changed, so they stay inside the contract's ranges and keep their true labels. The stronger
  the tilt, the more often a row is drawn twice: the ETL reports those as duplicates.
* ``prior``: the positive-label rate becomes ``positive_rate``; within each class rows are a
  plain random sample, so P(x|y) does not move.
* ``new-category``: a ``share`` of a categorical column's values become a category the schema
  does not know (``Gig-economy`` for workclass): the ETL quarantines those rows.

Other kinds draw without replacement while the source has enough rows, with replacement beyond.
Every drawn row gets its ``fnlwgt`` (a census sampling weight, not a model signal of note)
jittered by up to +-2 %: the rows are new people resembling real ones, not copies the ETL
would drop as duplicates of the seeded batches.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import ColumnSpec, Params, SchemaConfig
from tarn.core import schema as sc
from tarn.core.lake import Lake
from tarn.datasets import ADULT_COLUMNS, adult_lines
from tarn.errors import TarnError

KINDS = ("none", "covariate", "prior", "new-category")
SOURCES = ("test", "train")
DEFAULT_COLUMNS = {"covariate": ["age", "hours_per_week"], "new-category": ["workclass"]}
FILENAME = "adult.csv"
# Plausible categories the Adult contract does not list (any other column: "New-<column>").
NEW_CATEGORIES = {"workclass": "Gig-economy", "occupation": "Data-labeling",
                  "native_country": "Atlantis", "education": "Bootcamp",
                  "marital_status": "Civil-union", "relationship": "Partner",
                  "race": "Multiracial", "sex": "Non-binary"}
NUM_TILT = 0.5  # numeric tilt: log-weight per standard deviation, per unit of strength
Z_CLIP = 3.0  # standardized values clipped to +-3 (capital_gain reaches z ~ 13)
RARE_TILT = 1.5  # categorical tilt: log-weight of rows in the rarest half, per unit of strength


@dataclass(frozen=True)
class Pool:
    """Source rows the contract accepts: raw strings (``raw``) and typed values (``typed``),
    row-aligned, with the raw column name of each contract column."""

    raw: pd.DataFrame
    typed: pd.DataFrame
    raw_name: dict[str, str]  # contract name -> raw header name


@dataclass
class SimBatch:
    """A simulated batch: its file text and figures describing it against the source."""

    kind: str
    text: str
    rows: int
    distinct: int  # rows that are not repeats of another row of the batch
    positive_rate: float
    source_positive_rate: float
    columns: list[str] = field(default_factory=list)
    # covariate: column -> (measure, source value, batch value); the measure is the mean for
    # numeric columns and the share of the rarest half of values for categorical ones
    shifts: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    replaced: int = 0  # new-category: values replaced
    new_category: str = ""

    def summary(self) -> str:
        parts = [f"{self.rows:,} rows ({self.distinct:,} distinct)",
                 f"positive rate {self.positive_rate:.3f} (source "
                 f"{self.source_positive_rate:.3f})"]
        for col, (measure, before, after) in self.shifts.items():
            parts.append(f"{col} {measure} {before:.3f} -> {after:.3f}")
        if self.replaced:
            parts.append(f"{self.replaced:,} {self.columns[0]} values -> {self.new_category!r}")
        return ", ".join(parts)


@functools.lru_cache(maxsize=4)
def _source_frame(part: str) -> pd.DataFrame:
    rows = [[v.strip() for v in ln.split(",")] for ln in adult_lines(part)]
    return pd.DataFrame(rows, columns=ADULT_COLUMNS, dtype=object)


def load_pool(schema: SchemaConfig, source: str = "train") -> Pool:
    """The bundled raw rows of ``source`` that the contract accepts, labels without the dot.
    Cached per (schema, source): treat the frames as read-only."""
    if source not in SOURCES:
        raise TarnError(f"unknown source {source!r}", f"use one of {', '.join(SOURCES)}")
    return _load_pool(schema.model_dump_json(), source)


@functools.lru_cache(maxsize=4)
def _load_pool(schema_json: str, source: str) -> Pool:
    schema = SchemaConfig.model_validate_json(schema_json)
    raw = _source_frame(source).copy()
    try:
        mapping = sc.resolve_columns(list(raw.columns), schema, f"bundled adult.{source}")
    except TarnError as e:
        raise TarnError(f"the schema does not fit the bundled Adult data: {e.message}",
                        "simulate derives batches from the bundled Adult rows; use a schema "
                        "that accepts them (the project's params.yaml does)") from e
    target_raw = next(r for r, c in mapping.items() if c == schema.target.name)
    raw[target_raw] = raw[target_raw].str.rstrip(".")  # adult.test writes ">50K."
    res = sc.conform(raw[list(mapping)], schema, mapping)
    keep = res.rows.index
    return Pool(raw.loc[keep].reset_index(drop=True), res.rows.reset_index(drop=True),
                {c: r for r, c in mapping.items()})


def resolve_column(schema: SchemaConfig, name: str) -> ColumnSpec:
    """A feature column by contract name or alias (``hours-per-week`` = ``hours_per_week``)."""
    key = sc.normalize_name(name)
    for spec in schema.columns:
        if key in {sc.normalize_name(a) for a in (spec.name, *spec.aliases)}:
            return spec
    if key in {sc.normalize_name(a) for a in (schema.target.name, *schema.target.aliases)}:
        raise TarnError(f"{name!r} is the label, not a feature column",
                        "shift the label with --drift prior --positive-rate R")
    raise TarnError(f"unknown column {name!r}",
                    f"use one of {', '.join(schema.feature_names)}")


def _draw(rng: np.random.Generator, n_pool: int, rows: int) -> np.ndarray:
    """Indices of ``rows`` plain draws from a pool, without replacement while it is large
    enough."""
    return rng.choice(n_pool, size=rows, replace=rows > n_pool)


def _rare_half(values: pd.Series) -> set:
    """The rarest half of a column's values (missing counted as a value), at least one."""
    counts = values.fillna("?").value_counts(sort=False)
    order = sorted(counts.index, key=lambda v: (counts[v], str(v)))
    return set(order[:max(1, len(order) // 2)])


def _tilt(pool: Pool, specs: list[ColumnSpec], strength: float) -> np.ndarray:
    """Log-weights of the covariate shift, one per pool row."""
    logw = np.zeros(len(pool.typed))
    for spec in specs:
        col = pool.typed[spec.name]
        if spec.numeric:
            x = pd.to_numeric(col, errors="coerce").astype(float).to_numpy()
            sd = np.nanstd(x)
            z = np.zeros_like(x) if sd == 0 else np.clip((x - np.nanmean(x)) / sd, -Z_CLIP, Z_CLIP)
            logw += strength * NUM_TILT * np.nan_to_num(z)
        else:
            rare = _rare_half(col)
            logw += strength * RARE_TILT * col.fillna("?").isin(rare).to_numpy()
    return logw


def _describe(pool: Pool, idx: np.ndarray, spec: ColumnSpec) -> tuple[str, float, float]:
    col = pool.typed[spec.name]
    if spec.numeric:
        x = pd.to_numeric(col, errors="coerce").astype(float)
        return "mean", float(x.mean()), float(x.iloc[idx].mean())
    rare = col.fillna("?").isin(_rare_half(col))
    return "rare-half share", float(rare.mean()), float(rare.iloc[idx].mean())


def _new_category(spec: ColumnSpec) -> str:
    value = NEW_CATEGORIES.get(spec.name, "New-" + spec.name.replace("_", "-"))
    while spec.categories and value in spec.categories:
        value += "-new"
    return value


def build_batch(schema: SchemaConfig, kind: str, rows: int, seed: int = 42,
                columns: list[str] | None = None, strength: float = 1.0,
                positive_rate: float = 0.5, share: float = 0.3,
                source: str = "train") -> SimBatch:
    """The raw text of a simulated batch and figures about it (pure: no I/O but reading the
    bundled data). Same arguments, same bytes."""
    if kind not in KINDS:
        raise TarnError(f"unknown drift kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if not isinstance(rows, int) or rows < 1:
        raise TarnError(f"--rows must be at least 1 (got {rows})", "ask for 1 or more rows")
    if not math.isfinite(strength):
        raise TarnError(f"--strength must be a finite number (got {strength})",
                        "use e.g. 1.0 (negative values shift the other way)")
    if not 0.0 <= positive_rate <= 1.0:
        raise TarnError(f"--positive-rate must be within [0, 1] (got {positive_rate})",
                        "use e.g. 0.5")
    if not 0.0 < share <= 1.0:
        raise TarnError(f"--share must be within (0, 1] (got {share})", "use e.g. 0.3")
    names = columns if columns else DEFAULT_COLUMNS.get(kind, [])
    specs = list({s.name: s for s in (resolve_column(schema, n) for n in names)}.values())
    if kind == "new-category":
        if len(specs) != 1:
            raise TarnError(f"new-category takes one column (got {len(specs)})",
                            "pass a single categorical column, e.g. --columns workclass")
        if specs[0].dtype != "category" or not specs[0].categories:
            raise TarnError(f"column {specs[0].name!r} has no category list in the schema",
                            "pick a categorical column, e.g. --columns workclass")

    pool = load_pool(schema, source)
    if len(pool.typed) == 0:
        raise TarnError(f"no row of the bundled adult.{source} passes the schema contract",
                        "check schema.columns in params.yaml")
    rng = np.random.default_rng(seed)
    target = schema.target.name
    y = pool.typed[target].to_numpy().astype(int)
    shifts: dict[str, tuple[float, float]] = {}
    replaced, new_value = 0, ""

    if kind == "covariate":
        logw = _tilt(pool, specs, strength)
        w = np.exp(logw - logw.max())
        idx = rng.choice(len(y), size=rows, replace=True, p=w / w.sum())
        shifts = {s.name: _describe(pool, idx, s) for s in specs}
    elif kind == "prior":
        n_pos = int(round(positive_rate * rows))
        parts = []
        for label, n in ((1, n_pos), (0, rows - n_pos)):
            members = np.flatnonzero(y == label)
            if n and not len(members):
                raise TarnError(f"the source has no rows with label {label}",
                                "use a positive rate of 0 or 1 accordingly")
            if n:
                parts.append(members[_draw(rng, len(members), n)])
        idx = rng.permutation(np.concatenate(parts))
    else:  # none, new-category
        idx = _draw(rng, len(y), rows)

    out = pool.raw.iloc[idx].reset_index(drop=True)
    if "fnlwgt" in pool.raw_name:  # new people, not copies: see the module docstring
        col = pool.raw_name["fnlwgt"]
        w = pd.to_numeric(out[col].astype(str).str.strip()).to_numpy(dtype=float)
        w = np.maximum(1, np.round(w * (1 + rng.uniform(-0.02, 0.02, len(w))))).astype(int)
        out[col] = [str(v) for v in w]
    if kind == "new-category":
        spec = specs[0]
        new_value = _new_category(spec)
        replaced = int(round(share * rows))
        at = rng.choice(rows, size=replaced, replace=False)
        out.iloc[np.sort(at), out.columns.get_loc(pool.raw_name[spec.name])] = new_value

    header = ", ".join(out.columns)
    body = [", ".join(r) for r in out.itertuples(index=False, name=None)]
    text = "\n".join([header, *body]) + "\n"
    return SimBatch(kind=kind, text=text, rows=rows, distinct=len(set(body)),
                    positive_rate=float(y[idx].mean()),
                    source_positive_rate=float(y.mean()), columns=[s.name for s in specs],
                    shifts=shifts, replaced=replaced, new_category=new_value)


def write(params: Params, root: Path, sim: SimBatch, batch_name: str | None = None) -> str:
    """Write ``sim`` into the lake as a new batch; returns its (sequence-prefixed) name."""
    lake = Lake.from_config(params.lake, root)
    name = lake.next_batch_name(batch_name or f"sim-{sim.kind}")
    lake.write_batch(name, FILENAME, sim.text.encode("utf-8"))
    return name


def simulate(params: Params, root: Path, kind: str, rows: int, seed: int = 42,
             columns: list[str] | None = None, strength: float = 1.0,
             positive_rate: float = 0.5, share: float = 0.3,
             batch_name: str | None = None, source: str = "train") -> tuple[str, SimBatch]:
    """Build a simulated batch (see :func:`build_batch`) and write it into the lake under
    ``<seq>-sim-<kind>`` (or ``<seq>-<batch_name>``); returns the batch name and the batch."""
    sim = build_batch(params.schema, kind, rows, seed, columns, strength, positive_rate, share,
                      source)
    return write(params, root, sim, batch_name), sim
