"""The prepare stage: split, analyse bias, compute reweighing weights.

Test = the batches named by ``prepare.test_batches`` (the latest ones, as `tarn init` sets it,
or a published split such as the demo's official test file); validation is a seeded,
label-stratified share of the rest. Normalization is *not* applied here: it is fitted on the
training split inside the model Pipeline (:mod:`tarn.core.features`), so serving and the edge
bundle apply exactly the same transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tarn.config import Params, stage_view
from tarn.core import bias, windows
from tarn.core import html_report as html
from tarn.core.catalog import (
    BIAS_DETAIL,
    BIAS_HTML,
    BIAS_REPORT,
    PREPARE_REPORT,
    SPLIT_FILE,
    SPLITS,
    STAGE_READS,
    WEIGHTS,
    BiasReport,
    PrepareReport,
    curated_table,
)
from tarn.core.files import atomic_dir, staged
from tarn.errors import TarnError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["prepare"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths",)



@dataclass(frozen=True)
class PrepareResult:
    out_dir: Path
    rows: dict[str, int]
    bias: dict


def split(df: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
    """Pure: the three splits, each keeping the curated columns (``batch`` included)."""
    cfg = params.prepare
    target = params.schema.target.name
    tested = set(windows.held_out(df["batch"].unique().tolist(), cfg))
    is_test = df["batch"].isin(tested)
    test, rest = df[is_test], df[~is_test]
    if test.empty:
        raise TarnError(f"no test batch: {windows.describe_rule(cfg)} selects none of "
                        f"{df['batch'].nunique()} batch(es)",
                        "fix prepare.test_batches in params.yaml (see `tarn lake list`), or "
                        "add a batch to hold out")
    if rest.empty:
        raise TarnError("every batch is a test batch: nothing left to train on",
                        "narrow prepare.test_batches in params.yaml")
    if cfg.valid_split == "latest":  # forward in time: the newest rows before the test ones
        batches = rest["batch"].tolist()
        ordered = rest.iloc[sorted(range(len(rest)),
                                   key=lambda i: windows.batch_order(batches[i]))]
        cut = len(ordered) - max(1, math.ceil(cfg.valid_fraction * len(ordered)))
        train, valid = ordered.iloc[:cut], ordered.iloc[cut:]
    else:
        strat = strata(rest[target], params.schema.numeric_target)
        train, valid = train_test_split(rest, test_size=cfg.valid_fraction,
                                        random_state=cfg.seed, stratify=strat)
    return {"train": train.reset_index(drop=True), "valid": valid.reset_index(drop=True),
            "test": test.reset_index(drop=True)}


def strata(y: pd.Series, numeric: bool, bins: int = 10) -> pd.Series | None:
    """Pure: what the validation split is stratified by: the label (classification), the
    target's quantile bin (regression, so both splits span its range), or nothing when a
    stratum would hold fewer than two rows."""
    if numeric:
        y = pd.qcut(y.astype(np.float64), q=min(bins, max(1, len(y) // 10)), labels=False,
                    duplicates="drop")
    return y if len(y) and y.value_counts().min() >= 2 else None


def target_summary(parts: dict[str, pd.DataFrame], target: str, task: str,
                   classes: list[str]) -> dict:
    """Pure: the target per split, as PrepareReport's fields: positive rate (binary), class
    shares (multiclass) or mean and std (regression)."""
    if task == "binary":
        return dict(positive_rate={s: float(parts[s][target].mean()) for s in SPLITS})
    if task == "multiclass":
        return dict(class_shares={s: {c: float((parts[s][target] == i).mean())
                                      for i, c in enumerate(classes)} for s in SPLITS})
    return dict(target_mean={s: float(parts[s][target].mean()) for s in SPLITS},
                target_std={s: float(parts[s][target].std(ddof=0)) for s in SPLITS})


def run(params: Params, root: Path) -> PrepareResult:
    params = stage_view(params, "prepare", READS, AMBIENT)
    df = pd.read_parquet(curated_table(params, root))
    parts = split(df, params)
    target = params.schema.target.name
    bcfg = params.bias
    features = bcfg.reweighing_features
    task = params.schema.task
    note = bias.reweighing_note(task, features)
    if not note:  # weights for the mitigated model (and its comparison without them)
        table = bias.reweighing_table(parts["train"], features, target)
        weights = {s: bias.apply_weights(parts[s], table, features, target)
                   for s in ("train", "valid")}
    else:  # nothing to reweigh by, or a numeric target: every row weighs 1, the report says why
        table = pd.DataFrame()
        weights = {s: np.ones(len(parts[s])) for s in ("train", "valid")}
    report = {
        "task": task,
        "mitigation": bcfg.mitigation,
        "mitigation_applied": bcfg.mitigation == "reweighing" and not note,
        "threshold": bcfg.disparate_impact_threshold,
        "reweighing": {"features": features, "table": table.to_dict("records"), "note": note},
        "splits": {s: bias.data_bias(parts[s], params.schema, bcfg) for s in SPLITS},
        "train_reweighed": bias.data_bias(parts["train"], params.schema, bcfg, weights["train"]),
    }
    batches = {s: sorted(parts[s]["batch"].unique().tolist(), key=windows.batch_order)
               for s in SPLITS}
    trained = batches["train"] + batches["valid"]
    summary = PrepareReport(
        task=task, rows={s: len(parts[s]) for s in SPLITS},
        **target_summary(parts, target, task, params.schema.classes), batches=batches,
        test_window={"rule": windows.describe_rule(params.prepare),
                     "forward": windows.is_forward(trained, batches["test"]),
                     "label": windows.label(batches["test"], len(parts["test"]), trained)})
    figures = BiasReport.from_detail(report)
    out = root / params.paths.prepared
    reports = root / params.paths.reports
    reports.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp, staged() as st:
        for s in SPLITS:
            parts[s].to_parquet(tmp / SPLIT_FILE.format(split=s), index=False)
        for s, w in weights.items():
            pd.DataFrame({"weight": w}).to_parquet(tmp / WEIGHTS.format(split=s), index=False)
        st.json(reports / PREPARE_REPORT, summary.to_json())
        st.json(reports / BIAS_REPORT, figures.to_json())
        st.json(reports / BIAS_DETAIL, report)
        st.text(reports / BIAS_HTML, render_html(report, summary, figures))
    return PrepareResult(out, summary.rows, report)


def _fmt(x: float | None) -> str:
    return "not measurable" if x is None else f"{x:.3f}"


def _small_note(f: dict, min_rows: int | None) -> str:
    """Which groups the headline figures leave out (fewer than bias.min_group_rows rows)."""
    small = f.get("small_groups") or {}
    if f.get("not_measurable"):
        return f"<p class='note'>No headline figure: {html.esc(f['not_measurable'])}.</p>"
    if not small:
        return ""
    listed = ", ".join(f"{g} ({n} row{'s' if n != 1 else ''})" for g, n in small.items())
    return (f"<p class='note'>Too small for the headline figures (fewer than "
            f"bias.min_group_rows = {min_rows} rows): {html.esc(listed)}; shown in the table, "
            "not counted in the gap or the disparate impact.</p>")


def _rate_chart(split_data: dict, reweighed: dict, feature: str) -> str:
    groups = split_data["features"][feature]["groups"]
    names = list(groups)
    raw = [groups[g]["positive_rate"] for g in names]
    rw = [reweighed["features"][feature]["groups"].get(g, {}).get("positive_rate", np.nan)
          for g in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y - 0.2, raw, height=0.4, label="observed")
    ax.barh(y + 0.2, rw, height=0.4, label="after reweighing")
    ax.axvline(split_data["positive_rate"], color="k", ls="--", lw=1, label="overall")
    ax.set_yticks(y, names)
    ax.set_xlabel("positive-label rate (train)")
    html.legend_outside(ax)
    return html.figure(fig)


def _shares_chart(split_data: dict, feature: str) -> str:
    """Multiclass: each group's class shares as one stacked bar."""
    groups = split_data["features"][feature]["groups"]
    names = list(groups)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    left = np.zeros(len(names))
    for c in split_data["class_shares"]:
        share = np.array([groups[g]["class_shares"][c] for g in names])
        ax.barh(names, share, left=left, label=c)
        left += share
    ax.set_xlabel("class share (train)")
    html.legend_outside(ax)
    return html.figure(fig)


