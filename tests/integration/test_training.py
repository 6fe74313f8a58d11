"""tune -> train -> evaluate with a small budget against a real SQLite MLflow store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tarn.config import Params
from tarn.core.catalog import load_split
from tarn.core.model import load_local
from tarn.core.tags import Lineage
from tarn.core.tracking import TrackingError, connect
from tarn.stages import evaluate, train, tune
from tests.support.project import tracked_project

pytestmark = pytest.mark.slow
STARTED: dict[str, float] = {}  # when a stage began (wall clock), set by the fixture

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    params = tracked_project(root)
    tuned = tune.run(params, root)
    STARTED["train"] = time.time()
    trained = train.run(params, root)
    evaluated = evaluate.run(params, root)
    return params, root, tuned, trained, evaluated


def client(params: Params, root: Path) -> mlflow.MlflowClient:
    connect(params.mlflow, root)
    return mlflow.MlflowClient()


def test_every_trial_is_a_child_run(trained):
    params, root, tuned, _, _ = trained
    c = client(params, root)
    exp = c.get_experiment_by_name(params.mlflow.experiment)
    children = c.search_runs([exp.experiment_id],
                             f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'")
    assert len(children) == 4 == len(tuned.trials)
    for run in children:
        assert "val_logloss" in run.data.metrics and "best_iteration" in run.data.metrics
        assert "learning_rate" in run.data.params and "duration_s" in run.data.metrics
        assert run.info.status == "FINISHED"
    parent = c.get_run(tuned.parent_run_id)
    assert parent.data.metrics["n_trials"] == 4
    assert parent.data.metrics["best_val_logloss"] == min(r.data.metrics["val_logloss"]
                                                          for r in children)
    best = json.loads((root / "models" / "best_params.json").read_text())
    assert best["parent_run_id"] == tuned.parent_run_id
    assert best["val_logloss"] == pytest.approx(parent.data.metrics["best_val_logloss"])


def test_registered_version_predicts_on_raw_rows(trained, monkeypatch):
    """MLflow's own pyfunc flavor serves it (what `mlflow models serve` loads): allowed here
    for a version this test trained itself; tarn's processes switch that loader off."""
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    params, root, _, res, _ = trained
    client(params, root)
    model = mlflow.pyfunc.load_model(f"models:/tarn-test/{res.version}")
    test = pd.read_parquet(root / "data" / "prepared" / "test.parquet")
    # rows with missing values first (Int64 ints, None for missing strings), then plain ones
    rows = pd.concat([test[test["workclass"].isna()].head(10), test[test["workclass"].notna()]])
    raw = rows.drop(columns=["income", "batch"]).head(50)
    assert raw["workclass"].isna().sum() == 10
    proba = np.asarray(model.predict(raw))
    assert proba.shape == (50, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    local = load_local(root / "models" / "model")
    split = load_split(params, root, "test")
    assert np.allclose(local.predict_proba(split.X.loc[raw.index]), proba, atol=1e-6)
    assert [type(s).__name__ for _, s in local.steps] == ["ColumnTransformer", "XGBClassifier"]


def test_version_carries_lineage(trained):
    params, root, tuned, res, _ = trained
    c = client(params, root)
    mv = c.get_model_version("tarn-test", res.version)
    manifest = json.loads((root / "data" / "snapshot" / "manifest.json").read_text())
    rows = sum(len(pd.read_parquet(root / "data" / "prepared" / f"{s}.parquet"))
               for s in ("train", "valid"))
    lineage = Lineage.from_tags(dict(mv.tags))
    assert lineage.snapshot_hash == manifest["hash"]
    assert lineage.tune_run_id == tuned.parent_run_id
    assert lineage.train_rows == rows
    assert len(lineage.params_hash) == 64 and lineage.git_commit
    assert mv.run_id == res.run_id
    # a page a person reads: the readable tags, one JSON lineage tag, nothing else yet
    assert set(mv.tags) == {"tarn.task", "tarn.test", "tarn.data", "tarn_lineage"}
    assert mv.tags["tarn.task"] == "binary" and mv.tags["tarn.test"].startswith("roc_auc 0.")
    assert mv.tags["tarn.data"] == f"{manifest['hash'][:12]} ({rows:,} rows)"
    # the run keeps the flat tags, and the card as Markdown
    run = c.get_run(res.run_id)
    assert run.data.tags["tarn.train_rows"] == str(rows)
    card = (Path(c.download_artifacts(res.run_id, "model_card.md"))).read_text()
    assert card.startswith("# Model card") and "| train_rows |" in card


def _datasets(c: mlflow.MlflowClient, run_id: str) -> dict[str, tuple[str, int]]:
    """name -> (context, rows) of the datasets a run logged."""
    out = {}
    for d in c.get_run(run_id).inputs.dataset_inputs:
        ctx = [t.value for t in d.tags if t.key == "mlflow.data.context"]
        out[d.dataset.name] = (ctx[0], json.loads(d.dataset.profile)["num_rows"])
    return out


def test_runs_show_the_data_they_read_and_last_as_long_as_the_work(trained):
    params, root, tuned, res, _ = trained
    c = client(params, root)
    manifest = json.loads((root / "data" / "snapshot" / "manifest.json").read_text())
    n = {s: len(pd.read_parquet(root / "data" / "prepared" / f"{s}.parquet"))
         for s in ("train", "valid", "test")}
    at = f"@ snapshot {manifest['hash'][:8]}"
    assert _datasets(c, tuned.parent_run_id) == {f"train {at}": ("training", n["train"]),
                                                 f"valid {at}": ("validation", n["valid"])}
    # the version's run: what it learned from (train + valid), what evaluate measured on
    assert _datasets(c, res.run_id) == {f"train {at}": ("training", n["train"]),
                                        f"valid {at}": ("training", n["valid"]),
                                        f"test {at}": ("test", n["test"])}
    ds = c.get_run(res.run_id).inputs.dataset_inputs[0].dataset
    assert json.loads(ds.source)["uri"].endswith(f"data/snapshot?manifest={manifest['hash']}")
    # durations cover the work: the tune run its trials, the train run its fits
    tune_run = c.get_run(tuned.parent_run_id).info
    kids = c.search_runs([tune_run.experiment_id],
                         f"tags.mlflow.parentRunId = '{tuned.parent_run_id}'")
    assert tune_run.start_time <= min(k.info.start_time for k in kids)
    assert tune_run.end_time >= max(k.info.end_time for k in kids)
    train_run = c.get_run(res.run_id).info
    registered = int(c.get_model_version("tarn-test", res.version).creation_timestamp)
    # the train run starts as the stage does (before loading and the fits), not at the upload:
    # in the first half of the stage, whatever the machine's speed
    start = train_run.start_time / 1000
    assert STARTED["train"] - 1 <= start <= (STARTED["train"] + registered / 1000) / 2
    assert train_run.start_time < registered <= train_run.end_time + 1000


def test_evaluation_outputs_and_mlflow_artifacts(trained):
    params, root, _, res, ev = trained
    m = json.loads((root / "reports" / "evaluate.json").read_text())["model"]
    for k in ("logloss", "roc_auc", "accuracy", "f1", "brier", "calibration_error",
              "sex_demographic_parity_difference", "race_equalized_odds_difference"):
        assert k in m
    assert 0.5 < m["roc_auc"] <= 1
    fair = json.loads((root / "reports" / "fairness.json").read_text())
    assert {"task", "with_mitigation", "without_mitigation", "effect", "mitigation_note",
            "reference_test", "reference_verdict", "mitigation_decision",
            "fairness_changes"} <= set(fair)
    # the default references on the test split, beside the unmitigated model
    assert set(fair["reference_test"]) == {"hist_gradient_boosting", "xgboost_defaults"}
    assert "the test split (the unmitigated model)" in fair["reference_verdict"]
    assert fair["task"] == "binary" and fair["mitigation_note"] == ""
    # the registered model: reweighed, unless the check on validation found it did harm
    registered = ("with_mitigation" if fair["mitigation_decision"]["applied"]
                  else "without_mitigation")
    assert fair[registered]["fairness"]["sex"]["gap"] == pytest.approx(
        m["sex_demographic_parity_difference"])
    groups = fair[registered]["fairness"]["sex"]["groups"]
    test = pd.read_parquet(root / "data" / "prepared" / "test.parquet")
    assert groups["Female"]["count"] == (test["sex"] == "Female").sum()
    for f in ("roc.csv", "pr.csv", "calibration.csv", "confusion.csv", "evaluation.png"):
        assert (root / "reports" / "plots" / f).stat().st_size > 0
    ev_dir = root / "reports" / "evidently"
    assert {"quality.html", "drift.html", "quality_sex_female.html"} <= {
        p.name for p in ev_dir.iterdir()}
    c = client(params, root)
    run = c.get_run(res.run_id)
    assert run.data.metrics["test_roc_auc"] == pytest.approx(m["roc_auc"])
    arts = {a.path for a in c.list_artifacts(res.run_id)}
    assert {"evaluation.html", "bias.html", "evidently", "plots", "model_card.md"} <= arts


def test_group_metrics_match_a_hand_computation(trained):
    params, root, _, _, ev = trained
    split = load_split(params, root, "test")
    proba = load_local(root / "models" / "model").predict_proba(split.X)[:, 1]
    pred = proba >= params.train.threshold
    female = (split.frame["sex"] == "Female").to_numpy()
    y = split.y
    tpr = (pred & female & (y == 1)).sum() / (female & (y == 1)).sum()
    registered = ("with_mitigation" if ev.comparison["mitigation_decision"]["applied"]
                  else "without_mitigation")
    got = ev.comparison[registered]["fairness"]["sex"]["groups"]["Female"]
    assert got["tpr"] == pytest.approx(tpr)
    assert got["selection_rate"] == pytest.approx(pred[female].mean())


def test_parallel_tuning_runs_as_many_trials_as_sequential(tmp_path):
    params = tracked_project(tmp_path, **{"tune.parallelism": 2})
    res = tune.run(params, tmp_path)
    assert len(res.trials) == 4 and all(t.status == "ok" for t in res.trials)
    c = client(params, tmp_path)
    exp = c.get_experiment_by_name(params.mlflow.experiment)
    kids = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(kids) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in res.trials}) == 4


