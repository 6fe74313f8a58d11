"""The real DVC pipeline (`dvc repro` in a temporary git repo) on a small lake."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support.project import FAST_TUNE, copy_repo, set_param, sh, write_small_lake

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def ran(res: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", res.stdout + res.stderr))


ALL = {"snapshot", "etl", "prepare", "tune", "train", "evaluate"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One repo for the module, built from nothing by a first `dvc repro` (the slow part):
    the first test reads that run, then changes params and the lake; the next test starts
    from wherever it left off (its own `dvc repro` brings any state up to date first)."""
    repo = copy_repo(tmp_path_factory.mktemp("dvc") / "repo")
    sh(repo, "git", "init", "-q")
    write_small_lake(repo / "data" / "lake")
    for key, value in [("tune.max_evals", 3), *FAST_TUNE.items(),
                       ("tune.early_stopping_rounds", 5), ("evaluate.evidently", False)]:
        set_param(repo, key, value)
    return repo, sh(repo, "dvc", "repro")


@pytest.fixture
def repo(built) -> Path:
    return built[0]


def test_repro_builds_every_stage_and_reruns_only_downstream(built):
    repo, first = built
    assert ran(first) == ALL
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == ALL
    rep = json.loads((repo / "reports" / "etl.json").read_text())
    t = rep["total"]
    assert t["read"] == 1000 and t["read"] == t["written"] + t["rejected"] + t["duplicates"]
    assert len(pd.read_parquet(repo / "data" / "prepared" / "test.parquet")) == 200 - \
        rep["batches"]["0003-adult-test"]["duplicates"]
    assert (repo / "reports" / "bias.html").stat().st_size > 10_000

    assert ran(sh(repo, "dvc", "repro")) == set()  # unchanged: nothing re-runs

    set_param(repo, "bias.disparate_impact_threshold", 0.75)  # reports only: splits unchanged
    assert ran(sh(repo, "dvc", "repro")) == {"prepare"}

    set_param(repo, "evaluate.calibration_bins", 5)
    assert ran(sh(repo, "dvc", "repro")) == {"evaluate"}

    set_param(repo, "etl.dedup", "off")  # no duplicates in this lake: same table
    assert ran(sh(repo, "dvc", "repro")) == {"etl"}

    set_param(repo, "schema.missing_values", [""])  # '?' is now an unknown category
    assert ran(sh(repo, "dvc", "repro")) == ALL - {"snapshot"}
    rep = json.loads((repo / "reports" / "etl.json").read_text())
    assert rep["total"]["rejected_by_reason"]["unknown_category"] > 0

    (repo / "data" / "lake" / "0004-new").mkdir()
    (repo / "data" / "lake" / "0004-new" / "a.csv").write_text(
        (repo / "data" / "lake" / "0001-adult-train" / "adult.csv").read_text())
    assert ran(sh(repo, "dvc", "repro")) == ALL
    assert sh(repo, "dvc", "status").stdout.strip().endswith("up to date.")

    metrics = sh(repo, "dvc", "metrics", "show", "--json").stdout
    assert "disparate_impact_min" in metrics and "rejected_by_reason" in metrics
    assert "roc_auc" in metrics and "val_logloss" in metrics
    versions = json.loads((repo / "models" / "train.json").read_text())["version"]
    assert versions == "3"  # three trainings, three registered versions


def test_bad_batch_fails_the_stage_with_one_clear_line_and_keeps_outputs(repo):
    sh(repo, "dvc", "repro")
    lock_before = (repo / "dvc.lock").read_text()
    kept = [repo / "data" / "curated" / "table.parquet",
            repo / "data" / "curated" / "quarantine.parquet", repo / "reports" / "etl.json",
            repo / "data" / "snapshot" / "manifest.json"]
    before = {p: p.read_bytes() for p in kept}

    # the etl stage fails (the snapshot accepts the file: it has no contract); DVC must not
    # have deleted its outputs first (persist: true), and the stage writes atomically
    wrong = repo / "data" / "lake" / "0004-wrong"
    wrong.mkdir()
    (wrong / "export.csv").write_text("name, city, zip\n")  # a header and no rows
    res = sh(repo, "dvc", "repro", check=False)
    assert res.returncode != 0 and "Running stage 'etl'" in res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert re.search(r"error: .*0004-wrong/export.csv: missing column\(s\) \['age'", out)
    assert "Traceback" not in out
    for p in kept[:3]:
        assert p.read_bytes() == before[p], p
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["etl"] == yaml.safe_load(lock_before)["stages"]["etl"]  # etl did not finish
    lock_before = (repo / "dvc.lock").read_text()  # the snapshot did (it took the new batch)
    before[kept[3]] = kept[3].read_bytes()
    sh(repo, "tarn", "lake", "retire", "0004-wrong", "--reason", "export with the wrong columns")

    # the snapshot stage fails
    bad = repo / "data" / "lake" / "0005-broken"
    bad.mkdir()
    (bad / "part.parquet").write_bytes(b"PAR1 not really PAR1")
    res = sh(repo, "dvc", "repro", check=False)
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert re.search(r"error: .*0005-broken/part.parquet: not a readable Parquet file", out)
    assert "fix: re-export the file or remove it from the lake" in out
    assert "Traceback" not in out
    assert (repo / "dvc.lock").read_text() == lock_before
    assert {p: p.read_bytes() for p in kept} == before

    # retired, the bad batches are skipped (and said so); the curated table is unchanged
    sh(repo, "tarn", "lake", "retire", "0005-broken", "--reason", "corrupt upload")
    res = sh(repo, "dvc", "repro")
    assert "skipped retired batch 0005-broken (corrupt upload)" in res.stdout + res.stderr
    # same rows: the splits and the search stay; train re-runs (the manifest is its lineage)
    assert {"snapshot", "etl"} <= ran(res) and not {"prepare", "tune"} & ran(res)
    manifest = json.loads(kept[3].read_text())
    assert [r["name"] for r in manifest["retired"]] == ["0004-wrong", "0005-broken"]
    assert kept[0].read_bytes() == before[kept[0]]
