"""The typed stage reports: the JSON files keep their keys (dvc metrics, MLflow, the README and
the tests read them), older files still read, and no report file name or report key is spelled
outside the catalog (core/catalog.py and core/reports.py)."""

from __future__ import annotations

import json
import re

import pytest

from tarn.config import params_from_dict
from tarn.core import reports
from tarn.core.catalog import STAGE_READS, lineage_keys
from tarn.core.reports import (
    BiasReport,
    EtlCounts,
    EtlReport,
    EvaluateReport,
    PrepareReport,
    ScoresOnValidation,
    TrainInfo,
    TuneSummary,
)
from tarn.core.tracking import params_hash
from tests.support.project import REPO, repo_params_dict

SRC = REPO / "src" / "tarn"
CATALOG = {SRC / "core" / "catalog.py", SRC / "core" / "reports.py"}
# report keys that say nothing outside a report (generic words such as "rows" or "task" are
# keys of many other dicts, so they are not listed)
REPORT_KEYS = ("best_iteration", "n_trials", "n_fits", "n_failed", "n_stopped_early",
               "n_capped", "fits_per_rung", "stop_reason", "reference_val", "parent_run_id",
               "mitigation_check", "mitigation_recorded", "disparate_impact_min",
               "statistical_parity_difference", "mean_gap", "rejected_by_reason",
               "target_mean", "target_std")
# where a report key may also be spelled (a file, or a folder ending in /), and why
DATA_BIAS = ("core/bias.py", "core/tasks/")  # compute the figures (bias_detail.json's detail)
ALSO = {
    "disparate_impact_min": DATA_BIAS,
    "statistical_parity_difference": DATA_BIAS,
    "mean_gap": DATA_BIAS,
    # each trial's child run logs an MLflow metric of that name (not a report key)
    "best_iteration": ("stages/tune.py",),
}


def _allowed(key: str, rel: str) -> bool:
    return any(rel == a or (a.endswith("/") and rel.startswith(a)) for a in ALSO.get(key, ()))


def _sources():
    return [p for p in SRC.rglob("*.py") if p not in CATALOG]


def test_no_report_file_name_is_spelled_outside_the_catalog():
    names = [v for k, v in vars(reports).items()
             if k.isupper() and isinstance(v, str) and re.fullmatch(r"[a-z_]+\.(json|html)", v)]
    assert {"prepare.json", "tune.json", "train.json", "evaluate.json", "bias.html",
            "evaluation.html", "best_params.json"} <= set(names)
    found = [f"{p.relative_to(SRC)}: {n}" for p in _sources() for n in names
             if re.search(rf"[\"'/]{re.escape(n)}[\"']", p.read_text())]
    assert found == [], "use the catalog's constant (tarn.core.reports) instead"


def test_no_report_key_is_spelled_outside_the_catalog():
    found = []
    for p in _sources():
        text, rel = p.read_text(), str(p.relative_to(SRC))
        found += [f"{rel}: {k}" for k in REPORT_KEYS
                  if not _allowed(k, rel) and re.search(rf"[\"']{k}[\"']", text)]
    assert found == [], "read the typed report (tarn.core.reports) instead of its dict"


def test_the_grep_catches_both_quote_styles(tmp_path):
    """The check above must see what the tag check once missed: single quotes, f-strings."""
    pattern = rf"[\"']{REPORT_KEYS[0]}[\"']"
    assert re.search(pattern, "f\"{b['best_iteration'] + 1}\"")
    assert re.search(pattern, 'tune["best_iteration"]')
    assert not re.search(pattern, "model.best_iteration")


# ------------------------------------------------------------------------- the formats
DETAIL = {  # core.bias's report, as the prepare stage gets it (two features, one split kind)
    "splits": {"train": {"positive_rate": 0.24, "features": {
        "sex": {"reference_group": "Male", "gap": 0.2, "disparate_impact_min": 0.35,
                "statistical_parity_difference": 0.2, "small_groups": {},
                "groups": {"Male": {"share": 0.67, "positive_rate": 0.31, "count": 67},
                           "Female": {"share": 0.33, "positive_rate": 0.11, "count": 33}}}}}},
    "train_reweighed": {"positive_rate": 0.24, "features": {
        "sex": {"reference_group": "Male", "gap": 0.0, "disparate_impact_min": 1.0,
                "statistical_parity_difference": 0.0,
                "groups": {"Male": {"share": 0.67, "positive_rate": 0.24, "count": 67},
                           "Female": {"share": 0.33, "positive_rate": 0.24, "count": 33}}}}},
}


