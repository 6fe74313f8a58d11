"""Model quality and fairness figures: pure functions of labels, scores and groups.

One definition serves evaluation, the promotion gates, monitoring and retraining, so a figure
means the same thing wherever it is shown.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tarn.core.task import calibration_curve


def quality(y: np.ndarray, proba: np.ndarray, threshold: float, bins: int) -> dict:
    """Pure: the test-set quality figures of one model."""
    pred = (proba >= threshold).astype(int)
    frac, mean = calibration_curve(y, proba, bins)
    counts = np.histogram(proba, bins=np.linspace(0, 1, bins + 1))[0]
    nonempty = counts[counts > 0]
    ece = float(np.sum(nonempty / len(y) * np.abs(frac - mean))) if len(frac) else float("nan")
    return {
        "logloss": float(skm.log_loss(y, proba, labels=[0, 1])),
        "roc_auc": float(skm.roc_auc_score(y, proba)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred)),
        "brier": float(skm.brier_score_loss(y, proba)),
        "calibration_error": ece,
        "positive_rate_predicted": float(pred.mean()),
        "rows": int(len(y)),
    }


def fairness(y: np.ndarray, pred: np.ndarray, frame: pd.DataFrame, features: list[str]) -> dict:
    """Per-group figures and disparity differences for each sensitive feature (fairlearn)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    out = {}
    for feat in features:
        groups = frame[feat].astype(object).where(frame[feat].notna(), "<missing>").to_numpy()
        mf = MetricFrame(
            metrics={"count": count, "selection_rate": selection_rate,
                     "tpr": true_positive_rate, "fpr": false_positive_rate,
                     "accuracy": skm.accuracy_score},
            y_true=y, y_pred=pred, sensitive_features=groups)
        out[feat] = {
            "demographic_parity_difference": float(
                demographic_parity_difference(y, pred, sensitive_features=groups)),
            "equalized_odds_difference": float(
                equalized_odds_difference(y, pred, sensitive_features=groups)),
            "groups": {str(g): {k: float(v) for k, v in row.items()}
                       for g, row in mf.by_group.iterrows()},
        }
    return out


def primary(name: str, y: np.ndarray, proba: np.ndarray) -> float:
    """The gate metric by name: ``logloss`` (lower is better) or ``roc_auc``."""
    return float(skm.log_loss(y, proba, labels=[0, 1]) if name == "logloss"
                 else skm.roc_auc_score(y, proba))
