"""Tuning benchmarks on the default Adult configuration (run `make run` first).

Prints, each against a baseline measured in the same run:
  1. overhead of the whole tune stage (MLflow parent + child runs, outputs) over the same
     hyperopt search with no logging (same seed, so the same trials);
  2. parallel trials on 2 Dask workers (1 thread each) vs sequential trials with XGBoost on
     2 threads and vs sequential single-threaded trials, for the same fixed configurations;
  3. quality and fairness of the trained models from reports/fairness.json against the
     targets of issue 3.

Usage: python bench/bench_tune.py [--trials N] [--configs M]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12, help="trials for the overhead benchmark")
    ap.add_argument("--configs", type=int, default=24,
                    help="configurations for the parallel one (few configs -> one long trial "
                         "at the end dominates the wall time)")
    ap.add_argument("--only", choices=["overhead", "parallel", "quality"], default=None)
    args = ap.parse_args()

    from tarn.config import load_params
    from tarn.stages import tune

    params = load_params(ROOT / "params.yaml")
    params = params.model_copy(update={"tune": params.tune.model_copy(
        update={"max_evals": args.trials, "timeout_s": 10_000})})
    data = tune.matrices(params, ROOT)

    if args.only in (None, "overhead"):
        overhead(params, data, args.trials)
    if args.only in (None, "parallel"):
        parallel(params, data, args.configs)
    if args.only in (None, "quality"):
        quality(params)


def overhead(params, data, trials: int) -> None:
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
        tracked = tune.run(tracked_params, ROOT)
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



def quality(params) -> None:
    """Quality and fairness of the models the pipeline trained."""
    fair = ROOT / params.paths.reports / "fairness.json"
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


if __name__ == "__main__":
    main()
