"""Drift monitoring: Evidently reports on new data, and a retraining decision.

Two sources are compared with the training reference (the prepared train split):
(a) the lake batches the production model has not seen (they carry labels, so performance is
measured too), and (b) the server's prediction log. The decision (``none`` | ``incremental``
| ``full``) follows the thresholds in ``params.monitor``; every reason is spelled out.

What is measured follows the production version's own task (read from its card, never from
today's params.yaml): the loss is logloss for classification (an absolute rise) and RMSE for
regression (a relative rise: its scale is the target's); the model outputs watched for drift
are the probability of class 1 (binary), the predicted class and each class's probability
(multiclass), or the predicted value (regression).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tarn.config import MonitorConfig, Params
from tarn.core import explain, windows
from tarn.core.catalog import MONITOR_REPORT, load_split
from tarn.core.columns import ColumnRules
from tarn.core.features import to_model_frame
from tarn.core.ingest import read_batches
from tarn.core.lake import Lake
from tarn.core.model import served_contract
from tarn.core.progress import Step, no_steps
from tarn.core.registry import Registry
from tarn.core.tags import RunTag
from tarn.core.task import Task
from tarn.core.tasks.base import PREDICTED  # prefix of the model-output drift columns
from tarn.core.tracking import (
    batches_input,
    connect,
    log_inputs,
    quiet_mlflow,
    split_inputs,
    start_run,
)
from tarn.errors import EtlError, TarnError


@dataclass
class BatchReport:
    """One lake batch's own figures, when several batches are monitored together (their
    total alone hides which batch moved)."""

    name: str
    rows: int
    verdict: str  # as :func:`drift_verdict` or :func:`not_enough_data` has it
    drift_share: float = 0.0
    drifted: list[str] = field(default_factory=list)
    prediction_drifted: list[str] = field(default_factory=list)
    within_noise: dict[str, float] = field(default_factory=dict)


@dataclass
class SourceReport:
    name: str  # "lake" | "log"
    rows: int = 0
    drift_share: float = 0.0
    drifted: list[str] = field(default_factory=list)
    prediction_drift: bool = False
    prediction_drifted: list[str] = field(default_factory=list)  # which model outputs
    quality: dict | None = None  # on labelled data
    loss: str = "logloss"  # the task's loss: "logloss" | "rmse"
    reference_loss: float | None = None  # the version's test_<loss>
    problems: list[str] = field(default_factory=list)  # skipped files, schema changes
    # columns whose distance crossed the threshold but not what sampling noise alone gives
    # at this many rows (column -> that noise floor): not counted as drifted
    within_noise: dict[str, float] = field(default_factory=dict)
    schema_change: str = ""
    html: str = ""
    # the drift verdict in words: "not enough data (N rows < monitor.min_rows M)" below the
    # minimum sample (no drift figures then), else :func:`drift_verdict`
    verdict: str = ""
    batches: list[BatchReport] = field(default_factory=list)  # per lake batch, when several
    # mean |contribution| per column, reference vs these rows (tarn.core.explain), beside
    # feature drift: which columns the model's output now rests on more, or less
    attribution_drift: dict = field(default_factory=dict)
    # the rows read, as the monitoring run's dataset (tarn.core.tracking.DataInput; not in
    # monitor.json)
    data: Any = field(default=None, repr=False, compare=False)


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
                "sources": [{k: v for k, v in asdict(s).items() if k != "data"}
                            for s in self.sources], "decision": asdict(self.decision)}


# ----------------------------------------------------------------------------- data
def new_batches(params: Params, root: Path, seen: set[str],
                tested: Iterable[str] = ()) -> list[str]:
    """Lake batches the model has neither trained nor been tested on. With a fixed test
    split (``prepare.test_split: batches``) the batches matching it are never new; with a
    moving one (``latest``) the model's own test batches (``tested``, from its lineage) are
    not, and every later batch is."""
    lake = Lake.from_config(params.lake, root)
    fixed = params.prepare.test_split == "batches"
    return [b.name for b in lake.batches(params.lake.include)
            if b.name not in seen and b.name not in set(tested)
            and not (fixed and windows.matches(b.name, params.prepare.test_batches))]


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
def prediction_columns(task: Task, scores: np.ndarray) -> tuple[dict[str, np.ndarray],
                                                                 tuple[str, ...], tuple[str, ...]]:
    """Pure: the model outputs watched for drift, as (columns, numeric names, categorical
    names). Binary: the probability of class 1; multiclass: the predicted class (its mix) and
    each class's probability; regression: the predicted value."""
    return task.drift_columns(scores)


