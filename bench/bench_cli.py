"""How long the commands that only read take: `tarn --help`, `tarn status`, `tarn report`.

Targets (issue 20, on a quiet machine): `--help` <= 0.5 s, `status` and `report` <= 2 s each,
the median of 5 runs after one warm-up (bytecode compiled). They read through the light
registry view (tarn.core.registry.view), so MLflow is never imported; the figures are mostly
Python, typer/rich and the pydantic configuration.

The project is a temporary copy of this one (params.yaml, reports/*.json and, after `make
run`, its MLflow store; without one, a store with three versions, two promoted, is made), so
nothing here is changed. `--strict` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARN = Path(sys.executable).parent / "tarn"
RUNS = 5
TARGETS = {"--help": 0.5, "status": 2.0, "report": 2.0}


def project(d: Path) -> Path:
    """A copy of the project to read: params, stage reports, the registry."""
    shutil.copy2(ROOT / "params.yaml", d / "params.yaml")
    if (ROOT / "reports").is_dir():
        (d / "reports").mkdir()
        for f in (ROOT / "reports").glob("*.json"):
            shutil.copy2(f, d / "reports" / f.name)
    from tarn.config import load_params

    params = load_params(d / "params.yaml")
    if params.mlflow.tracking_uri:  # a remote store is read where it is (never written)
        return d / "params.yaml"
    store = ROOT / params.mlflow.store_dir / "mlflow.db"
    (d / params.mlflow.store_dir).mkdir(parents=True, mode=0o700)
    if store.is_file():
        shutil.copy2(store, d / params.mlflow.store_dir / "mlflow.db")
    else:
        registry_with_versions(params, d)
    return d / "params.yaml"


def registry_with_versions(params, root: Path) -> None:
    """Three versions with test metrics; 1 then 2 promoted (2 in production)."""
    from tarn.core.registry import Registry

    reg = Registry(params.mlflow, root)
    c = reg.client
    c.create_registered_model(reg.name)
    for i in range(3):
        run = c.create_run(reg.tracking.experiment_id)
        c.log_metric(run.info.run_id, "test_roc_auc", 0.9 + i / 100)
        c.log_metric(run.info.run_id, "test_logloss", 0.3 - i / 100)
        c.create_model_version(reg.name, source=f"runs:/{run.info.run_id}/model",
                               run_id=run.info.run_id)
    reg.promote("1", None, reason="bench")
    reg.promote("2", None, reason="bench")


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process): on a busy machine the wall time grows with
    the load, the CPU time much less, so both are printed."""
    env = {**os.environ, "COLUMNS": "120"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--runs", type=int, default=RUNS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tarn-bench-cli-") as tmp:
        params = project(Path(tmp))
        commands = {"--help": [str(TARN), "--help"],
                    "status": [str(TARN), "--params", str(params), "status"],
                    "report": [str(TARN), "--params", str(params), "report"]}
        load = os.getloadavg()[0]
        print(f"tarn CLI, median of {args.runs} runs after a warm-up (load average {load:.1f} "
              f"on {os.cpu_count()} cores; the targets are for a quiet machine)")
        missed = []
        for name, argv in commands.items():
            timed(argv, Path(tmp))  # warm-up: bytecode, page cache
            runs = [timed(argv, Path(tmp)) for _ in range(args.runs)]
            walls = [w for w, _ in runs]
            median = statistics.median(walls)
            cpu = statistics.median(c for _, c in runs)
            ok = median <= TARGETS[name]
            if not ok:
                missed.append(name)
            print(f"  tarn {name:<7} {median:5.2f} s  (min {min(walls):.2f}, max "
                  f"{max(walls):.2f}; CPU {cpu:.2f} s)  target <= {TARGETS[name]:.1f} s: "
                  f"{'ok' if ok else 'MISSED'}")
    if missed and args.strict:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
