"""Retraining: incremental (continue boosting the production model on new batches) or full
(the whole DVC pipeline on a fresh snapshot), chosen by the monitor's decision, then promoted
through the same gates as any other version.

Every task is continued the same way: the parent's own estimator (XGBClassifier for binary and
multiclass, XGBRegressor for regression) with its objective, and the new version inherits the
parent's card (task, classes, decision threshold, contract), not today's params.yaml.

Incremental keeps the production normalization frozen (refitting it under the old trees would
silently change what every old tree sees) and adds trees with ``xgb_model=``. The number of
new trees is found by early stopping on a slice of the new data, then the continuation is
refitted with exactly that many, so the saved booster, the ONNX export and sklearn agree.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from tarn.config import Params, PrepareConfig, SchemaConfig
from tarn.core import bias, windows
from tarn.core import progress as progress_output
from tarn.core.catalog import (
    RETRAIN_REPORT,
    SplitData,
    lineage_keys,
    load_split,
    load_train_info,
    split_batches,
)
from tarn.core.features import to_model_frame
from tarn.core.files import write_text
from tarn.core.ingest import read_batches
from tarn.core.model import packaging, schema_hash
from tarn.core.progress import Progress, Step, no_steps, rounds_callback, silent
from tarn.core.registry import PromotionRefused, Registry
from tarn.core.tags import Lineage, RetrainRecord
from tarn.core.task import Task
from tarn.core.tracking import batches_input, frame_input, git_commit, params_hash
from tarn.errors import TarnError
from tarn.lifecycle import monitor
from tarn.lifecycle.promote import promote

NEW_DATA_MANIFEST = "lineage/new_data_manifest.json"  # in the run of an incremental version


class RetrainError(TarnError):
    """Retraining cannot proceed (lineage mismatch, no new data, pipeline failure)."""


@dataclass
class RetrainResult:
    mode: str
    parent: str
    version: str | None = None
    promoted: bool = False
    refused: str = ""
    duration_s: float = 0.0
    forced: bool = False  # the mode came from --mode, not from the monitor's decision
    reason: str = ""  # why it ran: the promotion reason, the tags and the report say this
    metrics: dict = field(default_factory=dict)  # {"old"|"new": {"test"|"new_data": {...}}}
    windows: dict = field(default_factory=dict)  # {"test"|"new_data": what it was measured on}
    # incremental: the held-out newest rows of the new data (the gates' rows under a moving
    # test window, prepare.test_split: latest)
    held_out: SplitData | None = field(default=None, repr=False)


def incremental_fit(pipe: Pipeline, X: pd.DataFrame, y: np.ndarray, w: np.ndarray | None,
                    X_hold: pd.DataFrame, y_hold: np.ndarray, rounds: int,
                    early_stopping: int, n_jobs: int = 2, lr_scale: float = 1.0,
                    progress: Progress = silent) -> Pipeline:
    """Continue boosting ``pipe`` on (X, y); the normalization step stays as fitted. The
    continuation is the parent's own estimator type with its own parameters (objective and
    eval metric included): XGBClassifier for binary and multiclass, XGBRegressor for
    regression. ``progress`` hears of each new boosting round."""
    pre, old = pipe.steps[0][1], pipe.steps[-1][1]
    estimator = type(old)
    booster = old.get_booster()
    start = booster.num_boosted_rounds()
    params = {k: v for k, v in old.get_params().items()
              if k not in ("n_estimators", "early_stopping_rounds", "callbacks")}
    params["n_jobs"] = n_jobs
    params["learning_rate"] = (params.get("learning_rate") or 0.3) * lr_scale
    z, z_hold = pre.transform(X), pre.transform(X_hold)
    report = rounds_callback(progress, "retrain", f"boosting new rounds (at most {rounds}, "
                             f"early stopping {early_stopping})", rounds)
    probe = estimator(**params, n_estimators=rounds, early_stopping_rounds=early_stopping,
                      callbacks=[report])
    probe.fit(z, y, sample_weight=w, eval_set=[(z_hold, y_hold)], xgb_model=booster,
              verbose=False)
    # keep the probe's trees up to its best round (at least one new one): exactly the trees
    # early stopping validated, and no second fit
    total = start + max(1, int(probe.best_iteration) + 1 - start)
    final = estimator(**params, n_estimators=total)
    final.load_model(bytearray(probe.get_booster()[:total].save_raw("json")))
    # n_estimators is metadata after fitting; make it the whole booster's size, which the
    # ONNX converter relies on (it divides tree count by it to count classes)
    final.set_params(n_estimators=final.get_booster().num_boosted_rounds())
    return Pipeline([(pipe.steps[0][0], pre), (pipe.steps[-1][0], final)])


def parent_contract(card: dict, params: Params) -> tuple[Task, SchemaConfig, PrepareConfig]:
    """What the parent version predicts and the contract it was trained on, from its card: a
    continuation inherits them (task, classes, threshold), whatever params.yaml says today. A
    version from before cards is binary, on today's contract."""
    task = Task.from_card(card)
    if not card.get("schema"):
        return task, params.schema, params.prepare
    schema = SchemaConfig.model_validate(card["schema"])
    prepare = PrepareConfig(**(card.get("prepare") or {}))
    return task, schema, prepare


