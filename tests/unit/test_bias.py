import numpy as np
import pandas as pd
import pytest

from tarn.config import BiasConfig, params_from_dict
from tarn.core import bias
from tests.support.project import repo_params_dict

SCHEMA = params_from_dict(repo_params_dict()).schema


def toy() -> pd.DataFrame:
    # 6 men (4 positive), 4 women (1 positive)
    return pd.DataFrame({"sex": ["Male"] * 6 + ["Female"] * 4,
                         "y": [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]})


def test_reweighing_matches_kamiran_calders_by_hand():
    t = bias.reweighing_table(toy(), ["sex"], "y").set_index(["group", "label"])["weight"]
    # P(M)=.6 P(F)=.4 P(y=1)=.5 ; P(M,1)=.4 P(M,0)=.2 P(F,1)=.1 P(F,0)=.3
    assert t[("Male", 1)] == pytest.approx(0.6 * 0.5 / 0.4)
    assert t[("Male", 0)] == pytest.approx(0.6 * 0.5 / 0.2)
    assert t[("Female", 1)] == pytest.approx(0.4 * 0.5 / 0.1)
    assert t[("Female", 0)] == pytest.approx(0.4 * 0.5 / 0.3)


def test_reweighing_equalises_weighted_positive_rates():
    df = toy()
    w = bias.apply_weights(df, bias.reweighing_table(df, ["sex"], "y"), ["sex"], "y")
    for g in ("Male", "Female"):
        m = df["sex"] == g
        assert np.average(df.loc[m, "y"], weights=w[m]) == pytest.approx(0.5)
    assert w.sum() == pytest.approx(len(df))  # total mass is preserved


def test_unseen_group_gets_weight_one():
    df = toy()
    t = bias.reweighing_table(df, ["sex"], "y")
    other = pd.DataFrame({"sex": ["Other"], "y": [1]})
    assert bias.apply_weights(other, t, ["sex"], "y").tolist() == [1.0]


def test_group_table_disparate_impact_and_missingness():
    df = toy().assign(occupation=[None, "a", "a", "a", "a", "a", None, None, "b", "b"])
    t = bias.group_table(df, "sex", "y", ["occupation"], privileged="Male").set_index("group")
    assert t.loc["Female", "disparate_impact"] == pytest.approx((1 / 4) / (4 / 6))
    assert t.loc["Male", "disparate_impact"] == pytest.approx(1.0)
    assert t.loc["Female", "share"] == pytest.approx(0.4)
    assert t.loc["Female", "missing_rate"] == pytest.approx(0.5)
    assert t.loc["Male", "missing_by_column"] == {"occupation": pytest.approx(1 / 6)}


def test_data_bias_covers_every_sensitive_feature():
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({c: [None] * n for c in SCHEMA.feature_names})
    df["sex"] = rng.choice(["Male", "Female"], n)
    df["race"] = rng.choice(["White", "Black"], n)
    df["income"] = (rng.random(n) < np.where(df["sex"] == "Male", 0.4, 0.1)).astype(int)
    rep = bias.data_bias(df, SCHEMA, BiasConfig(privileged={"sex": "Male"}))
    assert set(rep["features"]) == {"sex", "race"}
    sex = rep["features"]["sex"]
    rates = {g: v["positive_rate"] for g, v in sex["groups"].items()}
    assert sex["disparate_impact_min"] == pytest.approx(rates["Female"] / rates["Male"])
    assert sex["passes_four_fifths"] is False


def _schema(task_kind: str):
    from tests.support.project import params_dict
    from tests.support.tasks import task_params

    return params_from_dict(params_dict(task_params(task_kind)))


def test_multiclass_reweighing_makes_class_shares_equal_across_groups():
    params = _schema("multiclass")
    # group A: classes 0,0,0,1,2 ; group B: 0,1,1,2,2,2 (every cell seen)
    df = pd.DataFrame({c: [1.0] * 11 for c in params.schema.feature_names})
    df["group"] = ["A"] * 5 + ["B"] * 6
    df["species"] = [0, 0, 0, 1, 2, 0, 1, 1, 2, 2, 2]
    t = bias.reweighing_table(df, ["group"], "species").set_index(["group", "label"])["weight"]
    # P(A)=5/11, P(class 0)=4/11, P(A, 0)=3/11
    assert t[("A", 0)] == pytest.approx((5 / 11) * (4 / 11) / (3 / 11))
    w = bias.apply_weights(df, bias.reweighing_table(df, ["group"], "species"), ["group"],
                           "species")
    rep = bias.data_bias(df, params.schema, params.bias, w)["features"]["group"]
    assert rep["statistical_parity_difference"] == pytest.approx(0.0, abs=1e-12)
    raw = bias.data_bias(df, params.schema, params.bias)["features"]["group"]
    # class 0: A .6, B 1/6 is the largest share difference (class 2: .2 vs .5)
    assert raw["gap"] == pytest.approx(0.6 - 1 / 6)
    assert raw["groups"]["B"]["class_shares"]["virginica"] == pytest.approx(0.5)


