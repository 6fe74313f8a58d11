"""Typed configuration: the only module that reads ``params.yaml``.

The file is validated once at the edge (the CLI or a test) and passed down as objects, so a typo
in a key or a bad range fails before any work starts, with the offending key named.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tarn.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- paths
class Paths(_Strict):
    """Where each stage reads and writes, relative to the project root."""

    snapshot: str = "data/snapshot"
    curated: str = "data/curated"
    prepared: str = "data/prepared"
    models: str = "models"
    reports: str = "reports"


# --------------------------------------------------------------------------- lake
class SeedConfig(_Strict):
    """How ``tarn lake seed`` cuts the bundled UCI Adult files into batches."""

    train_batches: int = Field(4, ge=1, le=100)
    test_batches: int = Field(2, ge=1, le=100)


class LakeConfig(_Strict):
    url: str = "data/lake"
    include: list[str] = Field(default_factory=lambda: ["*"])
    seed: SeedConfig = SeedConfig()
    # passed to fsspec for remote URLs (e.g. {anon: true}); endpoint and credentials come from
    # the usual AWS variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...)
    storage_options: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- schema
class ColumnSpec(_Strict):
    """One column of the curated table and the rules a raw value must meet to get there."""

    name: str
    dtype: Literal["int", "float", "category", "string"]
    aliases: list[str] = Field(default_factory=list)
    nullable: bool = False
    # the model cannot answer without it: implies nullable: false, so the ETL quarantines a
    # missing value and the server, the edge runner and the page refuse a row that lacks it
    # (tarn.core.columns) instead of imputing it
    required: bool = False
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        """``required: true`` wins over a ``nullable: true`` (``tarn init`` writes one for a
        column with missing values; declaring it required is the user's answer to them)."""
        if isinstance(data, dict) and data.get("required") is True:
            return {**data, "nullable": False}
        return data

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        if self.categories is not None and self.dtype != "category":
            raise ValueError(f"column {self.name!r}: categories only apply to dtype 'category'")
        if (self.min is not None or self.max is not None) and self.dtype not in ("int", "float"):
            raise ValueError(f"column {self.name!r}: min/max only apply to numeric dtypes")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} > max {self.max}")
        return self

    @property
    def numeric(self) -> bool:
        return self.dtype in ("int", "float")


class TargetSpec(_Strict):
    """The column the model predicts. Classification (``schema.task`` binary or multiclass):
    ``mapping`` maps each raw label to its class index (binary: 0/1, multiclass: 0..K-1; several
    raw spellings may share an index; the first spelling names the class). Regression: no
    mapping, the raw value is a number, optionally checked against ``min``/``max``."""

    name: str
    aliases: list[str] = Field(default_factory=list)
    mapping: dict[str, int] = Field(default_factory=dict)
    min: float | None = None
    max: float | None = None


TASKS = ("binary", "multiclass", "regression")
# tasks whose target is a measured number (the others': a class index); the data side (ETL,
# splits, simulated batches) reads only this, so it does not depend on the task modules
NUMERIC_TARGET_TASKS = frozenset({"regression"})
# the gate metrics promote.metric may name, per task: each task module's METRICS (the first
# is its loss), which own them with which are higher-is-better (tests/unit/test_task.py)
METRICS_BY_TASK = {
    "binary": ("logloss", "roc_auc", "accuracy", "f1_macro"),
    "multiclass": ("logloss", "accuracy", "f1_macro"),
    "regression": ("rmse", "mae", "r2"),
}