def run_incremental(params: Params, root: Path, batches: list[str], step: Step = no_steps,
                    progress: Progress = silent) -> RetrainResult:
    start, began = time.perf_counter(), time.time()
    cfg = params.retrain
    step("opening the model registry")
    reg = Registry(params.mlflow, root, params.promote.alias)
    parent = reg.production()
    if parent is None:
        raise RetrainError("nothing in production to continue from",
                           "promote a version first, or run a full retraining")
    parent_lineage = reg.lineage(parent)
    expected = schema_hash(params.schema, params.prepare)
    if parent_lineage.schema_hash != expected:
        raise RetrainError(f"version {parent} was trained on another input schema "
                           f"({parent_lineage.schema_hash} vs {expected})",
                           "run a full retraining (`tarn retrain --mode full`)")
    if not batches:
        raise RetrainError("no new batches to learn from", "add one with `tarn lake add`")
    step(f"loading production version {parent}")
    pipe, card = reg.load_with_card(parent)
    task, schema, prepare = parent_contract(card, params)
    if task.kind != params.schema.task:
        raise RetrainError(f"version {parent} is a {task.kind} model, params.yaml says "
                           f"schema.task: {params.schema.task}",
                           "run a full retraining (`tarn retrain --mode full`)")
    manifest: list[dict] = []
    step(f"reading {', '.join(batches)} through the contract")
    data, _ = read_batches(params, root, batches, manifest)
    target = params.schema.target.name
    if len(data) < 20 or data[target].nunique() < 2:
        raise RetrainError(f"only {len(data)} usable new rows", "wait for more data")
    fit, hold = holdout(data, cfg.holdout_fraction, cfg.seed, params.prepare,
                        data[target] if task.classification else None)
    step("mixing in replayed training rows")
    fit = pd.concat([fit, replay(params, root, len(fit))], ignore_index=True)
    w = None
    # the parent's own choice: train may have registered the unmitigated model (reweighing
    # made the gap worse or cost too much), and its continuation must not start reweighing
    if parent_lineage.mitigation == "reweighing" and task.classification:  # no groups x labels
        table = bias.reweighing_table(fit, params.bias.reweighing_features, target)
        w = bias.apply_weights(fit, table, params.bias.reweighing_features, target)

    def xy(df):
        return to_model_frame(df, schema, prepare), targets(task, df[target])

    (X, y), (Xh, yh) = xy(fit), xy(hold)
    if missing := task.missing_classes(y):
        raise RetrainError(f"the new data (with replayed rows) has no rows of class(es) "
                           f"{missing}: boosting cannot continue a {task.n_classes}-class "
                           "model on fewer classes", "raise retrain.replay_ratio, or wait "
                           "for more data")
    step(f"continuing to boost version {parent} on {len(y):,} rows")
    new_pipe = incremental_fit(pipe, X, y, w, Xh, yh, cfg.incremental_rounds,
                               cfg.early_stopping_rounds, params.train.n_jobs,
                               cfg.learning_rate_scale, progress)
    trees = new_pipe.steps[-1][1].get_booster().num_boosted_rounds()
    lineage = Lineage(
        kind="incremental", parent_version=parent, new_batches=tuple(batches),
        batches=tuple(sorted(set(parent_lineage.batches) | set(batches))),
        new_data_hash=hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
        incremental_streak=parent_lineage.incremental_streak + 1, schema_hash=expected,
        snapshot_hash=parent_lineage.snapshot_hash,
        params_hash=params_hash(params, lineage_keys("train", "retrain")),
        git_commit=git_commit(root), train_rows=len(y), mitigation=parent_lineage.mitigation)
    metrics = _compare(params, root, task, pipe, new_pipe, Xh, yh, step)
    trained = [*parent_lineage.batches, *batches]
    tested = sorted(set(hold["batch"].astype(str)), key=windows.batch_order)
    window = {"test": windows.label(split_batches(params, root, "test"),
                                    len(load_split(params, root, "test").y), trained),
              "new_data": windows.label(tested, len(yh)) + (
                  ": the newest rows of the new data, after every row it trained on"
                  if params.prepare.test_split == "latest" else
                  ": a random share of the new data, held out")}
    step("logging and registering the new version")
    out = reg.register(new_pipe, lineage, "retrain-incremental",
                       {"parent_version": parent, "new_trees": trees -
                        pipe.steps[-1][1].get_booster().num_boosted_rounds(),
                        "new_rows": len(y)}, flat_metrics(task, metrics),
                       packaging(schema, prepare, task, new_pipe, X),
                       {NEW_DATA_MANIFEST: {"files": manifest}}, started=began,
                       inputs=_new_data_inputs(params, root, data, hold, batches, manifest))
    return RetrainResult("incremental", parent, out.version, metrics=metrics,
                         duration_s=time.perf_counter() - start, windows=window,
                         held_out=SplitData(hold, Xh, yh, None))


