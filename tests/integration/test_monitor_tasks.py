"""Monitoring, incremental retraining and `lake simulate` on a multiclass and a regression
project (scikit-learn's bundled iris and diabetes rows, no download): the task, classes and
threshold come from the production version's card, the figures are the task's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from tarn.core.catalog import load_split
from tarn.core.features import build_preprocessor
from tarn.core.model import packaging, schema_hash
from tarn.core.registry import Registry
from tarn.core.tags import Lineage, PromotionRecord, RetrainRecord
from tarn.core.task import Task
from tarn.lifecycle import monitor, retrain, simulate
from tarn.stages import etl, prepare, snapshot
from tests.support.project import FAST_TUNE, seed_store, write_params
from tests.support.tasks import diabetes_frame, iris_frame, task_params

pytestmark = pytest.mark.slow


def _more(df: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows resampled from ``df`` with 5 % noise on its numbers: enough rows that drift
    on a clean batch stays under the thresholds."""
    out = df.iloc[rng.integers(0, len(df), n)].reset_index(drop=True)
    num = [c for c in out.columns if out[c].dtype.kind == "f" and c != "progression"]
    out[num] = (out[num] + rng.normal(0, 0.05, (n, len(num))) * df[num].std().to_numpy()).round(4)
    return out


def _write(root, name: str, df: pd.DataFrame) -> None:
    d = root / "data" / "lake" / name
    d.mkdir(parents=True)
    df.to_csv(d / "rows.csv", index=False)


def production_project(root, kind: str):
    """A prepared project of ``kind`` (tests/support/tasks.py's contract, more rows) with a
    production version fitted directly (the stages' tuning is not under test here) and
    registered with its card."""
    frame = iris_frame() if kind == "multiclass" else diabetes_frame()
    df = _more(frame, 1500, np.random.default_rng(0))
    params = write_params(root, task_params(kind, **{
        "monitor.min_rows": 50, "retrain.incremental_rounds": 40}))
    for name, part in [("0001-train", df[:600]), ("0002-train", df[600:1200]),
                       ("0003-test", df[1200:])]:
        _write(root, name, part)
    snapshot.run(params, root)
    etl.run(params, root)
    prepare.run(params, root)
    train = load_split(params, root, "train")
    task = Task.of(params.schema, params.train.threshold)
    pipe = Pipeline([("pre", build_preprocessor(params.schema, params.prepare)),
                     ("model", task.estimator(n_estimators=30, max_depth=3, n_jobs=1))])
    pipe.fit(train.X, train.y)
    test = load_split(params, root, "test")
    figures = task.quality(test.y, task.scores(pipe, test.X))
    seed_store(params, root)
    reg = Registry(params.mlflow, root)
    lineage = Lineage(kind="full", schema_hash=schema_hash(params.schema, params.prepare),
                      batches=("0001-train", "0002-train"), train_rows=len(train.y))
    version = reg.register(pipe, lineage, "train", {}, {
        f"test_{k}": v for k, v in figures.items() if isinstance(v, float)},
        packaging(params.schema, params.prepare, task, pipe, train.X.head(5))).version
    reg.promote(version, None, reason="test fixture")
    return params, root, df


@pytest.fixture(params=["multiclass", "regression"])
def project(request, tmp_path):
    return production_project(tmp_path, request.param)


