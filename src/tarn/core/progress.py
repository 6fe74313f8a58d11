"""Terminal output: progress bars and tables (rich). Stages take a :data:`Progress` callback so
they stay free of terminal code and tests can pass :func:`silent`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgress,
)

console = Console(stderr=True, soft_wrap=True)  # one message = one line, even in logs

# progress(task_key, description, advance, total): advance a named task, creating it on first use
Progress = Callable[[str, str, int, int | None], None]


def silent(key: str, description: str, advance: int, total: int | None) -> None:
    """A Progress that shows nothing."""


@contextlib.contextmanager
def bars(transient: bool = False) -> Iterator[Progress]:
    """A rich progress display; yields the callback stages call."""
    tasks: dict[str, int] = {}
    with RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient,
    ) as prog:

        def update(key: str, description: str, advance: int, total: int | None) -> None:
            if key not in tasks:
                tasks[key] = prog.add_task(description, total=total)
            prog.update(tasks[key], advance=advance, description=description)

        yield update
