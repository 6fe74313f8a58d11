"""The in-browser client (/client) in Debian's headless chromium: the page scores rows with the
published bundle and onnxruntime-web, and gets the backend's probabilities and labels.

Needs /usr/bin/chromium (`make system-deps`) and the vendored onnxruntime-web (`make client`);
both come with `make test`. Playwright drives the system browser: no browser is downloaded.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from tarn.edge.export import current_bundle
from tarn.edge.runner import MODEL, OnnxScorer
from tarn.lifecycle.promote import promote
from tarn.serve.app import CLIENT_DIR
from tests.support.project import make_version, small_project
from tests.support.servers import need
from tests.support.serving import sample_rows, wait_version

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TOLERANCE = 1e-4
NULLABLE = ("workclass", "occupation", "native_country")


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    """Overrides conftest's: version 1 has the capacity to split on the 'missing' categories:
    the default 30-round model ignores them, so it could not tell a page that encodes a missing
    value wrongly (as an unknown category) from one that gets it right."""
    root = tmp_path_factory.mktemp("browser")
    params = small_project(root, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "",
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.01})
    make_version(params, root, rounds=100, depth=6, lr=0.3)
    return params, root


@pytest.fixture(scope="module")
def browser():
    need(CHROMIUM.exists(), "chromium missing: run `make system-deps` (apt-get install chromium)")
    need((CLIENT_DIR / "vendor" / "ort.wasm.min.js").is_file(),
          "onnxruntime-web is not vendored: run `make client` (npm ci in web/)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                              timeout=60_000)
        yield b
        b.close()


@pytest.fixture(scope="module")
def deployed(server, served_project):
    """The server serving version 1, whose bundle /client/bundle/ publishes."""
    params, root = served_project
    promote(params, root, "1")
    assert server.admin().status_code == 200
    wait_version(server, "1")
    meta = server.http.get("/client/bundle/metadata.json")
    assert meta.status_code == 200 and meta.json()["version"] == "1", meta.text
    return server


class Page:
    """One page of the client, with what it asked the network for and what it complained of."""

    def __init__(self, context, base: str) -> None:
        self.base, self.outside, self.errors = base, [], []
        context.route("**/*", self._route)
        self.page = context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                     if m.type == "error" else None)

    def _route(self, route) -> None:
        if route.request.url.startswith(self.base + "/"):
            route.continue_()
        else:  # a CDN, the internet: the page must not need any of it
            self.outside.append(route.request.url)
            route.abort()


@pytest.fixture(scope="module")
def client(browser, deployed):
    context = browser.new_context()
    page = Page(context, deployed.url)
    page.page.goto(f"{deployed.url}/client")
    page.page.wait_for_function("window.tarnReady === true || window.tarnError !== null",
                                timeout=120_000)
    yield page
    context.close()


def backend(server, rows: list[dict]) -> tuple[np.ndarray, list[int]]:
    r = server.http.post("/predict", json=rows)
    assert r.status_code == 200 and r.json()["model_version"] == "1", r.text
    preds = r.json()["predictions"]
    return np.array([p["probability"] for p in preds]), [p["label"] for p in preds]


def with_missing(rows: list[dict]) -> list[dict]:
    """The rows, with the nullable categories missing in some of them (and in one row all)."""
    rows = [dict(r) for r in rows]
    for i, col in enumerate(NULLABLE, start=1):
        rows[i][col] = None
    for col in NULLABLE:
        rows[4][col] = None
    return rows


def missing_sensitivity(served_project, rows: list[dict]) -> np.ndarray:
    """Per row, how much the published graph's probability moves when a missing category is
    fed as an unknown one instead of the bundle's missing category: where it moves, the page
    must encode missing exactly as the backend does to agree with it."""
    params, root = served_project
    scorer = OnnxScorer((current_bundle(root / params.edge.bundle_dir) / MODEL).read_bytes())
    columns = {name: [r[name] for r in rows] for name in scorer.input_names}
    right = scorer.predict_proba(columns)
    scorer.missing = "(an unknown category)"
    return np.abs(scorer.predict_proba(columns) - right)


def test_page_loads_the_published_bundle(client, deployed):
    page = client.page
    assert page.evaluate("window.tarnError") is None
    assert page.text_content("#model-version").strip() == "1"
    assert page.text_content("#model-name").strip() == deployed.http.get(
        "/version").json()["name"]
    assert page.get_attribute("body", "data-ready") == "true"
    assert not page.is_disabled("#predict") and not page.is_disabled("#csv")
    for name in NULLABLE:  # the schema's optional categories offer "(missing)"
        assert page.eval_on_selector(f"#in-{name}", "el => el.options[0].value") == ""


def fill_form(page, row: dict) -> None:
    for name, value in row.items():
        selector = f"#in-{name}"
        if page.eval_on_selector(selector, "el => el.tagName") == "SELECT":
            page.select_option(selector, value="" if value is None else str(value))
        else:
            page.fill(selector, "" if value is None else str(value))


def test_form_gives_the_backends_probability(client, deployed, served_project):
    _, root = served_project
    rows = with_missing(sample_rows(root, 20))
    moves = missing_sensitivity(served_project, rows)
    assert moves.max() > 10 * TOLERANCE, "no row where missing categories matter"
    # a complete row, and the row with missing categories where they matter most
    cases = [next(r for r in rows if all(r[c] is not None for c in NULLABLE)),
             rows[int(np.argmax(moves))]]
    want, want_labels = backend(deployed, cases)
    page = client.page
    for run, row in enumerate(cases, start=1):
        fill_form(page, row)
        page.click("#predict")
        page.wait_for_selector(f"#result[data-run='{run}']")
        got = page.get_attribute("#result", "data-probability")
        assert got is not None, page.text_content("#result")
        assert abs(float(got) - want[run - 1]) <= TOLERANCE, (row, got, want[run - 1])
        assert int(page.get_attribute("#result", "data-label")) == want_labels[run - 1]
        assert page.get_attribute("#result", "data-version") == "1"


def csv_bytes(rows: list[dict], question_mark: tuple[int, str]) -> bytes:
    """A CSV with the target column (the model does not use it: accepted and ignored, as in
    the lake), missing values as empty cells and one as '?'."""
    out = io.StringIO()
    names = list(rows[0])
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["income", *names])
    for i, r in enumerate(rows):
        cells = ["" if r[c] is None else r[c] for c in names]
        if i == question_mark[0]:
            cells[names.index(question_mark[1])] = "?"
        w.writerow([">50K" if i % 2 else "<=50K", *cells])
    return out.getvalue().encode()


def test_csv_upload_gives_the_backends_probabilities(client, deployed, served_project):
    _, root = served_project
    rows = with_missing(sample_rows(root, 20))
    rows[5]["workclass"] = None  # written as "?"
    assert sum(any(r[c] is None for c in NULLABLE) for r in rows) >= 5
    assert (missing_sensitivity(served_project, rows) > 10 * TOLERANCE).sum() >= 2
    want, want_labels = backend(deployed, rows)
    page = client.page
    page.set_input_files("#csv", files=[{"name": "rows.csv", "mimeType": "text/csv",
                                         "buffer": csv_bytes(rows, (5, "workclass"))}])
    page.wait_for_selector("#csv-status[data-run='1']")
    assert page.get_attribute("#csv-status", "data-state") == "done", \
        page.text_content("#csv-status")
    assert page.get_attribute("#csv-results", "data-rows") == str(len(rows))
    shown = page.eval_on_selector_all(
        "#csv-results tbody tr", "trs => trs.map(t => [t.dataset.probability, t.dataset.label])")
    got = np.array([float(p) for p, _ in shown])
    assert len(got) == len(rows)
    diff = float(np.abs(got - want).max())
    print(f"page vs backend, {len(rows)} CSV rows: max |diff| {diff:.3g}")
    assert diff <= TOLERANCE, (got, want)
    assert [int(lab) for _, lab in shown] == want_labels
    assert "version 1" in page.text_content("#csv-status")


def test_csv_errors_name_the_problem(client):
    page = client.page
    page.set_input_files("#csv", files=[{"name": "bad.csv", "mimeType": "text/csv",
                                         "buffer": b"age,sex\n39,Male\n"}])
    page.wait_for_selector("#csv-status[data-run='2']")
    assert page.get_attribute("#csv-status", "data-state") == "error"
    assert "missing column(s)" in page.text_content("#csv-status")


def _lake_csv(rows: list[dict]) -> bytes:
    """The rows under the lake's own header (education-num, capital-gain, ...)."""
    out = io.StringIO()
    names = list(rows[0])
    w = csv.writer(out, lineterminator="\n")
    w.writerow([n.replace("_", "-") for n in names])
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in names])
    return out.getvalue().encode()


