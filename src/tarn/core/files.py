"""Atomic file output: a failed step never leaves a half-written file behind.

Writers create a temporary sibling, then ``os.replace`` it over the target, which is atomic on
POSIX. :func:`staged` groups several outputs so that either all of them appear or none does.

Owner-only: every file written here is 0600 and every folder it creates 0700, whatever the
umask (the curated and quarantine tables and the snapshot hold raw personal records; the
prediction log was already owner-only). The mode is set on the temporary file before the rename,
so the target never exists with wider permissions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only a type here: the light commands (status, report) never load pandas
    import pandas as pd

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as an owner-only folder: created 0700 (its missing parents too), and made
    0700 if it exists."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        q = q.parent
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for d in [p, *missing]:
        os.chmod(d, DIR_MODE)
    return p


def _tmp_sibling(path: Path) -> Path:
    if not path.parent.is_dir():
        private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)  # mkstemp creates it 0600
    return Path(tmp)


def _replace(tmp: Path, target: Path) -> None:
    """Rename into place, owner-only (a writer may have replaced the temporary file)."""
    os.chmod(tmp, FILE_MODE if not tmp.is_dir() else DIR_MODE)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` only if the block succeeds."""
    target = Path(path)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        _replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole if the block succeeds."""
    target = Path(path)
    if not target.parent.is_dir():
        private_dir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        for folder, dirs, files in os.walk(tmp):  # whatever the block wrote: owner-only
            for d in dirs:
                os.chmod(os.path.join(folder, d), DIR_MODE)
            for f in files:
                os.chmod(os.path.join(folder, f), FILE_MODE)
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        _replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Staged:
    """Several outputs committed together: all appear, or (on error) none is touched."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, target: str | os.PathLike[str]) -> Path:
        """A temporary path to write now; it becomes ``target`` on commit."""
        tmp = _tmp_sibling(Path(target))
        self._pending.append((tmp, Path(target)))
        return tmp

    def parquet(self, target: str | os.PathLike[str], df: pd.DataFrame) -> None:
        df.to_parquet(self.path(target), index=False)

    def json(self, target: str | os.PathLike[str], obj: Any) -> None:
        self.text(target, json.dumps(obj, indent=2, default=_json_default) + "\n")

    def text(self, target: str | os.PathLike[str], text: str) -> None:
        self.path(target).write_text(text, encoding="utf-8")

    def commit(self) -> None:
        for tmp, target in self._pending:
            _replace(tmp, target)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


@contextlib.contextmanager
def staged() -> Iterator[Staged]:
    """Write several files; they replace their targets only when the block succeeds."""
    st = Staged()
    try:
        yield st
        st.commit()
    finally:
        st.discard()