class SchemaConfig(_Strict):
    """The dataset contract the ETL enforces."""

    name: str = "dataset"
    # what the model predicts: a yes/no label, one of K classes, or a number
    task: Literal["binary", "multiclass", "regression"] = "binary"
    missing_values: list[str] = Field(default_factory=lambda: ["?", ""])
    extra_columns: Literal["error", "ignore"] = "error"
    unknown_categories: Literal["quarantine", "keep"] = "quarantine"
    target: TargetSpec
    sensitive: list[str] = Field(default_factory=list)
    # columns that identify a row (an id, or id + time): duplicates are judged by them; without
    # a key identical rows are different people or events and are all kept (etl.dedup: auto)
    key: list[str] = Field(default_factory=list)
    # the column that says when a row happened (a string column of dates or date-times): the
    # ETL quarantines a row whose time does not parse, `tarn lake add` says when a batch's
    # times overlap an earlier batch's, and the model never sees it as a feature (a raw
    # timestamp is new in every batch)
    time_key: str | None = None
    columns: list[ColumnSpec]

    @model_validator(mode="after")
    def _check(self) -> SchemaConfig:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate column names: {sorted(dupes)}")
        unknown = set(self.sensitive) - set(names)
        if unknown:
            raise ValueError(f"sensitive features not among columns: {sorted(unknown)}")
        unknown = set(self.key) - set(names)
        if unknown:
            raise ValueError(f"key columns not among columns: {sorted(unknown)}")
        if self.target.name in names:
            raise ValueError(f"target {self.target.name!r} must not also be a feature column")
        if self.time_key is not None and self.time_key not in names:
            raise ValueError(f"time_key {self.time_key!r} is not among columns")
        if self.time_key is not None and self.column(self.time_key).dtype != "string":
            raise ValueError(f"time_key {self.time_key!r} must be a string column of dates "
                             f"(it is {self.column(self.time_key).dtype})")
        self._check_target()
        return self

    def _check_target(self) -> None:
        t, codes = self.target, set(self.target.mapping.values())
        if self.numeric_target:
            if t.mapping:
                raise ValueError("schema.target.mapping: a regression target is a number, not "
                                 "a label: remove the mapping, or set schema.task to binary or "
                                 "multiclass")
            if t.min is not None and t.max is not None and t.min > t.max:
                raise ValueError(f"schema.target: min {t.min} > max {t.max}")
            return
        if t.min is not None or t.max is not None:
            raise ValueError("schema.target.min/max apply to a regression target only")
        if not t.mapping:
            raise ValueError(f"schema.target.mapping is empty: a {self.task} target maps each "
                             "raw label to a class index")
        if self.task == "binary":
            if codes - {0, 1}:
                raise ValueError("schema.target.mapping must map raw labels to 0 or 1 for a "
                                 "binary task (schema.task: multiclass for more classes)")
            if codes != {0, 1}:
                raise ValueError(f"schema.target.mapping has one class only ({sorted(codes)}): "
                                 "map some raw labels to 0 and some to 1")
            return
        if codes != set(range(len(codes))) or len(codes) < 3:
            raise ValueError(f"schema.target.mapping must map raw labels to the class indexes "
                             f"0..K-1 with K >= 3 for a multiclass task (got {sorted(codes)})")

    @property
    def numeric_target(self) -> bool:
        """The target is a measured number (regression), not a class index."""
        return self.task in NUMERIC_TARGET_TASKS

    @property
    def classes(self) -> list[str]:
        """Class names by index (the first raw label mapped to each); [] for regression."""
        names: dict[int, str] = {}
        for raw, code in self.target.mapping.items():
            names.setdefault(code, raw)
        return [names[i] for i in sorted(names)]

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


# --------------------------------------------------------------------------- stages
class EtlConfig(_Strict):
    chunk_rows: int = Field(50_000, ge=1)
    # auto: by schema.key across batches when a key is declared, else off; global / batch:
    # exact rows across batches / within a batch (first seen wins); off: keep every row
    dedup: Literal["auto", "global", "batch", "off"] = "auto"


class PrepareConfig(_Strict):
    # batches: the batches matching test_batches (a fixed, published split); latest: the
    # test_latest newest batches by batch order, so the window moves forward with every batch
    # a full retraining sees (a forward-in-time test, champion and challenger on the same rows)
    test_split: Literal["batches", "latest"] = "batches"
    test_batches: list[str] = Field(default_factory=lambda: ["*test*"])
    test_latest: int = Field(1, ge=1)
    valid_fraction: float = Field(0.2, gt=0, lt=1)
    # random: a label-stratified sample; latest: the newest rows by batch order (forward in
    # time, for batches that follow time: the search then picks what generalizes forward)
    valid_split: Literal["random", "latest"] = "random"
    seed: int = 42
    exclude_features: list[str] = Field(default_factory=list)
    numeric_scaler: Literal["none", "standard"] = "none"
    max_categories: int | None = Field(None, ge=2)
    # a categorical with more distinct training values than this is encoded as one column of
    # codes ordered by the target, not one-hot (memory: rows x values); see core/features
    onehot_max_values: int = Field(32, ge=2)
    # values seen in fewer training rows share the code of unknown values
    min_category_rows: int = Field(20, ge=1)


