"""The backend over real sockets: promotion deploys, hot swap, validation, security.

Every test starts from the same state (version 1 in production and served: the ``production``
fixture puts it back), so tests can run alone or in any order."""

from __future__ import annotations

import json
import math
import re
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.core.registry import PromotionRefused
from tarn.lifecycle.promote import promote, registry, rollback
from tests.support.project import BIN, make_version
from tests.support.serving import ADMIN, sample_rows, server_env, until, wait_version

pytestmark = pytest.mark.slow
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def first_promotion(server, served_project):
    """Version 1 promoted through the gates, once for the module."""
    params, root = served_project
    return promote(params, root, "1")


@pytest.fixture(autouse=True)
def production(first_promotion, server, served_project):
    """Each test starts with version 1 in production and served, whatever the test before it
    promoted."""
    params, root = served_project
    if registry(params, root).production() != "1":
        promote(params, root, "1", force=True, reason="test reset")
    server.admin()
    wait_version(server, "1")


def test_first_promotion_passes_the_gates_and_deploys(first_promotion):
    p = first_promotion
    assert p.gates is not None and p.gates.passed and p.previous is None


def test_predictions_match_the_registry(server, served_project):
    params, root = served_project
    assert server.http.get("/ready").json()["model_version"] == "1"
    info = server.http.get("/version", headers=ADMIN_AUTH).json()  # paths: admins only
    assert info["source"] == "onnx", info  # the parity-checked bundle serves
    bundle = root / "bundles" / "tarn-test-v1"
    assert info["bundle"] == str(bundle) and (bundle / "model.onnx").is_file()
    rows = sample_rows(root)
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    got = np.array([x["probability"] for x in r.json()["predictions"]])
    model = registry(params, root).load_model("1")  # tarn's trusted loader
    want = np.asarray(model.predict_proba(pd.DataFrame(rows).astype(
        {c: "float64" for c in ("age", "fnlwgt")}).pipe(_typed, params)))[:, 1]
    assert np.abs(got - want).max() <= 1e-4
    assert [x["label"] for x in r.json()["predictions"]] == (want >= 0.5).astype(int).tolist()


def _typed(df, params):
    from tarn.core.features import to_model_frame
    return to_model_frame(df, params.schema, params.prepare)


