"""How the search spends its budget, on a real small lake and a real MLflow store: successive
halving on rows, a deadline that ends fits in flight, the too-small budget refusal, and the
default references beside the tuned model."""

from __future__ import annotations

import mlflow
import pytest

from tarn.core.tracking import connect
from tarn.errors import TarnError
from tarn.stages import tune
from tests.support.project import tracked_project

pytestmark = pytest.mark.slow

# 2 x 1,500 train rows -> 2,400 after the validation split: rungs of 266, 800 and 2,400 rows
LADDER = {"tune.max_evals": 9, "tune.min_fidelity_rows": 250, "tune.fidelity_factor": 3,
          "tune.timeout_s": 600, "tune.stop_rule": "none", "tune.cv_folds": 0}


@pytest.fixture(scope="module")
def laddered(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder")
    params = tracked_project(root, lake=(1500, 300), **LADDER)
    return params, root, tune.run(params, root)


def test_configurations_climb_the_rungs_and_the_chosen_one_saw_every_row(laddered):
    params, root, res = laddered
    rungs = res.best.fits_per_rung
    assert [r["rows"] for r in rungs] == [266, 800, 2400]
    # asynchronous successive halving: the best third of each rung goes on
    assert [r["fits"] for r in rungs] == [9, 3, 1]
    assert res.best.rows == 2400 and res.best.stop_reason == "max_evals"
    top = [t for t in res.trials if t.rung == 2]
    assert res.best.trial == top[0].tid
    promoted = {t.tid for t in res.trials if t.rung == 1}
    first = sorted((t for t in res.trials if t.rung == 0), key=lambda t: t.loss)
    assert top[0].tid in promoted and promoted <= {t.tid for t in first[:len(promoted) + 2]}
    # every fit is an MLflow child run, tagged with its configuration, with its row count
    connect(params.mlflow, root)
    kids = mlflow.search_runs(experiment_names=[params.mlflow.experiment],
                              filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(kids) == 13 and sorted(kids["metrics.rows"].astype(int)) == sorted(
        t.rows for t in res.trials)
    # the search tuned the reweighed model (bias.mitigation: reweighing): the unmitigated
    # model's configuration is the top rung's fit refitted without the weights
    assert res.best.unmitigated["trial"] == top[0].tid


def test_the_references_are_scored_on_the_same_validation_rows(laddered):
    _, _, res = laddered
    refs = res.best.reference_val
    assert set(refs) == {"hist_gradient_boosting", "xgboost_defaults"}
    assert all(0 < r["logloss"] < 1 for r in refs.values())
    better = res.best.figures["val_logloss"] < min(r["logloss"] for r in refs.values())
    assert ("beats" in res.best.reference_verdict) == better
    assert ("did NOT beat" in res.best.reference_verdict) == (not better)


def test_the_deadline_ends_the_search_and_a_budget_too_small_for_one_fit_is_refused(tmp_path):
    params = tracked_project(tmp_path, lake=(1500, 300), **{**LADDER, "tune.timeout_s": 0.001})
    with pytest.raises(TarnError) as e:
        tune.run(params, tmp_path)
    assert "too small for one fit" in e.value.message
    assert "set tune.timeout_s to at least" in e.value.message


def test_a_search_stopped_by_its_budget_says_so(tmp_path):
    params = tracked_project(tmp_path, lake=(1500, 300), **{
        **LADDER, "tune.timeout_s": 15, "tune.max_evals": 10_000})
    res = tune.run(params, tmp_path)
    assert res.best.stop_reason == "time budget" and res.best.budget_s == 15
    assert res.best.n_trials < 10_000
    # fits in flight at the deadline end at their next round, not at early stopping
    assert res.best.duration_s < 15 + 10


def test_a_small_table_is_judged_by_cross_validation_and_so_are_the_references(tmp_path):
    """A 70-row validation split picks by luck: under tune.cv_max_rows every fit (and every
    reference) is scored on the pooled out-of-fold predictions of train + valid."""
    params = tracked_project(tmp_path, lake=(300, 100), **{"tune.max_evals": 3})
    res = tune.run(params, tmp_path)
    rows = res.best.rows
    assert res.best.validation == f"5-fold cross-validation on {rows:,} rows"
    assert rows == 600  # train + valid: every labelled row outside the test batch
    assert res.best.fits_per_rung == [{"rows": 600, "fits": 3}]
    assert "5-fold cross-validation" in res.best.reference_verdict
    assert all(0 < r["logloss"] < 1 for r in res.best.reference_val.values())
    assert res.best.best_iteration >= 0 and all(t.clean for t in res.trials)
