"""Memory known before it is spent: the design matrices and the fits of tune and train are
estimated from rows x columns before any fit, against ``compute.memory_fraction`` of the
machine's memory. Over it, the search runs fewer fits at once; if even one fit cannot fit,
the stage refuses, naming the widest columns and the settings that shrink them.

The estimates (float32 matrices, XGBoost's hist fit) were checked against peak RSS on this
machine's tables: a fit on ``hist`` quantizes the matrix to one byte a cell and keeps
gradients, predictions and the row partition per row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sklearn.compose import ColumnTransformer

from tarn.errors import TarnError

BYTES_PER_CELL = 4  # float32 design matrix
FIT_BYTES_PER_CELL = 2  # quantized matrix (1 byte) + sketch and column buffers
FIT_BYTES_PER_ROW = 64  # gradients, hessians, predictions, row partition, eval caches
BASE_BYTES = 600 * 2**20  # the interpreter with pandas, scikit-learn, XGBoost, MLflow loaded


def machine_bytes() -> int:
    """Physical memory of this machine (a cgroup limit, when lower, is what counts)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            raw = f.read().strip()
        if raw.isdigit():
            total = min(total, int(raw))
    except OSError:
        pass
    return int(total)


@dataclass(frozen=True)
class MemoryPlan:
    matrix_bytes: int  # the design matrices held once (train + valid)
    fit_bytes: int  # one fit on every training row
    parallel: int  # fits at once that fit in the budget (<= asked)
    asked: int
    budget_bytes: int

    def describe(self) -> str:
        gb = 2**30
        text = (f"memory: design matrices {self.matrix_bytes / gb:.2f} GB + "
                f"{self.parallel} fit(s) x {self.fit_bytes / gb:.2f} GB, of a "
                f"{self.budget_bytes / gb:.1f} GB budget")
        if self.parallel < self.asked:
            text += f" (fits at once lowered from {self.asked} to {self.parallel})"
        return text


def plan(rows: int, valid_rows: int, width: int, parallel: int, copies_per_fit: bool,
         fraction: float, total: int | None = None) -> MemoryPlan:
    """How many fits can run at once; ``copies_per_fit``: each parallel fit holds its own
    copy of the matrices (a Dask worker process)."""
    budget = int(fraction * (total if total is not None else machine_bytes()))
    matrix = (rows + valid_rows) * width * BYTES_PER_CELL
    fit = rows * width * FIT_BYTES_PER_CELL + (rows + valid_rows) * FIT_BYTES_PER_ROW
    per_fit = fit + (matrix if copies_per_fit else 0)
    room = budget - BASE_BYTES - matrix
    n = max(0, min(parallel, room // per_fit if per_fit else parallel))
    return MemoryPlan(matrix, per_fit, int(n), parallel, budget)


def refuse_if_over(p: MemoryPlan, pre: ColumnTransformer | None, rows: int) -> None:
    """Raise before fitting when not even one fit fits, naming the widest columns."""
    if p.parallel >= 1:
        return
    gb = 2**30
    need = BASE_BYTES + p.matrix_bytes + p.fit_bytes
    widest = ", ".join(f"{c} ({n} columns)" for c, n in widest_columns(pre)[:3]) or "none"
    raise TarnError(
        f"the design matrix of {rows:,} rows needs about {need / gb:.1f} GB, over the "
        f"{p.budget_bytes / gb:.1f} GB budget (compute.memory_fraction); widest inputs: "
        f"{widest}",
        "lower prepare.onehot_max_values (wide categoricals become one column of codes), "
        "add the column to prepare.exclude_features, or raise compute.memory_fraction")


def widest_columns(pre: ColumnTransformer | None) -> list[tuple[str, int]]:
    """Input columns by how many design columns they make, widest first."""
    if pre is None:
        return []
    counts: dict[str, int] = {}
    for out in pre.get_feature_names_out():
        src = next((c for c in _inputs(pre) if out == c or out.startswith(f"{c}_")), out)
        counts[src] = counts.get(src, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _inputs(pre: ColumnTransformer) -> list[str]:
    cols = [c for _, _, cs in pre.transformers_ if not isinstance(cs, str) for c in cs]
    return sorted(cols, key=len, reverse=True)  # longest first: 'age_x' is not 'age'
