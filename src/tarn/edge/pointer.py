"""Which client bundle clients get: ``current.json`` in the bundle folder, read and replaced
atomically. Its own module so that commands which only read state (`tarn status`) need
neither scikit-learn nor the ONNX tooling that building a bundle does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from tarn.core.files import write_json
from tarn.errors import TarnError

CURRENT = "current.json"


class Published(Protocol):
    path: Path
    checksum: str


def point_current(out_root: Path, name: str, version: str, bundle: Published) -> None:
    """Make ``bundle`` the one clients get (current.json, replaced atomically)."""
    write_json(Path(out_root) / CURRENT, {"name": name, "version": version,
                                          "path": bundle.path.name, "sha256": bundle.checksum})


def withdraw_current(out_root: Path) -> None:
    """No bundle for clients (the served version has none): better none than a stale one."""
    (Path(out_root) / CURRENT).unlink(missing_ok=True)


def current_version(out_root: Path) -> str | None:
    """The model version clients get (current.json), or None."""
    path = Path(out_root) / CURRENT
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def current_bundle(out_root: Path) -> Path | None:
    """The folder current.json points at; None when nothing was published yet."""
    path = Path(out_root) / CURRENT
    if not path.is_file():
        return None
    try:
        folder = json.loads(path.read_text(encoding="utf-8"))["path"]
    except (ValueError, KeyError, TypeError) as e:
        raise TarnError(f"{path}: unreadable ({e})", "republish the bundle") from None
    bundle = Path(out_root) / folder
    if Path(folder).name != folder or not bundle.is_dir():
        raise TarnError(f"{path}: points at {folder!r}, which is not a bundle folder",
                        "republish the bundle (the server does on its next deployment)")
    return bundle
