"""core/task.py on tiny hand-made arrays: every figure can be checked by hand (no fits)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from tarn.config import METRICS_BY_TASK, params_from_dict
from tarn.core.task import Task
from tests.support.project import repo_params_dict

BIN = Task("binary", ("no", "yes"), 0.5, "y")
MULTI = Task("multiclass", ("a", "b", "c"), 0.5, "y")
REG = Task("regression", (), 0.5, "y")

Y_BIN = np.array([0, 1, 1, 0])
P_BIN = np.array([0.2, 0.8, 0.6, 0.4])
Y_MULTI = np.array([0, 1, 2, 2])
P_MULTI = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]])
Y_REG = np.array([1.0, 2.0, 3.0, 4.0])
P_REG = np.array([1.0, 2.0, 3.0, 6.0])


def test_binary_metrics_by_hand():
    assert BIN.metric("logloss", Y_BIN, P_BIN) == pytest.approx(
        -(2 * math.log(0.8) + 2 * math.log(0.6)) / 4)
    assert BIN.metric("roc_auc", Y_BIN, P_BIN) == 1.0
    assert BIN.metric("accuracy", Y_BIN, P_BIN) == 1.0


def test_the_threshold_decides_binary_labels():
    strict = Task("binary", ("no", "yes"), 0.7, "y")
    assert BIN.decide(P_BIN).tolist() == [0, 1, 1, 0]
    assert strict.decide(P_BIN).tolist() == [0, 1, 0, 0]
    assert strict.metric("accuracy", Y_BIN, P_BIN) == 0.75
    # class 1: precision 1, recall 1/2 -> 2/3; class 0: precision 2/3, recall 1 -> 0.8
    assert strict.metric("f1_macro", Y_BIN, P_BIN) == pytest.approx((2 / 3 + 0.8) / 2)
    q = strict.quality(Y_BIN, P_BIN, bins=2)
    assert q["threshold"] == 0.7 and q["positive_rate_predicted"] == 0.25
    assert strict.label_names(strict.decide(P_BIN)) == ["no", "yes", "no", "no"]


def test_multiclass_metrics_confusion_and_per_class_by_hand():
    assert MULTI.decide(P_MULTI).tolist() == [0, 1, 2, 0]
    assert MULTI.metric("accuracy", Y_MULTI, P_MULTI) == 0.75
    assert MULTI.metric("logloss", Y_MULTI, P_MULTI) == pytest.approx(
        -(math.log(0.7) + math.log(0.8) + math.log(0.6) + math.log(0.2)) / 4)
    # f1 per class: a 2/3 (p .5, r 1), b 1, c 2/3 (p 1, r .5)
    assert MULTI.metric("f1_macro", Y_MULTI, P_MULTI) == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert MULTI.confusion(Y_MULTI, P_MULTI).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    per = MULTI.quality(Y_MULTI, P_MULTI)["per_class"]
    assert per["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                        "support": 1, "predicted_share": 0.5}
    assert per["c"]["recall"] == 0.5 and per["c"]["support"] == 2


def test_regression_metrics_by_hand():
    assert REG.decide(P_REG).tolist() == P_REG.tolist()  # the value is the answer
    assert REG.metric("rmse", Y_REG, P_REG) == pytest.approx(1.0)  # sqrt(4 / 4)
    assert REG.metric("mae", Y_REG, P_REG) == pytest.approx(0.5)
    assert REG.metric("r2", Y_REG, P_REG) == pytest.approx(1 - 4 / 5)  # SS_tot = 5
    q = REG.quality(Y_REG, P_REG)
    assert q["mean_prediction"] == 3.0 and q["mean_target"] == 2.5 and q["rows"] == 4


@pytest.mark.parametrize("task", [BIN, MULTI, REG])
def test_quality_reports_every_metric_of_the_task(task):
    y, s = {"binary": (Y_BIN, P_BIN), "multiclass": (Y_MULTI, P_MULTI),
            "regression": (Y_REG, P_REG)}[task.kind]
    q = task.quality(y, s)
    assert set(METRICS_BY_TASK[task.kind]) <= set(q)
    assert task.primary == task.loss == METRICS_BY_TASK[task.kind][0]
    with pytest.raises(ValueError, match="unknown metric"):
        task.metric("bogus", y, s)


def test_higher_is_better_by_metric():
    assert Task.higher_is_better("roc_auc") and Task.higher_is_better("r2")
    assert not Task.higher_is_better("logloss") and not Task.higher_is_better("rmse")


def test_fairness_gap_per_task_by_hand():
    frame = pd.DataFrame({"g": ["a", "a", "b", None]})
    # binary: rows 0, 1 in a (both predicted 1), row 2 in b, row 3 missing (predicted 0)
    p = np.array([0.9, 0.8, 0.1, 0.2])
    fb = BIN.fairness(Y_BIN, p, frame, ["g"])["g"]
    assert fb["gap"] == fb["demographic_parity_difference"] == 1.0  # a: 1.0, b and missing: 0
    assert set(fb["groups"]) == {"a", "b", "<missing>"}
    assert fb["groups"]["a"]["selection_rate"] == 1.0
    two = pd.DataFrame({"g": ["a", "a", "b", "b"]})
    # multiclass: predicted [0,1,2,0]; shares a: (.5,.5,0) b: (.5,0,.5) -> gaps 0, .5, .5
    fm = MULTI.fairness(Y_MULTI, P_MULTI, two, ["g"])["g"]
    assert fm["demographic_parity_difference_by_class"] == {"a": 0.0, "b": 0.5, "c": 0.5}
    assert fm["gap"] == 0.5
    assert fm["groups"]["b"]["share_c"] == 0.5
    # regression: mean prediction a 1.5, b 4.5 -> 3 / std(y) (sqrt(1.25))
    fr = REG.fairness(Y_REG, P_REG, two, ["g"])["g"]
    assert fr["gap"] == pytest.approx(3 / math.sqrt(1.25))
    assert fr["groups"]["b"]["mean_prediction"] == 4.5
    assert fr["mae_difference"] == pytest.approx(1.0)  # a: 0, b: 1


def test_small_groups_are_shown_but_do_not_make_the_gap():
    # a: 40 rows, 25 % predicted 1; b: 40 rows, 35 %; c: 3 rows, all predicted 1
    g = ["a"] * 40 + ["b"] * 40 + ["c"] * 3
    p = np.array([0.9] * 10 + [0.1] * 30 + [0.9] * 14 + [0.1] * 26 + [0.9] * 3)
    y = (p > 0.5).astype(int)
    f = BIN.fairness(y, p, pd.DataFrame({"g": g}), ["g"], min_group_rows=30)["g"]
    assert f["gap"] == pytest.approx(0.10)  # b - a; c's 1.0 would have made it 0.75
    assert f["demographic_parity_difference"] == pytest.approx(0.75)  # fairlearn: every group
    assert f["small_groups"] == {"c": 3} and f["groups"]["c"]["selection_rate"] == 1.0
    only = BIN.fairness(y[40:], p[40:], pd.DataFrame({"g": g[40:]}), ["g"], 30)["g"]
    assert only["gap"] is None  # one group left: not measurable (the gate says so)


def test_card_round_trip_and_old_versions():
    for task in (BIN, MULTI, REG, Task("binary", ("lo", "hi"), 0.35, "income")):
        assert Task.from_card(task.card()) == task
    old = Task.from_card({})  # a version from before cards: binary, threshold 0.5
    assert (old.kind, old.classes, old.threshold) == ("binary", ("0", "1"), 0.5)
    with pytest.raises(ValueError, match="unknown task"):
        Task.from_card({"task": "ranking"})


def test_task_of_a_schema_and_its_estimator():
    raw = repo_params_dict()
    params = params_from_dict(raw)
    t = Task.of(params.schema, 0.3)
    assert t.kind == "binary" and t.threshold == 0.3 and t.n_classes == 2
    assert t.target == params.schema.target.name
    est = MULTI.estimator(n_estimators=3)
    assert type(est).__name__ == "XGBClassifier"
    assert est.get_params()["objective"] == "multi:softprob"
    assert est.get_params()["eval_metric"] == "mlogloss"
    reg = REG.estimator(n_estimators=3)
    assert type(reg).__name__ == "XGBRegressor"
    assert (reg.get_params()["objective"], reg.get_params()["eval_metric"]) == (
        "reg:squarederror", "rmse")


class _Scorer:
    """Stands in for a fitted Pipeline: fixed outputs, so the shapes are checked by hand."""

    def predict_proba(self, X):
        return np.tile([0.2, 0.3, 0.5], (len(X), 1))

    def predict(self, X):
        return np.arange(len(X), dtype=np.float32)


def test_scores_shape_per_task():
    X = np.zeros((2, 1))
    assert BIN.scores(_Scorer(), X).tolist() == [0.3, 0.3]  # P(class 1)
    assert MULTI.scores(_Scorer(), X).shape == (2, 3)
    r = REG.scores(_Scorer(), X)
    assert r.dtype == np.float64 and r.tolist() == [0.0, 1.0]
