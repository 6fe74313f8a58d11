"""The data lake: raw batches under one folder each, on a local path or any fsspec URL.

Layout: ``<lake>/<batch>/<file>``. ``tarn lake add`` prefixes a sequence number, and batches
are ordered by it (numerically: ``10000-x`` comes after ``9999-y``), then by name. A name's
leading number is a sequence number only if zero-padded or not past the lake's next one, so a
batch named by a year (``2016``, ``2016-test``) gets a sequence number like any other. A batch is
immutable once written: ``add`` checks every file's header against the contract, writes into a
hidden temporary folder and renames it, so a crash leaves no partial batch. A bad batch is not
deleted but retired: ``<lake>/_retired/<batch>.json`` records why, and readers skip it.
Names starting with ``.`` or ``_`` are ignored (hidden files, ``_SUCCESS`` markers).
"""

from __future__ import annotations

import fnmatch
import getpass
import json
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from tarn.config import LakeConfig
from tarn.core.readers import file_format, supported_help
from tarn.core.windows import SEQ as _SEQ
from tarn.core.windows import batch_order
from tarn.errors import LakeError

RETIRED = "_retired"  # <lake>/_retired/<batch>.json: why a batch is no longer read


@dataclass(frozen=True)
class LakeFile:
    batch: str
    path: str  # full path in the lake's filesystem
    relpath: str  # "<batch>/<name>"
    size: int


@dataclass(frozen=True)
class Batch:
    name: str
    files: tuple[LakeFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


_BUCKET_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else "file"


def _with_timeouts(url: str, options: dict) -> dict:
    """Bounded waits for S3: botocore's defaults (60 s connect, retries with backoff) make an
    unreachable endpoint look like a hang."""
    if _protocol(url) not in ("s3", "s3a"):
        return options
    cfg = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2},
           **options.get("config_kwargs", {})}
    return {**options, "config_kwargs": cfg}


def _visible(name: str) -> bool:
    base = posixpath.basename(name.rstrip("/"))
    return not base.startswith((".", "_"))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers)
        return "unknown"


