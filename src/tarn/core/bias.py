"""Bias analysis and correction for sensitive groups.

Data bias: group sizes and shares, what the target looks like per group (positive rate, class
shares, or the target's mean and quantiles), disparate impact against a privileged (reference)
group, and missingness per group. Correction: reweighing (Kamiran & Calders 2012),
``w(g, y) = P(g) P(y) / P(g, y)``, which makes label and group independent in the weighted
training data; it applies to class labels (binary or multiclass), not to a numeric target.
Pure functions; the prepare stage does the I/O.
"""

from __future__ import annotations

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


def _target_figures(y: pd.Series, w: pd.Series, task: str, classes: list[str]) -> dict:
    """What the target looks like in one group: the positive rate (binary), the share of each
    class (multiclass), or the target's mean, spread and quartiles (regression)."""
    if task == "binary":
        return {"positive_rate": float(np.average(y, weights=w))}
    if task == "multiclass":
        return {"class_shares": {name: float(np.average(y == i, weights=w))
                                 for i, name in enumerate(classes)}}
    mean = float(np.average(y, weights=w))
    q = np.quantile(y.astype(np.float64), [0.1, 0.25, 0.5, 0.75, 0.9]) if len(y) else [np.nan] * 5
    return {"mean": mean, "std": float(np.sqrt(np.average((y - mean) ** 2, weights=w))),
            **{f"q{int(p * 100)}": float(v) for p, v in zip((0.1, 0.25, 0.5, 0.75, 0.9), q,
                                                           strict=True)}}


def group_table(df: pd.DataFrame, feature: str, target: str, feature_cols: list[str],
                privileged: str | None, weights: np.ndarray | None = None,
                task: str = "binary", classes: list[str] | None = None) -> pd.DataFrame:
    """Per-group figures for one sensitive feature (weighted when ``weights`` given).

    ``disparate_impact`` compares each group with the reference (privileged, else largest)
    group: binary, the ratio of positive rates; multiclass, the smallest ratio of class shares
    over the classes; regression, the difference in target mean as a share of the target's
    standard deviation (``mean_difference``; there is no label to have an impact on)."""
    classes = list(classes or [])
    w = pd.Series(np.ones(len(df)) if weights is None else weights, index=df.index)
    g = group_key(df, [feature])
    any_missing = df[feature_cols].isna().any(axis=1)
    rows = []
    for name, idx in g.groupby(g).groups.items():
        rows.append({
            "group": name,
            "count": int(len(idx)),
            "share": len(idx) / len(df),
            **_target_figures(df.loc[idx, target], w[idx], task, classes),
            "missing_rate": float(any_missing[idx].mean()),
            "missing_by_column": {c: float(df.loc[idx, c].isna().mean())
                                  for c in feature_cols if df.loc[idx, c].isna().any()},
        })
    table = pd.DataFrame(rows).sort_values("count", ascending=False).reset_index(drop=True)
    ref = privileged if privileged in set(table["group"]) else table.loc[0, "group"]
    at_ref = table["group"] == ref
    if task == "binary":
        ref_rate = float(table.loc[at_ref, "positive_rate"].iloc[0])
        table["disparate_impact"] = table["positive_rate"] / ref_rate if ref_rate > 0 else np.nan
    elif task == "multiclass":
        ref_shares = table.loc[at_ref, "class_shares"].iloc[0]
        table["disparate_impact"] = [
            min((s[c] / ref_shares[c] for c in classes if ref_shares[c] > 0), default=np.nan)
            for s in table["class_shares"]]
    else:
        std = float(np.std(df[target].astype(np.float64))) or 1.0
        ref_mean = float(table.loc[at_ref, "mean"].iloc[0])
        table["mean_difference"] = (table["mean"] - ref_mean) / std
    table.attrs["reference"] = ref
    return table


def data_bias(df: pd.DataFrame, schema: SchemaConfig, cfg: BiasConfig,
              weights: np.ndarray | None = None) -> dict:
    """Bias figures for every sensitive feature of the contract, as a JSON-able dict.

    Per feature, for every task: the reference group, the groups' figures and ``gap``, one
    number for "how unequal is the target across groups": binary, the statistical parity
    difference (largest minus smallest positive rate); multiclass, the largest such difference
    over the classes' shares; regression, the spread of group means as a share of the
    target's standard deviation."""
    target = schema.target.name
    task, classes = schema.task, schema.classes
    w = np.ones(len(df)) if weights is None else np.asarray(weights, dtype=np.float64)
    overall = _target_figures(df[target], pd.Series(w, index=df.index), task, classes)
    out: dict = {"rows": int(len(df)), "task": task, **overall, "features": {}}
    for feat in schema.sensitive:
        t = group_table(df, feat, target, schema.feature_names, cfg.privileged.get(feat),
                        weights, task, classes)
        groups = {r["group"]: {k: r[k] for k in t.columns if k != "group"}
                  for r in t.to_dict("records")}
        entry: dict = {"reference_group": t.attrs["reference"]}
        if task == "regression":
            std = overall["std"] or 1.0
            entry["mean_gap"] = float((t["mean"].max() - t["mean"].min()) / std)
            entry["gap"] = entry["mean_gap"]
        else:
            if task == "binary":
                rates = {"positive": t["positive_rate"]}
            else:
                rates = {c: t["class_shares"].map(lambda s, c=c: s[c]) for c in classes}
            entry["disparate_impact_min"] = float(min(
                (r.min() / r.max() if r.max() > 0 else np.nan) for r in rates.values()))
            entry["statistical_parity_difference"] = float(max(
                r.max() - r.min() for r in rates.values()))
            entry["gap"] = entry["statistical_parity_difference"]
            entry["passes_four_fifths"] = bool(
                (t["disparate_impact"].dropna() >= cfg.disparate_impact_threshold).all())
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
    if task == "regression":
        return REWEIGHING_NOT_APPLICABLE
    if not features:
        return "no reweighing feature declared (bias.reweighing_features): weights are 1"
    return ""
