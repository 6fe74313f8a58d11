"""Scores -> response bodies, per task. Pure: no web framework, no model, no clock.

What a row says depends on what the served version predicts (its card's task, classes and
decision threshold, never today's params.yaml); each task's class shapes its rows
(:mod:`tarn.core.tasks`):

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
from tarn.core.tasks.base import LIST_ROWS  # noqa: F401 (rows up to it are answered as lists)


def predict_rows(task: Task, scores: np.ndarray) -> list[dict]:
    """One ``/predict`` row per score (scores as :meth:`Task.scores` returns them)."""
    return task.predict_rows(scores)


def invocations_predictions(task: Task, scores: np.ndarray) -> list | np.ndarray:
    """The ``predictions`` of an ``/invocations`` answer (a list, or an array the JSON
    encoder writes as nested lists)."""
    return task.invocations_predictions(scores)


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
