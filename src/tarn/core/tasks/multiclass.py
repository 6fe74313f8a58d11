"""Multiclass classification: one probability per class, the most probable class is the
label; fairness is the largest demographic parity difference over classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tarn.core.tasks.base import (
    LABEL,
    LIST_ROWS,
    PREDICTED,
    PREDICTION,
    Task,
    by_group,
    confusion_axes,
    proba_column,
    pyplot,
    rate_headline,
    register,
    save_figure,
    spread,
)


@register
class MulticlassTask(Task):
    KIND = "multiclass"
    CLASSIFICATION = True
    DEFAULT_CLASSES = ("0", "1")
    LOSS = "logloss"
    EVAL_METRIC = "mlogloss"
    OBJECTIVE = "multi:softprob"
    METRICS = ("logloss", "accuracy", "f1_macro")
    HIGHER_IS_BETTER = frozenset({"accuracy", "f1_macro"})
    PREDICT_FN = "predict_proba"
    REPORT_FIGURES = ("logloss", "accuracy", "f1_macro")
    HTML_QUALITY = ("logloss", "accuracy", "f1_macro")
    HTML_GROUPS = (("accuracy", "accuracy"),)
    TRIAL_FIGURES = {"accuracy": "accuracy"}
    COST_FIGURES = {"accuracy_cost": "accuracy"}
    GAP_MEANING = "largest demographic parity difference over classes (one against the rest)"
    GAP_MEASURE = "largest demographic parity difference over classes"
    GAP_NAME = "largest DPD over classes"
    REPORT_FAIRNESS = (("gap", "largest demographic parity difference over classes"),)
    ONNX_OUTPUTS = {"label": "label", "probabilities": "probabilities"}
    ONNX_OPTIONS = {"zipmap": False}

    def compatible(self, other: Task) -> str:
        if other.kind == self.kind and self.classes != other.classes:
            return (f"classes {list(self.classes)}, the champion's {list(other.classes)}: no "
                    "metric compares the two")
        return super().compatible(other)

    def explain_scale(self) -> str:
        return "log-odds per class (probabilities = softmax of the raw scores)"

    # ------------------------------------------------------------------ models
    def estimator(self, **params):
        from xgboost import XGBClassifier

        return XGBClassifier(**{"eval_metric": self.eval_metric, "objective": self.objective,
                                **params})

    def dask_estimator(self, dxgb, **params):
        return dxgb.DaskXGBClassifier(**params)

    def reference_estimator(self, seed: int):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)

    def scores(self, model, X) -> np.ndarray:
        proba = np.asarray(model.predict_proba(X), dtype=np.float64)
        # XGBoost's float32 softmax sums to 1 only within float32 rounding: renormalized in
        # float64, so every consumer (log loss, the server, monitoring) sees a distribution
        return proba / proba.sum(axis=1, keepdims=True)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(scores), axis=1).astype(np.int64)

    def missing_classes(self, y: np.ndarray) -> list[str]:
        """XGBoost cannot continue a K-class model on fewer classes."""
        present = set(np.unique(y).tolist())
        if present == set(range(self.n_classes)):
            return []
        return sorted(set(self.classes) - set(self.label_names(sorted(present))))

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(matrix, dtype=np.float64)

    # ------------------------------------------------------------------ figures
    def extra_quality(self, y: np.ndarray, scores: np.ndarray, bins: int) -> dict:
        from sklearn import metrics as skm

        pred = self.decide(scores)
        p, r, f, s = skm.precision_recall_fscore_support(y, pred,
                                                         labels=list(range(self.n_classes)),
                                                         zero_division=0)
        return {"per_class": {name: {"precision": float(p[i]), "recall": float(r[i]),
                                     "f1": float(f[i]), "support": int(s[i]),
                                     "predicted_share": float(np.mean(pred == i))}
                              for i, name in enumerate(self.classes)}}

    def group_fairness(self, y, scores, groups, min_rows):
        """Per class the share predicted (one class against the rest), accuracy; gap = the
        largest demographic parity difference over classes."""
        from fairlearn.metrics import MetricFrame, count, demographic_parity_difference
        from sklearn import metrics as skm

        pred = self.decide(scores)
        metrics = {"count": count, "accuracy": skm.accuracy_score}
        gaps = {}
        for i, name in enumerate(self.classes):
            metrics[f"share_{name}"] = _share_of(i)
            gaps[name] = float(demographic_parity_difference(
                (y == i).astype(int), (pred == i).astype(int), sensitive_features=groups))
        mf = MetricFrame(metrics=metrics, y_true=y, y_pred=pred, sensitive_features=groups)
        return {"demographic_parity_difference_by_class": gaps,
                "gap": spread(mf, [f"share_{c}" for c in self.classes], min_rows),
                "groups": by_group(mf)}, mf

    # ------------------------------------------------------------------ data bias
    def target_figures(self, y, w) -> dict:
        """The share of each class."""
        return {"class_shares": {name: float(np.average(y == i, weights=w))
                                 for i, name in enumerate(self.classes)}}

    def target_metrics(self) -> tuple[dict, dict]:
        return {}, {f"share_{i}": _class_share(i) for i in range(self.n_classes)}

    def group_target_figures(self, f) -> dict:
        return {"class_shares": {c: float(f[f"share_{i}"]) for i, c in enumerate(self.classes)}}

    def compare_to_reference(self, table, at_ref, target) -> None:
        """``disparate_impact``: the smallest ratio of class shares over the classes."""
        ref_shares = table.loc[at_ref, "class_shares"].iloc[0]
        table["disparate_impact"] = [
            min((s[c] / ref_shares[c] for c in self.classes if ref_shares[c] > 0),
                default=np.nan)
            for s in table["class_shares"]]

    def data_headline(self, h, measurable, overall, four_fifths) -> dict:
        """The largest statistical parity difference over the classes' shares."""
        rates = {c: h["class_shares"].map(lambda s, c=c: s[c]) for c in self.classes}
        return rate_headline(rates, h, measurable, four_fifths)

    # ------------------------------------------------------------------ plots
    def task_plots(self, y, proba, bins: int, out: Path) -> None:
        """Confusion matrix (counts, class names) and per-class precision / recall / F1."""
        import pandas as pd

        from tarn.core import html_report as html

        plt = pyplot()

        names = list(self.classes)
        pred = self.decide(proba)
        pd.DataFrame({"actual": self.label_names(y),
                      "predicted": self.label_names(pred)}).to_csv(out / "confusion.csv",
                                                                   index=False)
        per_class = self.quality(y, proba, bins)["per_class"]
        pd.DataFrame([{"class": c, **v} for c, v in per_class.items()]).to_csv(
            out / "per_class.csv", index=False)
        fig, ax = plt.subplots(1, 2, figsize=(8 + 0.8 * len(names), 5.5))
        confusion_axes(ax[0], self.confusion(y, proba), names)
        x = np.arange(len(names))
        for k, what in enumerate(("precision", "recall", "f1")):
            ax[1].bar(x + (k - 1) * 0.27, [per_class[c][what] for c in names], width=0.27,
                      label=what)
        ax[1].set_xticks(x, names, rotation=30, ha="right")
        ax[1].set(title="Per class", ylim=(0, 1.05))
        html.legend_outside(ax[1])
        save_figure(fig, out)

    # ------------------------------------------------------------------ serving
    def predict_rows(self, scores: np.ndarray) -> list[dict]:
        """``{"probabilities": {name: p, ...}, "label": i, "class": name}``."""
        scores = np.asarray(scores, dtype=np.float64)
        names = self.classes
        labels = self.decide(scores).tolist()
        return [{"probabilities": dict(zip(names, row, strict=True)), "label": k,
                 "class": names[k]} for row, k in zip(scores.tolist(), labels, strict=True)]

    def invocations_predictions(self, scores: np.ndarray) -> list | np.ndarray:
        """``predict_proba``: one list of class probabilities per row."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores.tolist() if len(scores) <= LIST_ROWS else scores

    def log_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """``proba_<i>`` per class index ``i`` and ``label``, the predicted class index."""
        scores = np.asarray(scores, dtype=np.float64)
        out = {proba_column(i): scores[:, i] for i in range(scores.shape[1])}
        out[LABEL] = self.decide(scores)
        return out

    def log_score_columns(self) -> list[str]:
        return [proba_column(i) for i in range(self.n_classes)]

    def drift_columns(self, scores):
        """Each class's probability and the predicted class (its mix)."""
        scores = np.asarray(scores, dtype=np.float64)
        cols = {f"{PREDICTED}_proba_{name}": scores[:, i]
                for i, name in enumerate(self.classes)}
        numeric = tuple(cols)
        cols[f"{PREDICTED}_class"] = np.asarray(self.label_names(self.decide(scores)),
                                                dtype=object)
        return cols, numeric, (f"{PREDICTED}_class",)

    def evidently_columns(self, scores: np.ndarray) -> dict:
        """``prediction`` (class index) and ``proba_<i>`` per class."""
        scores = np.asarray(scores)
        return {PREDICTION: self.decide(scores),
                **{proba_column(i): scores[:, i] for i in range(self.n_classes)}}

    def evidently_roles(self, target: str) -> dict:
        """Labels and probability columns named by class."""
        from evidently import MulticlassClassification

        return {"classification": [MulticlassClassification(
            target=target, prediction_labels=PREDICTION, prediction_probas=list(self.classes))]}

    def evidently_frame(self, data, source, target: str):
        """Target and prediction as class names, one probability column named by each class
        (Evidently 0.7 matches probability columns to label values by name)."""
        names = dict(enumerate(self.classes))
        out = data.assign(**{target: data[target].map(names),
                             PREDICTION: data[PREDICTION].map(names)})
        for i, name in enumerate(self.classes):
            out[name] = source[proba_column(i)].to_numpy()
        return out

    def explain_outputs(self) -> tuple[str, ...]:
        return self.classes


def _class_share(i: int):
    def share(y_true, y_pred, sample_weight=None) -> float:
        return float(np.average(np.asarray(y_true) == i, weights=sample_weight))
    share.__name__ = f"share_{i}"
    return share


def _share_of(i: int):
    def share(y_true, y_pred) -> float:
        return float(np.mean(np.asarray(y_pred) == i)) if len(y_pred) else 0.0
    share.__name__ = f"share_{i}"
    return share
