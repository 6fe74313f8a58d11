import base64
import hashlib
import hmac
import time

import numpy as np
import pytest

from tarn.core.tracking import redact
from tarn.serve.app import WEBHOOK_MAX_AGE_S, Deliveries, verify_webhook
from tarn.serve.inputs import (
    Column,
    Columnar,
    InputError,
    InputSchema,
    Split,
    contract_violations,
    nesting_depth,
    parse_json,
    records_from_payload,
    refusal,
    to_columns,
)

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


# --------------------------------------------------------------------------- hostile bodies
@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"[" * 100_000 + b"]" * 100_000, 400, ""),  # orjson's own limit: malformed
    (b"[NaN," + b"[" * 100_000 + b"]" * 100_001, 400, "nested"),  # the fallback path
    (b'["\\ud800"]', 400, "lone surrogate"),
    (b'[NaN, {"\\udc00": 1}]', 400, "lone surrogate"),
    (b'[NaN, 1' + b"0" * 5000 + b"]", 400, "malformed"),
    (b"", 400, "empty body"),
    (b'"[' + b'\\"' * 1000 + b"]", 400, "malformed"),  # unterminated string: linear scan
])
def test_parse_refuses_hostile_bodies(body, status, needle):
    with pytest.raises(InputError) as e:
        parse_json(body)
    assert e.value.status == status and needle in str(e.value)


def test_parse_keeps_nan_so_the_field_can_be_named():
    got = parse_json(b'[{"age": NaN, "sex": "F"}]')
    with pytest.raises(InputError, match="'age' must be finite"):
        to_columns(got, COLS, 10)


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth(b'[["[[[\\"[", {"a": [1]}]]') == 4
    assert nesting_depth(b'["\\\\", [[1]]]') == 3
    assert nesting_depth(b"") == 0


@pytest.mark.parametrize("value", [2 ** 64, 2 ** 70, -(2 ** 63) - 2 ** 20, 10 ** 400])
def test_integers_beyond_64_bits_name_the_field(value):
    body = b'[{"age": %d, "sex": "F"}]' % value
    with pytest.raises(InputError) as e:
        to_columns(records_from_payload(parse_json(body), COLS), COLS, 10)
    assert e.value.status == 422 and "'age'" in str(e.value)


def test_a_double_column_refuses_an_int_beyond_any_float():
    with pytest.raises(InputError) as e:
        cols([{"age": 1, "sex": "F", "hours": 10 ** 400}])
    assert e.value.status == 422 and "'hours'" in str(e.value)


def test_a_lone_surrogate_in_a_column_names_the_field():
    with pytest.raises(InputError, match="row 1: column 'sex' is not valid Unicode"):
        cols([{"age": 1, "sex": "F"}, {"age": 1, "sex": "\ud800"}])


@pytest.mark.parametrize("payload", [
    {"inputs": {"age": list(range(101)), "sex": ["F"] * 101}},
    {"dataframe_records": [{}] * 101},
    {"dataframe_split": {"columns": ["age"], "data": [[1]] * 101}},
    [{}] * 101,
])
def test_row_count_is_checked_before_rows_are_built(payload):
    with pytest.raises(InputError) as e:
        records_from_payload(payload, COLS, max_rows=100)
    assert e.value.status == 413


def test_columnar_inputs_are_never_expanded_into_rows():
    got = records_from_payload({"inputs": {"age": [1, 2], "sex": ["F", "M"]}}, COLS, 10)
    assert isinstance(got, Columnar) and got.rows == 2


# --------------------------------------------------------------------------- webhook
def test_webhook_timestamp_is_checked_before_any_arithmetic():
    body = b"{}"
    for stamp in ("9" * 400, "\u00b2", "-1", "1e9", " 1"):
        h = {"x-mlflow-delivery-id": "d", "x-mlflow-timestamp": stamp,
             "x-mlflow-signature": "v1,AAAA"}
        assert verify_webhook(h, body, "s") == "bad X-MLflow-Timestamp", stamp


def test_webhook_delivery_is_accepted_once_in_the_window():
    body, now = b"{}", int(time.time())
    seen = Deliveries()
    h = {"x-mlflow-delivery-id": "d1", "x-mlflow-timestamp": str(now),
         "x-mlflow-signature": _sign("s", "d1", str(now), body)}
    assert verify_webhook(h, body, "s", seen=seen) == ""
    assert "replay" in verify_webhook(h, body, "s", seen=seen)
    # a forged delivery never takes a slot: the signature is checked first
    forged = {**h, "x-mlflow-delivery-id": "d2"}
    assert "signature" in verify_webhook(forged, body, "s", seen=seen)
    assert len(seen._until) == 1  # noqa: SLF001
    later = now + WEBHOOK_MAX_AGE_S + 1  # the id is forgotten once its timestamp is stale
    assert "stale" in verify_webhook(h, body, "s", now=later, seen=seen)


