"""Fuzz the server over a real socket: no request, however odd, may produce a 5xx, and every
error is a JSON body.

Two fuzzers: schemathesis from the OpenAPI schema (its CLI: its pytest plugin does not load
with this pytest), and a hand-written hypothesis strategy for what a schema-driven fuzzer does
not try: bodies that are not quite JSON (NaN next to deep nesting, huge integers, lone
surrogates, stray bytes), the content types a web page can send, control characters in paths
and numbers of any size in the webhook headers."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tarn.lifecycle.promote import promote, registry
from tests.support.project import BIN
from tests.support.serving import sample_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_project(shared_served_project):
    """This module only reads: the session's shared project and server
    (tests/e2e/conftest.py)."""
    return shared_served_project


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def promoted(server, served_project):
    params, root = served_project
    if registry(params, root).production() is None:
        promote(params, root, "1")
    server.admin()
    return server


def test_no_request_produces_a_server_error(promoted, tmp_path):
    res = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{promoted.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "60", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "/invocations" in out and "/predict" in out  # the scoring endpoints were fuzzed


# ------------------------------------------------------------------ hand-written strategy
COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
           "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
           "hours_per_week", "native_country", "zip"]

# values that are not what a column holds: numbers of any size, non-finite literals (as text,
# since they are not JSON), strings with lone surrogates / NUL / bytes, nesting, booleans
hostile_number = st.one_of(
    st.integers(), st.integers(min_value=2 ** 63 - 10, max_value=2 ** 80),
    st.integers(min_value=-(2 ** 80), max_value=-(2 ** 63) + 10),
    st.sampled_from(["1" + "0" * 400, "-1" + "0" * 5000, "1e400", "-1e999", "NaN",
                     "Infinity", "-Infinity", "1.5", "-0", "0e0"]).map(lambda t: RawJson(t)),
    st.floats(allow_nan=False, allow_infinity=False))
hostile_string = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\x00", "\u202e", "\ufeff", "x" * 5000]))
leaf = st.one_of(st.none(), st.booleans(), hostile_number, hostile_string)


class RawJson:
    """A JSON-ish token written as is (NaN, 1e400, a 5000-digit integer)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dump(value) -> str:
    """JSON text for a value tree holding RawJson tokens; lone surrogates kept as escapes."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: "\ud800" becomes the escape text


record = st.dictionaries(st.sampled_from(COLUMNS), leaf, max_size=6)
rows = st.lists(st.one_of(record, st.lists(leaf, max_size=4), leaf), max_size=4)


@st.composite
def nested(draw):
    depth = draw(st.sampled_from([40, 1_000, 1_100, 100_000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    prefix = draw(st.sampled_from(["", "[NaN,", '{"inputs": ']))
    close_prefix = {"": "", "[NaN,": "]", '{"inputs": ': "}"}[prefix]
    return prefix + opener * depth + closer * depth + close_prefix


payload_text = st.one_of(
    rows.map(dump),
    st.fixed_dictionaries({"dataframe_records": rows}).map(dump),
    st.fixed_dictionaries({"inputs": st.dictionaries(st.sampled_from(COLUMNS),
                                                     st.lists(leaf, max_size=4),
                                                     max_size=4)}).map(dump),
    st.fixed_dictionaries({"dataframe_split": st.fixed_dictionaries(
        {"columns": st.lists(st.sampled_from(COLUMNS), max_size=4),
         "data": st.lists(st.lists(leaf, max_size=4), max_size=3)})}).map(dump),
    nested())
body = st.one_of(payload_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=200))
content_type = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                "text/plain", "application/x-www-form-urlencoded",
                                "multipart/form-data; boundary=x", "text/csv", None])
scoring = st.tuples(st.just("POST"), st.sampled_from(["/predict", "/invocations"]), body,
                    content_type.map(lambda c: {"Content-Type": c} if c else {}))
path_char = st.one_of(st.sampled_from(["%00", "%0a", "%7f", "%ff", "..", "%2e%2e", "/"]),
                      st.text(alphabet="abc.-_", min_size=1, max_size=3))
client_path = st.tuples(st.just("GET"), st.lists(path_char, min_size=1, max_size=5).map(
    lambda parts: "/client/" + st_join(parts)), st.just(b""), st.just({}))
stamp = st.one_of(st.integers(min_value=-(10 ** 30), max_value=10 ** 400).map(str),
                  st.sampled_from(["", "1e9", "0x10", "\u00b2", "+1", "NaN", "1_000"]))
webhook = st.tuples(st.just("POST"), st.just("/webhooks/mlflow"), body, st.builds(
    lambda s, d, sig: {"Content-Type": "application/json", "X-MLflow-Delivery-Id": d,
                       "X-MLflow-Timestamp": s.encode("utf-8"), "X-MLflow-Signature": sig},
    stamp, st.text(alphabet="abc123-", max_size=300),
    st.sampled_from(["v1,AAAA", "v1,", "v2,x", "", "v1," + "A" * 500])))
admin = st.tuples(st.just("POST"), st.just("/admin/reconcile"), body, st.fixed_dictionaries(
    {"Content-Type": content_type.map(lambda c: c or "application/json"),
     "Authorization": st.sampled_from(["Bearer admin-secret-for-tests", "Bearer x", ""])}))
request = st.one_of(scoring, scoring, client_path, webhook, admin)


def st_join(parts: list[str]) -> str:
    return "".join(parts)


@settings(max_examples=250, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(req=request)
def test_hostile_requests_never_get_a_5xx_or_a_non_json_error(promoted, req):
    method, path, content, headers = req
    with httpx.Client(base_url=promoted.url, timeout=60) as c:  # a fresh connection each
        r = c.request(method, path, content=content or None, headers=headers)
    assert r.status_code < 500, (method, path, content[:200], headers, r.text[:300])
    if r.status_code >= 400 or path in ("/predict", "/invocations"):
        assert r.headers["content-type"].startswith("application/json"), r.text[:300]
        assert isinstance(r.json(), dict)


def test_the_server_still_scores_after_the_fuzz(promoted, served_project):
    _, root = served_project
    r = promoted.http.post("/predict", json=sample_rows(root, 3))
    assert r.status_code == 200
    assert "tarn_unhandled_errors_total 0.0" in promoted.http.get("/metrics").text
