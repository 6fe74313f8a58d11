"""The prediction log on its own: rows written = rows appended (shutdown included), files rolled
by rows / age / idleness, owner-only files, failed writes counted and retried, bad values
isolated to their rows, the queue bounded in rows, retention, crash recovery."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.serve.predlog import PredictionLog, segment_batches


def cols(n: int, start: int = 0, sex: str = "F") -> dict[str, np.ndarray]:
    return {"age": np.arange(start, start + n, dtype=np.float64),
            "sex": np.array([sex] * n, dtype=object)}


def logged(d: Path) -> pd.DataFrame:
    files = sorted(d.glob("preds-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def wait(cond, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def make(tmp_path: Path, **kw) -> PredictionLog:
    opts = {"file_idle_s": 60, "file_max_age_s": 600, **kw}
    return PredictionLog(tmp_path / "log", kw.pop("flush_rows", 10),
                         kw.pop("flush_interval_s", 0.05),
                         **{k: v for k, v in opts.items()
                            if k not in ("flush_rows", "flush_interval_s")}).start()


def test_every_row_appended_is_in_a_closed_file_after_close(tmp_path):
    p = make(tmp_path, file_rows=250)
    for i in range(100):
        p.append(cols(7, i * 7), np.full(7, 0.5), "1")
    p.close()
    log = logged(tmp_path / "log")
    assert len(log) == 700 and sorted(log["age"]) == list(range(700))
    files = list((tmp_path / "log").glob("preds-*.parquet"))
    assert len(files) == 3  # rolled at 250 rows: 250 + 250 + 200 (not one file per flush)
    assert not list((tmp_path / "log").glob(".*"))  # no segment or temp file left
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert {"age", "sex", "proba", "model_version", "ts"} <= set(log.columns)
    assert p.stats()["written_rows"] == 700 and p.stats()["pending_rows"] == 0


def test_a_quiet_log_closes_its_file(tmp_path):
    p = make(tmp_path, file_idle_s=0.3)
    p.append(cols(5), np.full(5, 0.1), "1")
    wait(lambda: len(logged(tmp_path / "log")) == 5)
    p.append(cols(3, 5), np.full(3, 0.1), "1")
    wait(lambda: len(logged(tmp_path / "log")) == 8)
    p.close()
    assert len(list((tmp_path / "log").glob("preds-*.parquet"))) == 2


def test_a_file_is_closed_at_its_maximum_age(tmp_path):
    p = make(tmp_path, file_max_age_s=0.3)
    end = time.monotonic() + 1.2
    while time.monotonic() < end:
        p.append(cols(1), np.full(1, 0.1), "1")
        time.sleep(0.02)
    p.close()
    n = len(list((tmp_path / "log").glob("preds-*.parquet")))
    assert 3 <= n <= 6, n


def test_the_open_file_is_never_read_as_a_log_file(tmp_path):
    p = make(tmp_path)
    p.append(cols(20), np.full(20, 0.1), "1")
    wait(lambda: p.stats()["written_rows"] == 20)
    d = tmp_path / "log"
    assert not list(d.glob("preds-*.parquet"))  # still open: hidden
    seg = next(d.glob(".preds-*.arrows"))
    assert stat.S_IMODE(seg.stat().st_mode) == 0o600
    schema, batches = segment_batches(seg)
    assert sum(b.num_rows for b in batches) == 20  # readable up to the last batch
    p.close()


def test_an_unwritable_folder_is_counted_and_nothing_is_lost(tmp_path):
    p = make(tmp_path)
    d = tmp_path / "log"
    p.append(cols(10), np.full(10, 0.2), "1")
    wait(lambda: p.stats()["written_rows"] == 10)
    # the folder is replaced by a file: every open and rename fails (root ignores chmod)
    p._roll()  # noqa: SLF001 - close the open segment so the next write needs the folder
    away = tmp_path / "away"
    d.rename(away)
    d.write_text("not a folder")
    for i in range(5):
        p.append(cols(10, 100 + 10 * i), np.full(10, 0.3), "1")
    wait(lambda: p.stats()["flush_failures"] >= 2)
    assert p.stats()["pending_rows"] == 50 and p.stats()["dropped_rows"] == 0
    d.unlink()
    away.rename(d)
    wait(lambda: p.stats()["pending_rows"] == 0)
    p.close()
    log = logged(d)
    assert len(log) == 60 and log["age"].nunique() == 60


def test_a_write_beyond_the_disk_is_cut_back_and_retried(tmp_path, monkeypatch):
    """A write that fails half way (disk full) leaves no torn batch behind."""
    import pyarrow as pa

    p = make(tmp_path)
    p.append(cols(10), np.full(10, 0.2), "1")
    wait(lambda: p.stats()["written_rows"] == 10)
    real = pa.ipc.RecordBatchStreamWriter.write_table
    calls = {"n": 0}

    def flaky(self, table, *a, **k):
        calls["n"] += 1
        if calls["n"] <= 2:
            self_sink = p._segment.sink  # noqa: SLF001
            self_sink.write(b"\x00" * 100)  # half a batch reaches the disk ...
            raise OSError(28, "No space left on device")  # ... then the disk is full
        return real(self, table, *a, **k)

    monkeypatch.setattr(pa.ipc.RecordBatchStreamWriter, "write_table", flaky)
    p.append(cols(10, 10), np.full(10, 0.2), "1")
    wait(lambda: p.stats()["written_rows"] == 20)
    p.close()
    assert p.stats()["flush_failures"] == 2
    assert sorted(logged(tmp_path / "log")["age"]) == list(range(20))


def test_a_bad_value_isolates_its_own_row(tmp_path):
    p = make(tmp_path)
    good = cols(3)
    bad = {"age": np.array([1.0, 2.0, 3.0]), "sex": np.array(["F", "\ud800", "M"], dtype=object)}
    p.append(good, np.full(3, 0.1), "1")
    p.append(bad, np.full(3, 0.1), "1")
    p.close()
    log = logged(tmp_path / "log")
    assert len(log) == 5 and p.stats()["bad_rows"] == 1


def test_the_queue_is_bounded_in_rows(tmp_path):
    p = PredictionLog(tmp_path / "log", 10_000, 60, max_pending_rows=100)  # not started
    p.append(cols(60), np.zeros(60), "1")
    p.append(cols(60), np.zeros(60), "1")  # would hold 120 > 100 rows
    p.append(cols(40), np.zeros(40), "1")
    assert p.stats()["dropped_rows"] == 60 and p.stats()["pending_rows"] == 100


def test_shutdown_with_an_unwritable_folder_dead_letters(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    p = make(tmp_path, flush_interval_s=30)
    d = tmp_path / "log"
    shutil.rmtree(d)
    d.write_text("not a folder")
    p.append(cols(7), np.zeros(7), "1")
    p.close()
    s = p.stats()
    assert s["deadletter_rows"] == 7 and s["dropped_rows"] == 0
    assert len(list((tmp_path / "tmp").glob("deadletter-*.arrows"))) == 1


def test_retention_by_size_and_age(tmp_path):
    d = tmp_path / "log"
    d.mkdir()
    old = d / "preds-20000101T000000-1-000001.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(old)
    os.utime(old, (time.time() - 40 * 86400,) * 2)
    p = make(tmp_path, retention_days=30, file_rows=100, retention_bytes=10**9)
    for i in range(5):
        p.append(cols(100, i * 100), np.zeros(100), "1")
    p.close()
    assert not old.exists() and len(logged(d)) == 500
    sizes = [f.stat().st_size for f in d.glob("preds-*.parquet")]
    p = make(tmp_path, retention_bytes=sum(sizes) - 1)
    p.close()
    assert len(list(d.glob("preds-*.parquet"))) == len(sizes) - 1


def test_a_crashed_process_segment_is_recovered(tmp_path):
    p = make(tmp_path)
    p.append(cols(12), np.zeros(12), "1")
    wait(lambda: p.stats()["written_rows"] == 12)
    d = tmp_path / "log"
    seg = next(d.glob(".preds-*.arrows"))
    dead_pid = 2 ** 22 + 12345  # above pid_max's default: no such process
    crashed = d / seg.name.replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    shutil.copy(seg, crashed)
    with open(crashed, "ab") as f:
        f.write(b"\xff\xff\xff\xff\x10\x00")  # a torn last batch
    p.close()
    q = make(tmp_path)
    q.close()
    assert len(logged(d)) == 24 and not crashed.exists()


@pytest.mark.parametrize("n", [0])
def test_close_without_rows_leaves_nothing(tmp_path, n):
    p = make(tmp_path)
    p.close()
    assert not list((tmp_path / "log").iterdir())


def test_workers_starting_together_recover_a_dead_segment_once(tmp_path):
    """Several server workers start on one log folder: each dead segment is claimed by one of
    them (renamed), so it is converted once; live workers' files are left alone."""
    p = make(tmp_path)
    p.append(cols(5), np.zeros(5), "1", "req-1", [None, "age: 150 outside [17, 100]", None,
                                                   None, None])
    wait(lambda: p.stats()["written_rows"] == 5)
    d = tmp_path / "log"
    seg = next(d.glob(".preds-*.arrows"))
    dead = [d / seg.name.replace(f"-{os.getpid()}-", f"-{2 ** 22 + k}-") for k in (1, 2, 3)]
    for c in dead:
        shutil.copy(seg, c)
    p.close()
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    barrier, claimed = ctx.Barrier(3), ctx.Queue()
    workers = [ctx.Process(target=_start_worker, args=(d, barrier, claimed)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert sum(claimed.get(timeout=5) for _ in workers) == 3  # each segment claimed once
    df = logged(d)
    assert len(df) == 20 and not any(c.exists() for c in dead)
    assert (df["request_id"] == "req-1").all()
    assert df["violations"].notna().sum() == 4


def test_request_ids_and_flags_are_logged_per_row(tmp_path):
    p = make(tmp_path)
    p.append(cols(2), np.zeros(2), "1", "a")
    p.append(cols(1), np.zeros(1), "1", "b", ["sex: unknown category 'X'"])
    p.close()
    df = logged(tmp_path / "log")
    assert df["request_id"].tolist() == ["a", "a", "b"]
    assert df["violations"].tolist() == [None, None, "sex: unknown category 'X'"]


def _start_worker(d, barrier, claimed) -> None:
    """What a server worker does at start, in its own process, all at the same moment."""
    q = PredictionLog(d, 10, 0.05, file_idle_s=60)
    barrier.wait()
    q._recover()  # noqa: SLF001
    claimed.put(len(q._unpublished))  # noqa: SLF001
    q._publish()  # noqa: SLF001
