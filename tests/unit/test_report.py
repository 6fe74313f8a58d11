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


def test_report_shows_the_figures_of_a_regression_run(tmp_path):
    from tarn.lifecycle.report import report
    from tests.support.tasks import task_params

    params = write_params(tmp_path, task_params("regression"))
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "tune.json").write_text(json.dumps(
        {"task": "regression", "loss": "val_rmse", "val_rmse": 58.8081, "val_mae": 47.36,
         "val_r2": 0.4095, "best_iteration": 38, "n_trials": 4, "n_failed": 0,
         "duration_s": 0.5, "budget_s": 30.0, "stop_reason": "max_evals",
         "fits_per_rung": [{"rows": 300, "fits": 4}, {"rows": 900, "fits": 1}],
         "reference_val": {"hist_gradient_boosting": {"rmse": 60.1},
                           "xgboost_defaults": {"rmse": 61.2}},
         "reference_verdict": "the tuned model beats the best default model"}))
    (reports / "evaluate.json").write_text(json.dumps(
        {"task": "regression", "version": "3", "effect": {},
         "model": {"rmse": 54.63, "mae": 44.69, "r2": 0.5475, "sex_gap": 0.2693},
         "unmitigated": {"rmse": 54.63, "mae": 44.69, "r2": 0.5475},
         "reference_test": {"hist_gradient_boosting": {"rmse": 53.9}},
         "reference_verdict": "the search did NOT beat the best default model"}))
    sections, missing = report(params, tmp_path)
    by_title = {s.title: s for s in sections}
    assert by_title["tuning"].columns[3] == "best val rmse"
    assert by_title["tuning"].rows == [["4", "4 at 300 + 1 at 900", "0", "58.8081", "47.3600",
                                        "0.4095", "39", "0.5", "30.0000", "max_evals"]]
    val = by_title["against default models, validation split: the tuned model beats the best "
                   "default model"]
    assert val.rows == [["tarn, tuned", "58.8081"], ["hist gradient boosting", "60.1000"],
                        ["xgboost defaults", "61.2000"]]
    test_refs = by_title["against default models, test split: the search did NOT beat the "
                         "best default model"]
    assert test_refs.rows[1] == ["hist gradient boosting", "53.9000"]
    test = by_title["test split, version 3 (regression)"]
    assert test.columns == ["rmse", "mae", "r2"] and test.rows == [["54.6300", "44.6900",
                                                                    "0.5475"]]
    assert by_title["fairness on the test split"].rows == [["sex", "0.2693", "not applied"]]
    assert "prepare.json" in missing


def test_report_shows_the_last_monitoring_and_retraining(tmp_path):
    """The loop's own files (reports/monitor/monitor.json, retrain.json) become sections:
    the decision with per-batch verdicts, and a forced retraining with its old-vs-new figures;
    without a registry in the project none is created."""
    from tarn.lifecycle.report import report

    params = write_params(tmp_path)
    loop = tmp_path / params.monitor.reports
    loop.mkdir(parents=True)
    batch = {"name": "0005-b", "rows": 20, "drifted": [], "prediction_drifted": [],
             "verdict": "not enough data (20 rows < monitor.min_rows 100)"}
    (loop / "monitor.json").write_text(json.dumps({
        "production": "2", "new_batches": ["0004-a", "0005-b"],
        "sources": [{"name": "lake", "rows": 620, "drifted": ["age"], "batches": [batch],
                     "prediction_drifted": [], "verdict": "drift, 20% of features: age"}],
        "decision": {"mode": "incremental", "reasons": ["lake: 20% of features drifted"]}}))
    q = {"logloss": 0.3, "roc_auc": 0.9, "rows": 100}
    (loop / "retrain.json").write_text(json.dumps({
        "finished_at": "2026-12-06T01:00:00+00:00", "mode": "full", "forced": True,
        "reason": "full retraining forced by --mode full (the monitor decided none: ...)",
        "parent": "2", "version": "3", "promoted": True, "refused": "",
        "metrics": {"old": {"test": q}, "new": {"test": {**q, "logloss": 0.28}}}}))
    sections, _ = report(params, tmp_path)
    mon = next(s for s in sections if s.title.startswith("last monitoring"))
    assert "decision incremental - lake: 20% of features drifted" in mon.title
    assert ["  lake 0005-b", "20", batch["verdict"], "-", "-"] in mon.rows
    ret = next(s for s in sections if s.title == "last retraining")
    assert ret.rows[0][1] == "full (forced)" and "forced by --mode full" in ret.rows[0][3]
    assert ret.rows[0][2] == "2 -> 3" and ret.rows[0][4] == "promoted"
    figures = next(s for s in sections if s.title == "last retraining: old vs new model")
    assert ["test", "logloss", "0.3000", "0.2800"] in figures.rows
    assert not (tmp_path / params.mlflow.store_dir).exists()  # no registry was created
