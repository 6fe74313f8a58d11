"""The train stage: refit the best configuration on train + validation, log the whole sklearn
Pipeline (normalization + XGBClassifier) to MLflow, register it with lineage tags.

The model with the other mitigation setting is fitted too (same hyperparameters) and saved
beside it, so the evaluate stage can show the cost and gain of mitigation side by side.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tarn.config import Params
from tarn.errors import TarnError
from tarn.features import build_preprocessor, input_schema, to_model_frame
from tarn.io import atomic_dir, staged
from tarn.prepare import SplitData, load_split
from tarn.snapshot import load_manifest
from tarn.tune import BEST

# skops (MLflow's safe default format) must be told these types are expected in the file.
TRUSTED_TYPES = ["numpy.dtype", "xgboost.core.Booster", "xgboost.sklearn.XGBClassifier"]
MODEL_DIR = "model"
COMPARATOR_DIR = "comparator"
TRAIN_JSON = "train.json"


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    version: str
    tags: dict


def schema_hash(params: Params) -> str:
    """Fingerprint of the model's input contract (used to refuse mismatched retraining)."""
    s = input_schema(params.schema, params.prepare)
    return hashlib.sha256(json.dumps(s.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def model_params(best: dict, params: Params) -> dict:
    rounds = max(1, round((best["best_iteration"] + 1) * params.train.refit_rounds_scale))
    return {**best["params"], "n_estimators": rounds, "tree_method": "hist",
            "n_jobs": params.train.n_jobs, "random_state": params.tune.seed,
            "eval_metric": "logloss"}


def fit_pipeline(data: SplitData, weight: np.ndarray | None, mparams: dict, params: Params,
                 client=None) -> Pipeline:
    """Fit normalization then XGBoost (locally, or with xgboost.dask when a client is given)
    and assemble the fitted Pipeline that ships as one model."""
    from xgboost import XGBClassifier

    from tarn.parallel import fit_xgb_dask

    pre = build_preprocessor(params.schema, params.prepare).fit(data.X)
    z = pre.transform(data.X)
    if client is not None:
        clf = fit_xgb_dask(client, z, data.y, weight, mparams)
    else:
        clf = XGBClassifier(**mparams).fit(z, data.y, sample_weight=weight)
    return Pipeline([("pre", pre), ("model", clf)])


def training_data(params: Params, root: Path) -> SplitData:
    parts = [load_split(params, root, s) for s in ("train", "valid")]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    weights = [p.weight for p in parts]
    w = np.concatenate(weights) if all(x is not None for x in weights) else None
    return SplitData(frame, to_model_frame(frame, params.schema, params.prepare),
                     np.concatenate([p.y for p in parts]), w)


def signature(params: Params, pipe: Pipeline, sample: pd.DataFrame):
    """Inputs from the contract; outputs from what the Pipeline really returns."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    proba = np.asarray(pipe.predict_proba(sample))
    out = Schema([TensorSpec(proba.dtype, (-1, proba.shape[1]))])
    return ModelSignature(inputs=input_schema(params.schema, params.prepare), outputs=out)


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


def run(params: Params, root: Path) -> TrainResult:
    from tarn.parallel import dask_client
    from tarn.tracking import git_commit, params_hash

    models = root / params.paths.models
    best_path = models / BEST
    if not best_path.is_file():
        raise TarnError(f"{best_path}: no tuning result", "run `tarn tune` (or dvc repro)")
    best = json.loads(best_path.read_text())
    data = training_data(params, root)
    mparams = model_params(best, params)
    mitigated = params.bias.mitigation == "reweighing"
    if data.weight is None:
        raise TarnError("reweighing weights missing beside the splits", "run `tarn prepare`")

    def fit_both(client=None) -> tuple[Pipeline, Pipeline]:
        main = fit_pipeline(data, data.weight if mitigated else None, mparams, params, client)
        other = fit_pipeline(data, None if mitigated else data.weight, mparams, params, client)
        return main, other

    if params.train.distributed:
        with dask_client(params.compute) as client:
            pipe, comparator = fit_both(client)
    else:
        pipe, comparator = fit_both()

    example = data.X.head(5)
    sig = signature(params, pipe, data.X.head(200))
    manifest = load_manifest(root / params.paths.snapshot)
    tags = {
        "tarn.git_commit": git_commit(root),
        "tarn.snapshot_hash": manifest["hash"],
        "tarn.params_hash": params_hash(params, ("schema", "etl", "prepare", "bias", "tune",
                                                 "train")),
        "tarn.schema_hash": schema_hash(params),
        "tarn.train_rows": str(len(data.y)),
        "tarn.tune_run_id": best["parent_run_id"],
        "tarn.mitigation": params.bias.mitigation,
        "tarn.batches": ",".join(sorted(data.frame["batch"].unique())),
        "tarn.kind": "full",
    }
    reg = log_and_register(params, root, pipe, tags, "train", mparams,
                           {"train_rows": len(data.y)}, example, sig)
    result = {**reg, "tags": tags, "params": mparams}
    with atomic_dir(models / MODEL_DIR) as tmp:
        shutil.rmtree(tmp)
        save_local(pipe, tmp, sig, example)
    with atomic_dir(models / COMPARATOR_DIR) as tmp:
        shutil.rmtree(tmp)
        save_local(comparator, tmp, sig, example)
    with staged() as st:
        st.json(models / TRAIN_JSON, result)
    return TrainResult(reg["run_id"], reg["model_uri"], reg["version"], tags)


def log_and_register(params: Params, root: Path, pipe: Pipeline, tags: dict, run_name: str,
                     logged_params: dict, metrics: dict, example: pd.DataFrame,
                     sig=None) -> dict:
    """Log the Pipeline as an MLflow model in a new run and register it as a new version
    carrying ``tags`` (one call: no version without its lineage). Training and retraining
    both register through here."""
    import mlflow

    from tarn.tracking import connect, quiet_mlflow

    tracking = connect(params.mlflow, root)
    sig = sig or signature(params, pipe, example)
    with quiet_mlflow(), mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({**tags, "tarn.stage": run_name})
        mlflow.log_params(dict(logged_params))
        mlflow.log_metrics(metrics)
        info = mlflow.sklearn.log_model(
            pipe, name="model", signature=sig, input_example=example.head(5),
            pyfunc_predict_fn="predict_proba", skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=pip_requirements())
        mv = mlflow.register_model(info.model_uri, tracking.registered_model, tags=tags)
    return {"run_id": run.info.run_id, "model_uri": info.model_uri,
            "registered_model": tracking.registered_model, "version": str(mv.version)}
