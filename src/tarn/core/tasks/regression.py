"""Regression: the predicted value is the score and the answer; fairness is the spread of the
groups' mean predictions in standard deviations of the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tarn.core.tasks.base import Task, by_group, pyplot, register, save_figure, spread


@register
class RegressionTask(Task):
    KIND = "regression"
    CLASSIFICATION = False
    LOSS = "rmse"
    EVAL_METRIC = "rmse"
    OBJECTIVE = "reg:squarederror"
    METRICS = ("rmse", "mae", "r2")
    HIGHER_IS_BETTER = frozenset({"r2"})
    PREDICT_FN = "predict"
    REPORT_FIGURES = ("rmse", "mae", "r2")
    HTML_QUALITY = ("rmse", "mae", "r2", "mean_prediction", "mean_target")
    HTML_GROUPS = (("mean_prediction", "mean prediction"), ("mean_target", "mean target"),
                   ("mae", "MAE"))
    TRIAL_FIGURES = {"mae": "mae", "r2": "r2"}
    GAP_MEANING = "spread of group mean predictions, in standard deviations of the target"
    GAP_MEASURE = "gap in mean prediction between groups (in target std)"
    GAP_NAME = "mean prediction gap (target std)"
    REPORT_FAIRNESS = (("gap", "gap in mean prediction (target std)"),)
    PARITY = "relative"
    ONNX_OUTPUTS = {"prediction": "variable"}

    # ------------------------------------------------------------------ models
    def estimator(self, **params):
        from xgboost import XGBRegressor

        return XGBRegressor(**{"eval_metric": self.eval_metric, "objective": self.objective,
                               **params})

    def dask_estimator(self, dxgb, **params):
        return dxgb.DaskXGBRegressor(**params)

    def reference_estimator(self, seed: int):
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(random_state=seed)

    # ------------------------------------------------------------------ figures
    def extra_quality(self, y: np.ndarray, scores: np.ndarray, bins: int) -> dict:
        return {"mean_prediction": float(np.mean(scores)), "mean_target": float(np.mean(y))}

    def group_fairness(self, y, scores, groups, min_rows):
        """MAE, mean prediction and mean target; gap = the spread of group mean predictions
        as a share of the target's standard deviation."""
        from fairlearn.metrics import MetricFrame, count
        from sklearn import metrics as skm

        pred = np.asarray(scores, dtype=np.float64)
        mf = MetricFrame(
            metrics={"count": count, "mae": skm.mean_absolute_error,
                     "mean_prediction": _mean_pred, "mean_target": _mean_true},
            y_true=y, y_pred=pred, sensitive_features=groups)
        means = mf.by_group["mean_prediction"]
        std = float(np.std(y)) or 1.0
        gap = spread(mf, ["mean_prediction"], min_rows)
        return {"mean_prediction_gap": float((means.max() - means.min()) / std),
                "mae_difference": float(mf.difference()["mae"]),
                "gap": None if gap is None else gap / std,
                "groups": by_group(mf)}, mf

    # ------------------------------------------------------------------ data bias
    def target_figures(self, y, w) -> dict:
        """The target's mean, spread and quantiles (quantiles unweighted)."""
        mean = float(np.average(y, weights=w))
        q = np.quantile(y.astype(np.float64), QUANTILES) if len(y) else [np.nan] * 5
        return {"mean": mean, "std": float(np.sqrt(np.average((y - mean) ** 2, weights=w))),
                **{f"q{int(p * 100)}": float(v) for p, v in zip(QUANTILES, q, strict=True)}}

    def target_metrics(self) -> tuple[dict, dict]:
        return ({f"q{int(p * 100)}": _quantile(p) for p in QUANTILES},
                {"mean": _weighted_mean, "std": _weighted_std})

    def group_target_figures(self, f) -> dict:
        return {"mean": float(f["mean"]), "std": float(f["std"]),
                **{f"q{int(p * 100)}": float(f[f"q{int(p * 100)}"]) for p in QUANTILES}}

    def compare_to_reference(self, table, at_ref, target) -> None:
        """``mean_difference``: the difference in target mean as a share of the target's
        standard deviation (there is no label to have an impact on)."""
        std = float(np.std(target.astype(np.float64))) or 1.0
        ref_mean = float(table.loc[at_ref, "mean"].iloc[0])
        table["mean_difference"] = (table["mean"] - ref_mean) / std

    def data_headline(self, h, measurable, overall, four_fifths) -> dict:
        """The spread of group means as a share of the target's standard deviation."""
        std = overall["std"] or 1.0
        gap = float((h["mean"].max() - h["mean"].min()) / std) if measurable else None
        return {"mean_gap": gap, "gap": gap}

    # ------------------------------------------------------------------ plots
    def task_plots(self, y, pred, bins: int, out: Path) -> None:
        """Residuals against the prediction, predicted against actual, the residuals'
        histogram."""
        import pandas as pd

        plt = pyplot()

        resid = np.asarray(y, dtype=np.float64) - pred
        pd.DataFrame({"actual": y, "predicted": pred, "residual": resid}).to_csv(
            out / "residuals.csv", index=False)
        fig, ax = plt.subplots(1, 3, figsize=(15, 5))
        ax[0].scatter(pred, resid, s=8, alpha=0.6)
        ax[0].axhline(0, color="k", lw=1)
        ax[0].set(title="Residuals vs prediction", xlabel="predicted",
                  ylabel="actual - predicted")
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax[1].scatter(y, pred, s=8, alpha=0.6)
        ax[1].plot([lo, hi], [lo, hi], "k:", lw=1)
        ax[1].set(title=f"Predicted vs actual (R2 {self.metric('r2', y, pred):.3f})",
                  xlabel="actual", ylabel="predicted")
        ax[2].hist(resid, bins=max(10, bins * 2))
        ax[2].set(title=f"Residuals (RMSE {self.metric('rmse', y, pred):.3f})",
                  xlabel="actual - predicted", ylabel="rows")
        save_figure(fig, out)

    # ------------------------------------------------------------------ edge
    def parity_labels(self, a: np.ndarray, b: np.ndarray) -> bool:
        return True  # values have no labels: the relative difference is the whole check

    def parity_scale(self, python_scores: np.ndarray) -> float:
        """The spread of the predictions (values near 1,000 are exact in float32 only to
        about 1e-4; see docs/facts.md)."""
        b = np.asarray(python_scores, dtype=np.float64)
        spread_ = float(np.std(b)) if len(b) > 1 else 0.0
        return spread_ if spread_ > 0 else max(1.0, float(np.abs(b).max(initial=0.0)))


QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _weighted_mean(y_true, y_pred, sample_weight=None) -> float:
    return float(np.average(np.asarray(y_true, dtype=np.float64), weights=sample_weight))


def _weighted_std(y_true, y_pred, sample_weight=None) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    mean = np.average(y, weights=sample_weight)
    return float(np.sqrt(np.average((y - mean) ** 2, weights=sample_weight)))


def _quantile(p: float):
    def q(y_true, y_pred) -> float:  # unweighted, as the overall figures
        return float(np.quantile(np.asarray(y_true, dtype=np.float64), p))
    q.__name__ = f"q{int(p * 100)}"
    return q


def _mean_pred(y_true, y_pred) -> float:
    return float(np.mean(y_pred))


def _mean_true(y_true, y_pred) -> float:
    return float(np.mean(y_true))