def logged_scores(task: Task, log: pd.DataFrame) -> np.ndarray | None:
    """The scores (:meth:`Task.scores` shape) the server logged with each row, or None when
    the log lacks the task's columns (see :mod:`tarn.core.predictions`)."""
    return task.logged_scores(log)


def not_enough_data(rows: int, cfg: MonitorConfig) -> str:
    """Pure: the verdict for a sample under ``monitor.min_rows``: no drift figure is a verdict
    on it (a distance between 1 row and the reference is noise, not drift)."""
    return f"not enough data ({rows:,} rows < monitor.min_rows {cfg.min_rows:,})"


def drift_verdict(share: float, drifted: list[str], cfg: MonitorConfig) -> str:
    """Pure: the features' drift in words, against the thresholds the decision uses."""
    names = f": {', '.join(drifted)}" if drifted else ""
    if share >= cfg.drift_share_full:
        return f"severe drift, {share:.0%} of features (>= {cfg.drift_share_full:.0%}){names}"
    if share >= cfg.drift_share_incremental:
        return f"drift, {share:.0%} of features (>= {cfg.drift_share_incremental:.0%}){names}"
    return f"no drift, {share:.0%} of features (< {cfg.drift_share_incremental:.0%}){names}"


def _methods(m: MonitorConfig) -> dict:
    return {"num_method": m.num_method, "cat_method": m.cat_method,
            "num_threshold": m.num_threshold, "cat_threshold": m.cat_threshold}


def _with_outputs(task: Task, current: pd.DataFrame, reference: pd.DataFrame,
                  scores_cur: np.ndarray | None, scores_ref: np.ndarray | None):
    """(current, reference, numeric outputs, categorical outputs): the frames with the model
    outputs watched for drift added as columns."""
    cur, ref = current.copy(), reference.copy()
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    if scores_cur is not None and scores_ref is not None:
        cols, numeric, categorical = prediction_columns(task, scores_cur)
        for k, v in cols.items():
            cur[k] = v
        for k, v in prediction_columns(task, scores_ref)[0].items():
            ref[k] = v
    return cur, ref, numeric, categorical


def _split_columns(rep: SourceReport | BatchReport, cols: dict[str, dict],
                   outputs: set[str]) -> None:
    """Fill drifted features, their share and drifted outputs from Evidently's columns."""
    features = {k: v for k, v in cols.items() if k not in outputs}
    rep.drifted = sorted(k for k, v in features.items() if v["drifted"])
    rep.drift_share = len(rep.drifted) / max(1, len(features))
    rep.prediction_drifted = sorted(k for k in outputs if cols.get(k, {}).get("drifted"))


