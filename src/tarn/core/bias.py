"""Bias analysis and correction for sensitive groups.

Data bias: group sizes and shares, what the target looks like per group (positive rate, class
shares, or the target's mean and quantiles), disparate impact against a privileged (reference)
group, and missingness per group. The per-group target figures are fairlearn's
``MetricFrame`` (the same tool evaluation uses for predictions). A group smaller than
``bias.min_group_rows`` is shown and marked, but does not make the headline figures (gap,
disparate impact, the four-fifths flag): a group of 1 row has a positive rate of 0 or 1 by
chance alone.

Correction: reweighing (Kamiran & Calders 2012), ``w(g, y) = P(g) P(y) / P(g, y)``, which
makes label and group independent in the weighted training data; it applies to class labels
(binary or multiclass), not to a numeric target. Whether the reweighed model is registered is
decided on validation against the unmitigated one (:func:`decide_mitigation`).
Pure functions; the prepare and train stages do the I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from tarn.config import BiasConfig, SchemaConfig

SEP = " & "


def group_key(df: pd.DataFrame, features: list[str]) -> pd.Series:
    """One label per row naming its (intersectional) group, e.g. 'Female & Black'."""
    parts = [df[f].astype(object).where(df[f].notna(), "<missing>").astype(str) for f in features]
    key = parts[0]
    for p in parts[1:]:
        key = key + SEP + p
    return key


def _task(task: str, classes: list[str]):
    """The task's class owns its target figures (:mod:`tarn.core.tasks`)."""
    from tarn.core.tasks import Task

    return Task(task, tuple(classes))


def _target_figures(y: pd.Series, w: pd.Series, task: str, classes: list[str]) -> dict:
    """What the target looks like in one group: the positive rate (binary), the share of each
    class (multiclass), or the target's mean, spread and quartiles (regression)."""
    return _task(task, classes).target_figures(y, w)


def group_frame(y: np.ndarray, groups: pd.Series, w: np.ndarray, task: str,
                classes: list[str]) -> pd.DataFrame:
    """fairlearn's MetricFrame over the target itself: per group the row count and the target
    figures of :func:`_target_figures` (binary: ``positive_rate``, fairlearn's selection rate of
    the labels; multiclass: ``share_<i>`` per class; regression: mean, std, quantiles), weighted
    by ``w`` (quantiles unweighted)."""
    from fairlearn.metrics import MetricFrame, count

    unweighted, weighted = _task(task, classes).target_metrics()
    plain: dict = {"count": count, **unweighted}
    y = np.asarray(y)
    mf = MetricFrame(metrics={**plain, **weighted}, y_true=y, y_pred=y,
                     sensitive_features=groups.to_numpy(),
                     sample_params={k: {"sample_weight": np.asarray(w, dtype=np.float64)}
                                    for k in weighted})
    out = mf.by_group.copy()
    out.index = out.index.astype(str)
    return out


def group_table(df: pd.DataFrame, feature: str, target: str, feature_cols: list[str],
                privileged: str | None, weights: np.ndarray | None = None,
                task: str = "binary", classes: list[str] | None = None,
                min_rows: int = 1) -> pd.DataFrame:
    """Per-group figures for one sensitive feature (weighted when ``weights`` given).

    ``disparate_impact`` compares each group with the reference group (privileged, else the
    largest; a privileged group under ``min_rows`` rows is no reference): binary, the ratio of
    positive rates; multiclass, the smallest ratio of class shares over the classes;
    regression, the difference in target mean as a share of the target's standard deviation
    (``mean_difference``; there is no label to have an impact on). ``too_small`` marks the
    groups under ``min_rows`` rows: shown, but kept out of the headline figures."""
    classes = list(classes or [])
    t = _task(task, classes)
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=np.float64)
    g = group_key(df, [feature])
    by = group_frame(df[target].to_numpy(), g, w, task, classes)
    any_missing = df[feature_cols].isna().any(axis=1)
    rows = []
    for name, idx in g.groupby(g).groups.items():
        f = by.loc[str(name)]
        figures = t.group_target_figures(f)
        rows.append({
            "group": name,
            "count": int(f["count"]),
            "share": len(idx) / len(df),
            "too_small": bool(f["count"] < min_rows),
            **figures,
            "missing_rate": float(any_missing[idx].mean()),
            "missing_by_column": {c: float(df.loc[idx, c].isna().mean())
                                  for c in feature_cols if df.loc[idx, c].isna().any()},
        })
    table = pd.DataFrame(rows).sort_values("count", ascending=False).reset_index(drop=True)
    big = set(table.loc[~table["too_small"], "group"])
    ref = (privileged if privileged in big or (privileged in set(table["group"]) and not big)
           else table.loc[0, "group"])
    t.compare_to_reference(table, table["group"] == ref, df[target])
    table.attrs["reference"] = ref
    return table


