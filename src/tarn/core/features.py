"""Normalization: the one preprocessing definition that training, serving and the ONNX export
all use, so the model always sees exactly the training-time transform.

It is fitted on the training split only and shipped inside the model Pipeline.

Categorical columns are encoded by their number of distinct training values: up to
``prepare.onehot_max_values``, one-hot (dense: a few dozen columns); above it, one column of
codes (:class:`OrderedCodes`), so a 4,000-value text column costs one column, not 4,000
(dense one-hot of such a column over 218,000 rows took 9.3 GB). The codes are ordered by the
target's smoothed mean per value (binary, regression) or by frequency (multiclass), so a tree
separates high from low values with few splits, as LightGBM's and scikit-learn's native
categorical splits do; values seen in fewer than ``prepare.min_category_rows`` training rows
share the code of unknown values. The fitted encoder is a plain ``OrdinalEncoder`` inside, which
skl2onnx converts (XGBoost's native categorical splits do not export to ONNX).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from tarn.config import ColumnSpec, PrepareConfig, SchemaConfig

MISSING_CATEGORY = "missing"
UNKNOWN_CODE = -1  # the code of a value unseen (or rare) in training


def feature_columns(schema: SchemaConfig, cfg: PrepareConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model features, in contract order: neither the excluded ones
    nor the time key (a raw timestamp is new in every batch)."""
    cols = [c for c in schema.columns
            if c.name not in cfg.exclude_features and c.name != schema.time_key]
    return [c.name for c in cols if c.numeric], [c.name for c in cols if not c.numeric]


def _is_long(spec: ColumnSpec) -> bool:
    """Integer features that can never be missing stay integers; the rest become float64, the
    only numeric type that can hold a missing value."""
    return spec.dtype == "int" and not spec.nullable


