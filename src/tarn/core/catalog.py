"""The catalog: every file a stage writes and a later step reads, named once, with its reader.

Stages never import each other; what one writes and another reads is named here (Kedro's
catalog idea). Folders come from ``params.paths``; the file names inside them are fixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import Params
from tarn.errors import LakeError, TarnError

# snapshot stage: <paths.snapshot>/
MANIFEST = "manifest.json"
SNAPSHOT_FILES = "files"
# etl stage: <paths.curated>/ and <paths.reports>/
CURATED = "table.parquet"
QUARANTINE = "quarantine.parquet"
ETL_REPORT = "etl.json"
# prepare stage: <paths.prepared>/ and <paths.reports>/
SPLITS = ("train", "valid", "test")
SPLIT_FILE = "{split}.parquet"
WEIGHTS = "{split}_weights.parquet"
PREPARE_REPORT = "prepare.json"
BIAS_REPORT = "bias.json"
BIAS_DETAIL = "bias_detail.json"
BIAS_HTML = "bias.html"
# tune stage: <paths.models>/ and <paths.reports>/
BEST = "best_params.json"
# both models' validation scores (reweighed, unmitigated): the train stage's mitigation check
VALIDATION_SCORES = "validation_scores.parquet"
TUNE_REPORT = "tune.json"
TUNE_TRIALS = "plots/tune_trials.csv"
# train stage: <paths.models>/
MODEL_DIR = "model"
COMPARATOR_DIR = "comparator"
TRAIN_JSON = "train.json"
# evaluate stage: <paths.reports>/
EVALUATE_REPORT = "evaluate.json"
FAIRNESS_REPORT = "fairness.json"
EVALUATION_HTML = "evaluation.html"
PLOTS_DIR = "plots"
EVIDENTLY_DIR = "evidently"
# tarn monitor and tarn retrain: <monitor.reports>/ (read by tarn report)
MONITOR_REPORT = "monitor.json"
RETRAIN_REPORT = "retrain.json"


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise TarnError(f"{path}: {what} missing", fix)
    return path


def load_manifest(snapshot_dir: Path) -> dict:
    """The snapshot's manifest (batch, path, size, sha256, rows per file)."""
    path = snapshot_dir / MANIFEST
    if not path.is_file():
        raise LakeError(f"{path}: snapshot manifest missing", "run `tarn snapshot` (or dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def curated_table(params: Params, root: Path) -> Path:
    return _need(root / params.paths.curated / CURATED, "curated table",
                 "run `tarn etl` (or dvc repro)")


def load_best(params: Params, root: Path) -> dict:
    """The tune stage's best configuration."""
    path = _need(root / params.paths.models / BEST, "tuning result",
                 "run `tarn tune` (or dvc repro)")
    return json.loads(path.read_text())


def load_validation_scores(params: Params, root: Path) -> pd.DataFrame | None:
    """The tune stage's validation scores of the reweighed and the unmitigated model (columns
    ``row``, ``mitigated_<j>``, ``unmitigated_<j>``); None when absent or empty (nothing was
    compared)."""
    path = root / params.paths.models / VALIDATION_SCORES
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    return None if df.empty else df


def load_train_info(params: Params, root: Path) -> dict:
    """What the train stage registered (run id, version, model URI)."""
    path = _need(root / params.paths.models / TRAIN_JSON, "trained model",
                 "run `tarn train` (or dvc repro)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class SplitData:
    """A prepared split as the model sees it: raw features, labels, reweighing weights."""

    frame: pd.DataFrame  # curated columns (sensitive features and batch included)
    X: pd.DataFrame  # model input (features.to_model_frame)
    y: np.ndarray
    weight: np.ndarray | None  # None for the test split


def load_split(params: Params, root: Path, name: str) -> SplitData:
    """Read one split written by the prepare stage (the reader every later step uses)."""
    from tarn.core.features import to_model_frame

    d = root / params.paths.prepared
    path = _need(d / SPLIT_FILE.format(split=name), "prepared split",
                 "run `tarn prepare` (or dvc repro)")
    df = pd.read_parquet(path)
    wpath = d / WEIGHTS.format(split=name)
    w = pd.read_parquet(wpath)["weight"].to_numpy() if wpath.is_file() else None
    target = df[params.schema.target.name].to_numpy()
    # class indexes for classification; the measured value for regression
    y = target.astype(np.float64) if params.schema.task == "regression" else target.astype(int)
    return SplitData(df, to_model_frame(df, params.schema, params.prepare), y, w)


def split_batches(params: Params, root: Path, name: str) -> list[str]:
    """The lake batches one prepared split holds (only its ``batch`` column is read)."""
    path = _need(root / params.paths.prepared / SPLIT_FILE.format(split=name), "prepared split",
                 "run `tarn prepare` (or dvc repro)")
    return sorted(pd.read_parquet(path, columns=["batch"])["batch"].unique().tolist())


def splits_digest(params: Params, root: Path, names: tuple[str, ...]) -> str:
    """A digest of the rows of prepared splits, in order: what scores computed on them are
    valid for (a full retraining without re-tuning prepares other rows)."""
    import hashlib

    d = root / params.paths.prepared
    frames = [pd.read_parquet(_need(d / SPLIT_FILE.format(split=n), "prepared split",
                                    "run `tarn prepare` (or dvc repro)")) for n in names]
    rows = pd.concat(frames, ignore_index=True)
    return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy()
                          .tobytes()).hexdigest()[:16]
