"""The one path from a raw lake file to curated rows: read, apply the contract, deduplicate.

The etl stage writes what this yields; monitoring and retraining read new batches through the
same code, so a row means the same thing everywhere. Rows that break the contract, and
duplicates, come back as quarantine rows with a reason, the file and line, and the raw record.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from tarn.config import Params
from tarn.core import schema as sc
from tarn.core.readers import file_format, iter_chunks

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


class Dedup:
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


def process_file(fs, path: str, rel: str, batch: str, params: Params, dedup: Dedup | None,
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



def read_batches(params: Params, root: Path, names: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Curated rows of lake batches through the ETL contract (rejected rows are counted, not
    used). Raises EtlError on a schema change (missing or renamed column)."""
    from tarn.core.lake import Lake

    lake = Lake.from_config(params.lake, root)
    frames, notes = [], []
    for b in lake.batches(params.lake.include):
        if b.name not in names:
            continue
        for f in b.files:
            counts = Counts()
            for rows, _ in process_file(lake.fs, f.path, f.relpath, b.name, params, Dedup(),
                                        counts):
                frames.append(rows.assign(batch=b.name))
            if counts.rejected:
                notes.append(f"{f.relpath}: {counts.rejected} of {counts.read} rows rejected "
                             f"({dict(counts.rejected_by_reason)})")
    cols = [*params.schema.feature_names, params.schema.target.name, "batch"]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return df, notes