def to_model_frame(df: pd.DataFrame, schema: SchemaConfig, cfg: PrepareConfig) -> pd.DataFrame:
    """The model's input frame, typed as the signature says: non-nullable integers as int64,
    other numerics as float64, categoricals as object with NaN for missing. Other columns
    (target, batch, ...) are dropped."""
    num, cat = feature_columns(schema, cfg)
    missing = [c for c in num + cat if c not in df.columns]
    if missing:
        raise KeyError(f"input lacks feature column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for c in num:
        v = pd.to_numeric(df[c], errors="coerce").astype("float64")
        out[c] = v.astype("int64") if _is_long(schema.column(c)) and v.notna().all() else v
    for c in cat:
        s = df[c].astype(object)
        out[c] = s.where(s.notna(), np.nan)
    return out


def input_schema(schema: SchemaConfig, cfg: PrepareConfig):
    """The MLflow input schema, from the contract (not from whatever a sample happened to
    hold): a column is optional exactly when the contract says it may be missing."""
    from mlflow.types import ColSpec, Schema

    num, cat = feature_columns(schema, cfg)
    specs = []
    for c in num + cat:
        spec = schema.column(c)
        kind = "long" if _is_long(spec) else "double" if spec.numeric else "string"
        specs.append(ColSpec(kind, c, required=not spec.nullable))
    return Schema(specs)


class OrderedCodes(TransformerMixin, BaseEstimator):
    """Each categorical column as one column of codes 0..m-1, ordered by the target (see the
    module docstring); rare and unknown values get :data:`UNKNOWN_CODE`.

    ``order``: "target" (mean of y per value, smoothed towards the overall mean with
    ``min_rows`` pseudo-rows) or "frequency" (most frequent first; also used when fitted
    without y). The fitted ``encoder_`` is a plain ``OrdinalEncoder`` (the ONNX export uses it).
    """

    def __init__(self, order: str = "target", min_rows: int = 20) -> None:
        self.order = order
        self.min_rows = min_rows

    def fit(self, X, y=None) -> OrderedCodes:
        frame = pd.DataFrame(np.asarray(X, dtype=object))
        target = None if y is None or self.order != "target" else np.asarray(y, np.float64)
        cats = [_ordered_values(frame[j], target, self.min_rows) for j in frame.columns]
        self.encoder_ = OrdinalEncoder(categories=cats, handle_unknown="use_encoded_value",
                                       unknown_value=UNKNOWN_CODE, dtype=np.float32)
        self.encoder_.fit(frame.to_numpy())
        self.n_features_in_ = frame.shape[1]
        if hasattr(X, "columns"):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def transform(self, X) -> np.ndarray:
        return self.encoder_.transform(np.asarray(X, dtype=object))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if input_features is None:
            input_features = getattr(self, "feature_names_in_",
                                     [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray(input_features, dtype=object)


def _ordered_values(values: pd.Series, target: np.ndarray | None,
                    min_rows: int) -> np.ndarray:
    """Pure: the values kept for codes, in code order (ties broken by the value itself)."""
    counts = values.value_counts(sort=False)
    kept = counts[counts >= min_rows]
    if kept.empty:  # keep the most frequent one so the column still says something
        kept = counts.nlargest(1)
    if target is None:
        order = sorted(kept.index, key=lambda v: (-kept[v], str(v)))
    else:
        sums = pd.Series(target).groupby(values.to_numpy()).sum()
        prior = float(np.mean(target)) if len(target) else 0.0
        score = (sums[kept.index] + prior * min_rows) / (kept + min_rows)
        order = sorted(kept.index, key=lambda v: (float(score[v]), str(v)))
    return np.asarray(order, dtype=object)


def distinct_values(X: pd.DataFrame, schema: SchemaConfig, cols: list[str]) -> dict[str, int]:
    """Distinct values per categorical column (missing counts as one), from the contract's
    category list when it has one, else from the training rows."""
    out = {}
    for c in cols:
        spec = schema.column(c)
        if spec.categories is not None:
            out[c] = len(spec.categories) + int(spec.nullable)
        elif c in X.columns:
            out[c] = int(X[c].nunique(dropna=False))
        else:
            out[c] = 0
    return out


def split_categoricals(schema: SchemaConfig, cfg: PrepareConfig,
                       X: pd.DataFrame | None) -> tuple[list[str], list[str]]:
    """(one-hot, coded) categorical columns: coded when a column has more than
    ``prepare.onehot_max_values`` distinct values (known from ``X``, the training rows, or
    the contract's categories)."""
    _, cat = feature_columns(schema, cfg)
    if X is None:
        known = {c: len(schema.column(c).categories or ()) for c in cat}
    else:
        known = distinct_values(X, schema, cat)
    coded = [c for c in cat if known[c] > cfg.onehot_max_values]
    return [c for c in cat if c not in coded], coded


def build_preprocessor(schema: SchemaConfig, cfg: PrepareConfig,
                       X: pd.DataFrame | None = None) -> ColumnTransformer:
    """Impute (median / a 'missing' category), optionally scale numerics, one-hot categoricals
    with few values and code the others (:class:`OrderedCodes`); ``X``, the training rows,
    tells how many values each column has (else the contract's category lists do).

    Unknown categories at serving time encode as all-zeros (``handle_unknown='ignore'``), or
    fold into the infrequent bucket when ``max_categories`` is set; a coded column gives them
    :data:`UNKNOWN_CODE`.
    """
    num, _ = feature_columns(schema, cfg)
    onehot_cols, coded_cols = split_categoricals(schema, cfg, X)
    num_steps: list = [("impute", SimpleImputer(strategy="median"))]
    if cfg.numeric_scaler == "standard":
        num_steps.append(("scale", StandardScaler()))
    onehot = OneHotEncoder(
        handle_unknown="infrequent_if_exist" if cfg.max_categories else "ignore",
        max_categories=cfg.max_categories,
        sparse_output=False,
        dtype=np.float32,
    )
    # a target mean orders values only for a number or a 0/1 label (K class indexes: by count)
    order = "target" if schema.numeric_target or len(schema.classes) <= 2 else "frequency"
    parts = [("num", Pipeline(num_steps), num),
             ("cat", Pipeline([*_missing_steps(), ("onehot", onehot)]), onehot_cols)]
    if coded_cols:
        parts.append(("codes", Pipeline([*_missing_steps(), (
            "codes", OrderedCodes(order, cfg.min_category_rows))]), coded_cols))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _missing_steps() -> list:
    """Callers send a missing string as NaN (pandas) or None (JSON null); SimpleImputer matches
    one marker, so two impute steps make both mean "missing" rather than an unknown category."""
    return [
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
        ("impute_none", SimpleImputer(missing_values=None, strategy="constant",
                                      fill_value=MISSING_CATEGORY)),
    ]


def design_width(pre: ColumnTransformer) -> int:
    """Columns of the design matrix a fitted preprocessor produces."""
    return len(pre.get_feature_names_out())


def encode(pre: ColumnTransformer, X: pd.DataFrame, progress=None,
           chunk: int = 50_000) -> np.ndarray:
    """``pre.transform(X)`` as float32 (what XGBoost fits on), in chunks: the float64
    intermediate of a whole large table would double the peak. ``progress``: a
    :data:`tarn.core.progress.Progress` callback, advanced per chunk."""
    out = np.empty((len(X), design_width(pre)), dtype=np.float32)
    for i in range(0, len(X), chunk):
        out[i:i + chunk] = pre.transform(X.iloc[i:i + chunk])
        if progress is not None:
            what = f"encoding {len(X):,} rows"
            progress(what, what, min(chunk, len(X) - i), len(X))
    return out
