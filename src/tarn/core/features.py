"""Normalization: the one preprocessing definition that training, serving and the ONNX export
all use, so the model always sees exactly the training-time transform.

It is fitted on the training split only and shipped inside the model Pipeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tarn.config import ColumnSpec, PrepareConfig, SchemaConfig

MISSING_CATEGORY = "missing"
# the params keys the feature definition reads: every stage that builds features declares them
FEATURES = ("prepare.exclude_features", "prepare.numeric_scaler", "prepare.max_categories")


def feature_columns(schema: SchemaConfig, cfg: PrepareConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model features, in contract order."""
    cols = [c for c in schema.columns if c.name not in cfg.exclude_features]
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


def build_preprocessor(schema: SchemaConfig, cfg: PrepareConfig) -> ColumnTransformer:
    """Impute (median / a 'missing' category), optionally scale numerics, one-hot categoricals.

    Unknown categories at serving time encode as all-zeros (``handle_unknown='ignore'``), or
    fold into the infrequent bucket when ``max_categories`` is set.
    """
    num, cat = feature_columns(schema, cfg)
    num_steps: list = [("impute", SimpleImputer(strategy="median"))]
    if cfg.numeric_scaler == "standard":
        num_steps.append(("scale", StandardScaler()))
    onehot = OneHotEncoder(
        handle_unknown="infrequent_if_exist" if cfg.max_categories else "ignore",
        max_categories=cfg.max_categories,
        sparse_output=False,
        dtype=np.float32,
    )
    # Callers send a missing string as NaN (pandas) or None (JSON null); SimpleImputer matches
    # one marker, so two impute steps make both mean "missing" rather than an unknown category.
    cat_steps = [
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
        ("impute_none", SimpleImputer(missing_values=None, strategy="constant",
                                      fill_value=MISSING_CATEGORY)),
        ("onehot", onehot),
    ]
    return ColumnTransformer(
        [("num", Pipeline(num_steps), num), ("cat", Pipeline(cat_steps), cat)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
