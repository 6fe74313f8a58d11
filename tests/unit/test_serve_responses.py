"""Scores -> response bodies, log columns and parity, per task (pure functions, no fits)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from tarn.core.predictions import LABEL, PREDICTION, PROBA, log_columns
from tarn.core.task import Task
from tarn.edge.export import parity_of
from tarn.serve.inputs import Violation
from tarn.serve.responses import (
    LIST_ROWS,
    invocations_body,
    invocations_predictions,
    predict_body,
    predict_rows,
)

BINARY = Task("binary", ("<=50K", ">50K"), 0.3, "income")
MULTI = Task("multiclass", ("setosa", "versicolor", "virginica"), 0.5, "species")
REG = Task("regression", (), 0.5, "progression")


def test_binary_rows_use_the_versions_threshold_and_name_the_class():
    rows = predict_rows(BINARY, np.array([0.1, 0.3, 0.7]))
    assert rows == [{"probability": 0.1, "label": 0, "class": "<=50K"},
                    {"probability": 0.3, "label": 1, "class": ">50K"},  # 0.3 >= threshold 0.3
                    {"probability": 0.7, "label": 1, "class": ">50K"}]


def test_multiclass_rows_give_every_class_and_the_most_probable():
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    rows = predict_rows(MULTI, scores)
    assert rows[0] == {"probabilities": {"setosa": 0.7, "versicolor": 0.2, "virginica": 0.1},
                       "label": 0, "class": "setosa"}
    assert rows[1]["label"] == 2 and rows[1]["class"] == "virginica"
    assert list(rows[1]["probabilities"]) == list(MULTI.classes)  # class order kept


def test_regression_rows_are_values():
    assert predict_rows(REG, np.array([151.5, -2.0])) == [{"prediction": 151.5},
                                                          {"prediction": -2.0}]


@pytest.mark.parametrize("n", [3, LIST_ROWS + 5])
def test_invocations_answer_as_mlflow_models_serve(n):
    """predict_proba for classification (binary too: two columns), predict for regression;
    the same JSON whether the rows went out as lists or as an array."""
    p = np.linspace(0.05, 0.95, n)
    binary = orjson.loads(orjson.dumps(invocations_predictions(BINARY, p),
                                       option=orjson.OPT_SERIALIZE_NUMPY))
    assert np.allclose(binary, np.column_stack([1 - p, p]))
    proba = np.tile([0.2, 0.5, 0.3], (n, 1))
    multi = orjson.loads(orjson.dumps(invocations_predictions(MULTI, proba),
                                      option=orjson.OPT_SERIALIZE_NUMPY))
    assert np.array(multi).shape == (n, 3) and np.allclose(multi, proba)
    values = orjson.loads(orjson.dumps(invocations_predictions(REG, p * 100),
                                       option=orjson.OPT_SERIALIZE_NUMPY))
    assert np.allclose(values, p * 100) and np.ndim(values) == 1


def test_bodies_carry_version_request_id_and_flags():
    flagged = [Violation(1, "sex", "unknown_category", "sex: unknown category 'X'")]
    body = predict_body(REG, np.array([1.0, 2.0]), "4", "rid-1", flagged)
    assert body["model_version"] == "4" and body["request_id"] == "rid-1"
    assert "violations" not in body["predictions"][0]
    assert body["predictions"][1]["violations"] == ["sex: unknown category 'X'"]
    inv = invocations_body(MULTI, np.array([[0.2, 0.5, 0.3]]), "rid-2", flagged)
    assert inv["request_id"] == "rid-2" and inv["violations"][0]["column"] == "sex"
    assert "violations" not in invocations_body(MULTI, np.array([[0.2, 0.5, 0.3]]), "r")


def test_log_columns_per_task():
    cols = log_columns(MULTI, np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    assert list(cols) == ["proba_0", "proba_1", "proba_2", LABEL]
    assert cols[LABEL].tolist() == [0, 2] and cols["proba_2"].tolist() == [0.1, 0.6]
    assert log_columns(REG, np.array([3.5]))[PREDICTION].tolist() == [3.5]
    assert log_columns(BINARY, np.array([0.4]))[PROBA].tolist() == [0.4]


def test_parity_is_absolute_over_every_class_and_relative_for_values():
    py = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    onnx = py + np.array([[0, 0, 2e-4], [0, 0, 0]])  # one class of one row off
    p = parity_of(MULTI, onnx, py, 1e-4)
    assert not p.ok and p.rows_over == 1 and math.isclose(p.max_abs_diff, 2e-4)
    assert p.labels_equal and p.measure == "absolute"
    swapped = parity_of(MULTI, py[:, [1, 0, 2]], py, 1.0)
    assert not swapped.labels_equal and not swapped.ok  # within tolerance, other labels
    # regression, relative to the predictions' spread: 1e-3 off when rows differ by ~100
    # (std 50) is float32 rounding, 2e-5 of the spread: passes; 1e-3 off when the rows differ
    # by 2 (std 1) is 1e-3 of it: fails
    py_wide = np.array([950.0, 1050.0])
    wide = parity_of(REG, py_wide + [1e-3, 0], py_wide, 1e-4)
    assert wide.ok and wide.measure == "relative" and math.isclose(wide.max_abs_diff, 2e-5)
    py_narrow = np.array([999.0, 1001.0])
    narrow = parity_of(REG, py_narrow + [1e-3, 0], py_narrow, 1e-4)
    assert not narrow.ok and narrow.rows_over == 1


def test_parity_fails_on_nan_and_on_the_wrong_shape():
    assert not parity_of(REG, np.array([np.nan]), np.array([1.0]), 1e-4).ok
    wrong = parity_of(MULTI, np.zeros(2), np.zeros((2, 3)), 1e-4)  # a binary graph's output
    assert not wrong.ok and wrong.max_abs_diff == math.inf
    binary = parity_of(BINARY, np.array([0.29995]), np.array([0.30001]), 1e-4)
    assert binary.max_abs_diff < 1e-4 and not binary.labels_equal  # across the threshold


def test_the_served_contract_is_the_versions_card_else_params():
    """A version is checked against the contract in its card (here: one column fewer and a
    multiclass task); a version from before cards falls back to today's params.yaml."""
    from tarn.config import params_from_dict
    from tarn.core.model import served_contract
    from tests.support.project import repo_params_dict

    params = params_from_dict(repo_params_dict())
    raw = params.schema.model_dump(mode="json", by_alias=True)
    raw["columns"] = [c for c in raw["columns"] if c["name"] != "fnlwgt"]
    card = {**MULTI.card(), "schema": raw, "threshold": 0.7,
            "prepare": {"exclude_features": ["race"], "numeric_scaler": "none",
                        "max_categories": None}}
    served = served_contract(card, params.schema, params.prepare, 0.5)
    assert served.from_card and served.task.kind == "multiclass"
    assert served.task.classes == MULTI.classes and served.task.threshold == 0.7
    assert "fnlwgt" not in [c.name for c in served.schema.columns]
    assert served.prepare.exclude_features == ["race"]
    old = served_contract({}, params.schema, params.prepare, 0.4)
    assert not old.from_card and old.task.kind == "binary" and old.task.threshold == 0.4
    assert old.schema is params.schema