class BiasConfig(_Strict):
    privileged: dict[str, str] = Field(default_factory=dict)
    mitigation: Literal["none", "reweighing"] = "none"
    reweighing_features: list[str] = Field(default_factory=list)
    disparate_impact_threshold: float = Field(0.8, gt=0, le=1)
    # groups of the test split smaller than this are shown but do not make the fairness gap
    # (a handful of rows gives any rate by chance)
    min_group_rows: int = Field(30, ge=1)
    # reweighing is compared with no mitigation on validation (the train stage): compare =
    # register the unmitigated model when reweighing widens the fairness gap of a reweighing
    # feature or raises the validation loss by more than max_quality_cost (relative: 0.05 =
    # 5 %), and record why; always = register the reweighed model anyway (the run says so)
    mitigation_policy: Literal["compare", "always"] = "compare"
    max_quality_cost: float = Field(0.05, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BiasConfig:
        if self.mitigation == "reweighing" and not self.reweighing_features:
            raise ValueError("bias.reweighing_features is empty but bias.mitigation is "
                             "reweighing: name the sensitive feature(s) to reweigh by, or set "
                             "mitigation: none")
        return self


# --------------------------------------------------------------------------- training
# XGBClassifier hyperparameters the search may tune (a typo here fails before any trial runs).
TUNABLE = {
    "learning_rate", "max_depth", "min_child_weight", "subsample", "colsample_bytree",
    "colsample_bylevel", "reg_alpha", "reg_lambda", "gamma", "max_bin", "max_delta_step",
    "max_leaves",
}
INTEGER_PARAMS = {"max_depth", "max_bin", "max_leaves"}
# besides the tunable ones, a warm start may fix how trees grow
WARM_ONLY = {"grow_policy": ("depthwise", "lossguide")}


class Dimension(_Strict):
    """One hyperparameter's prior: hyperopt's uniform / loguniform / quniform / choice."""

    dist: Literal["uniform", "loguniform", "quniform", "qloguniform", "choice"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    options: list[float | int | str] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if self.dist == "choice":
            if not self.options:
                raise ValueError("choice needs a non-empty 'options' list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.dist} needs low < high (got {self.low}, {self.high})")
        if self.dist in ("loguniform", "qloguniform") and self.low <= 0:
            raise ValueError(f"{self.dist} needs low > 0 (got {self.low})")
        if self.dist.startswith("q") and (self.q is None or self.q <= 0):
            raise ValueError(f"{self.dist} needs q > 0")
        return self


DEFAULT_LEARNING_RATE = 0.3  # XGBoost's, for a space that does not tune it
# XGBoost's defaults for the tunable parameters: the first warm start, and the values a warm
# start that names only some parameters is completed with
XGB_DEFAULTS = {"learning_rate": 0.3, "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0,
                "colsample_bytree": 1.0, "colsample_bylevel": 1.0, "reg_alpha": 0.0,
                "reg_lambda": 1.0, "gamma": 0.0, "max_bin": 256, "max_delta_step": 0.0,
                "max_leaves": 0}
# rounds x learning rate: a fit's round cap under `n_estimators: auto` is RATE_ROUNDS / rate
# (0.3 -> 1,667, 0.1 -> 5,000), above what early stopping needed on the tables tried (a
# 300,000-row flights table still improved at 1,000 rounds of 0.1: 100 was too few); a
# cap the user sets must allow at least MIN_RATE_ROUNDS / (the lowest rate)
RATE_ROUNDS = 500.0
MIN_RATE_ROUNDS = 20.0
WARM_STARTS: list[dict[str, float | str]] = [
    {},  # XGBoost's defaults
    # scikit-learn's HistGradientBoosting defaults, in XGBoost's terms (31 leaves, rate 0.1)
    {"learning_rate": 0.1, "grow_policy": "lossguide", "max_leaves": 31, "max_depth": 0,
     "min_child_weight": 3, "reg_lambda": 0},
    {"learning_rate": 0.1, "max_depth": 6, "min_child_weight": 3, "subsample": 0.8,
     "colsample_bytree": 0.8},
    {"learning_rate": 0.05, "max_depth": 8, "min_child_weight": 5, "subsample": 0.8,
     "colsample_bytree": 0.7, "reg_lambda": 5},
    {"learning_rate": 0.1, "max_depth": 4, "subsample": 0.9, "colsample_bytree": 0.9},
]


class TuneConfig(_Strict):
    max_evals: int = Field(50, ge=1)  # configurations tried (refits on more rows not counted)
    # seconds for the whole search, in-flight fits included; auto: from rows x columns and
    # cores (tarn.core.search_plan.default_budget)
    timeout_s: Literal["auto"] | float = "auto"
    parallelism: int = Field(1, ge=1)
    seed: int = 42
    # round cap per fit; auto: tied to the fit's learning rate (RATE_ROUNDS / rate)
    n_estimators: Literal["auto"] | int = "auto"
    early_stopping_rounds: int = Field(50, ge=1)
    n_jobs: int = Field(2, ge=1)  # threads per fit when trials run one at a time
    # multi-fidelity: new configurations fit on a sample of at least this many rows first;
    # the best 1/fidelity_factor of each rung refit on fidelity_factor times more rows
    min_fidelity_rows: int = Field(20_000, ge=100)
    # small tables (train + valid rows <= cv_max_rows): each fit is judged by k-fold
    # cross-validation over train + valid, not by one small validation split (0: never)
    cv_folds: int = Field(5, ge=0, le=20)
    cv_max_rows: int = Field(20_000, ge=0)
    fidelity_factor: int = Field(3, ge=2)
    # configurations tried first (each completed with XGBoost's defaults, clipped to the space)
    # its own values are used for its fit; TPE learns from them clipped into the space
    warm_starts: list[dict[str, float | str]] = Field(
        default_factory=lambda: [dict(w) for w in WARM_STARTS])
    space: dict[str, Dimension]
    # stop a trial whose best val logloss so far is worse than this quantile of the finished
    # trials' where they had come as far (checked every stop_interval rounds from
    # stop_warmup_rounds, once stop_min_trials trials have finished); "none": no stopping
    stop_rule: Literal["none", "quantile"] = "quantile"
    stop_quantile: float = Field(0.75, gt=0, le=1)
    stop_warmup_rounds: int = Field(50, ge=1)
    stop_interval: int = Field(10, ge=1)
    stop_min_trials: int = Field(5, ge=1)
    # compare at the same round, or at the same rounds x learning rate (fair to slow rates)
    stop_align: Literal["rounds", "learning_rate"] = "learning_rate"

    @field_validator("timeout_s", "n_estimators")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or 'auto'")
        return v

    @field_validator("space")
    @classmethod
    def _known(cls, v: dict[str, Dimension]) -> dict[str, Dimension]:
        unknown = set(v) - TUNABLE
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; "
                             f"tunable: {sorted(TUNABLE)}")
        if not v:
            raise ValueError("the search space is empty")
        return v

    @field_validator("warm_starts")
    @classmethod
    def _warm_known(cls, v: list[dict[str, float | str]]) -> list[dict[str, float | str]]:
        for start in v:
            unknown = set(start) - TUNABLE - set(WARM_ONLY)
            if unknown:
                raise ValueError(f"warm start {start}: unknown hyperparameter(s) "
                                 f"{sorted(unknown)}; allowed: {sorted(TUNABLE | set(WARM_ONLY))}")
            for k, allowed in WARM_ONLY.items():
                if k in start and start[k] not in allowed:
                    raise ValueError(f"warm start {start}: {k} must be one of {allowed}")
            bad = [k for k in set(start) & TUNABLE if isinstance(start[k], str)]
            if bad:
                raise ValueError(f"warm start {start}: {bad} must be numbers")
        return v

    @model_validator(mode="after")
    def _converges(self) -> TuneConfig:
        """A cap the user set must let the slowest rate in the space reach early stopping."""
        if self.n_estimators == "auto":
            return self
        lr = self.space.get("learning_rate")
        low = (min(float(o) for o in lr.options) if lr and lr.dist == "choice"
               else float(lr.low) if lr else DEFAULT_LEARNING_RATE)
        if low * self.n_estimators < MIN_RATE_ROUNDS:
            need = math.ceil(MIN_RATE_ROUNDS / low)
            raise ValueError(
                f"tune.n_estimators {self.n_estimators} cannot converge at learning rate "
                f"{low:g} (rounds x rate {low * self.n_estimators:g} < {MIN_RATE_ROUNDS:g}): "
                f"fits would end at the round cap, not by early stopping; set "
                f"tune.n_estimators to at least {need} or 'auto', or raise the lowest "
                f"learning rate to {MIN_RATE_ROUNDS / self.n_estimators:.3g}")
        return self


class TrainConfig(_Strict):
    # binary tasks: a row is labelled positive when its probability is at or above this; stored
    # with the version, so the server, the browser, the edge runner and monitoring all use it
    threshold: float = Field(0.5, gt=0, lt=1)
    distributed: bool = False  # fit the final model with xgboost.dask on the compute cluster
    n_jobs: int = Field(2, ge=1)
    refit_rounds_scale: float = Field(1.0, gt=0)  # rounds = best_iteration * scale on train+valid


class ComputeConfig(_Strict):
    scheduler: str = ""  # "" = a LocalCluster in this process; or tcp://host:8786
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    connect_timeout_s: float = Field(20, gt=0)  # give up on an unreachable scheduler after this
    worker_timeout_s: float = Field(60, gt=0)  # fail, not hang, when no worker is left this long
    # share of the machine's memory the design matrices and the fits may use: over it, the
    # search runs fewer fits at once, or tune/train refuse before fitting, naming the column
    memory_fraction: float = Field(0.6, gt=0, le=1)


class MlflowConfig(_Strict):
    tracking_uri: str = ""  # "" = sqlite in store_dir; MLFLOW_TRACKING_URI overrides
    store_dir: str = ".mlflow"
    experiment: str = "tarn"
    registered_model: str = "tarn-model"
    # set by load_params from MLFLOW_RUN_ID when `mlflow run` started tarn: tarn then works
    # in that run's experiment and its first run joins it (not a params.yaml setting)
    join_run_id: str = ""


class EvaluateConfig(_Strict):
    calibration_bins: int = Field(10, ge=2)
    evidently: bool = True


class PromoteConfig(_Strict):
    """Quality gates a version must pass to become production (``tarn promote``)."""

    alias: str = "production"
    # the gate metric; "" = the task's own (logloss for classification, rmse for regression)
    metric: Literal["", "logloss", "roc_auc", "accuracy", "f1_macro", "rmse", "mae", "r2"] = ""
    tolerance: float = Field(0.002, ge=0)  # how much worse than the champion is still fine
    # the features the fairness gate measures, each on its own; None = every schema.sensitive
    # feature, [] = no fairness gate (recorded as skipped)
    fairness_features: list[str] | None = None
    # the largest gap between groups the fairness gate allows: for classification the
    # demographic parity difference (selection rates; multiclass: the largest over classes,
    # one class against the rest), for regression the gap in mean prediction between groups
    # as a share of the target's standard deviation
    max_demographic_parity_difference: float = Field(0.15, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # refused, not translated: the old key gated one feature, and reading it as a list of
        # one would keep the others ungated without a word (a DPD of 0.174 passed that way)
        if isinstance(data, dict) and "fairness_feature" in data:
            raise ValueError(
                "promote.fairness_feature was replaced by promote.fairness_features, a list "
                "(default: every schema.sensitive feature, each gated on its own): delete the "
                "key to gate them all, or write e.g. `fairness_features: [sex]`")
        return data

    def gated(self, sensitive: list[str]) -> list[str]:
        """The features the fairness gate measures: the declared list, else every sensitive
        feature of the schema."""
        return list(sensitive if self.fairness_features is None else self.fairness_features)


class ServeConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    poll_interval_s: float = Field(2.0, gt=0)
    max_body_bytes: int = Field(5_000_000, ge=1_000)
    max_rows: int = Field(50_000, ge=1)
    # exact TreeSHAP costs ~10x a prediction per row (tens of ms on a deep model): a request
    # asking why is held to fewer rows, so one client cannot hold a worker for minutes
    explain_max_rows: int = Field(100, ge=1)
    onnx_max_rows: int = Field(256, ge=0)  # larger requests use the native Pipeline
    prediction_log: str = "data/predictions"  # rolling Parquet files, read by monitoring
    log_flush_rows: int = Field(2_000, ge=1)  # write to the open file after this many rows
    log_flush_interval_s: float = Field(2.0, gt=0)  # ... or after this long
    log_file_rows: int = Field(1_000_000, ge=1)  # close a file at this many rows,
    log_file_max_age_s: float = Field(900, gt=0)  # ... at this age,
    log_file_idle_s: float = Field(5, gt=0)  # ... or when no row came for this long
    log_retention_bytes: int = Field(10_000_000_000, ge=0)  # oldest files go beyond (0: no cap)
    log_retention_days: float = Field(90, ge=0)  # files older than this go (0: kept forever)
    log_queue_rows: int = Field(500_000, ge=1)  # rows held in memory while writes fail; more
    #                                              are counted as dropped
    notify_url: str = ""  # tarn promote nudges this server's /admin/reconcile at once
    # a value the ETL would quarantine (unknown category, number out of range): refuse the
    # request (422 naming the field) or score it and flag the row; counted either way
    unknown_values: Literal["refuse", "flag"] = "refuse"
    workers: int = Field(1, ge=1, le=64)  # processes; each follows the alias, one publishes
    # bounded clients (src/tarn/serve/server.py): what one client may hold of a worker
    max_header_bytes: int = Field(16_384, ge=1_024, le=1_048_576)  # request line + headers: 431
    max_headers: int = Field(100, ge=8, le=10_000)  # header lines: 431
    header_timeout_s: float = Field(10, gt=0, le=3_600)  # the head must arrive within: 408
    body_timeout_s: float = Field(30, gt=0, le=3_600)  # the whole body must arrive within: 408
    keepalive_timeout_s: float = Field(5, gt=0, le=3_600)  # an idle kept-alive connection closes
    max_connections: int = Field(1_000, ge=1, le=100_000)  # per worker; beyond: 503 at once
    # the deployment key (HMAC of the gate verdicts `tarn promote` signs; the server and
    # `tarn bundle publish` deploy only a version signed with it): a file, relative to the
    # project root, created owner-only on first use; never in the registry or a bundle
    deploy_key: str = ".tarn/deploy.key"

    @field_validator("deploy_key")
    @classmethod
    def _key_file(cls, v: str) -> str:
        if not v.strip() or "\0" in v or v.endswith(("/", "\\")):
            raise ValueError(f"serve.deploy_key: {v!r} is not a file path; e.g. "
                             "'.tarn/deploy.key'")
        return v


class EdgeConfig(_Strict):
    bundle_dir: str = "bundles"  # published client bundles: <bundle_dir>/<name>-v<N>/, current
    parity_tolerance: float = Field(1e-4, gt=0)
    parity_rows: int = Field(20_000, ge=100)


# Evidently's drift tests by column kind (evidently.legacy stattest registry, 0.7)
NumDriftMethod = Literal["anderson", "cramer_von_mises", "ed", "empirical_mmd", "es",
                         "hellinger", "jensenshannon", "kl_div", "ks", "mannw", "psi", "t_test",
                         "wasserstein"]
CatDriftMethod = Literal["TVD", "chisquare", "fisher_exact", "g_test", "hellinger",
                         "jensenshannon", "kl_div", "psi", "z"]


class MonitorConfig(_Strict):
    """Thresholds that turn drift reports into a retraining decision."""

    min_rows: int = Field(100, ge=1)  # fewer new rows: no decision but "none"
    drift_share_incremental: float = Field(0.15, gt=0, le=1)
    drift_share_full: float = Field(0.5, gt=0, le=1)
    logloss_increase_incremental: float = Field(0.02, ge=0)
    logloss_increase_full: float = Field(0.10, ge=0)
    # regression: RMSE on labelled new batches vs the version's test RMSE, as a relative rise
    rmse_increase_incremental: float = Field(0.1, ge=0)
    rmse_increase_full: float = Field(0.3, ge=0)
    prediction_drift_triggers: bool = True
    max_incremental_in_a_row: int = Field(3, ge=1)
    max_log_rows: int = Field(100_000, ge=1)
    reports: str = "reports/monitor"
    # distances, not p-values: with thousands of rows every p-value test fires, and a chi-square
    # test on sparse categories fires on noise (docs/facts.md)
    num_method: NumDriftMethod = "wasserstein"
    cat_method: CatDriftMethod = "jensenshannon"
    num_threshold: float = Field(0.1, gt=0)
    cat_threshold: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MonitorConfig:
        for what in ("drift_share", "logloss_increase", "rmse_increase"):
            inc, full = getattr(self, f"{what}_incremental"), getattr(self, f"{what}_full")
            if full < inc:
                raise ValueError(f"monitor.{what}_full ({full}) is below "
                                 f"monitor.{what}_incremental ({inc}): the full-retraining "
                                 "threshold must be the higher one")
        return self


class RetrainConfig(_Strict):
    incremental_rounds: int = Field(200, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    holdout_fraction: float = Field(0.3, gt=0, lt=1)  # of the new data: early stopping + check
    replay_ratio: float = Field(1.0, ge=0)  # old training rows mixed in per new row
    learning_rate_scale: float = Field(0.5, gt=0, le=1)  # new trees learn more gently
    seed: int = 42
    retune: bool = False  # full retraining re-runs the hyperopt search too


class Params(_Strict):
    """The whole of params.yaml. Unknown keys are errors (they are usually typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    paths: Paths = Paths()
    lake: LakeConfig = LakeConfig()
    schema_: SchemaConfig = Field(alias="schema")
    etl: EtlConfig = EtlConfig()
    prepare: PrepareConfig = PrepareConfig()
    bias: BiasConfig = BiasConfig()
    mlflow: MlflowConfig = MlflowConfig()
    compute: ComputeConfig = ComputeConfig()
    tune: TuneConfig | None = None
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    promote: PromoteConfig = PromoteConfig()
    serve: ServeConfig = ServeConfig()
    edge: EdgeConfig = EdgeConfig()
    monitor: MonitorConfig = MonitorConfig()
    retrain: RetrainConfig = RetrainConfig()

    @model_validator(mode="after")
    def _cross(self) -> Params:
        names = set(self.schema_.feature_names)
        for key, cols in (
            ("prepare.exclude_features", self.prepare.exclude_features),
            ("bias.reweighing_features", self.bias.reweighing_features),
            ("bias.privileged", list(self.bias.privileged)),
            ("promote.fairness_features", self.promote.fairness_features or []),
        ):
            bad = set(cols) - names
            if bad:
                raise ValueError(f"{key}: unknown columns {sorted(bad)}; the schema's columns "
                                 f"are {sorted(names)}")
        key = Path(self.serve.deploy_key)
        for published, where in ((self.edge.bundle_dir, "edge.bundle_dir"),
                                 (self.serve.prediction_log, "serve.prediction_log")):
            if not key.is_absolute() and key.parts[:len(Path(published).parts)] == \
                    Path(published).parts:
                raise ValueError(f"serve.deploy_key: {key} lies in {where} ({published}), "
                                 "which others read; keep it e.g. in .tarn/deploy.key")
        task = self.schema_.task
        if self.promote.metric and self.promote.metric not in METRICS_BY_TASK[task]:
            raise ValueError(f"promote.metric: {self.promote.metric!r} does not apply to a "
                             f"{task} task; use one of {list(METRICS_BY_TASK[task])}")
        for col, group in self.bias.privileged.items():
            cats = self.schema_.column(col).categories
            if cats is not None and group not in cats:
                raise ValueError(f"bias.privileged.{col}: {group!r} is not a category of "
                                 f"{col!r} (schema lists {cats})")
        return self

    @property
    def schema(self) -> SchemaConfig:  # type: ignore[override]
        return self.schema_


def load_params(path: str | os.PathLike[str] = "params.yaml",
                env: Mapping[str, str] | None = None) -> Params:
    """Read and validate params.yaml; raise ConfigError naming the bad key.

    ``MLFLOW_TRACKING_URI`` and ``DASK_SCHEDULER_ADDRESS`` in ``env`` (the process environment
    by default) override ``mlflow.tracking_uri`` and ``compute.scheduler``: this is the one place
    tarn reads the environment (S3 endpoint and credentials are read by boto/s3fs themselves).
    """
    env = os.environ if env is None else env
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file", "run tarn from the project root or pass --params")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})", "fix the syntax") from e
    if env.get("MLFLOW_TRACKING_URI"):
        raw.setdefault("mlflow", {})["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    if env.get("MLFLOW_RUN_ID"):  # `mlflow run` opened a run and started tarn inside it
        raw.setdefault("mlflow", {})["join_run_id"] = env["MLFLOW_RUN_ID"]
    if env.get("DASK_SCHEDULER_ADDRESS"):  # Dask's own variable for "use this cluster"
        raw.setdefault("compute", {})["scheduler"] = env["DASK_SCHEDULER_ADDRESS"]
    return params_from_dict(raw, source=str(p))


def params_from_dict(raw: dict, source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        message, hint = describe(first, raw)
        raise ConfigError(f"{source}: {message}{more}", hint) from e


def _known_keys(loc: tuple, raw: dict) -> list[str]:
    """The keys the model at ``loc``'s parent accepts."""
    model: Any = Params
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        fields = getattr(model, "model_fields", {})
        name = "schema_" if part == "schema" else part
        ann = fields[name].annotation if name in fields else None
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if hasattr(a, "model_fields")), None)
        if model is None and args:  # list[ColumnSpec], dict[str, Dimension]
            inner = getattr(args[-1], "__args__", ()) or args
            model = next((a for a in inner if hasattr(a, "model_fields")), None)
    fields = getattr(model, "model_fields", {})
    return sorted(f.alias or n for n, f in fields.items())


def describe(err: dict, raw: dict) -> tuple[str, str]:
    """One line naming the key path, and one saying how to fix it."""
    import difflib

    loc = tuple("schema" if x == "schema_" else x for x in err["loc"])
    path = ".".join(str(x) for x in loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc, raw)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = (f"did you mean {close[0]!r}?" if close else "remove it") + \
            (f" Known keys here: {', '.join(known)}" if known else "")
        return f"{path}: unknown key", hint
    if err["type"] == "missing":
        return f"{path}: required key missing", f"add {loc[-1]!r} to params.yaml"
    if err["type"] == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{path}: {err.get('input')!r} is not allowed", f"use one of {expected}"
    if not loc or re.match(r"[a-z_]+\.[a-z_.]+\b", msg):  # the message names its keys
        return msg, "change the key(s) named above in params.yaml"
    return f"{path}: {msg}", f"change {path} in params.yaml"


# --------------------------------------------------------------------------- stage views
class UndeclaredParam(ConfigError):
    """A stage read a params key it does not declare (so dvc.yaml would not re-run it)."""


class ParamsView:
    """The part of the configuration one DVC stage may read.

    A stage declares the keys it reads (``READS``, each must be in its dvc.yaml ``params``) and
    the keys that only say *where* work runs or lands (``AMBIENT``: paths, the tracking store,
    the Dask cluster; changing them does not change the result, so they are not DVC params).
    Reading anything else raises :class:`UndeclaredParam`, so a stage cannot depend on a knob
    that ``dvc repro`` does not watch. Sections declared whole are the real pydantic objects.
    """

    __slots__ = ("_obj", "_path", "_keys", "_stage", "_full")

    def __init__(self, obj: Any, keys: tuple[str, ...], stage: str, path: str = "",
                 full: Params | None = None) -> None:
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_full", full if full is not None else obj)

    @property
    def full(self) -> Params:
        """The whole configuration, for lineage hashes only (recorded, not acted on)."""
        return self._full

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        key = name.removesuffix("_") if not self._path and name == "schema_" else name
        path = f"{self._path}.{key}" if self._path else key
        value = getattr(self._obj, name)
        if any(path == k or path.startswith(k + ".") for k in self._keys):
            return value
        if any(k.startswith(path + ".") for k in self._keys):
            return ParamsView(value, self._keys, self._stage, path, self._full)
        raise UndeclaredParam(f"stage {self._stage!r} read params key {path!r}, which it does "
                              "not declare",
                              f"add {path!r} to READS in src/tarn/stages/{self._stage}.py and "
                              "to the stage's params in dvc.yaml")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("configuration is read-only")


def stage_view(params: Params | ParamsView, stage: str, reads: tuple[str, ...],
               ambient: tuple[str, ...] = ()) -> Params:
    """``params`` as the stage may see it (see :class:`ParamsView`)."""
    full = params.full if isinstance(params, ParamsView) else params
    return ParamsView(full, (*reads, *ambient), stage)  # type: ignore[return-value]
