"""The etl stage: extract every batch of the snapshot, apply the schema contract, load a
curated Parquet table.

Rows that break the contract, and duplicates, go to a quarantine table with a reason, the
source file and line, and the raw record: nothing is dropped silently. The report accounts for
every record, per batch: ``read = written + rejected + duplicates``. Files are streamed in
chunks, so memory is bounded by ``etl.chunk_rows`` (plus 8 bytes a row for deduplication).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from tarn.config import Params, stage_view
from tarn.core import schema as sc
from tarn.core.catalog import (
    CURATED,
    ETL_REPORT,
    QUARANTINE,
    STAGE_READS,
    EtlCounts,
    EtlReport,
    load_manifest,
)
from tarn.core.files import private_dir, staged
from tarn.core.ingest import (
    QUARANTINE_SCHEMA,
    Counts,
    dedup_scope,
    load_chunk,
    new_dedup,
    ordered_prefetch,
    transform_file,
    workers,
)
from tarn.core.progress import Progress, silent
from tarn.errors import EtlError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["etl"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths",)



@dataclass
class EtlResult:
    curated: Path
    quarantine: Path
    report: dict



def run(params: Params, root: Path, progress: Progress = silent) -> EtlResult:
    params = stage_view(params, "etl", READS, AMBIENT)
    schema = params.schema
    snap_dir = root / params.paths.snapshot
    manifest = load_manifest(snap_dir)
    out_dir = root / params.paths.curated
    private_dir(out_dir)  # raw personal records: owner-only (the tables are 0600)
    report_path = root / params.paths.reports / ETL_REPORT
    report_path.parent.mkdir(parents=True, exist_ok=True)
    fs = fsspec.filesystem("file")
    table_schema = sc.arrow_schema(schema, {"batch": pa.string()})
    per_batch: dict[str, Counts] = {}
    per_file: dict[str, Counts] = {}
    scope = dedup_scope(params)  # auto: by schema.key when declared, else none
    dedup = new_dedup(params)
    total_rows = sum(e["rows"] for e in manifest["files"])
    progress_seen: dict[str, int] = {}

    with staged() as st:
        curated_tmp = st.path(out_dir / CURATED)
        quarantine_tmp = st.path(out_dir / QUARANTINE)
        with pq.ParquetWriter(curated_tmp, table_schema) as cw, \
                pq.ParquetWriter(quarantine_tmp, QUARANTINE_SCHEMA) as qw:
            current_batch = None
            entries = manifest["files"]
            # files are read and checked in parallel, deduplicated and written in order
            makers = [partial(transform_file, fs, str(snap_dir / e["path"]), e["path"],
                              e["batch"], params) for e in entries]
            for entry, chunks in zip(entries, ordered_prefetch(makers, workers()), strict=True):
                batch, rel = entry["batch"], entry["path"]
                if scope == "batch" and batch != current_batch:
                    dedup = new_dedup(params)
                use_dedup = dedup if scope else None
                current_batch = batch
                counts = Counts()
                for t in chunks:
                    rows, qdf = load_chunk(t, batch, rel, use_dedup, counts)
                    progress("etl", "ETL", counts.read - progress_seen.get(rel, 0), total_rows)
                    progress_seen[rel] = counts.read
                    cw.write_table(rows.append_column(
                        "batch", pa.array([batch] * rows.num_rows, pa.string())))
                    if qdf.num_rows:
                        qw.write_table(qdf)
                if counts.read != entry["rows"]:
                    raise EtlError(f"{rel}: read {counts.read} records but the manifest says "
                                   f"{entry['rows']}", "re-run `tarn snapshot`; the file changed")
                per_file[rel] = counts
                per_batch.setdefault(batch, Counts()).add(counts)
        total = Counts()
        for c in per_batch.values():
            total.add(c)
        report = EtlReport(manifest["hash"], EtlCounts.of(total),
                           {b: EtlCounts.of(c) for b, c in per_batch.items()},
                           {f: EtlCounts.of(c) for f, c in per_file.items()})
        for name, c in [("total", report.total), *report.batches.items()]:
            if not c.balanced():
                raise AssertionError(f"ETL accounting broken for {name}: {c.to_json()}")
        st.json(report_path, report.to_json())
    return EtlResult(out_dir / CURATED, out_dir / QUARANTINE, report.to_json())
