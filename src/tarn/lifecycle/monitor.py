"""Drift monitoring: Evidently reports on new data, and a retraining decision.

Two sources are compared with the training reference (the prepared train split):
(a) the lake batches the production model has not seen (they carry labels, so performance is
measured too), and (b) the server's prediction log. The decision (``none`` | ``incremental``
| ``full``) follows the thresholds in ``params.monitor``; every reason is spelled out.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import Params
from tarn.core.progress import Step, no_steps
from tarn.errors import EtlError, TarnError

MODES = ("none", "incremental", "full")


@dataclass
class SourceReport:
    name: str  # "lake" | "log"
    rows: int = 0
    drift_share: float = 0.0
    drifted: list[str] = field(default_factory=list)
    prediction_drift: bool = False
    quality: dict | None = None  # on labelled data
    reference_logloss: float | None = None
    problems: list[str] = field(default_factory=list)  # skipped files, schema changes
    schema_change: str = ""
    html: str = ""


@dataclass
class Decision:
    mode: str
    reasons: list[str]


@dataclass
class MonitorResult:
    production: str | None
    new_batches: list[str]
    sources: list[SourceReport]
    decision: Decision

    def as_dict(self) -> dict:
        return {"production": self.production, "new_batches": self.new_batches,
                "sources": [asdict(s) for s in self.sources], "decision": asdict(self.decision)}


# ----------------------------------------------------------------------------- data
def new_batches(params: Params, root: Path, seen: set[str]) -> list[str]:
    """Lake batches the model has not trained on, excluding held-out test batches."""
    from tarn.core.lake import Lake

    lake = Lake.from_config(params.lake, root)
    return [b.name for b in lake.batches(params.lake.include)
            if b.name not in seen
            and not any(fnmatch.fnmatch(b.name, p) for p in params.prepare.test_batches)]


def read_prediction_log(directory: Path, max_rows: int) -> tuple[pd.DataFrame, list[str]]:
    """The newest ``max_rows`` logged predictions; unreadable files are reported, skipped.

    Only closed files are read: the server appends to a hidden segment
    (``.preds-*.arrows``) and publishes it as ``preds-*.parquet`` (temp + rename) when it
    rolls, so a file matching the pattern is always complete. Files removed by retention
    while this runs are skipped silently; the newest come first (names start with the UTC
    time), whichever server process wrote them."""
    import pyarrow.parquet as pq

    files = sorted(directory.glob("preds-*.parquet")) if directory.is_dir() else []
    frames, problems, n = [], [], 0
    for f in reversed(files):
        try:
            t = pq.read_table(f).to_pandas()
        except FileNotFoundError:  # retention removed it meanwhile
            continue
        except Exception as e:  # noqa: BLE001 - a corrupt file must not stop monitoring
            problems.append(f"{f.name}: unreadable ({str(e).splitlines()[0][:120]}), skipped")
            continue
        frames.append(t)
        n += len(t)
        if n >= max_rows:
            break
    if not frames:
        return pd.DataFrame(), problems + ([] if files else ["prediction log is empty"])
    return pd.concat(frames[::-1], ignore_index=True).tail(max_rows), problems


# ----------------------------------------------------------------------------- analysis
def analyse(name: str, current: pd.DataFrame, reference: pd.DataFrame, params: Params,
            out: Path, proba_cur: np.ndarray | None, proba_ref: np.ndarray | None,
            labelled: bool, reference_logloss: float | None) -> SourceReport:
    """Evidently drift (features + predicted probability) and, with labels, quality."""
    from tarn.core import evidently_reports as er
    from tarn.core.metrics import quality

    rep = SourceReport(name, rows=len(current), reference_logloss=reference_logloss)
    cur, ref = current.copy(), reference.copy()
    extra: tuple[str, ...] = ()
    if proba_cur is not None and proba_ref is not None:
        cur["predicted_proba"], ref["predicted_proba"] = proba_cur, proba_ref
        extra = ("predicted_proba",)
    m = params.monitor
    snap = er.drift(cur, ref, params.schema, params.prepare, extra, {
        "num_method": m.num_method, "cat_method": m.cat_method,
        "num_threshold": m.num_threshold, "cat_threshold": m.cat_threshold})
    data = er.save(snap, out, f"{name}_drift")
    cols = er.drifted_columns(data)
    features = {k: v for k, v in cols.items() if k != "predicted_proba"}
    rep.drifted = sorted(k for k, v in features.items() if v["drifted"])
    rep.drift_share = len(rep.drifted) / max(1, len(features))
    rep.prediction_drift = bool(cols.get("predicted_proba", {}).get("drifted", False))
    er.save(er.summary(current, reference, params.schema, params.prepare), out,
            f"{name}_quality")
    rep.html = str(out / f"{name}_drift.html")
    if labelled and proba_cur is not None and current[params.schema.target.name].nunique() > 1:
        rep.quality = quality(current[params.schema.target.name].to_numpy().astype(int),
                              proba_cur, params.train.threshold,
                              params.evaluate.calibration_bins)
    return rep


def decide(sources: list[SourceReport], params: Params, streak: int) -> Decision:
    """The policy: full on a schema change, severe drift, a large quality drop, or after K
    incremental rounds in a row; incremental on moderate drift or prediction drift; else none."""
    cfg = params.monitor
    full, incr = [], []
    for s in sources:
        if s.schema_change:
            full.append(f"{s.name}: schema change ({s.schema_change})")
            continue
        if s.rows < cfg.min_rows:
            continue
        if s.drift_share >= cfg.drift_share_full:
            full.append(f"{s.name}: {s.drift_share:.0%} of features drifted "
                        f"(>= {cfg.drift_share_full:.0%}): {', '.join(s.drifted)}")
        elif s.drift_share >= cfg.drift_share_incremental:
            incr.append(f"{s.name}: {s.drift_share:.0%} of features drifted "
                        f"(>= {cfg.drift_share_incremental:.0%}): {', '.join(s.drifted)}")
        if s.prediction_drift and cfg.prediction_drift_triggers:
            incr.append(f"{s.name}: the predicted probability drifted")
        if s.quality and s.reference_logloss is not None:
            rise = s.quality["logloss"] - s.reference_logloss
            if rise >= cfg.logloss_increase_full:
                full.append(f"{s.name}: logloss {s.quality['logloss']:.4f} vs "
                            f"{s.reference_logloss:.4f} on test (+{rise:.4f})")
            elif rise >= cfg.logloss_increase_incremental:
                incr.append(f"{s.name}: logloss {s.quality['logloss']:.4f} vs "
                            f"{s.reference_logloss:.4f} on test (+{rise:.4f})")
    if incr and not full and streak >= cfg.max_incremental_in_a_row:
        full.append(f"{streak} incremental retrainings in a row (limit "
                    f"{cfg.max_incremental_in_a_row}): time for a full one")
    if full:
        return Decision("full", full + incr)
    if incr:
        return Decision("incremental", incr)
    rows = ", ".join(f"{s.name}: {s.rows} rows, {s.drift_share:.0%} drifted" for s in sources)
    return Decision("none", [f"no threshold crossed ({rows or 'no new data'})"])


# ----------------------------------------------------------------------------- stage
def run(params: Params, root: Path, sources: tuple[str, ...] = ("lake", "log"),
        step: Step = no_steps) -> MonitorResult:
    from tarn.core.catalog import load_split
    from tarn.core.registry import Registry

    reg = Registry(params.mlflow, root, params.promote.alias)
    production = reg.production()
    if production is None:
        raise TarnError("nothing in production to monitor", "promote a version first")
    lineage = reg.lineage(production)
    step(f"loading production version {production}")
    model = reg.load_model(production)
    train = load_split(params, root, "train")
    reference = train.frame
    ref_proba = model.predict_proba(train.X)[:, 1]
    ref_logloss = reg.run_metrics(production).get("test_logloss")
    out = root / params.monitor.reports
    out.mkdir(parents=True, exist_ok=True)
    seen = set(lineage.batches)
    fresh = new_batches(params, root, seen)
    reports: list[SourceReport] = []
    if "lake" in sources:
        step(f"drift on {len(fresh)} new lake batch(es)")
        reports.append(_lake_source(params, root, fresh, reference, ref_proba, model, out,
                                    ref_logloss))
    if "log" in sources:
        step("drift on the prediction log")
        reports.append(_log_source(params, root, reference, ref_proba, out, production))
    result = MonitorResult(production, fresh, reports,
                           decide(reports, params, lineage.incremental_streak))
    (out / "monitor.json").write_text(json.dumps(result.as_dict(), indent=2, default=float))
    step("logging to MLflow")
    _log_mlflow(params, root, result, out)
    return result


def _lake_source(params, root, fresh, reference, ref_proba, model, out,
                 ref_logloss) -> SourceReport:
    from tarn.core.features import to_model_frame
    from tarn.core.ingest import read_batches

    if not fresh:
        return SourceReport("lake", problems=["no new lake batches"])
    try:
        current, notes = read_batches(params, root, fresh)  # the ETL's own code path
    except EtlError as e:
        return SourceReport("lake", schema_change=e.message, problems=[str(e)])
    if current.empty:
        return SourceReport("lake", problems=notes + ["no usable rows in the new batches"])
    proba = model.predict_proba(to_model_frame(current, params.schema, params.prepare))[:, 1]
    rep = analyse("lake", current, reference, params, out, proba, ref_proba, True, ref_logloss)
    rep.problems = notes
    return rep


def _log_source(params, root, reference, ref_proba, out, version: str) -> SourceReport:
    """Drift of the inputs the production version itself scored: rows logged by earlier
    versions describe another model's traffic and are skipped (and counted)."""
    log, problems = read_prediction_log(root / params.serve.prediction_log,
                                        params.monitor.max_log_rows)
    if not log.empty and "model_version" in log.columns:
        mine = log["model_version"].astype(str) == str(version)
        if (~mine).any():
            problems = [*problems, f"skipped {int((~mine).sum()):,} logged rows scored by "
                                   f"other versions than {version}"]
        log = log[mine].reset_index(drop=True)
    if log.empty:
        return SourceReport("log", problems=problems + [f"no logged rows scored by version "
                                                        f"{version} yet"])
    missing = [c for c in params.schema.feature_names if c not in log.columns]
    if missing:
        return SourceReport("log", schema_change=f"logged inputs lack {missing}",
                            problems=problems)
    rep = analyse("log", log, reference, params, out, log["proba"].to_numpy(), ref_proba,
                  False, None)
    rep.problems = problems
    return rep


def _log_mlflow(params: Params, root: Path, result: MonitorResult, out: Path) -> None:
    import mlflow

    from tarn.core.tags import RunTag
    from tarn.core.tracking import connect, quiet_mlflow

    connect(params.mlflow, root)
    with quiet_mlflow(), mlflow.start_run(run_name="monitor"):
        mlflow.set_tags({RunTag.STAGE: "monitor", RunTag.DECISION: result.decision.mode,
                         RunTag.PRODUCTION_VERSION: result.production or "",
                         RunTag.NEW_BATCHES: ",".join(result.new_batches)})
        for s in result.sources:
            mlflow.log_metrics({f"{s.name}_rows": s.rows, f"{s.name}_drift_share": s.drift_share,
                                f"{s.name}_prediction_drift": float(s.prediction_drift)})
            if s.quality:
                mlflow.log_metrics({f"{s.name}_{k}": v for k, v in s.quality.items()})
        mlflow.log_artifacts(str(out), "monitor")
