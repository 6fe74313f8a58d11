"""Retraining benchmarks on the default Adult project (run `make run` and promote first).

Prints, in one run:
  1. incremental retraining (continue boosting the production model, with replay) vs full
     retraining (refit of the same configuration on all training data + the new rows) on the
     same covariate-shifted new data: time ratio (target <= 20 %) and AUC on the new data's
     held-out slice (target: incremental within 0.005 of full);
  2. `monitor` on 100,000 logged predictions: time (target <= 30 s) and peak memory.

Nothing is written to the project's lake or registry.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def shifted_rows(params, n: int) -> pd.DataFrame:
    """Covariate shift from adult.test rows: older people working long hours."""
    import fsspec

    from tarn.datasets import ADULT_COLUMNS, adult_lines
    from tarn.stages.etl import Counts, _Dedup, process_file

    lines = [ln.replace(">50K.", ">50K").replace("<=50K.", "<=50K")
             for ln in adult_lines("test")
             if int(ln.split(",")[0]) >= 40 and int(ln.split(",")[12]) >= 40][:n]
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "new.csv"
        f.write_text("\n".join([", ".join(ADULT_COLUMNS), *lines]) + "\n")
        rows = [r for r, _ in process_file(fsspec.filesystem("file"), str(f), "new.csv", "new",
                                           params, _Dedup(), Counts())]
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    from tarn.config import load_params
    from tarn.core.catalog import SplitData, load_split
    from tarn.core.features import to_model_frame
    from tarn.core.registry import Registry
    from tarn.lifecycle.retrain import incremental_fit, replay
    from tarn.stages.train import fit_pipeline, training_data

    params = load_params(ROOT / "params.yaml")
    reg = Registry(params.mlflow, ROOT)
    prod = reg.production()
    if prod is None:
        raise SystemExit("no production version: run `tarn promote --latest` first")
    pipe = reg.load_model(prod)
    target = params.schema.target.name
    new = shifted_rows(params, 6000)
    fit, hold = train_test_split(new, test_size=0.3, random_state=0, stratify=new[target])

    def xy(df):
        return to_model_frame(df, params.schema, params.prepare), df[target].to_numpy().astype(int)

    Xh, yh = xy(hold)
    cfg = params.retrain
    t = time.perf_counter()
    mixed = pd.concat([fit, replay(params, ROOT, len(fit))], ignore_index=True)
    Xf, yf = xy(mixed)
    inc = incremental_fit(pipe, Xf, yf, None, Xh, yh, cfg.incremental_rounds,
                          cfg.early_stopping_rounds, params.train.n_jobs,
                          cfg.learning_rate_scale)
    t_inc = time.perf_counter() - t

    base = training_data(params, ROOT)
    frame = pd.concat([base.frame, fit.assign(batch="new")], ignore_index=True)
    X_all = to_model_frame(frame, params.schema, params.prepare)
    data = SplitData(frame, X_all, frame[target].to_numpy().astype(int), None)
    old = pipe.steps[-1][1]
    mparams = {k: v for k, v in old.get_params().items() if v is not None and k not in (
        "early_stopping_rounds", "callbacks")}
    t = time.perf_counter()
    full = fit_pipeline(data, None, mparams, params)
    t_full = time.perf_counter() - t

    auc = {name: roc_auc_score(yh, m.predict_proba(Xh)[:, 1])
           for name, m in (("production", pipe), ("incremental", inc), ("full", full))}
    test = load_split(params, ROOT, "test")
    auc_test = {name: roc_auc_score(test.y, m.predict_proba(test.X)[:, 1])
                for name, m in (("production", pipe), ("incremental", inc), ("full", full))}
    print(f"[retrain] {len(new):,} covariate-shifted rows ({len(fit):,} to learn, "
          f"{len(hold):,} held out); production model v{prod} "
          f"({old.get_booster().num_boosted_rounds()} trees)")
    print(f"  time: incremental {t_inc:.1f} s, full {t_full:.1f} s -> "
          f"{100 * t_inc / t_full:.0f} % (target <= 20 %)")
    print(f"  AUC on the new data: production {auc['production']:.4f}, incremental "
          f"{auc['incremental']:.4f}, full {auc['full']:.4f} -> incremental - full = "
          f"{auc['incremental'] - auc['full']:+.4f} (target >= -0.005)")
    print(f"  AUC on the original test split: production {auc_test['production']:.4f}, "
          f"incremental {auc_test['incremental']:.4f}, full {auc_test['full']:.4f}")

    monitor_bench(params, pipe)


def monitor_bench(params, pipe) -> None:
    """monitor on 100,000 logged predictions (the log built from test rows)."""
    from tarn.core.catalog import load_split
    from tarn.core.features import to_model_frame
    from tarn.lifecycle import monitor

    test = load_split(params, ROOT, "test")
    train = load_split(params, ROOT, "train")
    big = test.frame.sample(n=100_000, replace=True, random_state=0).reset_index(drop=True)
    X = to_model_frame(big, params.schema, params.prepare)
    log = X.assign(proba=pipe.predict_proba(X)[:, 1], model_version="1",
                   ts=pd.Timestamp.now(tz="UTC"))
    ref_proba = pipe.predict_proba(train.X)[:, 1]
    with tempfile.TemporaryDirectory() as d:
        for i, part in enumerate(np.array_split(log, 50)):  # 50 flushes of 2,000 rows
            part.to_parquet(Path(d) / f"preds-20260101T000000-1-{i:06d}.parquet", index=False)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        cur, problems = monitor.read_prediction_log(Path(d), params.monitor.max_log_rows)
        rep = monitor.analyse("log", cur, train.frame, params, Path(d) / "reports",
                              cur["proba"].to_numpy(), ref_proba, False, None)
        elapsed = time.perf_counter() - t
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"[monitor] {rep.rows:,} logged predictions: {elapsed:.1f} s (target <= 30 s), "
          f"peak RSS {rss1 / 1024:.0f} MB (+{(rss1 - rss0) / 1024:.0f} MB during monitoring); "
          f"drifted: {', '.join(rep.drifted) or 'none'}")


if __name__ == "__main__":
    main()
