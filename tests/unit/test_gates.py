"""lifecycle/gates.py: figures in, verdict out, per task (pure: no registry)."""

from __future__ import annotations

from tarn.config import PromoteConfig
from tarn.lifecycle.gates import Figures, gate_metric, judge


def test_the_gate_metric_is_the_tasks_loss_unless_named():
    assert gate_metric(PromoteConfig(metric=""), "regression") == "rmse"
    assert gate_metric(PromoteConfig(metric=""), "multiclass") == "logloss"
    assert gate_metric(PromoteConfig(metric="r2"), "regression") == "r2"
    # a metric of another task (params.yaml for binary, a regression candidate): its loss
    assert gate_metric(PromoteConfig(metric="roc_auc"), "regression") == "rmse"


def test_lower_is_better_for_a_loss_higher_for_r2():
    cfg = PromoteConfig(metric="", tolerance=0.5)
    worse = judge(Figures("2", "1", 10.6, 10.0, None, task="regression"), cfg)
    assert worse.metric == "rmse" and not worse.metric_ok and not worse.passed
    assert "rmse (regression, lower is better) 10.6000 vs champion 10.0000" in \
        worse.failures()[0]
    ok = judge(Figures("2", "1", 10.4, 10.0, None, task="regression"), cfg)
    assert ok.passed
    r2 = PromoteConfig(metric="r2", tolerance=0.01)
    assert not judge(Figures("2", "1", 0.40, 0.42, None, task="regression"), r2).metric_ok
    assert judge(Figures("2", "1", 0.45, 0.42, None, task="regression"), r2).metric_ok


def test_the_fairness_gate_names_the_tasks_measure():
    cfg = PromoteConfig(fairness_feature="group", max_demographic_parity_difference=0.2)
    g = judge(Figures("2", None, 0.1, None, 0.35, task="multiclass"), cfg)
    assert not g.fairness_ok and g.metric_ok  # no champion: nothing to compare with
    assert g.failures() == ["largest demographic parity difference over classes on group "
                            "0.3500 > 0.2 (multiclass)"]
    assert judge(Figures("2", None, 0.1, None, 0.19, task="multiclass"), cfg).passed


def test_a_task_change_is_compared_on_no_metric_and_refused():
    problem = "task regression, the champion's binary: responses change shape"
    g = judge(Figures("2", "1", 50.0, None, None, [problem], task="regression"),
              PromoteConfig())
    assert g.metric_ok and not g.schema_compatible and not g.passed
    assert g.as_dict()["task"] == "regression" and problem in g.failures()[0]


def test_a_declared_fairness_gate_that_cannot_be_measured_is_not_passed():
    cfg = PromoteConfig(fairness_feature="sex", max_demographic_parity_difference=0.2)
    why = "fewer than two groups with bias.min_group_rows (30) test rows (female 25, male 42)"
    g = judge(Figures("1", None, 0.1, None, None, task="multiclass",
                      fairness_unmeasured=why), cfg)
    assert not g.passed and not g.fairness_ok
    assert g.failures() == [f"fairness on sex not measurable: {why}"]
    # no fairness feature declared: the gate is skipped (and recorded so), not failed
    assert judge(Figures("1", None, 0.1, None, None, task="multiclass"),
                 PromoteConfig()).passed
