"""The deployment seam: what a deployment target is (the backend server, the client bundle,
any other place a production version goes).

A target publishes a version, says which version it holds and what is stale, follows a
promotion, and lists the state it generates (for ``tarn reset``). ``tarn status``, ``tarn
reset``, promotion and the deployment record loop over the registered targets
(:data:`tarn.lifecycle.targets.TARGETS`: one line per target), so adding one is its own module
plus that line.

Light on purpose: ``tarn status`` asks every target what it holds, so nothing here (or in a
target's module header) may import MLflow, scikit-learn or the ONNX tooling; a target loads
them inside ``publish``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tarn.config import Params
from tarn.core.signing import DeployKey


@dataclass(frozen=True)
class Site:
    """Where targets live and what they may use: the project, the server's address, the
    admin secret (to nudge it) and the deployment key (to check signatures), all read at the
    CLI edge."""

    params: Params
    root: Path
    server_url: str = ""
    admin_secret: str = ""
    key: DeployKey | None = None


@dataclass(frozen=True)
class Holding:
    """What a target holds right now."""

    target: str
    where: str  # a URL, a folder
    version: str | None  # None: nothing deployed there (or it could not be asked)
    detail: str = ""  # e.g. how the backend scores ("onnx")
    reachable: bool = True
    problem: str = ""  # why it could not be asked
    error: str = ""  # the last problem it reports itself (e.g. a refused version)


@dataclass(frozen=True)
class Generated:
    """A path a target writes (``tarn reset`` deletes it)."""

    path: Path
    what: str


class Target(Protocol):
    """One place a production version is deployed."""

    name: str

    def holds(self) -> Holding:
        """Which version it holds (light: no model is loaded to say so)."""
        ...

    def stale(self, production: str, held: Holding) -> str:
        """A warning naming what is stale and the command that fixes it ('' if current)."""
        ...

    def publish(self, version: str, step: Callable[[str], None]) -> str:
        """Deploy ``version`` there now (only a signed one); say where it went."""
        ...

    def follow(self, version: str) -> str:
        """Production just moved to ``version`` (promotion, rollback, retraining): start
        following it, or say who deploys it. One line for the user."""
        ...

    def generated(self) -> list[Generated]:
        """What it writes into the project (existing or not)."""
        ...


Factory = Callable[[Site], Target]
