"""What the prediction log holds for each scored row besides its inputs, per task.

The server writes these columns (:mod:`tarn.serve.predlog`) and monitoring reads them; both
take the names from here, so a rename cannot leave one side behind (a lifecycle module may not
import ``serve``). Each task's class says its columns (``Task.log_columns``); today:

- binary: ``proba``, the probability of class 1 (as every log before tasks);
- multiclass: ``proba_<i>`` per class index ``i`` and ``label``, the predicted class index;
- regression: ``prediction``, the predicted value.
"""

from __future__ import annotations

import numpy as np

from tarn.core.tasks.base import LABEL, PREDICTION, PROBA, Task, proba_column

__all__ = ["LABEL", "PREDICTION", "PROBA", "log_columns", "proba_column"]


def log_columns(task: Task, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Pure: one request's scores (see :meth:`Task.scores`) as the log's columns."""
    return task.log_columns(scores)
