"""Is the server still there for everyone while hostile clients try to hold it? `/health`
p50/p99 with no load, then during each attack (target: p99 under 50 ms on a quiet machine; a
benchmark prints, it does not assert):

- ``header``: one request whose header grows to ``--header-mb`` MB (100), sent as fast as the
  server reads it; when and how the server cuts it, and its RSS growth;
- ``halfsent``: ``--halfsent`` (2,000) connections that send half a request head and wait;
  how many the server still holds after ``--hold-s`` seconds (its open file descriptors);
- ``slowbody``: one request that declares a body and sends one byte a second for
  ``--slow-s`` (60) seconds; when the server cuts it;
- ``bodies``: ``--clients`` clients posting ~5 MB scoring requests back to back;
- ``throughput``: single-row ``/predict`` requests per second with 1 and 8 keep-alive clients
  (what the limits cost a well-behaved client: compare with ``--src``).

Self-contained: builds a small project in a temporary folder (as the tests do), registers and
promotes a version, starts a real `tarn serve`. ``--src`` runs the server from another source
tree (e.g. ``git archive`` of an older commit) to compare before / after on the same machine.

Usage: python bench/bench_hostile.py [--attacks header,halfsent,slowbody,bodies,throughput]
       [--seconds 20]
       [--clients 2] [--header-mb 100] [--halfsent 2000] [--hold-s 30] [--slow-s 60] [--src PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def answer_of(sock: socket.socket, timeout: float) -> str:
    """The status line (and JSON-ness) of what the server sent back, or how the socket ended."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
    except TimeoutError:
        return "no answer (held)" if not data else "partial answer"
    except OSError as e:
        return f"reset ({e.__class__.__name__})"
    if not data:
        return "closed without an answer"
    head = data.split(b"\r\n", 1)[0].decode("latin-1")
    json_body = b"application/json" in data.split(b"\r\n\r\n", 1)[0].lower()
    return f"{head}{' (JSON)' if json_body else ''}"


def during(port: int, attack) -> tuple[list[float], object]:
    """/health latencies while ``attack()`` runs (in a thread), and what it returned."""
    out: dict = {}
    stop = threading.Event()

    def run() -> None:
        try:
            out["result"] = attack()
        except Exception as e:  # noqa: BLE001 - a benchmark reports what broke
            out["result"] = f"attack failed: {e!r}"
        stop.set()

    t = threading.Thread(target=run)
    t.start()
    lat = health_latencies(port, 3600, stop)
    t.join()
    return lat, out.get("result")


def attack_header(port: int, pid: int, mb: int) -> str:
    """A request whose header grows to ``mb`` MB."""
    rss0 = rss_mb(pid)
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nX-Big: ")
    block = b"a" * (1 << 20)
    sent = 0
    peak = rss0
    try:
        for _ in range(mb):
            s.sendall(block)
            sent += 1
            if sent % 10 == 0:
                peak = max(peak, rss_mb(pid))
        s.sendall(b"\r\n\r\n")
        cut = f"all {mb} MB sent"
    except OSError as e:
        cut = f"cut after {sent} MB sent ({e.__class__.__name__})"
    answer = answer_of(s, 60)
    s.close()
    peak = max(peak, rss_mb(pid))
    return (f"{cut} in {time.monotonic() - t0:.1f} s; answer: {answer}; server RSS "
            f"{rss0:.0f} -> peak {peak:.0f} MB")


def attack_halfsent(port: int, pid: int, n: int, hold_s: float) -> str:
    """``n`` connections that send half a request head, then wait ``hold_s`` seconds."""
    fds0 = open_fds(pid)
    socks = []
    t0 = time.monotonic()
    refused = 0
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: applic")
            socks.append(s)
        except OSError:
            refused += 1
    opened = time.monotonic() - t0
    time.sleep(1)
    peak = open_fds(pid)
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline and open_fds(pid) > fds0 + 5:
        time.sleep(0.25)
    held_at_end = open_fds(pid) - fds0
    cut_after = time.monotonic() - t0
    import select

    answers: dict[str, int] = {}
    poller = select.poll()  # (select() takes descriptors below 1024 only)
    for s in socks:
        poller.register(s, select.POLLIN)
    fds = {fd for fd, _ in poller.poll(200)}
    readable = {s for s in socks if s.fileno() in fds}
    for s in socks:
        a = answer_of(s, 0.2) if s in readable else "no answer (held)"
        answers[a] = answers.get(a, 0) + 1
        s.close()
    shown = ", ".join(f"{v} {k}" for k, v in sorted(answers.items(), key=lambda kv: -kv[1]))
    return (f"{len(socks)} opened in {opened:.1f} s ({refused} refused); server fds +"
            f"{peak - fds0} after 1 s, +{held_at_end} after {cut_after:.1f} s; answers: "
            f"{shown}")