def test_bias_json_keeps_its_flat_figures():
    flat = BiasReport.from_detail(DETAIL).to_json()
    assert flat == {
        "train": {"sex": {"disparate_impact_min": 0.35, "statistical_parity_difference": 0.2,
                          "positive_rate": {"Male": 0.31, "Female": 0.11}, "gap": 0.2,
                          "share": {"Male": 0.67, "Female": 0.33}, "small_groups": {}}},
        "train_reweighed": {"sex": {
            "disparate_impact_min": 1.0, "statistical_parity_difference": 0.0,
            "positive_rate": {"Male": 0.24, "Female": 0.24}, "gap": 0.0,
            "share": {"Male": 0.67, "Female": 0.33}, "small_groups": {}}}}
    assert list(flat["train"]["sex"]) == ["disparate_impact_min",
                                          "statistical_parity_difference", "positive_rate",
                                          "gap", "share", "small_groups"]
    assert BiasReport.from_json(flat) == BiasReport.from_detail(DETAIL)


def _summary() -> TuneSummary:
    return TuneSummary(
        params={"max_depth": 6}, best_iteration=41, rows=800, validation="validation split",
        task="binary", loss="val_logloss", figures={"val_logloss": 0.3, "val_auc": 0.9},
        trial=3, n_trials=8, n_fits=12, n_failed=1, n_stopped_early=2, n_capped=0,
        fits_per_rung=[{"rows": 800, "fits": 12}], budget_s=60.0, stop_reason="max_evals",
        reference_val={"hgb_defaults": {"logloss": 0.31}},
        unmitigated={"params": {"max_depth": 4}, "best_iteration": 9, "trial": 5,
                     "val_logloss": 0.29},
        reference_verdict="beats", parent_run_id="abc", duration_s=12.5,
        mitigation_check=ScoresOnValidation("train+valid", "5-fold", "v.parquet", "d1"))


def test_tune_files_keep_their_keys_in_order():
    s = _summary()
    assert list(s.to_json()) == [
        "params", "best_iteration", "rows", "validation", "task", "loss", "val_logloss",
        "val_auc", "trial", "n_trials", "n_fits", "n_failed", "n_stopped_early", "n_capped",
        "fits_per_rung", "budget_s", "stop_reason", "reference_val", "unmitigated",
        "reference_verdict", "mitigation_check", "parent_run_id", "duration_s"]
    assert s.to_json()["mitigation_check"] == {"rows": "train+valid", "validation": "5-fold",
                                               "file": "v.parquet", "digest": "d1"}
    assert list(s.report_json()) == [
        "task", "loss", "val_logloss", "val_auc", "best_iteration", "rows", "validation",
        "n_trials", "n_fits", "n_failed", "n_stopped_early", "n_capped", "fits_per_rung",
        "budget_s", "stop_reason", "reference_val", "reference_verdict", "duration_s"]
    assert TuneSummary.from_json(json.loads(json.dumps(s.to_json()))) == s
    assert s.best_loss == 0.3 and s.configuration() == ({"max_depth": 6}, 42)
    assert s.configuration(mitigated=False) == ({"max_depth": 4}, 10)
    assert s.mitigation_check is not None and s.mitigation_check.splits == ("train", "valid")


@pytest.mark.parametrize("report", [
    EtlReport("h", EtlCounts(3, 1, 1, 1, {"range": 1}), {"b1": EtlCounts(3, 1, 1, 1)}, {}),
    PrepareReport("regression", {"train": 8}, target_mean={"train": 1.0},
                  target_std={"train": 0.5}, batches={"train": ["b1"]}),
    TrainInfo("r", "models:/m-1", "m", "2", {"tarn.kind": "full"}, {"max_depth": 3},
              {"applied": True, "reason": "kept"}),
    EvaluateReport("multiclass", {"accuracy": 0.9}, {}, {}, None, {"logloss": 0.2}, {}, "",
                   "forward", {"importance": {}}, "2"),
])
def test_every_report_reads_back_what_it_writes(report):
    assert type(report).from_json(json.loads(json.dumps(report.to_json()))) == report


def test_absent_figures_are_not_written():
    """prepare.json holds the target figures of its task only, as it always did."""
    written = PrepareReport("binary", {"train": 8}, positive_rate={"train": 0.2}).to_json()
    assert "class_shares" not in written and "target_mean" not in written
    assert "test_window" not in written