def data_bias(df: pd.DataFrame, schema: SchemaConfig, cfg: BiasConfig,
              weights: np.ndarray | None = None) -> dict:
    """Bias figures for every sensitive feature of the contract, as a JSON-able dict.

    Per feature, for every task: the reference group, the groups' figures and ``gap``, one
    number for "how unequal is the target across groups": binary, the statistical parity
    difference (largest minus smallest positive rate); multiclass, the largest such difference
    over the classes' shares; regression, the spread of group means as a share of the
    target's standard deviation.

    The headline figures (``gap``, ``disparate_impact_min``, ``statistical_parity_difference``,
    ``passes_four_fifths``, ``mean_gap``) are taken over the groups of at least
    ``bias.min_group_rows`` rows, as evaluation's are; smaller groups are listed under
    ``small_groups`` and marked ``too_small``. With fewer than two groups that large the
    headline is None and ``not_measurable`` says why."""
    target = schema.target.name
    task, classes = schema.task, schema.classes
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=np.float64)
    overall = _target_figures(df[target], pd.Series(w, index=df.index), task, classes)
    out: dict = {"rows": int(len(df)), "task": task, **overall, "features": {},
                 "min_group_rows": int(cfg.min_group_rows)}
    for feat in schema.sensitive:
        t = group_table(df, feat, target, schema.feature_names, cfg.privileged.get(feat),
                        weights, task, classes, cfg.min_group_rows)
        groups = {r["group"]: {k: r[k] for k in t.columns if k != "group"}
                  for r in t.to_dict("records")}
        entry: dict = {"reference_group": t.attrs["reference"],
                       "small_groups": {str(r["group"]): int(r["count"])
                                        for r in t.to_dict("records") if r["too_small"]}}
        h = t[~t["too_small"]]  # the groups the headline is taken over
        measurable = len(h) >= 2
        if not measurable:
            entry["not_measurable"] = (
                f"fewer than two groups with bias.min_group_rows ({cfg.min_group_rows}) rows "
                f"({', '.join(f'{g} {n}' for g, n in zip(t['group'], t['count'], strict=True))})")
        entry.update(_task(task, classes).data_headline(h, measurable, overall,
                                                        cfg.disparate_impact_threshold))
        entry["groups"] = groups
        out["features"][feat] = entry
    return out


def reweighing_table(df: pd.DataFrame, features: list[str], target: str) -> pd.DataFrame:
    """Kamiran & Calders weights per (group, label), fitted on the given (training) rows."""
    g = group_key(df, features)
    y = df[target]
    n = len(df)
    p_g = g.value_counts() / n
    p_y = y.value_counts() / n
    p_gy = pd.crosstab(g, y).stack() / n
    rows = [{"group": grp, "label": int(lab), "weight": float(p_g[grp] * p_y[lab] / p)}
            for (grp, lab), p in p_gy.items() if p > 0]
    return pd.DataFrame(rows)


def apply_weights(df: pd.DataFrame, table: pd.DataFrame, features: list[str],
                  target: str) -> np.ndarray:
    """Look up each row's weight; a (group, label) the table has not seen gets 1.0."""
    lookup = {(r.group, r.label): r.weight for r in table.itertuples(index=False)}
    g = group_key(df, features)
    return np.array([lookup.get((a, int(b)), 1.0) for a, b in zip(g, df[target], strict=True)])


REWEIGHING_NOT_APPLICABLE = "reweighing applies to class labels; regression target"


def reweighing_note(task: str, features: list[str]) -> str:
    """Why the training rows all weigh 1 ("" when reweighing weights are computed): no feature
    to reweigh by, or a regression target (Kamiran & Calders balances labels across groups;
    a number has no label to balance). Prepare's report and the train run both record it."""
    if not _task(task, []).classification:
        return REWEIGHING_NOT_APPLICABLE
    if not features:
        return "no reweighing feature declared (bias.reweighing_features): weights are 1"
    return ""


# ---------------------------------------------------------------- mitigation: kept or not
def gap_name(task: str) -> str:
    """The task's fairness gap (``Task.fairness``), short, in sentences (``Task.GAP_NAME``)."""
    from tarn.core.tasks import task_class

    try:
        return task_class(task).GAP_NAME
    except ValueError:
        return "fairness gap"


