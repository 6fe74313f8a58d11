"""The evaluate stage: the registered model on the held-out test split.

The task and the decision threshold come from the model's own card (``task_of``), not from
params. Quality per task (:meth:`Task.quality`: binary logloss, ROC AUC, accuracy, F1, Brier,
calibration error; multiclass logloss, accuracy, macro F1 and per-class figures; regression
RMSE, MAE, R2), fairness per sensitive group (:meth:`Task.fairness`, fairlearn's MetricFrame),
the same for the model trained with the other mitigation setting so the cost and gain of
mitigation sit side by side (classification; a regression target is not reweighed), plots per
task (binary: ROC, PR, calibration, confusion; multiclass: confusion matrix and per-class
figures; regression: residuals vs prediction, predicted vs actual, residual histogram),
Evidently reports. Everything is written as DVC metrics/plots and logged to the registered
version's MLflow run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import Params, stage_view
from tarn.core import explain, reference, windows
from tarn.core import html_report as html
from tarn.core.bias import reweighing_note, signed_change
from tarn.core.catalog import (
    BIAS_HTML,
    COMPARATOR_DIR,
    EVALUATE_REPORT,
    EVALUATION_HTML,
    EVIDENTLY_DIR,
    FAIRNESS_REPORT,
    MODEL_DIR,
    PLOTS_DIR,
    STAGE_READS,
    EvaluateReport,
    TrainInfo,
    load_split,
    load_train_info,
    split_batches,
)
from tarn.core.features import encode
from tarn.core.files import atomic_dir, staged
from tarn.core.model import load_local, task_of
from tarn.core.progress import Step, no_steps
from tarn.core.tags import RunTag
from tarn.core.task import Task

# params keys this stage reads (each is in its dvc.yaml params; tests check both); the
# decision threshold is the model's own (its card), so train.threshold is not among them
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["evaluate"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "mlflow")



@dataclass(frozen=True)
class EvaluateResult:
    metrics: dict
    comparison: dict


def _plots(task: Task, y: np.ndarray, scores: np.ndarray, bins: int, out: Path) -> None:
    """Every plot file dvc.yaml declares (:data:`DVC_PLOTS`, whatever the task) and the task's
    own (``Task.plots``)."""
    task.plots(y, scores, bins, out)


def compare(main: dict, other: dict, mitigated: bool, features: list[str],
            task: Task | None = None) -> dict:
    """Mitigation's cost (the task's loss; binary also AUC) and its effect on fairness, as
    signed differences with minus without mitigation: ``gap_change_<f>`` (the fairness gap;
    positive = mitigation widened it; absent when not measurable), binary also
    ``eod_change_<f>`` (equalized odds). Never a ratio: a change of a gap near zero is
    "+0.0137", not "-776 %"."""
    task = task or Task("binary", ("0", "1"))
    with_m, without_m = (main, other) if mitigated else (other, main)
    qa, qb = with_m["quality"], without_m["quality"]
    out = {f"{task.loss}_cost": qa[task.loss] - qb[task.loss], **task.mitigation_costs(qa, qb)}
    for f in features:
        fa, fb = with_m["fairness"][f], without_m["fairness"][f]
        if fa["gap"] is not None and fb["gap"] is not None:  # None: too few rows per group
            out[f"gap_change_{f}"] = fa["gap"] - fb["gap"]
        out.update(task.fairness_changes(f, fa, fb))
    return out


def fairness_changes(comparison: dict, features: list[str]) -> dict[str, str]:
    """Per feature, the fairness gap without -> with mitigation as a signed difference, e.g.
    "0.0018 -> 0.0155 (+0.0137, worse)" (:attr:`Task.GAP_NAME` names the gap)."""
    a, b = comparison["without_mitigation"], comparison["with_mitigation"]
    return {f: signed_change(a["fairness"][f]["gap"], b["fairness"][f]["gap"])
            for f in features}


def flat_figures(quality: dict, fairness: dict) -> dict:
    """The figures of evaluate.json's ``model``: quality, then ``<feature>_<figure>`` per
    sensitive feature (groups stay in fairness.json)."""
    return {**quality, **{f"{f}_{k}": v for f, d in fairness.items() for k, v in d.items()
                          if k not in ("groups", "small_groups", "min_group_rows")}}


def run(params: Params, root: Path, step: Step = no_steps) -> EvaluateResult:
    """Evaluate; ``step`` hears of each piece of work that can take seconds."""
    params = stage_view(params, "evaluate", READS, AMBIENT)
    models = root / params.paths.models
    reports = root / params.paths.reports
    train_info = load_train_info(params, root)
    step("reading the test split")
    test = load_split(params, root, "test")
    cfg = params.evaluate
    sensitive = params.schema.sensitive
    task = task_of(models / MODEL_DIR)  # the model's own task, classes and threshold
    results = {}
    scores = {}
    pipes = {}
    for name, folder in (("model", MODEL_DIR), ("comparator", COMPARATOR_DIR)):
        step(f"loading the {name}")
        pipe = pipes[name] = load_local(models / folder)
        step(f"scoring the test split ({len(test.X):,} rows) with the {name}")
        s = task.scores(pipe, test.X)
        scores[name] = s
        step(f"quality and fairness figures of the {name}")
        results[name] = {"quality": task.quality(test.y, s, cfg.calibration_bins),
                         "fairness": task.fairness(test.y, s, test.frame, sensitive,
                                                   params.bias.min_group_rows)}
    note = reweighing_note(task.kind, params.bias.reweighing_features)
    # which model train registered: its decision (reweighing kept or not, checked on
    # validation); a train.json from before the check: the declared setting
    decision = train_info.mitigation
    mitigated = (bool(decision["applied"]) if decision else
                 params.bias.mitigation == "reweighing" and not note and
                 not train_info.mitigation_recorded)
    comparison = {
        "task": task.kind,
        "with_mitigation" if mitigated else "without_mitigation": results["model"],
        "without_mitigation" if mitigated else "with_mitigation": results["comparator"],
        # no comparison when nothing was reweighed: the two models are one
        "effect": {} if note else compare(results["model"], results["comparator"], mitigated,
                                          sensitive, task),
        "mitigation_note": note,
        # train's decision: applied, reason, the validation figures it was based on
        "mitigation_decision": decision,
    }
    comparison["fairness_changes"] = {} if note else fairness_changes(comparison, sensitive)
    # like with like: the unmitigated model against the default references, same features
    unmitigated = results["comparator" if mitigated else "model"]["quality"]
    references = _references(params, root, task, pipes["model"].named_steps["pre"], test,
                             step)
    ref_verdict = reference.verdict(task, unmitigated[task.loss], references,
                                    "the test split (the unmitigated model)")
    comparison["reference_test"] = reference.as_dict(references, task)
    trained = split_batches(params, root, "train") + split_batches(params, root, "valid")
    comparison["test_window"] = windows.label(split_batches(params, root, "test"),
                                              len(test.y), trained)
    comparison["reference_verdict"] = ref_verdict
    step(f"explanations (TreeSHAP) on up to {explain.SUMMARY_ROWS:,} test rows")
    comparison["explanations"] = explain.summary(
        pipes["model"], task, test.X, test.frame, load_split(params, root, "train").frame,
        sensitive, {c.name for c in params.schema.columns if c.numeric},
        threads=os.cpu_count() or 1)
    main = results["model"]
    flat = flat_figures(main["quality"], main["fairness"])
    plots_dir = reports / PLOTS_DIR
    plots_dir.mkdir(parents=True, exist_ok=True)
    step("plots")
    _plots(task, test.y, scores["model"], cfg.calibration_bins, plots_dir)
    evidently_paths: dict[str, str] = {}
    with atomic_dir(reports / EVIDENTLY_DIR) as ev:
        if cfg.evidently:
            evidently_paths = _evidently(params, root, test, task, scores["model"], ev, step)
    step("writing evaluate.json, fairness.json and the HTML report")
    with staged() as st:
        st.json(reports / EVALUATE_REPORT, EvaluateReport(
            task.kind, flat, comparison["effect"], comparison["fairness_changes"],
            None if not decision else EvaluateReport.mitigation_entry(decision["applied"],
                                                                      decision["reason"]),
            {k: unmitigated[k] for k in task.metrics}, comparison["reference_test"], ref_verdict,
            comparison["test_window"], comparison["explanations"], train_info.version).to_json())
        st.json(reports / FAIRNESS_REPORT, comparison)
        st.text(reports / EVALUATION_HTML,
                render_html(comparison, mitigated, train_info, evidently_paths, task))
    step(f"logging to MLflow (run {train_info.run_id})")
    _log_to_mlflow(params, root, train_info, flat, comparison, reports)
    return EvaluateResult(flat, comparison)


def _references(params: Params, root: Path, task: Task, pre, test,
                step: Step = no_steps) -> list[reference.ReferenceScore]:
    """The default reference models fitted on train + valid (the registered model's rows)
    through the registered model's own fitted preprocessor, scored on the test split."""
    parts = [load_split(params, root, s) for s in ("train", "valid")]
    X = pd.concat([p_.X for p_ in parts], ignore_index=True)
    y = np.concatenate([p_.y for p_ in parts])
    step(f"encoding {len(X):,} training rows for the default reference models")
    z, zt = encode(pre, X), encode(pre, test.X)
    return reference.score_references(
        task, z, y, zt, test.y, os.cpu_count() or 1, 0,
        on_fit=lambda name: step(f"fitting the reference: {reference.REFERENCES[name]} "
                                 f"({len(X):,} rows)"))


def _evidently(params: Params, root: Path, test, task: Task, scores: np.ndarray,
               out: Path, step: Step = no_steps) -> dict[str, str]:
    from tarn.core import evidently_reports as er

    cur = test.frame.assign(**er.model_columns(task, scores))
    paths = {}
    kind = "classification" if task.classification else "regression"
    step(f"Evidently {kind} quality report")
    er.save(er.quality(cur, params.schema, params.prepare, task), out, "quality")
    paths[f"{kind} quality"] = "evidently/quality.html"
    step("Evidently data drift report (train -> test)")
    reference = load_split(params, root, "train").frame
    er.save(er.drift(test.frame, reference, params.schema, params.prepare), out, "drift")
    paths["data drift (train -> test)"] = "evidently/drift.html"
    for feat in params.schema.sensitive:
        # a group at a time (per_group skips small ones), so each report is a step
        for value, part in cur.groupby(feat, dropna=False, observed=True):
            step(f"Evidently quality report for {feat} = {value} ({len(part):,} rows)")
            for group, p in er.per_group(part, feat, params.schema, params.prepare, out,
                                         task=task).items():
                paths[f"quality for {feat} = {group}"] = f"evidently/{p.name}"
    return paths


def _log_to_mlflow(params: Params, root: Path, train_info: TrainInfo, flat: dict,
                   comparison: dict, reports: Path) -> None:
    """Test figures, the test split (a dataset) and the reports, on the registered version's
    run: the run page shows what the model was measured on and the pages that say so; the
    version gets its readable test figure."""
    import mlflow

    from tarn.core.registry import Registry, logged_model_id
    from tarn.core.tracking import connect, log_inputs, quiet_mlflow, split_inputs

    run_id = train_info.run_id
    connect(params.mlflow, root)
    with quiet_mlflow():
        client = mlflow.MlflowClient()
        test = split_inputs(params, root, {"test": "test"})
        log_inputs(run_id, test)
        # the logged model's figures name the dataset they were measured on (MLflow 3)
        model_id = logged_model_id(train_info.model_uri)
        tests = {f"test_{k}": float(v) for k, v in flat.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)}
        for k, v in tests.items():
            client.log_metric(run_id, k, v, dataset_name=test[0].name,
                              dataset_digest=test[0].digest, model_id=model_id)
        if train_info.version:
            Registry(params.mlflow, root).record_test(str(train_info.version), tests)
        for k, v in comparison["effect"].items():
            client.log_metric(run_id, f"mitigation_{k}", float(v))
        for name, figures in comparison.get("reference_test", {}).items():
            for k, v in figures.items():
                client.log_metric(run_id, f"test_reference_{name}_{k}", float(v))
        if comparison.get("reference_verdict"):
            client.set_tag(run_id, RunTag.REFERENCE_VERDICT, comparison["reference_verdict"])
        if comparison["mitigation_note"]:
            client.set_tag(run_id, "mitigation_note", comparison["mitigation_note"])
        if comparison.get("mitigation_decision"):
            client.set_tag(run_id, "mitigation_reason",
                           comparison["mitigation_decision"]["reason"][:4000])
        for path, dest in ((reports / EVALUATION_HTML, None), (reports / BIAS_HTML, None),
                           (reports / FAIRNESS_REPORT, None), (reports / PLOTS_DIR, PLOTS_DIR),
                           (reports / EVIDENTLY_DIR, EVIDENTLY_DIR)):
            if path.is_dir():
                client.log_artifacts(run_id, str(path), dest)
            elif path.is_file():
                client.log_artifact(run_id, str(path))


