"""The backend server as a deployment target, seen from the commands: it holds what its
``/version`` says, it follows a promotion by itself (it polls the production alias) and at
once when nudged (``POST /admin/reconcile`` with the admin secret). The server side of it
(load, check the signature, swap, record) is :class:`tarn.serve.deploy.Reconciler`.

Light: ``tarn status`` asks it what it holds (urllib only)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from tarn.core.targets import Generated, Holding, Site


def ask_backend(url: str, timeout_s: float = 5) -> Holding:
    """What the server at ``url`` serves (its ``/version``), or why it could not be asked."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/version", timeout=timeout_s) as r:
            v = json.loads(r.read())
        return Holding("backend", url, v.get("version"), v.get("source") or "",
                       error=v.get("last_error") or "")
    except OSError as e:
        return Holding("backend", url, None, reachable=False, problem=str(e))


@dataclass(frozen=True)
class BackendTarget:
    """The REST backend (``tarn serve``) of this project."""

    site: Site
    name: str = "backend"

    @property
    def url(self) -> str:
        from tarn.core.address import server_url

        return self.site.server_url or server_url(self.site.params.serve, self.site.root)[0]

    def holds(self) -> Holding:
        return ask_backend(self.url)

    def stale(self, production: str, held: Holding) -> str:
        if not held.reachable or held.version == production:
            return ""  # no server running: nothing deployed there to be stale
        return (f"backend {held.where} serves version {held.version}, production is "
                f"{production}: it follows within serve.poll_interval_s; check its last error "
                f"above, or POST {held.where}/admin/reconcile")

    def publish(self, version: str, step: Callable[[str], None]) -> str:
        step(f"asking {self.url} to deploy now")
        return self.follow(version)

    def follow(self, version: str) -> str:
        # lazily: promote's module (registry, gates) is not needed to say what is deployed
        from tarn.core.tracking import redact
        from tarn.lifecycle.promote import notify_server

        if not self.site.admin_secret:
            return (f"server at {redact(self.url)} not notified (set TARN_ADMIN_SECRET, as for "
                    f"`tarn serve`, to nudge it); it polls every "
                    f"{self.site.params.serve.poll_interval_s:g} s")
        return notify_server(self.url, self.site.admin_secret)

    def generated(self) -> list[Generated]:
        return [Generated(self.site.root / self.site.params.serve.prediction_log,
                          "prediction log")]
