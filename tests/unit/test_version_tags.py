"""What a person reads on a model version: a few readable tags and one JSON tag per record,
read back by every reader in both forms (versions registered by older code keep working);
the datasets a run logs (metadata, never the rows); the model card as Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tarn.core.model import card_markdown
from tarn.core.registry import headline
from tarn.core.tags import (
    MAX_VERSION_TAGS,
    DeploymentRecord,
    GateRecord,
    Lineage,
    PromotionRecord,
    RetrainRecord,
    VersionTag,
)
from tarn.core.tracking import file_input, frame_input, log_inputs, source_uri

LINEAGE = Lineage(kind="incremental", git_commit="abc", snapshot_hash="f" * 64,
                  params_hash="p" * 64, schema_hash="s" * 16, train_rows=5421,
                  mitigation="reweighing", batches=("0001-a", "0002-b"), parent_version="3",
                  new_batches=("0002-b",), new_data_hash="e" * 64, incremental_streak=2,
                  test_batches=("0003-test",))


def test_lineage_is_one_json_tag_and_reads_back_in_both_forms():
    tags = LINEAGE.version_tags()
    assert list(tags) == [Lineage.TAG]
    doc = json.loads(tags[Lineage.TAG])
    assert doc["train_rows"] == 5421 and doc["batches"] == ["0001-a", "0002-b"]
    assert Lineage.from_tags(tags) == LINEAGE
    # a version registered by older code: one tag per field
    old = LINEAGE.to_tags()
    assert old["tarn.train_rows"] == "5421" and Lineage.TAG not in old
    assert Lineage.from_tags(old) == LINEAGE
    # the JSON tag wins over stale per-field tags on the same version
    assert Lineage.from_tags({**old, "tarn.train_rows": "1", **tags}).train_rows == 5421


def test_records_read_back_from_either_form():
    promo = PromotionRecord("ann", "2026-01-01T00:00:00+00:00", "rollback from version 4", True,
                            "4")
    dep = DeploymentRecord().with_target("backend", "2026-01-02", "http://h:8000", "onnx")
    for rec in (promo, dep):
        assert type(rec).from_tags(rec.version_tags()) == rec
        assert type(rec).from_tags(rec.to_tags()) == rec
    assert PromotionRecord.from_tags(promo.version_tags()).forced is True
    assert PromotionRecord.present(promo.version_tags())


def test_retrain_record_lives_in_the_lineage_tag():
    rec = RetrainRecord("full", True, "full retraining forced by --mode full")
    merged = {**json.loads(LINEAGE.version_tags()[Lineage.TAG]), **rec.as_json_dict()}
    tags = {Lineage.TAG: json.dumps(merged)}
    assert RetrainRecord.from_tags(tags) == rec and Lineage.from_tags(tags) == LINEAGE
    assert RetrainRecord.from_tags(rec.to_tags()) == rec  # the old form


def test_gate_record_readable_verdict_and_a_forced_promotion():
    passed = GateRecord("passed", {"candidate": {"logloss": 0.3}})
    tags = passed.version_tags()
    assert tags[VersionTag.GATE] == "passed" and GateRecord.from_tags(tags) == passed
    skipped = GateRecord(GateRecord.SKIPPED, passed.figures, "passed")
    read = GateRecord.from_tags(skipped.version_tags())
    assert read.result == "skipped (forced)" and read.measured == "passed"
    old = GateRecord.from_tags({"tarn.last_gate_result": "refused"})
    assert old.result == "refused"


def test_a_version_carries_at_most_eight_tags():
    tags = {VersionTag.TASK: "binary", VersionTag.TEST: "roc_auc 0.9100",
            VersionTag.DATA: LINEAGE.data_tag(), **LINEAGE.version_tags(),
            **GateRecord(GateRecord.SKIPPED, {"a": 1}, "passed").version_tags(),
            **PromotionRecord("a", "b", "c", True, "1").version_tags(),
            **DeploymentRecord().with_target("backend", "now", "url").version_tags()}
    assert len(tags) == MAX_VERSION_TAGS == 8
    assert LINEAGE.data_tag() == "eeeeeeeeeeee (5,421 rows)"  # the new data's digest


def test_headline_test_figure():
    assert headline({"test_logloss": 0.3, "test_roc_auc": 0.91234}) == "roc_auc 0.9123"
    assert headline({"test_rmse": 51.2}) == "rmse 51.2000"
    assert headline({"train_rows": 10}) == ""


def test_card_markdown_says_what_the_model_predicts_and_from_which_data():
    card = {"task": "binary", "classes": ["<=50K", ">50K"], "threshold": 0.4, "target": "income",
            "schema": {"name": "adult", "sensitive": ["sex"], "target": {"name": "income"},
                       "columns": [{"name": "age", "dtype": "int", "min": 17, "max": 90},
                                   {"name": "fnlwgt", "dtype": "int", "min": 1.0, "max": None},
                                   {"name": "sex", "dtype": "category", "required": True,
                                    "categories": ["Female", "Male"]}]}}
    md = card_markdown(card, LINEAGE.as_json_dict(), {"train_rows": 5421.0, "test_auc": 0.9})
    assert md.startswith("# Model card: adult")
    assert "**Decision threshold:** 0.4" in md and "`>50K`" in md
    assert "| `sex` | category | yes | Female, Male |" in md
    assert "| `age` | int | no | 17 .. 90 |" in md and "| `fnlwgt` | int | no | >= 1 |" in md
    assert "| train_rows | 5,421 |" in md and "| test_auc | 0.9000 |" in md
    assert "| batches | 0001-a, 0002-b |" in md


def test_datasets_are_metadata_not_rows(tmp_path: Path):
    import mlflow

    frame = pd.DataFrame({"age": np.arange(1000), "sex": ["F", "M"] * 500,
                          "w": np.linspace(0, 1, 1000)})
    a = frame_input(frame, "lake 0004", "new data", source_uri(tmp_path / "lake", "ab12"))
    changed = frame.copy()
    changed.loc[7, "age"] = -1
    assert frame_input(changed, "x", "new data", "file:///x").digest != a.digest
    assert a.rows == 1000 and a.columns == (("age", "long"), ("sex", "string"), ("w", "double"))
    frame.to_parquet(tmp_path / "train.parquet")
    b = file_input(tmp_path / "train.parquet", "train @ snapshot ab12", "training",
                   source_uri(tmp_path / "snap", "ab12"))
    assert b.rows == 1000 and b.source.endswith("/snap?manifest=ab12")
    with pytest.raises(ValueError, match="context"):
        log_inputs("run", [frame_input(frame, "x", "bogus", "file:///x")])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        # this store's own experiment: one set active by an earlier test is not in it
        with mlflow.start_run(experiment_id=mlflow.create_experiment("datasets")) as run:
            log_inputs(run.info.run_id, [a, b])
        got = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    finally:
        mlflow.set_tracking_uri("")
    by_name = {d.dataset.name: d for d in got}
    assert set(by_name) == {"lake 0004", "train @ snapshot ab12"}
    d = by_name["train @ snapshot ab12"]
    assert d.dataset.digest == b.digest and json.loads(d.dataset.profile)["num_rows"] == 1000
    assert json.loads(d.dataset.source)["uri"] == b.source
    assert [t.value for t in d.tags if t.key == "mlflow.data.context"] == ["training"]
    assert len(d.dataset.schema) < 1000  # columns, not rows
