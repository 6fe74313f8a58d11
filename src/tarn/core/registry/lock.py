"""The promotion lock: two levels, so two ``tarn promote`` cannot interleave.

A local file lock is the fast path on one machine; the lock kept in the registry itself (a
tag on the registered model with owner and expiry, written, then read back after a settle
delay: the last writer owns it) serializes promoters on different machines."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator

from tarn.core.registry.common import Connection, RegistryError
from tarn.core.tags import PROMOTION_LOCK

LOCK_TTL_S = 300.0  # a promoter that died frees the lock after this long
LOCK_WAIT_S = 120.0  # how long a promotion waits for another one to finish
LOCK_SETTLE_S = 0.5  # written, then read back after this long: the last writer owns it


class PromotionLock(Connection):
    """``_lock()`` holds both levels; ``_still_mine`` re-checks before the alias moves."""

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        path = (self.root / self.cfg.store_dir).resolve() / "promote.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _lock_holder(self) -> dict | None:
        raw = self.client.get_registered_model(self.name).tags.get(PROMOTION_LOCK)
        try:
            held = json.loads(raw) if raw else None
        except ValueError:
            return None
        return held if isinstance(held, dict) and held.get("expires", 0) > time.time() else None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[str]:
        """Hold the promotion lock (file lock here, registry lock everywhere); yields the
        owner id."""
        owner = f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        with self._file_lock():
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                held = self._lock_holder()
                if held is None:
                    self.client.set_registered_model_tag(self.name, PROMOTION_LOCK, json.dumps(
                        {"owner": owner, "expires": time.time() + LOCK_TTL_S}))
                    time.sleep(LOCK_SETTLE_S)
                    held = self._lock_holder()
                    if held is not None and held.get("owner") == owner:
                        break
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another promotion holds the lock ({(held or {}).get('owner')})",
                        f"wait for it; if its process died the lock expires in "
                        f"{LOCK_TTL_S:.0f} s (tag {PROMOTION_LOCK} on {self.name})")
                time.sleep(0.2 + random.random() * 0.3)
            try:
                yield owner
            finally:
                with contextlib.suppress(Exception):
                    if (self._lock_holder() or {}).get("owner") == owner:
                        self.client.delete_registered_model_tag(self.name, PROMOTION_LOCK)

    def _still_mine(self, owner: str) -> None:
        if (self._lock_holder() or {}).get("owner") != owner:
            raise RegistryError("the promotion lock expired or was taken while gating",
                                "retry the promotion")
