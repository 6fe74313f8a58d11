"""What a model predicts and how it is judged, for each task: binary, multiclass, regression.

One definition serves tuning (objective, validation loss), training, evaluation (figures),
the promotion gates, serving, the edge bundle and monitoring, so "the score of a row" and
"the label of a row" mean the same thing everywhere. The task travels with the model: it is
written into the model's ``MLmodel`` metadata (:meth:`Task.card`) and read back from there
(:meth:`Task.from_card`) by whatever loads a version, never taken from today's params.yaml.

Scores, by task: binary, the probability of class 1 (shape ``(n,)``); multiclass, one
probability per class (``(n, K)``); regression, the predicted value (``(n,)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from tarn.config import HIGHER_IS_BETTER, METRICS_BY_TASK, SchemaConfig

MISSING_GROUP = "<missing>"


@dataclass(frozen=True)
class Task:
    kind: str  # "binary" | "multiclass" | "regression"
    classes: tuple[str, ...] = field(default=())  # class names by index (classification)
    threshold: float = 0.5  # binary: probability at or above which a row is class 1
    target: str = "target"

    # ------------------------------------------------------------------ construction
    @classmethod
    def of(cls, schema: SchemaConfig, threshold: float = 0.5) -> Task:
        return cls(schema.task, tuple(schema.classes), float(threshold), schema.target.name)

    def card(self) -> dict:
        """What a loaded model needs to know about its own predictions (MLmodel metadata)."""
        return {"task": self.kind, "classes": list(self.classes), "threshold": self.threshold,
                "target": self.target}

    @classmethod
    def from_card(cls, card: dict | None) -> Task:
        """The task a model was trained for; a card without one is a binary model (every
        version before tasks existed)."""
        card = card or {}
        kind = str(card.get("task") or "binary")
        if kind not in METRICS_BY_TASK:
            raise ValueError(f"unknown task {kind!r} in the model's metadata")
        classes = tuple(str(c) for c in card.get("classes") or (() if kind == "regression"
                                                                  else ("0", "1")))
        return cls(kind, classes, float(card.get("threshold", 0.5)),
                   str(card.get("target") or "target"))

    # ------------------------------------------------------------------ facts
    @property
    def classification(self) -> bool:
        return self.kind != "regression"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def loss(self) -> str:
        """The validation loss tuning minimizes (and reports as ``val_<loss>``)."""
        return "rmse" if self.kind == "regression" else "logloss"

    @property
    def eval_metric(self) -> str:
        """XGBoost's name for :attr:`loss` (the key of ``evals_result()``)."""
        return {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}[self.kind]

    @property
    def objective(self) -> str:
        return {"binary": "binary:logistic", "multiclass": "multi:softprob",
                "regression": "reg:squarederror"}[self.kind]

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS_BY_TASK[self.kind]

    @property
    def primary(self) -> str:
        """The default gate metric: the task's loss."""
        return self.metrics[0]

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        return metric in HIGHER_IS_BETTER

    # ------------------------------------------------------------------ models
    def estimator(self, **params):
        """An unfitted XGBoost estimator for this task."""
        from xgboost import XGBClassifier, XGBRegressor

        params = {"eval_metric": self.eval_metric, "objective": self.objective, **params}
        if self.kind == "regression":
            return XGBRegressor(**params)
        return XGBClassifier(**params)

    def scores(self, model, X) -> np.ndarray:
        """The model's scores for ``X`` (see the module docstring for their shape)."""
        if self.kind == "regression":
            return np.asarray(model.predict(X), dtype=np.float64)
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        if self.kind == "binary":
            return proba[:, 1]
        # XGBoost's float32 softmax sums to 1 only within float32 rounding: renormalized in
        # float64, so every consumer (log loss, the server, monitoring) sees a distribution
        return proba / proba.sum(axis=1, keepdims=True)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Labels (class indexes) from scores; for regression the values themselves."""
        scores = np.asarray(scores)
        if self.kind == "binary":
            return (scores >= self.threshold).astype(np.int64)
        if self.kind == "multiclass":
            return np.argmax(scores, axis=1).astype(np.int64)
        return scores.astype(np.float64)

    def label_names(self, labels: np.ndarray) -> list[str]:
        return [self.classes[int(i)] for i in labels]

    # ------------------------------------------------------------------ figures
    def metric(self, name: str, y: np.ndarray, scores: np.ndarray) -> float:
        """One quality figure by name (see ``METRICS_BY_TASK``)."""
        y = np.asarray(y)
        if name == "logloss":
            return float(skm.log_loss(y, scores, labels=list(range(max(2, self.n_classes)))))
        if name == "roc_auc":
            return float(skm.roc_auc_score(y, scores))
        if name == "accuracy":
            return float(skm.accuracy_score(y, self.decide(scores)))
        if name == "f1_macro":
            return float(skm.f1_score(y, self.decide(scores), average="macro",
                                      labels=list(range(max(2, self.n_classes))),
                                      zero_division=0))
        if name == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, scores)))
        if name == "mae":
            return float(skm.mean_absolute_error(y, scores))
        if name == "r2":
            return float(skm.r2_score(y, scores))
        raise ValueError(f"unknown metric {name!r} for a {self.kind} task")

    def quality(self, y: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict:
        """Pure: the quality figures of one model on labelled rows."""
        y = np.asarray(y)
        out = {m: self.metric(m, y, scores) for m in self.metrics}
        if self.kind == "binary":
            pred = self.decide(scores)
            frac, mean = calibration_curve(y, scores, bins)
            counts = np.histogram(scores, bins=np.linspace(0, 1, bins + 1))[0]
            nonempty = counts[counts > 0]
            out.update(
                f1=float(skm.f1_score(y, pred, zero_division=0)),
                brier=float(skm.brier_score_loss(y, scores)),
                calibration_error=(float(np.sum(nonempty / len(y) * np.abs(frac - mean)))
                                   if len(frac) else float("nan")),
                positive_rate_predicted=float(pred.mean()),
                threshold=self.threshold)
        elif self.kind == "multiclass":
            pred = self.decide(scores)
            labels = list(range(self.n_classes))
            p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels,
                                                             zero_division=0)
            out["per_class"] = {name: {"precision": float(p[i]), "recall": float(r[i]),
                                       "f1": float(f[i]), "support": int(s[i]),
                                       "predicted_share": float(np.mean(pred == i))}
                                for i, name in enumerate(self.classes)}
        else:
            out["mean_prediction"] = float(np.mean(scores))
            out["mean_target"] = float(np.mean(y))
        out["rows"] = int(len(y))
        return out

    def confusion(self, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Counts: rows = true class, columns = predicted class."""
        return skm.confusion_matrix(y, self.decide(scores),
                                    labels=list(range(max(2, self.n_classes))))

    def fairness(self, y: np.ndarray, scores: np.ndarray, frame: pd.DataFrame,
                 features: list[str], min_group_rows: int = 1) -> dict:
        """Per sensitive feature: per-group figures (fairlearn's MetricFrame) and ``gap``, the
        one number the fairness gate reads (see ``promote.max_demographic_parity_difference``).

        The gap is taken over the groups with at least ``min_group_rows`` rows
        (``bias.min_group_rows``): a group of 3 rows has a selection rate of 0, 1/3, 2/3 or 1
        by chance alone, and would decide the gate. Smaller groups are still shown, and listed
        under ``small_groups``; the fairlearn differences beside the gap cover every group.
        With fewer than two groups that large the gap is None: not measurable on these rows.

        binary: selection rate, TPR, FPR, accuracy; gap = demographic parity difference.
        multiclass: per class the share predicted (one class against the rest), accuracy;
        gap = the largest demographic parity difference over classes.
        regression: MAE, mean prediction and mean target; gap = the spread of group mean
        predictions as a share of the target's standard deviation.
        """
        from fairlearn.metrics import (
            MetricFrame,
            count,
            demographic_parity_difference,
            equalized_odds_difference,
            false_positive_rate,
            selection_rate,
            true_positive_rate,
        )

        y = np.asarray(y)
        out: dict = {}
        for feat in features:
            groups = group_values(frame[feat])
            if self.kind == "binary":
                pred = self.decide(scores)
                mf = MetricFrame(
                    metrics={"count": count, "selection_rate": selection_rate,
                             "tpr": true_positive_rate, "fpr": false_positive_rate,
                             "accuracy": skm.accuracy_score},
                    y_true=y, y_pred=pred, sensitive_features=groups)
                dpd = float(demographic_parity_difference(y, pred, sensitive_features=groups))
                out[feat] = {
                    "demographic_parity_difference": dpd,
                    "equalized_odds_difference": float(
                        equalized_odds_difference(y, pred, sensitive_features=groups)),
                    "gap": _spread(mf, ["selection_rate"], min_group_rows),
                    "groups": _by_group(mf)}
            elif self.kind == "multiclass":
                pred = self.decide(scores)
                metrics = {"count": count, "accuracy": skm.accuracy_score}
                gaps = {}
                for i, name in enumerate(self.classes):
                    metrics[f"share_{name}"] = _share_of(i)
                    gaps[name] = float(demographic_parity_difference(
                        (y == i).astype(int), (pred == i).astype(int), sensitive_features=groups))
                mf = MetricFrame(metrics=metrics, y_true=y, y_pred=pred,
                                 sensitive_features=groups)
                out[feat] = {"demographic_parity_difference_by_class": gaps,
                             "gap": _spread(mf, [f"share_{c}" for c in self.classes],
                                            min_group_rows),
                             "groups": _by_group(mf)}
            else:
                pred = np.asarray(scores, dtype=np.float64)
                mf = MetricFrame(
                    metrics={"count": count, "mae": skm.mean_absolute_error,
                             "mean_prediction": _mean_pred, "mean_target": _mean_true},
                    y_true=y, y_pred=pred, sensitive_features=groups)
                means = mf.by_group["mean_prediction"]
                std = float(np.std(y)) or 1.0
                out[feat] = {"mean_prediction_gap": float((means.max() - means.min()) / std),
                             "mae_difference": float(mf.difference()["mae"]),
                             "gap": _scaled(_spread(mf, ["mean_prediction"], min_group_rows),
                                            std),
                             "groups": _by_group(mf)}
            small = {str(g): int(n) for g, n in mf.by_group["count"].items()
                     if n < min_group_rows}
            out[feat]["small_groups"] = small
            out[feat]["min_group_rows"] = int(min_group_rows)
        return out


