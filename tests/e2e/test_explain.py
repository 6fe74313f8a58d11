"""/explain and /predict's explain option over real sockets: per row a contribution for every
request column, adding up with the base value to the raw score, which is the served
prediction (log-odds of the probability for Adult, the value for a regression model); the
same row checks, errors and limits as /predict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tarn.core.catalog import load_split
from tests.support.serving import sample_rows, wait_version
from tests.support.task_models import served_task_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_project(shared_served_project):
    """Read-only: the session's small Adult project, version 1 in production."""
    return shared_served_project


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def adult(served_project, server):
    """(params, root, server) with the small Adult project's version 1 in production."""
    params, root = served_project
    wait_version(server, "1", timeout=120)
    return params, root, server


def _check_sums(e: dict) -> None:
    total = e["base_value"] + sum(e["contributions"].values())
    assert abs(total - e["raw_score"]) < 1e-4, e
    values = list(e["contributions"].values())
    assert [abs(v) for v in values] == sorted((abs(v) for v in values), reverse=True)


def test_explain_one_adult_row_adds_up_to_the_served_probability(adult):
    params, root, server = adult
    rows = sample_rows(root, 3)
    r = server.http.post("/explain", json=rows[:1])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["request_id"]
    assert "log-odds" in body["explanation"]["raw_score"]
    (row,) = body["predictions"]
    e = row["explanation"]
    assert set(e["contributions"]) == set(rows[0]) - {"income"}  # the user's own columns
    _check_sums(e)
    predicted = server.http.post("/predict", json=rows[:1]).json()["predictions"][0]
    assert row["probability"] == pytest.approx(predicted["probability"], abs=1e-6)
    assert 1 / (1 + math.exp(-e["raw_score"])) == pytest.approx(predicted["probability"],
                                                                 abs=1e-4)


def test_predict_explains_on_request_only(adult):
    _, root, server = adult
    rows = sample_rows(root, 3)
    plain = server.http.post("/predict", json={"dataframe_records": rows}).json()
    assert "explanation" not in plain and all("explanation" not in p
                                              for p in plain["predictions"])
    r = server.http.post("/predict", json={"dataframe_records": rows, "explain": True})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3
    for p in preds:
        _check_sums(p["explanation"])
    bad = server.http.post("/predict", json={"dataframe_records": rows, "explain": "yes"})
    assert bad.status_code == 422 and "explain must be true or false" in bad.json()["message"]


@pytest.mark.parametrize("case", ["bad value", "unknown column", "empty", "too many rows",
                                  "media type", "malformed"])
def test_a_bad_request_gets_the_same_answer_as_predict(adult, case):
    params, root, server = adult
    row = sample_rows(root, 1)[0]
    kwargs: dict = {"json": [{**row, "age": "forty"}]}
    if case == "unknown column":
        kwargs = {"json": [{**row, "shoe_size": 44}]}
    elif case == "empty":
        kwargs = {"json": []}
    elif case == "too many rows":
        kwargs = {"json": [row] * (params.serve.max_rows + 1)}
    elif case == "media type":
        kwargs = {"content": b"[]", "headers": {"Content-Type": "text/plain"}}
    elif case == "malformed":
        kwargs = {"content": b"[{", "headers": {"Content-Type": "application/json"}}
    p = server.http.post("/predict", **kwargs)
    e = server.http.post("/explain", **kwargs)
    assert p.status_code in (400, 413, 415, 422), p.text
    assert e.status_code == p.status_code, e.text
    pb, eb = p.json(), e.json()
    # the same refusal word for word (too many rows: the body limit comes first for both;
    # /explain's own, lower row limit is the next test's)
    assert eb["error_code"] == pb["error_code"] and eb["message"] == pb["message"]


def test_explaining_is_held_to_fewer_rows_than_predicting(adult):
    params, root, server = adult
    rows = [sample_rows(root, 1)[0]] * (params.serve.explain_max_rows + 1)
    assert server.http.post("/predict", json=rows).status_code == 200
    for path, body in (("/explain", rows), ("/predict", {"dataframe_records": rows,
                                                         "explain": True})):
        r = server.http.post(path, json=body)
        assert r.status_code == 413, r.text
        assert f"exceed the limit of {params.serve.explain_max_rows}" in r.json()["message"]


def test_explain_is_counted_under_its_own_endpoint(adult):
    _, root, server = adult
    server.http.post("/explain", json=sample_rows(root, 1))
    metrics = server.http.get("/metrics").text
    assert 'tarn_requests_total{endpoint="explain",status="200"}' in metrics


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-regression")
    params, server = served_task_project(root, "regression")
    yield params, root, server
    server.stop()


def test_explain_a_regression_row_adds_up_to_the_value(regression):
    params, root, server = regression
    frame = load_split(params, root, "test").frame.head(2)
    cols = [c.name for c in params.schema.columns]
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in frame[cols].astype(object).to_dict("records")]
    r = server.http.post("/explain", json=rows)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["explanation"]["raw_score"] == "the predicted value"
    for row in body["predictions"]:
        e = row["explanation"]
        assert set(e["contributions"]) == set(cols)
        _check_sums(e)
        assert e["raw_score"] == pytest.approx(row["prediction"], rel=1e-4)
