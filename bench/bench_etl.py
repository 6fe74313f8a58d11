"""ETL throughput and memory: `tarn etl` against a bare pandas read_csv + to_parquet of the
same files, measured in the same run.

Builds a lake of at least 500,000 rows in a temporary folder (the bundled Adult batches
repeated, numeric values jittered so that repeats are new rows, the raw format kept: stray
spaces, `?`, `>50K.`), freezes it with `tarn snapshot` (not timed), then runs each side in its
own subprocess, several times: seconds of work (imports excluded), rows/s, and the peak RSS of
that process (``ru_maxrss`` from ``os.wait4``, the per-child form of
``getrusage(RUSAGE_CHILDREN)``). Targets (issue 11): tarn at least 50 % of the bare throughput,
peak memory within 1.5x of the bare run.

    python bench/bench_etl.py [--rows 540000] [--files 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# (field index in an Adult line, lowest, highest, how far to jitter)
JITTER = [(0, 17, 90, 2), (2, 12_285, 1_490_400, 0.03), (12, 1, 99, 3)]


def build_lake(lake: Path, rows: int, files: int, seed: int = 7) -> int:
    from tarn.datasets import ADULT_COLUMNS, adult_lines

    base = np.array(adult_lines("train") + adult_lines("test"), dtype=object)
    fields = np.array([ln.split(", ") for ln in base], dtype=object)  # raw format: ", "
    rng = np.random.default_rng(seed)
    reps = -(-rows // len(base))
    out = []
    for r in range(reps):
        f = fields.copy()
        if r:  # the first copy is the data as published
            for i, lo, hi, width in JITTER:
                v = f[:, i].astype(np.int64)
                step = (v * width).astype(np.int64) if isinstance(width, float) else width
                v = np.clip(v + rng.integers(-step, step + 1), lo, hi)
                f[:, i] = v.astype(str)
        out.append(f)
    allf = np.concatenate(out)[:rows]
    header = ", ".join(ADULT_COLUMNS)
    per = -(-len(allf) // files)
    for k in range(files):
        part = allf[k * per:(k + 1) * per]
        d = lake / f"{k + 1:04d}-bench"
        d.mkdir(parents=True)
        with open(d / "adult.csv", "w", encoding="utf-8") as fh:
            fh.write(header + "\n")
            fh.write("\n".join(", ".join(r) for r in part) + "\n")
    return len(allf)


def write_params(root: Path) -> None:
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["lake"]["url"] = "data/lake"
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


# ------------------------------------------------------------------------ measured children
def child_tarn(root: Path) -> dict:
    from tarn.config import load_params
    from tarn.stages import etl

    params = load_params(root / "params.yaml")
    t0 = time.perf_counter()
    res = etl.run(params, root)
    return {"seconds": time.perf_counter() - t0, "rows": res.report["total"]["read"],
            "written": res.report["total"]["written"]}


def child_bare(root: Path) -> dict:
    import pandas as pd

    files = sorted((root / "data" / "snapshot" / "files").rglob("*.csv"))
    out = root / "bare"
    out.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    n = 0
    for i, f in enumerate(files):
        df = pd.read_csv(f)
        n += len(df)
        df.to_parquet(out / f"{i}.parquet", index=False)
    return {"seconds": time.perf_counter() - t0, "rows": n, "written": n}


def measure(side: str, root: Path) -> dict:
    p = subprocess.Popen([sys.executable, __file__, "--child", side, "--root", str(root)],
                         stdout=subprocess.PIPE, cwd=root, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{side} run failed")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=540_000)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=["tarn", "bare"])
    ap.add_argument("--root", type=Path)
    a = ap.parse_args()
    if a.child:
        fn = child_tarn if a.child == "tarn" else child_bare
        print(json.dumps(fn(a.root)))
        return

    from tarn.config import load_params
    from tarn.stages import snapshot

    with tempfile.TemporaryDirectory(prefix="bench-etl-") as tmp:
        root = Path(tmp)
        n = build_lake(root / "data" / "lake", a.rows, a.files)
        write_params(root)
        snap = snapshot.run(load_params(root / "params.yaml"), root)  # not timed
        size = sum(f.stat().st_size for f in (root / "data" / "lake").rglob("*.csv"))
        print(f"lake: {n:,} rows in {snap.n_files} CSV files, {size / 1e6:.1f} MB; "
              f"{a.repeats} runs a side, alternating; best time, largest peak RSS")
        runs: dict[str, list[dict]] = {"bare": [], "tarn": []}
        for _ in range(a.repeats):
            for side in ("bare", "tarn"):
                runs[side].append(measure(side, root))
    best = {s: min(r, key=lambda x: x["seconds"]) for s, r in runs.items()}
    rss = {s: max(x["peak_rss_mb"] for x in r) for s, r in runs.items()}
    print(f"{'':28}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS MB':>13}")
    for side, label in (("bare", "bare read_csv + to_parquet"), ("tarn", "tarn etl")):
        b = best[side]
        print(f"{label:28}{b['rows']:>10,}{b['seconds']:>10.2f}"
              f"{b['rows'] / b['seconds']:>12,.0f}{rss[side]:>13.0f}")
    thr = (best["tarn"]["rows"] / best["tarn"]["seconds"]) / (
        best["bare"]["rows"] / best["bare"]["seconds"])
    mem = rss["tarn"] / rss["bare"]
    print(f"throughput tarn/bare: {thr:.2f} (target >= 0.50)   "
          f"peak RSS tarn/bare: {mem:.2f} (target <= 1.50)")
    print(f"tarn wrote {best['tarn']['written']:,} rows (the rest quarantined or duplicates)")


if __name__ == "__main__":
    main()
