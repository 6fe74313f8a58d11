"""The snapshot stage: freeze the slice of the lake a run uses.

Copies every file of the selected batches into ``paths.snapshot/files`` and writes a manifest
(batch, path, size, sha256, rows) beside them. The folder is a DVC output, so any later run is
traced to, and can be rebuilt from, exact bytes. The manifest holds no timestamps: an unchanged
lake gives a byte-identical snapshot.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import fsspec

from tarn.config import Params, stage_view
from tarn.core.catalog import MANIFEST, SNAPSHOT_FILES, STAGE_READS
from tarn.core.files import atomic_dir
from tarn.core.lake import Lake
from tarn.core.progress import console
from tarn.core.readers import count_records
from tarn.errors import EtlError, LakeError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["snapshot"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "lake.storage_options")



@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    manifest_hash: str
    n_files: int
    n_rows: int
    retired: tuple[str, ...] = ()  # retired batches left out


def _copy_hashing(fs, src: str, dst: Path) -> str:
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with fs.open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(1 << 20):
            h.update(block)
            fout.write(block)
    return h.hexdigest()


def manifest_hash(entries: list[dict]) -> str:
    """Content hash of a snapshot: changes iff any frozen file's bytes or place change."""
    canon = json.dumps([[e["batch"], e["path"], e["sha256"]] for e in entries])
    return hashlib.sha256(canon.encode()).hexdigest()


def run(params: Params, root: Path) -> SnapshotResult:
    params = stage_view(params, "snapshot", READS, AMBIENT)
    lake = Lake.from_config(params.lake, root)
    batches = lake.batches(params.lake.include)  # retired batches are left out
    retired = {name: rec for name, rec in lake.retired().items()
               if not params.lake.include or any(fnmatch.fnmatch(name, p)
                                                 for p in params.lake.include)}
    for name, rec in retired.items():
        console.print(f"snapshot: skipped retired batch {name} ({rec.get('reason', '')})")
    if not batches:
        raise LakeError(f"no batches in lake {lake.url} match {params.lake.include}",
                        "run `tarn lake seed`, add batches, or fix lake.include")
    out = root / params.paths.snapshot
    local = fsspec.filesystem("file")
    entries: list[dict] = []
    with atomic_dir(out) as tmp:
        for b in batches:
            for f in b.files:
                dst = tmp / SNAPSHOT_FILES / f.relpath
                digest = _copy_hashing(lake.fs, f.path, dst)
                try:
                    rows = count_records(local, str(dst))
                except EtlError as e:  # name the lake file, not our temporary copy
                    raise EtlError(e.message.replace(str(dst), lake.display(f.path)),
                                   e.hint) from e
                entries.append({
                    "batch": b.name,
                    "path": f"{SNAPSHOT_FILES}/{f.relpath}",
                    "size": dst.stat().st_size,
                    "sha256": digest,
                    "rows": rows,
                })
        manifest = {
            "lake": params.lake.url,
            "include": params.lake.include,
            "hash": manifest_hash(entries),
            "batches": [
                {"name": b.name,
                 "files": sum(1 for e in entries if e["batch"] == b.name),
                 "rows": sum(e["rows"] for e in entries if e["batch"] == b.name),
                 "bytes": sum(e["size"] for e in entries if e["batch"] == b.name)}
                for b in batches
            ],
            "files": entries,
            "retired": [{"name": name, "reason": rec.get("reason", ""),
                         "retired_at": rec.get("retired_at", "")}
                        for name, rec in retired.items()],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return SnapshotResult(out, manifest["hash"], len(entries), sum(e["rows"] for e in entries),
                          tuple(retired))
