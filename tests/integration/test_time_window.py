"""A moving test window (prepare.test_split: latest): each full retraining tests on the newest
batch, and the champion is re-measured on the same rows as the challenger."""

from __future__ import annotations

from pathlib import Path

from tarn.core.catalog import load_split
from tarn.core.registry import Registry
from tarn.datasets import adult_lines
from tarn.lifecycle import monitor
from tarn.lifecycle.promote import promote
from tarn.stages import etl, prepare, snapshot
from tests.support.project import make_version, small_project, write_batch

LATEST = {"prepare.test_split": "latest", "prepare.test_latest": 1,
          "promote.max_demographic_parity_difference": 0.6, "promote.tolerance": 0.5,
          "monitor.min_rows": 50}


def labelled(lines: list[str]) -> list[str]:
    return [ln.replace(">50K.", ">50K").replace("<=50K.", "<=50K") for ln in lines]


def test_a_full_retraining_tests_on_the_newest_batch_and_remeasures_the_champion(tmp_path):
    params = small_project(tmp_path, lake=(600, 300), **LATEST)
    assert load_split(params, tmp_path, "test").frame["batch"].unique().tolist() == [
        "0003-adult-test"]
    make_version(params, tmp_path)
    promote(params, tmp_path, "1")
    reg = Registry(params.mlflow, tmp_path, params.promote.alias)
    assert reg.lineage("1").test_batches == ("0003-adult-test",)
    assert "0003-adult-test" not in reg.lineage("1").batches

    # a later batch arrives: new to the monitor (v1's own test batch is not)
    write_batch(tmp_path, "0004-later", labelled(adult_lines("test")[1000:1400]))
    assert monitor.new_batches(params, tmp_path, set(reg.lineage("1").batches),
                               reg.lineage("1").test_batches) == ["0004-later"]

    # a full retraining: the window moves to the newest batch, v1's test batch is trained on
    for stage in (snapshot, etl, prepare):
        stage.run(params, tmp_path)
    test = load_split(params, tmp_path, "test")
    assert test.frame["batch"].unique().tolist() == ["0004-later"] and len(test.y) == 400
    train_batches = set(load_split(params, tmp_path, "train").frame["batch"]) | set(
        load_split(params, tmp_path, "valid").frame["batch"])
    assert "0003-adult-test" in train_batches and "0004-later" not in train_batches
    assert make_version(params, tmp_path) == "2"
    assert reg.lineage("2").test_batches == ("0004-later",)

    promotion = promote(params, tmp_path, "2")
    gates = promotion.gates
    # both measured here, on the same 400 new rows: v1's figure is its score on them, not the
    # figure it was registered with on 0003
    task, v1_scores = reg.scores("1", test.X)
    assert gates.champion_metric == task.metric(gates.metric, test.y, v1_scores)
    assert gates.champion_metric != reg.run_metrics("1").get(f"test_{gates.metric}")
    assert gates.window.startswith("400 rows of batch 0004-later")
    assert gates.window.endswith("forward in time for both"), gates.window
    prepared = (tmp_path / "reports" / "prepare.json").read_text()
    assert "forward in time, newer than every batch it trained on" in prepared




def test_lake_add_says_when_a_batch_reaches_back_in_time(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tarn.cli import app
    from tarn.datasets import ADULT_COLUMNS
    from tests.support.project import params_dict, write_params

    columns = [*params_dict()["schema"]["columns"], {"name": "when", "dtype": "string"}]
    write_params(tmp_path, {"schema.columns": columns, "schema.time_key": "when"})
    lines = labelled(adult_lines("test")[:30])

    def dated(name: str, month: int, first_day: int) -> Path:
        rows = [f"{ln}, 2016-{month:02d}-{first_day + i % 10:02d}" for i, ln in enumerate(lines)]
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join([", ".join([*ADULT_COLUMNS, "when"]), *rows]) + "\n")
        return path

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for name, month, day in (("jan", 1, 1), ("feb", 2, 1)):
        res = runner.invoke(app, ["lake", "add", str(dated(name, month, day)), "--batch", name],
                            terminal_width=250)
        assert res.exit_code == 0 and "warning" not in res.output, res.output
    # January again, after February: said, and the batch is still added
    res = runner.invoke(app, ["lake", "add", str(dated("late", 1, 5)), "--batch", "late"],
                        terminal_width=250)
    assert res.exit_code == 0 and "added batch 0003-late" in res.output, res.output
    assert "warning: batch 0003-late's times (2016-01-05" in res.output
    assert "overlap batch 0001-jan's" in res.output and "overlap batch 0002-feb's" in res.output
