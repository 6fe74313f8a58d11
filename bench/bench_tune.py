"""Tuning benchmarks on the default Adult configuration (a prepared project: `make run`, or
`--prepare DIR` builds one from the bundled data).

Prints, each against a baseline measured in the same run:
  1. overhead of the whole tune stage (MLflow parent + child runs, outputs) over the same
     hyperopt search with no logging (same seed, so the same trials);
  2. parallel trials on 2 Dask workers (1 thread each) vs sequential trials with XGBoost on
     2 threads and vs sequential single-threaded trials, for the same fixed configurations;
  3. quality and fairness of the trained models from reports/fairness.json against the
     targets of issue 3;
  4. (`--only compare`) the default search against the old one (the `tune:` section of
     commit 2fb4c46, no stop rule): each a whole tune stage, then a refit on train+valid as the
     train stage does it, scored on the test split, with `bias.mitigation: none`; the target of
     issue 11 is at most 60 % of the old stage time at an equal or lower test logloss.

Usage: python bench/bench_tune.py [--trials N] [--configs M] [--root DIR | --prepare DIR]
       python bench/bench_tune.py --only compare --prepare /tmp/tarn-bench [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# today's tuning before issue 11 (params.yaml of commit 2fb4c46): 40 trials up to 2,000 rounds,
# learning rate down to 0.01, one at a time on 2 XGBoost threads, no stop rule
OLD_TUNE = {
    "max_evals": 40, "timeout_s": 900, "parallelism": 1, "seed": 42, "n_estimators": 2000,
    "early_stopping_rounds": 50, "n_jobs": 2, "stop_rule": "none",
    "space": {
        "learning_rate": {"dist": "loguniform", "low": 0.01, "high": 0.3},
        "max_depth": {"dist": "quniform", "low": 3, "high": 10, "q": 1},
        "min_child_weight": {"dist": "loguniform", "low": 0.5, "high": 30},
        "subsample": {"dist": "uniform", "low": 0.5, "high": 1.0},
        "colsample_bytree": {"dist": "uniform", "low": 0.4, "high": 1.0},
        "reg_alpha": {"dist": "loguniform", "low": 1.0e-4, "high": 10},
        "reg_lambda": {"dist": "loguniform", "low": 1.0e-2, "high": 100},
    },
}


def prepare_project(where: Path) -> Path:
    """A project with the full bundled Adult data prepared (lake seed, snapshot, etl, prepare
    through the CLI), reused when ``where`` already has one."""
    if (where / "data" / "prepared" / "test.parquet").is_file():
        return where
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", where / "params.yaml")
    tarn = str(Path(sys.executable).parent / "tarn")
    for cmd in (["lake", "seed"], ["snapshot"], ["etl"], ["prepare"]):
        subprocess.run([tarn, "--params", str(where / "params.yaml"), *cmd], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return where


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12, help="trials for the overhead benchmark")
    ap.add_argument("--configs", type=int, default=24,
                    help="configurations for the parallel one (few configs -> one long trial "
                         "at the end dominates the wall time)")
    ap.add_argument("--only", choices=["overhead", "parallel", "quality", "compare"],
                    default=None, help="one benchmark (default: all but compare, the longest)")
    ap.add_argument("--root", type=Path, default=ROOT, help="a prepared project")
    ap.add_argument("--prepare", type=Path, default=None,
                    help="build (or reuse) a prepared project with the full Adult data here")
    ap.add_argument("--repeat", type=int, default=1, help="compare: old/new pairs to run")
    ap.add_argument("--sequential", action="store_true",
                    help="compare: also the new settings with parallelism 1 (2 XGBoost threads)")
    args = ap.parse_args()

    from tarn.config import load_params
    from tarn.stages import tune

    root = prepare_project(args.prepare) if args.prepare else args.root
    if args.only == "compare":
        compare(load_params(ROOT / "params.yaml"), root, args.repeat, args.sequential)
        return
    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={"tune": params.tune.model_copy(
        update={"max_evals": args.trials, "timeout_s": 10_000})})
    data = tune.matrices(params, root)

    if args.only in (None, "overhead"):
        overhead(params, data, args.trials, root)
    if args.only in (None, "parallel"):
        parallel(params, data, args.configs)
    if args.only in (None, "quality"):
        quality(params, root)


def overhead(params, data, trials: int, root: Path) -> None:
    """Tracking overhead: plain search vs the whole stage, same seed -> same trials."""
    from tarn.stages import tune

    t0 = time.perf_counter()
    plain = tune.search(params, data, on_trial=lambda r, s: None)
    t_plain = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        tracked_params = params.model_copy(update={
            "mlflow": params.mlflow.model_copy(update={"tracking_uri": f"sqlite:///{d}/m.db"}),
            "paths": params.paths.model_copy(update={"models": f"{d}/models",
                                                     "reports": f"{d}/reports"})})
        t0 = time.perf_counter()
        tracked = tune.run(tracked_params, root)
        t_tracked = time.perf_counter() - t0
    same = [r.params for r in plain] == [r.params for r in tracked.trials]
    print(f"[overhead] {trials} trials: plain hyperopt {t_plain:.1f} s, tune stage with "
          f"MLflow {t_tracked:.1f} s -> overhead {100 * (t_tracked / t_plain - 1):+.1f} % "
          f"(target <= 15 %); same trials: {same}")



def parallel(params, data, n_configs: int) -> None:
    """Parallel vs sequential trials on the same fixed configurations."""
    from hyperopt.pyll.stochastic import sample

    from tarn.core.compute import dask_client
    from tarn.stages import tune

    rng = np.random.default_rng(0)
    space = tune.build_space(params.tune)
    configs = [tune.clean_hparams(sample(space, rng=rng)) for _ in range(n_configs)]
    cfg = params.tune

    def sequential(n_jobs: int) -> float:
        t = time.perf_counter()
        for i, hp in enumerate(configs):
            tune.fit_trial(i, hp, data, cfg.n_estimators, cfg.early_stopping_rounds, n_jobs,
                           cfg.seed)
        return time.perf_counter() - t

    seq2 = sequential(2)
    seq1 = sequential(1)
    compute = params.compute.model_copy(update={"threads_per_worker": 1})
    with dask_client(compute, n_workers=2) as client:
        from distributed import wait
        shared = client.scatter(data, broadcast=True)
        warm = client.submit(tune.fit_trial, -1, configs[0], shared, 5, 5, 1, 0, pure=False)
        wait([warm])
        t = time.perf_counter()
        futs = [client.submit(tune.fit_trial, i, hp, shared, cfg.n_estimators,
                              cfg.early_stopping_rounds, 1, cfg.seed, pure=False)
                for i, hp in enumerate(configs)]
        wait(futs)
        par = time.perf_counter() - t
    print(f"[parallel] {n_configs} configs: sequential 2 threads {seq2:.1f} s, sequential "
          f"1 thread {seq1:.1f} s, Dask 2 workers x 1 thread {par:.1f} s -> speed-up "
          f"{seq2 / par:.2f}x vs 2-thread sequential (target >= 1.15x), {seq1 / par:.2f}x vs "
          f"1-thread sequential (target >= 1.8x)")



def quality(params, root: Path) -> None:
    """Quality and fairness of the models the pipeline trained."""
    fair = root / params.paths.reports / "fairness.json"
    if fair.is_file():
        f = json.loads(fair.read_text())
        w, wo, e = f["with_mitigation"]["quality"], f["without_mitigation"]["quality"], f["effect"]
        print(f"[quality] without mitigation: test logloss {wo['logloss']:.4f} (target <= 0.2740),"
              f" AUC {wo['roc_auc']:.4f} (target >= 0.929); with reweighing: logloss "
              f"{w['logloss']:.4f}, AUC {w['roc_auc']:.4f}")
        print(f"[fairness] reweighing reduces the demographic parity difference on sex by "
              f"{100 * e['dpd_reduction_sex']:.1f} % (target >= 40 %) at an AUC cost of "
              f"{e['auc_cost']:.4f} (target <= 0.005)")
    else:
        print(f"[quality] {fair} missing: run `make run` first")


def tune_and_score(params, tune_cfg, root: Path, workdir: Path) -> dict:
    """One whole tune stage with ``tune_cfg`` (own MLflow store and outputs), then the train
    stage's refit of the best configuration on train+valid, scored on the test split."""
    from sklearn.metrics import log_loss, roc_auc_score

    from tarn.core.catalog import load_split
    from tarn.stages import train, tune

    workdir.mkdir(parents=True)
    p = params.model_copy(update={
        "tune": tune_cfg,
        "bias": params.bias.model_copy(update={"mitigation": "none"}),
        "mlflow": params.mlflow.model_copy(
            update={"tracking_uri": f"sqlite:///{workdir}/mlflow.db"}),
        "paths": params.paths.model_copy(update={"models": str(workdir / "models"),
                                                 "reports": str(workdir / "reports")})})
    t0 = time.perf_counter()
    res = tune.run(p, root)
    stage_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = train.training_data(p, root)
    pipe = train.fit_pipeline(data, None, train.model_params(res.best, p), p)
    refit_s = time.perf_counter() - t0
    test = load_split(p, root, "test")
    proba = pipe.predict_proba(test.X)[:, 1]
    ok = [t for t in res.trials if t.status == "ok"]
    return {"stage_s": stage_s, "refit_s": refit_s,
            "logloss": float(log_loss(test.y, proba)), "auc": float(roc_auc_score(test.y, proba)),
            "val_logloss": res.best["val_logloss"], "trials": len(res.trials),
            "stopped": sum(1 for t in ok if t.stopped), "failed": len(res.trials) - len(ok),
            "rounds": sum(t.rounds for t in ok), "best_iteration": res.best["best_iteration"],
            "learning_rate": res.best["params"].get("learning_rate", float("nan"))}