class Lake:
    """A lake location. ``url`` is a folder (relative to ``root``) or an fsspec URL."""

    def __init__(self, url: str, root: Path | None = None,
                 storage_options: dict | None = None) -> None:
        if "://" not in url and root is not None and not Path(url).is_absolute():
            url = str((root / url).resolve())
        self.url = url
        self.fs: fsspec.AbstractFileSystem
        self.fs, self.path = url_to_fs(url, **_with_timeouts(url, storage_options or {}))
        self.path = self.path.rstrip("/")
        self._checked = False

    def display(self, path: str) -> str:
        """A path as the user knows it: plain for local files, a URL otherwise."""
        return path if "://" not in self.url else self.fs.unstrip_protocol(path)

    @classmethod
    def from_config(cls, cfg: LakeConfig, root: Path) -> Lake:
        return cls(cfg.url, root, cfg.storage_options)

    def check_store(self) -> None:
        """For object stores: the bucket exists and the credentials open it, or a LakeError
        that says which. Never creates a bucket (s3fs would, on makedirs)."""
        if self._checked or _protocol(self.url) not in _BUCKET_STORES:
            return
        bucket = self.path.split("/", 1)[0]
        where = f"{_protocol(self.url)}://{bucket}"
        try:
            self.fs.ls(bucket, refresh=True)
        except FileNotFoundError as e:
            raise LakeError(f"bucket {where} does not exist (lake.url {self.url})",
                            f"create it (e.g. `aws s3 mb {where}`) or fix lake.url") from e
        except PermissionError as e:
            raise LakeError(f"access to {where} denied: {e}",
                            "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                            "or AWS_PROFILE) and the bucket policy") from e
        except OSError as e:
            raise LakeError(f"cannot reach the object store for {where}: {e}",
                            "check AWS_ENDPOINT_URL and the network") from e
        except Exception as e:  # botocore raises its own types for endpoint trouble
            raise LakeError(f"cannot use {where}: {type(e).__name__}: {e}",
                            "check AWS_ENDPOINT_URL, the credentials and lake.url") from e
        self._checked = True

    # ----------------------------------------------------------------- reading
    def exists(self) -> bool:
        self.check_store()
        return self.fs.isdir(self.path)

    def require(self) -> None:
        if not self.exists():
            raise LakeError(f"lake not found at {self.url}",
                            "run `tarn lake seed` to create it, or set lake.url in params.yaml")

    def batches(self, include: list[str] | None = None,
                retired: bool = False) -> list[Batch]:
        """Batches in order, each with its files; unsupported files are an error. Retired
        batches are left out unless ``retired``."""
        self.require()
        out: list[Batch] = []
        gone = set() if retired else set(self.retired())
        entries = self.fs.ls(self.path, detail=True)
        for entry in sorted(entries, key=lambda e: batch_order(
                posixpath.basename(e["name"].rstrip("/")))):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] != "directory" or not _visible(name):
                if entry["type"] != "directory" and _visible(name):
                    raise LakeError(f"{entry['name']}: file outside any batch folder",
                                    "move it into <lake>/<batch>/ or use `tarn lake add`")
                continue
            if name in gone:
                continue
            if include and not any(fnmatch.fnmatch(name, pat) for pat in include):
                continue
            files = []
            for f in sorted(self.fs.find(entry["name"], detail=True).values(),
                            key=lambda f: f["name"]):
                rel = posixpath.relpath(f["name"], self.path)
                if not all(_visible(part) for part in rel.split("/")):
                    continue
                if file_format(f["name"]) is None:
                    raise LakeError(f"{f['name']}: unsupported file format in batch {name!r} "
                                    f"(supported: {supported_help()})",
                                    "convert it to one of those formats, or retire the batch "
                                    f"(`tarn lake retire {name} --reason ...`)")
                files.append(LakeFile(name, f["name"], rel, int(f["size"])))
            out.append(Batch(name, tuple(files)))
        return out

    def retired(self) -> dict[str, dict]:
        """Retired batches: name -> the record (reason, when, by whom), in batch order."""
        folder = posixpath.join(self.path, RETIRED)
        if not self.fs.isdir(folder):
            return {}
        out = {}
        for f in self.fs.ls(folder, detail=False):
            base = posixpath.basename(f)
            if base.endswith(".json") and _visible(base):
                with self.fs.open(f, "rb") as fh:
                    rec = json.loads(fh.read().decode("utf-8"))
                out[base.removesuffix(".json")] = rec
        return dict(sorted(out.items(), key=lambda kv: batch_order(kv[0])))

    def retire(self, batch: str, reason: str) -> dict:
        """Take a batch out of every later read, keeping its files (the lake stays
        append-only): writes ``_retired/<batch>.json`` with the reason."""
        if not reason.strip():
            raise LakeError("a retirement needs a reason", "pass --reason TEXT")
        self.require()
        done = self.retired()
        if batch in done:
            raise LakeError(f"batch {batch!r} is already retired ({done[batch]['reason']})",
                            "nothing to do")
        if batch not in {b.name for b in self._listed()}:
            raise LakeError(f"no batch {batch!r} in {self.url}",
                            "see `tarn lake list` for the batch names")
        record = {"batch": batch, "reason": reason.strip(),
                  "retired_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                  "by": _user()}
        folder = posixpath.join(self.path, RETIRED)
        self.fs.makedirs(folder, exist_ok=True)
        self._write_atomic(posixpath.join(folder, f"{batch}.json"),
                           (json.dumps(record, indent=2) + "\n").encode("utf-8"))
        return record

    def _listed(self) -> list[Batch]:
        """Every batch folder, retired ones too, without opening files (names only)."""
        out = []
        for entry in self.fs.ls(self.path, detail=True):
            name = posixpath.basename(entry["name"].rstrip("/"))
            if entry["type"] == "directory" and _visible(name):
                out.append(Batch(name, ()))
        return sorted(out, key=lambda b: batch_order(b.name))

    # ----------------------------------------------------------------- writing
    def next_batch_name(self, name: str) -> str:
        """Prefix ``name`` with the next sequence number unless it already starts with one:
        a zero-padded number (``0003-march``), or one not past the lake's next. Any other
        leading number is part of the name (``2016-test`` -> ``0003-2016-test``, ``2017`` ->
        ``0003-2017``): taken as a sequence number, a year would make every later batch
        ``2017-...``, ``2018-...``."""
        seqs = [int(m.group(1)) for b in (self._listed() if self.exists() else [])
                if (m := _SEQ.match(b.name))]
        following = max(seqs, default=0) + 1
        m = _SEQ.match(name)
        if m and (m.group(1).startswith("0") or int(m.group(1)) <= following):
            return name
        return f"{following:04d}-{name}"

    def _new_batch_dir(self, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise LakeError(f"invalid batch name {name!r}",
                            "use letters, digits, '.', '_' and '-' only")
        self.check_store()
        target = posixpath.join(self.path, name)
        if self.fs.exists(target):
            raise LakeError(f"batch {name!r} already exists in {self.url}",
                            "batches are immutable: choose a new --batch name")
        return target

    def _write_atomic(self, target: str, data: bytes) -> None:
        tmp = posixpath.join(posixpath.dirname(target), f"_{posixpath.basename(target)}.tmp")
        with self.fs.open(tmp, "wb") as fh:
            fh.write(data)
        self.fs.mv(tmp, target)

    def inventory(self) -> list[tuple[str, int, int, int]]:
        """(batch, files, records, bytes) per batch, in order (``tarn lake list``)."""
        from tarn.core.readers import count_records

        return [(b.name, len(b.files), sum(count_records(self.fs, f.path) for f in b.files),
                 b.bytes) for b in self.batches()]

    def add(self, files: list[Path], batch: str,
            check_file: Callable[[Path], None] | None = None) -> str:
        """Copy local ``files`` into a new batch; returns the batch name used. Each file must be
        in a supported format, hold bytes, and pass ``check_file`` (the CLI passes
        :func:`tarn.core.ingest.check_header`: the header maps onto the contract). The batch
        appears whole or not at all (temporary folder, then a rename)."""
        names: dict[str, Path] = {}
        for f in files:
            if not f.is_file():
                raise LakeError(f"{f}: no such file", "check the path")
            if file_format(f.name) is None:
                raise LakeError(f"{f}: unsupported file format (supported: {supported_help()})",
                                "convert it to one of those formats")
            if f.stat().st_size == 0:
                raise LakeError(f"{f}: empty file (0 bytes)", "a batch file must hold rows")
            if f.name in names:
                raise LakeError(f"two files named {f.name!r} in one batch ({names[f.name]} and "
                                f"{f})", "rename one, or add them as two batches")
            names[f.name] = f
            if check_file is not None:
                check_file(f)
        self._refuse_known_bytes(files)
        self.fs.makedirs(self.path, exist_ok=True)
        name = self.next_batch_name(batch)
        target = self._new_batch_dir(name)
        tmp = posixpath.join(self.path, f"_tmp-{name}-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.makedirs(tmp, exist_ok=True)
            for f in files:
                with open(f, "rb") as src, self.fs.open(posixpath.join(tmp, f.name), "wb") as fh:
                    while block := src.read(1 << 20):
                        fh.write(block)
            if self.fs.exists(target):
                raise LakeError(f"batch {name!r} already exists in {self.url}",
                                "batches are immutable: choose a new --batch name")
            self.fs.mv(tmp, target, recursive=True)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm(tmp, recursive=True)
        return name

    def _refuse_known_bytes(self, files: list[Path]) -> None:
        """The common ingestion error is the same file added twice: refuse a file whose bytes
        (sha256) a lake file already holds. Only lake files of the same size are hashed."""
        import hashlib

        def digest(open_file) -> str:
            h = hashlib.sha256()
            while block := open_file.read(1 << 20):
                h.update(block)
            return h.hexdigest()

        sizes = {f.stat().st_size: f for f in files}
        if not self.exists():
            return
        for b in self.batches():
            for lf in b.files:
                f = sizes.get(lf.size)
                if f is None:
                    continue
                with open(f, "rb") as a, self.fs.open(lf.path, "rb") as b_:
                    if digest(a) == digest(b_):
                        raise LakeError(f"{f}: the lake already holds these exact bytes "
                                        f"({lf.relpath})", "adding a file twice would count "
                                        "its rows twice; add only new data")

    def write_batch(self, name: str, filename: str, data: bytes) -> None:
        target = self._new_batch_dir(name)
        self.fs.makedirs(target, exist_ok=True)
        self._write_atomic(posixpath.join(target, filename), data)

    def seed(self, batches: Iterable[tuple[str, str, bytes]],
             if_empty: bool = False) -> list[str] | None:
        """Write (name, file name, bytes) batches into an empty lake (``tarn lake seed``);
        ``None`` if ``if_empty`` and it has batches already."""
        if self.exists() and self.batches():
            if if_empty:
                return None
            raise LakeError(f"lake {self.url} is not empty",
                            "seed only an empty lake (use `tarn lake add` for new batches)")
        self.fs.makedirs(self.path, exist_ok=True)
        names = []
        for name, filename, data in batches:
            self.write_batch(name, filename, data)
            names.append(name)
        return names
