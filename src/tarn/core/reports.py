"""The stage reports, typed: each JSON file a stage writes for people, DVC and later steps is a
frozen dataclass here, with ``to_json`` (the dict written, same keys as ever: ``dvc metrics``,
MLflow, the README and the tests read the files) and ``from_json`` (reads what the pipeline
writes, and an older file without the keys added since; those get their defaults).

Part of the catalog (``tarn.core.catalog`` re-exports it): no report file name or report key is
spelled outside these two modules (tests/unit/test_reports.py greps for them). Standard library
only, so commands that only read state (``tarn report``, ``tarn status``) stay light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

# the report files, by the stage that writes them (folders come from params.paths)
ETL_REPORT = "etl.json"  # etl: <paths.reports>/
PREPARE_REPORT = "prepare.json"  # prepare: <paths.reports>/
BIAS_REPORT = "bias.json"
BIAS_DETAIL = "bias_detail.json"
BIAS_HTML = "bias.html"
BEST = "best_params.json"  # tune: <paths.models>/
TUNE_REPORT = "tune.json"  # tune: <paths.reports>/
TRAIN_JSON = "train.json"  # train: <paths.models>/
EVALUATE_REPORT = "evaluate.json"  # evaluate: <paths.reports>/
FAIRNESS_REPORT = "fairness.json"
EVALUATION_HTML = "evaluation.html"
MONITOR_REPORT = "monitor.json"  # tarn monitor: <monitor.reports>/
RETRAIN_REPORT = "retrain.json"  # tarn retrain: <monitor.reports>/

R = TypeVar("R", bound="Report")

_OMIT_NONE = {"omit_none": True}


def _optional(default: Any = None) -> Any:
    """A key written only when it has a value (the file never had it otherwise)."""
    return field(default=default, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class Report:
    """One JSON object whose keys are the dataclass's fields (in order)."""

    def to_json(self) -> dict:
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("internal") or value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls: type[R], data: dict) -> R:
        """Known keys only; a key an older file lacks takes the field's default."""
        return cls(**{f.name: data[f.name] for f in fields(cls)
                      if f.name in data and not f.metadata.get("internal")})

    @classmethod
    def read(cls: type[R], path: Path) -> R | None:
        """The report at ``path``; None when it is missing or not JSON (never written)."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


# --- etl -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EtlCounts(Report):
    """Records of one file, batch or the total: read = written + rejected + duplicates."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("read", "written", "rejected", "duplicates")
    read: int = 0
    written: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, counts: Any) -> EtlCounts:
        """From the ingest's running counts (``tarn.core.ingest.Counts``)."""
        return cls(counts.read, counts.written, counts.rejected, counts.duplicates,
                   dict(sorted(counts.rejected_by_reason.items())))

    def balanced(self) -> bool:
        """The accounting invariant: every record read is written, rejected or a duplicate."""
        return self.read == self.written + self.rejected + self.duplicates


@dataclass(frozen=True)
class EtlReport(Report):
    snapshot: str = ""  # the snapshot manifest's hash
    total: EtlCounts = field(default_factory=EtlCounts)
    batches: dict[str, EtlCounts] = field(default_factory=dict)
    files: dict[str, EtlCounts] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"snapshot": self.snapshot, "total": self.total.to_json(),
                "batches": {b: c.to_json() for b, c in self.batches.items()},
                "files": {f: c.to_json() for f, c in self.files.items()}}

    @classmethod
    def from_json(cls, data: dict) -> EtlReport:
        return cls(data.get("snapshot", ""), EtlCounts.from_json(data.get("total", {})),
                   {b: EtlCounts.from_json(c) for b, c in data.get("batches", {}).items()},
                   {f: EtlCounts.from_json(c) for f, c in data.get("files", {}).items()})


# --- prepare -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrepareReport(Report):
    """Rows per split and the target per split: one of positive rate (binary), class shares
    (multiclass), mean and std (regression); the lake batches of each split."""

    task: str = "binary"  # a file from before tasks is binary
    rows: dict[str, int] = field(default_factory=dict)
    positive_rate: dict[str, float] | None = _optional()
    class_shares: dict[str, dict[str, float]] | None = _optional()
    target_mean: dict[str, float] | None = _optional()
    target_std: dict[str, float] | None = _optional()
    batches: dict[str, list[str]] = field(default_factory=dict)
    test_window: dict | None = _optional()  # rule, forward, label