def compare(params, root: Path, repeat: int, sequential: bool) -> None:
    """Old default search vs the new one, each a full tune + refit + test score."""
    from tarn.config import TuneConfig

    old = TuneConfig.model_validate(OLD_TUNE)
    variants = [("old", old), ("new", params.tune)]
    if sequential:
        variants.append(("new, 1 at a time", params.tune.model_copy(update={"parallelism": 1})))
    print(f"[compare] project {root}; bias.mitigation none; new: {params.tune.max_evals} trials, "
          f"parallelism {params.tune.parallelism}, n_estimators {params.tune.n_estimators}, "
          f"stop rule {params.tune.stop_rule}; load average before: {os.getloadavg()[0]:.2f}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeat):
            for name, cfg in variants:
                r = tune_and_score(params, cfg, root, Path(d) / f"{i}-{len(rows)}")
                rows.append((i, name, r))
                print(f"  run {i + 1} {name}: {r['stage_s']:.1f} s, test logloss "
                      f"{r['logloss']:.4f}, {r['stopped']}/{r['trials']} stopped "
                      f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    head = (f"{'run':>3} {'settings':<17} {'stage s':>8} {'ratio':>6} {'refit s':>7} "
            f"{'test logloss':>12} {'test AUC':>8} {'val logloss':>11} {'trials':>6} "
            f"{'stopped':>7} {'rounds':>7} {'best lr':>7} {'best it':>7}")
    print(head)
    for i, name, r in rows:
        base = next(x for j, n, x in rows if j == i and n == "old")
        print(f"{i + 1:>3} {name:<17} {r['stage_s']:>8.1f} {r['stage_s'] / base['stage_s']:>6.2f} "
              f"{r['refit_s']:>7.1f} {r['logloss']:>12.4f} {r['auc']:>8.4f} "
              f"{r['val_logloss']:>11.4f} {r['trials']:>6} {r['stopped']:>7} {r['rounds']:>7} "
              f"{r['learning_rate']:>7.4f} {r['best_iteration']:>7}")
    for i in range(repeat):
        o, n = (next(x for j, nm, x in rows if j == i and nm == k) for k in ("old", "new"))
        met = n["stage_s"] <= 0.6 * o["stage_s"] and n["logloss"] <= o["logloss"]
        print(f"[compare] run {i + 1}: new/old stage time {n['stage_s'] / o['stage_s']:.2f} "
              f"(target <= 0.60), test logloss {n['logloss']:.4f} vs {o['logloss']:.4f} "
              f"(target <=) -> {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
