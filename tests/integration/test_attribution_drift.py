"""Attribution drift in the monitor: mean |contribution| per column on the training reference
vs a new lake batch, beside feature drift, in monitor.json and printed by `tarn monitor`."""

from __future__ import annotations

import json

import pytest

from tarn.lifecycle import monitor
from tarn.stages import etl, prepare, snapshot
from tests.support.task_models import fit_version, force_production
from tests.support.tasks import diabetes_frame, task_project

pytestmark = pytest.mark.slow


def test_a_shifted_column_carries_more_of_the_output(tmp_path):
    root = tmp_path
    params = task_project(root, "regression", **{"monitor.min_rows": 50})
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)
    force_production(params, root, fit_version(params, root, rounds=30))
    new = diabetes_frame().head(200).copy()
    new["bmi"] = new["bmi"] + 12  # everyone much heavier: bmi's contributions grow
    (root / "data" / "lake" / "0004-new").mkdir(parents=True)
    new.to_csv(root / "data" / "lake" / "0004-new" / "rows.csv", index=False)

    res = monitor.run(params, root, ("lake",))
    (lake,) = res.sources
    d = lake.attribution_drift
    assert d["rows"] == lake.rows and d["reference_rows"] > 0  # every unseen batch
    by = {c["column"]: c for c in d["columns"]}
    assert by["bmi"]["current"] > by["bmi"]["reference"] and by["bmi"]["share_change"] > 0
    assert d["columns"][0]["column"] == "bmi"  # the largest move of all
    assert d["max_share_change"] == pytest.approx(abs(by["bmi"]["share_change"]))
    assert "bmi" in lake.drifted  # beside feature drift
    saved = json.loads((root / params.monitor.reports / "monitor.json").read_text())
    assert saved["sources"][0]["attribution_drift"]["columns"][0]["column"] == "bmi"
    line = monitor.attribution_summary(lake)
    assert line.startswith("lake attribution drift") and "bmi" in line