def test_csv_in_the_lakes_format_and_the_contract(client, deployed, served_project):
    """One vocabulary: the lake's header is read through the contract's aliases, and a value
    the ETL would quarantine is refused naming its line and column."""
    _, root = served_project
    rows = sample_rows(root, 6)
    want, _ = backend(deployed, rows)
    page = client.page
    page.set_input_files("#csv", files=[{"name": "lake.csv", "mimeType": "text/csv",
                                         "buffer": _lake_csv(rows)}])
    page.wait_for_selector("#csv-status[data-run='3']")
    assert page.get_attribute("#csv-status", "data-state") == "done", \
        page.text_content("#csv-status")
    shown = page.eval_on_selector_all("#csv-results tbody tr",
                                      "trs => trs.map(t => t.dataset.probability)")
    assert float(np.abs(np.array([float(p) for p in shown]) - want).max()) <= TOLERANCE
    rows[2]["workclass"] = "Spaceship"
    page.set_input_files("#csv", files=[{"name": "bad.csv", "mimeType": "text/csv",
                                         "buffer": _lake_csv(rows)}])
    page.wait_for_selector("#csv-status[data-run='4']")
    text = page.text_content("#csv-status")
    assert page.get_attribute("#csv-status", "data-state") == "error"
    assert "line 4" in text and "workclass" in text and "Spaceship" in text, text
    err = page.evaluate("""async (row) => { try { await window.tarn.predict(
        [{...row, "age": 150}]); return ""; } catch (e) { return e.message; } }""",
                        sample_rows(root, 1)[0])
    assert "age" in err and "150" in err, err


