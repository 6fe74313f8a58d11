"""The one path from a raw lake file to curated rows: read, apply the contract, deduplicate.

The etl stage writes what this yields; monitoring and retraining read new batches through the
same code, so a row means the same thing everywhere. Rows that break the contract, and
duplicates, come back as quarantine rows with a reason, the file and line, and the raw record.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tarn.config import Params, SchemaConfig
from tarn.core import schema as sc
from tarn.core.readers import RawChunk, file_format, iter_chunks, read_header
from tarn.errors import EtlError, LakeError

T = TypeVar("T")

QUARANTINE_SCHEMA = pa.schema([
    ("batch", pa.string()), ("file", pa.string()), ("line", pa.int64()),
    ("reason", pa.string()), ("detail", pa.string()), ("raw", pa.string()),
])


@dataclass
class Counts:
    read: int = 0
    written: int = 0
    duplicates: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def add(self, other: Counts) -> None:
        self.read += other.read
        self.written += other.written
        self.duplicates += other.duplicates
        self.rejected_by_reason.update(other.rejected_by_reason)


def dedup_scope(params: Params) -> str | None:
    """How the ETL (and everything reading batches through it) de-duplicates: "global" (across
    batches), "batch" (within one), or None. ``auto``: by ``schema.key`` across batches when a
    key is declared, else nothing (identical rows are legitimately different records)."""
    mode = params.etl.dedup
    if mode == "auto":
        return "global" if params.schema.key else None
    return None if mode == "off" else mode


def new_dedup(params: Params) -> Dedup:
    return Dedup(params.schema.key)


class Dedup:
    """Remembers row hashes (8 bytes a row, plus 8 for where it was first seen).

    Hashes are kept in sorted runs merged like a binary counter, so checking a chunk costs
    a few binary searches per row, all in NumPy."""

    def __init__(self, key: list[str] | None = None) -> None:
        self.key = list(key or [])  # judge by these columns; [] = the whole row
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, origins)
        self.places: list[str] = []  # "batch:file" per origin's high bits

    def _find(self, h: np.ndarray) -> np.ndarray:
        """Origin of each hash seen before, or -1."""
        found = np.full(len(h), -1, dtype=np.int64)
        for keys, origins in self.runs:
            pos = np.searchsorted(keys, h)
            pos[pos == len(keys)] = 0
            hit = (keys[pos] == h) & (found < 0) if len(keys) else np.zeros(len(h), bool)
            found[hit] = origins[pos[hit]]
        return found

    def _remember(self, h: np.ndarray, origins: np.ndarray) -> None:
        order = np.argsort(h, kind="stable")
        self.runs.append((h[order], origins[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (k1, o1), (k2, o2) = self.runs.pop(-2), self.runs.pop()
            k, o = np.concatenate([k1, k2]), np.concatenate([o1, o2])
            order = np.argsort(k, kind="stable")
            self.runs.append((k[order], o[order]))

    def where(self, origin: int) -> str:
        return f"{self.places[origin >> 40]}:{origin & ((1 << 40) - 1)}"

    def split(self, rows: pa.Table, place: str, lines: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Mask of duplicate rows (of earlier rows, or of an earlier row of this chunk), and
        for each duplicate the ``batch:file:line`` of its first occurrence."""
        h = row_hashes(rows.select(self.key) if self.key else rows)
        if not self.places or self.places[-1] != place:
            self.places.append(place)
        origins = ((len(self.places) - 1) << 40) + lines.astype(np.int64)
        first = self._find(h)
        _, first_idx, inverse = np.unique(h, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        within = first_idx[inverse] != np.arange(len(h))  # repeats inside this chunk
        first = np.where((first < 0) & within, origins[first_idx[inverse]], first)
        dup = first >= 0
        new = ~dup
        if new.any():
            self._remember(h[new], origins[new])
        return dup, [self.where(o) for o in first[dup].tolist()]


def row_hashes(rows: pa.Table) -> np.ndarray:
    """A 64-bit hash per row of typed values (equal rows, equal hashes), column by column."""
    from pandas.core.util.hashing import combine_hash_arrays, hash_array

    n = rows.num_rows
    parts = []
    for col in rows.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_string(col.type):
            enc = pc.dictionary_encode(col)
            uniq = hash_array(enc.dictionary.to_numpy(zero_copy_only=False).astype(object))
            idx = enc.indices.to_numpy(zero_copy_only=False)
            null = pc.is_null(enc.indices).to_numpy(zero_copy_only=False)
            hv = np.where(null, np.uint64(0x9E3779B97F4A7C15),
                          uniq[np.where(null, 0, idx).astype(np.int64)] if len(uniq) else 0)
        else:
            vals = pc.fill_null(col, 0).to_numpy(zero_copy_only=False)
            hv = hash_array(vals)
            null = pc.is_null(col).to_numpy(zero_copy_only=False)
            hv = np.where(null, np.uint64(0x9E3779B97F4A7C15), hv)
        parts.append(hv.astype(np.uint64))
    if not parts:
        return np.zeros(n, dtype=np.uint64)
    return combine_hash_arrays(iter(parts), len(parts))


def _quarantine(batch: str, rel: str, lines, reasons, details, raw) -> pa.Table:
    n = len(lines)
    return pa.table({"batch": pa.array([batch] * n, pa.string()),
                     "file": pa.array([rel] * n, pa.string()),
                     "line": pa.array(np.asarray(lines, dtype=np.int64), pa.int64()),
                     "reason": pa.array(reasons, pa.string()),
                     "detail": pa.array(details, pa.string()),
                     "raw": raw}, schema=QUARANTINE_SCHEMA)


@dataclass
class Transformed:
    """One chunk after the contract, before deduplication (which needs file order)."""

    chunk: RawChunk
    res: sc.ConformedArrow
    quarantine: list[pa.Table]  # malformed and rejected records
    rejected_by_reason: Counter


def transform_file(fs, path: str, rel: str, batch: str, params: Params) -> Iterator[Transformed]:
    """Read one file chunk by chunk and apply the contract (no shared state: files can be
    transformed in parallel). The header is checked even when no row follows it."""
    schema = params.schema
    strict = file_format(rel) != "jsonl"  # JSON Lines may omit null keys
    for chunk in iter_chunks(fs, path, params.etl.chunk_rows):
        q: list[pa.Table] = []
        reasons: Counter = Counter()
        if chunk.malformed:
            reasons[sc.MALFORMED] += len(chunk.malformed)
            m = chunk.malformed
            q.append(_quarantine(batch, rel, [x.line for x in m], [x.reason for x in m],
                                 [x.detail for x in m], pa.array([x.raw for x in m],
                                                                 pa.string())))
        mapping = sc.resolve_columns(chunk.columns, schema, rel, strict) \
            if chunk.columns or strict else {}
        res = sc.conform_arrow(chunk.table.select(list(mapping)), schema, mapping)
        if len(res.rejected):
            reasons.update(res.reasons)
            q.append(_quarantine(batch, rel, chunk.lines[res.rejected], res.reasons,
                                 res.details, sc.raw_json(chunk.raw(res.rejected))))
        yield Transformed(chunk, res, q, reasons)


def load_chunk(t: Transformed, batch: str, rel: str, dedup: Dedup | None,
               counts: Counts) -> tuple[pa.Table, pa.Table]:
    """Deduplicate one transformed chunk (in file order) and account for every record:
    (curated rows, quarantine rows)."""
    counts.read += t.chunk.n_records
    counts.rejected_by_reason.update(t.rejected_by_reason)
    rows, q = t.res.rows, list(t.quarantine)
    if dedup is not None and rows.num_rows:
        lines = t.chunk.lines[t.res.kept]
        dup, first = dedup.split(rows, f"{batch}:{rel}", lines)
        if dup.any():
            counts.duplicates += int(dup.sum())
            where = np.flatnonzero(dup)
            q.append(_quarantine(batch, rel, lines[where], [sc.DUPLICATE] * len(where),
                                 [f"duplicate of {f}" for f in first],
                                 sc.raw_json(t.chunk.raw(t.res.kept[where]))))
            rows = rows.filter(pa.array(~dup))
    counts.written += rows.num_rows
    if q:
        qt = pa.concat_tables(q)
        qt = qt.take(pc.sort_indices(qt, [("line", "ascending")])) if len(q) > 1 else qt
    else:
        qt = QUARANTINE_SCHEMA.empty_table()
    return rows, qt


def process_file(fs, path: str, rel: str, batch: str, params: Params, dedup: Dedup | None,
                 counts: Counts) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Extract and transform one file chunk by chunk: yields (curated rows, quarantine rows)
    as Arrow tables and updates ``counts``. The one implementation of the contract's
    application, used by the etl stage and by retraining on new batches."""
    for t in transform_file(fs, path, rel, batch, params):
        yield load_chunk(t, batch, rel, dedup, counts)


def check_header(path: Path, schema: SchemaConfig) -> None:
    """A local file's header maps onto the contract (names and aliases), whether rows follow
    or not (``tarn lake add``): a LakeError names the file and the missing or unexpected
    columns, or why the file cannot be read."""
    import fsspec

    try:
        header = read_header(fsspec.filesystem("file"), str(path))
        strict = file_format(path.name) != "jsonl"  # JSON Lines may omit null keys
        if header or strict:
            sc.resolve_columns(header, schema, str(path), strict_missing=strict)
    except EtlError as e:
        raise LakeError(e.message, e.hint) from e


def workers() -> int:
    """Files transformed at once: the cores this process may use (Arrow's CSV parsing and
    compute kernels release the GIL)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def ordered_prefetch(makers: list[Callable[[], Iterator[T]]], n_workers: int,
                     depth: int = 2) -> Iterator[Iterator[T]]:
    """For each maker, in order, an iterator over its items; up to ``n_workers`` of them run
    ahead in threads, each holding at most ``depth`` items, so memory stays bounded by
    ``n_workers * (depth + 1)`` items. Consume each iterator fully before the next. An
    exception in a maker is raised where its items are consumed."""
    if n_workers <= 1 or len(makers) <= 1:
        for make in makers:
            yield make()
        return
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(depth) for _ in makers]

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(i: int) -> None:
        try:
            for item in makers[i]():
                if not put(queues[i], ("item", item)):
                    return
            put(queues[i], ("done", None))
        except BaseException as e:  # handed to the consumer, raised there
            put(queues[i], ("error", e))

    def drain(q: queue.Queue) -> Iterator[T]:
        while True:
            kind, value = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value

    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="tarn-etl")
    try:
        for i in range(len(makers)):
            pool.submit(run, i)
        for q in queues:
            yield drain(q)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def read_batches(params: Params, root: Path, names: list[str],
                 manifest: list[dict] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Curated rows of lake batches through the ETL contract (rejected rows are counted, not
    used). Raises EtlError on a schema change (missing or renamed column). With ``manifest``,
    appends (batch, path, size, sha256, rows read, rows used) for every file read: the exact
    bytes a model learned from, as the snapshot records them for a full training."""
    import hashlib

    from tarn.core.lake import Lake

    lake = Lake.from_config(params.lake, root)
    frames, notes = [], []
    scope, dedup, current_batch = dedup_scope(params), None, None  # the etl stage's settings
    for b in lake.batches(params.lake.include):
        if b.name not in names:
            continue
        for f in b.files:
            counts = Counts()
            if scope and (dedup is None or scope == "batch" and b.name != current_batch):
                dedup = new_dedup(params)
            current_batch = b.name
            if manifest is not None:
                h = hashlib.sha256()
                size = 0
                with lake.fs.open(f.path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
                        size += len(block)
                manifest.append({"batch": b.name, "path": f.relpath, "size": size,
                                 "sha256": h.hexdigest(), "counts": counts})
            for rows, _ in process_file(lake.fs, f.path, f.relpath, b.name, params, dedup,
                                        counts):
                frames.append(sc.to_pandas(rows).assign(batch=b.name))
            if counts.rejected:
                notes.append(f"{f.relpath}: {counts.rejected} of {counts.read} rows rejected "
                             f"({dict(counts.rejected_by_reason)})")
    for entry in manifest or []:
        c = entry.pop("counts", None)
        if c is not None:
            entry["rows"], entry["rows_used"] = c.read, c.written
    cols = [*params.schema.feature_names, params.schema.target.name, "batch"]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return df, notes