def attack_slowbody(port: int, pid: int, seconds: float) -> str:
    """A declared body sent one byte a second."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json"
              b"\r\nContent-Length: 100000\r\n\r\n")
    t0 = time.monotonic()
    sent = 0
    s.setblocking(False)
    answer = ""
    while time.monotonic() - t0 < seconds:
        try:
            s.send(b"[")
            sent += 1
        except OSError as e:
            answer = f"reset ({e.__class__.__name__})"
            break
        try:
            if s.recv(1, socket.MSG_PEEK):
                break  # the server answered
            answer = "closed without an answer"
            break
        except BlockingIOError:
            pass
        except OSError as e:
            answer = f"reset ({e.__class__.__name__})"
            break
        time.sleep(1)
    held = time.monotonic() - t0
    if not answer:
        s.setblocking(True)
        answer = answer_of(s, 0.5)
    s.close()
    return f"held {held:.1f} s ({sent} bytes sent); answer: {answer}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--src", default="", help="run the server from this source tree")
    ap.add_argument("--attacks", default="header,halfsent,slowbody,bodies")
    ap.add_argument("--header-mb", type=int, default=100)
    ap.add_argument("--halfsent", type=int, default=2000)
    ap.add_argument("--hold-s", type=float, default=30)
    ap.add_argument("--slow-s", type=float, default=60)
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
            known = _serve_keys(Path(args.src))
            for key in list(raw["serve"]):
                if key not in known:
                    raw["serve"].pop(key)
            params_file = root / "params-src.yaml"
            params_file.write_text(yaml.safe_dump(raw))
        server = Server(root, params_file, free_port(), env)
        try:
            port = int(server.url.rsplit(":", 1)[1])
            pid = server.proc.pid
            attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
            print(f"server from {args.src or ROOT} (pid {pid}); attacks {attacks}; /health "
                  "every 10 ms")
            health_latencies(port, 2)  # warm
            idle = health_latencies(port, args.seconds)
            print(f"/health, no load:          {summary(idle)}")
            for name in attacks:
                if name == "bodies":
                    bodies(root, params, port, args)
                    continue
                if name == "throughput":
                    throughput(root, port, args.seconds)
                    continue
                run = {"header": lambda: attack_header(port, pid, args.header_mb),
                       "halfsent": lambda: attack_halfsent(port, pid, args.halfsent,
                                                           args.hold_s),
                       "slowbody": lambda: attack_slowbody(port, pid, args.slow_s)}[name]
                lat, result = during(port, run)
                print(f"/health, {name + ':':17s} {summary(lat)}   (target p99 < 50 ms)")
                print(f"  {name}: {result}")
                health_latencies(port, 1)  # the server is still there
        finally:
            server.stop()


def _serve_keys(src: Path) -> set[str]:
    """The serve.* keys the server at ``src`` knows (an older tree refuses newer keys)."""
    import re

    text = (src / "src" / "tarn" / "config.py").read_text()
    block = text.split("class ServeConfig", 1)[1].split("\nclass ", 1)[0]
    return set(re.findall(r"^    ([a-z_]+):", block, re.M))


def throughput(root: Path, port: int, seconds: float) -> None:
    """What the limits cost a well-behaved client: single-row /predict requests per second,
    one keep-alive client, then 8 (compare with ``--src`` on the same machine)."""
    from tests.support.serving import sample_rows

    body = json.dumps(sample_rows(root, 1)).encode()
    for clients in (1, 8):
        counts = [0] * clients
        stop = time.monotonic() + seconds

        def client(i: int, stop: float = stop, counts: list[int] = counts) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.monotonic() < stop:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                text = r.read()
                if r.status != 200:
                    raise RuntimeError(f"/predict answered {r.status}: {text[:300]!r}")
                counts[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"throughput, {clients} client(s): {sum(counts) / seconds:8.0f} single-row "
              "/predict per s")


def bodies(root: Path, params, port: int, args) -> None:
    """Clients posting ~5 MB scoring requests back to back."""
    body, rows = big_body(root, params.serve.max_body_bytes)
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
    print(f"  bodies: {len(body) / 1e6:.2f} MB, {rows:,} rows; {len(big)} sent, {len(ok)} "
          f"answered 200, median {np.median(ok) * 1000 if ok else float('nan'):.0f} ms each "
          f"({rows * len(ok) / max(sum(ok), 1e-9):,.0f} rows/s)")


if __name__ == "__main__":
    main()
