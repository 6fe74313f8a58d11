"""A tarn project built on one dataset the way a user builds one, and tarn's side of the
comparison: `tarn tune` + `tarn train` timed, tarn's registered model scored on the test split,
and ONNX parity proved by `tarn bundle publish`.

The project is a folder with ``git init`` + ``dvc init`` (as the README's "your own data"
section and tests/e2e/test_datasets.py do), the repo's params.yaml, then `tarn init` on the
dataset's CSV files (Adult: `tarn lake seed`), a documented patch of params.yaml, and the
stages run through tarn's own CLI: snapshot, etl, prepare (not timed), tune and train (timed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from peers.datasets import Dataset

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TEST_SHARE = 0.2  # the last batch, held out by `tarn init` as the test split
TRAIN_FILES = 4  # the other rows come as this many files (lake batches)


@dataclass(frozen=True)
class Measured:
    """One child process: wall seconds and peak resident memory (MB)."""

    seconds: float
    peak_rss_mb: float
    returncode: int
    output: str


def env() -> dict[str, str]:
    """The venv's tools first on PATH; each project keeps its own MLflow store (a tracking
    URI set in the caller's environment would mix the benchmark's runs into it)."""
    out = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def measured(cmd: list[str], cwd: Path, log: Path | None = None) -> Measured:
    """Run ``cmd`` to its end; ``os.wait4`` gives this child's own rusage (its peak RSS,
    and its waited-for descendants'), unlike RUSAGE_CHILDREN, which accumulates over every
    child this process ever had."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    text = log.read_text(errors="replace")[-4000:] if log else ""
    return Measured(seconds, usage.ru_maxrss / 1024, proc.returncode, text)


def tarn(root: Path, *args: str) -> str:
    """A tarn command in the project (not measured); its output, or SystemExit with it."""
    res = subprocess.run([str(BIN / "tarn"), *args], cwd=root, env=env(), capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise SystemExit(f"`tarn {' '.join(args)}` failed in {root} ({res.returncode}):\n"
                         f"{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return res.stdout + res.stderr


def set_params(root: Path, dotted: dict, columns: dict) -> None:
    """Apply ``dotted`` keys and per-column contract changes to the project's params.yaml
    (what a user edits by hand after `tarn init`)."""
    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for key, value in dotted.items():
        node = raw
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    for spec in raw["schema"]["columns"]:
        if spec["name"] in columns:
            spec.update(columns[spec["name"]])
            if spec.get("dtype") == "string":  # text has no range or category list
                for k in ("min", "max", "categories"):
                    spec.pop(k, None)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def write_files(frame: pd.DataFrame, folder: Path, name: str, seed: int = 0) -> list[Path]:
    """The rows shuffled (seeded), cut into TRAIN_FILES files and a last one of TEST_SHARE:
    `tarn init` makes one lake batch per file and holds the last out as the test split."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = frame.iloc[np.random.default_rng(seed).permutation(len(frame))]
    cut = int(round(len(rows) * (1 - TEST_SHARE)))
    parts = np.array_split(np.arange(cut), TRAIN_FILES) + [np.arange(cut, len(rows))]
    files = []
    for i, idx in enumerate(parts, 1):
        files.append(folder / f"{name}-{i}.csv")
        rows.iloc[idx].to_csv(files[-1], index=False)
    return files


def start(ds: Dataset, root: Path) -> None:
    """git + DVC project with the repo's params.yaml, then the lake and the contract."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True, env=env())
    if ds.load is None:
        tarn(root, "lake", "seed")
    else:
        files = write_files(ds.load(), root / "raw", ds.name)
        said = tarn(root, "init", *map(str, files), "--target", ds.target, "--force")
        (root / "bench-init.log").write_text(said)  # init's decisions and warnings
    set_params(root, ds.patch, ds.columns)


def prepare(ds: Dataset, root: Path) -> None:
    """Build (or reuse) the project up to the prepared splits. A folder whose lake already
    has batches is reused as it is (``--work``); the stages before tune are not timed."""
    if not (root / "data" / "lake").is_dir() or not any((root / "data" / "lake").iterdir()):
        start(ds, root)
    mitigation = yaml.safe_load((root / "params.yaml").read_text())["bias"]["mitigation"]
    if mitigation != "none":
        raise SystemExit(f"{root}/params.yaml: bias.mitigation is {mitigation!r}; the "
                         "comparison needs the unmitigated model (set it to none)")
    if not (root / "data" / "prepared" / "test.parquet").is_file():
        for stage in ("snapshot", "etl", "prepare"):
            tarn(root, stage)


def tune_and_train(root: Path) -> tuple[Measured, Measured]:
    """`tarn tune` then `tarn train`, each its own measured process (log: bench-tarn.log)."""
    log = root / "bench-tarn.log"
    log.write_text("")
    tune = measured([str(BIN / "tarn"), "tune"], root, log)
    if tune.returncode != 0:
        return tune, Measured(0.0, 0.0, -1, "not run: tune failed")
    return tune, measured([str(BIN / "tarn"), "train"], root, log)


def parity(root: Path, version: str) -> dict:
    """ONNX parity of a registered version through the public command: `tarn bundle
    publish --version V` exports it and compares graph and model on the test rows; a bundle
    is written only when they agree, with the figures in its metadata.json."""
    res = subprocess.run([str(BIN / "tarn"), "bundle", "publish", "--version", version],
                         cwd=root, env=env(), capture_output=True, text=True)
    text = " ".join((res.stdout + res.stderr).split())  # the console wraps long lines
    if res.returncode == 0:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        bundles = root / raw.get("edge", {}).get("bundle_dir", "bundles")
        meta = bundles / f"{raw['mlflow']['registered_model']}-v{version}" / "metadata.json"
        if meta.is_file():
            p = json.loads(meta.read_text())["parity"]
            return {"ok": True, "max_diff": p["max_abs_diff"], "measure": p["measure"],
                    "rows": p["rows"], "tolerance": p["tolerance"]}
        return {"ok": True, "max_diff": None, "detail": text[-300:]}
    diff = re.search(r"difference ([0-9.eE+-]+|inf|nan)", text)
    return {"ok": False, "max_diff": float(diff.group(1)) if diff else None,
            "detail": text[-400:]}
