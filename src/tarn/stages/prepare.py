"""The prepare stage: split, analyse bias, compute reweighing weights.

Test = the batches named by ``prepare.test_batches`` (the latest ones, as `tarn init` sets it,
or a published split such as the demo's official test file); validation is a seeded,
label-stratified share of the rest. Normalization is *not* applied here: it is fitted on the
training split inside the model Pipeline (:mod:`tarn.core.features`), so serving and the edge
bundle apply exactly the same transform.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tarn.config import Params, stage_view
from tarn.core import bias
from tarn.core import html_report as html
from tarn.core.catalog import (
    BIAS_DETAIL,
    BIAS_HTML,
    BIAS_REPORT,
    PREPARE_REPORT,
    SPLIT_FILE,
    SPLITS,
    WEIGHTS,
    curated_table,
)
from tarn.core.files import atomic_dir, staged
from tarn.errors import TarnError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
READS = ("schema", "prepare.test_batches", "prepare.valid_fraction", "prepare.seed", "bias")
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
    is_test = df["batch"].map(lambda b: any(fnmatch.fnmatch(b, p) for p in cfg.test_batches))
    test, rest = df[is_test], df[~is_test]
    if test.empty:
        raise TarnError(f"no batch matches prepare.test_batches {cfg.test_batches}",
                        "fix the patterns in params.yaml (see `tarn lake list`)")
    if rest.empty:
        raise TarnError("every batch is a test batch: nothing left to train on",
                        "narrow prepare.test_batches in params.yaml")
    strat = rest[target] if rest[target].value_counts().min() >= 2 else None
    train, valid = train_test_split(rest, test_size=cfg.valid_fraction, random_state=cfg.seed,
                                    stratify=strat)
    return {"train": train.reset_index(drop=True), "valid": valid.reset_index(drop=True),
            "test": test.reset_index(drop=True)}


def run(params: Params, root: Path) -> PrepareResult:
    params = stage_view(params, "prepare", READS, AMBIENT)
    df = pd.read_parquet(curated_table(params, root))
    parts = split(df, params)
    target = params.schema.target.name
    bcfg = params.bias
    features = bcfg.reweighing_features
    if features:  # weights for the mitigated model (and its comparison without them)
        table = bias.reweighing_table(parts["train"], features, target)
        weights = {s: bias.apply_weights(parts[s], table, features, target)
                   for s in ("train", "valid")}
    else:  # no sensitive feature to reweigh by: every row weighs 1, and the report says so
        table = pd.DataFrame()
        weights = {s: np.ones(len(parts[s])) for s in ("train", "valid")}
    report = {
        "mitigation": bcfg.mitigation,
        "threshold": bcfg.disparate_impact_threshold,
        "reweighing": {"features": features, "table": table.to_dict("records"),
                       "note": "" if features else "no reweighing feature declared "
                                                   "(bias.reweighing_features): weights are 1"},
        "splits": {s: bias.data_bias(parts[s], params.schema, bcfg) for s in SPLITS},
        "train_reweighed": bias.data_bias(parts["train"], params.schema, bcfg, weights["train"]),
    }
    summary = {
        "rows": {s: len(parts[s]) for s in SPLITS},
        "positive_rate": {s: float(parts[s][target].mean()) for s in SPLITS},
        "batches": {s: sorted(parts[s]["batch"].unique().tolist()) for s in SPLITS},
    }
    out = root / params.paths.prepared
    reports = root / params.paths.reports
    reports.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp, staged() as st:
        for s in SPLITS:
            parts[s].to_parquet(tmp / SPLIT_FILE.format(split=s), index=False)
        for s, w in weights.items():
            pd.DataFrame({"weight": w}).to_parquet(tmp / WEIGHTS.format(split=s), index=False)
        st.json(reports / PREPARE_REPORT, summary)
        st.json(reports / BIAS_REPORT, _metrics(report))
        st.json(reports / BIAS_DETAIL, report)
        st.text(reports / BIAS_HTML, render_html(report, summary))
    return PrepareResult(out, summary["rows"], report)


def _metrics(report: dict) -> dict:
    """The flat figures DVC shows and diffs (the detail lives in bias_detail.json)."""
    out: dict = {}
    for name, data in [*report["splits"].items(), ("train_reweighed", report["train_reweighed"])]:
        for feat, f in data["features"].items():
            out.setdefault(name, {})[feat] = {
                "disparate_impact_min": f["disparate_impact_min"],
                "statistical_parity_difference": f["statistical_parity_difference"],
                "positive_rate": {g: v["positive_rate"] for g, v in f["groups"].items()},
                "share": {g: v["share"] for g, v in f["groups"].items()},
            }
    return out


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
    ax.legend(loc="lower right", fontsize=8)
    return html.figure(fig)


def render_html(report: dict, summary: dict) -> str:
    sections = [
        "<p class='note'>Data bias per sensitive feature. Disparate impact = a group's positive "
        "rate / the reference group's; under the threshold (four-fifths rule) is flagged. "
        "Reweighing (Kamiran &amp; Calders) weights each (group, label) by P(g)P(y)/P(g,y).</p>",
        "<h2>Splits</h2>",
        html.table(["split", "rows", "positive rate", "batches"],
                   [[s, summary["rows"][s], summary["positive_rate"][s],
                     ", ".join(summary["batches"][s])] for s in SPLITS]),
    ]
    train = report["splits"]["train"]
    if not train["features"]:
        sections.append("<p class='note'>No sensitive feature is declared (schema.sensitive): "
                        "there is no group to measure bias for.</p>")
    if report["reweighing"].get("note"):
        sections.append(f"<p class='note'>{html.esc(report['reweighing']['note'])}</p>")
    for feat, f in train["features"].items():
        sections.append(f"<h2>{html.esc(feat)} (reference: {html.esc(f['reference_group'])})</h2>")
        rows, classes = [], []
        rw = report["train_reweighed"]["features"][feat]["groups"]
        for g, v in f["groups"].items():
            rows.append([g, v["count"], v["share"], v["positive_rate"], v["disparate_impact"],
                         rw[g]["positive_rate"], v["missing_rate"]])
            classes.append("bad" if v["disparate_impact"] < report["threshold"] else None)
        sections.append(html.table(
            ["group", "rows", "share", "positive rate", "disparate impact",
             "positive rate (reweighed)", "rows with a missing value"], rows, classes))
        sections.append(f"<p>Min/max disparate impact: {f['disparate_impact_min']:.3f} "
                        f"(after reweighing: "
                        f"{report['train_reweighed']['features'][feat]['disparate_impact_min']:.3f})"
                        "</p>")
        sections.append(_rate_chart(train, report["train_reweighed"], feat))
    return html.page("tarn: data bias report", sections)