def test_nothing_is_fetched_elsewhere_and_nothing_failed(client):
    assert client.outside == []  # no CDN: onnxruntime-web and its wasm come from the server
    assert client.errors == []


# --------------------------------------------------------------------------- other tasks
def _task_page(browser, tmp_path_factory, kind: str, **overrides):
    """(params, root, server, Page): a ``kind`` version served, its page loaded."""
    from tests.support.task_models import served_task_project

    root = tmp_path_factory.mktemp(f"browser-{kind}")
    params, server = served_task_project(root, kind, **overrides)
    context = browser.new_context()
    page = Page(context, server.url)
    page.page.goto(f"{server.url}/client")
    page.page.wait_for_function("window.tarnReady === true || window.tarnError !== null",
                                timeout=120_000)
    yield params, root, server, page
    context.close()
    server.stop()


@pytest.fixture(scope="module")
def multiclass_page(browser, tmp_path_factory):
    # a contract whose missing marker is not the demo's "?": the page must read it
    yield from _task_page(browser, tmp_path_factory, "multiclass",
                          **{"schema.missing_values": ["NA", ""]})


def test_multiclass_page_gives_every_class_like_the_backend(multiclass_page):
    """Every class's probability and the most probable class's name, from a CSV whose missing
    cells use the contract's own marker ("NA": the page reads it from schema.json)."""
    import pandas as pd

    from tarn.core.catalog import load_split

    params, root, server, client = multiclass_page
    page = client.page
    assert page.evaluate("window.tarnError") is None
    assert page.get_attribute("body", "data-task") == "multiclass"
    assert '"NA"' in page.text_content("#csv-missing")
    header = "sepal_length,sepal_width,petal_length,petal_width,group"
    read = page.evaluate("""(text) => { try { const c = window.tarn.csvColumns(text);
        return Number.isNaN(c.columns.sepal_width[0]) ? "missing" : "read"; }
        catch (e) { return e.message; } }""", f"{header}\n5.1,NA,1.4,0.2,A\n")
    # this contract's marker reads as missing, which a required input refuses, as the server
    assert "line 2: column 'sepal_width' is required" in read, read
    read = page.evaluate("""(text) => { try { window.tarn.csvColumns(text); return "read"; }
        catch (e) { return e.message; } }""", f"{header}\n5.1,?,1.4,0.2,A\n")
    assert "not a number" in read  # the demo's "?" means nothing here
    frame = load_split(params, root, "test").frame.head(15)
    cols = [c.name for c in params.schema.columns]
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in frame[cols].astype(object).to_dict("records")]
    answer = server.http.post("/predict", json=rows).json()["predictions"]
    classes = list(params.schema.classes)
    want = np.array([[p["probabilities"][c] for c in classes] for p in answer])
    text = pd.DataFrame(rows).to_csv(index=False, na_rep="NA").encode()
    page.set_input_files("#csv", files=[{"name": "iris.csv", "mimeType": "text/csv",
                                         "buffer": text}])
    page.wait_for_selector("#csv-status[data-run='1']")
    assert page.get_attribute("#csv-status", "data-state") == "done", \
        page.text_content("#csv-status")
    shown = page.eval_on_selector_all(
        "#csv-results tbody tr",
        "trs => trs.map(t => [t.dataset.probabilities, t.dataset.label, t.dataset.class])")
    import json

    got = np.array([[json.loads(p)[c] for c in classes] for p, _, _ in shown])
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= TOLERANCE
    assert [int(lab) for _, lab, _ in shown] == [p["label"] for p in answer]
    assert [name for _, _, name in shown] == [p["class"] for p in answer]
    # the form: one row, every class named in the result
    fill_form(page, {k: v for k, v in rows[0].items()})
    page.click("#predict")
    page.wait_for_selector("#result[data-run='1']")
    probs = json.loads(page.get_attribute("#result", "data-probabilities"))
    assert abs(probs[classes[0]] - want[0, 0]) <= TOLERANCE
    assert page.get_attribute("#result", "data-class") == answer[0]["class"]
    assert all(c in page.text_content("#result") for c in classes)
    assert client.outside == [] and client.errors == []


