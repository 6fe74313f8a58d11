"""One rule for columns, on every scoring path, over real sockets: a row as it appears in the
lake (an identifier, a visit date and a leak excluded from the features, the target, the batch)
is scored by /predict, /invocations, `tarn edge predict` and the browser page with the same
values; a category of integer codes takes the codes as numbers; a required input missing is
refused naming it, with the same message on each path; refusals echo bounded client data; and
the monitor does not read a prediction log without the excluded columns as a schema change.

The project is a regression one (sklearn's bundled diabetes table) with a contract as
`tarn init --exclude` writes it: the excluded columns stay in the contract, accepted and
ignored."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.core.catalog import QUARANTINE
from tarn.edge.runner import Contract, EdgeModel, columns_from_records
from tarn.lifecycle import monitor
from tarn.serve.app import CLIENT_DIR
from tests.support.project import sh, write_params
from tests.support.servers import free_port, need
from tests.support.serving import Server, server_env, wait_version
from tests.support.task_models import fit_version, force_production
from tests.support.tasks import task_params

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update"]
EXCLUDED = ["patient_id", "visit", "s4"]  # an identifier, a timestamp, a "leak"
SIGNALS = ("bp", "s1", "s2", "s3", "s4", "s5", "s6")
SCHEMA = {
    "name": "clinic", "task": "regression", "sensitive": ["sex"], "extra_columns": "error",
    "target": {"name": "progression", "min": 0, "max": 1000},
    "columns": [{"name": "patient_id", "dtype": "int"},
                {"name": "age", "dtype": "float"},
                {"name": "sex", "dtype": "category", "categories": ["1", "2"]},
                # init proposed nullable (the table has gaps); the user declared it required
                {"name": "bmi", "dtype": "float", "nullable": True, "required": True},
                *({"name": c, "dtype": "float"} for c in SIGNALS),
                {"name": "visit", "dtype": "string"}],
}
BATCHES = ("0001-clinic-train", "0002-clinic-train", "0003-clinic-test")
REL = 1e-4  # the ONNX graph in float32 on every path


def lake_frame() -> pd.DataFrame:
    """Diabetes with sex as its integer codes 1 / 2, a patient id, a visit date, and 6 rows
    without bmi (the ETL must quarantine them: bmi is required)."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    df = d.data.copy()
    df["sex"] = df["sex"].astype(int)
    df.insert(0, "patient_id", np.arange(100_001, 100_001 + len(df)))
    df["visit"] = pd.date_range("2020-01-01", periods=len(df), freq="D").strftime("%Y-%m-%d")
    df["progression"] = d.target
    df = df.sample(frac=1.0, random_state=1).reset_index(drop=True)
    df.loc[[3, 200, 300, 380, 400, 430], "bmi"] = np.nan
    return df


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """(params, root, server): version 1 trained on the contract above, in production."""
    from tarn.stages import etl, prepare, snapshot

    root = tmp_path_factory.mktemp("clinic")
    params = write_params(root, task_params("regression", **{
        "schema": SCHEMA, "bias.privileged": {"sex": "1"},
        "prepare.exclude_features": EXCLUDED, "serve.poll_interval_s": 0.5,
        "serve.notify_url": "", "serve.log_flush_interval_s": 0.3,
        "serve.log_file_idle_s": 0.5, "monitor.min_rows": 10_000}))
    df = lake_frame()
    cut = [0, int(len(df) * 0.4), int(len(df) * 0.8), len(df)]
    for i, name in enumerate(BATCHES):
        (root / "data" / "lake" / name).mkdir(parents=True)
        df.iloc[cut[i]:cut[i + 1]].to_csv(root / "data" / "lake" / name / "clinic.csv",
                                          index=False)
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)
    assert fit_version(params, root) == "1"
    server = Server(root, root / "params.yaml", free_port(), server_env())
    try:
        force_production(params, root, "1")
        server.admin()
        wait_version(server, "1", timeout=120)
        assert server.http.get("/version").json()["source"] == "onnx"
        yield params, root, server
    finally:
        server.stop()


def lake_rows(root: Path, n: int = 8) -> list[dict]:
    """The first ``n`` complete rows of the test batch's file as JSON values, every column
    of the file and the batch's name included."""
    df = pd.read_csv(root / "data" / "lake" / BATCHES[2] / "clinic.csv").dropna().head(n)
    rows = [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in df.to_dict("records")]
    return [{**r, "batch": BATCHES[2]} for r in rows]


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(list(rows[0]))
    for r in rows:
        w.writerow(["" if v is None else v for v in r.values()])
    return out.getvalue()


def bundle(params, root) -> Path:
    return root / params.edge.bundle_dir / f"{params.mlflow.registered_model}-v1"


@pytest.fixture(scope="module")
def page(clinic):
    """The browser page on the server, loaded (headless chromium)."""
    need(CHROMIUM.exists(), "chromium missing: run `make system-deps` (apt-get install chromium)")
    need((CLIENT_DIR / "vendor" / "ort.wasm.min.js").is_file(),
         "onnxruntime-web is not vendored: run `make client` (npm ci in web/)")
    from playwright.sync_api import sync_playwright

    _, _, server = clinic
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    timeout=60_000)
        pg = browser.new_page()
        pg.goto(f"{server.url}/client")
        pg.wait_for_function("window.tarnReady === true || window.tarnError !== null",
                             timeout=120_000)
        assert pg.evaluate("window.tarnError") is None
        yield pg
        browser.close()


