"""Binary classification: the probability of class 1 decides the label at the version's
threshold; fairness is the demographic parity difference of the decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tarn.core.tasks.base import (
    LIST_ROWS,
    PREDICTED,
    PREDICTION,
    PROBA,
    Task,
    by_group,
    calibration_curve,
    confusion_axes,
    pyplot,
    rate_headline,
    register,
    save_figure,
    spread,
)


@register
class BinaryTask(Task):
    KIND = "binary"
    CLASSIFICATION = True
    DEFAULT_CLASSES = ("0", "1")
    LOSS = "logloss"
    EVAL_METRIC = "logloss"
    OBJECTIVE = "binary:logistic"
    METRICS = ("logloss", "roc_auc", "accuracy", "f1_macro")
    HIGHER_IS_BETTER = frozenset({"roc_auc", "accuracy", "f1_macro"})
    PREDICT_FN = "predict_proba"
    REPORT_FIGURES = ("logloss", "roc_auc", "accuracy", "f1", "brier", "calibration_error")
    HTML_QUALITY = ("logloss", "roc_auc", "accuracy", "f1", "brier", "calibration_error",
                    "positive_rate_predicted")
    HTML_GROUPS = (("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                   ("accuracy", "accuracy"))
    TRIAL_FIGURES = {"auc": "roc_auc"}
    COST_FIGURES = {"auc_cost": "roc_auc"}
    GAP_MEANING = "demographic parity difference (selection rates)"
    GAP_MEASURE = "demographic parity difference"
    GAP_NAME = "DPD"
    REPORT_FAIRNESS = (("demographic_parity_difference", "demographic parity difference"),
                       ("equalized_odds_difference", "equalized odds difference"))
    ONNX_OUTPUTS = {"label": "label", "probabilities": "probabilities"}
    ONNX_OPTIONS = {"zipmap": False}

    @property
    def decision_threshold(self) -> float | None:
        return self.threshold

    @property
    def positive(self) -> str:
        return self.classes[1] if len(self.classes) > 1 else "1"

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
        return np.asarray(model.predict_proba(X), dtype=np.float64)[:, 1]

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) >= self.threshold).astype(np.int64)

    # ------------------------------------------------------------------ figures
    def measurable(self, y) -> bool:
        """Both classes present (ROC AUC needs them)."""
        import pandas as pd

        return pd.Series(y).nunique() > 1

    def extra_quality(self, y: np.ndarray, scores: np.ndarray, bins: int) -> dict:
        from sklearn import metrics as skm

        pred = self.decide(scores)
        frac, mean = calibration_curve(y, scores, bins)
        counts = np.histogram(scores, bins=np.linspace(0, 1, bins + 1))[0]
        nonempty = counts[counts > 0]
        return {"f1": float(skm.f1_score(y, pred, zero_division=0)),
                "brier": float(skm.brier_score_loss(y, scores)),
                "calibration_error": (float(np.sum(nonempty / len(y) * np.abs(frac - mean)))
                                      if len(frac) else float("nan")),
                "positive_rate_predicted": float(pred.mean()),
                "threshold": self.threshold}

    def group_fairness(self, y, scores, groups, min_rows):
        """Selection rate, TPR, FPR, accuracy; gap = demographic parity difference."""
        from fairlearn.metrics import (
            MetricFrame,
            count,
            demographic_parity_difference,
            equalized_odds_difference,
            false_positive_rate,
            selection_rate,
            true_positive_rate,
        )
        from sklearn import metrics as skm

        pred = self.decide(scores)
        mf = MetricFrame(
            metrics={"count": count, "selection_rate": selection_rate,
                     "tpr": true_positive_rate, "fpr": false_positive_rate,
                     "accuracy": skm.accuracy_score},
            y_true=y, y_pred=pred, sensitive_features=groups)
        dpd = float(demographic_parity_difference(y, pred, sensitive_features=groups))
        return {"demographic_parity_difference": dpd,
                "equalized_odds_difference": float(
                    equalized_odds_difference(y, pred, sensitive_features=groups)),
                "gap": spread(mf, ["selection_rate"], min_rows),
                "groups": by_group(mf)}, mf

    def fairness_changes(self, feat: str, fa: dict, fb: dict) -> dict:
        return {f"eod_change_{feat}": (fa["equalized_odds_difference"]
                                       - fb["equalized_odds_difference"])}

    # ------------------------------------------------------------------ data bias
    def target_figures(self, y, w) -> dict:
        """The positive rate."""
        return {"positive_rate": float(np.average(y, weights=w))}

    def target_metrics(self) -> tuple[dict, dict]:
        from fairlearn.metrics import selection_rate

        return {}, {"positive_rate": selection_rate}  # fairlearn's selection rate of labels

    def group_target_figures(self, f) -> dict:
        return {"positive_rate": float(f["positive_rate"])}

    def compare_to_reference(self, table, at_ref, target) -> None:
        """``disparate_impact``: the ratio of positive rates."""
        ref_rate = float(table.loc[at_ref, "positive_rate"].iloc[0])
        table["disparate_impact"] = table["positive_rate"] / ref_rate if ref_rate > 0 else np.nan

    def data_headline(self, h, measurable, overall, four_fifths) -> dict:
        return rate_headline({"positive": h["positive_rate"]}, h, measurable, four_fifths)

    # ------------------------------------------------------------------ plots
    def task_plots(self, y, proba, bins: int, out: Path) -> None:
        """ROC, precision-recall, calibration and the confusion matrix."""
        import pandas as pd
        from sklearn import metrics as skm

        plt = pyplot()

        fpr, tpr, _ = skm.roc_curve(y, proba)
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(out / "roc.csv", index=False)
        prec, rec, _ = skm.precision_recall_curve(y, proba)
        step = max(1, len(prec) // 2000)  # a readable curve, not one point per row
        pd.DataFrame({"recall": rec[::step], "precision": prec[::step]}).to_csv(
            out / "pr.csv", index=False)
        frac, mean = calibration_curve(y, proba, bins)
        pd.DataFrame({"mean_predicted": mean, "fraction_positive": frac}).to_csv(
            out / "calibration.csv", index=False)
        pred = self.decide(proba)
        pd.DataFrame({"actual": y, "predicted": pred}).to_csv(out / "confusion.csv",
                                                              index=False)
        # two by two at 110 dpi: each panel about 600 px wide on the page, labels readable
        fig, axes = plt.subplots(2, 2, figsize=(11, 9))
        ax = axes.ravel()
        ax[0].plot(fpr, tpr)
        ax[0].plot([0, 1], [0, 1], "k:", lw=1)
        ax[0].set(title=f"ROC (AUC {skm.roc_auc_score(y, proba):.4f})", xlabel="FPR",
                  ylabel="TPR")
        ax[1].plot(rec, prec)
        ax[1].set(title="Precision-recall", xlabel="recall", ylabel="precision")
        ax[2].plot(mean, frac, "o-")
        ax[2].plot([0, 1], [0, 1], "k:", lw=1)
        ax[2].set(title="Calibration", xlabel="mean predicted", ylabel="fraction positive")
        confusion_axes(ax[3], self.confusion(y, proba), ["0", "1"])
        save_figure(fig, out)

    # ------------------------------------------------------------------ serving
    def predict_rows(self, scores: np.ndarray) -> list[dict]:
        """``{"probability": p, "label": 0|1, "class": name}``, ``label`` 1 when ``p`` reaches
        the threshold (decide's rule without numpy: the hot single-row path)."""
        thr, no, yes = self.threshold, self.classes[0], self.classes[1]
        return [{"probability": p, "label": 1, "class": yes} if p >= thr
                else {"probability": p, "label": 0, "class": no}
                for p in np.asarray(scores, dtype=np.float64).tolist()]

    def invocations_predictions(self, scores: np.ndarray) -> list | np.ndarray:
        """``predict_proba``: both classes' probabilities per row."""
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) <= LIST_ROWS:
            return [[1.0 - p, p] for p in scores.tolist()]
        return np.column_stack([1 - scores, scores])

    def log_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """``proba``, the probability of class 1 (as every log before tasks)."""
        return {PROBA: np.asarray(scores, dtype=np.float64)}

    def log_score_columns(self) -> list[str]:
        return [PROBA]

    def drift_columns(self, scores):
        cols = {f"{PREDICTED}_proba": np.asarray(scores, dtype=np.float64)}
        return cols, tuple(cols), ()

    def evidently_columns(self, scores: np.ndarray) -> dict:
        """``prediction`` (0/1) and ``proba`` (P(class 1))."""
        return {PROBA: scores, PREDICTION: self.decide(scores)}

    def evidently_roles(self, target: str) -> dict:
        from evidently import BinaryClassification

        return {"classification": [BinaryClassification(
            target=target, prediction_labels=PREDICTION, prediction_probas=PROBA, pos_label=1)]}

    def explain_outputs(self) -> tuple[str, ...]:
        return (self.positive,)

    def explain_scale(self) -> str:
        return (f"log-odds of class {self.positive!r} "
                "(probability = 1 / (1 + exp(-raw_score)))")
