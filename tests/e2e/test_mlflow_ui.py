"""What a person sees in the MLflow UI, checked in Debian's headless chromium against a real
`mlflow server` on a small project's store: the runs list with its Dataset column filled, a
training run with its datasets and reports, a version page with a few readable tags (counted
through the REST API, not in pixels), and the evaluation and bias pages.

Screenshots go to a temporary folder; with ``TARN_SCREENSHOTS=docs/img`` (``make
screenshots``) they replace the ones the README shows.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tarn.core.tags import MAX_VERSION_TAGS, Lineage, VersionTag
from tarn.core.tracking import tracking_uri
from tarn.lifecycle.promote import promote
from tarn.stages import evaluate, train, tune
from tests.support.project import REPO, small_project
from tests.support.servers import MlflowServer, need

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """tune -> train -> evaluate -> promote on a small lake: the runs and the version a
    person would browse."""
    root = tmp_path_factory.mktemp("ui")
    params = small_project(root, **{"promote.max_demographic_parity_difference": 0.6,
                                    "promote.tolerance": 0.05})
    tuned = tune.run(params, root)
    trained = train.run(params, root)
    evaluate.run(params, root)
    promote(params, root, trained.version)
    return params, root, tuned, trained


@pytest.fixture(scope="module")
def ui(project, tmp_path_factory):
    params, root, _, _ = project
    d = tmp_path_factory.mktemp("mlflow-ui")
    server = MlflowServer(d, backend=tracking_uri(params.mlflow, root))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("TARN_SCREENSHOTS")
    out = (REPO / target) if target else tmp_path_factory.mktemp("shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    need(CHROMIUM.exists(), "chromium missing: run `make system-deps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        yield b
        b.close()


def api(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def page_of(browser, width: int = 1600, height: int = 1000):
    context = browser.new_context(viewport={"width": width, "height": height})
    return context, context.new_page()


def shoot(page, path: Path, full_page: bool = False) -> None:
    """A screenshot of what a person reads: the assistant side panel closed first."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
        close.first.wait_for(state="detached", timeout=10_000)
    page.screenshot(path=str(path), full_page=full_page)


def test_runs_list_shows_the_datasets(ui, project, browser, shots):
    params, _, tuned, trained = project
    exp = api(ui.url, "experiments/get-by-name?experiment_name="
              + urllib.parse.quote(params.mlflow.experiment))["experiment"]["experiment_id"]
    runs = {r["info"]["run_id"]: r for r in api(ui.url, "runs/search", {
        "experiment_ids": [exp], "max_results": 100})["runs"]}
    for run_id, contexts in ((tuned.parent_run_id, {"training", "validation"}),
                             (trained.run_id, {"training", "test"})):
        inputs = runs[run_id]["inputs"]["dataset_inputs"]
        assert {t["value"] for i in inputs for t in i["tags"]} == contexts
    context, page = page_of(browser)
    try:
        page.goto(f"{ui.url}/#/experiments/{exp}/runs")
        page.get_by_text("train @ snapshot").first.wait_for(timeout=UI_TIMEOUT_MS)
        page.get_by_text("valid @ snapshot").first.wait_for(timeout=UI_TIMEOUT_MS)
        expand = page.get_by_role("button", name=re.compile("expand", re.I))
        if expand.count():  # the tune run's trials under it
            expand.first.click()
        shoot(page, shots / "mlflow-runs.png")
    finally:
        context.close()
    assert (shots / "mlflow-runs.png").stat().st_size > 20_000


def test_training_run_page(ui, project, browser, shots):
    _, _, _, trained = project
    run = api(ui.url, f"runs/get?run_id={trained.run_id}")["run"]
    exp = run["info"]["experiment_id"]
    arts = {f["path"] for f in api(ui.url, f"artifacts/list?run_id={trained.run_id}")["files"]}
    assert {"model_card.md", "evaluation.html", "bias.html"} <= arts
    context, page = page_of(browser, height=1300)
    try:
        page.goto(f"{ui.url}/#/experiments/{exp}/runs/{trained.run_id}")
        page.get_by_text("test @ snapshot").first.wait_for(timeout=UI_TIMEOUT_MS)
        shoot(page, shots / "mlflow-train-run.png", full_page=True)
        page.goto(f"{ui.url}/#/experiments/{exp}/runs/{trained.run_id}/artifacts/model_card.md")
        page.get_by_text("Model card").first.wait_for(timeout=UI_TIMEOUT_MS)
        shoot(page, shots / "mlflow-model-card.png")
    finally:
        context.close()


def test_version_page_has_a_few_readable_tags(ui, project, browser, shots):
    params, _, _, trained = project
    name = params.mlflow.registered_model
    mv = api(ui.url, f"model-versions/get?name={name}&version={trained.version}")
    tags = {t["key"]: t["value"] for t in mv["model_version"].get("tags", [])}
    assert len(tags) <= MAX_VERSION_TAGS, sorted(tags)
    assert {VersionTag.TASK, VersionTag.TEST, VersionTag.GATE, VersionTag.DATA,
            Lineage.TAG} <= set(tags)
    assert tags[VersionTag.GATE] == "passed" and tags[VersionTag.TASK] == "binary"
    assert not [k for k in tags if "agreed" in k or "lock" in k]  # bookkeeping is elsewhere
    context, page = page_of(browser)
    try:
        page.goto(f"{ui.url}/#/models/{name}/versions/{trained.version}")
        page.get_by_text(VersionTag.GATE).first.wait_for(timeout=UI_TIMEOUT_MS)
        shoot(page, shots / "mlflow-version.png", full_page=True)
    finally:
        context.close()


def test_report_pages(project, browser, shots):
    """evaluation.html and bias.html as a reviewer opens them (offline files)."""
    params, root, _, _ = project
    reports = root / params.paths.reports
    fairness = (reports / "evaluation.html").read_text().split("<h2>Fairness</h2>")[1]
    table = fairness.split("<th>rows</th>")[1].split("</table>")[0]  # the first group table
    rows = re.findall(r"<tr><td>[^<]*</td><td>([^<]*)</td>", table)
    assert rows and all(re.fullmatch(r"\d{1,3}(,\d{3})*", r) for r in rows), rows  # integers
    context, page = page_of(browser, width=1280, height=900)
    try:
        for name in ("evaluation", "bias"):
            page.goto((reports / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(shots / f"{name}-report.png"), full_page=True)
    finally:
        context.close()
    for name in ("evaluation", "bias"):
        assert (shots / f"{name}-report.png").stat().st_size > 20_000