@dataclass(frozen=True)
class FeatureBias(Report):
    """The flat data-bias figures of one sensitive feature on one split (DVC shows and diffs
    them; the detail is bias_detail.json): disparate impact and parity difference with the
    positive rate (binary) or class shares (multiclass) per group, or the gap between group
    means of the target (regression)."""

    disparate_impact_min: float | None = _optional()
    statistical_parity_difference: float | None = _optional()
    positive_rate: dict[str, float] | None = _optional()
    class_shares: dict[str, dict[str, float]] | None = _optional()
    mean_gap: float | None = _optional()
    mean: dict[str, float] | None = _optional()
    gap: float | None = _optional()
    share: dict[str, float] = field(default_factory=dict)
    small_groups: dict | None = _optional()

    @classmethod
    def from_detail(cls, f: dict, data: dict) -> FeatureBias:
        """From core.bias's detail of one feature (``f``) within its split (``data``)."""
        groups = f["groups"].items()
        common = {"gap": f["gap"], "share": {g: v["share"] for g, v in groups},
                  "small_groups": f.get("small_groups", {})}
        if "mean_gap" in f:  # regression
            return cls(mean_gap=f["mean_gap"], mean={g: v["mean"] for g, v in groups},
                       **common)
        rates = ({"positive_rate": {g: v["positive_rate"] for g, v in groups}}
                 if "positive_rate" in data else
                 {"class_shares": {g: v["class_shares"] for g, v in groups}})
        return cls(disparate_impact_min=f["disparate_impact_min"],
                   statistical_parity_difference=f["statistical_parity_difference"],
                   **rates, **common)

    def to_json(self) -> dict:  # the figures first, then gap, share, small groups
        out = super().to_json()
        return {**{k: v for k, v in out.items() if k not in ("gap", "share", "small_groups")},
                **{k: out[k] for k in ("gap", "share", "small_groups") if k in out}}


@dataclass(frozen=True)
class BiasReport(Report):
    """bias.json: per split (train, valid, test, train_reweighed), per sensitive feature."""

    splits: dict[str, dict[str, FeatureBias]] = field(default_factory=dict)

    @classmethod
    def from_detail(cls, detail: dict) -> BiasReport:
        """The flat figures of core.bias's report (bias_detail.json)."""
        parts = [*detail["splits"].items(), ("train_reweighed", detail["train_reweighed"])]
        return cls({name: {feat: FeatureBias.from_detail(f, data)
                           for feat, f in data["features"].items()} for name, data in parts})

    def to_json(self) -> dict:
        return {s: {feat: f.to_json() for feat, f in feats.items()}
                for s, feats in self.splits.items()}

    @classmethod
    def from_json(cls, data: dict) -> BiasReport:
        return cls({s: {feat: FeatureBias.from_json(f) for feat, f in feats.items()}
                    for s, feats in data.items()})

    @property
    def train(self) -> dict[str, FeatureBias]:
        return self.splits.get("train", {})

    @property
    def train_reweighed(self) -> dict[str, FeatureBias]:
        return self.splits.get("train_reweighed", {})


# --- tune ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoresOnValidation(Report):
    """Where tune left both models' validation scores (the train stage's mitigation check)
    and which rows they are for: ``rows`` "valid", or "train+valid" (out-of-fold scores under
    cross-validation); ``digest`` of those rows (other rows: the scores do not apply)."""

    rows: str = "valid"
    validation: str = ""  # how fits were judged, in words
    file: str = ""  # models/validation_scores.parquet
    digest: str = ""

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "valid") if self.rows == "train+valid" else ("valid",)


