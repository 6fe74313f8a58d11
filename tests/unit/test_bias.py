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
    rep = bias.data_bias(df, params.schema, params.bias)
    f = rep["features"]["sex"]
    assert f["groups"]["one"]["mean"] == 2.0 and f["groups"]["two"]["q50"] == 4.0
    std = float(np.std(df["progression"]))
    assert f["gap"] == f["mean_gap"] == pytest.approx(2.0 / std)
    assert f["groups"]["two"]["mean_difference"] == pytest.approx(2.0 / std)
    assert "disparate_impact_min" not in f  # no label: no impact ratio to pretend
    assert bias.reweighing_note("regression", ["sex"]) == bias.REWEIGHING_NOT_APPLICABLE
    assert bias.reweighing_note("multiclass", ["group"]) == ""
    assert "no reweighing feature" in bias.reweighing_note("binary", [])
