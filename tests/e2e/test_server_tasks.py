"""Serving a multiclass and a regression model over real sockets: /predict and /invocations per
task, the version's card (task, classes, contract) deciding, the parity-checked bundle, the
edge runner and the prediction log; a version trained on another contract is checked against
its own columns, and a rollback puts the old contract back."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pandas as pd
import pytest

from tarn.core.catalog import load_split
from tarn.core.features import to_model_frame
from tarn.core.task import Task
from tarn.edge.runner import predict_csv
from tests.support.serving import wait_version
from tests.support.task_models import (
    fit_version,
    force_production,
    narrower,
    registry,
    served_task_project,
)

pytestmark = pytest.mark.slow
DROPPED = {"multiclass": "sepal_width", "regression": "bp"}  # required in both contracts


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def project(request, tmp_path_factory):
    """(kind, params, root, server) with version 1 (the full contract) in production."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"served-{kind}")
    params, server = served_task_project(root, kind)
    yield kind, params, root, server
    server.stop()


def records(params, root, n: int = 12, drop: str | None = None) -> list[dict]:
    frame = load_split(params, root, "test").frame.head(n)
    cols = [c.name for c in params.schema.columns if c.name != drop]
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in frame[cols].astype(object).to_dict("records")]


def python_scores(params, root, version: str, rows: list[dict], drop=()) -> np.ndarray:
    pipe, card = registry(params, root).load_with_card(version)
    schema = narrower(params.schema, drop)
    return Task.from_card(card).scores(pipe, to_model_frame(pd.DataFrame(rows), schema,
                                                            params.prepare))


def test_version_says_what_it_predicts_and_the_bundle_serves(project):
    kind, params, root, server = project
    info = server.http.get("/version").json()
    assert info["task"] == kind and info["source"] == "onnx", info
    assert info["classes"] == list(params.schema.classes)
    meta = json.loads((root / "bundles" / f"{params.mlflow.registered_model}-v1" /
                       "metadata.json").read_text())
    assert meta["task"] == kind and meta["classes"] == list(params.schema.classes)
    assert meta["target"] == params.schema.target.name
    assert meta["parity"]["labels_equal"]
    assert meta["parity"]["max_abs_diff"] <= params.edge.parity_tolerance
    assert meta["parity"]["measure"] == ("relative" if kind == "regression" else "absolute")
    assert "tags" in meta and not any(k.startswith("tarn.promot") for k in meta["tags"])


def test_predict_answers_per_task_with_the_models_own_scores(project):
    kind, params, root, server = project
    rows = records(params, root)
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    want = python_scores(params, root, "1", rows)
    classes = list(params.schema.classes)
    if kind == "multiclass":
        got = np.array([[p["probabilities"][c] for c in classes] for p in preds])
        assert got.shape == (len(rows), 3) and np.abs(got - want).max() <= 1e-4
        assert np.allclose(got.sum(axis=1), 1, atol=1e-5)
        labels = want.argmax(axis=1)
        assert [p["label"] for p in preds] == labels.tolist()
        assert [p["class"] for p in preds] == [classes[i] for i in labels]
        assert len(set(labels.tolist())) > 1  # the rows are not all one class
    else:
        got = np.array([p["prediction"] for p in preds])
        assert set(preds[0]) == {"prediction"}
        assert np.all(np.abs(got - want) <= 1e-4 * np.maximum(1, np.abs(want)))
        assert got.std() > 1  # real predictions, not a constant


def test_invocations_answer_as_mlflow_models_serve(project):
    kind, params, root, server = project
    rows = records(params, root, 5)
    cols = list(rows[0])
    split = {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rows]}}
    for body in (split, {"dataframe_records": rows}, {"inputs": rows}):
        r = server.http.post("/invocations", json=body)
        assert r.status_code == 200, r.text
        got = np.array(r.json()["predictions"])
        want = python_scores(params, root, "1", rows)
        assert got.shape == want.shape  # (n, K) probabilities, or (n,) values
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_contract_refusals_come_from_the_versions_card(project):
    kind, params, root, server = project
    row = records(params, root, 1)[0]
    sensitive = params.schema.sensitive[0]
    r = server.http.post("/predict", json=[{**row, sensitive: "nowhere"}])
    assert r.status_code == 422 and "unknown category 'nowhere'" in r.json()["message"]
    listed = next(c.categories for c in params.schema.columns if c.name == sensitive)
    assert all(c in r.json()["message"] for c in listed)  # what the contract allows


