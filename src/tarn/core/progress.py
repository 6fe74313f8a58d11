"""Terminal output: progress bars and tables (rich). Stages take a :data:`Progress` callback so
they stay free of terminal code and tests can pass :func:`silent`.

Nothing long runs silently. On a terminal the spinner of :func:`steps` and the bars of
:func:`bars` show the elapsed time (rich animates them). Otherwise (logs, CI, a pipe) lines are
plain, each with the seconds since the start, and a heartbeat thread that lives as long as the
``steps()`` / ``bars()`` context prints what is still running ("  still evaluating: scoring the
test split (23 s)") whenever nothing was printed for :data:`HEARTBEAT_S` seconds: fast progress
stays quiet, a single long call (an Evidently report, a model download, a fit) does not.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgress,
)


def _heartbeat_env(default: float = 5.0) -> float:
    """TARN_HEARTBEAT_S if it is a positive number of seconds, else ``default``."""
    try:
        value = float(os.environ.get("TARN_HEARTBEAT_S", default))
    except ValueError:
        return default
    return value if value > 0 else default


# not on a terminal, a line at least this often (seconds) while a steps()/bars() context runs
# (TARN_HEARTBEAT_S sets it: a full retraining gives its `dvc repro` stages a shorter one, so
# their own heartbeat speaks before ours)
HEARTBEAT_S = _heartbeat_env()

_last_line = [0.0]  # time.monotonic() of the last line printed through the console


def _printed() -> None:
    _last_line[0] = time.monotonic()


class _Console(Console):
    """A rich Console that notes when it last printed, so the heartbeat stays quiet after any
    line (a stage's own ones included)."""

    def print(self, *args, **kwargs) -> None:  # noqa: D102 - rich's
        super().print(*args, **kwargs)
        _printed()


console = _Console(stderr=True, soft_wrap=True)  # one message = one line, even in logs

# progress(task_key, description, advance, total): advance a named task, creating it on first use
Progress = Callable[[str, str, int, int | None], None]


def silent(key: str, description: str, advance: int, total: int | None) -> None:
    """A Progress that shows nothing."""


# step(message): a long job moved on to its next step
Step = Callable[[str], None]


def no_steps(message: str) -> None:
    """A Step that shows nothing."""


# ----------------------------------------------------------------------------- heartbeat
class _Activity:
    """What one steps()/bars() context is doing now, for the heartbeat."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.doing = ""
        self.start = self.touched = time.monotonic()

    def set(self, doing: str) -> None:
        self.doing, self.touched = doing, time.monotonic()

    def line(self, now: float) -> str:
        what = ": ".join(x for x in (self.title, self.doing) if x) or "working"
        return f"  still {what} ({now - self.start:.0f} s)"


_lock = threading.Lock()  # guards _active and the heartbeat's check-then-print
_active: list[_Activity] = []


def _say(text: str) -> None:
    """Print one plain line (no markup, no highlighting)."""
    with _lock:
        console.print(text, highlight=False, markup=False)
        _printed()


def _beat(stop: threading.Event, own: _Activity, period: float) -> None:
    """Until ``stop``: when nothing was printed for ``period`` seconds, print the most recently
    active context's line; unless it moved in the last ``period / 2`` (a bar advancing prints
    its own line on time at its next advance: no heartbeat on top). A line at least every
    1.5 ``period`` (plus a check interval), whatever the work does."""
    while not stop.wait(min(period / 10, 0.5)):
        with _lock:
            now = time.monotonic()
            if not _active or now - max(_last_line[0], own.start) < period:
                continue
            current = max(_active, key=lambda a: a.touched)
            if now - current.touched < period / 2:
                continue
            try:
                console.print(current.line(now), highlight=False, markup=False)
            except Exception:  # noqa: BLE001 - a closed stream must not kill the work
                return
            _printed()


@contextlib.contextmanager
def _heartbeat(activity: _Activity, period: float) -> Iterator[_Activity]:
    """Register ``activity`` and run a heartbeat thread for it until the block exits (also on
    an exception)."""
    stop = threading.Event()
    thread = threading.Thread(target=_beat, args=(stop, activity, period), daemon=True,
                              name="tarn-heartbeat")
    with _lock:
        _active.append(activity)
    thread.start()
    try:
        yield activity
    finally:
        stop.set()
        thread.join()
        with _lock:
            _active.remove(activity)


def _period(heartbeat: float | None) -> float:
    return HEARTBEAT_S if heartbeat is None else heartbeat


# ----------------------------------------------------------------------------- steps, bars
@contextlib.contextmanager
def steps(title: str, heartbeat: float | None = None) -> Iterator[Step]:
    """A spinner with the current step and the elapsed time on a terminal; one plain line per
    step otherwise (logs, CI), each with the seconds since the start, and a heartbeat line
    while a step lasts longer than ``heartbeat`` seconds (default :data:`HEARTBEAT_S`)."""
    if console.is_terminal:
        with RichProgress(SpinnerColumn(), TextColumn("{task.description}"),
                          TimeElapsedColumn(), console=console, transient=True) as prog:
            task = prog.add_task(title, total=None)
            yield lambda message: prog.update(task, description=f"{title}: {message}")
        return
    activity = _Activity(title)
    _say(title)
    with _heartbeat(activity, _period(heartbeat)):

        def step(message: str) -> None:
            activity.set(message)
            _say(f"  {message} ({time.monotonic() - activity.start:.0f} s)")

        yield step


@contextlib.contextmanager
def bars(transient: bool = False, heartbeat: float | None = None) -> Iterator[Progress]:
    """A rich progress display; yields the callback stages call. Not on a terminal, a plain
    line per task every 10 %, when its description changes, and at least every ``heartbeat``
    seconds (default :data:`HEARTBEAT_S`) while it advances, with the count and the elapsed
    time; the heartbeat also speaks while no task advances (a long trial, a slow call)."""
    if not console.is_terminal:
        period = _period(heartbeat)
        activity = _Activity("")
        with _heartbeat(activity, period):
            yield _plain_progress(activity, period)
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


def _plain_progress(activity: _Activity | None = None, period: float | None = None) -> Progress:
    activity = activity or _Activity("")
    period = _period(period)
    # key -> [done, total, description, last tenth printed]
    state: dict[str, list] = {}

    def update(key: str, description: str, advance: int, total: int | None) -> None:
        now = time.monotonic()
        s = state.setdefault(key, [0, total, description, -1])
        s[0] += advance
        s[1] = total or s[1]
        of = f"/{s[1]:,}" if s[1] else ""
        # a task with no count (only its description moves) shows just the description
        count = f"{description}: {s[0]:,}{of}" if s[0] or s[1] else description
        finished = bool(s[1]) and s[0] >= s[1]
        activity.set(f"busy after {count}" if finished else count)
        tenth = int(10 * s[0] / s[1]) if s[1] else s[0] // 1000
        quiet = now - max(_last_line[0], activity.start) >= period  # on time, any line
        if tenth != s[3] or description != s[2] or quiet:
            s[2], s[3] = description, tenth
            _say(f"{count} ({now - activity.start:.0f} s)")

    return update


def rounds_callback(progress: Progress, key: str, description: str, total: int):
    """An XGBoost callback that advances ``progress`` once per boosting round (the final fit
    of train, incremental retraining). XGBoost is imported only when one is made."""
    from xgboost.callback import TrainingCallback

    class Rounds(TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            progress(key, description, 1, total)
            return False

    return Rounds()
