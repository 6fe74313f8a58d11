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
import pandas as pd


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
        if not entries:
            return
        try:
            frames = []
            for e in entries:
                df = pd.DataFrame(e.columns)
                df["proba"] = e.proba
                df["model_version"] = e.version
                df["ts"] = pd.Timestamp(e.at, unit="s", tz="UTC")
                frames.append(df)
            out = pd.concat(frames, ignore_index=True)
            self._seq += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            target = self.dir / f"preds-{stamp}-{os.getpid()}-{self._seq:06d}.parquet"
            tmp = target.with_name("." + target.name + ".tmp")
            out.to_parquet(tmp, index=False)
            os.replace(tmp, target)
            self.written_rows += len(out)
            self.files += 1
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.errors += 1