# --------------------------------------------------------------------------- the app
class _Predictor:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def scores(self, columns):
        if self.fail:
            raise RuntimeError("boom at postgresql://bob:hunter2@db/mlflow")
        return np.full(len(columns["age"]), 0.25)


def _client(tmp_path, fail: bool = False, last_error: str = "", columns=None, **serve):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from tarn.config import params_from_dict
    from tarn.core.task import Task
    from tarn.serve.app import ServerState, create_app
    from tarn.serve.deploy import Deployed, ModelHolder, Status
    from tarn.serve.predlog import PredictionLog
    from tests.support.project import repo_params_dict

    holder = ModelHolder()
    holder.current = Deployed("m", "3", _Predictor(fail), columns or COLS, "onnx", "now",
                              str(tmp_path / "bundles" / "m-v3"), Task("binary", ("no", "yes")))
    recon = SimpleNamespace(status=Status(last_error=last_error))
    log = PredictionLog(tmp_path / "log", 1, 0.05, file_idle_s=0.1).start()
    raw = repo_params_dict()
    raw["serve"].update(serve)
    state = ServerState(params_from_dict(raw), tmp_path, holder, recon, log,
                        admin_secret="adm")
    return TestClient(create_app(state), raise_server_exceptions=False), log


def test_non_json_bodies_are_415_and_not_scored(tmp_path):
    c, log = _client(tmp_path)
    rows = b'[{"age": 1, "sex": "F"}]'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = c.post("/predict", content=rows, headers=headers)
        assert r.status_code == 415 and r.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    ok = c.post("/predict", content=rows, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200
    log.close()
    assert log.stats()["written_rows"] == 1


def test_an_unexpected_error_is_a_json_500_with_an_id_and_counted(tmp_path, caplog):
    c, log = _client(tmp_path, fail=True)
    r = c.post("/predict", json=[{"age": 1, "sex": "F"}])
    assert r.status_code == 500
    body = r.json()
    assert body["error_code"] == "INTERNAL_ERROR" and len(body["error_id"]) == 16
    assert "hunter2" not in r.text
    text = c.get("/metrics").text
    assert "tarn_unhandled_errors_total 1.0" in text
    assert 'tarn_requests_total{endpoint="predict",status="500"} 1.0' in text
    assert "tarn_predlog_flush_failures_total" in text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert body["error_id"] in logged
    assert c.get("/health").status_code == 200
    log.close()


def test_client_paths_with_nul_are_404(tmp_path):
    c, log = _client(tmp_path)
    for path in ("/client/%00", "/client/bundle/a%00b", "/client/a%0ab"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", path
        assert r.json()["request_id"] == r.headers["x-request-id"], path
    log.close()


def test_version_hides_paths_and_raw_errors_from_strangers(tmp_path):
    err = ("version 4 failed to load: cannot open postgresql://bob:hunter2@db/mlflow at "
           f"{tmp_path}/x")
    c, log = _client(tmp_path, last_error=err)
    public = c.get("/version").json()
    assert public["bundle"] == "m-v3" and public["last_error"] == "version 4 failed to load"
    assert str(tmp_path) not in str(public)
    full = c.get("/version", headers={"Authorization": "Bearer adm"}).json()
    assert full["bundle"] == str(tmp_path / "bundles" / "m-v3")
    assert "bob:***@db" in full["last_error"] and "hunter2" not in full["last_error"]
    log.close()


# --------------------------------------------------------------------------- redaction
@pytest.mark.parametrize(("text", "want"), [
    ("postgresql+psycopg://bob:s3cr3t@db:5432/mlflow down", "postgresql+psycopg://bob:***@db"),
    ("http://token@host/x", "http://***@host/x"),
    ("https://h/p?a=1&password=abc&token=xyz", "https://h/p?a=1&password=***&token=***"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ("mail bob@example.com", "mail bob@example.com"),
])
def test_redact(text, want):
    assert want in redact(text)


# --------------------------------------------------------------------------- notify
def test_notify_sends_the_secret_only_over_https_or_loopback():
    from tarn.lifecycle.promote import notify_server

    for url in ("http://example.com:8000", "http://10.0.0.5:8000", "ftp://127.0.0.1/"):
        assert "not notified" in notify_server(url, "s"), url


def test_notify_does_not_follow_redirects():
    import http.server
    import threading

    from tarn.lifecycle.promote import notify_server

    hits = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append((self.path, self.headers.get("Authorization")))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{srv.server_port}/stolen")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        msg = notify_server(f"http://user:pw@127.0.0.1:{srv.server_port}", "s")
    finally:
        srv.shutdown()
    assert "redirected (not followed)" in msg and "pw" not in msg
    assert [p for p, _ in hits] == ["/admin/reconcile"]


# --------------------------------------------------------------------------- one vocabulary
CONTRACT = [Column("age", "long", True, (), None, 17, 100),
            Column("education_num", "long", True, ("education-num",), None, 1, 16),
            Column("sex", "string", True, (), frozenset({"Female", "Male"})),
            Column("workclass", "string", False, (), frozenset({"Private", "State-gov"}))]
ROW = {"age": 30, "education_num": 9, "sex": "Male", "workclass": "Private"}


@pytest.mark.parametrize("name", ["education-num", "Education-Num", "education num",
                                  " EDUCATION_NUM "])
def test_aliases_and_spellings_are_read_as_the_etl_reads_a_header(name):
    from tarn.core.schema import normalize_name

    rec = {**{k: v for k, v in ROW.items() if k != "education_num"}, name: 13}
    for payload in ([rec], [rec, dict(ROW)], {"dataframe_split": {"columns": list(rec),
                                                                  "data": [list(rec.values())]}},
                    {"inputs": {k: [v] for k, v in rec.items()}}):
        got = to_columns(records_from_payload(payload, CONTRACT), CONTRACT, 10)
        assert got["education_num"][0] == 13, payload
    assert InputSchema(CONTRACT).resolve(name) == "education_num" == normalize_name(
        "education_num")


def test_two_names_for_one_column_are_refused():
    with pytest.raises(InputError, match="two names for column 'education_num'"):
        to_columns([{**ROW, "education-num": 3}], CONTRACT, 10)
    split = {"dataframe_split": {"columns": ["education_num", "education-num"],
                                 "data": [[1, 2]]}}
    with pytest.raises(InputError, match="duplicates"):
        to_columns(records_from_payload(split, CONTRACT), CONTRACT, 10)


def test_the_contract_flags_what_the_etl_would_quarantine():
    rows = [dict(ROW), {**ROW, "workclass": "Spaceship"}, {**ROW, "age": 150},
            {**ROW, "workclass": None, "age": 17}]
    found = contract_violations(to_columns(rows, CONTRACT, 10), CONTRACT)
    assert [(v.row, v.column, v.reason) for v in found] == [
        (1, "workclass", "unknown_category"), (2, "age", "out_of_range")]
    assert found[0].detail == "workclass: unknown category 'Spaceship'"
    assert found[1].detail == "age: 150 outside [17, 100]"
    e = refusal(found, CONTRACT)
    assert e.status == 422 and "row 1: column 'workclass': unknown category 'Spaceship'" in \
        str(e) and "Private" in str(e) and "1 more" in str(e)
    single = contract_violations(to_columns([{**ROW, "age": 16}], CONTRACT, 1), CONTRACT)
    assert [v.detail for v in single] == ["age: 16 outside [17, 100]"]


def test_columns_from_the_contract_carry_aliases_categories_and_ranges():
    from tarn.config import params_from_dict
    from tarn.core.features import input_schema
    from tarn.serve.inputs import columns_from_signature
    from tests.support.project import repo_params_dict

    params = params_from_dict(repo_params_dict())
    cols = {c.name: c for c in columns_from_signature(
        input_schema(params.schema, params.prepare).to_dict(), params.schema)}
    assert cols["education_num"].aliases == ("education-num",)
    assert cols["age"].min == 17 and cols["age"].max == 100
    assert "Private" in cols["workclass"].categories


def _post(c, body, **headers):
    import json as _json
    return c.post("/predict", content=_json.dumps(body),
                  headers={"Content-Type": "application/json", **headers})


def test_refuse_names_the_field_and_counts_it(tmp_path):
    c, log = _client(tmp_path, columns=CONTRACT)
    r = _post(c, [{**ROW, "workclass": "Spaceship"}])
    assert r.status_code == 422 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "column 'workclass': unknown category 'Spaceship'" in r.json()["message"]
    ok = _post(c, [{**{k: v for k, v in ROW.items() if k != "education_num"},
                    "education-num": 9}])
    assert ok.status_code == 200, ok.text
    text = c.get("/metrics").text
    assert ('tarn_contract_violations_total{action="refused",column="workclass",'
            'reason="unknown_category"} 1.0') in text
    log.close()


def test_flag_scores_marks_the_row_and_logs_it(tmp_path):
    import pandas as pd

    c, log = _client(tmp_path, columns=CONTRACT, unknown_values="flag")
    r = _post(c, [dict(ROW), {**ROW, "age": 120}], **{"X-Request-Id": "my-req.42"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "my-req.42" == r.headers["x-request-id"]
    assert "violations" not in body["predictions"][0]
    assert body["predictions"][1]["violations"] == ["age: 120 outside [17, 100]"]
    assert r.headers["x-contract-violations"] == "1"
    inv = c.post("/invocations", json={"dataframe_records": [{**ROW, "sex": "X"}]})
    assert inv.status_code == 200 and inv.json()["violations"][0]["column"] == "sex"
    assert 'action="flagged",column="age"' in c.get("/metrics").text
    log.close()
    df = pd.concat(pd.read_parquet(f) for f in (tmp_path / "log").glob("preds-*.parquet"))
    mine = df[df["request_id"] == "my-req.42"]
    assert len(mine) == 2 and mine["violations"].isna().tolist() == [True, False]
    assert mine["violations"].iloc[1] == "age: 120 outside [17, 100]"


@pytest.mark.parametrize(("sent", "kept"), [("abc-123", True), ("a" * 64, True),
                                            ("a" * 65, False), ("bad id", False),
                                            ("<script>", False), ("", False)])
def test_a_client_request_id_is_kept_only_when_it_is_a_safe_short_token(tmp_path, sent, kept):
    c, log = _client(tmp_path)
    r = _post(c, [{"age": 1, "sex": "F"}], **{"X-Request-Id": sent})
    rid = r.json()["request_id"]
    assert r.headers["x-request-id"] == rid and (rid == sent) is kept
    if not kept:
        assert len(rid) == 32
    assert c.get("/health").headers["x-request-id"]
    log.close()


@pytest.mark.parametrize(("status", "code"), [(400, "MALFORMED_REQUEST"),
                                              (401, "UNAUTHENTICATED"),
                                              (404, "RESOURCE_DOES_NOT_EXIST"),
                                              (405, "METHOD_NOT_ALLOWED"),
                                              (413, "REQUEST_TOO_LARGE"),
                                              (415, "UNSUPPORTED_MEDIA_TYPE"),
                                              (422, "INVALID_PARAMETER_VALUE"),
                                              (503, "UNAVAILABLE")])
def test_error_codes_match_the_status(tmp_path, status, code):
    c, log = _client(tmp_path)
    r = {400: lambda: c.post("/predict", content=b"{", headers={"Content-Type":
                                                                 "application/json"}),
         401: lambda: c.post("/admin/reconcile", headers={"Authorization": "Bearer no"}),
         404: lambda: c.get("/nowhere"),
         405: lambda: c.get("/predict"),
         413: lambda: c.post("/predict", content=b"[" + b" " * 6_000_000 + b"]",
                             headers={"Content-Type": "application/json"}),
         415: lambda: c.post("/predict", content=b"[]", headers={"Content-Type": "text/csv"}),
         422: lambda: c.post("/predict", json=[{"age": "x", "sex": "F"}]),
         503: lambda: c.post("/webhooks/mlflow", content=b"{}")}[status]()
    assert r.status_code == status and r.json()["error_code"] == code, r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]
    log.close()


@pytest.mark.parametrize("name", ["education-num", "Hours-per-week", "  native  country ",
                                  "A--b_c", "x\ty", "ÉCOLE-num"])
def test_the_edge_runner_normalizes_names_as_the_etl_does(name):
    from tarn.core.schema import normalize_name
    from tarn.edge.runner import normalize_name as edge_normalize

    assert edge_normalize(name) == normalize_name(name)


def test_the_edge_contract_reads_schema_json():
    from tarn.edge.runner import Contract

    c = Contract({"columns": [
        {"name": "age", "type": "long", "min": 17, "max": 100, "aliases": []},
        {"name": "education_num", "type": "long", "aliases": ["education-num"], "min": 1},
        {"name": "sex", "type": "string", "categories": ["Female", "Male"]}],
        "missing_values": ["?", "", "NA"], "unknown_categories": "quarantine"})
    assert c.resolve("Education-Num") == "education_num" and c.resolve("zip") is None
    assert "NA" in c.missing
    cols = {"age": np.array([30.0, 150.0, np.nan]), "education_num": np.array([0.0, 3, 3]),
            "sex": np.array(["Male", None, "X"], dtype=object)}
    assert [(r, n, why) for r, n, why, _ in c.violations(cols)] == [
        (0, "education_num", "out_of_range"), (1, "age", "out_of_range"),
        (2, "sex", "unknown_category")]
    assert Contract({"columns": [{"name": "sex", "categories": ["F"]}],
                     "unknown_categories": "keep"}).violations({"sex": ["Q"]}) == []
    assert Contract(None).resolve("age") is None  # an old bundle: names only