def holdout(data: pd.DataFrame, fraction: float, seed: int, prepare: PrepareConfig,
            strata: pd.Series | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pure: (rows to learn from, rows held out) of the new data. Under a moving test window
    (``prepare.test_split: latest``) the held-out rows are the newest (batch order, then
    file order), so the continuation is judged forward in time; else a seeded random share,
    stratified by ``strata``."""
    if prepare.test_split == "latest":
        if "batch" in data:
            names = data["batch"].astype(str).tolist()
            data = data.iloc[sorted(range(len(names)),
                                    key=lambda i: windows.batch_order(names[i]))]
        cut = len(data) - max(1, math.ceil(fraction * len(data)))
        return data.iloc[:cut], data.iloc[cut:]
    return train_test_split(data, test_size=fraction, random_state=seed, stratify=strata)


def gate_split(params: Params, root: Path,
               result: RetrainResult) -> tuple[SplitData | None, str]:
    """The rows the gates measure a retrained version on, and what they are. Under a moving
    test window an incremental version is judged on the test split and the newest rows of its
    new data (held out from the continuation: newer than all it learned from), together, so a
    small new batch still gives every group enough rows; else the prepared test split."""
    held = result.held_out
    if held is None or params.prepare.test_split != "latest":
        return None, ""
    test = load_split(params, root, "test")
    both = SplitData(pd.concat([test.frame, held.frame], ignore_index=True),
                     pd.concat([test.X, held.X], ignore_index=True),
                     np.concatenate([test.y, held.y]), None)
    first = result.windows.get("test") or windows.label(split_batches(params, root, "test"),
                                                         len(test.y))
    return both, f"{first}; and {result.windows.get('new_data', f'{len(held.y):,} new rows')}"


def targets(task: Task, values: pd.Series) -> np.ndarray:
    """Curated target values as the model learns them: class indexes, or numbers."""
    return values.to_numpy().astype(np.int64 if task.classification else np.float64)


def _new_data_inputs(params: Params, root: Path, data: pd.DataFrame, hold: pd.DataFrame,
                     batches: list[str], manifest: list[dict]) -> list:
    """The run's datasets: the new batches it continued on, and the share of them held out
    for its test figures (same source: the lake, the manifest digest of the files read)."""
    new = batches_input(params.lake.url, root, data, batches, manifest, "training")
    return [new, frame_input(hold, f"held out of {new.name}", "test", new.source)]


def flat_metrics(task: Task, metrics: dict) -> dict[str, float]:
    """Pure: the figures logged with an incremental version. ``test_<metric>`` are the names
    the evaluate stage logs for a full version (monitoring reads ``test_<loss>``, `tarn status`
    shows them); ``<old|new>_<test|new_data>_<metric>`` compare parent and continuation."""
    flat = {f"{k}_{s}_{m}": float(v) for k, d in metrics.items() for s, q in d.items()
            for m, v in q.items() if m in task.metrics}
    flat.update({f"test_{m}": float(v) for m, v in metrics["new"]["test"].items()
                 if isinstance(v, int | float) and not isinstance(v, bool)})
    return flat


def replay(params: Params, root: Path, n_new: int) -> pd.DataFrame:
    """A seeded sample of the previous training rows, mixed into the new data so the added
    trees fit the new population without forgetting the old one."""
    n = int(round(params.retrain.replay_ratio * n_new))
    if n == 0:
        return pd.DataFrame()
    train = load_split(params, root, "train").frame
    return train.sample(n=min(n, len(train)), random_state=params.retrain.seed)


def _compare(params: Params, root: Path, task: Task, old: Pipeline, new: Pipeline,
             Xh: pd.DataFrame | None, yh: np.ndarray | None, step: Step = no_steps) -> dict:
    """The old-vs-new summary of both retraining modes: old and new model on the test split
    and, when there are new rows (``Xh``, ``yh``), on them, with the task's figures (the
    threshold is the versions' own). Incremental passes the new data's held-out slice, full
    the new batches (which it trained on)."""
    test = load_split(params, root, "test")
    bins = params.evaluate.calibration_bins
    y_test = targets(task, pd.Series(test.y))
    out = {}
    new_data = Xh is not None and yh is not None and len(yh) > 0
    for name, m in (("old", old), ("new", new)):
        step(f"scoring the {name} model on the test split ({len(y_test):,} rows)"
             + (f" and the new data ({len(yh):,} rows)" if new_data else ""))
        out[name] = {"test": task.quality(y_test, task.scores(m, test.X), bins)}
        if new_data:
            out[name]["new_data"] = task.quality(yh, task.scores(m, Xh), bins)
    return out


def _dvc() -> str:
    """The dvc beside this interpreter (the project's venv), else the one on PATH."""
    import shutil
    import sys

    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.is_file() else (shutil.which("dvc") or "dvc")


def _compare_versions(params: Params, root: Path, old: str, new: str,
                      batches: list[str], step: Step = no_steps) -> dict:
    """Old vs new registered version (:func:`_compare`) on the test split and on the new
    batches, if any (which a full retraining has trained on: that column is optimistic for
    it). Empty only when the two predict different tasks."""
    reg = Registry(params.mlflow, root, params.promote.alias)
    step(f"loading versions {new} (new) and {old} (old) to compare them")
    new_pipe, card = reg.load_with_card(new)
    old_pipe, old_card = reg.load_with_card(old)
    task = Task.from_card(card)
    if Task.from_card(old_card).kind != task.kind:
        return {}  # a change of task: no figure compares the two
    X, y = None, None
    if batches:
        step(f"reading {', '.join(batches)} through the contract")
        data, _ = read_batches(params, root, batches)
        if not data.empty:
            X = to_model_frame(data, params.schema, params.prepare)
            y = targets(task, data[params.schema.target.name])
    return _compare(params, root, task, old_pipe, new_pipe, X, y, step)


def retrain_reason(mode: str, chosen: str, decision) -> str:
    """Pure: why a retraining ran, as its promotion reason, its tags and its report record
    it: "forced by --mode M" when the user chose the mode (with what the monitor decided),
    else the monitor's reasons."""
    said = "; ".join(decision.reasons)
    if mode != "auto":
        return (f"{chosen} retraining forced by --mode {mode} (the monitor decided "
                f"{decision.mode}: {said})")
    if chosen != decision.mode:
        return (f"{chosen} retraining ({decision.mode} asked, but a schema change cannot be "
                f"learned incrementally): {said}")
    return f"{chosen} retraining: {said}"


def write_report(params: Params, root: Path, mon, result: RetrainResult) -> Path:
    """The last retraining as ``<monitor.reports>/retrain.json`` (read by `tarn report`):
    mode, forced or not and why, versions, the old-vs-new figures, promoted or refused."""
    from dataclasses import asdict
    from datetime import UTC, datetime

    out = root / params.monitor.reports / RETRAIN_REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "mode": result.mode, "forced": result.forced, "reason": result.reason,
              "parent": result.parent, "version": result.version,
              "promoted": result.promoted, "refused": result.refused,
              "duration_s": round(result.duration_s, 1), "metrics": result.metrics,
              "windows": getattr(result, "windows", {}),
              "monitor": {"decision": asdict(mon.decision), "new_batches": mon.new_batches}}
    write_text(out, json.dumps(record, indent=2, default=float))
    return out


# what `dvc repro` prints about itself, not worth a line of ours
_DVC_CHATTER = ("> ", "Updating lock file", "Generating lock file", "Use `dvc push`",
                "To track the changes with git", "git add ", "To enable auto staging",
                "dvc config core.autostage")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_ELAPSED = re.compile(r"\s*\(\d+ s\)$")  # a tarn stage's own "(N s)": ours replaces it


def dvc_line(line: str, stage: str) -> tuple[str, str | None]:
    """Pure: (the stage now running, what to show of ``line`` or None) for one line of
    `dvc repro` output. Stage starts and skips become "stage X ..."; what a stage prints (its
    steps, progress counts, heartbeats, summaries) comes through prefixed with the stage;
    DVC's own chatter, blank lines and table rules are dropped."""
    text = _ANSI.sub("", line).strip()
    if not text:
        return stage, None
    started = re.match(r"Running stage '([\w-]+)'", text)
    if started:
        return started.group(1), f"stage {started.group(1)}"
    skipped = re.match(r"Stage '([\w-]+)' (didn't change|is cached)", text)
    if skipped:
        return stage, (f"stage {skipped.group(1)} unchanged, skipped" if
                       skipped.group(2) == "didn't change" else
                       f"stage {skipped.group(1)} cached, outputs checked out")
    if text.startswith(_DVC_CHATTER) or "\u2500" <= text[0] <= "\u257f":  # box drawing
        return stage, None
    text = _ELAPSED.sub("", text)
    return stage, f"{stage}: {text}" if stage else text


def forward_dvc(lines: Iterable[str], step: Step) -> list[str]:
    """Show each line of a `dvc repro` stream through ``step`` as :func:`dvc_line` has it,
    as it arrives; return every line (stripped of its end), for an error message."""
    seen: list[str] = []
    stage = ""
    for line in lines:
        seen.append(line.rstrip())
        stage, shown = dvc_line(line, stage)
        if shown is not None:
            step(shown)
    return seen


def run_full(params: Params, root: Path, dvc: str | None = None,
             step: Step = no_steps) -> RetrainResult:
    """A fresh snapshot of the whole lake through the DVC pipeline (re-tuning if
    ``retrain.retune``), which registers a new version."""
    start = time.perf_counter()
    step("opening the model registry")
    reg = Registry(params.mlflow, root, params.promote.alias)
    parent = reg.production() or ""
    before = _registered(params, root)
    stages = [] if params.retrain.retune else ["-s", "snapshot", "etl", "prepare", "train",
                                                "evaluate"]
    import os
    import sys

    # the stages call `tarn`, so the venv's bin must be on PATH for them too; unbuffered, so
    # their lines (steps, progress, heartbeats) arrive as they are printed; their heartbeat
    # shorter than ours, so that theirs (which knows what runs) speaks first
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1",
           "TARN_HEARTBEAT_S": f"{0.7 * progress_output.HEARTBEAT_S:g}"}
    step(f"dvc repro {' '.join(stages) or '(every stage, re-tuning)'}")
    try:
        with subprocess.Popen([dvc or _dvc(), "repro", *stages], cwd=root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              bufsize=1) as proc:
            lines = forward_dvc(proc.stdout, step)  # stage names and the stages' own lines
        returncode = proc.returncode
    except FileNotFoundError as e:
        raise RetrainError("dvc is not installed here", "run `make venv`, or activate .venv") \
            from e
    if returncode != 0:
        tail = [x for x in lines if x.strip()][-5:]
        raise RetrainError("dvc repro failed: " + " | ".join(tail),
                           "fix the failing stage (see `dvc repro` output), then retry")
    version = _registered(params, root)  # the version this run's train stage registered,
    if version is None or version == before:  # not the newest one: that may be someone else's
        raise RetrainError("the pipeline registered no new version (nothing changed?)",
                           "add new batches, or run `dvc repro --force train`")
    return RetrainResult("full", parent, version, duration_s=time.perf_counter() - start)


