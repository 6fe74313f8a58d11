"""The backend over real sockets: promotion deploys, hot swap, validation, security."""

from __future__ import annotations

import json
import math
import threading
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from tarn.registry import PromotionRefused, Registry
from tests.e2e.conftest import make_version

pytestmark = pytest.mark.slow


def sample_rows(root, n=20) -> list[dict]:
    df = pd.read_parquet(root / "data" / "prepared" / "test.parquet").head(n)
    df = df.drop(columns=["income", "batch"]).astype(object)
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in
            df.to_dict("records")]


def wait_version(server, version: str, timeout: float = 30) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.http.get("/version").json()["version"] == version:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"server never served version {version}: "
                         f"{server.http.get('/version').json()}")


def test_00_not_ready_before_any_promotion(server):
    assert server.http.get("/health").json() == {"status": "ok"}
    assert server.http.get("/ready").status_code == 503
    r = server.http.post("/predict", json=[{"age": 1}])
    assert r.status_code == 503 and "tarn promote" in r.json()["message"]


def test_01_promotion_deploys_and_predictions_match_the_registry(server, project):
    params, root = project
    reg = Registry(params, root)
    p = reg.promote("1")
    assert p.gates is not None and p.gates.passed and p.previous is None
    assert server.admin().status_code == 200
    wait_version(server, "1")
    assert server.http.get("/ready").json()["model_version"] == "1"
    info = server.http.get("/version").json()
    assert info["source"] == "onnx", info  # the parity-checked bundle serves
    bundle = root / "bundles" / "tarn-test-v1"
    assert info["bundle"] == str(bundle) and (bundle / "model.onnx").is_file()
    rows = sample_rows(root)
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200 and r.headers["x-model-version"] == "1"
    got = np.array([x["probability"] for x in r.json()["predictions"]])
    model = mlflow.pyfunc.load_model("models:/tarn-test/1")
    want = np.asarray(model.predict(pd.DataFrame(rows).astype(
        {c: "float64" for c in ("age", "fnlwgt")}).pipe(_typed, params)))[:, 1]
    assert np.abs(got - want).max() <= 1e-4
    assert [x["label"] for x in r.json()["predictions"]] == (want >= 0.5).astype(int).tolist()


def _typed(df, params):
    from tarn.features import to_model_frame
    return to_model_frame(df, params.schema, params.prepare)


def test_02_invocations_accepts_every_mlflow_payload(server, project):
    _, root = project
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
def test_03_bad_requests_get_a_4xx_naming_the_problem(server, project, body, status, needle):
    r = server.http.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]


def test_04_field_level_errors(server, project):
    _, root = project
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
    unseen = server.http.post("/predict", json=[{**row, "workclass": "Astronaut"}])
    assert unseen.status_code == 200  # unknown category at serving time: encoded as unseen


