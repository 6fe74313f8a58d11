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

# the stage reports (file names and typed contents) live in core/reports.py, part of the catalog
from tarn.core.reports import (  # noqa: F401
    BEST,
    BIAS_DETAIL,
    BIAS_HTML,
    BIAS_REPORT,
    ETL_REPORT,
    EVALUATE_REPORT,
    EVALUATION_HTML,
    FAIRNESS_REPORT,
    MONITOR_REPORT,
    PREPARE_REPORT,
    RETRAIN_REPORT,
    TRAIN_JSON,
    TUNE_REPORT,
    BiasReport,
    EtlCounts,
    EtlReport,
    EvaluateReport,
    FeatureBias,
    PrepareReport,
    ScoresOnValidation,
    TrainInfo,
    TuneSummary,
)
from tarn.errors import LakeError, TarnError

# What each dvc.yaml stage reads (its ``READS``: the params keys it may see, exactly its dvc.yaml
# ``params``; tests/unit/test_architecture.py checks both), in pipeline order. Declared here,
# below the stages, so that lineage can be derived from them: a model's params hash covers
# the reads of every stage up to the one that fitted it (``lineage_keys``).
# the params keys the feature definition (core/features.py) reads: every stage that builds
# features declares them
FEATURES = ("prepare.exclude_features", "prepare.numeric_scaler", "prepare.max_categories",
            "prepare.onehot_max_values", "prepare.min_category_rows")
STAGE_READS: dict[str, tuple[str, ...]] = {
    "snapshot": ("lake.url", "lake.include"),
    "etl": ("schema", "etl"),
    "prepare": ("schema", "prepare.test_split", "prepare.test_batches", "prepare.test_latest",
                "prepare.valid_fraction", "prepare.valid_split", "prepare.seed", "bias"),
    "tune": ("schema", "tune", "bias.mitigation", *FEATURES),
    "train": ("schema", "train", "tune.seed", "bias.mitigation", "bias.reweighing_features",
              "bias.min_group_rows", "bias.mitigation_policy", "bias.max_quality_cost",
              "mlflow.registered_model", *FEATURES),
    # the decision threshold is the model's own (its card): train.threshold is not read here
    "evaluate": ("schema", "evaluate", "bias.mitigation", "bias.reweighing_features",
                 "bias.min_group_rows", *FEATURES),
}


def lineage_keys(stage: str, *extra: str) -> tuple[str, ...]:
    """The params keys that shaped what ``stage`` makes: the reads of every stage from etl to
    it (the lake's location is not a param of the result: the snapshot hash is), plus
    ``extra`` (``retrain`` for a continuation), without duplicates or keys inside a section
    already listed."""
    order = list(STAGE_READS)
    keys = [k for s in order[order.index("etl"):order.index(stage) + 1]
            for k in STAGE_READS[s]] + list(extra)
    whole = set(keys)
    return tuple(sorted({k for k in keys
                         if not any(k.startswith(f"{w}.") for w in whole if w != k)}))


# snapshot stage: <paths.snapshot>/
MANIFEST = "manifest.json"
SNAPSHOT_FILES = "files"
# etl stage: <paths.curated>/
CURATED = "table.parquet"
QUARANTINE = "quarantine.parquet"
# prepare stage: <paths.prepared>/
SPLITS = ("train", "valid", "test")
SPLIT_FILE = "{split}.parquet"
WEIGHTS = "{split}_weights.parquet"
# tune stage: <paths.models>/ (and best_params.json, tune.json)
# both models' validation scores (reweighed, unmitigated): the train stage's mitigation check
VALIDATION_SCORES = "validation_scores.parquet"
TUNE_TRIALS = "plots/tune_trials.csv"  # <paths.reports>/
# train stage: <paths.models>/ (and train.json)
MODEL_DIR = "model"
COMPARATOR_DIR = "comparator"
# evaluate stage: <paths.reports>/ (and evaluate.json, fairness.json, evaluation.html)
PLOTS_DIR = "plots"
EVIDENTLY_DIR = "evidently"


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


def load_best(params: Params, root: Path) -> TuneSummary:
    """The tune stage's best configuration."""
    path = _need(root / params.paths.models / BEST, "tuning result",
                 "run `tarn tune` (or dvc repro)")
    return TuneSummary.from_json(json.loads(path.read_text()))


def load_validation_scores(params: Params, root: Path) -> pd.DataFrame | None:
    """The tune stage's validation scores of the reweighed and the unmitigated model (columns
    ``row``, ``mitigated_<j>``, ``unmitigated_<j>``); None when absent or empty (nothing was
    compared)."""
    path = root / params.paths.models / VALIDATION_SCORES
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    return None if df.empty else df


def load_train_info(params: Params, root: Path) -> TrainInfo:
    """What the train stage registered (run id, version, model URI)."""
    path = _need(root / params.paths.models / TRAIN_JSON, "trained model",
                 "run `tarn train` (or dvc repro)")
    return TrainInfo.from_json(json.loads(path.read_text()))


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
    y = target.astype(np.float64) if params.schema.numeric_target else target.astype(int)
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
