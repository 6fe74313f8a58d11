"""Bias analysis and correction for sensitive groups.

Data bias: group sizes and shares, positive-label rate, disparate impact against a privileged
(reference) group, and missingness per group. Correction: reweighing (Kamiran & Calders 2012),
``w(g, y) = P(g) P(y) / P(g, y)``, which makes label and group independent in the weighted
training data. Pure functions; the prepare stage does the I/O.
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


def group_table(df: pd.DataFrame, feature: str, target: str, feature_cols: list[str],
                privileged: str | None, weights: np.ndarray | None = None) -> pd.DataFrame:
    """Per-group figures for one sensitive feature (weighted rates when ``weights`` given)."""
    w = pd.Series(np.ones(len(df)) if weights is None else weights, index=df.index)
    g = group_key(df, [feature])
    any_missing = df[feature_cols].isna().any(axis=1)
    rows = []
    for name, idx in g.groupby(g).groups.items():
        wi = w[idx]
        rows.append({
            "group": name,
            "count": int(len(idx)),
            "share": len(idx) / len(df),
            "positive_rate": float(np.average(df.loc[idx, target], weights=wi)),
            "missing_rate": float(any_missing[idx].mean()),
            "missing_by_column": {c: float(df.loc[idx, c].isna().mean())
                                  for c in feature_cols if df.loc[idx, c].isna().any()},
        })
    table = pd.DataFrame(rows).sort_values("count", ascending=False).reset_index(drop=True)
    ref = privileged if privileged in set(table["group"]) else table.loc[0, "group"]
    ref_rate = float(table.loc[table["group"] == ref, "positive_rate"].iloc[0])
    table["disparate_impact"] = table["positive_rate"] / ref_rate if ref_rate > 0 else np.nan
    table.attrs["reference"] = ref
    return table


def data_bias(df: pd.DataFrame, schema: SchemaConfig, cfg: BiasConfig,
              weights: np.ndarray | None = None) -> dict:
    """Bias figures for every sensitive feature of the contract, as a JSON-able dict."""
    target = schema.target.name
    out: dict = {"rows": int(len(df)), "positive_rate": float(df[target].mean()), "features": {}}
    for feat in schema.sensitive:
        t = group_table(df, feat, target, schema.feature_names, cfg.privileged.get(feat), weights)
        rates = t["positive_rate"]
        di_min = float(rates.min() / rates.max()) if rates.max() > 0 else float("nan")
        out["features"][feat] = {
            "reference_group": t.attrs["reference"],
            "disparate_impact_min": di_min,
            "statistical_parity_difference": float(rates.max() - rates.min()),
            "passes_four_fifths": bool(
                (t["disparate_impact"].dropna() >= cfg.disparate_impact_threshold).all()),
            "groups": {r["group"]: {k: r[k] for k in t.columns if k != "group"}
                       for r in t.to_dict("records")},
        }
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