@pytest.fixture(scope="module")
def regression_page(browser, tmp_path_factory):
    yield from _task_page(browser, tmp_path_factory, "regression")


def test_regression_page_gives_the_backends_values(regression_page):
    """The predicted value of every CSV row and of the form's row, as the backend gives it
    (relative to the values' spread, as the bundle's parity gate measures)."""
    import json

    import pandas as pd

    from tarn.core.catalog import load_split

    params, root, server, client = regression_page
    page = client.page
    assert page.evaluate("window.tarnError") is None
    assert page.get_attribute("body", "data-task") == "regression"
    frame = load_split(params, root, "test").frame.head(15)
    cols = [c.name for c in params.schema.columns]
    rows = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
            for r in frame[cols].astype(object).to_dict("records")]
    answer = server.http.post("/predict", json=rows).json()["predictions"]
    want = np.array([p["prediction"] for p in answer])
    spread = max(float(np.std(want)), 1.0)
    text = pd.DataFrame(rows).to_csv(index=False).encode()
    page.set_input_files("#csv", files=[{"name": "rows.csv", "mimeType": "text/csv",
                                         "buffer": text}])
    page.wait_for_selector("#csv-status[data-run='1']")
    assert page.get_attribute("#csv-status", "data-state") == "done", \
        page.text_content("#csv-status")
    shown = page.eval_on_selector_all("#csv-results tbody tr",
                                      "trs => trs.map(t => t.dataset.prediction)")
    got = np.array([float(v) for v in shown])
    assert got.shape == want.shape and float(np.abs(got - want).max()) / spread <= 1e-4
    fill_form(page, dict(rows[0]))
    page.click("#predict")
    page.wait_for_selector("#result[data-run='1']")
    value = float(page.get_attribute("#result", "data-prediction"))
    assert abs(value - want[0]) / spread <= 1e-4
    assert json.dumps(page.get_attribute("#result", "data-class")) == "null"  # no class
    assert client.outside == [] and client.errors == []
