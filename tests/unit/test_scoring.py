"""Scoring without HTTP (tarn.serve.scoring.invocations): the happy path per endpoint, and
every bad input answered with the status and JSON error body the server sends for it (the
same request through the app gives byte-for-byte the same body)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from tarn.config import params_from_dict
from tarn.core.task import Task
from tarn.serve import scoring
from tarn.serve.deploy import Deployed, ModelHolder, PythonPredictor, Status
from tarn.serve.inputs import Column
from tests.support.project import repo_params_dict

CONTRACT = [Column("age", "long", True, (), None, 17, 100),
            Column("education_num", "long", True, ("education-num",), None, 1, 16),
            Column("sex", "string", True, (), frozenset({"Female", "Male"})),
            Column("workclass", "string", False, (), frozenset({"Private", "State-gov"}))]
ROW = {"age": 30, "education_num": 9, "sex": "Male", "workclass": "Private"}
JSON = "application/json"


class _Predictor:
    def scores(self, columns):
        return np.linspace(0.2, 0.8, len(columns["age"]))


def _serve(**serve):
    raw = repo_params_dict()
    raw["serve"].update(serve)
    return params_from_dict(raw)


def _deployed(predictor=None, columns=CONTRACT, task=None) -> Deployed:
    return Deployed("m", "3", predictor or _Predictor(), columns, "onnx", "now", None,
                    task or Task("binary", ("<=50K", ">50K"), threshold=0.5))


def _call(body, content_type=JSON, endpoint="predict", deployed="default", **serve):
    d = _deployed() if deployed == "default" else deployed
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return scoring.invocations(data, content_type, d, _serve(**serve).serve,
                               endpoint=endpoint, request_id="req-1")


def test_predict_and_invocations_answer_without_http():
    a = _call([ROW, {**ROW, "age": 50}])
    assert a.status == 200 and a.version == "3" and a.rows == 2 and not a.violations
    body = orjson.loads(a.body)
    assert body["model_version"] == "3" and body["request_id"] == "req-1"
    assert [r["label"] for r in body["predictions"]] == [0, 1]
    assert body["predictions"][1] == {"probability": 0.8, "label": 1, "class": ">50K"}
    inv = orjson.loads(_call({"dataframe_records": [ROW]}, endpoint="invocations").body)
    assert inv == {"predictions": [[0.8, 0.2]], "request_id": "req-1"}
    charset = _call([ROW], content_type=b"application/json; charset=UTF-8")
    assert charset.status == 200


def test_flagged_values_are_scored_and_returned_for_counting():
    a = _call([ROW, {**ROW, "age": 120}], unknown_values="flag")
    assert a.status == 200 and [v.column for v in a.violations] == ["age"]
    rows = orjson.loads(a.body)["predictions"]
    assert "violations" not in rows[0] and rows[1]["violations"] == ["age: 120 outside [17, 100]"]


BAD = {  # name: (body, content type, endpoint, serve overrides) -> status, message part
    "malformed JSON": ((b"[{", JSON, "predict", {}), 400, "malformed JSON"),
    "not JSON media": ((b"[]", "text/csv", "predict", {}), 415, "Content-Type"),
    "no media type": ((b"[]", None, "predict", {}), 415, "Content-Type"),
    "UTF-16": (("[]".encode("utf-16"), JSON, "predict", {}), 415, "not UTF-8"),
    "bad value": (([{**ROW, "age": "x"}], JSON, "predict", {}), 422, "age"),
    "unknown category": (([{**ROW, "workclass": "Spaceship"}], JSON, "predict", {}), 422,
                         "column 'workclass': unknown category 'Spaceship'"),
    "too many rows": (([ROW] * 3, JSON, "predict", {"max_rows": 2}), 413, "rows"),
    "too many to explain": (([ROW] * 3, JSON, "explain", {"explain_max_rows": 2}), 413,
                            "rows"),
    "explain not boolean": (({"dataframe_records": [ROW], "explain": "yes"}, JSON, "predict",
                             {}), 422, "explain must be true or false"),
    "empty list": (([], JSON, "invocations", {}), 422, ""),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gets_the_status_and_error_body_the_server_sends(tmp_path, name):
    from fastapi.testclient import TestClient

    from tarn.serve.app import ServerState, create_app

    (body, ctype, endpoint, serve), status, says = BAD[name]
    a = _call(body, ctype, endpoint, **serve)
    got = orjson.loads(a.body)
    assert a.status == status, got
    assert got["error_code"] == scoring.error_code(status) and says in got["message"]
    assert got["request_id"] == "req-1" and a.version == "" and a.rows == 0
    # the same request over the app: the same status and byte-for-byte the same body
    holder = ModelHolder()
    holder.current = _deployed()
    state = ServerState(_serve(**serve), tmp_path, holder,
                        type("R", (), {"status": Status()})(), None)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Request-Id": "req-1", **({"Content-Type": ctype} if ctype else {})}
    r = TestClient(create_app(state)).post(f"/{endpoint}", content=data, headers=headers)
    assert (r.status_code, r.content) == (a.status, a.body)


def test_no_model_yet_is_503_and_a_refusal_carries_its_violations():
    a = _call([ROW], deployed=None)
    assert a.status == 503 and orjson.loads(a.body)["error_code"] == "UNAVAILABLE"
    refused = _call([{**ROW, "sex": "X"}])
    assert refused.status == 422 and [v.column for v in refused.violations] == ["sex"]
    with pytest.raises(ValueError, match="unknown scoring endpoint"):
        _call([ROW], endpoint="score")


def test_explain_answers_contributions_that_add_up_without_http():
    from tarn.core.features import input_schema
    from tarn.serve.inputs import columns_from_signature
    from tests.unit.test_explain import _adult, _fit

    p, X, y = _adult(300)
    pipe = _fit(p, X, y, "binary", rounds=5)
    task = Task.of(p.schema)
    cols = columns_from_signature(input_schema(p.schema, p.prepare).to_dict(), p.schema)
    d = Deployed("m", "8", PythonPredictor(pipe, cols, task), cols, "python", "now", None, task)
    rows = json.loads(X.head(2).to_json(orient="records"))
    a = scoring.invocations(json.dumps(rows).encode(), JSON, d, _serve().serve,
                            endpoint="explain", request_id="r")
    assert a.status == 200, a.body
    body = orjson.loads(a.body)
    margin = pipe[-1].predict(pipe[0].transform(X.head(2)), output_margin=True)
    for row, m in zip(body["predictions"], margin, strict=True):
        e = row["explanation"]
        assert abs(e["base_value"] + sum(e["contributions"].values()) - m) < 1e-4
        assert abs(e["raw_score"] - m) < 1e-4
        assert abs(row["probability"] - 1 / (1 + np.exp(-m))) < 1e-5
    assert "TreeSHAP" in body["explanation"]["method"]
