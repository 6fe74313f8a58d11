"""Reweighing is compared with no mitigation on validation before train registers a model:
the tune stage writes both models' validation scores, the train stage recomputes the task's
fairness gap and loss from them, decides (core/bias.decide_mitigation) and records why."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tarn.config import load_params
from tarn.core.catalog import TuneSummary, load_split
from tarn.core.registry import Registry
from tarn.core.tags import Lineage
from tarn.core.task import Task
from tarn.stages import evaluate, train, tune
from tests.support.project import set_param, small_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    params = small_project(root, **{"tune.max_evals": 3, "tune.cv_folds": 0})
    tune.run(params, root)
    return params, root


def test_tune_records_both_models_scores_on_the_validation_rows(tuned):
    params, root = tuned
    best = json.loads((root / "models" / "best_params.json").read_text())
    check = best["mitigation_check"]
    assert check["rows"] == "valid" and "validation split" in check["validation"]
    scores = pd.read_parquet(root / "models" / "validation_scores.parquet")
    valid = load_split(params, root, "valid")
    assert list(scores.columns) == ["row", "mitigated_0", "unmitigated_0"]
    assert scores["row"].tolist() == list(range(len(valid.y)))
    # the unmitigated scores are the refit tune chose: its recorded validation loss
    task = Task.of(params.schema)
    assert task.metric("logloss", valid.y, scores["unmitigated_0"].to_numpy()) == \
        pytest.approx(best["unmitigated"]["val_logloss"])
    assert task.metric("logloss", valid.y, scores["mitigated_0"].to_numpy()) == \
        pytest.approx(best["val_logloss"], abs=1e-6)


def test_over_the_quality_budget_the_unmitigated_model_is_registered_and_why(tuned):
    params, root = tuned
    set_param(root, "bias.max_quality_cost", 0.0)
    set_param(root, "bias.mitigation_policy", "compare")
    strict = load_params(root / "params.yaml", env={})
    res = train.run(strict, root)
    info = json.loads((root / "models" / "train.json").read_text())
    d = info["mitigation"]
    f = d["figures"]
    # the figures: the task's own loss and gap on the validation rows, recomputed here
    valid = load_split(params, root, "valid")
    scores = pd.read_parquet(root / "models" / "validation_scores.parquet")
    task = Task.of(params.schema, params.train.threshold)
    for name, key in (("mitigated", "with"), ("unmitigated", "without")):
        s = scores[f"{name}_0"].to_numpy()
        assert f[f"loss_{key}"] == pytest.approx(task.metric("logloss", valid.y, s))
        gap = task.fairness(valid.y, s, valid.frame, ["sex"], params.bias.min_group_rows)
        assert f[f"gaps_{key}"]["sex"] == pytest.approx(gap["sex"]["gap"])
    assert set(f["gaps_with"]) == {"sex", "race"}  # every sensitive feature measured
    # the rule, applied to those figures
    worse = f["gaps_with"]["sex"] > f["gaps_without"]["sex"]
    over = f["loss_with"] > f["loss_without"]
    assert d["applied"] == (not worse and not over)
    lineage = Lineage.from_tags(Registry(params.mlflow, root).version(res.version).tags)
    assert lineage.mitigation == ("reweighing" if d["applied"] else "none")
    assert lineage.mitigation_reason == d["reason"] == res.mitigation_reason
    if not d["applied"]:
        assert d["reason"].startswith("reweighing not applied, the unmitigated model is "
                                      "registered: on the validation split")
    if over:
        assert "over bias.max_quality_cost 0 %" in d["reason"]
    # the registered model is the unmitigated configuration when not applied
    assert info["params"]["n_estimators"] == train.model_params(
        TuneSummary.from_json(json.loads((root / "models" / "best_params.json").read_text())),
        strict,
        d["applied"])["n_estimators"]
    # evaluation says which model it measured and why, with signed changes
    ev = evaluate.run(strict, root)
    assert ev.comparison["mitigation_decision"]["reason"] == d["reason"]
    fair = ev.comparison["with_mitigation"]["fairness"]["sex"]["gap"]
    unfair = ev.comparison["without_mitigation"]["fairness"]["sex"]["gap"]
    assert ev.comparison["effect"]["gap_change_sex"] == pytest.approx(fair - unfair)
    assert ev.comparison["fairness_changes"]["sex"].startswith(f"{unfair:.4f} -> {fair:.4f} (")
    registered = ev.comparison["with_mitigation" if d["applied"] else "without_mitigation"]
    assert ev.metrics["sex_gap"] == registered["fairness"]["sex"]["gap"]
    page = (root / "reports" / "evaluation.html").read_text()
    assert ("Reweighed" if d["applied"] else "Unmitigated") + " model registered" in page
    report = json.loads((root / "reports" / "evaluate.json").read_text())
    assert report["mitigation"] == {"applied": d["applied"], "reason": d["reason"]}
    assert "%" not in report["fairness_changes"]["sex"]


def test_policy_always_registers_the_reweighed_model_and_says_so(tuned):
    params, root = tuned
    set_param(root, "bias.max_quality_cost", 0.0)
    set_param(root, "bias.mitigation_policy", "always")
    res = train.run(load_params(root / "params.yaml", env={}), root)
    d = json.loads((root / "models" / "train.json").read_text())["mitigation"]
    assert d["applied"] and Lineage.from_tags(res.tags).mitigation == "reweighing"
    if d["worse"] or d["over_budget"]:
        assert "(bias.mitigation_policy: always)" in d["reason"]
    else:
        assert d["reason"].startswith("reweighing kept")
    assert np.isfinite(d["quality_cost"])


def test_cross_validated_scores_name_their_rows_in_train_plus_valid(tmp_path):
    """A small table is cross-validated: the scores are out-of-fold over train + valid in the
    search's shuffled order, and ``row`` puts each back on its row (the groups train reads)."""
    params = small_project(tmp_path, **{"tune.max_evals": 2})
    tune.run(params, tmp_path)
    best = json.loads((tmp_path / "models" / "best_params.json").read_text())
    assert best["mitigation_check"]["rows"] == "train+valid"
    scores = pd.read_parquet(tmp_path / "models" / "validation_scores.parquet")
    parts = [load_split(params, tmp_path, s) for s in ("train", "valid")]
    y = np.concatenate([p.y for p in parts])
    assert sorted(scores["row"]) == list(range(len(y)))  # every row once, shuffled
    assert scores["row"].tolist() != list(range(len(y)))
    task = Task.of(params.schema)
    aligned = y[scores["row"].to_numpy()]
    assert task.metric("logloss", aligned, scores["unmitigated_0"].to_numpy()) == \
        pytest.approx(best["unmitigated"]["val_logloss"])
    check = train.mitigation_check(params, tmp_path, TuneSummary.from_json(best), task)
    assert check is not None and check.validation == best["mitigation_check"]["validation"]
    assert check.loss_without == pytest.approx(best["unmitigated"]["val_logloss"])


def test_scores_for_other_rows_are_not_compared(tuned, tmp_path):
    """A full retraining that does not re-tune prepares other rows: the search's validation
    scores no longer describe them, so nothing is compared and the reason says why."""
    import shutil

    from tarn.stages import prepare

    params, root = tuned
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    set_param(copy, "prepare.seed", params.prepare.seed + 1)  # another validation split
    moved = load_params(copy / "params.yaml", env={})
    prepare.run(moved, copy)
    train.run(moved, copy)
    d = json.loads((copy / "models" / "train.json").read_text())["mitigation"]
    assert d["applied"] and not d.get("checked")
    assert "validation scores are for other rows" in d["reason"]