def test_monitor_then_incremental_retraining_per_task(project):
    params, root, df = project
    kind = params.schema.task
    reg = Registry(params.mlflow, root)
    card = reg.card("1")
    assert card["task"] == kind and card["schema"]["task"] == kind

    # an unshifted batch: nothing crosses a threshold, figures are the task's own
    _write(root, "0004-plain", df.sample(400, random_state=1))
    res = monitor.run(params, root, ("lake",))
    lake = res.sources[0]
    assert lake.rows == 400 and lake.loss == Task.from_card(card).loss
    assert set(Task.from_card(card).metrics) <= set(lake.quality)
    assert lake.reference_loss == pytest.approx(reg.run_metrics("1")[f"test_{lake.loss}"])
    assert res.decision.mode == "none", res.decision.reasons
    if kind == "multiclass":
        assert set(lake.quality["per_class"]) == {"setosa", "versicolor", "virginica"}

    # a simulated prior shift, drawn from the project's own curated rows
    name, sim = simulate.simulate(params, root, "prior", 500, seed=3, positive_rate=0.9,
                                  strength=3.0)
    res = monitor.run(params, root, ("lake",))
    lake = res.sources[0]
    assert res.new_batches == ["0004-plain", name]
    assert lake.prediction_drift, lake
    outputs = {"multiclass": "predicted_class", "regression": "predicted_value"}[kind]
    assert outputs in lake.prediction_drifted
    assert res.decision.mode in ("incremental", "full")
    assert any("drifted" in r for r in res.decision.reasons)
    print(kind, sim.summary(), res.decision.reasons)

    r = retrain.run_incremental(params, root, res.new_batches)
    new_card = reg.card(r.version)
    for key in ("task", "classes", "threshold", "schema_hash"):
        assert new_card[key] == card[key]
    metrics = reg.run_metrics(r.version)
    task = Task.from_card(new_card)
    for m in task.metrics:  # what monitoring and `tarn status` read for any version
        assert metrics[f"test_{m}"] == pytest.approx(r.metrics["new"]["test"][m])
    old, new = r.metrics["old"]["new_data"], r.metrics["new"]["new_data"]
    print(kind, {m: (old[m], new[m]) for m in task.metrics})
    assert new[task.loss] < old[task.loss], (old, new)  # it learned the new population
    model = reg.load_model(r.version)
    kinds = {"multiclass": "XGBClassifier", "regression": "XGBRegressor"}
    assert type(model.steps[-1][1]).__name__ == kinds[kind]
    assert model.steps[-1][1].get_booster().num_boosted_rounds() > 30
    if kind == "multiclass":
        assert model.predict_proba(load_split(params, root, "test").X).shape[1] == 3


def test_prediction_log_of_the_task_is_read(project, tmp_path):
    """The log's columns per task (tarn.core.predictions) feed prediction drift."""
    from tarn.core.predictions import log_columns

    params, root, df = project
    reg = Registry(params.mlflow, root)
    model, card = reg.load_with_card("1")
    task = Task.from_card(card)
    rows = df.sample(1000, random_state=2).reset_index(drop=True)
    target = params.schema.target.name
    feats = rows.drop(columns=target)
    from tarn.core.features import to_model_frame

    scores = task.scores(model, to_model_frame(feats, params.schema, params.prepare))
    log = pd.DataFrame({**{c: feats[c] for c in feats}, **log_columns(task, scores),
                        "model_version": "1"})
    out = root / params.serve.prediction_log
    out.mkdir(parents=True)
    log.to_parquet(out / "preds-20260101T000000-1-000001.parquet")
    res = monitor.run(params, root, ("log",))
    src = res.sources[0]
    assert src.rows == 1000 and not src.problems, src.problems
    assert src.quality is None  # no labels in the log
    assert not src.prediction_drift  # same population as training
    drift = (root / params.monitor.reports / "log_drift.json").read_text()
    assert {"multiclass": "predicted_proba_versicolor",
            "regression": "predicted_value"}[task.kind] in drift


def test_simulated_batches_pass_the_contract_of_a_non_adult_project(project):
    params, root, _ = project
    kind = params.schema.task
    cat = "group" if kind == "multiclass" else "sex"
    names = {k: simulate.simulate(params, root, k, 300, seed=5)[0]
             for k in ("none", "covariate", "prior")}
    name, sim = simulate.simulate(params, root, "new-category", 300, seed=5, share=0.2)
    assert sim.columns == [cat] and sim.replaced == 60
    snapshot.run(params, root)
    res = etl.run(params, root)
    for k, b in names.items():
        counts = res.report["batches"][b]
        assert counts["read"] == 300 and counts["rejected"] == 0, (k, counts)
    assert res.report["batches"][name]["rejected_by_reason"] == {"unknown_category": 60}
    curated = pd.read_parquet(res.curated)
    cov = curated[curated["batch"] == names["covariate"]]
    base = curated[curated["batch"].isin(["0001-train", "0002-train"])]
    first = params.schema.feature_names[0]  # the default covariate columns: two numeric ones
    assert cov[first].mean() > base[first].mean() + 0.2 * base[first].std()


