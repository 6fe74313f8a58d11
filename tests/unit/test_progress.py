"""No silent fit: plain output (not a terminal) has a heartbeat while a step or a bar lasts,
stays quiet while lines flow, and stops with its context; a terminal shows elapsed time."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from rich.console import Console

from tarn.core import progress

DEADLINE_S = 10.0  # generous: the machine may be busy; the tests end as soon as output appears


@pytest.fixture
def out(monkeypatch) -> io.StringIO:
    """The progress console, writing plain text into a buffer."""
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=False,
                                                     soft_wrap=True, width=200))
    return buf


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def wait_for(buf: io.StringIO, pattern: str, *, count: int = 1,
             while_waiting=lambda: None) -> list[str]:
    """Poll (calling ``while_waiting``) until ``count`` lines match ``pattern``."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = [x for x in lines(buf) if re.search(pattern, x)]
        if len(found) >= count:
            return found
        while_waiting()
        time.sleep(0.01)
    raise AssertionError(f"no {count} line(s) matching {pattern!r} in {lines(buf)}")


def heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tarn-heartbeat"]


def test_a_long_step_gets_a_heartbeat_line_with_what_runs_and_the_elapsed_time(out):
    with progress.steps("evaluating", heartbeat=0.05) as step:
        step("scoring the test split")
        found = wait_for(out, r"still", count=2)
    assert re.fullmatch(r"  still evaluating: scoring the test split \(\d+ s\)", found[0])
    assert lines(out)[0] == "evaluating"
    assert re.fullmatch(r"  scoring the test split \(\d+ s\)", lines(out)[1])


def test_fast_steps_print_their_lines_and_nothing_else(out):
    with progress.steps("promoting", heartbeat=2.0) as step:
        for i in range(5):
            step(f"gate {i}")
    assert len(lines(out)) == 6
    assert not [x for x in lines(out) if "still" in x]


def test_no_heartbeat_while_steps_keep_coming(out):
    with progress.steps("monitoring", heartbeat=0.5) as step:
        end = time.monotonic() + 0.6
        i = 0
        while time.monotonic() < end:
            step(f"piece {i}")
            i += 1
            time.sleep(0.005)
    assert not [x for x in lines(out) if "still" in x]


def test_the_heartbeat_stops_when_the_context_exits(out):
    before = set(heartbeats())
    with progress.steps("retraining", heartbeat=0.05) as step:
        step("boosting")
        wait_for(out, "still retraining: boosting")
        assert set(heartbeats()) - before
    assert set(heartbeats()) == before  # joined: nothing can print any more
    n = len(lines(out))
    time.sleep(0.2)  # four heartbeats' worth
    assert len(lines(out)) == n


def test_the_heartbeat_stops_on_an_exception_too(out):
    before = set(heartbeats())
    with pytest.raises(RuntimeError, match="boom"), progress.steps("x", heartbeat=0.05) as step:
        step("failing")
        raise RuntimeError("boom")
    assert set(heartbeats()) == before
    assert not progress._active  # noqa: SLF001 - the registry of what runs is empty again


def test_plain_bars_print_on_time_between_the_tenths(out):
    with progress.bars(heartbeat=0.2) as update:
        update("fit", "fitting model", 1, 1000)
        # one round at a time: far from the next 10 %, so only time makes lines
        found = wait_for(out, r"^fitting model: ", count=3,
                         while_waiting=lambda: update("fit", "fitting model", 1, 1000))
    counts = [int(re.fullmatch(r"fitting model: (\d+)/1,000 \(\d+ s\)", x).group(1))
              for x in found]
    assert counts == sorted(counts) and counts[-1] < 100
    assert not [x for x in lines(out) if "still" in x]  # advancing: no heartbeat on top


def test_plain_bars_keep_the_tenths_rule(out):
    with progress.bars(heartbeat=60) as update:
        for _ in range(100):
            update("etl", "ETL", 1, 100)
    assert [x.split(" (")[0] for x in lines(out)] == [f"ETL: {n}/100" for n in
                                                      (1, *range(10, 101, 10))]


def test_bars_heartbeat_while_no_task_advances(out):
    with progress.bars(heartbeat=0.05) as update:
        update("tune", "tuning", 0, 50)
        update("tune", "tuning (best val logloss 0.2812)", 1, 50)
        found = wait_for(out, "still")
    assert re.fullmatch(r"  still tuning \(best val logloss 0.2812\): 1/50 \(\d+ s\)", found[0])


def test_nested_contexts_report_the_latest_activity(out):
    with progress.bars(heartbeat=0.05) as update, \
            progress.steps("training", heartbeat=0.05) as step:
        update("model", "fitting model", 10, 10)
        step("logging and registering the model")
        found = wait_for(out, "still")
    assert found[0].startswith("  still training: logging and registering the model (")


def test_a_terminal_spinner_shows_the_step_and_the_elapsed_time(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buf, force_terminal=True, width=100))
    before = set(heartbeats())
    with progress.steps("evaluating") as step:
        assert set(heartbeats()) == before  # rich animates: no heartbeat thread
        step("scoring the test split")
    text = buf.getvalue()
    assert "evaluating: scoring the test split" in text
    assert re.search(r"0:00:0\d", text)  # rich's TimeElapsedColumn


@pytest.mark.parametrize(("value", "seconds"), [("3.5", 3.5), ("0", 5.0), ("-1", 5.0),
                                                ("soon", 5.0), (None, 5.0)])
def test_the_heartbeat_period_comes_from_tarn_heartbeat_s(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv("TARN_HEARTBEAT_S", raising=False)
    else:
        monkeypatch.setenv("TARN_HEARTBEAT_S", value)
    assert progress._heartbeat_env() == seconds  # noqa: SLF001
