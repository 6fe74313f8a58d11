"""What is where: the registry's versions, the production alias, the client bundle and what
the backend serves, gathered into one typed report (the CLI only prints it)."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tarn.config import Params
from tarn.core import address
from tarn.core.registry.view import open_view, settle_production
from tarn.core.tags import DeploymentRecord, LoadRefusal, PromotionRecord
from tarn.core.tasks import figure_names
from tarn.edge.pointer import current_bundle, current_version

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
class Backend:
    url: str
    reachable: bool
    version: str | None = None
    source: str = ""
    last_error: str = ""
    problem: str = ""  # why it could not be asked


@dataclass(frozen=True)
class Status:
    model: str
    alias: str
    production: str | None
    versions: list[VersionRow]
    bundle: Path | None
    bundle_version: str | None
    backend: Backend | None
    warnings: list[str]  # each names what is stale and the command that fixes it


def ask_backend(url: str, timeout_s: float = 5) -> Backend:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/version", timeout=timeout_s) as r:
            v = json.loads(r.read())
        return Backend(url, True, v.get("version"), v.get("source", ""),
                       v.get("last_error") or "")
    except OSError as e:
        return Backend(url, False, problem=str(e))


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
    url = server_url or address.server_url(params.serve, root)[0]
    backend = ask_backend(url)
    out_root = root / params.edge.bundle_dir
    bundle_version = current_version(out_root)
    refused = next((r.refused for r in rows if r.version == production and r.refused), "")
    if production and refused:  # nothing deploys it: the fix is to move production away
        warnings.append(refusal_warning(production, refused, reg.alias, _last_good(
            backend, deployed, production)))
    elif production and bundle_version != production:
        warnings.append(f"client bundle holds version {bundle_version or 'none'}, production "
                        f"is {production}: run `tarn bundle publish` (a running server also "
                        "publishes it when it deploys)")
    if production and not refused and backend is not None and backend.reachable \
            and backend.version != production:
        warnings.append(f"backend {backend.url} serves version {backend.version}, production "
                        f"is {production}: it follows within serve.poll_interval_s; "
                        f"check its last error above, or POST {url}/admin/reconcile")
    return Status(reg.name, reg.alias, production, rows, current_bundle(out_root),
                  bundle_version, backend, warnings)


def _last_good(backend: Backend | None, deployed: dict[str, str], production: str) -> str:
    """The version to put back: what the backend serves, else the one deployed last."""
    if backend is not None and backend.reachable and backend.version \
            and backend.version != production and backend.version in deployed:
        return backend.version
    return max(deployed, key=deployed.get, default="")


def refusal_warning(version: str, reason: str, alias: str, good: str) -> str:
    """Production names a version tarn refused to load: what happened and the command that
    undoes it (a hand-moved alias has no promotion record, so `tarn rollback` cannot)."""
    fix = (f"`tarn promote --version {good} --force --reason \"undo refused version "
           f"{version}\"`" if good else "register a trusted version and `tarn promote` it")
    return (f"production (alias {alias}) names version {version}, which tarn refused to load "
            f"({reason}); servers keep the version they serve and no bundle is published for "
            f"it. Fix: {fix}")