def test_regression_bias_is_the_target_per_group_and_it_is_not_reweighed():
    params = _schema("regression")
    df = pd.DataFrame({c: [1.0] * 6 for c in params.schema.feature_names})
    df["sex"] = ["one"] * 3 + ["two"] * 3
    df["progression"] = [1.0, 2.0, 3.0, 3.0, 4.0, 5.0]
    rep = bias.data_bias(df, params.schema, params.bias.model_copy(update={"min_group_rows": 1}))
    f = rep["features"]["sex"]
    assert f["groups"]["one"]["mean"] == 2.0 and f["groups"]["two"]["q50"] == 4.0
    std = float(np.std(df["progression"]))
    assert f["gap"] == f["mean_gap"] == pytest.approx(2.0 / std)
    assert f["groups"]["two"]["mean_difference"] == pytest.approx(2.0 / std)
    assert "disparate_impact_min" not in f  # no label: no impact ratio to pretend
    assert bias.reweighing_note("regression", ["sex"]) == bias.REWEIGHING_NOT_APPLICABLE
    assert bias.reweighing_note("multiclass", ["group"]) == ""
    assert "no reweighing feature" in bias.reweighing_note("binary", [])


# ------------------------------------------------ MetricFrame vs the previous computation
def _previous_group_figures(df, feature, target, w, task, classes) -> dict:
    """The per-group loop group_table ran before it used fairlearn's MetricFrame."""
    g = bias.group_key(df, [feature])
    ws = pd.Series(w, index=df.index)
    return {name: {"count": len(idx), **bias._target_figures(df.loc[idx, target], ws[idx],
                                                              task, classes)}
            for name, idx in g.groupby(g).groups.items()}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_metricframe_group_figures_equal_the_previous_computation(task):
    rng = np.random.default_rng(7)
    n = 120
    classes = ["a", "b", "c"] if task == "multiclass" else []
    y = {"binary": rng.integers(0, 2, n), "multiclass": rng.integers(0, 3, n),
         "regression": rng.normal(50, 10, n)}[task]
    df = pd.DataFrame({"grp": rng.choice(["p", "q", "r"], n, p=[0.5, 0.3, 0.2]), "y": y})
    df.loc[:4, "grp"] = None  # a missing value is its own group
    w = rng.uniform(0.2, 3.0, n)
    t = bias.group_table(df, "grp", "y", ["grp"], None, w, task, classes).set_index("group")
    before = _previous_group_figures(df, "grp", "y", w, task, classes)
    assert set(t.index) == set(before) and "<missing>" in before
    for g, old in before.items():
        assert t.loc[g, "count"] == old["count"]
        if task == "binary":
            assert t.loc[g, "positive_rate"] == pytest.approx(old["positive_rate"], abs=1e-12)
        elif task == "multiclass":
            for c in classes:
                assert t.loc[g, "class_shares"][c] == pytest.approx(old["class_shares"][c],
                                                                   abs=1e-12)
        else:
            for k in ("mean", "std", "q10", "q25", "q50", "q75", "q90"):
                assert t.loc[g, k] == pytest.approx(old[k], abs=1e-9), k


