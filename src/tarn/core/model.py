"""How a fitted Pipeline becomes an MLflow model, and the only way one is loaded back.

Training, retraining and the registry all package models through here, so every version
has the same format (skops, with tarn's own list of trusted types) and the same contract.

Loading trusts nothing in the model's own files: MLflow's loader reads the serialization
format and the skops trusted types from the version's ``MLmodel`` and accepts pickle, so
anyone who can register a version could run code wherever it is loaded. :func:`load_trusted`
refuses anything but a skops file with no bundled code whose every type is in tarn's
allow-list, and never hands the file to MLflow or pickle.
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

# skops (MLflow's safe default format) must be told these types are expected in the file;
# this list is also the allow-list enforced at load time (skops trusts scikit-learn's own).
TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]


class UntrustedModel(TarnError):
    """A model folder tarn refuses to load (its format could run code)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "register the model with `tarn train` (skops format, no "
                                  "bundled code); tarn never loads pickled models")


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


def check_trusted(model_dir: Path) -> Path:
    """The skops file of an MLflow model folder, if tarn may load it; else UntrustedModel.

    Reads only YAML and the skops file's type listing: nothing in the folder is executed."""
    import skops.io
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        raise UntrustedModel(f"{model_dir.name}: no MLmodel file")
    try:
        flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as e:
        raise UntrustedModel(f"MLmodel is not readable YAML ({e})") from None
    sk = flavors.get("sklearn")
    if not isinstance(sk, dict):
        raise UntrustedModel(f"not a scikit-learn model (flavors: {sorted(flavors)})")
    fmt = sk.get("serialization_format")
    if fmt != "skops":
        raise UntrustedModel(f"serialized as {fmt!r}, not skops: loading it could run code")
    pyfunc = flavors.get("python_function") or {}
    if sk.get("code") or pyfunc.get("code") or (model_dir / "code").exists():
        raise UntrustedModel("the model bundles Python code, which loading would import")
    name = str(sk.get("pickled_model") or "")
    path = (model_dir / name).resolve()
    if not name.endswith(".skops") or path.parent != model_dir.resolve() or not path.is_file():
        raise UntrustedModel(f"model file {name!r} is not a .skops file inside the model folder")
    try:
        found = set(skops.io.get_untrusted_types(file=path))
    except Exception as e:  # noqa: BLE001 - a malformed archive is refused, not raised through
        raise UntrustedModel(f"{name}: not a readable skops file ({e})") from None
    extra = sorted(found - set(TRUSTED_TYPES))
    if extra:
        raise UntrustedModel(f"{name} holds types outside tarn's allow-list: {extra}")
    return path


def load_trusted(model_dir: Path) -> Pipeline:
    """The Pipeline in an MLflow model folder, loaded with skops and tarn's allow-list only."""
    import skops.io

    model = skops.io.load(check_trusted(model_dir), trusted=TRUSTED_TYPES)
    if not isinstance(model, Pipeline):
        raise UntrustedModel(f"the model is a {type(model).__name__}, not a Pipeline")
    return model


def load_local(path: Path) -> Pipeline:
    if not (path / "MLmodel").is_file():
        raise TarnError(f"{path}: no trained model", "run `tarn train` (or dvc repro)")
    return load_trusted(path)
