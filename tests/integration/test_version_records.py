"""The records a version carries through promotion and rollback, on a real SQLite registry: a
forced rollback says the gates were skipped (never "passed" beside "forced"), the page stays
under eight tags, bookkeeping stays off it, and a version tagged by older code (one tag per
field) still reads."""

from __future__ import annotations

import pytest

from tarn.core.registry import Registry
from tarn.core.tags import MAX_VERSION_TAGS, DeploymentRecord, GateRecord, Lineage
from tarn.lifecycle.promote import promote
from tests.support.project import make_version, small_project

pytestmark = pytest.mark.slow


def test_forced_rollback_is_recorded_as_forced_and_the_page_stays_small(tmp_path):
    params = small_project(tmp_path, **{"promote.max_demographic_parity_difference": 0.9,
                                        "promote.tolerance": 0.5})
    one, two = make_version(params, tmp_path), make_version(params, tmp_path, rounds=31)
    promote(params, tmp_path, one)
    promote(params, tmp_path, two)
    reg = Registry(params.mlflow, tmp_path)
    assert reg.gate_record(one).result == "passed"
    reg.rollback(reason="bad release")
    reg.record_deployment(one, DeploymentRecord().with_target("backend", "now", "url", "onnx"))
    tags = dict(reg.version(one).tags)
    gates, promotion = GateRecord.from_tags(tags), reg.promotion_record(one)
    assert promotion.forced and promotion.reason == "bad release"
    assert gates.result == "skipped (forced)" and gates.measured == "passed"
    assert tags["tarn.gate"] == "skipped (forced)"
    flat = reg.record_tags(one)  # the old form, for readers of it
    assert flat["tarn.promotion_forced"] == "true"
    assert flat["tarn.last_gate_result"] == "skipped (forced)"
    assert len(tags) <= MAX_VERSION_TAGS, sorted(tags)
    assert not [k for k in tags if k in ("tarn.agreed_production", "tarn.promotion_lock")]
    # a forced promotion again: still the last verdict that ran, not "skipped" twice over
    reg.promote(two, None, reason="again")
    reg.promote(one, None, reason="and back")
    # ... and the signature its version got when it was promoted, kept (what servers check)
    assert gates.signature["verdict"] == "passed"
    assert reg.gate_record(one) == GateRecord("skipped (forced)", gates.figures, "passed",
                                              gates.signature)


def test_a_version_tagged_by_older_code_still_reads(tmp_path):
    params = small_project(tmp_path)
    v = make_version(params, tmp_path)
    reg = Registry(params.mlflow, tmp_path)
    lineage = reg.lineage(v)
    reg.client.delete_model_version_tag("tarn-test", v, Lineage.TAG)
    for key, value in lineage.to_tags().items():  # what the older code wrote
        reg.client.set_model_version_tag("tarn-test", v, key, value)
    assert reg.lineage(v) == lineage and reg.record_tags(v)["tarn.train_rows"] == str(
        lineage.train_rows)
