"""The browser page's "why" (headless chromium over a real `tarn serve`): after a form row is
scored on the device, the page shows the backend's largest contributions for it; without a
reachable /explain it says that the bundle does not compute them, and the score still shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tarn.serve.app import CLIENT_DIR
from tests.support.servers import need
from tests.support.serving import sample_rows, wait_version

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def served_project(shared_served_project):
    """Read-only: the session's small Adult project, version 1 in production."""
    return shared_served_project


@pytest.fixture(scope="module")
def server(shared_server):
    return shared_server


@pytest.fixture(scope="module")
def browser(served_project, server):
    need(CHROMIUM.exists(), "chromium missing: run `make system-deps` (apt-get install chromium)")
    need((CLIENT_DIR / "vendor" / "ort.wasm.min.js").is_file(),
         "onnxruntime-web is not vendored: run `make client` (npm ci in web/)")
    wait_version(server, "1", timeout=120)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, timeout=60_000)
        yield b
        b.close()


def _page(browser, server, block_explain: bool = False):
    context = browser.new_context()
    if block_explain:  # the backend unreachable for /explain: as for a page hosted elsewhere
        context.route("**/explain", lambda route: route.abort())
    page = context.new_page()
    page.goto(f"{server.url}/client")
    page.wait_for_function("window.tarnReady === true || window.tarnError !== null",
                           timeout=120_000)
    assert page.evaluate("window.tarnError") is None
    return context, page


def _score(page, row: dict) -> None:
    for name, value in row.items():
        sel = f"#in-{name}"
        if page.query_selector(sel) is None:
            continue
        if page.eval_on_selector(sel, "el => el.tagName") == "SELECT":
            page.select_option(sel, value="" if value is None else str(value))
        else:
            page.fill(sel, "" if value is None else str(value))
    page.click("#predict")
    page.wait_for_selector("#result[data-run='1']")


def test_the_page_shows_the_backends_top_contributions(browser, served_project, server):
    _, root = served_project
    row = sample_rows(root, 1)[0]
    context, page = _page(browser, server)
    try:
        _score(page, row)
        page.wait_for_selector("#why[data-explained='true']", timeout=30_000)
        shown = page.eval_on_selector_all(
            "#why-table tr[data-column]",
            "trs => trs.map(t => [t.dataset.column, Number(t.dataset.contribution)])")
        want = server.http.post("/explain", json=[row]).json()["predictions"][0]["explanation"]
        top = list(want["contributions"].items())[:6]
        assert [c for c, _ in shown] == [c for c, _ in top]
        assert all(abs(v - w) < 1e-9 for (_, v), (_, w) in zip(shown, top, strict=True))
        status = page.text_content("#why-status")
        assert "raw score" in status and "log-odds" in status
        assert page.get_attribute("#result", "data-probability") is not None
    finally:
        context.close()


def test_without_the_backend_the_page_says_the_bundle_does_not_explain(browser, served_project,
                                                                       server):
    _, root = served_project
    context, page = _page(browser, server, block_explain=True)
    try:
        _score(page, sample_rows(root, 1)[0])
        page.wait_for_selector("#why[data-explained='unavailable']", timeout=30_000)
        assert "does not compute them" in page.text_content("#why-status")
        assert "does not" in page.text_content("#why-note")
        assert page.is_hidden("#why-table")
        assert page.get_attribute("#result", "data-probability") is not None  # scored anyway
    finally:
        context.close()