def page_predict(pg, rows: list[dict]):
    """window.tarn.predict(rows): the predictions, or the error's message."""
    return pg.evaluate("""async (rows) => {
        try { return (await window.tarn.predict(rows)).map((r) => r.prediction); }
        catch (e) { return String(e.message || e); } }""", rows)


def test_the_etl_quarantines_rows_without_a_required_value(clinic):
    params, root, _ = clinic
    q = pd.read_parquet(root / params.paths.curated / QUARANTINE)
    missing = q[q["detail"].str.startswith("bmi: missing value (required")]
    assert len(missing) == 6, q[["reason", "detail"]]


def test_a_lake_row_is_scored_alike_on_every_path(clinic, page, tmp_path):
    params, root, server = clinic
    rows = lake_rows(root)
    assert {"patient_id", "visit", "s4", "progression", "batch"} <= set(rows[0])
    assert isinstance(rows[0]["sex"], int)  # the code as the file has it
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200, r.text
    want = np.array([p["prediction"] for p in r.json()["predictions"]])
    assert want.std() > 1  # real predictions

    cols = list(rows[0])
    split = {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in rows]}}
    inv = server.http.post("/invocations", json=split)
    assert inv.status_code == 200, inv.text
    got = {"/invocations": np.array(inv.json()["predictions"])}

    path = tmp_path / "lake-rows.csv"
    path.write_text(as_csv(rows))
    res = sh(tmp_path, "tarn", "edge", "predict", str(bundle(params, root)), str(path))
    got["tarn edge predict"] = np.array([float(x) for x in res.stdout.split()[1:]])
    model = EdgeModel(bundle(params, root))
    got["edge records"] = model.scores(columns_from_records(rows, Contract(model.schema),
                                                            model.input_fields))
    got["page records"] = np.array(page_predict(page, rows), dtype=float)
    csv_results = page.evaluate("""async (text) => {
        const { columns, n } = window.tarn.csvColumns(text);
        return (await window.tarn.predict(Array.from({ length: n }, (_, i) =>
          Object.fromEntries(Object.keys(columns).map((k) => [k, columns[k][i]]))))
        ).map((r) => r.prediction); }""", as_csv(rows))
    got["page CSV"] = np.array(csv_results, dtype=float)
    for where, values in got.items():
        assert values.shape == want.shape, where
        np.testing.assert_allclose(values, want, rtol=REL, err_msg=where)
    print({k: float(np.abs(v - want).max()) for k, v in got.items()})


REFUSED = {
    "bmi missing": ({"bmi": None}, "row 0: column 'bmi' is required"),
    "bmi absent": ({"bmi": ...}, "row 0: column 'bmi' is required"),
    "a code not declared": ({"sex": 3}, "row 0: column 'sex': unknown category '3'"),
    "an unknown column": ({"zip": 75001}, "unknown column(s) ['zip']"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_column_alike(clinic, page, tmp_path, case):
    params, root, server = clinic
    change, needle = REFUSED[case]
    row = {k: v for k, v in {**lake_rows(root, 1)[0], **change}.items() if v is not ...}
    r = server.http.post("/predict", json=[row])
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert needle in message
    model = EdgeModel(bundle(params, root))
    with pytest.raises(ValueError) as e:
        columns_from_records([row], Contract(model.schema), model.input_fields)
    assert str(e.value) == message
    assert page_predict(page, [row]) == message
    path = tmp_path / "bad.csv"
    path.write_text(as_csv([{**row, "bmi": None} if case == "bmi absent" else row]))
    res = sh(tmp_path, "tarn", "edge", "predict", str(bundle(params, root)), str(path),
             check=False)
    column = needle.split("'")[1]
    assert res.returncode == 2 and f"'{column}'" in res.stderr, res.stderr


def test_a_refusal_echoes_bounded_client_data(clinic):
    _, root, server = clinic
    row = lake_rows(root, 1)[0]
    big = server.http.post("/predict", json=[{**row, "sex": "x" * 100_000}])
    assert big.status_code == 422 and len(big.content) < 2_000, len(big.content)
    assert "(100,000 characters)" in big.json()["message"]
    many = server.http.post("/predict", json=[{**row, **{f"c{i}": 1 for i in range(10_000)}}])
    assert many.status_code == 422 and len(many.content) < 2_000, len(many.content)
    assert "and 9,990 more" in many.json()["message"]
    ignored = server.http.post("/predict", json=[{**row, "visit": "y" * 100_000}])
    assert ignored.status_code == 200, ignored.text  # an excluded column is never read


def test_the_monitor_sees_no_schema_change_in_a_log_without_the_excluded_columns(clinic):
    params, root, server = clinic
    rows = lake_rows(root, 6)
    rid = server.http.post("/predict", json=rows).json()["request_id"]
    deadline, log = time.monotonic() + 30, pd.DataFrame()
    while time.monotonic() < deadline:
        files = list((root / params.serve.prediction_log).glob("preds-*.parquet"))
        log = pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()
        if len(log) and (log["request_id"] == rid).sum() == len(rows):
            break
        time.sleep(0.2)
    assert len(log) and not set(EXCLUDED) & set(log.columns)  # the log lacks them
    result = monitor.run(params, root, sources=("log",))
    (source,) = result.sources
    assert source.name == "log" and source.rows >= len(rows)
    assert source.schema_change == ""
    assert result.decision.mode != "full"
    assert not any("schema change" in r for r in result.decision.reasons)