def test_05_oversized_payload_is_413_and_the_server_survives(server, project):
    big = b"[" + b",".join([b'{"age": 1}'] * 200_000) + b"]"  # ~2 MB > 1 MB limit
    r = server.http.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    ten_mb = b'"' + b"x" * 10_000_000 + b'"'
    r = server.http.post("/invocations", content=ten_mb,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert server.http.get("/ready").status_code == 200


def test_06_admin_and_webhook_need_their_secrets(server):
    assert server.admin(secret="wrong").status_code == 401
    assert server.http.post("/admin/reconcile").status_code == 401
    r = server.admin({"version": "999"})
    assert r.status_code == 404 and "999" in r.json()["message"]
    r = server.http.post("/webhooks/mlflow", content=b'{"entity": "model_version_alias"}',
                         headers={"X-MLflow-Delivery-Id": "d", "X-MLflow-Timestamp":
                                  str(int(time.time())), "X-MLflow-Signature": "v1,AAAA"})
    assert r.status_code == 401 and "signature" in r.json()["message"]
    r = server.http.post("/webhooks/mlflow", content=b"{}")
    assert r.status_code == 401


def test_07_metrics_and_prediction_log(server, project):
    _, root = project
    server.http.post("/predict", json=sample_rows(root, 7))
    text = server.http.get("/metrics").text
    assert "tarn_predicted_rows_total" in text and 'tarn_model_version 1.0' in text
    assert 'tarn_requests_total{endpoint="predict",status="422"}' in text
    deadline = time.monotonic() + 10
    files = []
    while time.monotonic() < deadline and not files:
        files = list((root / "data" / "predictions").glob("preds-*.parquet"))
        time.sleep(0.2)
    log = pd.concat(pd.read_parquet(f) for f in files)
    assert {"age", "sex", "proba", "model_version", "ts"} <= set(log.columns)
    assert (log["model_version"] == "1").all() and log["proba"].between(0, 1).all()


def test_08_worse_candidate_is_refused_and_force_is_recorded(server, project):
    params, root = project
    bad = make_version(params, root, rounds=1, depth=1, lr=0.01)
    reg = Registry(params, root)
    with pytest.raises(PromotionRefused) as e:
        reg.promote(bad)
    assert not e.value.gates.metric_ok and "logloss" in e.value.message
    assert reg.production() == "1"
    assert reg.version(bad).tags["tarn.last_gate_result"] == "refused"
    with pytest.raises(Exception, match="--reason"):
        reg.promote(bad, force=True)


def test_09_hot_swap_under_load_fails_no_request(server, project):
    params, root = project
    v_new = make_version(params, root, rounds=40, depth=3)
    reg = Registry(params, root)
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
    time.sleep(1)
    p = reg.promote(v_new, force=True, reason="swap test")
    promoted_at = time.time()
    server.admin()
    took = wait_version(server, v_new)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    assert p.previous == "1" and took < 10
    assert len(results) > 20
    assert all(code == 200 for code, _, _ in results)
    assert {v for _, v, _ in results} == {"1", v_new}
    assert all(v == "1" for _, v, at in results if at < promoted_at)
    assert reg.stage_versions() == [v_new]  # stage follows the alias, old one archived
    assert reg.version(v_new).tags["tarn.promotion_forced"] == "true"


def test_10_alias_set_by_hand_deploys_and_is_recorded(server, project):
    params, root = project
    reg = Registry(params, root)
    reg.client.set_registered_model_alias("tarn-test", "production", "1")  # as the UI would
    wait_version(server, "1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and reg.stage_versions() != ["1"]:
        time.sleep(0.2)
    assert reg.stage_versions() == ["1"]


def test_11_a_version_that_fails_to_load_leaves_the_old_one_serving(server, project):
    params, root = project
    reg = Registry(params, root)
    broken = reg.client.create_model_version("tarn-test", source=str(root / "nowhere"))
    reg.client.set_registered_model_alias("tarn-test", "production", broken.version)
    deadline = time.monotonic() + 15
    err = ""
    while time.monotonic() < deadline and "failed to load" not in err:
        err = server.http.get("/version").json()["last_error"]
        time.sleep(0.2)
    assert f"version {broken.version} failed to load" in err
    assert server.http.get("/version").json()["version"] == "1"
    assert server.http.post("/predict", json=sample_rows(root, 1)).status_code == 200
    reg.client.set_registered_model_alias("tarn-test", "production", "1")


def test_12_rollback(server, project):
    params, root = project
    reg = Registry(params, root)
    v = make_version(params, root, rounds=35, depth=3)
    reg.promote(v, force=True, reason="to roll back")
    back = reg.rollback()
    assert back.version == "1" and reg.production() == "1"
    server.admin()
    wait_version(server, "1")
    assert "rollback" in reg.version("1").tags["tarn.promotion_reason"]


def test_13_cli_promote_notifies_the_server_at_once(server, project):
    import subprocess

    import yaml

    from tests.e2e.conftest import BIN, server_env
    params, root = project
    v = make_version(params, root, rounds=33, depth=3)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["serve"]["notify_url"] = server.url
    (root / "params-cli.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([str(BIN / "tarn"), "--params", str(root / "params-cli.yaml"),
                          "promote", "--version", v, "--force", "--reason", "cli test"],
                         env=server_env(), capture_output=True, text=True, timeout=300)
    returned = time.monotonic()
    assert res.returncode == 0, res.stderr
    assert f"version {v} is production" in res.stderr and "reconciled" in res.stderr
    assert wait_version(server, v) < 2  # serving within 2 s of `tarn promote` returning
    assert time.monotonic() - returned < 5


def test_14_concurrent_promotions_leave_alias_and_stage_in_agreement(server, project):
    params, root = project
    versions = ["1", make_version(params, root, rounds=31, depth=3)]
    errors = []

    def promote(v):
        try:
            Registry(params, root).promote(v, force=True, reason="race")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for _ in range(3):
        threads = [threading.Thread(target=promote, args=(v,)) for v in versions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        alias, staged = Registry(params, root).state()
        assert staged == [alias]
    assert errors == []