def test_tarn_retrain_registers_and_promotes_per_task(project, monkeypatch):
    """`tarn retrain`: monitor, continue boosting, and promote the version it registered
    through the gates (generous bounds: the gates themselves are tested elsewhere)."""
    from typer.testing import CliRunner

    from tarn.cli import app
    from tests.support.project import set_param

    params, root, _ = project
    set_param(root, "promote.tolerance", 1.0)
    set_param(root, "promote.max_demographic_parity_difference", 1.0)
    simulate.simulate(params, root, "prior", 500, seed=3, positive_rate=0.9, strength=3.0)
    monkeypatch.chdir(root)
    res = CliRunner().invoke(app, ["retrain", "--mode", "incremental"], terminal_width=200)
    print(res.output)
    assert res.exit_code == 0, res.output
    assert "incremental retraining from version 1 -> version 2" in res.output
    assert "forced by --mode incremental" in res.output  # the user chose the mode
    assert "old vs new model (version 1 vs 2)" in res.output
    task = Task.from_card(Registry(params.mlflow, root).card("2"))
    for m in task.metrics:  # the table shows the task's figures
        assert f" {m} " in res.output
    assert "version 2 is production" in res.output
    assert Registry(params.mlflow, root).production() == "2"

    res = CliRunner().invoke(app, ["status"], terminal_width=250)
    assert res.exit_code == 0, res.output
    for m in task.metrics:  # both versions show their task's test figures, not "nan"
        assert res.output.count(f"{m} ") >= 2, res.output
    assert "production: version 2" in res.output
    tags = dict(Registry(params.mlflow, root).version("2").tags)
    assert RetrainRecord.from_tags(tags).retrain_forced
    assert "forced by --mode incremental" in PromotionRecord.from_tags(tags).reason


def test_full_retraining_of_a_regression_project(repo_copy):
    """`dvc repro` on a fresh snapshot for a regression project, compared with its parent on
    the task's figures, then promoted."""
    from tests.support.project import set_param, sh
    from tests.support.tasks import task_project as raw_task_project

    root = repo_copy
    sh(root, "git", "init", "-q")
    params = raw_task_project(root, "regression", **{
        "tune.max_evals": 3, **FAST_TUNE, "evaluate.evidently": False,
        "monitor.min_rows": 30, "promote.tolerance": 1000.0,
        "promote.max_demographic_parity_difference": 1.0})
    sh(root, "dvc", "repro")
    reg = Registry(params.mlflow, root)
    reg.promote("1", None, reason="test fixture")
    _write(root, "0004-more", _more(diabetes_frame(), 200, np.random.default_rng(9)))
    set_param(root, "tune.max_evals", 3)  # unchanged: no re-tuning (retrain.retune false)
    mon, r = retrain.run(params, root, "full")
    assert mon.new_batches == ["0004-more"]
    assert r.mode == "full" and r.parent == "1" and r.version == "2", r
    assert r.promoted, r.refused
    assert reg.production() == "2" and reg.card("2")["task"] == "regression"
    assert set(r.metrics["new"]["test"]) >= {"rmse", "mae", "r2"}
    assert reg.run_metrics("2")["test_rmse"] > 0  # what monitoring reads next time
    # forced: recorded as forced in the promotion reason, the tags and the report
    assert r.forced and r.reason.startswith("full retraining forced by --mode full")
    tags = dict(reg.version("2").tags)
    assert PromotionRecord.from_tags(tags).reason.startswith(
        "full retraining forced by --mode full")
    assert RetrainRecord.from_tags(tags) == RetrainRecord("full", True, r.reason[:400])
    import json

    report = json.loads((root / params.monitor.reports / "retrain.json").read_text())
    assert report["forced"] and report["reason"] == r.reason and report["version"] == "2"
    # the same old-vs-new summary as incremental: test split and the new batch
    assert set(r.metrics["old"]) == {"test", "new_data"} == set(r.metrics["new"])
    assert r.metrics["new"]["new_data"]["rows"] == 200
    from tarn.lifecycle.report import report as gather

    sections = {s.title.split(" (")[0]: s for s in gather(params, root)[0]}
    assert sections["production"].rows[0][0] == "2"
    assert sections["last retraining"].rows[0][1] == "full (forced)"


