"""Promotion gates: figures in, a verdict with reasons out. Pure: no registry, no I/O.

A candidate passes when its gate metric on the held-out test split (``promote.metric``, or the
task's loss: logloss for classification, RMSE for regression) is not worse than the
champion's by more than the tolerance (lower or higher is better by metric), its fairness gap
is under the ceiling (``promote.max_demographic_parity_difference``; the gap is the task's own
measure, :meth:`tarn.core.task.Task.fairness`), and it can take the champion's requests and
answer them the same way (input schema and task compatible). A candidate whose task differs
from the champion's is compared on no metric: the schema gate says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tarn.config import HIGHER_IS_BETTER, METRICS_BY_TASK, PromoteConfig

# what the fairness gap measures, per task (the messages name it)
GAP_MEASURE = {
    "binary": "demographic parity difference",
    "multiclass": "largest demographic parity difference over classes",
    "regression": "gap in mean prediction between groups (in target std)",
}


@dataclass(frozen=True)
class Figures:
    """What was measured on the same held-out rows for candidate and champion."""

    candidate: str
    champion: str | None
    candidate_metric: float
    champion_metric: float | None  # None: no champion, or it cannot take the same requests
    candidate_dpd: float | None  # the fairness gap; None: no sensitive feature to measure it on
    schema_problems: list[str] = field(default_factory=list)
    task: str = "binary"  # the candidate's task (from its card)
    metric: str = ""  # the gate metric measured ("" = the task's loss)
    # why the fairness gap could not be measured (too few test rows per group), or ""
    fairness_unmeasured: str = ""


def gate_metric(cfg: PromoteConfig, task: str) -> str:
    """``promote.metric``, or the task's loss when it is "" (or names another task's metric,
    e.g. a candidate whose card says regression under a binary params.yaml)."""
    metrics = METRICS_BY_TASK[task]
    return cfg.metric if cfg.metric in metrics else metrics[0]


@dataclass(frozen=True)
class Gates:
    """The verdict: each gate's outcome, the figures and the limits it was judged by."""

    candidate: str
    champion: str | None
    metric: str
    candidate_metric: float
    champion_metric: float | None
    tolerance: float
    fairness_feature: str | None  # None: the fairness gate is skipped (recorded so)
    candidate_dpd: float | None  # the fairness gap (see GAP_MEASURE)
    max_dpd: float
    schema_compatible: bool
    schema_problems: list[str] = field(default_factory=list)
    task: str = "binary"
    fairness_unmeasured: str = ""  # a fairness feature is declared but the gap has no value

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    @property
    def metric_ok(self) -> bool:
        if self.champion_metric is None:
            return True
        if self.higher_is_better:
            return self.candidate_metric >= self.champion_metric - self.tolerance
        return self.candidate_metric <= self.champion_metric + self.tolerance

    @property
    def fairness_ok(self) -> bool:
        if self.fairness_unmeasured:
            return False  # a declared fairness gate is not passed by default
        return self.candidate_dpd is None or self.candidate_dpd <= self.max_dpd

    @property
    def passed(self) -> bool:
        return self.metric_ok and self.fairness_ok and self.schema_compatible

    def failures(self) -> list[str]:
        out = []
        if not self.metric_ok:
            way = "higher" if self.higher_is_better else "lower"
            out.append(f"{self.metric} ({self.task}, {way} is better) "
                       f"{self.candidate_metric:.4f} vs champion {self.champion_metric:.4f} "
                       f"(tolerance {self.tolerance})")
        if self.fairness_unmeasured:
            out.append(f"fairness on {self.fairness_feature} not measurable: "
                       f"{self.fairness_unmeasured}")
        elif not self.fairness_ok:
            out.append(f"{GAP_MEASURE.get(self.task, 'fairness gap')} on "
                       f"{self.fairness_feature} {self.candidate_dpd:.4f} > {self.max_dpd} "
                       f"({self.task})")
        if not self.schema_compatible:
            out.append("input schema incompatible: " + "; ".join(self.schema_problems))
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def judge(figures: Figures, cfg: PromoteConfig) -> Gates:
    """Apply the limits in ``params.promote`` to the figures."""
    return Gates(figures.candidate, figures.champion,
                 figures.metric or gate_metric(cfg, figures.task), figures.candidate_metric,
                 figures.champion_metric, cfg.tolerance, cfg.fairness_feature,
                 figures.candidate_dpd, cfg.max_demographic_parity_difference,
                 not figures.schema_problems, list(figures.schema_problems), figures.task,
                 figures.fairness_unmeasured)