def render_html(comparison: dict, mitigated: bool, train_info: TrainInfo,
                evidently_paths: dict[str, str], task: Task | None = None) -> str:
    task = task or Task("binary", ("0", "1"))
    a, b = comparison["with_mitigation"], comparison["without_mitigation"]
    keys = task.HTML_QUALITY
    note = comparison.get("mitigation_note", "")
    sections = [
        f"<p>Registered model <b>{html.esc(train_info.registered_model)}</b> version "
        f"<b>{html.esc(train_info.version)}</b> ({task.kind}, trained "
        f"{'with' if mitigated else 'without'} reweighing), on the held-out test split.</p>",
    ]
    if comparison.get("test_window"):
        sections.append(f"<p>Test split: {html.esc(comparison['test_window'])}.</p>")
    decision = comparison.get("mitigation_decision")
    if decision:  # which model was registered, and why (checked on validation)
        sections.append(f"<p><b>{'Reweighed' if decision['applied'] else 'Unmitigated'} model "
                        f"registered</b>: {html.esc(decision['reason'])}.</p>")
    if note:  # one model: no with/without columns
        sections += [f"<p class='note'>{html.esc(note)}</p>", "<h2>Quality</h2>",
                     html.table(["metric", "value"], [[k, a["quality"][k]] for k in keys])]
    else:
        sections += ["<h2>Quality: with vs without mitigation</h2>",
                     html.table(["metric", "with reweighing", "without", "difference"],
                                [[k, a["quality"][k], b["quality"][k],
                                  a["quality"][k] - b["quality"][k]] for k in keys])]
    if comparison.get("reference_test"):
        tuned = comparison["without_mitigation"]["quality"]
        metrics = [task.loss, *(m for m in task.metrics if m != task.loss)]
        rows = [["tarn, tuned (without mitigation)", *(tuned[m] for m in metrics), ""]]
        rows += [[reference.REFERENCES[n], *(f.get(m, float("nan")) for m in metrics),
                  f.get("fit_s", float("nan"))]
                 for n, f in comparison["reference_test"].items()]
        sections += ["<h2>Against default models (same split, same features)</h2>",
                     f"<p><b>{html.esc(comparison.get('reference_verdict', ''))}</b></p>",
                     html.table(["model", *metrics, "fit seconds"], rows)]
    main = comparison["with_mitigation" if mitigated else "without_mitigation"]
    if isinstance(main["quality"].get("per_class"), dict):  # a task with classes to list
        sections += ["<h2>Per class</h2>", html.table(
            ["class", "precision", "recall", "F1", "support", "predicted share"],
            [[c, v["precision"], v["recall"], v["f1"], v["support"], v["predicted_share"]]
             for c, v in main["quality"]["per_class"].items()])]
    sections.append(f"<h2>Fairness</h2><p class='note'>gap = {task.GAP_MEANING} (the "
                    "number the fairness gate reads).</p>")
    cols = task.HTML_GROUPS
    for feat in a["fairness"]:
        fa, fb = a["fairness"][feat], b["fairness"][feat]
        sections.append(f"<h3>{html.esc(feat)}</h3>")
        if comparison.get("fairness_changes", {}).get(feat):
            sections.append(f"<p>{html.esc(task.GAP_NAME)} without -> with reweighing: "
                            f"{html.esc(comparison['fairness_changes'][feat])} (test split)</p>")
        figures = [k for k, v in fa.items() if k != "groups" and isinstance(v, (int, float))]
        sections.append(html.table(["", "value"], [[k.replace("_", " "), fa[k]]
                                                   for k in figures]) if note else
                        html.table(["", "with reweighing", "without"],
                                   [[k.replace("_", " "), fa[k], fb[k]] for k in figures]))
        # the first figure without mitigation beside them, when it is a selection rate
        without = [k for k, _ in cols[:1] if k == "selection_rate"]
        rows = [[g, v["count"], *(v[k] for k, _ in cols),
                 *(fb["groups"].get(g, {}).get(k, float("nan")) for k in without)]
                for g, v in fa["groups"].items()]
        heads = [h for _, h in cols] + [f"{h} (without)" for k, h in cols[:1] if k in without]
        sections.append(html.table(["group", "rows", *heads], rows))
        if any(f"share_{c}" in v for v in fa["groups"].values() for c in task.classes):
            shares = [[g, *(v[f"share_{c}"] for c in task.classes)]
                      for g, v in fa["groups"].items()]
            sections.append(html.table(["group", *(f"predicted {c}" for c in task.classes)],
                                       shares))
    sections += explain.html_sections(comparison.get("explanations"))
    sections.append("<h2>Plots</h2><img src='plots/evaluation.png' alt='evaluation plots'>")
    if evidently_paths:
        sections.append("<h2>Evidently reports</h2><ul>" + "".join(
            f"<li><a href='{html.esc(p)}'>{html.esc(k)}</a></li>"
            for k, p in evidently_paths.items()) + "</ul>")
    return html.page("tarn: model evaluation", sections)
