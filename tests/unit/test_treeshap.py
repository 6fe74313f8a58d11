"""The serving road of explanations (tarn.core.treeshap, tarn.core.row_encoder): compiled
TreeSHAP for a few rows (on one thread or split across several) equals XGBoost's own
pred_contribs, and the one-row encoder equals the fitted ColumnTransformer, for every task;
what they do not cover falls back. Tiny XGBoost fits (a few rounds on a few hundred rows)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import xgboost as xgb

from tarn.core import explain as ex
from tarn.core import row_encoder, treeshap
from tarn.core.features import build_preprocessor
from tarn.core.task import Task
from tarn.serve.explain import prepared
from tests.unit.test_explain import _adult, _fit, _task_data


def _columns(X, rows=slice(None)):
    return {c: (X[c].to_numpy(dtype=object)[rows] if X[c].dtype == object
                else X[c].to_numpy(dtype=np.float64)[rows]) for c in X.columns}


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_one_row_contributions_equal_xgboost_and_add_up_to_the_raw_score(kind):
    p, X, y = _adult() if kind == "binary" else _task_data(kind)
    X = X.copy()
    num = [c for c in X.columns if X[c].dtype != object]
    X.loc[X.index[:5], num[0]] = np.nan  # the missing-value side of splits too
    pipe = _fit(p, X, y, kind, rounds=12)
    task = Task.of(p.schema)
    slow = ex.explainer(pipe, task)
    fast = prepared(slow)
    assert fast.fast is not None and fast.row_encoder is not None  # the fast road is taken
    want = slow.explain(X.head(30))  # XGBoost's TreeSHAP through scikit-learn's transform
    margin = pipe[-1].predict(pipe[0].transform(X.head(30)), output_margin=True)
    margin = margin.reshape(30, -1)
    cols = _columns(X)
    for i in range(30):
        got = fast.explain_columns(_columns(X, slice(i, i + 1)), list(X.columns))
        assert np.abs(got.values[0] - want.values[i]).max() < 1e-5, i
        assert np.allclose(got.base, want.base)
        assert np.abs(got.raw[0] - margin[i]).max() < 1e-4, i
    every = pipe[-1].predict(pipe[0].transform(X), output_margin=True).reshape(len(X), -1)
    many = fast.explain_columns(cols, list(X.columns))  # a batch: the same road, row by row
    assert np.abs(many.raw - every).max() < 1e-4


def test_a_batch_takes_the_fast_road_only_when_it_pays(monkeypatch):
    p, X, y = _adult()
    pipe = _fit(p, X, y, "binary", rounds=12)
    task = Task.of(p.schema)
    nodes = treeshap.node_count(pipe[-1].get_booster())
    assert nodes == len(treeshap.build(pipe[-1].get_booster()).par)
    small = ex.batch_explainer(pipe, task, rows=len(X))
    assert len(X) * nodes < ex.BATCH_NODE_ROWS and small.fast is None  # XGBoost's own
    monkeypatch.setattr(ex, "BATCH_NODE_ROWS", len(X) * nodes)
    big = ex.batch_explainer(pipe, task, rows=len(X), threads=2)
    assert big.fast is not None and big.fast.helpers == 1
    a, b = small.explain(X.head(40)), big.explain(X.head(40))
    assert np.abs(a.values - b.values).max() < 1e-5 and np.allclose(a.base, b.base)
    summary = ex.summary(pipe, task, X, X, X, ["sex"], set(), rows=len(X), threads=2)
    assert summary["rows"] == len(X) and set(summary["global"]) == set(X.columns)


def test_a_regressor_with_large_values_keeps_the_fast_road():
    p, X, y = _task_data("regression")
    pipe = _fit(p, X, y * 1000.0, "regression", rounds=30)  # contributions in the 10^4-10^5
    e = prepared(ex.explainer(pipe, Task.of(p.schema)))
    assert e.fast is not None  # agreement is judged relative to the contributions' size
    got = e.explain_columns(_columns(X, slice(0, 1)), list(X.columns))
    margin = pipe[-1].predict(pipe[0].transform(X.head(1)), output_margin=True)
    assert abs(got.raw[0, 0] - margin[0]) <= 1e-5 * abs(margin[0])


def test_repeated_features_and_deep_trees_match_xgboost():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(400, 4)).astype(np.float32)
    Z[rng.random(Z.shape) < 0.1] = np.nan
    y = (np.nan_to_num(Z[:, 0]) * np.nan_to_num(Z[:, 1]) > 0).astype(int)
    booster = xgb.train({"max_depth": 7, "objective": "binary:logistic", "eta": 0.5},
                        xgb.DMatrix(Z, label=y), 20)  # few features: each split on repeatedly
    fast = treeshap.build(booster)
    want = booster.predict(xgb.DMatrix(Z[:50]), pred_contribs=True)
    got = np.stack([fast.contributions(z)[0] for z in Z[:50]])
    assert np.abs(got - want[:, :-1]).max() < 1e-5
    assert np.abs(treeshap.build(booster, (0, 5)).contributions(Z[0])[0] - booster.predict(
        xgb.DMatrix(Z[:1]), pred_contribs=True, iteration_range=(0, 5))[0, :-1]).max() < 1e-5


def test_trees_shared_between_threads_give_the_same_values_as_one_thread():
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    booster = xgb.train({"max_depth": 5, "objective": "multi:softprob", "num_class": 3},
                        xgb.DMatrix(Z, label=y), 9)  # 27 trees, three outputs
    one = treeshap.build(booster)
    chunks = one.chunks
    assert chunks[0] == 0 and chunks[-1] == 27 and (np.diff(chunks) > 0).all()
    assert len(chunks) - 1 == treeshap.CHUNKS  # every tree in exactly one chunk
    want = booster.predict(xgb.DMatrix(Z[:20]), pred_contribs=True)[:, :, :-1]
    with ThreadPoolExecutor(2) as pool:
        shared = treeshap.build(booster, pool=pool, threads=3)
        assert shared.helpers == 2 and one.helpers == 0
        got = np.stack([shared.contributions(z) for z in Z[:20]])
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - np.stack([one.contributions(z) for z in Z[:20]])).max() < 1e-9


def test_a_chunk_claimed_by_a_helper_is_computed_by_the_caller_too():
    """The caller never waits: chunks a helper claimed but has not finished are computed
    again (same values), chunks it finished are taken as they are."""
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(200, 4)).astype(np.float32)
    booster = xgb.train({"max_depth": 4}, xgb.DMatrix(Z, label=Z[:, 0]), 20)
    fast = treeshap.build(booster)
    K = len(fast.chunks) - 1
    kernel = treeshap._kernel(len(fast.points))
    args = (fast.par, fast.prev, fast.is_left, fast.feature, fast.threshold,
            fast.default_left, fast.z_merged, fast.value, fast.is_leaf,
            fast.edge_weight_index, fast.points, fast.weights, fast.max_nodes)
    row = Z[0]
    state = np.zeros(K, np.uint8)
    out = np.zeros((K, fast.outputs * fast.n_features))
    kernel(row, fast.start, fast.chunks, -1, False, state, *args, out)  # a helper, alone
    assert (state == 2).all()  # it goes down from the last chunk to the first
    whole = out.sum(axis=0)
    state[:] = 0
    state[K // 2:] = 1  # claimed by a helper that never came back
    out[:] = 0.0
    kernel(row, fast.start, fast.chunks, -1, False, state, *args, out)  # another helper stops
    assert not out.any() and (state[:K // 2] == 0).all()
    kernel(row, fast.start, fast.chunks, 1, True, state, *args, out)  # the caller
    assert (state == 2).all() and np.array_equal(out.sum(axis=0), whole)
    assert np.abs(whole - booster.predict(xgb.DMatrix(Z[:1]), pred_contribs=True)[0, :-1]
                  ).max() < 1e-5


def test_trees_that_are_a_single_leaf_contribute_nothing():
    Z = np.random.default_rng(3).normal(size=(100, 3)).astype(np.float32)
    stumps = xgb.train({"max_depth": 3, "gamma": 1e9}, xgb.DMatrix(Z, label=Z[:, 0]), 4)
    fast = treeshap.build(stumps)
    assert fast is not None and (fast.is_leaf == 1).all()  # no split gains 1e9
    assert not fast.contributions(Z[0]).any()
    assert not stumps.predict(xgb.DMatrix(Z[:1]), pred_contribs=True)[0, :-1].any()


def test_what_tarns_treeshap_does_not_cover_falls_back_to_xgboost():
    Z = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    dart = xgb.train({"booster": "dart", "max_depth": 2}, xgb.DMatrix(Z, label=Z[:, 0]), 3)
    linear = xgb.train({"booster": "gblinear"}, xgb.DMatrix(Z, label=Z[:, 0]), 3)
    assert treeshap.build(dart) is None and treeshap.build(linear) is None


@pytest.mark.parametrize("prepare", [{}, {"onehot_max_values": 20},
                                     {"numeric_scaler": "standard"}])
def test_the_row_encoder_equals_the_fitted_transform(prepare):
    p, X, y = _adult(**prepare)
    pre = build_preprocessor(p.schema, p.prepare, X).fit(X, y)
    enc = row_encoder.row_encoder(pre)
    assert enc is not None
    X = X.copy()
    X.iloc[0, 0] = np.nan
    X.loc[X.index[1], "workclass"] = "never seen"
    X.loc[X.index[2], "native_country"] = None
    want = np.asarray(pre.transform(X), dtype=np.float32)
    assert np.array_equal(enc.encode(_columns(X)), want, equal_nan=True)
    for i in range(5):
        assert np.array_equal(enc.encode(_columns(X, slice(i, i + 1))), want[i:i + 1],
                              equal_nan=True)


def test_a_step_the_row_encoder_does_not_know_falls_back():
    p, X, y = _adult(max_categories=5)  # infrequent categories: scikit-learn's own transform
    pre = build_preprocessor(p.schema, p.prepare, X).fit(X, y)
    assert row_encoder.row_encoder(pre) is None
    pipe = _fit(p, X, y, "binary", rounds=3)
    e = prepared(ex.explainer(pipe, Task.of(p.schema)))
    got = e.explain_columns(_columns(X, slice(0, 1)), list(X.columns))
    margin = pipe[-1].predict(pipe[0].transform(X.head(1)), output_margin=True)
    assert e.row_encoder is None and abs(got.raw[0, 0] - margin[0]) < 1e-4
