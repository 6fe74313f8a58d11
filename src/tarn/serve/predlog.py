"""The prediction log: every scored row (inputs, probability, label, model version, time)
appended to rolling Parquet files, batched by a background thread off the request path.

Files are ``<dir>/preds-<utc time>-<seq>.parquet``, written atomically (temp + rename), one per
flush; monitoring reads the folder. The queue is bounded: if the writer falls behind, rows
are counted as dropped (visible in /metrics), requests never wait.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


@dataclass
class Entry:
    columns: dict[str, np.ndarray]
    proba: np.ndarray
    version: str
    at: float


class PredictionLog:
    def __init__(self, directory: Path, flush_rows: int, flush_interval_s: float,
                 max_queue: int = 10_000) -> None:
        self.dir = directory
        self.flush_rows = flush_rows
        self.interval = flush_interval_s
        self.q: queue.Queue[Entry | None] = queue.Queue(max_queue)
        self.dropped_rows = 0
        self.written_rows = 0
        self.files = 0
        self.errors = 0
        self._seq = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> PredictionLog:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def append(self, columns: dict[str, np.ndarray], proba: np.ndarray, version: str) -> None:
        try:
            self.q.put_nowait(Entry(columns, proba, version, time.time()))
        except queue.Full:
            self.dropped_rows += len(proba)

    def close(self, timeout: float = 10) -> None:
        self.q.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        pending: list[Entry] = []
        rows = 0
        deadline = time.monotonic() + self.interval
        while True:
            try:
                item = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                item = ...
            if item is None:
                self._flush(pending)
                return
            if item is not ...:
                pending.append(item)
                rows += len(item.proba)
            if rows >= self.flush_rows or time.monotonic() >= deadline:
                self._flush(pending)
                pending, rows = [], 0
                deadline = time.monotonic() + self.interval

    def _flush(self, entries: list[Entry]) -> None:
        """One Parquet file for the batch, built with Arrow from the numpy columns (cheap:
        the request path shares the interpreter with this thread)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not entries:
            return
        try:
            tables = []
            for e in entries:
                n = len(e.proba)
                cols = {k: pa.array(v, from_pandas=True) for k, v in e.columns.items()}
                cols["proba"] = pa.array(e.proba)
                cols["model_version"] = pa.array([e.version] * n, pa.string())
                cols["ts"] = pa.array(np.full(n, int(e.at * 1e6)), pa.timestamp("us", "UTC"))
                tables.append(pa.table(cols))
            out = pa.concat_tables(tables, promote_options="permissive")
            self._seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            target = self.dir / f"preds-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
            tmp = target.with_name("." + target.name + ".tmp")
            pq.write_table(out, tmp)
            os.replace(tmp, target)
            self.written_rows += out.num_rows
            self.files += 1
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.errors += 1