def analyse(name: str, current: pd.DataFrame, reference: pd.DataFrame, params: Params,
            out: Path, task: Task, scores_cur: np.ndarray | None,
            scores_ref: np.ndarray | None, labelled: bool,
            reference_loss: float | None, step: Step = no_steps) -> SourceReport:
    """Evidently drift (features + the model's outputs) and, with labels, quality.

    Under ``monitor.min_rows`` rows nothing is measured: the verdict says "not enough data"
    and no Evidently page is written (an old one of this source is removed, so no page
    contradicts the verdict). Otherwise the page counts exactly what tarn counts: the
    features only, at ``monitor.drift_share_incremental``, and a column within sampling noise
    for this many rows (:func:`within_noise`) has its noise floor as its threshold."""
    from tarn.core import evidently_reports as er

    rep = SourceReport(name, rows=len(current), loss=task.loss, reference_loss=reference_loss)
    m = params.monitor
    if len(current) < m.min_rows:
        rep.verdict = not_enough_data(len(current), m)
        for stale in out.glob(f"{name}_*.*"):
            stale.unlink(missing_ok=True)
        step(f"{name}: {rep.verdict}; no drift report")
        return rep
    cur, ref, numeric, categorical = _with_outputs(task, current, reference, scores_cur,
                                                   scores_ref)
    outputs = set(numeric) | set(categorical)
    step(f"{name}: Evidently drift report ({len(cur):,} rows vs {len(ref):,} reference rows)")

    def report(thresholds: dict[str, float] | None = None):
        return er.drift(cur, ref, params.schema, params.prepare, numeric, _methods(m),
                        categorical, drift_share=m.drift_share_incremental,
                        per_column_threshold=thresholds)

    snap = report()
    cols = er.drifted_columns(json.loads(snap.json()))
    rep.within_noise = within_noise(cols, cur, ref, params, set(categorical))
    if rep.within_noise:  # again, with the floors as thresholds: the page counts as tarn does
        step(f"{name}: {len(rep.within_noise)} column(s) within sampling noise; the report "
             "again with their noise floors as thresholds")
        snap = report({c: float(np.nextafter(f, np.inf)) for c, f in rep.within_noise.items()})
        cols = er.drifted_columns(json.loads(snap.json()))
        for c in rep.within_noise:
            cols[c]["drifted"] = False
    er.save(snap, out, f"{name}_drift")
    _split_columns(rep, cols, outputs)
    rep.prediction_drift = bool(rep.prediction_drifted)
    rep.verdict = drift_verdict(rep.drift_share, rep.drifted, m)
    step(f"{name}: Evidently data summary report")
    er.save(er.summary(current, reference, params.schema, params.prepare), out,
            f"{name}_quality")
    rep.html = str(out / f"{name}_drift.html")
    y = current[params.schema.target.name] if labelled else None
    if y is not None and scores_cur is not None and task.measurable(y):
        step(f"{name}: quality on {len(y):,} labelled rows")
        y = task.labels_of(y.to_numpy())
        rep.quality = task.quality(y, scores_cur, params.evaluate.calibration_bins)
    return rep


def batch_figures(name: str, current: pd.DataFrame, reference: pd.DataFrame, params: Params,
                  task: Task, scores_cur: np.ndarray | None,
                  scores_ref: np.ndarray | None) -> BatchReport:
    """One batch's rows, drift share and drifted columns, by the same tests, thresholds and
    noise floors as its source (no page: the source's page shows the batches together)."""
    from tarn.core import evidently_reports as er

    m = params.monitor
    if len(current) < m.min_rows:
        return BatchReport(name, len(current), not_enough_data(len(current), m))
    cur, ref, numeric, categorical = _with_outputs(task, current, reference, scores_cur,
                                                   scores_ref)
    cols = er.drifted_columns(er.column_drift(cur, ref, params.schema, params.prepare,
                                              numeric, _methods(m), categorical))
    rep = BatchReport(name, len(current), "")
    rep.within_noise = within_noise(cols, cur, ref, params, set(categorical))
    for c in rep.within_noise:
        cols[c]["drifted"] = False
    _split_columns(rep, cols, set(numeric) | set(categorical))
    rep.verdict = drift_verdict(rep.drift_share, rep.drifted, m)
    return rep


NOISE_CHECK_ROWS = 5_000  # from here on sampling noise is far below the usual thresholds


def within_noise(cols: dict[str, dict], current: pd.DataFrame, reference: pd.DataFrame,
                 params: Params, categorical_outputs: set[str]) -> dict[str, float]:
    """Columns Evidently flagged whose distance is within sampling noise for this many rows
    (see :func:`tarn.core.evidently_reports.noise_floor`), with that floor."""
    from tarn.core import evidently_reports as er

    n = len(current)
    if n >= NOISE_CHECK_ROWS:
        return {}
    m = params.monitor
    out = {}
    for col, v in cols.items():
        if not v["drifted"] or col not in reference or v["method"] not in er.DISTANCES:
            continue
        numeric = col not in categorical_outputs and (
            col not in params.schema.feature_names or params.schema.column(col).numeric)
        floor = er.noise_floor(reference[col], n, numeric, v["method"],
                               m.num_threshold if numeric else m.cat_threshold)
        if v["score"] <= floor:
            out[col] = floor
    return out