def test_the_prediction_log_holds_the_tasks_columns(project):
    kind, params, root, server = project
    rows = records(params, root, 6)
    answer = server.http.post("/predict", json=rows)
    rid = answer.json()["request_id"]
    deadline, mine = time.monotonic() + 20, pd.DataFrame()
    while time.monotonic() < deadline and len(mine) < 6:
        files = list((root / params.serve.prediction_log).glob("preds-*.parquet"))
        log = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
        mine = log[log["request_id"] == rid] if len(log) else log
        time.sleep(0.2)
    assert len(mine) == 6
    preds = answer.json()["predictions"]
    if kind == "multiclass":
        assert {"proba_0", "proba_1", "proba_2", "label"} <= set(mine.columns)
        assert "proba" not in mine.columns
        assert mine["label"].tolist() == [p["label"] for p in preds]
        assert np.allclose(mine["proba_1"], [p["probabilities"][params.schema.classes[1]]
                                             for p in preds])
    else:
        assert "prediction" in mine.columns and "proba" not in mine.columns
        assert mine["prediction"].tolist() == [p["prediction"] for p in preds]


def test_edge_runner_scores_the_bundle_like_the_server(project, tmp_path):
    kind, params, root, server = project
    rows = records(params, root, 20)
    path = tmp_path / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False, na_rep="NA")  # the contract's own marker
    out = predict_csv(root / "bundles" / f"{params.mlflow.registered_model}-v1", path)
    want = python_scores(params, root, "1", rows)
    if kind == "multiclass":
        got = np.array([[r[f"proba_{i}"] for i in range(3)] for r in out])
        assert np.abs(got - want).max() <= 1e-4
        assert [r["class"] for r in out] == [params.schema.classes[i]
                                             for i in want.argmax(axis=1)]
    else:
        got = np.array([r["prediction"] for r in out])
        assert np.all(np.abs(got - want) <= 1e-4 * np.maximum(1, np.abs(want)))
    cli = tmp_path / "out.csv"
    from tests.support.project import sh
    res = sh(tmp_path, "python", "-m", "tarn.edge.runner",
             str(root / "bundles" / f"{params.mlflow.registered_model}-v1"), str(path))
    cli.write_text(res.stdout)
    header = next(csv.reader(res.stdout.splitlines()))
    assert header == (["proba_0", "proba_1", "proba_2", "label", "class"]
                      if kind == "multiclass" else ["prediction"])


def test_a_version_on_another_contract_is_served_with_its_own_columns(project):
    """v2 was trained without one required column: once it serves, the column is unknown
    (422) and rows without it are scored; rolling back to v1 makes it required again."""
    kind, params, root, server = project
    gone = DROPPED[kind]
    v2 = fit_version(params, root, drop=(gone,))
    full, narrow = records(params, root, 4), records(params, root, 4, drop=gone)
    try:
        force_production(params, root, v2)
        server.admin()
        wait_version(server, v2, timeout=120)
        r = server.http.post("/predict", json=full)
        assert r.status_code == 422 and gone in r.json()["message"] and "unknown" in \
            r.json()["message"]
        r = server.http.post("/predict", json=narrow)
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        want = python_scores(params, root, v2, narrow, drop=(gone,))
        first = got[0]["probabilities"][params.schema.classes[0]] if kind == "multiclass" \
            else got[0]["prediction"]
        assert abs(first - (want[0, 0] if kind == "multiclass" else want[0])) <= \
            1e-4 * max(1, abs(first))
        meta = json.loads((root / "bundles" / f"{params.mlflow.registered_model}-v{v2}" /
                           "schema.json").read_text())
        assert gone not in [c["name"] for c in meta["columns"]]
    finally:
        registry(params, root).rollback("test: back to the full contract")
        server.admin()
        wait_version(server, "1", timeout=120)
    r = server.http.post("/predict", json=narrow)
    assert r.status_code == 422 and f"column {gone!r} is required" in r.json()["message"]
    assert server.http.post("/predict", json=full).status_code == 200
