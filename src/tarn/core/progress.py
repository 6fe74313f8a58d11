"""Terminal output: progress bars and tables (rich). Stages take a :data:`Progress` callback so
they stay free of terminal code and tests can pass :func:`silent`."""

from __future__ import annotations

import contextlib
import time
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


# step(message): a long job moved on to its next step
Step = Callable[[str], None]


def no_steps(message: str) -> None:
    """A Step that shows nothing."""


@contextlib.contextmanager
def steps(title: str) -> Iterator[Step]:
    """A spinner with the current step on a terminal; one plain line per step otherwise
    (logs, CI), each with the seconds since the start."""
    start = time.monotonic()
    if console.is_terminal:
        with console.status(title) as status:
            yield lambda message: status.update(f"{title}: {message}")
        return
    console.print(f"{title}", highlight=False)
    yield lambda message: console.print(f"  {message} ({time.monotonic() - start:.0f} s)",
                                        highlight=False)


@contextlib.contextmanager
def bars(transient: bool = False) -> Iterator[Progress]:
    """A rich progress display; yields the callback stages call. Not on a terminal, a plain
    line per task every 10 % (and when its description changes)."""
    if not console.is_terminal:
        yield _plain_progress()
        return
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


def _plain_progress() -> Progress:
    state: dict[str, list] = {}  # key -> [done, total, description, last tenth printed]
    start = time.monotonic()

    def update(key: str, description: str, advance: int, total: int | None) -> None:
        s = state.setdefault(key, [0, total, description, -1])
        s[0] += advance
        s[1] = total or s[1]
        tenth = int(10 * s[0] / s[1]) if s[1] else s[0] // 1000
        if tenth != s[3] or description != s[2]:
            s[2], s[3] = description, tenth
            of = f"/{s[1]:,}" if s[1] else ""
            console.print(f"{description}: {s[0]:,}{of} ({time.monotonic() - start:.0f} s)",
                          highlight=False)

    return update