def test_a_one_row_group_is_shown_marked_and_kept_out_of_the_headline():
    """The issue's case: a race figure from a group with 1 training row."""
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({c: [None] * n for c in SCHEMA.feature_names})
    df["sex"] = rng.choice(["Male", "Female"], n)
    df["race"] = ["White"] * 120 + ["Black"] * 79 + ["Other"]
    df["income"] = np.r_[np.tile([1, 0, 0, 0], 30), np.tile([1, 0, 0], 26), [0], [1]]
    cfg = BiasConfig(privileged={"race": "White"}, min_group_rows=30)
    race = bias.data_bias(df, SCHEMA, cfg)["features"]["race"]
    assert race["groups"]["Other"]["count"] == 1 and race["groups"]["Other"]["too_small"]
    assert race["groups"]["Other"]["positive_rate"] == 1.0  # shown ...
    assert race["small_groups"] == {"Other": 1}
    rates = {g: race["groups"][g]["positive_rate"] for g in ("White", "Black")}
    # ... but the headline is White against Black, not 1.0 against 0.25
    assert race["gap"] == pytest.approx(abs(rates["White"] - rates["Black"]))
    assert race["disparate_impact_min"] == pytest.approx(min(rates.values()) /
                                                         max(rates.values()))
    # with every group counted (min_group_rows 1) the 1-row group decides it
    every = bias.data_bias(df, SCHEMA, cfg.model_copy(update={"min_group_rows": 1}))
    assert every["features"]["race"]["gap"] == pytest.approx(1.0 - rates["White"])
    # fewer than two groups that large: no headline, and it says why
    few = bias.data_bias(df, SCHEMA, cfg.model_copy(update={"min_group_rows": 100}))
    assert few["features"]["race"]["gap"] is None
    assert "fewer than two groups" in few["features"]["race"]["not_measurable"]


# ------------------------------------------------ mitigation: signed changes, the decision
def test_changes_are_signed_differences_not_percentages():
    assert bias.signed_change(0.0018, 0.0155) == "0.0018 -> 0.0155 (+0.0137, worse)"
    assert bias.signed_change(0.18, 0.09) == "0.1800 -> 0.0900 (-0.0900, better)"
    assert bias.signed_change(0.5, 0.5) == "0.5000 -> 0.5000 (+0.0000, unchanged)"
    assert bias.signed_change(None, 0.1) == "not measurable -> 0.1000"
    assert "better" in bias.signed_change(0.80, 0.85, lower_is_better=False)


def _check(gap_with: float | None, gap_without: float | None, loss_with: float = 0.280,
           loss_without: float = 0.275) -> bias.MitigationCheck:
    return bias.MitigationCheck("the validation split (6,000 rows)", "logloss", loss_with,
                                loss_without, {"sex": gap_with, "race": 0.05},
                                {"sex": gap_without, "race": 0.04})


def test_mitigation_that_widens_the_gap_is_not_applied_and_says_why():
    """The issue's census case: DPD on sex 0.0018 without reweighing, 0.0155 with it."""
    d = bias.decide_mitigation(_check(0.0155, 0.0018), ["sex"], "compare", 0.05)
    assert not d.applied and d.checked and d.worse == ("sex",)
    assert "DPD on sex: 0.0018 -> 0.0155 (+0.0137, worse)" in d.reason
    assert d.reason.startswith("reweighing not applied, the unmitigated model is registered")
    assert d.as_dict()["figures"]["gaps_with"]["sex"] == 0.0155
    # race is not a reweighing feature: its change is shown, not judged
    assert d.changes["race"] == "0.0400 -> 0.0500 (+0.0100, worse)"
    forced = bias.decide_mitigation(_check(0.0155, 0.0018), ["sex"], "always", 0.05)
    assert forced.applied and "bias.mitigation_policy: always" in forced.reason


def test_mitigation_over_the_quality_budget_is_not_applied():
    d = bias.decide_mitigation(_check(0.05, 0.18, loss_with=0.300, loss_without=0.275),
                               ["sex"], "compare", 0.05)
    assert not d.applied and d.over_budget and d.worse == ()
    assert d.quality_cost == pytest.approx(0.025 / 0.275)
    assert "raised the logloss by 9.1 %" in d.reason and "max_quality_cost 5 %" in d.reason


def test_mitigation_that_narrows_the_gap_within_budget_is_kept():
    d = bias.decide_mitigation(_check(0.05, 0.18), ["sex"], "compare", 0.05)
    assert d.applied and not d.over_budget
    assert "reweighing kept" in d.reason and "0.1800 -> 0.0500 (-0.1300, better)" in d.reason
    # a gap not measurable on validation cannot be judged: quality decides, the reason says so
    u = bias.decide_mitigation(_check(None, 0.18), ["sex"], "compare", 0.05)
    assert u.applied and "not measurable" in u.reason
    # nothing to compare with: the declared mitigation, and the reason says so
    n = bias.decide_mitigation(None, ["sex"], "compare", 0.05)
    assert n.applied and not n.checked and "without a comparison" in n.reason
