"""``tarn lake simulate``: a realistic new lake batch with a chosen kind of drift.

A batch is drawn, with a seed, from the project's own curated rows (the ETL's table; without
one, the lake's batches read through the ETL's own code path), so it works for whatever dataset
params.yaml describes. By default only rows of training batches are drawn (``source="test"``
draws from the held-out batches named by ``prepare.test_batches``: drawing them into a new
batch would leak them into retraining, whose gates score on them). The batch is written raw: a
CSV with the contract's column names, missing values as the first of
``schema.missing_values``, class labels as the raw label that names each class (regression: the
number). Every row of a ``none``, ``covariate`` or ``prior`` batch passes the ETL, since every
value comes from a curated row; when ``schema.key`` identifies rows, each drawn row gets a new
key, so it is a new row, not a duplicate the ETL would drop.

Kinds of drift, generic per column type:

* ``none``: a plain random sample.
* ``covariate``: the chosen columns' distribution moves, P(y|x) does not. Rows are drawn with
  replacement (importance resampling) with weight ``exp(strength * sum of tilts)``: a numeric
  column adds ``0.5 * z`` (z its standardized value, clipped to +-3: its mean shifts, its spread
  follows), a categorical column adds 1.5 for rows in the rarest half of its values (missing
  counted as a value: the category mix moves). Values are never changed, so they stay inside
  the contract's ranges and keep their true labels. Default columns: the first two numeric
  features.
* ``prior``: the target moves, P(x|y) does not. Classification: the share of class index 1 (the
  positive class of a binary task) becomes ``positive_rate``, the other classes keep their
  relative shares, and within each class rows are a plain random sample. Regression: rows are
  resampled with the same numeric tilt applied to the target (``strength``).
* ``new-category``: a ``share`` of a categorical column's values become a category the schema
  does not know (``New-<column>``): the ETL quarantines those rows. Default column: the first
  categorical feature with a category list.

Other kinds draw without replacement while the source has enough rows, with replacement beyond.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import ColumnSpec, Params, SchemaConfig
from tarn.core import schema as sc
from tarn.core import windows
from tarn.core.lake import Lake
from tarn.errors import TarnError

KINDS = ("none", "covariate", "prior", "new-category")
SOURCES = ("train", "test")
FILENAME = "batch.csv"
NUM_TILT = 0.5  # numeric tilt: log-weight per standard deviation, per unit of strength
Z_CLIP = 3.0  # standardized values clipped to +-3 (long tails would otherwise dominate)
RARE_TILT = 1.5  # categorical tilt: log-weight of rows in the rarest half, per unit of strength


@dataclass(frozen=True)
class Pool:
    """Curated rows to draw from: the contract's feature columns and the target (a class
    index for classification, a number for regression), typed as the ETL wrote them."""

    rows: pd.DataFrame

    @classmethod
    def of(cls, frame: pd.DataFrame, schema: SchemaConfig) -> Pool:
        cols = [*schema.feature_names, schema.target.name]
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise TarnError(f"the curated rows lack {missing}",
                            "re-run `tarn etl` (or dvc repro) with this params.yaml")
        return cls(frame[cols].reset_index(drop=True))


@dataclass
class SimBatch:
    """A simulated batch: its file text and figures describing it against the source."""

    kind: str
    text: str
    rows: int
    distinct: int  # rows that are not repeats of another row of the batch
    target_measure: str  # "share of <class 1>" (classification) | "target mean" (regression)
    target_value: float
    source_target_value: float
    columns: list[str] = field(default_factory=list)
    # covariate: column -> (measure, source value, batch value); the measure is the mean for
    # numeric columns and the share of the rarest half of values for categorical ones
    shifts: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    replaced: int = 0  # new-category: values replaced
    new_category: str = ""

    def summary(self) -> str:
        parts = [f"{self.rows:,} rows ({self.distinct:,} distinct)",
                 f"{self.target_measure} {self.target_value:.3f} (source "
                 f"{self.source_target_value:.3f})"]
        for col, (measure, before, after) in self.shifts.items():
            parts.append(f"{col} {measure} {before:.3f} -> {after:.3f}")
        if self.replaced:
            parts.append(f"{self.replaced:,} {self.columns[0]} values -> {self.new_category!r}")
        return ", ".join(parts)


# ----------------------------------------------------------------------------- the source
def load_pool(params: Params, root: Path, source: str = "train") -> Pool:
    """The project's curated rows of ``source`` (test: the batches prepare holds out, see
    :func:`tarn.core.windows.held_out`; train: the others): the ETL's table, else the lake
    read through the ETL's code path."""
    from tarn.core.catalog import CURATED

    if source not in SOURCES:
        raise TarnError(f"unknown source {source!r}", f"use one of {', '.join(SOURCES)}")
    table = root / params.paths.curated / CURATED
    if table.is_file():
        frame = pd.read_parquet(table)
    else:
        from tarn.core.ingest import read_batches

        names = [b.name for b in Lake.from_config(params.lake, root).batches(params.lake.include)]
        frame = read_batches(params, root, names)[0] if names else pd.DataFrame()
    if frame.empty:
        raise TarnError("no curated rows to draw a batch from",
                        "add data first (`tarn lake add`, or `tarn lake seed` for the demo), "
                        "then run `tarn etl`")
    if "batch" in frame.columns:
        names = frame["batch"].astype(str)
        held_out = names.isin(windows.held_out(names.unique().tolist(), params.prepare))
        frame = frame[held_out if source == "test" else ~held_out]
    if frame.empty:
        raise TarnError(f"no curated rows in the {source} batches",
                        "draw from the other source (--source train|test)")
    return Pool.of(frame, params.schema)


