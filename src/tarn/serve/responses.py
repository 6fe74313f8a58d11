"""Scores -> response bodies, per task. Pure: no web framework, no model, no clock.

What a row says depends on what the served version predicts (its card's task, classes and
decision threshold, never today's params.yaml):

- ``/predict``: binary ``{"probability": p, "label": 0|1, "class": name}`` (``label`` is 1
  when ``p`` reaches the version's threshold); multiclass ``{"probabilities": {name: p, ...},
  "label": i, "class": name}`` (the most probable class); regression ``{"prediction": v}``.
- ``/invocations``: what ``mlflow models serve`` answers for the model's pyfunc method:
  ``predict_proba`` for classification (one list of class probabilities per row, binary
  included), ``predict`` for regression (one value per row).

Rows the contract flagged (``serve.unknown_values: flag``) carry their ``violations``.
"""

from __future__ import annotations

import numpy as np

from tarn.core.task import Task

LIST_ROWS = 64  # up to this many rows, Python lists serialize faster than numpy arrays


def predict_rows(task: Task, scores: np.ndarray) -> list[dict]:
    """One ``/predict`` row per score (scores as :meth:`Task.scores` returns them)."""
    scores = np.asarray(scores, dtype=np.float64)
    if task.kind == "regression":
        return [{"prediction": v} for v in scores.tolist()]
    names = task.classes
    if task.kind == "binary":  # Task.decide's rule, without numpy: the hot single-row path
        thr, no, yes = task.threshold, names[0], names[1]
        return [{"probability": p, "label": 1, "class": yes} if p >= thr
                else {"probability": p, "label": 0, "class": no} for p in scores.tolist()]
    labels = task.decide(scores).tolist()
    return [{"probabilities": dict(zip(names, row, strict=True)), "label": k, "class": names[k]}
            for row, k in zip(scores.tolist(), labels, strict=True)]


def invocations_predictions(task: Task, scores: np.ndarray) -> list | np.ndarray:
    """The ``predictions`` of an ``/invocations`` answer (a list, or an array the JSON
    encoder writes as nested lists)."""
    scores = np.asarray(scores, dtype=np.float64)
    if task.kind == "binary":
        if len(scores) <= LIST_ROWS:
            return [[1.0 - p, p] for p in scores.tolist()]
        return np.column_stack([1 - scores, scores])
    if len(scores) <= LIST_ROWS:
        return scores.tolist()
    return scores


def predict_body(task: Task, scores: np.ndarray, version: str, request_id: str,
                 violations=()) -> dict:
    """The whole ``/predict`` body; ``violations`` (:class:`~tarn.serve.inputs.Violation`)
    are attached to their rows."""
    rows = predict_rows(task, scores)
    for v in violations:
        rows[v.row].setdefault("violations", []).append(v.detail)
    return {"model_version": version, "request_id": request_id, "predictions": rows}


def invocations_body(task: Task, scores: np.ndarray, request_id: str, violations=()) -> dict:
    """The whole ``/invocations`` body; ``violations`` listed beside the predictions."""
    out = {"predictions": invocations_predictions(task, scores), "request_id": request_id}
    if violations:
        out["violations"] = [v.as_dict() for v in violations]
    return out
