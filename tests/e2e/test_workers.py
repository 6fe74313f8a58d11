"""`serve.workers: 2` over real sockets: two processes on one port, each following the
production alias and swapping on its own, one publishing the client bundle, prediction logs
that never collide, and no failed request across two promotions under load."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pandas as pd
import pytest

from tarn.lifecycle.promote import promote, rollback
from tests.support.project import make_version, small_project
from tests.support.serving import sample_rows, until

pytestmark = pytest.mark.slow
WORKERS = 2


@pytest.fixture(scope="module")
def served_project(tmp_path_factory):
    """Overrides conftest's: two workers, version 1 promoted (conftest's `server` starts it)."""
    root = tmp_path_factory.mktemp("workers")
    params = small_project(root, **{
        "serve.poll_interval_s": 0.5, "serve.notify_url": "", "serve.workers": WORKERS,
        "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.01,
        "serve.log_flush_interval_s": 0.3, "serve.log_file_idle_s": 0.5})
    make_version(params, root)
    promote(params, root, "1")
    return params, root


def _by_worker(server, path: str = "/version", tries: int = 200) -> dict[str, dict]:
    """One answer per worker: new connections until every worker has answered."""
    seen: dict[str, dict] = {}
    for _ in range(tries):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            body = c.get(path).json()
        seen[str(body["worker"])] = body
        if len(seen) == WORKERS:
            break
    return seen


def test_every_worker_serves_and_says_which_it_is(server, served_project):
    _, root = served_project
    answers = _by_worker(server)
    assert sorted(answers) == ["0", "1"], answers
    assert {a["version"] for a in answers.values()} == {"1"}
    assert {a["workers"] for a in answers.values()} == {WORKERS}
    workers_seen = set()
    for _ in range(100):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/predict", json=sample_rows(root, 1))
        assert r.status_code == 200, r.text
        workers_seen.add(r.headers["x-tarn-worker"])
        if len(workers_seen) == WORKERS:
            break
    assert workers_seen == {"0", "1"}
    metrics = server.http.get("/metrics").text
    assert "tarn_worker_info{" in metrics and f'workers="{WORKERS}"' in metrics


def test_two_promotions_under_load_fail_no_request_and_every_worker_swaps(server, served_project):
    params, root = served_project
    v_new = make_version(params, root, rounds=40, depth=3)
    rows = sample_rows(root, 2)
    results: list[tuple[float, int, str, str]] = []  # (answered, status, version, worker)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():  # new connections now and then: both workers get traffic
            with httpx.Client(base_url=server.url, timeout=30) as c:
                for _ in range(20):
                    r = c.post("/predict", json=rows)
                    results.append((time.time(), r.status_code,
                                    r.headers.get("x-model-version", ""),
                                    r.headers.get("x-tarn-worker", "")))

    def every_worker_on(version: str, since: float, timeout: float = 20) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            last: dict[str, str] = {}
            for at, _, v, w in list(results):
                if at >= since:
                    last[w] = v
            if len(last) == WORKERS and set(last.values()) == {version}:
                return time.time() - since
            time.sleep(0.02)
        raise AssertionError(f"not every worker serves {version}: {last}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    until(lambda: {w for _, _, _, w in list(results)} == {"0", "1"},
          "answers from both workers under load")
    promote(params, root, v_new, force=True, reason="workers test")
    server.admin()  # reaches one worker; it passes the nudge to the other
    promoted = time.time()
    every_worker_on(v_new, promoted)  # within its deadline, however busy the machine
    rollback(params, root)
    server.admin()
    rolled = time.time()
    every_worker_on("1", rolled)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert len(results) > 100
    assert all(code == 200 for _, code, _, _ in results), sorted(
        {(code, v) for _, code, v, _ in results if code != 200})
    current = json.loads((root / "bundles" / "current.json").read_text())
    assert current["version"] == "1"  # published by worker 0, after it swapped back
    assert not list((root / "bundles").glob(".*.tmp"))  # no bundle folder half-written


def test_prediction_logs_do_not_collide(server, served_project):
    _, root = served_project
    marker = 3_000_000 + time.time_ns() % 1_000_000
    ids = []
    for _ in range(40):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post("/predict", json=[{**row, "fnlwgt": marker} for row in
                                         sample_rows(root, 2)])
            ids.append(r.json()["request_id"])
    deadline = time.monotonic() + 15
    mine = pd.DataFrame()
    while time.monotonic() < deadline and len(mine) < 80:
        time.sleep(0.2)
        files = list((root / "data" / "predictions").glob("preds-*.parquet"))
        if files:
            log = pd.concat([pd.read_parquet(f) for f in files])
            mine = log[log["fnlwgt"] == marker]
    assert len(mine) == 80 and set(mine["request_id"]) == set(ids)
    assert mine.groupby("request_id").size().eq(2).all()
    pids = {f.name.split("-")[2] for f in files}
    assert len(pids) >= WORKERS  # one writer per process: names carry the pid
