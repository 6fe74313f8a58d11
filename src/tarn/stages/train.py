"""The train stage: refit the best configuration on train + validation, log the whole sklearn
Pipeline (normalization + the task's XGBoost estimator) to MLflow, register it with lineage tags
and its card (task, classes, decision threshold, contract).

The model with the other mitigation setting is fitted too (same hyperparameters) and saved
beside it, so the evaluate stage can show the cost and gain of mitigation side by side. A
regression target is not reweighed (there is no label to balance): the comparator is then the
model itself, and the run records why (``mitigation_note``).

With ``bias.mitigation: reweighing`` the reweighed model is registered only when it does no
harm on validation (``bias.mitigation_policy: compare``): the tune stage's validation scores of
both configurations give the task's fairness gap per sensitive feature and the loss of each,
and :func:`tarn.core.bias.decide_mitigation` says which one is registered and why (the tag
``tarn.mitigation_reason``, ``train.json``'s ``mitigation``, the evaluation report).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline

from tarn.config import Params, stage_view
from tarn.core import memory
from tarn.core.bias import MitigationCheck, MitigationDecision, decide_mitigation, reweighing_note
from tarn.core.catalog import (
    COMPARATOR_DIR,
    MODEL_DIR,
    STAGE_READS,
    TRAIN_JSON,
    SplitData,
    TrainInfo,
    TuneSummary,
    lineage_keys,
    load_best,
    load_manifest,
    load_split,
    load_validation_scores,
    split_batches,
    splits_digest,
)
from tarn.core.features import build_preprocessor, design_width, encode, to_model_frame
from tarn.core.files import atomic_dir, staged
from tarn.core.model import packaging, save_local, schema_hash
from tarn.core.progress import Progress, Step, no_steps, rounds_callback, silent
from tarn.core.tags import Lineage
from tarn.core.task import Task
from tarn.errors import TarnError

# params keys this stage reads (each is in its dvc.yaml params; tests check both)
# (declared in core/catalog.py's STAGE_READS, from which lineage hashes are derived)
READS = STAGE_READS["train"]
# keys that only say where work runs or lands: read, but not DVC params
AMBIENT = ("paths", "compute", "mlflow")



@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    version: str
    tags: dict
    mitigation_reason: str = ""  # why reweighing was kept or not ("" = not decided)


def model_params(best: TuneSummary, params: Params, mitigated: bool = True) -> dict:
    """XGBoost parameters of the final fit: the search's configuration (for the unmitigated
    model, when the search tuned the reweighed one, its unweighted refit's) and its rounds
    scaled to train+valid."""
    config, tuned_rounds = best.configuration(mitigated)
    rounds = max(1, round(tuned_rounds * params.train.refit_rounds_scale))
    task = Task.of(params.schema)
    return {**config, "n_estimators": rounds, "tree_method": "hist",
            "n_jobs": params.train.n_jobs, "random_state": params.tune.seed,
            "objective": task.objective, "eval_metric": task.eval_metric}


def fit_preprocessor(data: SplitData, params: Params,
                     progress: Progress = silent) -> tuple[ColumnTransformer, np.ndarray]:
    """Fit the normalization on the training rows and encode them (float32), after checking
    that the design matrix and one fit fit in memory."""
    pre = build_preprocessor(params.schema, params.prepare, data.X).fit(data.X, data.y)
    mem = memory.plan(len(data.y), 0, design_width(pre), 1, False,
                      params.compute.memory_fraction)
    memory.refuse_if_over(mem, pre, len(data.y))
    return pre, encode(pre, data.X, progress)


def fit_pipeline(data: SplitData, weight: np.ndarray | None, mparams: dict, params: Params,
                 client=None, progress: Progress = silent, label: str = "model",
                 encoded: tuple[ColumnTransformer, np.ndarray] | None = None) -> Pipeline:
    """Fit normalization (unless ``encoded`` gives it, fitted) then XGBoost (locally, or with
    xgboost.dask when a client is given) and assemble the fitted Pipeline that ships as one
    model."""
    from tarn.core.compute import fit_xgb_dask

    task = Task.of(params.schema)
    pre, z = encoded or fit_preprocessor(data, params, progress)
    if client is not None:  # rounds run on the workers: the caller shows a spinner
        clf = fit_xgb_dask(client, z, data.y, weight, mparams, task)
    else:
        n = mparams["n_estimators"]
        clf = task.estimator(**mparams, callbacks=[
            rounds_callback(progress, label, f"fitting {label}", n)])
        clf.fit(z, data.y, sample_weight=weight)
        clf.set_params(callbacks=None)  # not part of the model: skops would refuse it
    return Pipeline([("pre", pre), ("model", clf)])


def training_data(params: Params, root: Path) -> SplitData:
    parts = [load_split(params, root, s) for s in ("train", "valid")]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    weights = [p.weight for p in parts]
    w = np.concatenate(weights) if all(x is not None for x in weights) else None
    return SplitData(frame, to_model_frame(frame, params.schema, params.prepare),
                     np.concatenate([p.y for p in parts]), w)


def mitigation_check(params: Params, root: Path, best: TuneSummary,
                     task: Task) -> MitigationCheck | None:
    """The reweighed and the unmitigated configuration on the same validation rows (the tune
    stage's scores): the task's loss and fairness gap per sensitive feature, each model with
    the decision threshold it would ship with. None when the search compared nothing."""
    meta = best.mitigation_check
    scores = load_validation_scores(params, root) if meta else None
    if meta is None or scores is None:
        return None
    parts = [load_split(params, root, s) for s in meta.splits]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    y = np.concatenate([p.y for p in parts])
    rows = scores["row"].to_numpy()
    frame, y = frame.iloc[rows].reset_index(drop=True), y[rows]
    loss, gaps = {}, {}
    # every sensitive feature, and a reweighing feature the schema does not call sensitive
    features = list(dict.fromkeys([*params.schema.sensitive, *params.bias.reweighing_features]))
    for name in ("mitigated", "unmitigated"):
        cols = sorted((c for c in scores.columns if c.startswith(f"{name}_")),
                      key=lambda c: int(c.rsplit("_", 1)[1]))
        sc = scores[cols].to_numpy(dtype=np.float64)
        sc = task.from_matrix(sc)
        loss[name] = task.metric(task.loss, y, sc)
        fair = task.fairness(y, sc, frame, features, params.bias.min_group_rows)
        gaps[name] = {f: fair[f]["gap"] for f in features}
    return MitigationCheck(meta.validation, task.loss, loss["mitigated"], loss["unmitigated"],
                           gaps["mitigated"], gaps["unmitigated"], task.kind)


def run(params: Params, root: Path, progress: Progress = silent,
        step: Step = no_steps) -> TrainResult:
    params = stage_view(params, "train", READS, AMBIENT)
    from tarn.core.compute import dask_client
    from tarn.core.registry import Registry
    from tarn.core.tracking import git_commit, params_hash, split_inputs

    started = time.time()  # the run in MLflow covers the fits, not only the upload

    models = root / params.paths.models
    best = load_best(params, root)
    data = training_data(params, root)
    task = Task.of(params.schema, params.train.threshold)
    # why rows all weigh 1 ("" when reweighing weights exist): recorded with the run
    note = reweighing_note(task.kind, params.bias.reweighing_features)
    decision: MitigationDecision | None = None
    if params.bias.mitigation == "reweighing" and not note:
        step("comparing reweighing with no mitigation on validation")
        meta = best.mitigation_check
        if meta and meta.digest != splits_digest(params, root, meta.splits):
            # scores for other rows (a full retraining that did not re-tune): no comparison
            decision = MitigationDecision(
                True, "reweighing applied without a comparison on validation: the search's "
                "validation scores are for other rows (the data changed since `tarn tune`; "
                "retrain.retune: true compares again)", params.bias.mitigation_policy)
        else:
            decision = decide_mitigation(mitigation_check(params, root, best, task),
                                         params.bias.reweighing_features,
                                         params.bias.mitigation_policy,
                                         params.bias.max_quality_cost)
        step(decision.reason)
    mitigated = decision is not None and decision.applied
    mparams = model_params(best, params, mitigated)
    if data.weight is None:
        raise TarnError("reweighing weights missing beside the splits", "run `tarn prepare`")
    comparable = not note  # else both models would be one

    def fit_both(client=None) -> tuple[Pipeline, Pipeline]:
        names = ("model", "comparator")  # the comparator: the other mitigation setting
        if client is not None:
            step(f"fitting the model ({mparams['n_estimators']} rounds) with xgboost.dask")
        encoded = fit_preprocessor(data, params, progress)
        main = fit_pipeline(data, data.weight if mitigated else None,
                            model_params(best, params, mitigated), params, client, progress,
                            names[0], encoded)
        if not comparable:
            return main, main
        if client is not None:
            step("fitting the comparison model with xgboost.dask")
        other = fit_pipeline(data, None if mitigated else data.weight,
                             model_params(best, params, not mitigated), params, client,
                             progress, names[1], encoded)
        return main, other

    if params.train.distributed:
        step(f"connecting to the Dask cluster ({params.compute.scheduler or 'local'})")
        with dask_client(params.compute) as client:
            pipe, comparator = fit_both(client)
    else:
        pipe, comparator = fit_both()
    step("logging and registering the model")

    example = data.X.head(5)
    sig = packaging(params.schema, params.prepare, task, pipe, data.X.head(200))
    manifest = load_manifest(root / params.paths.snapshot)
    lineage = Lineage(
        kind="full", git_commit=git_commit(root), snapshot_hash=manifest["hash"],
        params_hash=params_hash(params, lineage_keys("train")),
        schema_hash=schema_hash(params.schema, params.prepare), train_rows=len(data.y),
        tune_run_id=best.parent_run_id, mitigation="reweighing" if mitigated else "none",
        mitigation_reason=decision.reason[:4000] if decision else "",
        batches=tuple(sorted(data.frame["batch"].unique())),
        test_batches=tuple(split_batches(params, root, "test")))
    registry = Registry(params.mlflow, root)
    logged = {**mparams, "task": task.kind, "mitigation": params.bias.mitigation,
              "mitigation_applied": mitigated,
              **({"mitigation_policy": params.bias.mitigation_policy} if decision else {}),
              **({"mitigation_note": note} if params.bias.mitigation == "reweighing" and note
                 else {})}
    reg = registry.register(pipe, lineage, "train", logged, {"train_rows": len(data.y)}, sig,
                            started=started, inputs=split_inputs(
                                params, root, {"train": "training", "valid": "training"}))
    tags = lineage.to_tags()
    info = TrainInfo(reg.run_id, reg.model_uri, reg.registered_model, reg.version, tags, mparams,
                     # which model was registered and why (None: no reweighing to decide on)
                     decision.as_dict() if decision else None)
    with atomic_dir(models / MODEL_DIR) as tmp:
        shutil.rmtree(tmp)
        save_local(pipe, tmp, sig, example)
    with atomic_dir(models / COMPARATOR_DIR) as tmp:
        shutil.rmtree(tmp)
        save_local(comparator, tmp, sig, example)
    with staged() as st:
        st.json(models / TRAIN_JSON, info.to_json())
    return TrainResult(reg.run_id, reg.model_uri, reg.version, tags,
                       decision.reason if decision else "")