def _registered(params: Params, root: Path) -> str | None:
    """The version the train stage last registered here (models/train.json)."""
    try:
        return str(load_train_info(params, root).version)
    except TarnError:
        return None


def run(params: Params, root: Path, mode: str = "auto", step: Step = no_steps,
        progress: Progress = silent) -> tuple:
    """Monitor, decide, retrain, promote. Returns (monitor result, retrain result | None).
    ``step`` hears of each piece of work, ``progress`` of the boosting rounds."""
    step("monitoring new data")
    mon = monitor.run(params, root, step=step)
    chosen = mon.decision.mode if mode == "auto" else mode
    if chosen == "none":
        return mon, None
    if chosen == "incremental" and any(s.schema_change for s in mon.sources):
        chosen = "full"  # a schema change cannot be learned incrementally
    step(f"{chosen} retraining")
    result = (run_incremental(params, root, mon.new_batches, step, progress)
              if chosen == "incremental" else run_full(params, root, step=step))
    if chosen == "full" and result.parent:  # the same old-vs-new summary as incremental
        # the new batches besides the test window (a moving window holds the newest out: they
        # are the test rows, not data the new version learned from)
        tested = split_batches(params, root, "test")
        fresh = [b for b in mon.new_batches if b not in tested]
        result.metrics = _compare_versions(params, root, result.parent, result.version,
                                           fresh, step)
        lineage = Registry(params.mlflow, root, params.promote.alias).lineage
        trained = {"candidate": lineage(result.version).batches,
                   "champion": lineage(result.parent).batches}
        result.windows = {"test": windows.gate_label(
            tested, len(load_split(params, root, "test").y), **trained)}
        if fresh:
            result.windows["new_data"] = windows.gate_label(fresh, None, **trained)
    result.forced, result.reason = mode != "auto", retrain_reason(mode, chosen, mon.decision)

    Registry(params.mlflow, root, params.promote.alias).record_retrain(
        result.version, RetrainRecord(result.mode, result.forced, result.reason[:400]))
    step(f"promoting version {result.version} through the gates")
    try:
        gate_rows, window = gate_split(params, root, result)
        promote(params, root, result.version, test=gate_rows, window=window,
                reason=result.reason[:400],
                step=step)
        result.promoted = True
    except PromotionRefused as e:
        result.refused = e.message
    write_report(params, root, mon, result)
    return mon, result