def _target_chart(split_data: dict, feature: str) -> str:
    """Regression: each group's target median, quartiles and 10-90 % range."""
    groups = split_data["features"][feature]["groups"]
    names = list(groups)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    for i, g in enumerate(names):
        v = groups[g]
        ax.plot([v["q10"], v["q90"]], [i, i], color="grey", lw=1)
        ax.plot([v["q25"], v["q75"]], [i, i], color="C0", lw=6)
        ax.plot([v["mean"]], [i], "k|", ms=14)
    ax.axvline(split_data["mean"], color="k", ls="--", lw=1, label="overall mean")
    ax.set_yticks(y, names)
    ax.set_xlabel("target (train): 10-90 % range, quartiles, mean")
    html.legend_outside(ax)
    return html.figure(fig)


def _feature_section(report: dict, figures: BiasReport, feat: str) -> list[str]:
    """One sensitive feature's tables and chart, per task."""
    train = report["splits"]["train"]
    f = train["features"][feat]
    rw = report["train_reweighed"]["features"][feat]["groups"]
    out = [f"<h2>{html.esc(feat)} (reference: {html.esc(f['reference_group'])})</h2>"]
    rows, classes = [], []
    min_rows = train.get("min_group_rows")

    def small(v: dict) -> str:
        return "too small" if v.get("too_small") else ""

    head, after = figures.train[feat], figures.train_reweighed[feat]
    if head.mean_gap is not None:  # regression
        for g, v in f["groups"].items():
            rows.append([g, v["count"], small(v), v["share"], v["mean"], v["std"], v["q10"],
                         v["q50"], v["q90"], v["mean_difference"], v["missing_rate"]])
        out.append(html.table(["group", "rows", "", "share", "target mean", "target std",
                               "10 %", "median", "90 %", "mean difference (std)",
                               "rows with a missing value"], rows))
        out.append(f"<p>Gap between group means: {_fmt(head.mean_gap)} standard deviations "
                   "of the target.</p>")
        out.append(_small_note(f, min_rows))
        out.append(_target_chart(train, feat))
        return out
    names = list(train.get("class_shares", {}))
    for g, v in f["groups"].items():
        figures = ([v["positive_rate"], rw[g]["positive_rate"]] if not names
                   else [v["class_shares"][c] for c in names])
        rows.append([g, v["count"], small(v), v["share"], *figures, v["disparate_impact"],
                     v["missing_rate"]])
        classes.append("bad" if v["disparate_impact"] < report["threshold"]
                       and not v.get("too_small") else None)
    figure_cols = (["positive rate", "positive rate (reweighed)"] if not names
                   else [f"share {c}" for c in names])
    out.append(html.table(["group", "rows", "", "share", *figure_cols, "disparate impact",
                           "rows with a missing value"], rows, classes))
    out.append(f"<p>Min/max disparate impact: {_fmt(head.disparate_impact_min)} (after "
               f"reweighing: {_fmt(after.disparate_impact_min)}); statistical parity "
               f"difference {_fmt(head.statistical_parity_difference)}.</p>")
    out.append(_small_note(f, min_rows))
    out.append(_rate_chart(train, report["train_reweighed"], feat) if not names
               else _shares_chart(train, feat))
    return out


