"""`tarn report`: the stages' metrics files as small tables (no stage is run here)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tarn.cli import app
from tests.support.project import write_params


def test_report_prints_each_figure_and_names_missing_files(tmp_path, monkeypatch):
    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir()
    counts = {"read": 1000, "written": 990, "rejected": 7, "duplicates": 3,
              "rejected_by_reason": {"unknown_category": 7}}
    (reports / "etl.json").write_text(json.dumps(
        {"snapshot": "x", "total": counts, "batches": {"0001-a": counts}, "files": {}}))
    (reports / "tune.json").write_text(json.dumps(
        {"val_logloss": 0.28123, "val_auc": 0.9271, "best_iteration": 411, "n_trials": 40,
         "n_failed": 0, "duration_s": 101.5}))
    res = CliRunner().invoke(app, ["report"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert "unknown_category: 7" in res.output and "1,000" in res.output
    assert "0.2812" in res.output and "412" in res.output  # rounds = best iteration + 1
    assert "prepare.json" in res.output and "evaluate.json" in res.output  # not found
