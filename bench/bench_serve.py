"""Serving benchmark: our backend vs `mlflow models serve` on the same registered Adult model,
same machine, one run (run `make run` and `tarn promote --latest` first).

Prints:
  1. single-row /invocations throughput and p50/p99 latency with 1 and 8 concurrent clients,
     ours vs MLflow's server (target: >= 3x throughput and a lower p99);
  2. one 10,000-row request vs in-process `predict_proba` of the sklearn Pipeline on the same
     rows (target: <= 1.5x), and MLflow's server for reference;
  3. promotion to traffic: two promotions (`tarn promote`, then `tarn rollback`) under a
     30 s load: time from the command returning to the new version serving (target <= 2 s),
     failed requests (target 0), responses naming a version that was not production (target 0).

Usage: python bench/bench_serve.py [--seconds 5] [--load-seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "bench-admin-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TARN_ADMIN_SECRET": SECRET,
            "MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / '.mlflow' / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true"}


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited ({proc.returncode})")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"server on {port} not ready")


def post(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def _client(port: int, body: bytes, seconds: float, out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat, fails = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        status, _ = post(conn, body)
        lat.append(time.perf_counter() - t)
        fails += status != 200
    out.put((lat, fails))


def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(port, body, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([np.array(r[0]) for r in results])
    return {"rps": len(lat) / seconds, "p50": np.percentile(lat, 50) * 1000,
            "p99": np.percentile(lat, 99) * 1000, "fails": sum(r[1] for r in results)}


def rows_payload(n: int) -> tuple[bytes, object]:
    import pandas as pd

    from tarn.config import load_params
    from tarn.core.features import to_model_frame

    params = load_params(ROOT / "params.yaml")
    df = pd.read_parquet(ROOT / params.paths.prepared / "test.parquet")
    df = pd.concat([df] * (n // len(df) + 1)).head(n)
    X = to_model_frame(df, params.schema, params.prepare)
    cols = list(X.columns)
    data = [[None if (isinstance(v, float) and np.isnan(v)) else
             (v.item() if hasattr(v, "item") else v) for v in row]
            for row in X.astype(object).itertuples(index=False, name=None)]
    body = json.dumps({"dataframe_split": {"columns": cols, "data": data}}).encode()
    return body, X


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--load-seconds", type=float, default=30)
    args = ap.parse_args()
    from tarn.config import load_params
    from tarn.core.registry import Registry

    params = load_params(ROOT / "params.yaml")
    reg = Registry(params.mlflow, ROOT)
    version = reg.production()
    if version is None:
        sys.exit("no production version: run `tarn promote --latest` first")
    name = params.mlflow.registered_model
    p_ml, p_us = free_port(), free_port()
    procs = []
    try:
        ml = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m",
                               f"models:/{name}/{version}", "--env-manager", "local", "-h",
                               "127.0.0.1", "-p", str(p_ml)], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ml)
        us = subprocess.Popen([str(BIN / "tarn"), "serve", "--port", str(p_us)], cwd=ROOT,
                              env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(us)
        wait_ready(p_ml, "/ping", ml)
        wait_ready(p_us, "/ready", us)
        one, _ = rows_payload(1)
        for port in (p_ml, p_us):  # warm up both
            load(port, one, 1, 1)
        print(f"model {name} version {version}; single-row /invocations, {args.seconds:.0f} s "
              "per measurement")
        print(f"{'clients':>8} {'server':>22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'fails':>6}")
        for clients in (1, 8):
            res = {}
            for label, port in (("mlflow models serve", p_ml), ("tarn serve", p_us)):
                r = load(port, one, clients, args.seconds)
                res[label] = r
                print(f"{clients:>8} {label:>22} {r['rps']:>8.0f} {r['p50']:>8.2f} "
                      f"{r['p99']:>8.2f} {r['fails']:>6}")
            a, b = res["tarn serve"], res["mlflow models serve"]
            print(f"{'':>8} {'ratio':>22} {a['rps'] / b['rps']:>7.1f}x {'':>8} "
                  f"{a['p99'] / b['p99']:>7.2f}x   (targets: >= 3x, p99 lower)")

        big, X = rows_payload(10_000)
        from tarn.core.model import load_local
        pipe = load_local(ROOT / params.paths.models / "model")
        times = {}
        for label, fn in (
            ("in-process predict_proba", lambda: pipe.predict_proba(X)),
            ("tarn serve", lambda: post(http.client.HTTPConnection("127.0.0.1", p_us), big)),
            ("mlflow models serve",
             lambda: post(http.client.HTTPConnection("127.0.0.1", p_ml), big)),
        ):
            fn()
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                out = fn()
                runs.append(time.perf_counter() - t)
                if isinstance(out, tuple):
                    assert out[0] == 200, out[1][:200]
            times[label] = float(np.median(runs)) * 1000
        base = times["in-process predict_proba"]
        print(f"\none 10,000-row request (median of 5): in-process {base:.0f} ms, tarn serve "
              f"{times['tarn serve']:.0f} ms ({times['tarn serve'] / base:.2f}x, target <= "
              f"1.5x), mlflow models serve {times['mlflow models serve']:.0f} ms "
              f"({times['mlflow models serve'] / base:.2f}x)")

        promotion_under_load(reg, params, p_us, one, version, args.load_seconds)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def promotion_under_load(reg, params, port: int, body: bytes, old: str, seconds: float) -> None:
    """Two promotions under load: new version serving time, failures, wrong versions."""
    import mlflow

    src = reg.version(old)
    new = mlflow.register_model(src.source, reg.name, tags=dict(src.tags)).version
    params_file = ROOT / ".mlflow" / "bench-params.yaml"
    import yaml
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["serve"]["notify_url"] = f"http://127.0.0.1:{port}"
    params_file.write_text(yaml.safe_dump(raw))
    records: list[tuple[float, float, int, str]] = []
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            t = time.time()
            conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            records.append((t, time.time(), r.status, r.getheader("X-Model-Version") or ""))

    def serving() -> str:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/version")
        return json.loads(c.getresponse().read())["version"]

    def run_cli(*argv: str) -> tuple[float, float]:
        start = time.time()
        subprocess.run([str(BIN / "tarn"), "--params", str(params_file), *argv], cwd=ROOT,
                       env=env(), check=True, capture_output=True)
        return start, time.time()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    t0 = time.time()
    time.sleep(seconds / 3)
    p1 = run_cli("promote", "--version", str(new), "--force", "--reason", "bench")
    while serving() != str(new):
        time.sleep(0.01)
    lag1 = time.time() - p1[1]
    time.sleep(max(0.0, t0 + 2 * seconds / 3 - time.time()))
    p2 = run_cli("rollback", "--reason", "bench")
    while serving() != str(old):
        time.sleep(0.01)
    lag2 = time.time() - p2[1]
    time.sleep(max(0.0, t0 + seconds - time.time()))
    stop.set()
    for t in threads:
        t.join()
    # which version may a response name: one that held the alias during the request
    spans = {str(old): [(0.0, p1[1]), (p2[0], float("inf"))], str(new): [(p1[0], p2[1])]}
    wrong = sum(1 for s, e, _, v in records
                if not any(a <= e and s <= b for a, b in spans.get(v, [])))
    fails = sum(1 for r in records if r[2] != 200)
    print(f"\npromotion under load ({seconds:.0f} s, 4 clients, {len(records):,} requests): "
          f"version {new} serving {lag1:.2f} s after `tarn promote` returned, version {old} "
          f"{lag2:.2f} s after `tarn rollback` (target <= 2 s); failed requests: {fails}; "
          f"responses naming a version not in production at the time: {wrong} (targets 0)")


if __name__ == "__main__":
    main()
