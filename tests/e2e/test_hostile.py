"""Hostile requests against a real `tarn serve`: every one gets a JSON 4xx, none a 5xx, and
nothing a web page could send (a non-JSON body) is scored or logged. The table is the one of
issue 14; each case names what it sends and the status it must get."""

from __future__ import annotations

import time

import pytest

from tarn.lifecycle.promote import promote, registry
from tarn.serve.app import error_code
from tests.support.serving import ADMIN, sample_rows, wait_version

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served_project(shared_served_project):
    """This module only reads (and starts its own second server): the session's shared
    project and server (tests/e2e/conftest.py)."""
    return shared_served_project


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module", autouse=True)
def serving(server, served_project):
    params, root = served_project
    if registry(params, root).production() is None:
        promote(params, root, "1")
    server.admin()
    wait_version(server, registry(params, root).production())


def _row(root) -> dict:
    return sample_rows(root, 1)[0]


JSON = {"Content-Type": "application/json"}


def _cases(root) -> list[tuple[str, str, str, bytes, dict, set[int]]]:
    """(name, method, path, body, headers, allowed statuses)."""
    row = _row(root)
    rec = b'{"age": %s, "sex": "Male"}'
    big_inputs = {"inputs": {"age": [30] * 60_001}}
    import json

    return [
        ("deep nesting", "POST", "/predict", b"[" * 100_000 + b"]" * 100_000, JSON, {400}),
        ("deep nesting after NaN", "POST", "/predict",
         b"[NaN," + b"[" * 100_000 + b"]" * 100_001, JSON, {400}),
        ("int 2**70", "POST", "/predict",
         json.dumps([{**row, "age": 2 ** 70}]).encode(), JSON, {422}),
        ("int 10**400", "POST", "/predict", b"[" + rec % (b"1" + b"0" * 400) + b"]", JSON,
         {422}),
        ("int 10**5000 (beyond str->int limit)", "POST", "/predict",
         b"[" + rec % (b"1" + b"0" * 5000) + b"]", JSON, {400, 422}),
        ("lone surrogate", "POST", "/predict",
         json.dumps([{**row, "sex": "\ud800"}]).encode(), JSON, {400, 422}),
        ("lone surrogate + NaN", "POST", "/predict",
         b'[{"age": NaN, "sex": "\\ud800"}]', JSON, {400, 422}),
        ("invalid UTF-8", "POST", "/predict", b'[{"sex": "\xff\xfe"}]', JSON, {400}),
        ("NUL in /client path", "GET", "/client/%00", b"", {}, {400, 404}),
        ("NUL in /client/bundle path", "GET", "/client/bundle/a%00b", b"", {}, {400, 404}),
        ("400-digit X-MLflow-Timestamp", "POST", "/webhooks/mlflow", b"{}",
         {**JSON, "X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp": "9" * 400,
          "X-MLflow-Signature": "v1,AAAA"}, {400, 401}),
        ("unicode-digit X-MLflow-Timestamp", "POST", "/webhooks/mlflow", b"{}",
         {**JSON, "X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp": "\u00b2".encode(),
          "X-MLflow-Signature": "v1,AAAA"}, {400, 401}),
        ("text/plain body", "POST", "/predict", json.dumps([row]).encode(),
         {"Content-Type": "text/plain"}, {415}),
        ("form body", "POST", "/invocations", json.dumps({"inputs": [row]}).encode(),
         {"Content-Type": "application/x-www-form-urlencoded"}, {415}),
        ("no Content-Type", "POST", "/predict", json.dumps([row]).encode(), {}, {415}),
        ("unsafe X-Request-Id (replaced)", "POST", "/predict", b"[]",
         {**JSON, "X-Request-Id": "a" * 500}, {422}),
        ("oversize row count (inputs object)", "POST", "/invocations",
         json.dumps(big_inputs).encode(), JSON, {413}),
        ("oversize row count (records)", "POST", "/predict",
         b"[" + b",".join([b"{}"] * 60_001) + b"]", JSON, {413}),
        ("oversize row count (dataframe_split)", "POST", "/invocations",
         b'{"dataframe_split": {"columns": ["age"], "data": [' +
         b",".join([b"[1]"] * 60_001) + b"]}}", JSON, {413}),
    ]


