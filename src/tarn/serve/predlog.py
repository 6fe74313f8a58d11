"""The prediction log: every scored row (inputs, what the model said, model version, time)
appended to rolling files by a background thread, off the request path.

What the model said is logged per task in the columns :mod:`tarn.core.predictions` names (the
names monitoring reads): binary ``proba``; multiclass ``proba_<i>`` per class and ``label``;
regression ``prediction`` (:func:`tarn.core.predictions.log_columns` builds them from scores).

How a row travels, and why nothing acknowledged is lost:

1. ``append`` (request thread) queues the request's columns, with the response's request id
   (column ``request_id``) and what the contract flagged per row (column ``violations``).
   The queue is bounded in *rows* (``max_pending_rows``, queued + not yet written): past
   it, rows are counted as dropped (``tarn_predlog_dropped_rows_total``); requests never
   wait.
2. Every ``flush_interval_s`` (or ``flush_rows``) the writer thread turns the queued entries into
   one Arrow table. A value that cannot be converted isolates its own row (counted as bad), not
   the batch.
3. The table is appended to the open *segment*, a hidden Arrow IPC stream
   ``.preds-<utc>-<pid>-<seq>.arrows`` (mode 0o600). A stream is readable up to its last
   complete batch, so a crash loses nothing already written. If the write fails (unwritable
   folder, disk full, file size limit) the segment is cut back to its last good batch and
   closed, the failure is counted (``tarn_predlog_flush_failures_total``) and the table stays
   in memory to be written again on the next tick.
4. A segment is closed when it holds ``file_rows`` rows, is ``file_max_age_s`` old, or no row
   has come for ``file_idle_s`` (so a quiet server leaves every row readable). Closing converts
   it to ``preds-<utc>-<pid>-<seq>.parquet`` (temp + rename, 0o600) and removes the stream; a
   conversion that fails is retried, and segments a crashed process left are converted at the
   next start. Readers (``tarn monitor``) only read ``preds-*.parquet``: closed files.
5. Retention removes the oldest closed files beyond ``retention_bytes`` in total or older than
   ``retention_days``.
6. ``close`` drains the queue, writes, closes the segment; rows that still cannot be written go
   to a dead-letter stream (``deadletter-*.arrows``), or are counted as dropped: never lost
   without a count.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tarn.core.predictions import PROBA

log = logging.getLogger("tarn.serve")
_SEGMENT = re.compile(r"\.(preds-\d{8}T\d{6}-(\d+)-\d+)\.arrows")
# a dead process's segment, claimed (renamed) by the process converting it: with several
# server workers starting at once, exactly one of them converts each one
_CLAIMED = re.compile(r"\.(preds-\d{8}T\d{6}-\d+-\d+)\.arrows\.claim-(\d+)")
_TMP = re.compile(r"\.preds-\d{8}T\d{6}-(\d+)-\d+\.parquet\.tmp(?:-(\d+))?")
ROW_GROUP_ROWS = 100_000  # Parquet row groups when a segment is converted


@dataclass
class Entry:
    columns: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]  # what the model said, per log column (core.predictions)
    version: str
    at: float
    request_id: str = ""  # the response's X-Request-Id: ties a response to its rows
    violations: list[str | None] | None = None  # per row: what the contract flagged, if any
    # per row, when several requests' entries are merged into one for conversion
    versions: np.ndarray | None = None
    ids: np.ndarray | None = None
    stamps: np.ndarray | None = None


class _Segment:
    """The open Arrow IPC stream new batches are appended to."""

    def __init__(self, directory: Path, name: str, schema) -> None:
        import pyarrow as pa

        self.name = name
        self.path = directory / f".{name}.arrows"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            self.sink = pa.OSFile(str(self.path), mode="a")
            self.writer = pa.ipc.new_stream(self.sink, schema)
        except Exception:  # not even the schema fits (disk full): leave no file behind
            with contextlib.suppress(Exception):
                self.sink.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self.schema = schema
        self.good = self.sink.tell()  # bytes known to hold complete batches
        self.rows = 0
        self.opened = self.last_write = time.monotonic()

    def write(self, table) -> None:
        """Append ``table``; on failure cut the file back to its last complete batch and
        raise (the segment must then be closed: the stream writer's state is unknown)."""
        try:
            self.writer.write_table(table)
            self.good = self.sink.tell()
        except Exception:
            with contextlib.suppress(OSError):
                os.truncate(self.path, self.good)
            raise
        self.rows += table.num_rows
        self.last_write = time.monotonic()

    def close(self) -> None:
        for step in (self.writer.close, self.sink.close):  # EOS marker, then the file
            with contextlib.suppress(Exception):
                step()


class PredictionLog:
    def __init__(self, directory: Path, flush_rows: int, flush_interval_s: float, *,
                 file_rows: int = 1_000_000, file_max_age_s: float = 900,
                 file_idle_s: float = 5, retention_bytes: int = 0,
                 retention_days: float = 0, max_pending_rows: int = 500_000) -> None:
        self.dir = directory
        self.flush_rows = flush_rows
        self.interval = flush_interval_s
        self.file_rows = file_rows
        self.file_max_age_s = file_max_age_s
        self.file_idle_s = file_idle_s
        self.retention_bytes = retention_bytes
        self.retention_days = retention_days
        self.max_pending_rows = max_pending_rows
        self._cv = threading.Condition()
        self._queue: deque[Entry] = deque()
        self._queued_rows = 0
        self._held_rows = 0  # queued + converted but not yet in a segment
        self._closing = False
        self._tables: list = []  # converted, waiting to be written (retried on failure)
        self._segment: _Segment | None = None
        self._unpublished: list[tuple[Path, str]] = []  # closed segments to convert
        self._seq = 0
        self._last_retention = 0.0
        self._failing = False
        self.last_error = ""
        self.counts = dict.fromkeys(("written_rows", "dropped_rows", "bad_rows",
                                     "flush_failures", "files", "deadletter_rows",
                                     "retention_deleted_files", "publish_failures"), 0)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    # ------------------------------------------------------------------ the request side
    @property
    def dropped_rows(self) -> int:
        return self.counts["dropped_rows"]

    @property
    def written_rows(self) -> int:
        return self.counts["written_rows"]

    def stats(self) -> dict[str, int]:
        with self._cv:
            return {**self.counts, "pending_rows": self._held_rows}

    def start(self) -> PredictionLog:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._recover()
        self._thread.start()
        return self

    def append(self, columns: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | np.ndarray,
               version: str, request_id: str = "",
               violations: list[str | None] | None = None) -> None:
        """Queue one request's rows: its input columns and the model's outputs as log columns
        (:func:`tarn.core.predictions.log_columns`; a bare array is a binary model's
        probabilities). ``violations``: per row, the contract values the server flagged and
        scored, or None."""
        if not isinstance(outputs, dict):
            outputs = {PROBA: outputs}
        n = _rows(outputs)
        with self._cv:
            if self._closing or self._held_rows + n > self.max_pending_rows:
                self.counts["dropped_rows"] += n
                return
            self._queue.append(Entry(columns, outputs, version, time.time(), request_id,
                                     violations))
            self._queued_rows += n
            self._held_rows += n
            if self._queued_rows >= self.flush_rows:
                self._cv.notify()

    def close(self, timeout: float = 30) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the writer thread
    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closing or self._queued_rows >= self.flush_rows,
                                  timeout=self.interval)
                entries = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
                closing = self._closing
            try:
                self._tick(entries, closing)
            except Exception as e:  # noqa: BLE001 - the log must never take the server down
                self._note_failure(e)
            if closing:
                return

    def _tick(self, entries: list[Entry], closing: bool) -> None:
        if entries:
            table, bad = _to_table(entries)
            if bad:
                with self._cv:
                    self.counts["bad_rows"] += bad
                    self._held_rows -= bad
                log.warning("prediction log: %d row(s) with values that cannot be logged "
                            "skipped", bad)
            if table is not None:
                self._tables.append(table)
        self._write()
        now = time.monotonic()
        seg = self._segment
        if seg is not None and (closing or seg.rows >= self.file_rows
                                or now - seg.opened >= self.file_max_age_s
                                or now - seg.last_write >= self.file_idle_s):
            self._roll()
        self._publish()
        if closing:
            self._dead_letter()
        if closing or now - self._last_retention >= 60:
            self._retention()
            self._last_retention = now

    def _write(self) -> None:
        """Append the waiting tables to the open segment (opening one if needed)."""
        import pyarrow as pa

        while self._tables:
            table = self._tables[0]
            try:
                seg = self._segment
                if seg is not None and not seg.schema.equals(table.schema):
                    self._roll()  # the model's columns changed: a new file
                    seg = None
                if seg is None:
                    self._seq += 1
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                    name = f"preds-{stamp}-{os.getpid()}-{self._seq:06d}"
                    seg = self._segment = _Segment(self.dir, name, table.schema)
                room = self.file_rows - seg.rows
                part = table if table.num_rows <= room else table.slice(0, room)
                seg.write(part)
            except (OSError, pa.ArrowException) as e:
                self._note_failure(e)
                if self._segment is not None:
                    self._roll()  # keep what it holds; the table is written again later
                return
            if part.num_rows == table.num_rows:
                self._tables.pop(0)
            else:  # the rest goes to the next file
                self._tables[0] = table.slice(part.num_rows)
            with self._cv:
                self.counts["written_rows"] += part.num_rows
                self._held_rows -= part.num_rows
            if self._failing:
                log.warning("prediction log: writing again after failures; nothing was lost")
                self._failing = False
            if seg.rows >= self.file_rows:
                self._roll()

    def _note_failure(self, e: BaseException) -> None:
        with self._cv:
            self.counts["flush_failures"] += 1
        self.last_error = f"{type(e).__name__}: {e}"
        if not self._failing:  # once per streak, not every tick
            log.error("prediction log: write failed (%s); %d row(s) kept in memory and "
                      "retried", self.last_error, self._held_rows)
        self._failing = True

    def _roll(self) -> None:
        seg, self._segment = self._segment, None
        if seg is None:
            return
        seg.close()
        self._unpublished.append((seg.path, seg.name))

    def _publish(self) -> None:
        """Convert closed segments to Parquet; keep the ones that fail for the next tick."""
        left = []
        for path, name in self._unpublished:
            try:
                if _publish(path, self.dir / f"{name}.parquet"):
                    with self._cv:
                        self.counts["files"] += 1
            except Exception as e:  # noqa: BLE001 - retried on the next tick
                with self._cv:
                    self.counts["publish_failures"] += 1
                self._note_failure(e)
                left.append((path, name))
        self._unpublished = left

    def _dead_letter(self) -> None:
        """At shutdown: rows that could not be written go to a dead-letter stream."""
        if not self._tables:
            return
        import pyarrow as pa

        rows = sum(t.num_rows for t in self._tables)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        for folder in (self.dir, Path(os.environ.get("TMPDIR", "/tmp"))):
            path = folder / f"deadletter-{stamp}-{os.getpid()}.arrows"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f, pa.ipc.new_stream(
                        f, self._tables[0].schema) as w:
                    for t in self._tables:
                        w.write_table(t.cast(self._tables[0].schema))
            except Exception as e:  # noqa: BLE001 - try the next place
                with contextlib.suppress(OSError):
                    path.unlink()
                self._note_failure(e)
                continue
            log.error("prediction log: %d row(s) could not be written; kept in %s", rows, path)
            with self._cv:
                self.counts["deadletter_rows"] += rows
                self._held_rows -= rows
            self._tables = []
            return
        log.error("prediction log: %d acknowledged row(s) could not be written anywhere", rows)
        with self._cv:
            self.counts["dropped_rows"] += rows
            self._held_rows -= rows
        self._tables = []

    def _retention(self) -> None:
        if not (self.retention_bytes or self.retention_days):
            return
        try:
            files = [(p.stat(), p) for p in self.dir.glob("preds-*.parquet")]
        except OSError:
            return
        files.sort(key=lambda sp: (sp[0].st_mtime, sp[1].name))
        total = sum(s.st_size for s, _ in files)
        cutoff = time.time() - self.retention_days * 86400 if self.retention_days else None
        for s, p in files:
            too_old = cutoff is not None and s.st_mtime < cutoff
            too_big = self.retention_bytes and total > self.retention_bytes
            if not (too_old or too_big):
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= s.st_size
                with self._cv:
                    self.counts["retention_deleted_files"] += 1

    def _recover(self) -> None:
        """Segments (and temp files) left by a process that is gone: claimed (renamed, so
        another worker starting at the same time leaves them), converted, removed. Names carry
        the writer's pid, so workers of one server never write the same file."""
        for p in self.dir.iterdir():
            m = _SEGMENT.fullmatch(p.name) or _CLAIMED.fullmatch(p.name)
            t = _TMP.fullmatch(p.name)
            if m:
                if _alive(int(m.group(2))):
                    continue
                claimed = p.with_name(f".{m.group(1)}.arrows.claim-{os.getpid()}")
                try:
                    os.rename(p, claimed)
                except OSError:  # another worker claimed it first
                    continue
                self._unpublished.append((claimed, m.group(1)))
            elif t and not _alive(int(t.group(2) or t.group(1))):
                with contextlib.suppress(OSError):
                    p.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a previous process that had our pid: it is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rows(outputs: dict[str, np.ndarray]) -> int:
    return len(next(iter(outputs.values())))


