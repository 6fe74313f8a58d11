import base64
import hashlib
import hmac
import time

import numpy as np
import pytest

from tarn.serve.app import verify_webhook
from tarn.serve.inputs import Column, InputError, Split, records_from_payload, to_columns

COLS = [Column("age", "long", True), Column("hours", "double", False),
        Column("sex", "string", True), Column("job", "string", False)]


def cols(records):
    return to_columns(records_from_payload(records, COLS), COLS, 100)


def test_every_payload_shape_gives_the_same_columns():
    recs = [{"age": 30, "hours": None, "sex": "F", "job": None},
            {"age": 40, "hours": 1.5, "sex": "M", "job": "x"}]
    split = {"dataframe_split": {"columns": ["sex", "age", "hours", "job"],
                                 "data": [["F", 30, None, None], ["M", 40, 1.5, "x"]]}}
    columnar = {"inputs": {k: [r[k] for r in recs] for k in recs[0]}}
    variants = [recs, {"dataframe_records": recs}, {"instances": recs}, {"inputs": recs},
                split, columnar]
    first = cols(variants[0])
    assert first["age"].tolist() == [30.0, 40.0] and np.isnan(first["hours"][0])
    assert first["job"].tolist() == [None, "x"]
    for v in variants[1:]:
        got = to_columns(records_from_payload(v, COLS), COLS, 100)
        for k in first:
            assert np.array_equal(got[k], first[k], equal_nan=first[k].dtype != object), k


def test_split_is_kept_columnar():
    assert isinstance(records_from_payload({"dataframe_split": {"columns": ["age"],
                                                                "data": [[1]]}}, COLS), Split)


@pytest.mark.parametrize(("records", "needle"), [
    ([], "no rows"),
    ([{"age": "1", "sex": "F"}], "'age' must be a number, got str"),
    ([{"age": True, "sex": "F"}], "'age' must be a number, got bool"),
    ([{"age": 1.5, "sex": "F"}], "'age' must be an integer"),
    ([{"age": 1, "sex": "F", "hours": float("inf")}], "'hours' must be finite"),
    ([{"age": 1}], "row 0: column 'sex' is required"),
    ([{"age": 1, "sex": "F"}, {"age": 2, "sex": 3}], "row 1: column 'sex' must be a string"),
    ([{"age": 1, "sex": "F", "zip": 1}], "unknown column(s) ['zip']"),
    ([[1, 2.0, "F"]], "expected 4 values"),
    ([1, 2], "each row must be an object"),
    ({"dataframe_split": {"columns": ["age", "age"], "data": [[1, 1]]}}, "duplicates"),
    ({"dataframe_split": {"columns": ["age", "sex"], "data": [[1]]}}, "data[0]"),
    ({"dataframe_split": {"columns": ["zip"], "data": [[1]]}}, "unknown column(s) ['zip']"),
    ({"inputs": {"age": [1, 2], "sex": ["F"]}}, "equal-length"),
])
def test_bad_input_names_the_field(records, needle):
    with pytest.raises(InputError) as e:
        cols(records)
    assert needle in str(e.value) and e.value.status == 422


def test_too_many_rows_is_413():
    with pytest.raises(InputError) as e:
        to_columns([{"age": 1, "sex": "F"}] * 101, COLS, 100)
    assert e.value.status == 413


def _sign(secret: str, delivery: str, stamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{delivery}.{stamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def test_webhook_signature_fresh_valid_and_tampered():
    body, now = b'{"entity": "model_version_alias"}', int(time.time())
    h = {"x-mlflow-delivery-id": "d1", "x-mlflow-timestamp": str(now),
         "x-mlflow-signature": _sign("s", "d1", str(now), body)}
    assert verify_webhook(h, body, "s") == ""
    assert "bad webhook signature" in verify_webhook(h, body + b" ", "s")
    assert "bad webhook signature" in verify_webhook(h, body, "other")
    old = {**h, "x-mlflow-timestamp": str(now - 3600),
           "x-mlflow-signature": _sign("s", "d1", str(now - 3600), body)}
    assert "stale" in verify_webhook(old, body, "s")
    assert "missing" in verify_webhook({}, body, "s")
