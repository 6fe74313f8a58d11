"""The import path every module used before tasks became classes: the task protocol and the
registry live in :mod:`tarn.core.tasks` (one module per task)."""

from tarn.core.tasks import MISSING_GROUP, Task, calibration_curve, group_values

__all__ = ["MISSING_GROUP", "Task", "calibration_curve", "group_values"]
