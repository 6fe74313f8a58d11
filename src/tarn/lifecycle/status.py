"""What is where: the registry's versions, the production alias, and what every deployment
target holds (the backend, the client bundle, any registered one: :mod:`tarn.lifecycle.targets`),
gathered into one typed report (the CLI only prints it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tarn.config import Params
from tarn.core.registry.view import open_view, settle_production
from tarn.core.tags import (
    UNSIGNED_REFUSAL,
    DeploymentRecord,
    GateRecord,
    LoadRefusal,
    PromotionRecord,
)
from tarn.core.targets import Holding, Site
from tarn.core.tasks import figure_names
from tarn.lifecycle.targets import holdings, stale

# every task's quality figures, in a stable order (a version logs its own task's as test_<m>)
TEST_FIGURES = figure_names()


@dataclass(frozen=True)
class VersionRow:
    version: str
    stage: str
    aliases: list[str]
    figures: dict[str, float]  # test figures the version logged (its task's metrics)
    promoted_at: str
    note: str
    refused: str = ""  # why tarn's loader refused the version ('' if it never did)


@dataclass(frozen=True)
class Status:
    model: str
    alias: str
    production: str | None
    versions: list[VersionRow]
    targets: list[Holding]  # what each deployment target holds, in registration order
    warnings: list[str]  # each names what is stale and the command that fixes it

    def target(self, name: str) -> Holding | None:
        return next((h for h in self.targets if h.target == name), None)


def status(params: Params, root: Path, server_url: str = "") -> Status:
    """Gather the report; alias and stage are made to agree first (see
    ``Registry.production_intent``), and every deployment target that does not hold the
    production version gets a warning with the command that fixes it."""
    # read without MLflow (seconds of imports); only a disagreement opens the full registry
    reg = open_view(params.mlflow, root, params.promote.alias)
    before, production = settle_production(reg, params.mlflow, root)
    warnings = []
    if before != (production, [production] if production else []):
        warnings.append(f"alias {reg.alias} -> {before[0]} and stage Production -> "
                        f"{before[1]} disagreed: resolved to version {production} (whichever "
                        "moved last wins)")
    aliases = reg.aliases()
    rows = []
    deployed: dict[str, str] = {}  # version -> when a server last deployed it
    signed: set[str] = set()  # versions carrying a deployment signature (checked on deploy)
    for v in reg.versions():
        tags = dict(v.tags)
        mets = reg.run_metrics(str(v.version), v)
        refused = LoadRefusal.from_tags(tags).load_refused
        note = DeploymentRecord.from_tags(tags).deployment_note
        rows.append(VersionRow(
            str(v.version), v.current_stage,
            [a for a, n in aliases.items() if n == str(v.version)],
            {m: mets[f"test_{m}"] for m in TEST_FIGURES if f"test_{m}" in mets},
            PromotionRecord.from_tags(tags).promoted_at,
            "; ".join(x for x in (note, "refused by tarn's loader: never served" if refused
                                  else "") if x), refused))
        if not refused and DeploymentRecord.from_tags(tags).deployed_at:
            deployed[str(v.version)] = DeploymentRecord.from_tags(tags).deployed_at
        if GateRecord.from_tags(tags).signature:
            signed.add(str(v.version))
    held = holdings(Site(params, root, server_url))
    refused = next((r.refused for r in rows if r.version == production and r.refused), "")
    if production and not refused and production not in signed:
        refused = (f"{UNSIGNED_REFUSAL}: it carries none (moved to production by hand, or "
                   "promoted before signing)")
    if production and refused:  # nothing deploys it: the fix is to move production away
        warnings.append(refusal_warning(production, refused, reg.alias, _last_good(
            held, deployed, production)))
    else:
        warnings += stale(held, production)
    return Status(reg.name, reg.alias, production, rows, [h for _, h in held], warnings)


def _last_good(held: list, deployed: dict[str, str], production: str) -> str:
    """The version to put back: what a target still holds (the backend first), else the
    one deployed last."""
    for _, h in held:
        if h.reachable and h.version and h.version != production and h.version in deployed:
            return h.version
    return max(deployed, key=deployed.get, default="")


def refusal_warning(version: str, reason: str, alias: str, good: str) -> str:
    """Production names a version tarn refuses to deploy: what happened and the command that
    fixes it. Unsigned: promoting it signs it (the gates run), or a signed version goes back;
    files that could run code: only moving production away (a hand-moved alias has no
    promotion record, so `tarn rollback` cannot)."""
    back = (f"`tarn promote --version {good} --force --reason \"undo refused version "
            f"{version}\"`" if good else "register a trusted version and `tarn promote` it")
    if UNSIGNED_REFUSAL in reason:
        fix = (f"`tarn promote --version {version}` (the gates run and sign it), or put a "
               f"signed version back: {back}")
        what = "which no server or bundle deploys"
    else:
        fix, what = back, "which tarn refused to load"
    return (f"production (alias {alias}) names version {version}, {what} ({reason}); servers "
            f"keep the version they serve and no bundle is published for it. Fix: {fix}")