def _entry_table(e: Entry):
    import pyarrow as pa

    n = _rows(e.outputs)
    cols = {}
    for k, v in e.columns.items():
        if v.dtype == object:
            cols[k] = pa.array(v, type=pa.string(), from_pandas=True)
        else:
            cols[k] = pa.array(np.asarray(v, dtype=np.float64))
    for k, v in e.outputs.items():  # class indexes stay integers, the rest float64
        v = np.asarray(v)
        cols[k] = pa.array(v if v.dtype.kind in "iu" else v.astype(np.float64))
    merged = e.versions is not None  # several requests (see _merged)
    cols["model_version"] = pa.array(e.versions if merged else [e.version] * n, pa.string())
    cols["ts"] = pa.array(e.stamps if merged else np.full(n, int(e.at * 1e6)),
                          pa.timestamp("us", "UTC"))
    cols["request_id"] = pa.array(e.ids if merged else [e.request_id] * n, pa.string())
    cols["violations"] = (pa.array(e.violations, pa.string()) if e.violations is not None
                          else pa.nulls(n, pa.string()))
    return pa.table(cols)


def _merged(entries: list[Entry]) -> Entry:
    """Entries with the same columns as one entry (one array per column): the table is then
    built with one Arrow conversion per column, not one per column per request."""
    if len(entries) == 1:
        return entries[0]
    lengths = np.fromiter((_rows(e.outputs) for e in entries), dtype=np.int64,
                          count=len(entries))
    columns = {k: np.concatenate([e.columns[k] for e in entries]) for k in entries[0].columns}
    outputs = {k: np.concatenate([e.outputs[k] for e in entries]) for k in entries[0].outputs}
    violations = None
    if any(e.violations is not None for e in entries):
        violations = []
        for e, n in zip(entries, lengths.tolist(), strict=True):
            violations.extend(e.violations if e.violations is not None else [None] * n)
    merged = Entry(columns, outputs, "", 0.0, "", violations)
    merged.versions = np.repeat(np.array([e.version for e in entries], dtype=object), lengths)
    merged.ids = np.repeat(np.array([e.request_id for e in entries], dtype=object), lengths)
    merged.stamps = np.repeat(np.array([int(e.at * 1e6) for e in entries], dtype=np.int64),
                              lengths)
    return merged