def test_hostile_requests_get_json_4xx(server, served_project):
    _, root = served_project
    before = _scored(server)
    seen = []
    for name, method, path, body, headers, allowed in _cases(root):
        r = server.http.request(method, path, content=body or None, headers=headers)
        seen.append((name, r.status_code))
        assert r.status_code in allowed, (name, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json"), (name, r.text[:300])
        problem = r.json()
        assert problem["error_code"] and problem["message"], (name, problem)
        assert problem["error_code"] == error_code(r.status_code), (name, problem)
        assert problem["request_id"] == r.headers["x-request-id"], (name, problem)
    assert _scored(server) == before  # none of them was scored (so none was logged)
    assert server.http.get("/health").json() == {"status": "ok"}
    print("\n".join(f"{n:40s} {s}" for n, s in seen))


def test_a_json_body_is_still_scored(server, served_project):
    _, root = served_project
    r = server.http.post("/predict", json=[_row(root)])
    assert r.status_code == 200, r.text
    r = server.http.post("/invocations", content=b'{"inputs": []}',
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 422


def test_an_unexpected_error_is_a_counted_json_500(server):
    """No route raises on purpose: the handler is proven through the metrics it exposes."""
    text = server.http.get("/metrics").text
    assert "tarn_unhandled_errors_total" in text


def test_version_says_less_without_the_admin_secret(server, served_project):
    _, root = served_project
    public = server.http.get("/version").json()
    assert public["version"] and public["name"]
    assert str(root) not in str(public)  # no internal absolute paths
    full = server.http.get("/version", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert full["bundle"] and str(root) in full["bundle"]


def test_webhook_delivery_is_accepted_once(server):
    import base64
    import hashlib
    import hmac

    from tests.support.serving import HOOK

    body = b'{"entity": "registered_model", "action": "created", "data": {}}'
    stamp = str(int(time.time()))
    delivery = f"once-{time.time_ns()}"
    mac = hmac.new(HOOK.encode(), f"{delivery}.{stamp}.".encode() + body, hashlib.sha256)
    headers = {**JSON, "X-MLflow-Delivery-Id": delivery, "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": "v1," + base64.b64encode(mac.digest()).decode()}
    first = server.http.post("/webhooks/mlflow", content=body, headers=headers)
    again = server.http.post("/webhooks/mlflow", content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 401 and "replay" in again.json()["message"]


def _scored(server) -> float:
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith("tarn_predicted_rows_total"):
            return float(line.split()[-1])
    return 0.0


# ------------------------------------------------------------------------- faults
def _metric(server, name: str) -> float:
    for line in server.http.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def _until(cond, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"not in {timeout} s: {what}")


def test_prediction_log_faults_lose_nothing_acknowledged(server, served_project, tmp_path):
    """A second server on the same project with its own log folder. Its log first hits a file
    size limit of 0 bytes (what a full disk looks like to a writer: EFBIG, set from outside
    with prlimit), then its folder is replaced by a file (every open and rename fails, even
    for root). The server keeps answering; once the folder is usable again every
    acknowledged row is in a closed log file, and /metrics said what happened."""
    import resource
    import shutil

    import pandas as pd
    import yaml

    from tests.support.servers import free_port
    from tests.support.serving import Server, server_env

    params, root = served_project
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["serve"].update({"prediction_log": "data/predictions-fault", "log_file_idle_s": 1,
                         "log_flush_interval_s": 0.3})
    (root / "params-fault.yaml").write_text(yaml.safe_dump(raw))
    folder = root / "data" / "predictions-fault"
    b = Server(root, root / "params-fault.yaml", free_port(), server_env())
    try:
        wait_version(b, registry(params, root).production())
        marker = 3_000_000 + time.time_ns() % 1_000_000
        rows = [{**r, "fnlwgt": marker} for r in sample_rows(root, 5)]
        acked = 0

        def post(n: int) -> None:
            nonlocal acked
            for _ in range(n):
                r = b.http.post("/predict", json=rows)
                assert r.status_code == 200, r.text  # the server keeps answering
                acked += len(rows)

        post(10)
        _until(lambda: _metric(b, "tarn_predlog_written_rows_total") >= acked, what="written")

        # 1. a full disk: every write that grows a file fails with EFBIG
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        post(20)
        _until(lambda: _metric(b, "tarn_predlog_flush_failures_total") >= 2, what="failures")
        assert _metric(b, "tarn_predlog_pending_rows") >= 100
        assert b.http.get("/health").status_code == 200
        resource.prlimit(b.proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        _until(lambda: _metric(b, "tarn_predlog_pending_rows") == 0, what="retried")

        # 2. the folder replaced by a file (chmod does not stop root)
        _until(lambda: not list(folder.glob(".preds-*.arrows")), what="segment closed")
        away = tmp_path / "moved-away"
        shutil.move(str(folder), away)
        folder.write_text("not a folder")
        before = _metric(b, "tarn_predlog_flush_failures_total")
        post(20)
        _until(lambda: _metric(b, "tarn_predlog_flush_failures_total") > before + 1,
               what="failures while the folder is a file")
        assert _metric(b, "tarn_predlog_pending_rows") >= 100
        folder.unlink()
        shutil.move(str(away), folder)
        _until(lambda: _metric(b, "tarn_predlog_pending_rows") == 0, what="retried")
        post(5)
        assert _metric(b, "tarn_predlog_dropped_rows_total") == 0
        assert _metric(b, "tarn_unhandled_errors_total") == 0
    finally:
        b.stop()  # the shutdown flush closes the last file
    log = pd.concat([pd.read_parquet(f) for f in folder.glob("preds-*.parquet")])
    assert (log["fnlwgt"] == marker).sum() == acked == 55 * len(rows)
    assert not list(folder.glob(".*"))  # no segment, temp or empty file left behind
