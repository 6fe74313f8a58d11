"""Strict input and the state after a refused version (issue 21), against a real `tarn serve`:
undecoded Content-Encoding, non-UTF-8 JSON and loose media types get 415; the admin secret needs
`Bearer `; 401s are counted by route; a version tarn refuses to load never becomes the agreed
production, `tarn status` names it with the fix, and `/version` forgets the error once
production is served again."""

from __future__ import annotations

import gzip
import json
import re
import time

import pytest

from tarn.core.tags import AGREED_PRODUCTION
from tarn.lifecycle.promote import promote, registry
from tests.support.serving import ADMIN, sample_rows, wait_version

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", autouse=True)
def serving(server, served_project):
    params, root = served_project
    if registry(params, root).production() is None:
        promote(params, root, "1")
    wait_version(server, "1")


def _body(root) -> bytes:
    return json.dumps(sample_rows(root, 2)).encode()


def _metric(server, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in server.http.get("/metrics").text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


@pytest.mark.parametrize(("name", "headers", "encode", "status"), [
    ("gzip body, gzip header", {**JSON, "Content-Encoding": "gzip"}, gzip.compress, 415),
    ("plain body, gzip header", {**JSON, "Content-Encoding": "gzip"}, None, 415),
    ("br header", {**JSON, "Content-Encoding": "br"}, None, 415),
    ("identity", {**JSON, "Content-Encoding": "identity"}, None, 200),
    ("UTF-16 body", JSON, lambda b: b.decode().encode("utf-16"), 415),
    ("UTF-16-LE body, no BOM", JSON, lambda b: b.decode().encode("utf-16-le"), 415),
    ("UTF-32 body", JSON, lambda b: b.decode().encode("utf-32"), 415),
    ("+json type", {"Content-Type": "application/vnd.api+json"}, None, 415),
    ("problem+json", {"Content-Type": "application/problem+json"}, None, 415),
    ("charset utf-16", {"Content-Type": "application/json; charset=utf-16"}, None, 415),
    ("another parameter", {"Content-Type": "application/json; profile=x"}, None, 415),
    ("charset UTF-8", {"Content-Type": "application/json; charset=UTF-8"}, None, 200),
    ("quoted charset", {"Content-Type": 'application/json; charset="utf-8"'}, None, 200),
])
def test_only_plain_utf8_json_is_scored(server, served_project, name, headers, encode,
                                        status):
    _, root = served_project
    body = _body(root)
    r = server.http.post("/predict", content=encode(body) if encode else body, headers=headers)
    assert r.status_code == status, (name, r.text)
    if status != 200:
        assert r.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE", name


def test_an_encoded_admin_call_is_refused_too(server):
    r = server.http.post("/admin/reconcile", content=gzip.compress(b"{}"), headers={
        **JSON, "Content-Encoding": "gzip", "Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 415


def test_the_admin_secret_needs_bearer_and_401s_are_counted_by_route(server):
    before_admin = _metric(server, "tarn_unauthorized_total", route="admin")
    before_hooks = _metric(server, "tarn_unauthorized_total", route="webhooks")
    for auth in (ADMIN, f"Token {ADMIN}", f"Bearer{ADMIN}", f"Bearer x{ADMIN}", ""):
        r = server.http.post("/admin/reconcile", json={}, headers={"Authorization": auth})
        assert r.status_code == 401, auth
    assert server.http.post("/admin/reconcile", json={}, headers={
        "Authorization": f"bearer {ADMIN}"}).status_code == 200  # the scheme is case-blind
    assert server.admin().status_code == 200
    r = server.http.post("/webhooks/mlflow", content=b"{}", headers={
        **JSON, "X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp": str(int(time.time())),
        "X-MLflow-Signature": "v1,AAAA"})
    assert r.status_code == 401
    assert _metric(server, "tarn_unauthorized_total", route="admin") == before_admin + 5
    assert _metric(server, "tarn_unauthorized_total", route="webhooks") == before_hooks + 1
    assert _metric(server, "tarn_requests_total", endpoint="admin", status="401") >= 5


def test_a_refused_version_is_reported_and_forgotten_once_production_is_back(
        server, served_project, tmp_path):
    from tarn.lifecycle.status import status
    from tests.support.project import register_pickled_version
    from tests.support.signing import sign_by_hand

    params, root = served_project
    reg = registry(params, root)
    evil = register_pickled_version(params, root, tmp_path / "pwned")
    sign_by_hand(params, root, evil)  # signed: past the signature check, refused for its files
    reg.client.set_registered_model_alias("tarn-test", "production", evil)  # by hand
    deadline = time.monotonic() + 30
    err = ""
    while time.monotonic() < deadline and "refused" not in err:
        err = server.http.get("/version", headers={"Authorization": f"Bearer {ADMIN}"}
                              ).json()["last_error"]
        time.sleep(0.2)
    assert f"version {evil} failed to load" in err
    assert server.http.get("/version").json()["version"] == "1"
    agreed = reg.client.get_registered_model("tarn-test").tags.get(AGREED_PRODUCTION)
    assert agreed != evil

    s = status(params, root, server.url)
    row = next(v for v in s.versions if v.version == evil)
    assert "not skops" in row.refused and "refused" in row.note
    [warning] = [w for w in s.warnings if "refused to load" in w]
    assert f"version {evil}" in warning and "not skops" in warning
    assert '`tarn promote --version 1 --force --reason "undo refused version' in warning
    assert not any("tarn bundle publish" in w for w in s.warnings)  # it cannot help here
    assert reg.client.get_registered_model("tarn-test").tags.get(AGREED_PRODUCTION) != evil

    reg.client.set_registered_model_alias("tarn-test", "production", "1")  # the fix, by hand
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        v = server.http.get("/version").json()
        if v["last_error"] == "" and reg.stage_versions() == ["1"]:
            break
        time.sleep(0.2)
    assert v["last_error"] == "" and v["version"] == "1"
    assert reg.production_intent() == "1"
    assert reg.client.get_registered_model("tarn-test").tags.get(AGREED_PRODUCTION) == "1"
    assert not any("refused to load" in w for w in status(params, root, server.url).warnings)