def _to_table(entries: list[Entry]):
    """(one table for the entries, rows that could not be converted). Entries with the same
    columns are converted together; if that fails, entry by entry, and a value Arrow refuses
    isolates its own row (that entry is converted row by row)."""
    import pyarrow as pa

    groups: dict[tuple, list[Entry]] = {}
    for e in entries:
        key = tuple((k, v.dtype.kind) for d in (e.columns, e.outputs) for k, v in d.items())
        groups.setdefault(key, []).append(e)
    tables, bad = [], 0
    for group in groups.values():
        try:
            tables.append(_entry_table(_merged(group)))
            continue
        except Exception:  # noqa: BLE001 - find the entry (and row) at fault
            pass
        for e in group:
            try:
                tables.append(_entry_table(e))
                continue
            except Exception:  # noqa: BLE001 - find the row(s) at fault
                pass
            for i in range(_rows(e.outputs)):
                row = Entry({k: v[i:i + 1] for k, v in e.columns.items()},
                            {k: v[i:i + 1] for k, v in e.outputs.items()},
                            e.version, e.at, e.request_id,
                            None if e.violations is None else e.violations[i:i + 1])
                try:
                    tables.append(_entry_table(row))
                except Exception:  # noqa: BLE001
                    bad += 1
    if not tables:
        return None, bad
    if len(tables) == 1:
        return tables[0], bad
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks(), bad