def test_invocations_accepts_every_mlflow_payload(server, served_project):
    _, root = served_project
    rows = sample_rows(root, 5)
    cols = list(rows[0])
    payloads = [
        {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rows]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": rows},
        {"inputs": {c: [r[c] for r in rows] for c in cols}},
    ]
    answers = []
    for p in payloads:
        r = server.http.post("/invocations", json=p)
        assert r.status_code == 200, r.text
        preds = np.array(r.json()["predictions"])
        assert preds.shape == (5, 2) and np.allclose(preds.sum(axis=1), 1)
        answers.append(preds)
    for a in answers[1:]:
        assert np.array_equal(a, answers[0])


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty body"),
    (b"[]", 422, "no rows"),
    (b'{"dataframe_records": []}', 422, "no rows"),
    (b'[{"age": "old"}]', 422, "'age' must be a number"),
    (b'[{"zip": 1}]', 422, "unknown column(s) ['zip']"),
    (b'{"foo": 1}', 422, "exactly one of"),
    (b'"text"', 422, "JSON object or a list"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(server, served_project, body, status, needle):
    r = server.http.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


def test_field_level_errors(server, served_project):
    _, root = served_project
    row = sample_rows(root, 1)[0]
    cases = [({**row, "age": math.inf}, "'age' must be finite"),
             ({**row, "age": 39.5}, "'age' must be an integer"),
             ({**row, "sex": None}, "'sex' is required"),
             ({**row, "sex": 1}, "'sex' must be a string"),
             ({k: v for k, v in row.items() if k != "education"}, "'education' is required")]
    for rec, needle in cases:
        body = json.dumps([rec], allow_nan=True)
        r = server.http.post("/predict", content=body,
                             headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and needle in r.json()["message"], (rec, r.text)
    nan = json.dumps([{**row, "age": float("nan")}], allow_nan=True)
    r = server.http.post("/predict", content=nan, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "'age'" in r.json()["message"]
    # a value the ETL would quarantine is refused (serve.unknown_values: refuse, the default)
    for rec, needle in [({**row, "workclass": "Astronaut"},
                         "column 'workclass': unknown category 'Astronaut'"),
                        ({**row, "age": 150}, "column 'age': 150 outside [17, 100]")]:
        r = server.http.post("/predict", json=[rec])
        assert r.status_code == 422 and needle in r.json()["message"], r.text
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    text = server.http.get("/metrics").text
    assert ('tarn_contract_violations_total{action="refused",column="workclass",'
            'reason="unknown_category"}') in text


def test_the_lakes_own_header_is_accepted(server, served_project):
    """The lake writes education-num, capital-gain, ...: the contract's aliases, accepted by
    /predict and /invocations as the ETL accepts them."""
    _, root = served_project
    rows = sample_rows(root, 3)
    lake = [{k.replace("_", "-") if k != "native_country" else "Native-Country": v
             for k, v in r.items()} for r in rows]
    assert "education-num" in lake[0]
    plain = server.http.post("/predict", json=rows).json()["predictions"]
    r = server.http.post("/predict", json=lake)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == plain
    cols = list(lake[0])
    r = server.http.post("/invocations", json={"dataframe_split": {
        "columns": cols, "data": [[x[c] for c in cols] for x in lake]}})
    assert r.status_code == 200, r.text
    assert [p[1] for p in r.json()["predictions"]] == [p["probability"] for p in plain]


def test_oversized_payload_is_413_and_the_server_survives(server, served_project):
    big = b"[" + b",".join([b'{"age": 1}'] * 200_000) + b"]"  # ~2 MB > 1 MB limit
    r = server.http.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error_code"] == "REQUEST_TOO_LARGE"
    ten_mb = b'"' + b"x" * 10_000_000 + b'"'
    r = server.http.post("/invocations", content=ten_mb,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert server.http.get("/ready").status_code == 200


def test_admin_and_webhook_need_their_secrets(server):
    r = server.admin(secret="wrong")
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    assert server.http.post("/admin/reconcile").status_code == 401
    r = server.admin({"version": "999"})
    assert r.status_code == 404 and "999" in r.json()["message"]
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = server.http.post("/webhooks/mlflow", content=b'{"entity": "model_version_alias"}',
                         headers={"X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp":
                                  str(int(time.time())), "X-MLflow-Signature": "v1,AAAA"})
    assert r.status_code == 401 and "signature" in r.json()["message"]
    r = server.http.post("/webhooks/mlflow", content=b"{}")
    assert r.status_code == 401


def test_metrics_and_prediction_log(server, served_project):
    _, root = served_project
    server.http.post("/predict", json=sample_rows(root, 7))
    server.http.post("/predict", json=[{"age": "old"}])  # a 422
    text = server.http.get("/metrics").text
    assert "tarn_predicted_rows_total" in text and 'tarn_model_version 1.0' in text
    assert 'tarn_requests_total{endpoint="predict",status="422"}' in text
    marker = 2_000_000 + time.time_ns() % 1_000_000  # an fnlwgt no other request sends
    rows = [{**r, "fnlwgt": marker} for r in sample_rows(root, 7)]
    answer = server.http.post("/predict", json=rows)
    rid = answer.json()["request_id"]
    assert rid == answer.headers["x-request-id"] and len(rid) == 32
    deadline = time.monotonic() + 10
    mine = pd.DataFrame()
    while time.monotonic() < deadline and len(mine) < 7:
        files = list((root / "data" / "predictions").glob("preds-*.parquet"))
        log = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
        mine = log[log["fnlwgt"] == marker] if len(log) else log
        time.sleep(0.2)
    assert {"age", "sex", "proba", "model_version", "ts"} <= set(log.columns)
    assert len(mine) == 7
    assert (mine["model_version"] == "1").all() and mine["proba"].between(0, 1).all()
    assert (mine["request_id"] == rid).all()  # one response, tied to its rows
    assert mine["proba"].tolist() == [p["probability"] for p in answer.json()["predictions"]]
    assert (log["request_id"] == rid).sum() == 7


def test_worse_candidate_is_refused_and_force_is_recorded(server, served_project):
    params, root = served_project
    bad = make_version(params, root, rounds=1, depth=1, lr=0.01)
    reg = registry(params, root)
    with pytest.raises(PromotionRefused) as e:
        promote(params, root, bad)
    assert not e.value.gates.metric_ok and "logloss" in e.value.message
    assert reg.production() == "1"
    assert reg.record_tags(bad)["tarn.last_gate_result"] == "refused"
    with pytest.raises(Exception, match="--reason"):
        promote(params, root, bad, force=True)


def test_hot_swap_under_load_fails_no_request(server, served_project):
    params, root = served_project
    v_new = make_version(params, root, rounds=40, depth=3)
    reg = registry(params, root)
    rows = sample_rows(root, 3)
    results: list[tuple[int, str | None, float]] = []
    stop = threading.Event()

    def load():
        import httpx
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/predict", json=rows)
                results.append((r.status_code, r.json().get("model_version"), time.time()))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    until(lambda: len(results) >= 10, "10 answers from version 1 under load")
    started = time.time()
    p = promote(params, root, v_new, force=True, reason="swap test")
    server.admin()
    wait_version(server, v_new)  # within its deadline (30 s), however busy the machine
    until(lambda: sum(v == v_new for _, v, _ in list(results)) >= 10,
          f"10 answers from version {v_new} under load")
    stop.set()
    for t in threads:
        t.join()
    assert p.previous == "1"
    assert len(results) > 20
    assert all(code == 200 for code, _, _ in results), sorted(
        {(code, v) for code, v, _ in results if code != 200})
    assert {v for _, v, _ in results} == {"1", v_new}
    # the new version may answer once the alias moved, inside promote(); never before it
    assert all(v == "1" for _, v, at in results if at < started)
    assert reg.stage_versions() == [v_new]  # stage follows the alias, old one archived
    assert reg.record_tags(v_new)["tarn.promotion_forced"] == "true"


def test_a_version_moved_to_production_by_hand_is_refused_until_signed(server, served_project):
    """A skops model of allow-listed types, registered and moved to production by hand (what
    anyone with registry write access can do): never served, reported in the log, /metrics,
    /version and `tarn status` while version 1 keeps serving; signed as `tarn promote` signs
    (the deployment key), the same version deploys."""
    from tarn.lifecycle.status import status
    from tests.support.signing import sign_by_hand

    params, root = served_project
    reg = registry(params, root)
    v = make_version(params, root, rounds=32, depth=3)
    before = _metric(server, "tarn_unsigned_refusals")
    reg.client.set_registered_model_alias("tarn-test", "production", v)  # as the UI would
    until(lambda: _metric(server, "tarn_unsigned_refusals") > before, "a refused version")
    detail = server.http.get("/version", headers=ADMIN_AUTH).json()
    assert detail["version"] == "1"
    assert f"version {v} refused (still serving 1)" in detail["last_error"]
    assert "no valid deployment signature" in detail["last_error"]
    assert server.http.post("/predict", json=sample_rows(root, 1)).json()["model_version"] == "1"
    assert "no valid deployment signature" in reg.refusal(v)  # recorded on the version
    log = (root / f"server-{server.url.rsplit(':', 1)[1]}.log").read_text()
    assert f"version {v} refused" in log
    s = status(params, root, server.url)
    [warning] = [w for w in s.warnings if f"names version {v}" in w]
    assert f"`tarn promote --version {v}`" in warning and "no valid deployment" in warning
    assert s.target("backend").version == "1" and "refused" in s.target("backend").error

    sign_by_hand(params, root, v, "reviewed by hand")  # what `tarn promote` writes
    server.admin()
    wait_version(server, v)
    until(lambda: "tarn.deployment_note" in reg.record_tags(v), "the deployment recorded")
    assert "gates were skipped" in reg.record_tags(v)["tarn.deployment_note"]
    assert server.http.get("/version").json()["last_error"] == ""


def _metric(server, name: str) -> float:
    line = next((ln for ln in server.http.get("/metrics").text.splitlines()
                 if ln.startswith(f"{name} ")), f"{name} 0")
    return float(line.split()[-1])


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server, served_project):
    from tests.support.signing import sign_by_hand

    params, root = served_project
    reg = registry(params, root)
    broken = reg.client.create_model_version("tarn-test", source=str(root / "nowhere"))
    sign_by_hand(params, root, broken.version)  # signed: its loading is what fails
    reg.client.set_registered_model_alias("tarn-test", "production", broken.version)
    deadline = time.monotonic() + 15
    err = ""
    while time.monotonic() < deadline and "failed to load" not in err:
        err = server.http.get("/version").json()["last_error"]
        time.sleep(0.2)
    assert f"version {broken.version} failed to load" in err
    assert server.http.get("/version").json()["version"] == "1"
    assert server.http.post("/predict", json=sample_rows(root, 1)).status_code == 200
    # it polls every 0.5 s, but retries back off (0.5, 1, 2, 4 s after attempts 1, 2, 3, 4):
    # from seeing attempt a to attempt a + 3 takes at least 1 + 2 s when a is 1 (1 s without
    # backoff). Load only lengthens the gaps, so the bound holds on a busy machine.
    asked = time.monotonic()  # before the answer: attempt `first` + 1 had not happened yet
    first = _attempt(server)
    until(lambda: _attempt(server) >= first + 3, f"attempt {first + 3}", timeout=120)
    backoff = params.serve.poll_interval_s * (2 ** first + 2 ** (first + 1))
    assert time.monotonic() - asked > backoff, (first, backoff)  # about 3 s for a = 1
    assert not list(Path(tempfile.gettempdir()).glob("tarn-model-*"))  # downloads removed


def _attempt(server) -> int:
    """The attempt number of the server's last failed deployment."""
    detail = server.http.get("/version", headers=ADMIN_AUTH).json()["last_error"]
    return int(re.search(r"attempt (\d+)", detail).group(1))


def test_rollback(server, served_project):
    params, root = served_project
    reg = registry(params, root)
    v1_bundle = root / params.edge.bundle_dir / f"{reg.name}-v1" / "model.onnx"
    published = v1_bundle.stat().st_mtime_ns
    v = make_version(params, root, rounds=35, depth=3)
    promote(params, root, v, force=True, reason="to roll back")
    server.admin()
    wait_version(server, v)
    back = rollback(params, root)
    assert back.version == "1" and reg.production() == "1"
    server.admin()
    wait_version(server, "1")
    assert "rollback" in reg.record_tags("1")["tarn.promotion_reason"]
    # version 1's verified bundle is reused, not exported and parity-checked again
    assert v1_bundle.stat().st_mtime_ns == published
    current = json.loads((root / params.edge.bundle_dir / "current.json").read_text())
    assert current["version"] == "1"


def test_cli_promote_notifies_the_server_at_once(server, served_project):
    import subprocess

    import yaml

    params, root = served_project
    v = make_version(params, root, rounds=33, depth=3)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["serve"]["notify_url"] = server.url
    (root / "params-cli.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([str(BIN / "tarn"), "--params", str(root / "params-cli.yaml"),
                          "promote", "--version", v, "--force", "--reason", "cli test"],
                         env=server_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"version {v} is production" in res.stderr and "reconciled" in res.stderr
    # the nudge reconciles before it answers: serving v as the command returns, no poll awaited
    assert server.http.get("/version").json()["version"] == v


def test_concurrent_promotions_leave_alias_and_stage_in_agreement(server, served_project):
    params, root = served_project
    versions = ["1", make_version(params, root, rounds=31, depth=3)]
    errors = []

    def race(v):
        try:
            promote(params, root, v, force=True, reason="race")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for _ in range(3):
        threads = [threading.Thread(target=race, args=(v,)) for v in versions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alias, staged = registry(params, root).state()
        assert staged == [alias]
    assert errors == []


def test_an_untrusted_version_is_never_loaded(server, served_project, tmp_path):
    """A cloudpickle version whose loading would create a file: MLflow's own loader would run
    it; tarn's refuses it everywhere, records why, and the server keeps serving."""
    from tarn.core.model import UntrustedModel
    from tests.support.project import register_pickled_version
    from tests.support.signing import sign_by_hand

    params, root = served_project
    marker = tmp_path / "pwned"
    evil = register_pickled_version(params, root, marker)
    with pytest.raises(UntrustedModel, match="not skops"):
        promote(params, root, evil)  # the gates would load it: refused before
    reg = registry(params, root)
    assert reg.production() == "1"
    # signed too (a deploy key holder's mistake): the loader refuses its files all the same
    sign_by_hand(params, root, evil, "signed, still pickle")
    reg.client.set_registered_model_alias("tarn-test", "production", evil)  # by hand
    deadline = time.monotonic() + 15
    err = ""
    while time.monotonic() < deadline and "refused" not in err:
        err = server.http.get("/version", headers=ADMIN_AUTH).json()["last_error"]
        time.sleep(0.2)
    assert f"version {evil} failed to load" in err and "not skops" in err
    assert server.http.get("/version").json()["version"] == "1"
    assert server.http.post("/predict", json=sample_rows(root, 1)).status_code == 200
    assert not marker.exists()
    assert "not skops" in reg.record_tags(evil)["tarn.load_refused"]
    bundle = json.loads((root / "bundles" / "current.json").read_text())
    assert bundle["version"] == "1"  # clients were not pointed anywhere either


def test_a_stage_transition_to_production_deploys_like_an_alias(server, served_project):
    """What the registry page's stage transition does: the alias follows, the server deploys,
    the promotion is recorded as forced (gates skipped) with the old production as previous."""
    import warnings

    from tests.support.signing import sign_by_hand

    params, root = served_project
    reg = registry(params, root)
    v = make_version(params, root, rounds=34, depth=3)
    sign_by_hand(params, root, v)  # unsigned, it would be refused (the test above)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.client.transition_model_version_stage("tarn-test", v, "Production")
    wait_version(server, v)
    assert reg.production() == v and reg.stage_versions() == [v]
    rec = reg.promotion_record(v)
    assert rec.forced and "stage set to Production" in rec.reason
    assert rec.previous_production == "1"
