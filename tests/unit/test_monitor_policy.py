"""The retraining decision per task, pure: figures in, decision out (no fits, no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tarn.config import ConfigError, params_from_dict
from tarn.core.predictions import log_columns
from tarn.core.task import Task
from tarn.lifecycle import retrain
from tarn.lifecycle.monitor import (
    SourceReport,
    decide,
    logged_scores,
    loss_verdict,
    prediction_columns,
)
from tests.support.project import repo_params_dict

BINARY = Task("binary", ("no", "yes"), 0.3)
MULTI = Task("multiclass", ("a", "b", "c"))
REGRESSION = Task("regression")


@pytest.fixture(scope="module")
def params():
    return params_from_dict(repo_params_dict())


@pytest.mark.parametrize(("loss", "current", "reference", "mode"), [
    ("logloss", 0.31, 0.30, "none"),  # +0.01 < 0.02
    ("logloss", 0.33, 0.30, "incremental"),  # +0.03
    ("logloss", 0.41, 0.30, "full"),  # +0.11 >= 0.10
    ("rmse", 10.5, 10.0, "none"),  # +5 % < 10 %
    ("rmse", 11.5, 10.0, "incremental"),  # +15 %
    ("rmse", 13.0, 10.0, "full"),  # +30 %
    ("rmse", 9.0, 10.0, "none"),  # better
    ("rmse", 0.1, 0.0, "full"),  # a perfect test fit, now wrong
    ("rmse", 0.0, 0.0, "none"),
])
def test_loss_verdict_per_task(params, loss, current, reference, mode):
    got, reason = loss_verdict(loss, current, reference, params.monitor)
    assert got == mode
    assert reason.startswith(loss)


def test_rmse_is_judged_relative_to_its_own_scale(params):
    # the same absolute rise of 5 units: large on a target of scale 10, small on one of 1000
    assert loss_verdict("rmse", 15.0, 10.0, params.monitor)[0] == "full"
    assert loss_verdict("rmse", 1005.0, 1000.0, params.monitor)[0] == "none"
    assert "+50.0%" in loss_verdict("rmse", 15.0, 10.0, params.monitor)[1]


def _source(**kw) -> SourceReport:
    return SourceReport("lake", **{"rows": 500, **kw})


def test_decide_on_quality_per_task(params):
    rmse = _source(loss="rmse", quality={"rmse": 12.0, "mae": 9.0, "r2": 0.5},
                   reference_loss=10.0)
    d = decide([rmse], params, streak=0)
    assert d.mode == "incremental" and d.reasons == ["lake: rmse 12 vs 10 on test (+20.0%)"]
    logloss = _source(loss="logloss", quality={"logloss": 0.5}, reference_loss=0.3)
    assert decide([logloss], params, streak=0).mode == "full"
    # a figure but no reference (a version without test figures): no quality verdict
    assert decide([_source(loss="rmse", quality={"rmse": 99.0})], params, 0).mode == "none"


def test_decide_names_the_drifted_outputs_per_task(params):
    cases = {
        ("predicted_proba",): "lake: the predicted probability drifted",
        ("predicted_value",): "lake: the predicted value drifted",
        ("predicted_class", "predicted_proba_b"):
            "lake: the predicted class mix and the probability of b drifted",
    }
    for drifted, reason in cases.items():
        d = decide([_source(prediction_drift=True, prediction_drifted=list(drifted))], params, 0)
        assert d.mode == "incremental" and d.reasons == [reason]
    few = _source(rows=10, prediction_drift=True, prediction_drifted=["predicted_value"])
    assert decide([few], params, 0).mode == "none"  # under monitor.min_rows
    again = _source(prediction_drift=True, prediction_drifted=["predicted_value"])
    d = decide([again], params, streak=params.monitor.max_incremental_in_a_row)
    assert d.mode == "full" and "in a row" in d.reasons[0]


def test_prediction_columns_per_task():
    cols, num, cat = prediction_columns(BINARY, np.array([0.2, 0.9]))
    assert num == ("predicted_proba",) and cat == () and list(cols) == ["predicted_proba"]
    cols, num, cat = prediction_columns(REGRESSION, np.array([3.5, 7.0]))
    assert num == ("predicted_value",) and cols["predicted_value"].tolist() == [3.5, 7.0]
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    cols, num, cat = prediction_columns(MULTI, proba)
    assert num == ("predicted_proba_a", "predicted_proba_b", "predicted_proba_c")
    assert cat == ("predicted_class",) and cols["predicted_class"].tolist() == ["a", "c"]
    assert cols["predicted_proba_c"].tolist() == [0.1, 0.8]


@pytest.mark.parametrize(("task", "scores"), [
    (BINARY, np.array([0.1, 0.8, 0.4])),
    (MULTI, np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])),
    (REGRESSION, np.array([1.5, -2.0, 30.0])),
])
def test_logged_scores_read_back_what_the_server_writes(task, scores):
    log = pd.DataFrame({"age": [1, 2, 3], **log_columns(task, scores), "model_version": "4"})
    np.testing.assert_allclose(logged_scores(task, log), scores)
    other = REGRESSION if task.classification else BINARY  # another task's columns: none
    assert logged_scores(other, log) is None


def test_incremental_versions_log_the_task_figures():
    q = {"rmse": 2.0, "mae": 1.5, "r2": 0.8, "mean_prediction": 10.0, "rows": 50}
    metrics = {"old": {"test": q, "new_data": {**q, "rmse": 3.0}},
               "new": {"test": {**q, "rmse": 1.9}, "new_data": {**q, "rmse": 2.5}}}
    flat = retrain.flat_metrics(REGRESSION, metrics)
    assert flat["test_rmse"] == 1.9 and flat["test_r2"] == 0.8
    assert flat["old_new_data_rmse"] == 3.0 and flat["new_new_data_rmse"] == 2.5
    assert "old_test_mean_prediction" not in flat  # comparisons: the task's metrics only
    multi = {"logloss": 0.2, "accuracy": 0.9, "f1_macro": 0.88, "rows": 10,
             "per_class": {"a": {"f1": 1.0}}}
    flat = retrain.flat_metrics(MULTI, {k: {"test": multi, "new_data": multi}
                                        for k in ("old", "new")})
    assert flat["test_logloss"] == 0.2 and "test_per_class" not in flat
    assert set(flat) >= {"new_test_accuracy", "old_new_data_f1_macro"}


def test_a_continuation_inherits_the_parents_card(params):
    schema = params.schema.model_copy(update={"name": "then"})
    card = {**Task("binary", ("low", "high"), 0.35, "income").card(),
            "schema": schema.model_dump(mode="json", by_alias=True),
            "prepare": {"exclude_features": ["fnlwgt"], "numeric_scaler": "none",
                        "max_categories": None}}
    task, got_schema, prepare = retrain.parent_contract(card, params)
    assert task.threshold == 0.35 and task.classes == ("low", "high")
    assert got_schema.name == "then" and prepare.exclude_features == ["fnlwgt"]
    task, got_schema, prepare = retrain.parent_contract({}, params)  # a version before cards
    assert task == Task("binary", ("0", "1"), 0.5, "target")
    assert got_schema is params.schema and prepare is params.prepare


def test_rmse_thresholds_must_be_ordered():
    raw = repo_params_dict()
    raw["monitor"]["rmse_increase_full"] = 0.05
    with pytest.raises(ConfigError, match=r"monitor.rmse_increase_full \(0.05\) is below"):
        params_from_dict(raw)
