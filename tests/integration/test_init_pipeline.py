"""`tarn init` on a dataset tarn has never seen (scikit-learn's breast cancer data, shipped in
the wheel), then the whole pipeline with no further edits but a small search budget."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_breast_cancer

from tarn.config import load_params
from tarn.lifecycle.init import init
from tarn.lifecycle.promote import promote
from tarn.stages import etl, evaluate, prepare, snapshot, train, tune
from tests.support.project import FAST_TUNE, REPO, set_param

pytestmark = pytest.mark.slow


def test_init_then_the_pipeline_trains_on_every_row(tmp_path):
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    frame.to_csv(tmp_path / "cancer.csv", index=False)
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    res = init(tmp_path / "params.yaml", [tmp_path / "cancer.csv"], "target", force=True)
    assert res.proposal.task == "binary" and res.batches == ["0001-cancer", "0002-cancer"]
    for key, value in (("tune.max_evals", 3), *FAST_TUNE.items(),
                       ("mlflow.registered_model", "tarn-init")):
        set_param(tmp_path, key, value)
    params = load_params(tmp_path / "params.yaml", env={})
    snapshot.run(params, tmp_path)
    report = etl.run(params, tmp_path).report["total"]
    assert report["read"] == report["written"] == len(frame) and report["rejected"] == 0
    rows = prepare.run(params, tmp_path).rows
    assert rows["test"] == len(frame) - round(0.8 * len(frame))
    tune.run(params, tmp_path)
    version = train.run(params, tmp_path).version
    metrics = evaluate.run(params, tmp_path).metrics
    assert metrics["roc_auc"] > 0.95  # a published model reaches about 0.99 on this data
    assert promote(params, tmp_path, version).gates.passed
