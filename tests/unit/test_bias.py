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