# ----------------------------------------------------------------------------- drift
def resolve_column(schema: SchemaConfig, name: str) -> ColumnSpec:
    """A feature column by contract name or alias (``hours-per-week`` = ``hours_per_week``)."""
    key = sc.normalize_name(name)
    for spec in schema.columns:
        if key in {sc.normalize_name(a) for a in (spec.name, *spec.aliases)}:
            return spec
    if key in {sc.normalize_name(a) for a in (schema.target.name, *schema.target.aliases)}:
        raise TarnError(f"{name!r} is the label, not a feature column",
                        "shift the label with --drift prior")
    raise TarnError(f"unknown column {name!r}",
                    f"use one of {', '.join(schema.feature_names)}")


def default_columns(schema: SchemaConfig, kind: str) -> list[str]:
    """Covariate: the first two numeric features (else the first two); new-category: the first
    categorical feature with a category list."""
    if kind == "covariate":
        numeric = [c.name for c in schema.columns if c.numeric]
        return (numeric or schema.feature_names)[:2]
    if kind == "new-category":
        return [c.name for c in schema.columns if c.dtype == "category" and c.categories][:1]
    return []


def _draw(rng: np.random.Generator, n_pool: int, rows: int) -> np.ndarray:
    """Indices of ``rows`` plain draws from a pool, without replacement while it is large
    enough."""
    return rng.choice(n_pool, size=rows, replace=rows > n_pool)


