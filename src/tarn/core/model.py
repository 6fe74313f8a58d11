"""How a fitted Pipeline becomes an MLflow model: signature, requirements, safe format.

Training, retraining and the registry all package models through here, so every version
has the same format (skops, with tarn's own list of trusted types) and the same contract.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tarn.config import PrepareConfig, SchemaConfig
from tarn.core.features import input_schema
from tarn.errors import TarnError

# skops (MLflow's safe default format) must be told these types are expected in the file.
TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]


def schema_hash(schema: SchemaConfig, prepare: PrepareConfig) -> str:
    """Fingerprint of the model's input contract (used to refuse mismatched retraining)."""
    s = input_schema(schema, prepare)
    return hashlib.sha256(json.dumps(s.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def signature(schema: SchemaConfig, prepare: PrepareConfig, pipe: Pipeline,
              sample: pd.DataFrame):
    """Inputs from the contract; outputs from what the Pipeline really returns."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    proba = np.asarray(pipe.predict_proba(sample))
    out = Schema([TensorSpec(proba.dtype, (-1, proba.shape[1]))])
    return ModelSignature(inputs=input_schema(schema, prepare), outputs=out)


def pip_requirements() -> list[str]:
    import mlflow.sklearn
    import skops
    import xgboost

    return [*mlflow.sklearn.get_default_pip_requirements(), f"xgboost-cpu=={xgboost.__version__}",
            f"skops=={skops.__version__}", f"pandas=={pd.__version__}"]


def save_local(pipe: Pipeline, path: Path, sig, example: pd.DataFrame) -> None:
    """An MLflow model folder (skops format) that later stages load without the registry."""
    import mlflow.sklearn

    mlflow.sklearn.save_model(pipe, str(path), signature=sig, input_example=example,
                              pyfunc_predict_fn="predict_proba", skops_trusted_types=TRUSTED_TYPES,
                              pip_requirements=pip_requirements())


def load_local(path: Path) -> Pipeline:
    import mlflow.sklearn

    if not (path / "MLmodel").is_file():
        raise TarnError(f"{path}: no trained model", "run `tarn train` (or dvc repro)")
    return mlflow.sklearn.load_model(str(path))