def segment_batches(path: Path):
    """(schema, iterator over the complete batches) of a segment stream; a torn last batch
    (the one whose write failed, written again elsewhere) is left out. (None, ()) if not even
    the schema was written."""
    import pyarrow as pa

    f = pa.OSFile(str(path))
    try:
        reader = pa.ipc.open_stream(f)
    except (pa.ArrowInvalid, OSError):
        f.close()
        return None, iter(())

    def batches():
        try:
            while True:
                try:
                    yield reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowInvalid, OSError):
                    return
        finally:
            f.close()

    return reader.schema, batches()


def _publish(segment: Path, target: Path) -> bool:
    """Convert a closed segment to Parquet at ``target`` (temp + rename, 0o600), streaming
    row groups of ``ROW_GROUP_ROWS``, then remove it. True if a file was written (False for an
    empty segment)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, batches = segment_batches(segment)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    rows = 0
    if schema is not None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                with pq.ParquetWriter(f, schema) as w:
                    group: list = []
                    for b in batches:
                        group.append(b)
                        rows += b.num_rows
                        if sum(x.num_rows for x in group) >= ROW_GROUP_ROWS:
                            w.write_table(pa.Table.from_batches(group, schema))
                            group = []
                    if group:
                        w.write_table(pa.Table.from_batches(group, schema))
                f.flush()
                os.fsync(f.fileno())
            if rows:
                os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    with contextlib.suppress(OSError):
        tmp.unlink()  # an empty segment leaves no file
    segment.unlink()
    return rows > 0
