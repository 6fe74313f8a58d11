"""Scale-out benchmarks on the default Adult configuration (run `make run` first; the tracking
part needs PostgreSQL: `make system-deps`).

Prints, each against a baseline measured in the same run:
  1. scaling efficiency on a real `dask scheduler` with `dask worker` processes (one thread
     each): trial throughput of the tune search with 2 workers vs 1 worker (target >= 1.8x),
     and 1 worker vs local sequential single-threaded trials in this process (target: within
     10 %, the cost of going distributed). TPE's first 20 suggestions are seeded random draws,
     so with <= 20 trials every run fits exactly the same configurations (checked);
  2. remote tracking: the whole tune stage (default 30 trials) tracking to `mlflow server` on
     PostgreSQL with artifacts on S3 (moto_server) vs the default SQLite file (target <= +20 %).

Usage: python bench/bench_scale.py [--trials N] [--tracking-trials M] [--only scaling|tracking]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the real-server helpers the tests use (tests/support/servers.py)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20, help="trials per scaling run (<= 20)")
    ap.add_argument("--tracking-trials", type=int, default=30)
    ap.add_argument("--only", choices=["scaling", "tracking"], default=None)
    args = ap.parse_args()

    from tarn.config import load_params
    from tarn.stages import tune

    params = load_params(ROOT / "params.yaml", env={})
    data = tune.matrices(params, ROOT)
    if args.only in (None, "scaling"):
        scaling(params, data, min(args.trials, 20))
    if args.only in (None, "tracking"):
        tracking(params, args.tracking_trials)


def _with(params, **sections):
    return params.model_copy(update={k: getattr(params, k).model_copy(update=v)
                                     for k, v in sections.items()})


def scaling(params, data, n: int) -> None:
    from tests.support.servers import DaskCluster

    from tarn.core.compute import dask_client
    from tarn.stages import tune

    def timed(p, client=None):
        t = time.perf_counter()
        res = tune.search(p, data, on_trial=lambda r, s: None, client=client)
        return time.perf_counter() - t, res

    base = _with(params, tune={"max_evals": n, "timeout_s": 100_000, "n_jobs": 1})
    runs = {"local sequential, 1 thread": timed(_with(base, tune={"parallelism": 1}))}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            cluster = DaskCluster(Path(d), n_workers=workers)
            try:
                p = _with(base, tune={"parallelism": workers},
                          compute={"scheduler": cluster.address})
                with dask_client(p.compute) as client:
                    client.submit(sum, [1], pure=False).result()  # connections warm
                    runs[f"cluster, {workers} worker(s)"] = timed(p, client)
            finally:
                cluster.stop()
    configs = {name: sorted(map(repr, (r.params for r in res))) for name, (_, res) in runs.items()}
    same = len({tuple(c) for c in configs.values()}) == 1
    for name, (secs, res) in runs.items():
        busy = sum(r.duration_s for r in res)
        slots = 2 if name.startswith("cluster, 2") else 1
        print(f"[scaling] {name}: {len(res)} trials in {secs:.1f} s "
              f"({len(res) / secs:.3f} trials/s); fitting {busy:.1f} s in all, longest trial "
              f"{max(r.duration_s for r in res):.1f} s, "
              f"slots busy {100 * busy / secs / slots:.0f} %")
    local = runs["local sequential, 1 thread"][0]
    one, two = runs["cluster, 1 worker(s)"][0], runs["cluster, 2 worker(s)"][0]
    fit1, fit2 = (sum(r.duration_s for r in runs[k][1]) for k in (
        "cluster, 1 worker(s)", "cluster, 2 worker(s)"))
    print(f"[scaling] where 2 workers lose against 2x: the same fits take {fit2 / fit1:.2f}x as "
          f"long when two run at once (shared cores and memory), and the rest is dispatch, "
          f"start-up and the tail (one slot idle while the last trial finishes)")
    print(f"[scaling] 2 workers vs 1 worker: {one / two:.2f}x the throughput (target >= 1.8x, "
          f"ideal 2x); 1 worker vs local sequential: {100 * (one / local - 1):+.1f} % time "
          f"(target within 10 %); same configurations in every run: {same}")


def tracking(params, trials: int) -> None:
    from tests.support.servers import MlflowServer, Postgres, S3Server

    from tarn.stages import tune

    base = _with(params, tune={"max_evals": trials, "timeout_s": 100_000, "parallelism": 1})
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        pg = Postgres()
        s3 = S3Server(d)
        s3.client().create_bucket(Bucket="tarn-bench")
        server = MlflowServer(d, backend=pg.create_db("bench"),
                              artifacts="s3://tarn-bench/artifacts", **s3.env())
        times = {}
        try:
            for name, uri in (("SQLite file", f"sqlite:///{d}/m.db"),
                              ("mlflow server on PostgreSQL + S3", server.url)):
                p = _with(base, mlflow={"tracking_uri": uri, "experiment": "bench"},
                          paths={"models": f"{d}/{len(times)}/models",
                                 "reports": f"{d}/{len(times)}/reports"})
                t = time.perf_counter()
                res = tune.run(p, ROOT)
                times[name] = (time.perf_counter() - t, len(res.trials))
        finally:
            server.stop()
            s3.stop()
            pg.close()
    (local, n1), (remote, n2) = times.values()
    print(f"[tracking] tune stage, {n1} trials: SQLite {local:.1f} s, mlflow server "
          f"(PostgreSQL + S3) {remote:.1f} s with {n2} trials -> overhead "
          f"{100 * (remote / local - 1):+.1f} % (target <= 20 %)")


if __name__ == "__main__":
    main()
