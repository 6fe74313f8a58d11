"""One class per task behind one protocol (:class:`Task`, in :mod:`.base`) and the registry
that maps a task's name to its class. Every module of this package is imported here, so a new
task is one new module with a ``@register``-ed class (see :mod:`.base`)."""

from __future__ import annotations

import importlib
import pkgutil

from tarn.core.tasks.base import (
    DVC_PLOTS,
    MISSING_GROUP,
    Task,
    calibration_curve,
    figure_names,
    group_values,
    kinds,
    register,
    task_class,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["DVC_PLOTS", "MISSING_GROUP", "Task", "calibration_curve", "figure_names",
           "group_values", "kinds", "register", "task_class"]
