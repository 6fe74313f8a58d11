"""Is the server still there for everyone while one client sends the largest requests it
accepts? `/health` p50/p99 with no load, then while clients post ~5 MB scoring requests back to
back (target: p99 under 50 ms; a benchmark prints, it does not assert).

Self-contained: builds a small project in a temporary folder (as the tests do), registers and
promotes a version, starts a real `tarn serve`. ``--src`` runs the server from another source
tree (e.g. a `git worktree` of an older commit) to compare before / after on the same machine.

Usage: python bench/bench_hostile.py [--seconds 20] [--clients 2] [--src PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def health_latencies(port: int, seconds: float, stop: threading.Event | None = None,
                     every_s: float = 0.01) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop.is_set()):
        t = time.perf_counter()
        conn.request("GET", "/health")
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t)
        time.sleep(every_s)
    return lat


def big_body(root: Path, limit: int) -> tuple[bytes, int]:
    """A records body just under ``limit`` bytes, and its row count."""
    from tests.support.serving import sample_rows

    rows = sample_rows(root, 200)
    one = len(json.dumps(rows[0])) + 2
    n = int(limit * 0.98) // one
    records = [rows[i % len(rows)] for i in range(n)]
    body = json.dumps(records).encode()
    while len(body) > limit:
        records = records[: int(len(records) * 0.99)]
        body = json.dumps(records).encode()
    return body, len(records)


def summary(lat: list[float]) -> str:
    a = np.array(lat) * 1000
    return (f"n={len(a):5d}  p50 {np.percentile(a, 50):7.2f} ms  p99 {np.percentile(a, 99):7.2f}"
            f" ms  max {a.max():8.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--src", default="", help="run the server from this source tree")
    args = ap.parse_args()

    from tests.support.project import make_version, small_project
    from tests.support.servers import free_port
    from tests.support.serving import Server, server_env

    from tarn.lifecycle.promote import promote

    with tempfile.TemporaryDirectory(prefix="tarn-bench-hostile-") as d:
        root = Path(d)
        params = small_project(root, **{"serve.notify_url": "",
                                        "promote.max_demographic_parity_difference": 0.6})
        promote(params, root, make_version(params, root, rounds=200, depth=6), force=True,
                reason="bench")
        env = server_env()
        params_file = root / "params.yaml"
        if args.src:
            import yaml

            env["PYTHONPATH"] = os.pathsep.join([str(Path(args.src) / "src"),
                                                 env.get("PYTHONPATH", "")])
            raw = yaml.safe_load(params_file.read_text())  # keep only the keys it knows
            for key in ("log_file_max_age_s", "log_file_idle_s", "log_retention_bytes",
                        "log_retention_days", "log_queue_rows"):
                raw["serve"].pop(key, None)
            params_file = root / "params-src.yaml"
            params_file.write_text(yaml.safe_dump(raw))
        server = Server(root, params_file, free_port(), env)
        try:
            port = int(server.url.rsplit(":", 1)[1])
            body, rows = big_body(root, params.serve.max_body_bytes)
            print(f"server from {args.src or ROOT}; request body {len(body) / 1e6:.2f} MB, "
                  f"{rows:,} rows; {args.clients} client(s) posting back to back, "
                  f"{args.seconds:.0f} s per measurement; /health every 10 ms")
            health_latencies(port, 2)  # warm
            idle = health_latencies(port, args.seconds)
            print(f"/health, no load:          {summary(idle)}")

            stop = threading.Event()
            big: list[tuple[float, int]] = []

            def client() -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                while not stop.is_set():
                    t = time.perf_counter()
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    big.append((time.perf_counter() - t, r.status))

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(1)  # the first large requests are being scored
            loaded = health_latencies(port, args.seconds)
            stop.set()
            for t in threads:
                t.join()
            print(f"/health, 5 MB requests:    {summary(loaded)}   (target p99 < 50 ms)")
            ok = [s for s, code in big if code == 200]
            print(f"5 MB requests: {len(big)} sent, {len(ok)} answered 200, median "
                  f"{np.median(ok) * 1000 if ok else float('nan'):.0f} ms each "
                  f"({rows * len(ok) / max(sum(ok), 1e-9):,.0f} rows/s)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
