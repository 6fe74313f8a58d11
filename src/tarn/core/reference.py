"""Default reference models: what a user gets with no search at all, fitted in every run on
the same split and the same design matrix as tarn's model, so "did the search pay?" has an
answer. Tune reports them on the validation split (fitted on train), evaluate on the test
split (fitted on train + valid, as the registered model is).

The references are scikit-learn's ``HistGradientBoosting*`` and XGBoost with their default
settings: on real tables of 138,000 and 300,000 rows they matched or beat a 20-minute search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from tarn.core.task import Task

REFERENCES = {
    "hist_gradient_boosting": "scikit-learn HistGradientBoosting, default settings",
    "xgboost_defaults": "XGBoost, default settings",
}


def reference_model(name: str, task: Task, n_jobs: int, seed: int):
    """An unfitted reference model."""
    if name == "hist_gradient_boosting":
        return task.reference_estimator(seed)
    if name == "xgboost_defaults":
        return task.estimator(tree_method="hist", n_jobs=n_jobs, random_state=seed)
    raise KeyError(name)


@dataclass(frozen=True)
class ReferenceScore:
    name: str
    loss: float  # the task's loss (logloss or rmse) on the scored rows
    figures: dict  # the task's other figures (e.g. roc_auc) on the scored rows
    fit_s: float


def score_references(task: Task, z_fit: np.ndarray, y_fit: np.ndarray, z: np.ndarray,
                     y: np.ndarray, n_jobs: int, seed: int, on_fit=None,
                     folds: tuple = ()) -> list[ReferenceScore]:
    """Fit each reference on ``(z_fit, y_fit)`` (unweighted: like with like, the unmitigated
    model) and score it on ``(z, y)``; with ``folds``, on the pooled out-of-fold scores of
    ``(z_fit, y_fit)`` instead, as the search judges its fits. ``on_fit(name)`` is called
    before each reference."""
    from threadpoolctl import threadpool_limits

    out = []
    for name in REFERENCES:
        if on_fit is not None:
            on_fit(name)
        start = time.perf_counter()
        # HistGradientBoosting takes every core through OpenMP, whose busy-waiting makes a
        # 265-row fit take seconds on a loaded machine: held to the fits' own thread count
        with threadpool_limits(limits=n_jobs):
            y, scores = _scores(name, task, z_fit, y_fit, z, y, n_jobs, seed, folds)
        fit_s = time.perf_counter() - start
        figures = {m: task.metric(m, y, scores) for m in task.metrics}
        out.append(ReferenceScore(name, figures.pop(task.loss), figures, fit_s))
    return out


def _scores(name: str, task: Task, z_fit, y_fit, z, y, n_jobs: int, seed: int,
            folds: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(the labels scored, the reference's scores): on (z, y), or out of fold."""
    if not folds:
        model = reference_model(name, task, n_jobs, seed).fit(z_fit, y_fit)
        return y, task.scores(model, z)
    scores = None
    for tr, va in folds:
        model = reference_model(name, task, n_jobs, seed).fit(z_fit[tr], y_fit[tr])
        part = task.scores(model, z_fit[va])
        if scores is None:
            scores = np.zeros((len(y_fit), *part.shape[1:]))
        scores[va] = part
    return y_fit, scores


def verdict(task: Task, loss: float, refs: list[ReferenceScore], where: str) -> str:
    """One plain sentence: did tarn's model beat the best reference on this split?"""
    if not refs:
        return ""
    best = min(refs, key=lambda r: r.loss)
    diff = best.loss - loss
    name = REFERENCES[best.name]
    if diff > 0:
        return (f"the tuned model beats the best default model ({name}) on {where}: "
                f"{task.loss} {loss:.4f} vs {best.loss:.4f} ({diff:.4f} better)")
    return (f"the search did NOT beat the best default model ({name}) on {where}: "
            f"{task.loss} {loss:.4f} vs {best.loss:.4f} ({-diff:.4f} worse)")


def as_dict(refs: list[ReferenceScore], task: Task) -> dict:
    return {r.name: {task.loss: r.loss, **r.figures, "fit_s": round(r.fit_s, 3)} for r in refs}
