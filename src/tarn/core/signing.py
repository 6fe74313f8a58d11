"""Signed gate verdicts: only a version `tarn promote` let through is deployed.

``tarn promote`` records its verdict on the version as an HMAC-SHA256 signature over the
version's model files (one digest of every file of its artifact folder: the skops model, the
``MLmodel`` with its card, the requirements), its card (canonical JSON) and the verdict
(``passed``, or ``forced`` with the reason), keyed by a *deployment key* the registry never
holds (a file, ``serve.deploy_key``, created owner-only on first use). The server and ``tarn
bundle publish`` check it before a model file is deserialized: a version moved to production
by hand (alias or stage set in the MLflow UI or API), or whose files were swapped after it was
signed, has no valid signature and is refused. Anyone with registry write access can write
tags, but cannot compute the HMAC without the key.

Stdlib only (hashlib, hmac, secrets): light enough for any command.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tarn.config import Params
from tarn.errors import TarnError

KEY_BYTES = 32
PASSED, FORCED = "passed", "forced"
SCHEME = "hmac-sha256/v1"


class UnsignedVersion(TarnError):
    """A version without a valid deployment signature: never deployed."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or "promote it with `tarn promote` (the gates run and "
                         "sign it), or put back a signed version")


@dataclass(frozen=True)
class DeployKey:
    """The deployment secret (read at the CLI or server edge and passed down)."""

    secret: bytes = field(repr=False)
    path: Path

    @property
    def key_id(self) -> str:
        """Which key signed (a digest of the secret: says nothing about it)."""
        return hashlib.sha256(b"tarn-key-id:" + self.secret).hexdigest()[:12]


def key_path(root: Path, configured: str) -> Path:
    """Where the key lives: ``serve.deploy_key``, relative to the project root."""
    p = Path(configured).expanduser()
    return p if p.is_absolute() else Path(root) / p


def project_key(params: Params, root: Path, create: bool = True) -> DeployKey:
    """The project's key (``serve.deploy_key``): what the CLI and the server read at their
    edge, and what library callers (tests, retraining) default to."""
    return load_key(key_path(root, params.serve.deploy_key), create)


def load_key(path: Path, create: bool = True) -> DeployKey:
    """The key at ``path``; created (32 random bytes, hex, mode 0600) when absent and
    ``create``. Refused when others may read it: a key anyone on the machine can read signs
    for anyone."""
    path = Path(path)
    if not path.exists() and create:
        _create(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise TarnError(f"no deployment key at {path}",
                        "copy the key `tarn promote` created (serve.deploy_key) to this "
                        "machine, owner-only (chmod 600)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TarnError(f"deployment key {path} unreadable ({e})",
                        "fix its permissions, or delete it to start a new key (versions "
                        "signed with the old one must then be promoted again)") from None
    if st.st_mode & 0o077:
        raise TarnError(f"deployment key {path} is readable by others "
                        f"(mode {st.st_mode & 0o777:o})", f"chmod 600 {path}")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < KEY_BYTES:
        raise TarnError(f"deployment key {path} is not {KEY_BYTES} or more hex-encoded bytes",
                        "restore the key file, or delete it to start a new key")
    return DeployKey(secret, path)


def _create(path: Path) -> None:
    """Write a new key atomically: a private temp file linked into place, so two processes
    creating it at once end up with one key (the loser reads the winner's)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def artifact_digest(folder: Path) -> str:
    """sha256 over every file of a downloaded model folder (relative path and content
    digest, sorted): any byte changed, added or removed changes it."""
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        fh = hashlib.sha256()
        with open(f, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                fh.update(chunk)
        h.update(f"{f.relative_to(folder).as_posix()}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def canonical(doc: Any) -> str:
    """The one JSON text of a document (sorted keys, no spaces): what is signed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str,
                      ensure_ascii=False)


@dataclass(frozen=True)
class Signature:
    """A signed verdict as a version carries it (inside its gate record)."""

    verdict: str  # passed | forced
    reason: str
    digest: str  # artifact_digest of the model files
    key_id: str
    signed_by: str
    signed_at: str
    hmac: str = ""
    scheme: str = SCHEME

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Any) -> Signature | None:
        if not isinstance(doc, dict):
            return None
        try:
            return cls(**{k: str(doc[k]) for k in ("verdict", "reason", "digest", "key_id",
                                                   "signed_by", "signed_at", "hmac", "scheme")})
        except (KeyError, TypeError):
            return None


def _mac(key: DeployKey, name: str, version: str, card: dict, sig: Signature) -> str:
    payload = canonical({"model": name, "version": str(version), "card": card,
                         **{k: v for k, v in sig.as_dict().items() if k != "hmac"}})
    return hmac.new(key.secret, payload.encode(), hashlib.sha256).hexdigest()


def sign(key: DeployKey, *, name: str, version: str, digest: str, card: dict, verdict: str,
         reason: str, signed_by: str, signed_at: str) -> Signature:
    """The signature of ``verdict`` (and ``reason``) on these model files and card."""
    if verdict not in (PASSED, FORCED):
        raise ValueError(f"verdict {verdict!r}: sign {PASSED!r} or {FORCED!r}")
    unsigned = Signature(verdict, reason, digest, key.key_id, signed_by, signed_at)
    return Signature(**{**unsigned.as_dict(), "hmac": _mac(key, name, version, card, unsigned)})


def check(key: DeployKey, doc: Any, *, name: str, version: str, digest: str,
          card: dict) -> str:
    """Why the version may not be deployed ('' when its signature is valid)."""
    sig = Signature.from_dict(doc)
    if sig is None:
        return ("no deployment signature: it did not reach production through `tarn "
                "promote` (alias or stage set by hand?)")
    if sig.scheme != SCHEME:
        return f"unknown signature scheme {sig.scheme!r}"
    if sig.key_id != key.key_id:
        return (f"signed with another deployment key (key {sig.key_id}, this one "
                f"{key.key_id}: serve.deploy_key)")
    if sig.digest != digest:
        return "its model files changed since they were signed"
    if not hmac.compare_digest(sig.hmac, _mac(key, name, version, card, sig)):
        return "the signature does not match (the verdict, card or version was altered)"
    return ""