def test_a_changed_task_in_the_contract_asks_for_a_full_retraining(tmp_path):
    """The version's card, not params.yaml, says what production predicts: a contract that now
    says binary cannot be judged with the multiclass model's figures."""
    from tarn.config import load_params
    from tests.support.project import set_param

    params, root, df = production_project(tmp_path, "multiclass")
    _write(root, "0004-plain", df.sample(200, random_state=1))
    set_param(root, "schema.task", "binary")
    set_param(root, "schema.target.mapping", {"setosa": 0, "versicolor": 1, "virginica": 1})
    res = monitor.run(load_params(root / "params.yaml"), root, ("lake",))
    assert res.decision.mode == "full"
    assert res.decision.reasons == ["lake: schema change (schema.task is binary, production "
                                    "version 1 is a multiclass model)"]


def _page(root, params, name: str) -> tuple[str, float]:
    """(the drift page's HTML, the share Evidently's headline counted) of a source."""
    import json

    out = root / params.monitor.reports
    data = json.loads((out / f"{name}_drift.json").read_text())
    count = next(m for m in data["metrics"]
                 if m["config"]["type"].endswith(":DriftedColumnsCount"))
    return (out / f"{name}_drift.html").read_text(), count["value"]["share"]


def test_the_drift_page_says_what_tarn_decided_and_numpy_stays_quiet(tmp_path):
    """Two plain lake batches (figures per batch besides the total) and a 1-row prediction
    log (not enough data: no verdict, no page), then a drifted batch: each time the page's
    headline counts what tarn counts and states tarn's decision. RuntimeWarnings are errors
    throughout (Evidently's correlation of a 1-row sample warned six times before)."""
    import shutil
    import warnings

    from tarn.core.features import to_model_frame
    from tarn.core.predictions import log_columns

    params, root, df = production_project(tmp_path, "regression")
    reg = Registry(params.mlflow, root)
    model, card = reg.load_with_card("1")
    task = Task.from_card(card)
    one = df.sample(1, random_state=4).drop(columns=params.schema.target.name)
    X = to_model_frame(one, params.schema, params.prepare)
    logdir = root / params.serve.prediction_log
    logdir.mkdir(parents=True)
    pd.DataFrame({**{c: X[c].to_numpy() for c in X}, **log_columns(task, task.scores(model, X)),
                  "model_version": "1"}).to_parquet(logdir / "preds-20260101T000000-1-1.parquet")
    (root / params.monitor.reports).mkdir(parents=True)
    (root / params.monitor.reports / "log_drift.html").write_text("an old page")
    _write(root, "0004-plain", df.sample(300, random_state=1))
    _write(root, "0005-plain", df.sample(250, random_state=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = monitor.run(params, root, ("lake", "log"))
    lake, log = res.sources
    assert res.decision.mode == "none", res.decision.reasons
    assert [(b.name, b.rows) for b in lake.batches] == [("0004-plain", 300), ("0005-plain", 250)]
    assert lake.rows == 550 and all(b.verdict.startswith("no drift") for b in lake.batches)
    assert log.rows == 1 and log.verdict == "not enough data (1 rows < monitor.min_rows 50)"
    assert log.drifted == [] and log.html == ""
    assert not (root / params.monitor.reports / "log_drift.html").exists()  # no stale page
    assert "log: not enough data (1 rows < monitor.min_rows 50)" in res.decision.reasons[0]
    html, share = _page(root, params, "lake")
    assert share == pytest.approx(lake.drift_share)
    assert "Dataset Drift is NOT detected" in html and "tarn&#x27;s decision: none" in html

    for b in ("0004-plain", "0005-plain"):
        shutil.rmtree(root / "data" / "lake" / b)
    simulate.simulate(params, root, "covariate", 400, seed=3, strength=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = monitor.run(params, root, ("lake",))
    lake = res.sources[0]
    assert lake.drift_share >= params.monitor.drift_share_incremental, lake.drifted
    assert res.decision.mode in ("incremental", "full") and lake.batches == []
    html, share = _page(root, params, "lake")
    assert share == pytest.approx(lake.drift_share)
    assert "Dataset Drift is detected" in html
    assert f"tarn&#x27;s decision: {res.decision.mode}" in html
    assert html.count('id="tarn-verdict"') == 1