def _target_cells(summary: PrepareReport, s: str) -> list:
    if summary.positive_rate is not None:
        return [summary.positive_rate[s]]
    if summary.class_shares is not None:
        return [", ".join(f"{k}: {v:.3f}" for k, v in summary.class_shares[s].items())]
    return [(summary.target_mean or {})[s], (summary.target_std or {})[s]]


def render_html(report: dict, summary: PrepareReport, figures: BiasReport) -> str:
    target_cols = {"binary": ["positive rate"], "multiclass": ["class shares"],
                   "regression": ["target mean", "target std"]}[report.get("task", "binary")]
    sections = [
        "<p class='note'>Data bias per sensitive feature. Disparate impact = a group's positive "
        "rate (multiclass: the smallest ratio of its class shares) / the reference group's; "
        "under the threshold (four-fifths rule) is flagged. For a numeric target: the target's "
        "mean and spread per group. Reweighing (Kamiran &amp; Calders) weights each "
        "(group, label) by P(g)P(y)/P(g,y).</p>",
        "<h2>Splits</h2>",
        html.table(["split", "rows", *target_cols, "batches"],
                   [[s, summary.rows[s], *_target_cells(summary, s),
                     ", ".join(summary.batches[s])] for s in SPLITS]),
    ]
    if summary.test_window:
        sections.append(f"<p>Test: {html.esc(summary.test_window['label'])} "
                        f"({html.esc(summary.test_window['rule'])}).</p>")
    train = report["splits"]["train"]
    if not train["features"]:
        sections.append("<p class='note'>No sensitive feature is declared (schema.sensitive): "
                        "there is no group to measure bias for.</p>")
    if report["reweighing"].get("note"):
        sections.append(f"<p class='note'>{html.esc(report['reweighing']['note'])}</p>")
    for feat in train["features"]:
        sections.extend(_feature_section(report, figures, feat))
    return html.page("tarn: data bias report", sections)