def loss_verdict(loss: str, current: float, reference: float,
                 cfg: MonitorConfig) -> tuple[str, str]:
    """Pure: ("none" | "incremental" | "full", the reason) for the loss on new labelled data
    against the version's test loss. Logloss: the absolute rise (``logloss_increase_*``);
    RMSE: the rise relative to the test RMSE (``rmse_increase_*``), as the target's scale is
    the dataset's."""
    if loss == "rmse":
        rise = (current - reference) / reference if reference > 0 else (
            float("inf") if current > reference else 0.0)
        inc, full = cfg.rmse_increase_incremental, cfg.rmse_increase_full
        text = f"rmse {current:.4g} vs {reference:.4g} on test ({rise:+.1%})"
    else:
        rise = current - reference
        inc, full = cfg.logloss_increase_incremental, cfg.logloss_increase_full
        text = f"logloss {current:.4f} vs {reference:.4f} on test ({rise:+.4f})"
    if rise >= full:
        return "full", text
    if rise >= inc:
        return "incremental", text
    return "none", text


def _drifted_outputs(names: list[str]) -> str:
    """How a report names the model outputs that drifted."""
    parts = []
    if f"{PREDICTED}_proba" in names:
        parts.append("the predicted probability")
    if f"{PREDICTED}_value" in names:
        parts.append("the predicted value")
    if f"{PREDICTED}_class" in names:
        parts.append("the predicted class mix")
    per_class = [n.removeprefix(f"{PREDICTED}_proba_") for n in names
                 if n.startswith(f"{PREDICTED}_proba_")]
    if per_class:
        parts.append(f"the probability of {', '.join(per_class)}")
    return " and ".join(parts) or "the predictions"


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
            incr.append(f"{s.name}: {_drifted_outputs(s.prediction_drifted)} drifted")
        if s.quality and s.reference_loss is not None and s.loss in s.quality:
            mode, text = loss_verdict(s.loss, s.quality[s.loss], s.reference_loss, cfg)
            {"full": full, "incremental": incr}.get(mode, []).append(f"{s.name}: {text}")
    if incr and not full and streak >= cfg.max_incremental_in_a_row:
        full.append(f"{streak} incremental retrainings in a row (limit "
                    f"{cfg.max_incremental_in_a_row}): time for a full one")
    if full:
        return Decision("full", full + incr)
    if incr:
        return Decision("incremental", incr)
    rows = ", ".join(f"{s.name}: " + (
        "no new rows" if s.rows == 0 else not_enough_data(s.rows, cfg) if s.rows < cfg.min_rows
        else f"{s.rows:,} rows, {s.drift_share:.0%} drifted") for s in sources)
    return Decision("none", [f"no threshold crossed ({rows or 'no new data'})"])


def page_headline(result: MonitorResult, source: SourceReport, cfg: MonitorConfig) -> \
        tuple[str, list[str]]:
    """Pure: tarn's verdict for the top of a source's Evidently page: the decision and its
    reasons, this source's verdict, and what Evidently's own headline below counts."""
    lines = [f"{source.name} ({source.rows:,} rows): {source.verdict}", *(
        f"{b.name} ({b.rows:,} rows): {b.verdict}" for b in source.batches)]
    if source.prediction_drifted:
        lines.append(f"{source.name}: {_drifted_outputs(source.prediction_drifted)} drifted")
    if source.within_noise:
        lines.append("within sampling noise at this many rows (their noise floor is their "
                     "threshold below): " + ", ".join(source.within_noise))
    lines += [f"reason: {r}" for r in result.decision.reasons]
    lines.append(f"Evidently's headline below counts the features only, at tarn's threshold "
                 f"monitor.drift_share_incremental ({cfg.drift_share_incremental:.0%}); "
                 "model outputs are the separate drift metrics after the table")
    return f"tarn's decision: {result.decision.mode}", lines