def signed_change(before: float | None, after: float | None, digits: int = 4,
                  lower_is_better: bool = True) -> str:
    """A change as a signed difference, never a ratio: ``0.0018 -> 0.0155 (+0.0137, worse)``.
    (A relative "reduction" of a gap near zero reads as "-776 %".)"""
    if before is None or after is None:
        shown = ["not measurable" if v is None else f"{v:.{digits}f}" for v in (before, after)]
        return f"{shown[0]} -> {shown[1]}"
    diff = after - before
    if round(diff, digits) == 0:
        verdict = "unchanged"
    else:
        verdict = "better" if (diff < 0) == lower_is_better else "worse"
    return f"{before:.{digits}f} -> {after:.{digits}f} ({diff:+.{digits}f}, {verdict})"


@dataclass(frozen=True)
class MitigationCheck:
    """Both models on the same validation rows: the mitigated (reweighed) and the unmitigated
    configuration of the search, each fitted on the training rows."""

    validation: str  # what the figures were measured on, in words
    loss: str  # the task's loss: "logloss"
    loss_with: float
    loss_without: float
    gaps_with: dict[str, float | None]  # per sensitive feature, the task's fairness gap
    gaps_without: dict[str, float | None]
    task: str = "binary"


@dataclass(frozen=True)
class MitigationDecision:
    """Which model the train stage registers, and why (one line, recorded with the version)."""

    applied: bool  # the reweighed model is registered
    reason: str
    policy: str = "compare"
    checked: bool = False  # measured on validation (False: nothing to compare with)
    worse: tuple[str, ...] = ()  # reweighing features whose gap reweighing widened
    quality_cost: float | None = None  # relative loss increase with mitigation
    over_budget: bool = False
    changes: dict[str, str] = field(default_factory=dict)  # per feature: signed_change text
    figures: dict = field(default_factory=dict)  # the check's figures

    def as_dict(self) -> dict:
        return asdict(self)


def decide_mitigation(check: MitigationCheck | None, features: list[str], policy: str,
                      max_quality_cost: float) -> MitigationDecision:
    """Pure: register the reweighed model, or the unmitigated one?

    Reweighing is there to narrow the fairness gap of the features it reweighs by. With
    ``policy`` "compare" the unmitigated model is registered when, on validation, reweighing
    widened that gap on any of ``features`` or raised the task's loss by more than
    ``max_quality_cost`` (relative); "always" registers the reweighed model anyway and says
    so. Without a check (no unmitigated configuration) the reweighed model is registered and
    the reason says it was not compared."""
    if check is None:
        return MitigationDecision(True, "reweighing applied without a comparison on validation "
                                  "(the search recorded no unmitigated model)", policy)
    name = gap_name(check.task)
    changes = {f: signed_change(check.gaps_without.get(f), check.gaps_with.get(f))
               for f in dict.fromkeys([*features, *check.gaps_with])}
    worse = tuple(f for f in features
                  if check.gaps_with.get(f) is not None
                  and check.gaps_without.get(f) is not None
                  and check.gaps_with[f] > check.gaps_without[f])
    unmeasured = [f for f in features
                  if check.gaps_with.get(f) is None or check.gaps_without.get(f) is None]
    base = check.loss_without
    cost = (check.loss_with - base) / base if base > 0 else check.loss_with - base
    over = cost > max_quality_cost
    problems = [f"it widened the {name} on {f}: {changes[f]}" for f in worse]
    if over:
        problems.append(f"it raised the {check.loss} by {100 * cost:.1f} % "
                        f"({signed_change(base, check.loss_with)}), over bias.max_quality_cost "
                        f"{100 * max_quality_cost:g} %")
    where = f"on {check.validation}"
    note = (f"; the {name} on {', '.join(unmeasured)} is not measurable there"
            if unmeasured else "")
    common = dict(policy=policy, checked=True, worse=worse, quality_cost=float(cost),
                  over_budget=over, changes=changes, figures=asdict(check))
    if not problems:
        gains = ", ".join(f"{name} on {f} {changes[f]}" for f in features if f not in unmeasured)
        return MitigationDecision(True, f"reweighing kept: {where} {gains or 'no gap measured'}, "
                                  f"{check.loss} {100 * cost:+.1f} % (budget "
                                  f"{100 * max_quality_cost:g} %){note}", **common)
    if policy == "always":
        return MitigationDecision(True, f"reweighing applied although, {where}, "
                                  f"{'; '.join(problems)} (bias.mitigation_policy: always)"
                                  f"{note}", **common)
    return MitigationDecision(False, f"reweighing not applied, the unmitigated model is "
                              f"registered: {where}, {'; '.join(problems)}{note}", **common)
