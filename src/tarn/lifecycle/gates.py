"""Promotion gates: figures in, a verdict with reasons out. Pure: no registry, no I/O.

A candidate passes when its gate metric on the held-out test split (``promote.metric``, or the
task's loss: logloss for classification, RMSE for regression) is not worse than the
champion's by more than the tolerance (lower or higher is better by metric), its fairness gap
on each gated feature (``promote.fairness_features``, by default every sensitive feature) is
under the ceiling (``promote.max_demographic_parity_difference``; the gap is the task's own
measure, :meth:`tarn.core.task.Task.fairness`), and it can take the champion's requests and
answer them the same way (input schema and task compatible). A candidate whose task differs
from the champion's is compared on no metric: the schema gate says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tarn.config import PromoteConfig
from tarn.core.tasks import Task, task_class


def gap_measure(task: str) -> str:
    """What the fairness gap measures for a task (``Task.GAP_MEASURE``; the messages name
    it)."""
    try:
        return task_class(task).GAP_MEASURE
    except ValueError:
        return "fairness gap"


@dataclass(frozen=True)
class Figures:
    """What was measured on the same held-out rows for candidate and champion."""

    candidate: str
    champion: str | None
    candidate_metric: float
    champion_metric: float | None  # None: no champion, or it cannot take the same requests
    # the fairness gap per measured feature (None: fewer than two groups large enough)
    fairness: dict[str, float | None] = field(default_factory=dict)
    schema_problems: list[str] = field(default_factory=list)
    task: str = "binary"  # the candidate's task (from its card)
    metric: str = ""  # the gate metric measured ("" = the task's loss)
    # per feature whose gap could not be measured: why (too few test rows per group)
    fairness_unmeasured: dict[str, str] = field(default_factory=dict)
    window: str = ""  # the rows measured on, forward or in-sample per version (core.windows)


def gate_metric(cfg: PromoteConfig, task: str) -> str:
    """``promote.metric``, or the task's loss when it is "" (or names another task's metric,
    e.g. a candidate whose card says regression under a binary params.yaml)."""
    return task_class(task).gate_metric(cfg.metric)


@dataclass(frozen=True)
class Gates:
    """The verdict: each gate's outcome, the figures and the limits it was judged by."""

    candidate: str
    champion: str | None
    metric: str
    candidate_metric: float
    champion_metric: float | None
    tolerance: float
    fairness_features: list[str]  # the gated features; []: the fairness gate is skipped
    fairness: dict[str, float | None]  # the gap per measured feature (see gap_measure)
    max_dpd: float
    schema_compatible: bool
    schema_problems: list[str] = field(default_factory=list)
    task: str = "binary"
    # gated features whose gap has no value, and why
    fairness_unmeasured: dict[str, str] = field(default_factory=dict)
    window: str = ""  # what both versions were measured on (see Figures.window)

    @property
    def higher_is_better(self) -> bool:
        return Task.higher_is_better(self.metric)

    @property
    def metric_ok(self) -> bool:
        if self.champion_metric is None:
            return True
        if self.higher_is_better:
            return self.candidate_metric >= self.champion_metric - self.tolerance
        return self.candidate_metric <= self.champion_metric + self.tolerance

    @property
    def unmeasured(self) -> dict[str, str]:
        """Gated features whose gap has no value: a declared gate is not passed by default."""
        return {f: self.fairness_unmeasured.get(f) or "no gap was measured"
                for f in self.fairness_features if self.fairness.get(f) is None}

    @property
    def over(self) -> dict[str, float]:
        """Gated features whose gap is above the ceiling, with their gap."""
        return {f: g for f in self.fairness_features
                if (g := self.fairness.get(f)) is not None and g > self.max_dpd}

    @property
    def candidate_dpd(self) -> float | None:
        """The largest gap over the gated features (None: none gated or measured)."""
        gaps = [g for f in self.fairness_features if (g := self.fairness.get(f)) is not None]
        return max(gaps) if gaps else None

    @property
    def fairness_ok(self) -> bool:
        return not self.unmeasured and not self.over

    @property
    def passed(self) -> bool:
        return self.metric_ok and self.fairness_ok and self.schema_compatible

    def failures(self) -> list[str]:
        out = []
        if not self.metric_ok:
            way = "higher" if self.higher_is_better else "lower"
            out.append(f"{self.metric} ({self.task}, {way} is better) "
                       f"{self.candidate_metric:.4f} vs champion {self.champion_metric:.4f} "
                       f"(tolerance {self.tolerance})"
                       + (f", on {self.window}" if self.window else ""))
        for feat, why in self.unmeasured.items():
            out.append(f"fairness on {feat} not measurable: {why}")
        for feat, gap in self.over.items():
            out.append(f"{gap_measure(self.task)} on {feat} {gap:.4f} > "
                       f"{self.max_dpd} ({self.task})")
        if not self.schema_compatible:
            out.append("input schema incompatible: " + "; ".join(self.schema_problems))
        return out

    def fairness_summary(self) -> str:
        """One line: each measured feature's gap, the gated ones against the ceiling."""
        if not self.fairness:
            return "no fairness gate (no sensitive feature measured)"
        measure = gap_measure(self.task)
        parts = []
        for feat, gap in self.fairness.items():
            shown = "not measurable" if gap is None else f"{gap:.4f}"
            gated = feat in self.fairness_features
            parts.append(f"{feat} {shown}" + ("" if gated else " (not gated)"))
        return f"{measure} {', '.join(parts)} (max {self.max_dpd})"

    def as_dict(self) -> dict:
        return {**asdict(self), "candidate_dpd": self.candidate_dpd}


def judge(figures: Figures, cfg: PromoteConfig, sensitive: list[str] | None = None) -> Gates:
    """Apply the limits in ``params.promote`` to the figures. The gated features are
    ``promote.fairness_features``, or when unset every measured one (``sensitive``, the
    schema's sensitive features, when given)."""
    measured = list(figures.fairness)
    gated = cfg.gated(measured if sensitive is None else sensitive)
    return Gates(figures.candidate, figures.champion,
                 figures.metric or gate_metric(cfg, figures.task), figures.candidate_metric,
                 figures.champion_metric, cfg.tolerance, gated, dict(figures.fairness),
                 cfg.max_demographic_parity_difference, not figures.schema_problems,
                 list(figures.schema_problems), figures.task,
                 dict(figures.fairness_unmeasured), figures.window)
