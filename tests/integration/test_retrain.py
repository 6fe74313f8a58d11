"""Monitoring and retraining on a small lake with known, injected drift."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tarn.core.catalog import load_split
from tarn.core.registry import Registry
from tarn.core.task import Task
from tarn.datasets import ADULT_COLUMNS, adult_lines
from tarn.lifecycle import monitor, retrain
from tarn.lifecycle.promote import promote
from tests.support.project import make_version, prior_shifted, small_project, write_batch

pytestmark = pytest.mark.slow


def shifted(n: int) -> list[str]:
    """Covariate shift: older people working long hours (labels as observed for them)."""
    out = []
    for ln in adult_lines("test")[5000:]:
        f = [x.strip() for x in ln.split(",")]
        if int(f[0]) >= 45 and int(f[12]) >= 45:
            out.append(ln.replace(">50K.", ">50K").replace("<=50K.", "<=50K"))
        if len(out) == n:
            return out
    return out


@pytest.fixture
def served(tmp_path):
    # enough rows that sampling noise stays under the drift thresholds (3,840 train rows)
    params = small_project(tmp_path, lake=(3000, 1000), **{
                                        "promote.max_demographic_parity_difference": 0.6,
                                        "promote.tolerance": 0.05, "monitor.min_rows": 50,
                                        "retrain.incremental_rounds": 60})
    make_version(params, tmp_path, rounds=40)
    promote(params, tmp_path, "1")
    return params, tmp_path


def test_no_false_alarm_on_an_unshifted_batch(served):
    params, root = served
    plain = [ln.replace(">50K.", ">50K").replace("<=50K.", "<=50K")
             for ln in adult_lines("test")[3000:5000]]
    write_batch(root, "0004-plain", plain)
    res = monitor.run(params, root, ("lake",))
    lake = res.sources[0]
    assert res.new_batches == ["0004-plain"] and lake.rows == 2000
    assert lake.drift_share < params.monitor.drift_share_incremental, lake.drifted
    assert res.decision.mode == "none"
    assert (root / "reports" / "monitor" / "lake_drift.html").stat().st_size > 100_000


def test_drift_is_detected_and_incremental_retraining_helps(served):
    params, root = served
    write_batch(root, "0004-shifted", shifted(600))
    res = monitor.run(params, root, ("lake",))
    lake = res.sources[0]
    assert {"age", "hours_per_week"} <= set(lake.drifted)
    # the monitoring run names what it compared: the training reference and the new batch
    runs = Registry(params.mlflow, root).client.search_runs(
        [Registry(params.mlflow, root).tracking.experiment_id], "tags.`tarn.stage` = 'monitor'")
    seen = {d.dataset.name.split(" @ ")[0]: (d.tags[0].value, json.loads(d.dataset.profile)[
        "num_rows"]) for d in runs[0].inputs.dataset_inputs}
    assert seen == {"train": ("reference", len(load_split(params, root, "train").y)),
                    "lake 0004-shifted": ("new data", 600)}
    assert lake.prediction_drift
    assert res.decision.mode in ("incremental", "full")

    (root / "data" / "lake" / "0004-shifted" / "adult.csv").unlink()  # now a prior shift
    (root / "data" / "lake" / "0004-shifted" / "adult.csv").write_text(
        "\n".join([", ".join(ADULT_COLUMNS), *prior_shifted(800)]) + "\n")
    r = retrain.run_incremental(params, root, ["0004-shifted"])
    old, new = r.metrics["old"]["new_data"], r.metrics["new"]["new_data"]
    assert new["logloss"] < old["logloss"] - 0.01, (old, new)  # it learned the new population
    assert r.metrics["new"]["test"]["roc_auc"] > r.metrics["old"]["test"]["roc_auc"] - 0.02
    reg = Registry(params.mlflow, root)
    mv, tags = reg.version(r.version), reg.record_tags(r.version)
    assert tags["tarn.parent_version"] == "1" and tags["tarn.kind"] == "incremental"
    assert "0004-shifted" in tags["tarn.batches"].split(",")
    assert tags["tarn.incremental_streak"] == "1"
    parent_trees = reg.client.get_run(mv.run_id).data.params["new_trees"]
    assert int(parent_trees) >= 1
    # its test figures, under the names monitoring and `tarn status` read for any version
    assert reg.run_metrics(r.version)["test_logloss"] == pytest.approx(
        r.metrics["new"]["test"]["logloss"])
    # the new trees' data resolves to exact lake bytes: the manifest logged with the run
    import hashlib
    from pathlib import Path

    import mlflow.artifacts
    doc = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=mv.run_id, artifact_path=retrain.NEW_DATA_MANIFEST,
        dst_path=str(root / "m"))).read_text())
    lake_file = root / "data" / "lake" / "0004-shifted" / "adult.csv"
    assert doc["files"] == [{"batch": "0004-shifted", "path": "0004-shifted/adult.csv",
                             "size": lake_file.stat().st_size,
                             "sha256": hashlib.sha256(lake_file.read_bytes()).hexdigest(),
                             "rows": 800, "rows_used": 800}]
    assert tags["tarn.new_data_hash"] == hashlib.sha256(
        json.dumps(doc["files"], sort_keys=True).encode()).hexdigest()
    # the MLflow UI shows the same data: the new batch it learned from, the share held out
    inputs = reg.client.get_run(mv.run_id).inputs.dataset_inputs
    assert {d.dataset.name: d.tags[0].value for d in inputs} == {
        "lake 0004-shifted": "training", "held out of lake 0004-shifted": "test"}
    assert all(json.loads(d.dataset.source)["uri"].endswith(
        f"/data/lake?manifest={tags['tarn.new_data_hash']}") for d in inputs)
    assert reg.lineage(r.version).data_tag() == f"{tags['tarn.new_data_hash'][:12]} (" \
        f"{int(tags['tarn.train_rows']):,} rows)" == mv.tags["tarn.data"]
    # the continued model keeps the parent's normalization, untouched
    a = reg.load_model("1").steps[0][1]
    b = reg.load_model(r.version).steps[0][1]
    assert list(a.get_feature_names_out()) == list(b.get_feature_names_out())
    # and it still exports to a parity-checked client bundle
    from tarn.edge import export as edge
    test = load_split(params, root, "test")
    test_x = test.X
    continued = reg.load_model(r.version)
    few = retrain.incremental_fit(  # few new trees on many old ones: the converter's trap
        reg.load_model("1"), test_x.head(600), test.y[:600],
        None, test_x.tail(300), test.y[-300:], 3, 2)
    assert few.steps[-1][1].get_booster().num_boosted_rounds() <= 44 + 3
    task = Task.from_card(reg.card(r.version))  # inherited from the parent
    assert task == Task.of(params.schema, params.train.threshold)
    for model in (continued, few):
        onnx = edge.export_onnx(model, params.schema, params.prepare, task).SerializeToString()
        parity = edge.check_parity(model, onnx, test_x, 1e-4, task)
        assert parity.ok, parity


def test_schema_change_forces_full_with_a_reason(served):
    params, root = served
    lines = shifted(100)
    d = root / "data" / "lake" / "0004-renamed"
    d.mkdir(parents=True)
    header = ", ".join(ADULT_COLUMNS).replace("hours-per-week", "weekly-hours")
    (d / "adult.csv").write_text("\n".join([header, *lines]) + "\n")
    res = monitor.run(params, root, ("lake",))
    assert res.decision.mode == "full"
    assert "schema change" in res.decision.reasons[0] and "missing column" in \
        res.decision.reasons[0]


def test_incremental_refused_when_lineage_does_not_match_the_schema(served):
    params, root = served
    reg = Registry(params.mlflow, root)
    changed = dataclasses.replace(reg.lineage("1"), schema_hash="something-else")
    for key, value in changed.version_tags().items():
        reg.client.set_model_version_tag("tarn-test", "1", key, value)
    write_batch(root, "0004-shifted", shifted(200))
    with pytest.raises(retrain.RetrainError, match="another input schema"):
        retrain.run_incremental(params, root, ["0004-shifted"])


def test_empty_or_corrupt_prediction_log_is_reported_not_fatal(served):
    params, root = served
    log_dir = root / params.serve.prediction_log
    res = monitor.run(params, root, ("log",))
    assert res.sources[0].rows == 0 and "empty" in res.sources[0].problems[0]
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "preds-20260101T000000-1-000001.parquet").write_bytes(b"not parquet")
    res = monitor.run(params, root, ("log",))
    assert any("unreadable" in p for p in res.sources[0].problems)
    assert res.decision.mode == "none"
