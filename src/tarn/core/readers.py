"""Chunked readers for the lake's file formats: CSV, JSON Lines and Parquet (optionally gzipped).

Each reader yields :class:`RawChunk` objects holding raw values as strings (``None`` = absent),
the source line (text) or row (Parquet) of every record, and the records that could not be
parsed at all. Memory is bounded by ``chunk_rows`` whatever the file size.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pandas as pd

from tarn.errors import EtlError

FORMATS: dict[str, str] = {
    ".csv": "csv", ".csv.gz": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip


def file_format(path: str) -> str | None:
    """The reader for ``path`` by its extension, or None if unsupported."""
    low = path.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if low.endswith(ext):
            return FORMATS[ext]
    return None


def supported_help() -> str:
    return ", ".join(sorted(FORMATS))


@dataclass
class Malformed:
    line: int
    reason: str
    detail: str
    raw: str


@dataclass
class RawChunk:
    frame: pd.DataFrame  # raw string values, columns as named in the file
    lines: list[int]  # source line (text formats) or 1-based row (Parquet) per frame row
    malformed: list[Malformed] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        return len(self.frame) + len(self.malformed)


def iter_chunks(fs: fsspec.AbstractFileSystem, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    """Yield the records of one lake file in chunks of at most ``chunk_rows``."""
    fmt = file_format(path)
    if fmt is None:
        raise EtlError(f"{path}: unsupported file format",
                       f"use one of {supported_help()}, or remove the file from the batch")
    if fs.size(path) == 0:
        raise EtlError(f"{path}: empty file (0 bytes)",
                       "remove it from the lake or re-upload it; a batch file must hold rows")
    reader = {"csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}[fmt]
    yield from reader(fs, path, chunk_rows)


def count_records(fs: fsspec.AbstractFileSystem, path: str, chunk_rows: int = 100_000) -> int:
    """Records in a file, malformed ones included: the 'read' count the ETL must account for."""
    return sum(c.n_records for c in iter_chunks(fs, path, chunk_rows))


def _open_text(fs: fsspec.AbstractFileSystem, path: str) -> io.TextIOBase:
    raw = fs.open(path, "rb", compression="infer")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _csv_chunks(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    with _open_text(fs, path) as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        try:
            header = next(reader, None)
            while header is not None and not any(h.strip() for h in header):
                header = next(reader, None)  # leading blank lines
            if header is None:
                raise EtlError(f"{path}: no header line", "the first line must name the columns")
            header = [h.strip() for h in header]
            rows: list[list[str]] = []
            lines: list[int] = []
            bad: list[Malformed] = []
            for rec in reader:
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue  # blank line: not a record
                if len(rec) != len(header):
                    bad.append(Malformed(reader.line_num, "malformed_line",
                                         f"expected {len(header)} fields, got {len(rec)}",
                                         ",".join(rec)))
                else:
                    rows.append(rec)
                    lines.append(reader.line_num)
                if len(rows) + len(bad) >= chunk_rows:
                    yield RawChunk(pd.DataFrame(rows, columns=header, dtype=object), lines, bad)
                    rows, lines, bad = [], [], []
            if rows or bad:
                yield RawChunk(pd.DataFrame(rows, columns=header, dtype=object), lines, bad)
        except csv.Error as e:
            raise EtlError(f"{path}:{reader.line_num}: unreadable CSV ({e})",
                           "fix or remove that line (often an unclosed quote)") from e
        except UnicodeDecodeError as e:
            raise EtlError(f"{path}: not UTF-8 text near line {reader.line_num} ({e.reason})",
                           "re-encode the file as UTF-8") from e


def _jsonl_chunks(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    records: list[dict] = []
    lines: list[int] = []
    bad: list[Malformed] = []
    with _open_text(fs, path) as fh:
        try:
            for no, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    bad.append(Malformed(no, "malformed_line", f"invalid JSON ({e.msg})",
                                         text.strip()))
                else:
                    if isinstance(rec, dict):
                        records.append({k: None if v is None else str(v) for k, v in rec.items()})
                        lines.append(no)
                    else:
                        bad.append(Malformed(no, "malformed_line", "not a JSON object",
                                             text.strip()))
                if len(records) + len(bad) >= chunk_rows:
                    yield RawChunk(pd.DataFrame.from_records(records).astype(object), lines, bad)
                    records, lines, bad = [], [], []
        except UnicodeDecodeError as e:
            raise EtlError(f"{path}: not UTF-8 text ({e.reason})",
                           "re-encode the file as UTF-8") from e
    if records or bad:
        yield RawChunk(pd.DataFrame.from_records(records).astype(object), lines, bad)


def _parquet_chunks(fs, path: str, chunk_rows: int) -> Iterator[RawChunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            start = 1
            for batch in pf.iter_batches(batch_size=chunk_rows):
                df = batch.to_pandas()
                raw = df.astype(object).where(df.notna(), None)
                raw = raw.map(lambda v: v if v is None else str(v))
                n = len(raw)
                yield RawChunk(raw, list(range(start, start + n)))
                start += n
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise EtlError(f"{path}: not a readable Parquet file ({e})",
                       "re-export the file or remove it from the lake") from e