def _rare_half(values: pd.Series) -> set:
    """The rarest half of a column's values (missing counted as a value), at least one."""
    counts = values.astype(object).fillna("?").value_counts(sort=False)
    order = sorted(counts.index, key=lambda v: (counts[v], str(v)))
    return set(order[:max(1, len(order) // 2)])


def _numeric_tilt(values: pd.Series) -> np.ndarray:
    """Standardized values clipped to +-Z_CLIP (0 where missing or constant)."""
    x = pd.to_numeric(values, errors="coerce").astype(float).to_numpy()
    sd = np.nanstd(x) if np.isfinite(x).any() else 0.0
    z = np.zeros_like(x) if sd == 0 else np.clip((x - np.nanmean(x)) / sd, -Z_CLIP, Z_CLIP)
    return np.nan_to_num(z)


def _tilt(pool: Pool, specs: list[ColumnSpec], strength: float) -> np.ndarray:
    """Log-weights of the covariate shift, one per pool row."""
    logw = np.zeros(len(pool.rows))
    for spec in specs:
        col = pool.rows[spec.name]
        if spec.numeric:
            logw += strength * NUM_TILT * _numeric_tilt(col)
        else:
            logw += strength * RARE_TILT * col.astype(object).fillna("?").isin(
                _rare_half(col)).to_numpy()
    return logw


def _describe(pool: Pool, idx: np.ndarray, spec: ColumnSpec) -> tuple[str, float, float]:
    col = pool.rows[spec.name]
    if spec.numeric:
        x = pd.to_numeric(col, errors="coerce").astype(float)
        return "mean", float(x.mean()), float(x.iloc[idx].mean())
    rare = col.astype(object).fillna("?").isin(_rare_half(col))
    return "rare-half share", float(rare.mean()), float(rare.iloc[idx].mean())


def _new_category(spec: ColumnSpec) -> str:
    value = "New-" + spec.name.replace("_", "-")
    while spec.categories and value in spec.categories:
        value += "-new"
    return value


def _importance(rng: np.random.Generator, logw: np.ndarray, rows: int) -> np.ndarray:
    w = np.exp(logw - logw.max())
    return rng.choice(len(logw), size=rows, replace=True, p=w / w.sum())


def _prior_classes(rng: np.random.Generator, y: np.ndarray, rows: int, rate: float,
                   n_classes: int) -> np.ndarray:
    """Rows with class 1 at ``rate``, the other classes in their source proportions."""
    counts = {c: int(np.sum(y == c)) for c in range(n_classes)}
    others = {c: n for c, n in counts.items() if c != 1}
    n_one = int(round(rate * rows))
    left, total = rows - n_one, sum(others.values())
    want = {1: n_one}
    if left and not total:
        raise TarnError("the source has rows of class index 1 only",
                        "use --positive-rate 1")
    if left:
        shares = {c: left * n / total for c, n in others.items()}
        want |= {c: int(math.floor(s)) for c, s in shares.items()}
        rest = left - sum(want[c] for c in others)  # largest remainders get the leftovers
        for c in sorted(others, key=lambda c: shares[c] - want[c], reverse=True)[:rest]:
            want[c] += 1
    parts = []
    for c, n in want.items():
        members = np.flatnonzero(y == c)
        if n and not len(members):
            raise TarnError(f"the source has no rows of class index {c}",
                            "use a --positive-rate of 0 or 1 accordingly")
        if n:
            parts.append(members[_draw(rng, len(members), n)])
    return rng.permutation(np.concatenate(parts))


# ----------------------------------------------------------------------------- raw text
def _raw_values(col: pd.Series, dtype: str, na: str) -> list[str]:
    if dtype == "int":
        return [na if pd.isna(v) else str(int(v)) for v in col]
    if dtype == "float":
        return [na if pd.isna(v) else repr(float(v)) for v in col]
    return [na if pd.isna(v) else str(v) for v in col]


def raw_text(frame: pd.DataFrame, schema: SchemaConfig) -> str:
    """Pure: typed rows as the raw CSV a data source would deliver (contract names, missing
    values as the contract's first missing marker, class labels as their raw names)."""
    na = schema.missing_values[0] if schema.missing_values else ""
    cols = {s.name: _raw_values(frame[s.name], s.dtype, na) for s in schema.columns}
    y = frame[schema.target.name]
    if schema.numeric_target:
        cols[schema.target.name] = _raw_values(y, "float", na)
    else:
        cols[schema.target.name] = [schema.classes[int(v)] for v in y]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(cols))
    w.writerows(zip(*cols.values(), strict=True))
    return buf.getvalue()


def _new_keys(pool: Pool, schema: SchemaConfig, out: pd.DataFrame,
              rng: np.random.Generator) -> None:
    """Fresh key values (new rows, not duplicates the ETL would drop), in place."""
    for name in schema.key:
        spec = schema.column(name)
        if spec.numeric:
            top = pd.to_numeric(pool.rows[name], errors="coerce").max()
            base = 0 if pd.isna(top) else int(top) + 1
            out[name] = base + rng.choice(10**9, size=len(out), replace=False)
        else:
            tag = rng.integers(0, 16**8)
            out[name] = [f"sim-{tag:08x}-{i}" for i in range(len(out))]


def build_batch(pool: Pool, schema: SchemaConfig, kind: str, rows: int, seed: int = 42,
                columns: list[str] | None = None, strength: float = 1.0,
                positive_rate: float = 0.5, share: float = 0.3) -> SimBatch:
    """The raw text of a simulated batch drawn from ``pool`` and figures about it (pure).
    Same arguments, same bytes."""
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
    names = columns if columns else default_columns(schema, kind)
    specs = list({s.name: s for s in (resolve_column(schema, n) for n in names)}.values())
    if kind == "new-category":
        example = default_columns(schema, kind) or ["<a categorical column>"]
        if len(specs) != 1:
            raise TarnError(f"new-category takes one column (got {len(specs)})",
                            f"pass a single categorical column, e.g. --columns {example[0]}")
        if specs[0].dtype != "category" or not specs[0].categories:
            raise TarnError(f"column {specs[0].name!r} has no category list in the schema",
                            f"pick a categorical column, e.g. --columns {example[0]}")
    if len(pool.rows) == 0:
        raise TarnError("no curated rows to draw from", "run `tarn etl` first")

    rng = np.random.default_rng(seed)
    y = pool.rows[schema.target.name].to_numpy(dtype=np.float64)
    shifts: dict[str, tuple[str, float, float]] = {}
    replaced, new_value = 0, ""
    if kind == "covariate":
        idx = _importance(rng, _tilt(pool, specs, strength), rows)
        shifts = {s.name: _describe(pool, idx, s) for s in specs}
    elif kind == "prior" and schema.numeric_target:
        idx = _importance(rng, strength * NUM_TILT * _numeric_tilt(pool.rows[schema.target.name]),
                          rows)
    elif kind == "prior":
        idx = _prior_classes(rng, y.astype(np.int64), rows, positive_rate, len(schema.classes))
    else:  # none, new-category
        idx = _draw(rng, len(y), rows)

    out = pool.rows.iloc[idx].reset_index(drop=True).astype(object)
    _new_keys(pool, schema, out, rng)
    if kind == "new-category":
        spec = specs[0]
        new_value = _new_category(spec)
        replaced = int(round(share * rows))
        at = rng.choice(rows, size=replaced, replace=False)
        out.loc[np.sort(at), spec.name] = new_value
    text = raw_text(out, schema)
    body = text.splitlines()[1:]
    if schema.numeric_target:
        measure, before, after = "target mean", float(y.mean()), float(y[idx].mean())
    else:
        measure = f"share of {schema.classes[1]!r}"
        before, after = float(np.mean(y == 1)), float(np.mean(y[idx] == 1))
    return SimBatch(kind=kind, text=text, rows=rows, distinct=len(set(body)),
                    target_measure=measure, target_value=after, source_target_value=before,
                    columns=[s.name for s in specs], shifts=shifts, replaced=replaced,
                    new_category=new_value)


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
    """Build a simulated batch from the project's curated ``source`` rows (see
    :func:`build_batch`) and write it into the lake under ``<seq>-sim-<kind>`` (or
    ``<seq>-<batch_name>``); returns the batch name and the batch."""
    if kind not in KINDS:  # before reading any data
        raise TarnError(f"unknown drift kind {kind!r}", f"use one of {', '.join(KINDS)}")
    pool = load_pool(params, root, source)
    sim = build_batch(pool, params.schema, kind, rows, seed, columns, strength, positive_rate,
                      share)
    return write(params, root, sim, batch_name), sim