# ----------------------------------------------------------------------------- stage
def run(params: Params, root: Path, sources: tuple[str, ...] = ("lake", "log"),
        step: Step = no_steps) -> MonitorResult:
    began = time.time()  # the monitoring run covers the scoring and the reports
    step("opening the model registry")
    reg = Registry(params.mlflow, root, params.promote.alias)
    production = reg.production()
    if production is None:
        raise TarnError("nothing in production to monitor", "promote a version first")
    lineage = reg.lineage(production)
    step(f"loading production version {production}")
    model, card = reg.load_with_card(production)
    task = Task.from_card(card)  # what the version predicts, with its own threshold
    step("reading the training reference")
    train = load_split(params, root, "train")
    reference = train.frame
    step(f"scoring the training reference ({len(train.X):,} rows)")
    ref_scores = task.scores(model, train.X)
    ref_loss = reg.run_metrics(production).get(f"test_{task.loss}")
    attribution = attribution_against(model, task, train.X, params, step)
    out = root / params.monitor.reports
    out.mkdir(parents=True, exist_ok=True)
    seen = set(lineage.batches)
    fresh = new_batches(params, root, seen, lineage.test_batches)
    reports: list[SourceReport] = []
    if "lake" in sources and task.kind != params.schema.task:
        # today's contract labels the new rows for another task: no figure compares them
        reports.append(SourceReport("lake", loss=task.loss, schema_change=(
            f"schema.task is {params.schema.task}, production version {production} is a "
            f"{task.kind} model")))
    elif "lake" in sources:
        step(f"drift on {len(fresh)} new lake batch(es)")
        reports.append(_lake_source(params, root, fresh, reference, ref_scores, model, task,
                                    out, ref_loss, step, attribution))
    if "log" in sources:
        step("drift on the prediction log")
        reports.append(_log_source(params, root, reference, ref_scores, task, out,
                                   production, step, card, attribution))
    step("deciding: none, incremental or full")
    result = MonitorResult(production, fresh, reports,
                           decide(reports, params, lineage.incremental_streak))
    from tarn.core import evidently_reports as er

    for s in reports:  # each page states the decision it led to: they cannot disagree
        if s.html and Path(s.html).is_file():
            er.headline(Path(s.html), *page_headline(result, s, params.monitor))

    (out / MONITOR_REPORT).write_text(json.dumps(result.as_dict(), indent=2, default=float))
    step(f"decision {result.decision.mode}; logging to MLflow")
    _log_mlflow(params, root, result, out, began)
    return result


def _lake_source(params, root, fresh, reference, ref_scores, model, task: Task, out,
                 ref_loss, step: Step = no_steps, attribution=None) -> SourceReport:
    if not fresh:
        return SourceReport("lake", loss=task.loss, problems=["no new lake batches"])
    step(f"lake: reading {', '.join(fresh)} through the contract")
    manifest: list[dict] = []  # the files read: the dataset's digest in MLflow
    try:
        current, notes = read_batches(params, root, fresh, manifest)  # the ETL's own code path
    except EtlError as e:
        return SourceReport("lake", loss=task.loss, schema_change=e.message, problems=[str(e)])
    if current.empty:
        return SourceReport("lake", loss=task.loss,
                            problems=notes + ["no usable rows in the new batches"])
    step(f"lake: scoring {len(current):,} new rows")
    scores = task.scores(model, to_model_frame(current, params.schema, params.prepare))
    rep = analyse("lake", current, reference, params, out, task, scores, ref_scores, True,
                  ref_loss, step)
    rep.problems = notes
    if attribution is not None and len(current) >= params.monitor.min_rows:
        rep.attribution_drift = attribution("lake", current)
    rep.data = batches_input(params.lake.url, root, current, fresh, manifest, "new data")
    if len(fresh) > 1:  # the total hides which batch moved: each batch's own figures too
        for name in fresh:
            mine = (current["batch"] == name).to_numpy()
            if mine.any():
                step(f"lake: drift of batch {name} ({int(mine.sum()):,} rows)")
                rep.batches.append(batch_figures(
                    name, current[mine].reset_index(drop=True), reference, params, task,
                    scores[mine], ref_scores))
    return rep


def _log_source(params, root, reference, ref_scores, task: Task, out,
                version: str, step: Step = no_steps, card: dict | None = None,
                attribution=None) -> SourceReport:
    """Drift of the inputs the production version itself scored: rows logged by earlier
    versions describe another model's traffic and are skipped (and counted). Only a model
    input of the version (its card) missing from the log is a schema change: a column it
    never used (excluded, ignored, unknown) never is (tarn.core.columns)."""
    step(f"log: reading the newest {params.monitor.max_log_rows:,} logged predictions")
    log, problems = read_prediction_log(root / params.serve.prediction_log,
                                        params.monitor.max_log_rows)
    if not log.empty and "model_version" in log.columns:
        mine = log["model_version"].astype(str) == str(version)
        if (~mine).any():
            problems = [*problems, f"skipped {int((~mine).sum()):,} logged rows scored by "
                                   f"other versions than {version}"]
        log = log[mine].reset_index(drop=True)
    if log.empty:
        return SourceReport("log", loss=task.loss,
                            problems=problems + [f"no logged rows scored by version "
                                                 f"{version} yet"])

    served = served_contract(card or {}, params.schema, params.prepare, params.train.threshold)
    missing = ColumnRules.of(served.schema, served.prepare).missing_inputs(log.columns)
    if missing:
        return SourceReport("log", loss=task.loss, schema_change=f"logged inputs lack {missing}",
                            problems=problems)
    scores = logged_scores(task, log)
    if scores is None:
        problems = [*problems, f"the log holds no {task.kind} predictions: only the inputs "
                               "were compared"]
    rep = analyse("log", log, reference, params, out, task, scores,
                  ref_scores if scores is not None else None, False, None, step)
    rep.problems = problems
    if attribution is not None and len(log) >= params.monitor.min_rows:
        rep.attribution_drift = attribution("log", log)
    return rep