@dataclass(frozen=True)
class TuneSummary(Report):
    """What the search chose (best_params.json, read by train) and how it went; tune.json
    (DVC metrics) is its part for people (``report_json``)."""

    params: dict = field(default_factory=dict)  # the chosen XGBoost configuration
    best_iteration: int = 0  # its last useful round (0-based)
    rows: int | None = None  # the training rows the chosen fit saw
    validation: str | None = None  # how fits were judged (split or folds)
    task: str = "binary"  # a file from before tasks is binary, its loss logloss
    loss: str = "val_logloss"  # the figure the search minimized (a key of ``figures``)
    figures: dict[str, float] = field(default_factory=dict)  # val_<loss>, val_<figure>...
    trial: int | None = None
    n_trials: int = 0  # configurations tried
    n_fits: int = 0
    n_failed: int = 0
    n_stopped_early: int = 0
    n_capped: int = 0  # fits that ended at their round cap
    fits_per_rung: list[dict] = field(default_factory=list)  # {rows, fits} per rung
    budget_s: float | None = None
    stop_reason: str = ""
    reference_val: dict = field(default_factory=dict)  # default models on validation
    # the unmitigated model's configuration, rounds, trial and loss (the search tuned the
    # reweighed one); None when the search was unweighted
    unmitigated: dict | None = None
    reference_verdict: str = ""
    # where the validation scores of both models are (models/validation_scores.parquet) and
    # which rows they are for; None when nothing was compared
    mitigation_check: ScoresOnValidation | None = None
    parent_run_id: str = ""
    duration_s: float = 0.0

    # the keys of tune.json, in order (the figures come after ``loss``)
    REPORT_KEYS: ClassVar[tuple[str, ...]] = (
        "task", "loss", "best_iteration", "rows", "validation", "n_trials", "n_fits",
        "n_failed", "n_stopped_early", "n_capped", "fits_per_rung", "budget_s", "stop_reason",
        "reference_val", "reference_verdict", "duration_s")

    @property
    def best_loss(self) -> float:
        return self.figures[self.loss]

    @property
    def rounds(self) -> int:
        return self.best_iteration + 1

    def configuration(self, mitigated: bool = True) -> tuple[dict, int]:
        """The chosen configuration and its rounds; for the unmitigated model, when the
        search tuned the reweighed one, its unweighted refit's."""
        if not mitigated and self.unmitigated:
            return self.unmitigated["params"], self.unmitigated["best_iteration"] + 1
        return self.params, self.rounds

    def search_counts(self) -> dict[str, float]:
        """The counts logged as the parent run's metrics (same names as the keys)."""
        return {"n_trials": self.n_trials, "n_fits": self.n_fits, "n_failed": self.n_failed,
                "n_stopped_early": self.n_stopped_early, "n_capped": self.n_capped}

    @staticmethod
    def unmitigated_entry(params: dict, best_iteration: int, trial: int, loss: str,
                          value: float) -> dict:
        return {"params": params, "best_iteration": best_iteration, "trial": trial,
                loss: value}

    def to_json(self) -> dict:
        out: dict = {}
        for f in fields(self):
            if f.name == "figures":
                out.update(self.figures)
            elif f.name == "mitigation_check" and self.mitigation_check is not None:
                out[f.name] = self.mitigation_check.to_json()
            else:
                out[f.name] = getattr(self, f.name)
        return out

    def report_json(self) -> dict:
        """tune.json: the figures after ``loss``, then the search's counts."""
        full = self.to_json()
        keys = ["task", "loss", *self.figures, *self.REPORT_KEYS[2:]]
        return {k: full[k] for k in keys}

    @classmethod
    def from_json(cls, data: dict) -> TuneSummary:
        names = {f.name for f in fields(cls)}
        figures = {k: v for k, v in data.items() if k.startswith("val_") and k not in names}
        known = {k: v for k, v in data.items() if k in names and k != "figures"}
        if known.get("mitigation_check") is not None:
            known["mitigation_check"] = ScoresOnValidation.from_json(known["mitigation_check"])
        return cls(**known, figures=figures)


# --- train ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainInfo(Report):
    """train.json: the version the train stage registered (evaluate, retrain read it)."""

    run_id: str = ""
    model_uri: str = ""
    registered_model: str = ""
    version: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # the lineage tags (core.tags)
    params: dict = field(default_factory=dict)  # the final fit's XGBoost parameters
    # which model was registered and why (core.bias.MitigationDecision); None: nothing decided
    mitigation: dict | None = None
    # False for a train.json from before the decision was recorded (not written)
    mitigation_recorded: bool = field(default=True, metadata={"internal": True})

    @classmethod
    def from_json(cls, data: dict) -> TrainInfo:
        info = super().from_json(data)
        return info if "mitigation" in data else replace(info, mitigation_recorded=False)


# --- evaluate ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluateReport(Report):
    """evaluate.json: the registered model's test figures (flat: quality, then
    ``<feature>_<figure>`` fairness), the effect of reweighing, references, explanations."""

    task: str = "binary"  # a file from before tasks is binary
    model: dict[str, Any] = field(default_factory=dict)
    effect: dict = field(default_factory=dict)
    fairness_changes: dict[str, str] = field(default_factory=dict)  # signed, per feature
    mitigation: dict | None = None  # {applied, reason}; None: nothing was decided
    unmitigated: dict[str, float] = field(default_factory=dict)  # the other model's figures
    reference_test: dict = field(default_factory=dict)
    reference_verdict: str = ""
    test_window: str = ""
    explanations: dict | None = None
    version: str | None = None  # the registered version evaluated

    @staticmethod
    def mitigation_entry(applied: bool, reason: str) -> dict:
        return {"applied": applied, "reason": reason}
