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

from tarn.config import PrepareConfig, SchemaConfig

MISSING_CATEGORY = "missing"


def feature_columns(schema: SchemaConfig, cfg: PrepareConfig) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model features, in contract order."""
    cols = [c for c in schema.columns if c.name not in cfg.exclude_features]
    return [c.name for c in cols if c.numeric], [c.name for c in cols if not c.numeric]


def to_model_frame(df: pd.DataFrame, schema: SchemaConfig, cfg: PrepareConfig) -> pd.DataFrame:
    """The model's input frame: numeric features as float64 (an integer column may be missing at
    serving time), categoricals as object with NaN for missing. Other columns are dropped."""
    num, cat = feature_columns(schema, cfg)
    missing = [c for c in num + cat if c not in df.columns]
    if missing:
        raise KeyError(f"input lacks feature column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for c in num:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in cat:
        s = df[c].astype(object)
        out[c] = s.where(s.notna(), np.nan)
    return out


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
    cat_steps = [
        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
        ("onehot", onehot),
    ]
    return ColumnTransformer(
        [("num", Pipeline(num_steps), num), ("cat", Pipeline(cat_steps), cat)],
        remainder="drop",
        verbose_feature_names_out=False,
    )
