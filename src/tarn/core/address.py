"""Where the server listens, and how every other command finds it.

One setting says where ``tarn serve`` listens: ``serve.host`` and ``serve.port``. Every command
that talks to the server (``promote``, ``rollback`` and ``retrain`` nudge it, ``status`` asks
it what it serves) derives the address from it, in this order:

1. ``serve.notify_url``, when set: an explicit address for a server elsewhere (another host,
   behind a proxy); "" by default.
2. the address a running ``tarn serve`` of this project recorded in ``.tarn/server.json``
   (``tarn serve --port N`` overrides the port for one run: the record says where it really
   listens). The record names its process and host; a record whose process is gone, or that
   another host wrote, is ignored.
3. ``http://<serve.host>:<serve.port>`` (a wildcard bind address such as 0.0.0.0 is reached
   on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from tarn.config import ServeConfig

STATE = Path(".tarn") / "server.json"  # under the project root
WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


def local_url(host: str, port: int) -> str:
    """Pure: the URL a process on this machine uses to reach a server bound to
    ``host``:``port`` (a wildcard bind is reached on loopback; IPv6 in brackets)."""
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def record(root: Path, host: str, port: int, pid: int | None = None) -> Path:
    """Write where this project's server listens (called by ``tarn serve`` as it starts)."""
    from tarn.core.files import write_text

    path = root / STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({
        "url": local_url(host, port), "host": host, "port": port,
        "pid": pid or os.getpid(), "hostname": socket.gethostname(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds")}, indent=2))
    return path


def clear(root: Path, pid: int | None = None) -> None:
    """Remove the record if ``pid`` (this process by default) wrote it (another server of the
    project may have started since and recorded itself)."""
    found = recorded(root, check_alive=False)
    if found is not None and found.get("pid") == (pid or os.getpid()):
        (root / STATE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def recorded(root: Path, check_alive: bool = True) -> dict | None:
    """The record of a running ``tarn serve`` of this project, or None (none written, garbled,
    written on another host, or its process is gone)."""
    try:
        rec = json.loads((root / STATE).read_text(encoding="utf-8"))
        pid = int(rec["pid"])
        str(rec["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not check_alive:
        return rec
    if rec.get("hostname") != socket.gethostname() or not _alive(pid):
        return None
    return rec


def server_url(cfg: ServeConfig, root: Path) -> tuple[str, str]:
    """(the server's URL, where it came from): ``serve.notify_url``, the running server's
    record, or ``serve.host``/``serve.port`` (see the module docstring)."""
    if cfg.notify_url:
        return cfg.notify_url.rstrip("/"), "serve.notify_url"
    rec = recorded(root)
    if rec is not None:
        return rec["url"], f"tarn serve (pid {rec['pid']}, {STATE})"
    return local_url(cfg.host, cfg.port), "serve.host/serve.port"
