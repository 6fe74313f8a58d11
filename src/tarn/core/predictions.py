"""What the prediction log holds for each scored row besides its inputs, per task.

The server writes these columns (:mod:`tarn.serve.predlog`) and monitoring reads them; both
take the names from here, so a rename cannot leave one side behind (a lifecycle module may not
import ``serve``). By task:

- binary: ``proba``, the probability of class 1 (as every log before tasks);
- multiclass: ``proba_<i>`` per class index ``i`` and ``label``, the predicted class index;
- regression: ``prediction``, the predicted value.
"""

from __future__ import annotations

import numpy as np

from tarn.core.task import Task

PROBA = "proba"
LABEL = "label"
PREDICTION = "prediction"


def proba_column(i: int) -> str:
    """The log column of the probability of class index ``i`` (multiclass)."""
    return f"{PROBA}_{i}"


def log_columns(task: Task, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Pure: one request's scores (see :meth:`Task.scores`) as the log's columns."""
    scores = np.asarray(scores, dtype=np.float64)
    if task.kind == "binary":
        return {PROBA: scores}
    if task.kind == "multiclass":
        out = {proba_column(i): scores[:, i] for i in range(scores.shape[1])}
        out[LABEL] = task.decide(scores)
        return out
    return {PREDICTION: scores}
