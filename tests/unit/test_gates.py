"""lifecycle/gates.py: figures in, verdict out, per task (pure: no registry)."""

from __future__ import annotations

import pytest

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
    worse = judge(Figures("2", "1", 10.6, 10.0, task="regression"), cfg)
    assert worse.metric == "rmse" and not worse.metric_ok and not worse.passed
    assert "rmse (regression, lower is better) 10.6000 vs champion 10.0000" in \
        worse.failures()[0]
    ok = judge(Figures("2", "1", 10.4, 10.0, task="regression"), cfg)
    assert ok.passed
    r2 = PromoteConfig(metric="r2", tolerance=0.01)
    assert not judge(Figures("2", "1", 0.40, 0.42, task="regression"), r2).metric_ok
    assert judge(Figures("2", "1", 0.45, 0.42, task="regression"), r2).metric_ok


def test_the_fairness_gate_names_the_tasks_measure():
    cfg = PromoteConfig(fairness_features=["group"], max_demographic_parity_difference=0.2)
    g = judge(Figures("2", None, 0.1, None, {"group": 0.35}, task="multiclass"), cfg)
    assert not g.fairness_ok and g.metric_ok  # no champion: nothing to compare with
    assert g.failures() == ["largest demographic parity difference over classes on group "
                            "0.3500 > 0.2 (multiclass)"]
    assert judge(Figures("2", None, 0.1, None, {"group": 0.19}, task="multiclass"),
                 cfg).passed


def test_a_task_change_is_compared_on_no_metric_and_refused():
    problem = "task regression, the champion's binary: responses change shape"
    g = judge(Figures("2", "1", 50.0, None, {}, [problem], task="regression"),
              PromoteConfig())
    assert g.metric_ok and not g.schema_compatible and not g.passed
    assert g.as_dict()["task"] == "regression" and problem in g.failures()[0]


def test_a_declared_fairness_gate_that_cannot_be_measured_is_not_passed():
    cfg = PromoteConfig(fairness_features=["sex"], max_demographic_parity_difference=0.2)
    why = "fewer than two groups with bias.min_group_rows (30) test rows (female 25, male 42)"
    g = judge(Figures("1", None, 0.1, None, {"sex": None}, task="multiclass",
                      fairness_unmeasured={"sex": why}), cfg)
    assert not g.passed and not g.fairness_ok
    assert g.failures() == [f"fairness on sex not measurable: {why}"]
    # no fairness feature declared: the gate is skipped (and recorded so), not failed
    skipped = judge(Figures("1", None, 0.1, None, {}, task="multiclass"), PromoteConfig(), [])
    assert skipped.passed and skipped.fairness_features == [] and skipped.candidate_dpd is None


def test_every_sensitive_feature_is_gated_by_default_and_the_failure_names_it():
    """The issue's case: sex passes, the second sensitive feature's 0.174 must not."""
    figures = Figures("2", None, 0.3, None, {"sex": 0.09, "race": 0.174})
    g = judge(figures, PromoteConfig(max_demographic_parity_difference=0.15), ["sex", "race"])
    assert g.fairness_features == ["sex", "race"] and not g.passed
    assert g.failures() == ["demographic parity difference on race 0.1740 > 0.15 (binary)"]
    assert g.candidate_dpd == 0.174 and g.as_dict()["fairness"] == {"sex": 0.09, "race": 0.174}
    assert "sex 0.0900, race 0.1740 (max 0.15)" in g.fairness_summary()
    # a declared list gates only those; the others are still measured and shown
    only_sex = judge(figures, PromoteConfig(fairness_features=["sex"]), ["sex", "race"])
    assert only_sex.passed and "race 0.1740 (not gated)" in only_sex.fairness_summary()
    # a gated feature that was not measured at all is not passed either
    missing = judge(Figures("2", None, 0.3, None, {"sex": 0.01}),
                    PromoteConfig(fairness_features=["sex", "race"]))
    assert missing.failures() == ["fairness on race not measurable: no gap was measured"]


def test_the_old_single_fairness_key_is_refused_with_the_new_one_named():
    from tarn.config import params_from_dict
    from tarn.errors import ConfigError
    from tests.support.project import params_dict

    raw = params_dict()
    raw["promote"].pop("fairness_features", None)
    raw["promote"]["fairness_feature"] = "sex"
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw)
    assert "promote.fairness_features" in e.value.message and "[sex]" in e.value.message
    raw["promote"].pop("fairness_feature")
    params = params_from_dict(raw)
    assert params.promote.gated(params.schema.sensitive) == params.schema.sensitive
    raw["promote"]["fairness_features"] = ["nope"]
    with pytest.raises(ConfigError, match="promote.fairness_features: unknown columns"):
        params_from_dict(raw)
