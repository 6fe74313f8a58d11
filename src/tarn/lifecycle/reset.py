"""Start over without re-cloning: the project's generated state, listed before it goes.

The lake (raw input) and git-tracked files are never touched; a remote tracking server is
not touched either (only a local store inside the project is removed)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tarn.config import Params
from tarn.core.catalog import BEST, COMPARATOR_DIR, EVIDENTLY_DIR, MODEL_DIR, PLOTS_DIR, TRAIN_JSON
from tarn.core.signing import key_path
from tarn.core.targets import Site
from tarn.lifecycle import targets as deploy_targets


@dataclass(frozen=True)
class Target:
    path: Path
    what: str


def generated_state(params: Params, root: Path) -> list[Target]:
    """What ``tarn reset`` would delete, existing paths only."""
    p, models, reports = params.paths, root / params.paths.models, root / params.paths.reports
    items = [
        Target(root / p.snapshot, "DVC output: lake snapshot"),
        Target(root / p.curated, "DVC output: curated table and quarantine"),
        Target(root / p.prepared, "DVC output: prepared splits"),
        Target(models / BEST, "DVC output: best hyperparameters"),
        Target(models / MODEL_DIR, "DVC output: trained model"),
        Target(models / COMPARATOR_DIR, "DVC output: comparison model"),
        Target(models / TRAIN_JSON, "DVC output: registered version of the last training"),
        Target(reports / PLOTS_DIR, "generated plots"),
        Target(reports / EVIDENTLY_DIR, "Evidently reports"),
        *[Target(f, "generated HTML report") for f in sorted(reports.glob("*.html"))],
        Target(root / params.monitor.reports, "monitoring reports"),
        # what every deployment target wrote (bundles, the prediction log, any registered one)
        *[Target(g.path, g.what) for g in deploy_targets.generated(Site(params, root))],
        # the deployment key stays: versions signed with it deploy again after a reset when
        # the registry is elsewhere (a remote tracking server keeps them)
        *[Target(f, "tracebacks and server records") for f in sorted(
            (root / ".tarn").glob("*")) if f.resolve() != key_path(
                root, params.serve.deploy_key).resolve()],
    ]
    if not params.mlflow.tracking_uri:  # a local store inside the project
        items.append(Target(root / params.mlflow.store_dir,
                            "MLflow store: runs, registered versions, artifacts"))
    return [t for t in items if t.path.exists()]


def remove(targets: list[Target]) -> None:
    for t in targets:
        if t.path.is_dir():
            shutil.rmtree(t.path)
        else:
            t.path.unlink(missing_ok=True)


def retire_log(params: Params, root: Path) -> tuple[Path | None, int]:
    """Move the prediction log's closed files into ``retired-<UTC time>/`` beside them, so
    monitoring starts from fresh traffic (nothing is deleted). Returns (folder, files)."""
    log = root / params.serve.prediction_log
    files = sorted(log.glob("preds-*.parquet")) if log.is_dir() else []
    if not files:
        return None, 0
    dest = log / f"retired-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    dest.mkdir()
    for f in files:
        f.rename(dest / f.name)
    return dest, len(files)
