"""Explanations (tarn.core.explain): encoded columns summed back onto the user's columns, and
the contributions plus the base value adding up to the model's raw score for every task.
Tiny XGBoost fits (a few rounds on a few hundred rows, well under a second each)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from tarn.config import params_from_dict
from tarn.core import explain as ex
from tarn.core.features import build_preprocessor, feature_columns, to_model_frame
from tarn.core.task import Task
from tests.support.project import adult_csv, params_dict
from tests.support.tasks import diabetes_frame, iris_frame, task_params


def _adult(n: int = 600, **prepare):
    raw = params_dict({f"prepare.{k}": v for k, v in prepare.items()})
    p = params_from_dict(raw)
    df = pd.read_csv(io.StringIO(adult_csv("train", 0, n)), skipinitialspace=True,
                     na_values=["?"]).rename(columns=lambda c: c.replace("-", "_"))
    return p, to_model_frame(df, p.schema, p.prepare), (df["income"] == ">50K").astype(int)


def _task_data(kind: str):
    p = params_from_dict(params_dict(task_params(kind)))
    df = iris_frame() if kind == "multiclass" else diabetes_frame()
    y = df[p.schema.target.name]
    y = y.map(p.schema.target.mapping) if kind == "multiclass" else y
    return p, to_model_frame(df, p.schema, p.prepare), y


def _fit(p, X, y, kind: str, rounds: int = 15) -> Pipeline:
    task = Task.of(p.schema)
    pipe = Pipeline([("pre", build_preprocessor(p.schema, p.prepare, X)),
                     ("model", task.estimator(n_estimators=rounds, max_depth=3,
                                              learning_rate=0.3, n_jobs=1, random_state=0))])
    return pipe.fit(X, y)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_contributions_add_up_to_the_raw_score(kind):
    p, X, y = _adult() if kind == "binary" else _task_data(kind)
    pipe = _fit(p, X, y, kind)
    task = Task.of(p.schema)
    e = ex.explainer(pipe, task)
    c = e.explain(X)
    k = task.n_classes if kind == "multiclass" else 1
    assert c.values.shape == (len(X), k, len(e.columns))
    margin = pipe[-1].predict(pipe[0].transform(X), output_margin=True).reshape(len(X), -1)
    assert np.abs(c.raw - margin).max() < 1e-4
    if kind == "binary":  # the log-odds of class 1: the probability /predict answers
        assert np.allclose(1 / (1 + np.exp(-c.raw[:, 0])), task.scores(pipe, X), atol=1e-5)
    elif kind == "regression":  # the value itself
        assert np.allclose(c.raw[:, 0], task.scores(pipe, X), atol=1e-3)
    else:  # softmax of the per-class raw scores
        soft = np.exp(c.raw) / np.exp(c.raw).sum(axis=1, keepdims=True)
        assert np.allclose(soft, task.scores(pipe, X), atol=1e-5)


def test_one_hot_groups_and_codes_sum_back_to_their_source_column():
    # native_country (41 values) as target-ordered codes, the rest one-hot
    p, X, y = _adult(onehot_max_values=20)
    pipe = _fit(p, X, y, "binary")
    e = ex.explainer(pipe, Task.of(p.schema))
    num, cat = feature_columns(p.schema, p.prepare)
    assert sorted(e.columns) == sorted(num + cat)  # every user column, nothing encoded
    names = pipe[0].get_feature_names_out()
    owners = {e.columns[o] for o, n in zip(e.owner, names, strict=True)
              if str(n).startswith("marital_status_")}
    assert owners == {"marital_status"}  # a one-hot group -> its column
    assert sum(e.owner == e.columns.index("native_country")) == 1  # one code column
    assert sum(e.owner == e.columns.index("education")) > 5  # 16 values one-hot
    # summing back loses nothing: per row, user totals equal encoded totals
    Z = e.encode(X.head(20))
    from xgboost import DMatrix
    enc = e.booster.predict(DMatrix(Z), pred_contribs=True)
    c = e.explain_encoded(Z)
    col = e.columns.index("education")
    assert np.allclose(c.values[:, 0, col], enc[:, :-1][:, e.owner == col].sum(axis=1))


def test_a_column_whose_name_prefixes_another_keeps_its_own_groups():
    # "a" and "a_b" both one-hot: "a_b_x" is a value of "a_b", "a_b" alone a value of "a"
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"a": ["b", "c", "b", "c"], "a_b": ["x", "y", "y", "x"]})
    pre = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["a", "a_b"])],
                            verbose_feature_names_out=False).fit(X)
    cols, owner = ex.column_owners(pre)
    names = list(pre.get_feature_names_out())
    assert cols == ["a", "a_b"]
    assert dict(zip(names, [cols[o] for o in owner], strict=True)) == {
        "a_b": "a", "a_c": "a", "a_b_x": "a_b", "a_b_y": "a_b"}


def test_a_model_that_is_not_xgboost_is_refused_with_the_reason():
    p, X, _ = _adult(200)  # the estimator is checked first: no fit needed
    pipe = Pipeline([("pre", build_preprocessor(p.schema, p.prepare, X)),
                     ("model", LogisticRegression())])
    with pytest.raises(ex.NotExplainable, match="LogisticRegression, not XGBoost"):
        ex.explainer(pipe, Task.of(p.schema))


def _contribs(values: np.ndarray, cols=("a", "b", "c")) -> ex.Contributions:
    return ex.Contributions(tuple(cols), ("y",), values[:, None, :], np.zeros(1))


def test_importance_overall_and_per_group():
    c = _contribs(np.array([[1.0, -2.0, 0.0], [-3.0, 0.0, 0.5], [1.0, 4.0, 0.5]]))
    assert ex.importance(c) == pytest.approx({"b": 2.0, "a": 5 / 3, "c": 1 / 3})
    assert list(ex.importance(c)) == ["b", "a", "c"]  # largest first
    groups = ex.group_importance(c, pd.Series(["F", "M", None]))
    assert groups["F"] == {"b": 2.0, "a": 1.0, "c": 0.0}
    assert groups["<missing>"]["b"] == 4.0 and list(groups["M"]) == ["b", "a", "c"]


def test_attribution_drift_names_the_column_whose_share_grew():
    d = ex.attribution_drift({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 3.0})
    assert d["columns"][0]["column"] in {"a", "b"}
    by = {r["column"]: r for r in d["columns"]}
    assert by["b"]["share_change"] == pytest.approx(0.25)
    assert by["a"]["share_change"] == pytest.approx(-0.25)
    assert d["max_share_change"] == pytest.approx(0.25)


def test_association_and_proxies():
    rng = np.random.default_rng(0)
    n = 2_000
    s = pd.Series(rng.choice(["F", "M"], n))
    X = pd.DataFrame({
        "sex": s,
        "role": np.where(s == "F", np.where(rng.random(n) < .9, "wife", "other"),
                         np.where(rng.random(n) < .9, "husband", "other")),  # a proxy
        "noise": rng.choice(["p", "q", "r"], n),
        "height": np.where(s == "F", 165.0, 178.0) + rng.normal(0, 3, n),  # numeric proxy
        "x": rng.normal(size=n)})
    assert ex.association(X["sex"], X["role"], False, False) > 0.8
    assert ex.association(X["sex"], X["noise"], False, False) < 0.1
    assert ex.association(X["height"], X["sex"], True, False) > 0.8
    assert ex.association(X["x"], X["height"], True, True) < 0.1
    imp = {"role": 3.0, "height": 1.0, "sex": 0.5, "noise": 0.5, "x": 0.0}
    found = ex.proxies(X, ["sex"], {"height", "x"}, imp, top=2)["sex"]
    assert [p["column"] for p in found["proxies"]] == ["role", "height"] or \
        [p["column"] for p in found["proxies"]] == ["height", "role"]
    assert found["proxies_share"] == pytest.approx(4.0 / 5.0)
    assert found["own_share"] == pytest.approx(0.1)


def test_a_served_version_that_cannot_be_explained_is_refused_with_409_and_why():
    from tarn.core.features import input_schema
    from tarn.serve import explain as serving
    from tarn.serve.deploy import Deployed, PythonPredictor
    from tarn.serve.inputs import InputError, columns_from_signature

    p, X, y = _adult(300)  # the estimator is checked before anything runs: no fit needed
    pipe = Pipeline([("pre", build_preprocessor(p.schema, p.prepare, X)),
                     ("model", LogisticRegression())])
    cols = columns_from_signature(input_schema(p.schema, p.prepare).to_dict(), p.schema)
    task = Task.of(p.schema)
    d = Deployed("m", "7", PythonPredictor(pipe, cols, task), cols, "python", "now", None, task)
    values = {c: X[c].to_numpy() for c in X.columns}
    with pytest.raises(InputError, match="version 7 cannot be explained: .*LogisticRegression"
                                         ".*/predict still scores it") as e:
        serving.explanations(d, values)
    assert e.value.status == 409
    xgb = _fit(p, X, y, "binary", rounds=5)  # the same rows, a version tarn can explain
    d2 = Deployed("m", "8", PythonPredictor(xgb, cols, task), cols, "python", "now", None, task)
    per_row, scale = serving.explanations(d2, values)
    assert len(per_row) == len(X) and "log-odds" in scale


def test_only_a_boolean_asks_predict_for_explanations():
    from tarn.serve import explain as serving
    from tarn.serve.inputs import InputError

    assert serving.wanted("explain", [{"a": 1}])
    assert serving.wanted("predict", {"dataframe_records": [], "explain": True})
    assert not serving.wanted("predict", {"dataframe_records": []})
    assert not serving.wanted("invocations", {"dataframe_records": [], "explain": True})
    with pytest.raises(InputError, match="explain must be true or false"):
        serving.wanted("predict", {"inputs": [], "explain": 1})


def test_a_multiclass_row_is_explained_per_class_and_adds_up_per_class():
    from tarn.core.features import input_schema
    from tarn.serve import explain as serving
    from tarn.serve.deploy import Deployed, PythonPredictor
    from tarn.serve.inputs import columns_from_signature

    p, X, y = _task_data("multiclass")
    pipe = _fit(p, X, y, "multiclass")
    task = Task.of(p.schema)
    cols = columns_from_signature(input_schema(p.schema, p.prepare).to_dict(), p.schema)
    d = Deployed("m", "3", PythonPredictor(pipe, cols, task), cols, "python", "now", None, task)
    per_row, scale = serving.explanations(d, {c: X[c].head(4).to_numpy() for c in X.columns})
    assert "softmax" in scale and len(per_row) == 4
    proba = task.scores(pipe, X.head(4))
    for e, want in zip(per_row, proba, strict=True):
        assert set(e["contributions"]) == set(task.classes) == set(e["raw_score"])
        raw = np.array([e["raw_score"][k] for k in task.classes])
        for k in task.classes:
            assert set(e["contributions"][k]) == set(X.columns)
            total = e["base_value"][k] + sum(e["contributions"][k].values())
            assert abs(total - e["raw_score"][k]) < 1e-4
        assert np.allclose(np.exp(raw) / np.exp(raw).sum(), want, atol=1e-4)
