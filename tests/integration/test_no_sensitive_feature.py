"""A dataset with no sensitive feature declared: every stage runs, and the reports say so."""

from __future__ import annotations

import json

import pytest

from tarn.lifecycle.promote import promote
from tarn.stages import evaluate, train, tune
from tests.support.project import small_project

pytestmark = pytest.mark.slow


def test_the_pipeline_runs_without_a_sensitive_feature(tmp_path):
    params = small_project(tmp_path, **{
        "schema.sensitive": [], "bias.mitigation": "none", "bias.reweighing_features": [],
        "bias.privileged": {}, "promote.fairness_features": None})
    bias_html = (tmp_path / "reports" / "bias.html").read_text()
    assert "No sensitive feature is declared" in bias_html
    assert "weights are 1" in bias_html
    tune.run(params, tmp_path)
    res = train.run(params, tmp_path)
    ev = evaluate.run(params, tmp_path)
    assert 0.5 < ev.metrics["roc_auc"] <= 1
    assert not any(k.endswith("demographic_parity_difference") for k in ev.metrics)
    fairness = json.loads((tmp_path / "reports" / "fairness.json").read_text())
    assert fairness["with_mitigation"]["fairness"] == {}
    p = promote(params, tmp_path, res.version)
    assert p.gates.passed and p.gates.candidate_dpd is None and p.gates.fairness_ok