# files as an older pipeline wrote them (before tasks, search rungs and the mitigation check)
OLD = {
    "tune.json": {"val_logloss": 0.2697, "val_auc": 0.9329, "best_iteration": 1997,
                  "n_trials": 40, "n_failed": 0, "duration_s": 249.1},
    "best_params.json": {"params": {"max_depth": 8}, "best_iteration": 510, "task": "binary",
                         "loss": "val_logloss", "val_logloss": 0.2765, "val_auc": 0.9288,
                         "trial": 37, "n_trials": 50, "n_failed": 0, "n_stopped_early": 27,
                         "parent_run_id": "b113", "duration_s": 50.0},
    "train.json": {"run_id": "63b0", "model_uri": "models:/m-9e2d", "registered_model": "m",
                   "version": "1", "tags": {"tarn.kind": "full"}, "params": {"max_depth": 8}},
    "prepare.json": {"rows": {"train": 26029, "valid": 6508, "test": 16253},
                     "positive_rate": {"train": 0.2409, "valid": 0.2409, "test": 0.2364},
                     "batches": {"train": ["0001"], "valid": ["0001"], "test": ["0005"]}},
    "evaluate.json": {"model": {"logloss": 0.28, "roc_auc": 0.93}, "effect": {},
                      "version": "1"},
    "etl.json": {"snapshot": "17a4", "total": {"read": 10, "written": 8, "rejected": 1,
                                               "duplicates": 1, "rejected_by_reason": {"x": 1}},
                 "batches": {}, "files": {}},
    "bias.json": {"train": {"sex": {"disparate_impact_min": 0.35,
                                    "statistical_parity_difference": 0.2,
                                    "positive_rate": {"Male": 0.31, "Female": 0.11},
                                    "share": {"Male": 0.67, "Female": 0.33}}}},
}


def test_the_files_of_an_older_pipeline_still_read(tmp_path):
    """Their keys read, the newer ones take their defaults; rewritten, they are unchanged."""
    for name, data in OLD.items():
        (tmp_path / name).write_text(json.dumps(data))
    tune = TuneSummary.read(tmp_path / "tune.json")
    assert tune is not None and tune.loss == "val_logloss" and tune.n_trials == 40
    assert tune.fits_per_rung == [] and tune.best_loss == 0.2697 and tune.rounds == 1998
    best = TuneSummary.read(tmp_path / "best_params.json")
    assert best is not None and best.mitigation_check is None and best.unmitigated is None
    assert best.configuration(mitigated=False) == ({"max_depth": 8}, 511)
    info = TrainInfo.read(tmp_path / "train.json")
    assert info is not None and info.version == "1" and not info.mitigation_recorded
    assert "mitigation_recorded" not in info.to_json()
    assert TrainInfo.from_json({**OLD["train.json"], "mitigation": None}).mitigation_recorded
    for kind, name in ((EtlReport, "etl.json"), (BiasReport, "bias.json")):
        assert kind.from_json(OLD[name]).to_json() == OLD[name], name
    prep = PrepareReport.read(tmp_path / "prepare.json")
    assert prep is not None and prep.task == "binary" and prep.positive_rate
    assert prep.test_window is None and prep.class_shares is None
    ev = EvaluateReport.read(tmp_path / "evaluate.json")
    assert ev is not None and ev.task == "binary" and ev.version == "1"
    assert ev.mitigation is None and ev.fairness_changes == {}
    assert TuneSummary.read(tmp_path / "no-such.json") is None


# ------------------------------------------------------------------------- lineage
def test_lineage_keys_cover_every_stage_up_to_the_fit():
    train = lineage_keys("train")
    # etl, prepare, tune and train reads: whole sections swallow their keys
    assert {"schema", "etl", "bias", "tune", "train", "prepare.seed",
            "prepare.numeric_scaler", "mlflow.registered_model"} <= set(train)
    assert "tune.seed" not in train and "bias.mitigation" not in train  # inside tune, bias
    assert "lake.url" not in train  # where the data lives: the snapshot hash says what it was
    assert set(lineage_keys("tune")) < set(train)
    assert "retrain" in lineage_keys("train", "retrain")
    assert list(STAGE_READS) == ["snapshot", "etl", "prepare", "tune", "train", "evaluate"]


def test_lineage_hash_changes_with_a_declared_key_only():
    base = repo_params_dict()
    keys = lineage_keys("train")
    h = params_hash(params_from_dict(base), keys)
    moved = {**base, "prepare": {**base["prepare"], "seed": base["prepare"].get("seed", 0) + 1}}
    assert params_hash(params_from_dict(moved), keys) != h
    served = {**base, "serve": {**base.get("serve", {}), "port": 9999}}
    assert params_hash(params_from_dict(served), keys) == h
