"""Promotion gates: figures in, a verdict with reasons out. Pure: no registry, no I/O.

A candidate passes when its primary metric on the held-out test split is not worse than the
champion's by more than the tolerance, its demographic parity difference is under the
ceiling, and it can take the champion's requests (input schema compatible).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tarn.config import PromoteConfig


@dataclass(frozen=True)
class Figures:
    """What was measured on the same held-out rows for candidate and champion."""

    candidate: str
    champion: str | None
    candidate_metric: float
    champion_metric: float | None  # None: no champion, or it cannot take the same requests
    candidate_dpd: float | None  # None: no sensitive feature to measure it on
    schema_problems: list[str] = field(default_factory=list)


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
    candidate_dpd: float | None
    max_dpd: float
    schema_compatible: bool
    schema_problems: list[str] = field(default_factory=list)

    @property
    def metric_ok(self) -> bool:
        if self.champion_metric is None:
            return True
        if self.metric == "logloss":
            return self.candidate_metric <= self.champion_metric + self.tolerance
        return self.candidate_metric >= self.champion_metric - self.tolerance

    @property
    def fairness_ok(self) -> bool:
        return self.candidate_dpd is None or self.candidate_dpd <= self.max_dpd

    @property
    def passed(self) -> bool:
        return self.metric_ok and self.fairness_ok and self.schema_compatible

    def failures(self) -> list[str]:
        out = []
        if not self.metric_ok:
            out.append(f"{self.metric} {self.candidate_metric:.4f} vs champion "
                       f"{self.champion_metric:.4f} (tolerance {self.tolerance})")
        if not self.fairness_ok:
            out.append(f"demographic parity difference on {self.fairness_feature} "
                       f"{self.candidate_dpd:.4f} > {self.max_dpd}")
        if not self.schema_compatible:
            out.append("input schema incompatible: " + "; ".join(self.schema_problems))
        return out

    def as_dict(self) -> dict:
        return asdict(self)


def judge(figures: Figures, cfg: PromoteConfig) -> Gates:
    """Apply the limits in ``params.promote`` to the figures."""
    return Gates(figures.candidate, figures.champion, cfg.metric, figures.candidate_metric,
                 figures.champion_metric, cfg.tolerance, cfg.fairness_feature,
                 figures.candidate_dpd, cfg.max_demographic_parity_difference,
                 not figures.schema_problems, list(figures.schema_problems))