# holdout validation (tune.cv_folds: 0): cross-validated small tables have no stop rule
STOPPING = {"tune.max_evals": 8, "tune.n_estimators": 120, "tune.early_stopping_rounds": 10,
            "tune.cv_folds": 0,
            "tune.stop_rule": "quantile", "tune.stop_min_trials": 2,
            "tune.stop_warmup_rounds": 10, "tune.stop_interval": 5,
            "tune.space": {"learning_rate": {"dist": "loguniform", "low": 0.17, "high": 0.5},
                           "max_depth": {"dist": "quniform", "low": 2, "high": 6, "q": 1}}}


def stopped_trials_in_mlflow(params, root: Path, res) -> tuple[list, list]:
    c = client(params, root)
    exp = c.get_experiment_by_name(params.mlflow.experiment)
    kids = c.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    return kids, [k for k in kids if "tarn.stopped_early" in k.data.tags]


def test_trials_behind_the_others_stop_early_and_are_kept_with_the_reason(tmp_path):
    params = tracked_project(tmp_path, **STOPPING)
    res = tune.run(params, tmp_path)
    stopped = [t for t in res.trials if t.stopped]
    assert len(res.trials) == 8 and all(t.status == "ok" for t in res.trials)
    assert stopped, [(t.params, t.rounds, t.loss) for t in res.trials]
    for t in stopped:  # stopped on a checked round, before its cap
        assert t.rounds < 120 and t.rounds % 5 == 0 and t.rounds >= 10
    kids, tagged = stopped_trials_in_mlflow(params, tmp_path, res)
    assert len(kids) == 8 and all(k.info.status == "FINISHED" for k in kids)
    assert sorted(int(k.data.tags["tarn.trial"]) for k in tagged) == [t.tid for t in stopped]
    for k in tagged:
        assert k.data.tags["tarn.stopped_early"].startswith("round ")
        assert "quantile" in k.data.tags["tarn.stopped_early"]
        assert k.data.metrics["rounds"] < 120 and "val_logloss" in k.data.metrics
    best = json.loads((tmp_path / "models" / "best_params.json").read_text())
    assert best["n_stopped_early"] == len(stopped)
    assert not res.trials[best["trial"]].stopped  # the chosen trial ran to its end
    parent = client(params, tmp_path).get_run(res.parent_run_id)
    assert parent.data.metrics["n_stopped_early"] == len(stopped)
    assert json.loads((tmp_path / "reports" / "tune.json").read_text())["n_stopped_early"] \
        == len(stopped)


