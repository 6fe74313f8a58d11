"""The etl stage: extract every batch of the snapshot, apply the schema contract, load a
curated Parquet table.

Rows that break the contract, and duplicates, go to a quarantine table with a reason, the
source file and line, and the raw record: nothing is dropped silently. The report accounts for
every record, per batch: ``read = written + rejected + duplicates``. Files are streamed in
chunks, so memory is bounded by ``etl.chunk_rows`` (plus 8 bytes a row for deduplication).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tarn import schema as sc
from tarn.config import Params
from tarn.errors import EtlError
from tarn.io import staged
from tarn.readers import file_format, iter_chunks
from tarn.snapshot import load_manifest
from tarn.ui import Progress, silent

CURATED = "table.parquet"
QUARANTINE = "quarantine.parquet"
REPORT = "etl.json"

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

    def as_dict(self) -> dict:
        return {"read": self.read, "written": self.written, "rejected": self.rejected,
                "duplicates": self.duplicates,
                "rejected_by_reason": dict(sorted(self.rejected_by_reason.items()))}


@dataclass
class EtlResult:
    curated: Path
    quarantine: Path
    report: dict


class _Dedup:
    """Remembers row hashes (8 bytes a row) and where each row was first seen."""

    def __init__(self) -> None:
        self.seen: dict[int, str] = {}

    def split(self, rows: pd.DataFrame, where: pd.Series) -> tuple[pd.Series, pd.Series]:
        """Mask of duplicate rows, and for each the place of its first occurrence."""
        hashes = pd.util.hash_pandas_object(rows, index=False).to_numpy()
        dup = []
        first = []
        for h, w in zip(hashes.tolist(), where.tolist(), strict=True):
            prev = self.seen.get(h)
            if prev is None:
                self.seen[h] = w
                dup.append(False)
                first.append(None)
            else:
                dup.append(True)
                first.append(prev)
        return pd.Series(dup, index=rows.index), pd.Series(first, index=rows.index, dtype=object)


def process_file(fs, path: str, rel: str, batch: str, params: Params, dedup: _Dedup | None,
                 counts: Counts):
    """Extract and transform one file chunk by chunk: yields (curated rows, quarantine rows)
    and updates ``counts``. The one implementation of the contract's application, used by
    the etl stage and by retraining on new batches."""
    schema = params.schema
    strict = file_format(rel) != "jsonl"  # JSON Lines may omit null keys
    mapping: dict[str, str] = {}
    for chunk in iter_chunks(fs, path, params.etl.chunk_rows):
        counts.read += chunk.n_records
        q: list[pd.DataFrame] = []
        if chunk.malformed:
            counts.rejected_by_reason[sc.MALFORMED] += len(chunk.malformed)
            q.append(pd.DataFrame([{"batch": batch, "file": rel, "line": m.line,
                                    "reason": m.reason, "detail": m.detail, "raw": m.raw}
                                   for m in chunk.malformed]))
        if len(chunk.frame.columns):  # the header is checked even if no row parsed
            mapping = sc.resolve_columns(list(chunk.frame.columns), schema, rel, strict)
        rows = pd.DataFrame(columns=[*schema.feature_names, schema.target.name])
        if not chunk.frame.empty:
            res = sc.conform(chunk.frame[list(mapping)], schema, mapping)
            lines = pd.Series(chunk.lines, index=chunk.frame.index)
            counts.rejected_by_reason.update(res.rejects["reason"].tolist())
            found = [res.rejects.assign(line=lines[res.rejects.index])]
            rows = res.rows
            if dedup is not None and len(rows):
                where = batch + ":" + rel + ":" + lines[rows.index].astype(str)
                dup, first = dedup.split(rows, where)
                if dup.any():
                    counts.duplicates += int(dup.sum())
                    found.append(pd.DataFrame({
                        "reason": sc.DUPLICATE, "detail": "duplicate of " + first[dup],
                        "line": lines[rows.index[dup.to_numpy()]]}))
                    rows = rows[~dup]
            found_df = pd.concat(found)
            if len(found_df):
                q.append(found_df.assign(batch=batch, file=rel,
                                         raw=sc.raw_json(chunk.frame.loc[found_df.index])))
        counts.written += len(rows)
        qdf = pd.concat(q, ignore_index=True) if q else pd.DataFrame(
            columns=QUARANTINE_SCHEMA.names)
        yield rows, qdf


def run(params: Params, root: Path, progress: Progress = silent) -> EtlResult:
    schema = params.schema
    snap_dir = root / params.paths.snapshot
    manifest = load_manifest(snap_dir)
    out_dir = root / params.paths.curated
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = root / params.paths.reports / REPORT
    report_path.parent.mkdir(parents=True, exist_ok=True)
    fs = fsspec.filesystem("file")
    table_schema = sc.arrow_schema(schema, {"batch": pa.string()})
    per_batch: dict[str, Counts] = {}
    per_file: dict[str, Counts] = {}
    dedup = _Dedup()
    total_rows = sum(e["rows"] for e in manifest["files"])
    progress_seen: dict[str, int] = {}

    with staged() as st:
        curated_tmp = st.path(out_dir / CURATED)
        quarantine_tmp = st.path(out_dir / QUARANTINE)
        with pq.ParquetWriter(curated_tmp, table_schema) as cw, \
                pq.ParquetWriter(quarantine_tmp, QUARANTINE_SCHEMA) as qw:
            current_batch = None
            for entry in manifest["files"]:
                batch, rel = entry["batch"], entry["path"]
                if params.etl.dedup == "batch" and batch != current_batch:
                    dedup = _Dedup()
                use_dedup = dedup if params.etl.dedup != "off" else None
                current_batch = batch
                counts = Counts()
                for rows, qdf in process_file(fs, str(snap_dir / rel), rel, batch, params,
                                              use_dedup, counts):
                    progress("etl", "ETL", counts.read - progress_seen.get(rel, 0), total_rows)
                    progress_seen[rel] = counts.read
                    cw.write_table(pa.Table.from_pandas(rows.assign(batch=batch),
                                                        schema=table_schema, preserve_index=False))
                    if len(qdf):
                        qw.write_table(pa.Table.from_pandas(
                            qdf[QUARANTINE_SCHEMA.names], schema=QUARANTINE_SCHEMA,
                            preserve_index=False))
                if counts.read != entry["rows"]:
                    raise EtlError(f"{rel}: read {counts.read} records but the manifest says "
                                   f"{entry['rows']}", "re-run `tarn snapshot`; the file changed")
                per_file[rel] = counts
                per_batch.setdefault(batch, Counts()).add(counts)
        total = Counts()
        for c in per_batch.values():
            total.add(c)
        report = {
            "snapshot": manifest["hash"],
            "total": total.as_dict(),
            "batches": {b: c.as_dict() for b, c in per_batch.items()},
            "files": {f: c.as_dict() for f, c in per_file.items()},
        }
        for name, c in [("total", total), *per_batch.items()]:
            if c.read != c.written + c.rejected + c.duplicates:  # the accounting invariant
                raise AssertionError(f"ETL accounting broken for {name}: {c.as_dict()}")
        st.json(report_path, report)
    return EtlResult(out_dir / CURATED, out_dir / QUARANTINE, report)
