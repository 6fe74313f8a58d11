"""The registered deployment targets (the protocol: :mod:`tarn.core.targets`), and the loops
over them that ``tarn status``, ``tarn reset`` and promotion share.

Adding a target: its own module, and one line in :data:`TARGETS`."""

from __future__ import annotations

from datetime import UTC, datetime

from tarn.core.targets import Factory, Generated, Holding, Site, Target
from tarn.edge.target import BundleTarget
from tarn.lifecycle.backend import BackendTarget

# name -> factory; the order is the order `tarn status` lists them in
TARGETS: dict[str, Factory] = {
    "backend": BackendTarget,
    "bundle": BundleTarget,
}


def targets(site: Site) -> list[Target]:
    return [make(site) for make in TARGETS.values()]


def holdings(site: Site) -> list[tuple[Target, Holding]]:
    """Every target with what it holds now."""
    return [(t, t.holds()) for t in targets(site)]


def stale(held: list[tuple[Target, Holding]], production: str | None) -> list[str]:
    """A warning (with its fix) per target that does not hold ``production``."""
    if not production:
        return []
    return [w for t, h in held if (w := t.stale(production, h))]


def follow(site: Site, version: str) -> list[str]:
    """Production moved to ``version``: every target follows it (or says who deploys it),
    and one that now holds it without an entry on the version's deployment record gets one
    (the server writes its own when it deploys). Returns the targets' lines for the user."""
    from tarn.core.registry import Registry
    from tarn.core.tags import DeploymentRecord

    lines = [line for t in targets(site) if (line := t.follow(version))]
    reg = Registry(site.params.mlflow, site.root, site.params.promote.alias)
    entries = DeploymentRecord.from_tags(dict(reg.version(version).tags)).targets()
    done = {t.name: h for t, h in holdings(site)
            if h.version == str(version) and t.name not in entries}
    if done:
        record(reg, version, done)
    return lines


def record(reg, version: str, done: dict[str, Holding]) -> None:
    """Add ``done``'s entries to the version's deployment record (``reg``: a
    :class:`tarn.core.registry.Registry`)."""
    from tarn.core.tags import DeploymentRecord

    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    rec = DeploymentRecord()
    for name, h in done.items():
        rec = rec.with_target(name, now, h.where, h.detail)
    reg.record_deployment(version, rec)


def generated(site: Site) -> list[Generated]:
    """What every target writes into the project (``tarn reset``)."""
    return [g for t in targets(site) for g in t.generated()]
