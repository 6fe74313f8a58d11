"""Multiclass (iris) and regression (diabetes) projects through the real stages: prepare,
tune, train, evaluate, promote, against a real SQLite MLflow store."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from tarn.core.registry import PromotionRefused, Registry
from tarn.core.tracking import connect
from tarn.lifecycle import promote
from tarn.stages import etl, evaluate, prepare, snapshot, train, tune
from tests.support.project import set_param
from tests.support.tasks import task_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def project(request, tmp_path_factory):
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    params = task_project(root, kind)
    snapshot.run(params, root)
    etl.run(params, root)
    prep = prepare.run(params, root)
    tuned = tune.run(params, root)
    trained = train.run(params, root)
    evaluated = evaluate.run(params, root)
    return kind, params, root, prep, tuned, trained, evaluated


def _reports(root, name: str) -> dict:
    return json.loads((root / "reports" / name).read_text())


def test_prepare_measures_bias_for_the_task(project):
    kind, params, root, prep, *_ = project
    feat = params.schema.sensitive[0]
    f = prep.bias["splits"]["train"]["features"][feat]
    if kind == "multiclass":  # reweighed: class shares equal across groups after weighting
        assert f["gap"] > 0.2 and prep.bias["mitigation_applied"]
        after = prep.bias["train_reweighed"]["features"][feat]
        assert after["statistical_parity_difference"] == pytest.approx(0, abs=1e-9)
        assert set(_reports(root, "prepare.json")["class_shares"]["train"]) == {
            "setosa", "versicolor", "virginica"}
    else:  # not reweighed, and it says why
        assert f["gap"] == f["mean_gap"] > 0 and not prep.bias["mitigation_applied"]
        assert prep.bias["reweighing"]["note"] == \
            "reweighing applies to class labels; regression target"
        w = pd.read_parquet(root / "data" / "prepared" / "train_weights.parquet")["weight"]
        assert (w == 1.0).all()
        assert "reweighing applies to class labels" in (root / "reports" / "bias.html").read_text()


def test_tuning_minimizes_the_tasks_loss(project):
    kind, params, root, _, tuned, *_ = project
    loss = "val_logloss" if kind == "multiclass" else "val_rmse"
    best = json.loads((root / "models" / "best_params.json").read_text())
    assert best["loss"] == loss and best["task"] == kind
    assert best[loss] == min(r.loss for r in tuned.trials if r.status == "ok" and not r.stopped)
    other = "val_accuracy" if kind == "multiclass" else "val_r2"
    assert other in _reports(root, "tune.json") and "val_auc" not in best
    connect(params.mlflow, root)
    parent = mlflow.MlflowClient().get_run(tuned.parent_run_id)
    assert f"best_{loss}" in parent.data.metrics and parent.data.params["task"] == kind


def test_the_registered_version_carries_its_task(project):
    kind, params, root, _, _, trained, _ = project
    reg = Registry(params.mlflow, root)
    card = reg.card(trained.version)
    assert card["task"] == kind
    assert card["classes"] == (["setosa", "versicolor", "virginica"] if kind == "multiclass"
                               else [])
    run_params = reg.client.get_run(reg.version(trained.version).run_id).data.params
    assert run_params["task"] == kind
    if kind == "regression":
        assert run_params["mitigation_note"] == \
            "reweighing applies to class labels; regression target"
        assert trained.tags["tarn.mitigation"] == "none"


def test_evaluation_figures_and_plots_per_task(project):
    kind, params, root, *_, ev = project
    m = _reports(root, "evaluate.json")["model"]
    fair = _reports(root, "fairness.json")
    plots = root / "reports" / "plots"
    feat = params.schema.sensitive[0]
    if kind == "multiclass":
        assert m["accuracy"] > 0.85 and 0 < m["logloss"] < 0.5 and m["f1_macro"] > 0.85
        assert set(m["per_class"]) == {"setosa", "versicolor", "virginica"}
        assert sum(v["support"] for v in m["per_class"].values()) == m["rows"]
        confusion = pd.read_csv(plots / "confusion.csv")
        assert set(confusion["actual"]) == {"setosa", "versicolor", "virginica"}
        assert len(pd.read_csv(plots / "per_class.csv")) == 3
        assert "Per class" in (root / "reports" / "evaluation.html").read_text()
        assert fair["effect"]["logloss_cost"] == pytest.approx(
            fair["with_mitigation"]["quality"]["logloss"]
            - fair["without_mitigation"]["quality"]["logloss"])
    else:
        assert m["r2"] > 0.3 and m["rmse"] > m["mae"] > 0
        residuals = pd.read_csv(plots / "residuals.csv")
        assert len(residuals) == m["rows"]
        assert (residuals["actual"] - residuals["predicted"]).sub(
            residuals["residual"]).abs().max() < 1e-6
        assert fair["effect"] == {} and fair["mitigation_note"]
        assert pd.read_csv(plots / "roc.csv").empty  # declared by dvc.yaml, no curve here
    # the registered model: reweighed (multiclass) unless the check on validation found harm
    applied = kind == "multiclass" and fair["mitigation_decision"]["applied"]
    assert m[f"{feat}_gap"] == fair["with_mitigation" if applied
                                    else "without_mitigation"]["fairness"][feat]["gap"]
    assert (plots / "evaluation.png").stat().st_size > 10_000
    assert (root / "reports" / "evidently" / "quality.html").stat().st_size > 0
    connect(params.mlflow, root)
    run = mlflow.MlflowClient().get_run(_reports(root, "../models/train.json")["run_id"])
    loss = "logloss" if kind == "multiclass" else "rmse"
    assert run.data.metrics[f"test_{loss}"] == pytest.approx(m[loss])


def test_promotion_gates_use_the_tasks_metric_and_fairness_gap(project):
    kind, params, root, *_ = project
    feat = params.schema.sensitive[0]
    gap = _reports(root, "evaluate.json")["model"][f"{feat}_gap"]
    set_param(root, "promote.max_demographic_parity_difference", round(gap - 0.01, 4))
    from tarn.config import load_params

    strict = load_params(root / "params.yaml", env={})
    with pytest.raises(PromotionRefused) as e:
        promote.promote(strict, root, latest=True)
    assert f"on {feat}" in e.value.message and f"({kind})" in e.value.message
    assert e.value.gates.candidate_dpd == pytest.approx(gap)
    set_param(root, "promote.max_demographic_parity_difference", round(gap + 0.05, 4))
    lenient = load_params(root / "params.yaml", env={})
    first = promote.promote(lenient, root, latest=True)
    loss = "logloss" if kind == "multiclass" else "rmse"
    assert first.gates.passed and first.gates.metric == loss and first.gates.task == kind
    # a second version of the same configuration: compared with the champion on the loss
    second = train.run(lenient, root).version
    p = promote.promote(lenient, root, latest=True)
    assert p.version == second and p.previous == first.version
    assert p.gates.champion_metric == pytest.approx(p.gates.candidate_metric, rel=1e-6)


def test_distributed_fit_matches_the_local_one(project):
    from tarn.core.catalog import load_split
    from tarn.core.compute import dask_client
    from tarn.core.task import Task
    from tarn.stages.train import fit_pipeline

    kind, params, root, *_ = project
    task = Task.of(params.schema)
    data, test = load_split(params, root, "train"), load_split(params, root, "test")
    mp = {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.2, "n_jobs": 1,
          "tree_method": "hist"}
    local = fit_pipeline(data, None, mp, params)
    with dask_client(params.compute, n_workers=2) as client:
        dist = fit_pipeline(data, None, mp, params, client)
    assert type(dist[-1]).__name__ == ("XGBRegressor" if kind == "regression"
                                       else "XGBClassifier")
    a, b = task.scores(local, test.X), task.scores(dist, test.X)
    assert a.shape == b.shape == ((len(test.y), 3) if kind == "multiclass" else (len(test.y),))
    assert task.metric(task.loss, test.y, b) == pytest.approx(
        task.metric(task.loss, test.y, a), rel=1e-3)
