"""The loop's account of itself, pure: verdicts under the minimum sample, drift in words, the
page headline, a forced retraining's reason (no fits, no MLflow)."""

from __future__ import annotations

import pytest

from tarn.config import params_from_dict
from tarn.lifecycle.monitor import (
    BatchReport,
    Decision,
    MonitorResult,
    SourceReport,
    decide,
    drift_verdict,
    not_enough_data,
    page_headline,
)
from tarn.lifecycle.retrain import retrain_reason
from tests.support.project import repo_params_dict


@pytest.fixture(scope="module")
def params():
    return params_from_dict(repo_params_dict())


def test_a_tiny_sample_is_not_enough_data_not_a_verdict(params):
    cfg = params.monitor
    one = SourceReport("log", rows=1, verdict=not_enough_data(1, cfg))
    assert one.verdict == f"not enough data (1 rows < monitor.min_rows {cfg.min_rows})"
    d = decide([one], params, 0)
    assert d.mode == "none"
    assert d.reasons == [f"no threshold crossed (log: not enough data (1 rows < "
                         f"monitor.min_rows {cfg.min_rows}))"]
    # drift figures on too few rows never decide, whatever they say
    loud = SourceReport("log", rows=cfg.min_rows - 1, drift_share=1.0, drifted=["a"],
                        prediction_drift=True, prediction_drifted=["predicted_proba"])
    assert decide([loud], params, 0).mode == "none"


def test_drift_in_words_uses_the_decision_thresholds(params):
    cfg = params.monitor
    assert drift_verdict(0.0, [], cfg) == "no drift, 0% of features (< 15%)"
    assert drift_verdict(0.2, ["age"], cfg) == "drift, 20% of features (>= 15%): age"
    assert drift_verdict(0.6, ["a", "b"], cfg).startswith("severe drift, 60% of features")


def test_the_page_headline_states_the_decision_and_each_batch(params):
    lake = SourceReport("lake", rows=600, drift_share=0.2, drifted=["age"],
                        verdict=drift_verdict(0.2, ["age"], params.monitor),
                        batches=[BatchReport("0004-a", 300, "no drift, 7% of features"),
                                 BatchReport("0005-b", 20, not_enough_data(20, params.monitor))])
    d = decide([lake], params, 0)
    res = MonitorResult("1", ["0004-a", "0005-b"], [lake], d)
    title, lines = page_headline(res, lake, params.monitor)
    assert title == "tarn's decision: incremental"
    assert lines[0] == "lake (600 rows): drift, 20% of features (>= 15%): age"
    assert "0005-b (20 rows): not enough data (20 rows < monitor.min_rows 100)" in lines
    assert any(x.startswith("reason: lake: 20% of features drifted") for x in lines)


def test_a_forced_mode_is_recorded_as_forced():
    none = Decision("none", ["no threshold crossed (lake: 600 rows, 7% drifted)"])
    reason = retrain_reason("full", "full", none)
    assert reason.startswith("full retraining forced by --mode full (the monitor decided none")
    assert "no threshold crossed" in reason
    incr = Decision("incremental", ["lake: 20% of features drifted"])
    assert retrain_reason("auto", "incremental", incr) == (
        "incremental retraining: lake: 20% of features drifted")
    assert "schema change" in retrain_reason("auto", "full", incr)


@pytest.mark.parametrize(("mode", "new_data_label"), [
    ("incremental", "new data: the new data's held-out rows"),
    ("full", "new data: the new batches, which it trained on"),
])
def test_both_modes_print_the_same_old_vs_new_table(mode, new_data_label):
    from tarn.cli import _print_comparison
    from tarn.core.progress import console
    from tarn.lifecycle.retrain import RetrainResult

    q = {"logloss": 0.30, "roc_auc": 0.90, "accuracy": 0.85, "rows": 100}
    res = RetrainResult(mode, "1", "2", metrics={
        "old": {"test": q, "new_data": {**q, "logloss": 0.40}},
        "new": {"test": {**q, "logloss": 0.29}, "new_data": {**q, "logloss": 0.33}}})
    width, console.width = console.width, 200  # one label, one line
    try:
        with console.capture() as out:
            _print_comparison(res)
    finally:
        console.width = width
    text = out.get()
    assert "old vs new model (version 1 vs 2)" in text
    assert "test: the test split" in text and new_data_label in text
    assert "-0.07" in text and "-0.01" in text  # the change, signed
    res.metrics = {"old": {"test": q}, "new": {"test": q}}  # no new batches: test rows only
    with console.capture() as out:
        _print_comparison(res)
    assert "test: the test split" in out.get() and "new data" not in out.get()