def test_the_stop_rule_works_on_parallel_trials_and_can_be_turned_off(tmp_path):
    params = tracked_project(tmp_path, **{**STOPPING, "tune.parallelism": 2})
    res = tune.run(params, tmp_path)
    assert len(res.trials) == 8 and all(t.status == "ok" for t in res.trials)
    kids, tagged = stopped_trials_in_mlflow(params, tmp_path, res)
    assert len(kids) == 8 and len(tagged) == sum(1 for t in res.trials if t.stopped)
    (tmp_path / "off").mkdir()
    off = tracked_project(tmp_path / "off", **{**STOPPING, "tune.stop_rule": "none"})
    res = tune.run(off, tmp_path / "off")
    assert not any(t.stopped for t in res.trials)
    assert stopped_trials_in_mlflow(off, tmp_path / "off", res)[1] == []


def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    params = tracked_project(tmp_path, **{
        "tune.max_evals": 6,
        "tune.space": {"learning_rate": {"dist": "uniform", "low": 0.25, "high": 0.3},
                       "max_bin": {"dist": "choice", "options": [1, 64]}}})  # max_bin=1 fails
    res = tune.run(params, tmp_path)
    failed = [t for t in res.trials if t.status == "fail"]
    assert failed and len(res.trials) == 6 and res.best.params["max_bin"] == 64
    c = client(params, tmp_path)
    exp = c.get_experiment_by_name(params.mlflow.experiment)
    bad = c.search_runs([exp.experiment_id], "attributes.status = 'FAILED'")
    assert len(bad) == len(failed) and "max_bin" in bad[0].data.tags["tarn.error"]


def test_distributed_training_with_xgboost_dask(tmp_path):
    params = tracked_project(tmp_path, **{"train.distributed": True})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "best_params.json").write_text(json.dumps(
        {"params": {"max_depth": 3, "learning_rate": 0.2}, "best_iteration": 9,
         "parent_run_id": "none"}))
    res = train.run(params, tmp_path)
    model = load_local(tmp_path / "models" / "model")
    split = load_split(params, tmp_path, "test")
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(split.y, model.predict_proba(split.X)[:, 1]) > 0.8
    assert model.named_steps["model"].get_booster().num_boosted_rounds() == 11
    assert res.version == "1"


def test_unusable_tracking_store_is_a_clear_error_and_registers_nothing(tmp_path):
    params = tracked_project(tmp_path, **{"mlflow.tracking_uri": "sqlite:////proc/no/mlflow.db"})
    with pytest.raises(TrackingError) as e:
        tune.run(params, tmp_path)
    assert "sqlite:////proc/no/mlflow.db" in e.value.message
    assert "MLFLOW_TRACKING_URI" in e.value.hint
    assert not (tmp_path / "models" / "best_params.json").exists()
