"""Serving benchmark: our backend vs `mlflow models serve` on the same registered Adult model,
same machine, one run (run `make run` and `tarn promote --latest` first, in this repository
or in the project given with --root).

Prints:
  1. single-row /invocations throughput and p50/p99 latency with 1 and 8 concurrent clients:
     MLflow's server, `tarn serve` with 1 worker and with 2 workers (targets: >= 850 req/s with
     one client; with 8 clients, 2 workers >= 1.3x one worker; >= 3x MLflow, lower p99);
  2. /explain vs /predict for one Adult row, one client (target: p99 <= 5 ms above /predict;
     --explain-only runs just this line);
  3. one 10,000-row request vs in-process `predict_proba` of the sklearn Pipeline on the same
     rows (target: <= 1.5x), and MLflow's server for reference;
  4. promotion to traffic, on the multi-worker server: two promotions (`tarn promote`, then
     `tarn rollback`) under a 30 s load: time from the command returning to *every* worker
     answering with the new version (target <= 2 s), failed requests (target 0), responses
     naming a version that was not production (target 0).

The clients run on the same machine as the servers (load generation takes CPU too): compare
ratios measured in one run, and repeat when other work shares the machine.

Usage: python bench/bench_serve.py [--root PROJECT] [--seconds 5] [--load-seconds 30]
                                   [--workers 2] [--explain-only]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]  # --root replaces it
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


_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *([0-9]+)")


def _client(port: int, body: bytes, seconds: float, out: mp.Queue,
            path: str = "/invocations") -> None:
    """One keep-alive connection sending the same request back to back. A raw socket with the
    request bytes built once: the load generator shares the machine with the server, so it
    must cost as little CPU per request as possible (http.client parses every header with the
    email package, which would make the clients, not the server, the bottleneck)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
               b"application/json\r\nContent-Length: %d\r\n\r\n" % (path.encode(), len(body))
               ) + body
    lat, fails, buf = [], 0, b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        sock.sendall(request)
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = int(_LENGTH.search(head).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        buf = rest[length:]
        lat.append(time.perf_counter() - t)
        fails += head[9:12] != b"200"
    sock.close()
    out.put((lat, fails))


def load(port: int, body: bytes, clients: int, seconds: float,
         path: str = "/invocations") -> dict:
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(port, body, seconds, q, path))
             for _ in range(clients)]
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
    global ROOT
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=ROOT, help="a trained project with a "
                    "production version (default: this repository)")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--load-seconds", type=float, default=30)
    ap.add_argument("--workers", type=int, default=2, help="workers of the multi-process "
                    "server compared with one worker")
    ap.add_argument("--explain-only", action="store_true", help="only the /explain vs "
                    "/predict line (one tarn serve worker)")
    args = ap.parse_args()
    ROOT = args.root.resolve()
    from tarn.config import load_params
    from tarn.core.registry import Registry

    params = load_params(ROOT / "params.yaml")
    reg = Registry(params.mlflow, ROOT)
    version = reg.production()
    if version is None:
        sys.exit("no production version: run `tarn promote --latest` first")
    if not reg.gate_record(version).signature:  # servers deploy only signed versions
        sys.exit(f"production version {version} carries no deployment signature (promoted "
                 f"before signing): run `tarn promote --version {version}` first")
    name = params.mlflow.registered_model
    if args.explain_only:
        explain_only(name, version, args.seconds)
        return
    p_ml, p_us, p_mw = free_port(), free_port(), free_port()
    procs = []
    try:
        ml = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m",
                               f"models:/{name}/{version}", "--env-manager", "local", "-h",
                               "127.0.0.1", "-p", str(p_ml)], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ml)
        servers = {"mlflow models serve": (p_ml, ml)}
        for port, n in ((p_us, 1), (p_mw, args.workers)):
            proc = subprocess.Popen([str(BIN / "tarn"), "serve", "--port", str(port),
                                     "--workers", str(n)], cwd=ROOT, env=env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            servers[f"tarn serve, {n} worker{'s' if n > 1 else ''}"] = (port, proc)
        for port, proc in servers.values():
            wait_ready(port, "/ping" if proc is ml else "/ready", proc)
        one, _ = rows_payload(1)
        for port, _ in servers.values():  # warm up every server (every worker)
            load(port, one, 4, 1)
        print(f"model {name} version {version}; single-row /invocations, {args.seconds:.0f} s "
              "per measurement")
        print(f"{'clients':>8} {'server':>24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'fails':>6}")
        one_w, multi_w = list(servers)[1], list(servers)[2]
        for clients in (1, 8):
            res = {}
            for label, (port, _) in servers.items():
                r = load(port, one, clients, args.seconds)
                res[label] = r
                print(f"{clients:>8} {label:>24} {r['rps']:>8.0f} {r['p50']:>8.2f} "
                      f"{r['p99']:>8.2f} {r['fails']:>6}")
            a, b, c = res[one_w], res["mlflow models serve"], res[multi_w]
            print(f"{'':>8} {'1 worker / mlflow':>24} {a['rps'] / b['rps']:>7.1f}x {'':>8} "
                  f"{a['p99'] / b['p99']:>7.2f}x   (targets: >= 3x, p99 lower)")
            print(f"{'':>8} {f'{args.workers} workers / 1 worker':>24} "
                  f"{c['rps'] / a['rps']:>7.2f}x {'':>8} {c['p99'] / a['p99']:>7.2f}x   "
                  f"(target with 8 clients: >= 1.3x)")
            if clients == 1:
                print(f"{'':>8} {'':>24} target: >= 850 req/s with one client (1 worker: "
                      f"{a['rps']:.0f})")

        print()
        explain_vs_predict(p_us, args.seconds)
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

        promotion_under_load(reg, params, p_mw, one, version, args.load_seconds, args.workers)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def one_record() -> bytes:
    """One test row as a /predict record list."""
    _, X = rows_payload(1)
    row = {k: (None if isinstance(v, float) and np.isnan(v) else
               (v.item() if hasattr(v, "item") else v)) for k, v in X.iloc[0].items()}
    return json.dumps([row]).encode()


def explain_vs_predict(port: int, seconds: float) -> None:
    """One Adult row, one client: /explain (TreeSHAP through the Pipeline) against /predict
    (target: p99 at most 5 ms above)."""
    body = one_record()
    load(port, body, 1, 1, "/explain")  # warm: the explainer is built on first use (seconds:
    load(port, body, 1, 1, "/explain")  # the first request waits for it), then warm it
    res = {p: load(port, body, 1, seconds, p) for p in ("/predict", "/explain")}
    for p, r in res.items():
        print(f"{'1':>8} {'tarn serve ' + p:>24} {r['rps']:>8.0f} {r['p50']:>8.2f} "
              f"{r['p99']:>8.2f} {r['fails']:>6}")
    extra = res["/explain"]["p99"] - res["/predict"]["p99"]
    print(f"{'':>8} {'/explain - /predict':>24} {'':>8} "
          f"{res['/explain']['p50'] - res['/predict']['p50']:>+8.2f} {extra:>+8.2f}   "
          f"(target: p99 <= +5 ms{'' if extra <= 5 else ': MISSED'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: judge it on a quiet machine)")


def explain_only(name: str, version: str, seconds: float) -> None:
    port = free_port()
    proc = subprocess.Popen([str(BIN / "tarn"), "serve", "--port", str(port), "--workers",
                             "1"], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, "/ready", proc)
        print(f"model {name} version {version}; one row, one client, {seconds:.0f} s each")
        print(f"{'clients':>8} {'server':>24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'fails':>6}")
        explain_vs_predict(port, seconds)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def promotion_under_load(reg, params, port: int, body: bytes, old: str, seconds: float,
                         workers: int) -> None:
    """Two promotions under load on the multi-worker server: time until every worker answers
    with the new version, failures, wrong versions."""
    import mlflow

    src = reg.version(old)
    new = mlflow.register_model(src.source, reg.name, tags=dict(src.tags)).version
    params_file = ROOT / ".mlflow" / "bench-params.yaml"
    import yaml
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["serve"]["notify_url"] = f"http://127.0.0.1:{port}"
    # the servers' deployment key (this file's folder is not the project root): what
    # `tarn promote` signs with must be what the servers check
    raw["serve"]["deploy_key"] = str(ROOT / params.serve.deploy_key)
    params_file.write_text(yaml.safe_dump(raw))
    # (sent, answered, status, version, worker)
    records: list[tuple[float, float, int, str, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():  # a new connection now and then: every worker gets traffic
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(50):
                if stop.is_set():
                    break
                t = time.time()
                conn.request("POST", "/invocations", body, {"Content-Type":
                                                            "application/json"})
                r = conn.getresponse()
                r.read()
                records.append((t, time.time(), r.status, r.getheader("X-Model-Version") or "",
                                r.getheader("X-Tarn-Worker") or "0"))
            conn.close()

    def all_serving(version: str, since: float) -> bool:
        """Every worker has answered with ``version`` after ``since`` and not with another
        one since then."""
        last: dict[str, str] = {}
        for s, _, _, v, w in list(records):
            if s >= since:
                last[w] = v
        return len(last) == workers and set(last.values()) == {version}

    def run_cli(*argv: str) -> tuple[float, float]:
        start = time.time()
        subprocess.run([str(BIN / "tarn"), "--params", str(params_file), *argv], cwd=ROOT,
                       env=env(), check=True, capture_output=True)
        return start, time.time()

    def lag(version: str, returned: float) -> float:
        while not all_serving(version, returned):
            time.sleep(0.01)
            if time.time() - returned > 60:
                return float("inf")
        # the first moment after which every worker answered with the new version only
        first = {}
        for s, e, _, v, w in sorted(records):
            if s >= returned - 5:
                if v == version:
                    first.setdefault(w, e)
                else:
                    first.pop(w, None)
        return max(first.values()) - returned

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    t0 = time.time()
    time.sleep(seconds / 3)
    p1 = run_cli("promote", "--version", str(new), "--force", "--reason", "bench")
    lag1 = lag(str(new), p1[1])
    time.sleep(max(0.0, t0 + 2 * seconds / 3 - time.time()))
    p2 = run_cli("rollback", "--reason", "bench")
    lag2 = lag(str(old), p2[1])
    time.sleep(max(0.0, t0 + seconds - time.time()))
    stop.set()
    for t in threads:
        t.join()
    # which version may a response name: one that held the alias during the request
    spans = {str(old): [(0.0, p1[1]), (p2[0], float("inf"))], str(new): [(p1[0], p2[1])]}
    wrong = sum(1 for s, e, _, v, _ in records
                if not any(a <= e and s <= b for a, b in spans.get(v, [])))
    fails = sum(1 for r in records if r[2] != 200)
    seen = sorted({r[4] for r in records})

    def when(lag: float, command: str) -> str:
        return (f"{lag:.2f} s after `{command}` returned" if lag >= 0 else
                f"already when `{command}` returned ({-lag:.2f} s before: the command nudges "
                "the server and waits for its answer)")

    print(f"\npromotion under load ({seconds:.0f} s, 4 clients, {len(records):,} requests, "
          f"workers answering: {', '.join(seen)}): every worker serving version {new} "
          f"{when(lag1, 'tarn promote')}, version {old} {when(lag2, 'tarn rollback')} "
          f"(target <= 2 s); failed requests: {fails}; responses naming a version not in "
          f"production at the time: {wrong} (targets 0)")


if __name__ == "__main__":
    main()
