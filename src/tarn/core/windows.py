"""Which batches are held out for testing, and what a figure measured on them means.

Pure: batch names in, names and one-line labels out. One definition serves prepare (the
split), the monitor (which batches are new), the simulator (its pools), evaluation and the
gates (the label printed beside a figure).

Two ways to hold out (``prepare.test_split``):

- ``batches``: the batches matching ``prepare.test_batches`` (a fixed, published split, such as
  the demo's official test file). The window never moves.
- ``latest``: the ``prepare.test_latest`` newest batches by batch order. Every batch a full
  retraining sees moves the window forward, so the test is always forward in time, and the
  champion is re-measured on the same new rows as the challenger.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from tarn.config import PrepareConfig

SEQ = re.compile(r"^(\d{4,})-")  # a batch's sequence number, as `tarn lake add` prefixes it


def batch_order(name: str) -> tuple:
    """Sort key of a batch: its sequence number (numerically), then its name."""
    m = SEQ.match(name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def held_out(names: Iterable[str], cfg: PrepareConfig) -> list[str]:
    """The test batches among ``names``, in batch order."""
    ordered = sorted(set(names), key=batch_order)
    if cfg.test_split == "latest":
        return ordered[-cfg.test_latest:] if len(ordered) > cfg.test_latest else []
    return [n for n in ordered if matches(n, cfg.test_batches)]


def describe_rule(cfg: PrepareConfig) -> str:
    """How the test batches are chosen, for an error message."""
    if cfg.test_split == "latest":
        return f"prepare.test_split latest (the {cfg.test_latest} newest batch(es))"
    return f"prepare.test_batches {cfg.test_batches}"


def is_forward(trained: Iterable[str], tested: Iterable[str]) -> bool:
    """True when every tested batch comes after every batch trained on (by batch order)."""
    trained, tested = list(trained), list(tested)
    if not trained or not tested:
        return False
    return max(map(batch_order, trained)) < min(map(batch_order, tested))


def label(tested: Sequence[str], rows: int | None, trained: Iterable[str] = ()) -> str:
    """One line saying what a test figure was measured on: which batches, how many rows, and
    whether they are forward in time for a model trained on ``trained`` (or in-sample, when
    it trained on some of them)."""
    tested = list(tested)
    trained = set(trained)
    names = ", ".join(tested[:3]) + (f" (+{len(tested) - 3} more)" if len(tested) > 3 else "")
    head = (f"{rows:,} rows of " if rows is not None else "") + (
        f"batch{'es' if len(tested) != 1 else ''} {names}")
    if not trained:
        return head
    seen = sorted(trained & set(tested), key=batch_order)
    if seen:
        return f"{head}: in-sample, the model trained on {', '.join(seen)} (optimistic)"
    if is_forward(trained, tested):
        return f"{head}: forward in time, newer than every batch it trained on"
    return f"{head}: held out, not newer than every batch it trained on"


def _standing(tested: Sequence[str], trained: Iterable[str]) -> str:
    trained = set(trained)
    seen = sorted(trained & set(tested), key=batch_order)
    if seen:
        return f"in-sample (it trained on {', '.join(seen)}: optimistic)"
    if not trained:
        return "lineage unknown"
    return "forward in time" if is_forward(trained, tested) else "held out"


def gate_label(tested: Sequence[str], rows: int | None, candidate: Iterable[str],
               champion: Iterable[str] | None = None) -> str:
    """What the gates measured both versions on: the rows, and for each version whether they
    are forward in time or in-sample (a champion that trained on the window is favoured)."""
    head = label(tested, rows)
    cand = _standing(tested, candidate)
    if champion is None:
        return f"{head}; candidate: {cand}"
    champ = _standing(tested, champion)
    if cand == champ:
        return f"{head}; {cand} for both"
    return f"{head}; candidate: {cand}, champion: {champ}"


def overlaps(batch: str, ranges: dict[str, tuple[str, str]]) -> list[str]:
    """Pure: one line per earlier batch (by batch order) whose times reach past the start of
    ``batch``'s: its rows would not all be newer, so a moving test window on it would not be
    forward in time. ``ranges``: batch -> (first, last) ISO time, ``batch`` included."""
    if batch not in ranges:
        return []
    first, last = ranges[batch]
    return [f"batch {batch}'s times ({first} .. {last}) overlap batch {b}'s "
            f"({lo} .. {hi})"
            for b, (lo, hi) in sorted(ranges.items(), key=lambda kv: batch_order(kv[0]))
            if batch_order(b) < batch_order(batch) and hi > first]