ATTRIBUTION_TOP = 10  # columns of the attribution drift kept in monitor.json


def attribution_against(model, task: Task, reference_X: pd.DataFrame, params: Params,
                        step: Step = no_steps):
    """A function (source name, new rows) -> attribution drift against the reference rows
    (mean |contribution| per column, tarn.core.explain), or None when the model cannot be
    explained (feature drift is still measured)."""
    ref = explain.sample(reference_X, explain.SUMMARY_ROWS)
    try:
        e = explain.batch_explainer(model, task, len(ref), os.cpu_count() or 1)
    except explain.NotExplainable:
        return None
    step(f"explaining {len(ref):,} reference rows (attribution drift)")
    ref_imp = explain.importance(e.explain(ref))

    def drift(name: str, frame: pd.DataFrame) -> dict:
        try:
            X = explain.sample(to_model_frame(frame, params.schema, params.prepare),
                               explain.SUMMARY_ROWS)
        except KeyError as err:  # the rows lack a model input: nothing to explain
            return {"unavailable": str(err)}
        step(f"{name}: explaining {len(X):,} rows (attribution drift)")
        d = explain.attribution_drift(ref_imp, explain.importance(e.explain(X)))
        return {"reference_rows": len(ref), "rows": len(X),
                "max_share_change": d["max_share_change"],
                "columns": d["columns"][:ATTRIBUTION_TOP]}

    return drift


def attribution_summary(rep: SourceReport, top: int = 3) -> str:
    """One printed line: the columns whose share of the model's output moved most."""
    d = rep.attribution_drift
    if not d:
        return ""
    if "unavailable" in d:
        return f"{rep.name} attribution drift: not measured ({d['unavailable']})"
    cols = "; ".join(f"{c['column']} {c['reference']:.3g} -> {c['current']:.3g} "
                     f"({c['share_change']:+.1%} of the output)" for c in d["columns"][:top])
    return (f"{rep.name} attribution drift (mean |contribution|, reference -> new rows; "
            f"largest share change {d['max_share_change']:.1%}): {cols}")


def _log_mlflow(params: Params, root: Path, result: MonitorResult, out: Path,
                began: float | None = None) -> None:
    import mlflow

    tracking = connect(params.mlflow, root)
    with quiet_mlflow(), start_run("monitor", tracking.experiment_id, began) as run:
        # what was compared: the training reference and the new batches
        log_inputs(run.info.run_id, [*split_inputs(params, root, {"train": "reference"}),
                                     *(s.data for s in result.sources if s.data is not None)])
        mlflow.set_tags({RunTag.STAGE: "monitor", RunTag.DECISION: result.decision.mode,
                         RunTag.PRODUCTION_VERSION: result.production or "",
                         RunTag.NEW_BATCHES: ",".join(result.new_batches)})
        for s in result.sources:  # drift figures only where measured (>= monitor.min_rows)
            mlflow.log_metrics({f"{s.name}_rows": s.rows, **({
                f"{s.name}_drift_share": s.drift_share,
                f"{s.name}_prediction_drift": float(s.prediction_drift)} if s.html else {})})
            for b in s.batches:
                measured = not b.verdict.startswith("not enough data")
                mlflow.log_metrics({f"{s.name}_batch_{b.name}_rows": b.rows, **(
                    {f"{s.name}_batch_{b.name}_drift_share": b.drift_share} if measured
                    else {})})
            if s.quality:  # the figures (multiclass per-class tables stay in monitor.json)
                mlflow.log_metrics({f"{s.name}_{k}": v for k, v in s.quality.items()
                                    if isinstance(v, int | float)})
        mlflow.log_artifacts(str(out), "monitor")