def _spread(mf, columns: list[str], min_rows: int) -> float | None:
    """The largest (max - min over groups) of ``columns``, over groups of ``min_rows`` or
    more rows; None when fewer than two groups are that large (not measurable)."""
    big = mf.by_group[mf.by_group["count"] >= min_rows]
    if len(big) < 2:
        return None
    return float(max(big[c].max() - big[c].min() for c in columns))


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value / scale


def group_values(col: pd.Series) -> np.ndarray:
    """A sensitive column as group names, missing values as their own group."""
    return col.astype(object).where(col.notna(), MISSING_GROUP).to_numpy()


def _by_group(mf) -> dict:
    return {str(g): {k: float(v) for k, v in row.items()} for g, row in mf.by_group.iterrows()}


def _share_of(i: int):
    def share(y_true, y_pred) -> float:
        return float(np.mean(np.asarray(y_pred) == i)) if len(y_pred) else 0.0
    share.__name__ = f"share_{i}"
    return share


def _mean_pred(y_true, y_pred) -> float:
    return float(np.mean(y_pred))


def _mean_true(y_true, y_pred) -> float:
    return float(np.mean(y_true))


def calibration_curve(y: np.ndarray, proba: np.ndarray, bins: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """(fraction of positives, mean predicted) per non-empty uniform bin."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    frac, mean = [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            frac.append(y[m].mean())
            mean.append(proba[m].mean())
    return np.array(frac), np.array(mean)
