"""A fourth task type, defined here and nowhere else: the shared code (evaluation figures,
plots and page, the gates' measure and metric, serving's response shapes, the prediction log
and monitoring's reading of it, status's figure names, the model card) works for it without
editing another module. Issue 20's target: a new task touches its own module, the
``schema.task`` literal in config.py, the browser page and the edge runner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tarn.config import PromoteConfig
from tarn.core import tasks
from tarn.core.predictions import log_columns
from tarn.core.reports import TrainInfo
from tarn.core.task import Task
from tarn.core.tasks import base
from tarn.core.tasks.regression import RegressionTask
from tarn.lifecycle.gates import Figures, gate_metric, judge
from tarn.lifecycle.monitor import logged_scores, prediction_columns
from tarn.serve.responses import invocations_body, predict_body
from tarn.stages.evaluate import _plots, compare, render_html


class CountTask(RegressionTask):
    """Counts (visits, claims): Poisson regression, answered as an expected count."""

    KIND = "count"
    OBJECTIVE = "count:poisson"
    EVAL_METRIC = "poisson-nloglik"
    METRICS = ("rmse", "mae", "r2", "poisson_deviance")
    REPORT_FIGURES = METRICS
    HTML_QUALITY = (*METRICS, "mean_prediction", "mean_target")
    GAP_MEANING = "spread of group mean expected counts, in standard deviations of the count"
    GAP_MEASURE = "gap in mean expected count between groups (in count std)"
    GAP_NAME = "mean count gap (count std)"

    def metric(self, name: str, y: np.ndarray, scores: np.ndarray) -> float:
        if name == "poisson_deviance":
            y, mu = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.where(y > 0, y * np.log(y / mu), 0.0)
            return float(2 * np.mean(term - (y - mu)))
        return super().metric(name, y, scores)

    def predict_rows(self, scores: np.ndarray) -> list[dict]:
        return [{"expected_count": v} for v in np.asarray(scores, dtype=np.float64).tolist()]

    def log_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        return {"expected_count": np.asarray(scores, dtype=np.float64)}

    def log_score_columns(self) -> list[str]:
        return ["expected_count"]


@pytest.fixture
def count_task():
    tasks.register(CountTask)
    try:
        yield Task("count", (), 0.5, "visits")
    finally:
        base._KINDS.pop("count")


def _rows(n: int = 120) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"region": rng.choice(["north", "south", "west"], n)})
    mu = np.where(frame["region"] == "north", 4.0, 2.0) + rng.uniform(0, 1, n)
    return rng.poisson(mu).astype(np.float64), mu, frame


def test_the_registry_builds_the_new_task_everywhere_a_kind_is_read(count_task):
    assert type(count_task) is CountTask and "count" in tasks.kinds()
    assert type(Task.from_card(count_task.card())) is CountTask  # a version's card
    assert count_task.objective == "count:poisson" and count_task.loss == "rmse"
    assert "poisson_deviance" in tasks.figure_names()  # what status lists per version
    assert not Task.higher_is_better("poisson_deviance") and Task.higher_is_better("r2")


def test_evaluation_figures_page_and_plots_follow_the_task(count_task, tmp_path):
    y, mu, frame = _rows()
    with_m = {"quality": count_task.quality(y, mu),
              "fairness": count_task.fairness(y, mu, frame, ["region"], min_group_rows=5)}
    without = {"quality": count_task.quality(y, mu * 1.1),
               "fairness": count_task.fairness(y, mu * 1.1, frame, ["region"], 5)}
    assert with_m["quality"]["poisson_deviance"] < without["quality"]["poisson_deviance"]
    assert with_m["fairness"]["region"]["gap"] > 0.3  # north's counts are twice the others'
    effect = compare(with_m, without, True, ["region"], count_task)
    assert set(effect) == {"rmse_cost", "gap_change_region"}
    page = render_html({"with_mitigation": with_m, "without_mitigation": without,
                        "effect": effect, "fairness_changes": {"region": "0.5 -> 0.6"}},
                       True, TrainInfo(registered_model="visits", version="3"), {}, count_task)
    assert "poisson_deviance" in page and count_task.GAP_MEANING in page
    assert "mean count gap (count std) without -> with reweighing: 0.5 -&gt; 0.6" in page
    _plots(count_task, y, mu, 10, tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert {*base.DVC_PLOTS, "residuals.csv", "evaluation.png"} <= written
    assert pd.read_csv(tmp_path / "roc.csv").empty  # a curve that does not apply: header only


def test_the_gates_name_the_tasks_measure_and_metric(count_task):
    # promote.metric is a Literal in config.py: a real fourth task adds its new metric's name
    # there, beside schema.task's; unvalidated here, as the test may not edit config.py
    cfg = PromoteConfig.model_construct(metric="poisson_deviance", tolerance=0.01,
                                        max_demographic_parity_difference=0.2)
    assert gate_metric(cfg, "count") == "poisson_deviance"
    assert gate_metric(PromoteConfig(metric="roc_auc"), "count") == "rmse"
    gates = judge(Figures("2", "1", 1.30, 1.20, fairness={"region": 0.35}, task="count"), cfg)
    assert not gates.passed
    reasons = " | ".join(gates.failures())
    assert "poisson_deviance (count, lower is better) 1.3000 vs champion 1.2000" in reasons
    assert f"{CountTask.GAP_MEASURE} on region 0.3500 > 0.2 (count)" in reasons


def test_serving_and_the_prediction_log_take_the_tasks_shapes(count_task):
    scores = np.array([2.5, 0.25])
    body = predict_body(count_task, scores, "3", "req-1")
    assert body["predictions"] == [{"expected_count": 2.5}, {"expected_count": 0.25}]
    assert invocations_body(count_task, scores, "req-1")["predictions"] == [2.5, 0.25]
    cols = log_columns(count_task, scores)
    assert list(cols) == ["expected_count"]
    log = pd.DataFrame({"region": ["north", "west"], **cols})
    np.testing.assert_allclose(logged_scores(count_task, log), scores)  # monitor reads it back
    assert logged_scores(count_task, log.drop(columns="expected_count")) is None
    drift, numeric, categorical = prediction_columns(count_task, scores)
    assert numeric == ("predicted_value",) and categorical == ()


def test_an_unregistered_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'ranking'.*binary, multiclass"):
        Task("ranking")
    with pytest.raises(ValueError, match="unknown task 'ranking' in the model's metadata"):
        Task.from_card({"task": "ranking"})


def test_the_config_names_the_same_tasks_metrics_and_targets_as_the_task_modules():
    """config.py may not import core (it validates params.yaml below every layer): its task
    literal, gate metrics and numeric targets must agree with the task classes."""
    from typing import get_args

    from tarn.config import METRICS_BY_TASK, NUMERIC_TARGET_TASKS, TASKS, SchemaConfig
    from tarn.edge import runner

    literal = get_args(SchemaConfig.model_fields["task"].annotation)
    assert set(literal) == set(TASKS) == set(tasks.kinds())
    assert {k: tasks.task_class(k).METRICS for k in TASKS} == METRICS_BY_TASK
    assert NUMERIC_TARGET_TASKS == {k for k in TASKS if not tasks.task_class(k).CLASSIFICATION}
    gate_literal = get_args(PromoteConfig.model_fields["metric"].annotation)
    assert set(gate_literal) == {"", *tasks.figure_names()}
    # the bundle's outputs name the graph's (the standalone runner keeps its own constants)
    outputs = {v for k in TASKS for v in tasks.task_class(k).ONNX_OUTPUTS.values()}
    assert {runner.PROBA_OUTPUT, runner.VALUE_OUTPUT} <= outputs


def test_the_built_in_tasks_answer_what_callers_used_to_branch_on():
    binary, regression = Task("binary", ("no", "yes"), 0.3), Task("regression")
    multi = Task("multiclass", ("a", "b", "c"))
    assert binary.decision_threshold == 0.3 and regression.decision_threshold is None
    assert multi.decision_threshold is None
    assert regression.compatible(binary).startswith("task regression, the champion's binary")
    assert multi.compatible(Task("multiclass", ("a", "b", "d"))).startswith(
        "classes ['a', 'b', 'c'], the champion's ['a', 'b', 'd']")
    assert multi.compatible(Task("multiclass", ("a", "b", "c"))) == ""
    assert multi.missing_classes(np.array([0, 2, 2])) == ["b"]
    assert multi.missing_classes(np.array([0, 1, 2])) == [] == binary.missing_classes([1])
    assert [t.PREDICT_FN for t in (binary, multi, regression)] == ["predict_proba"] * 2 + [
        "predict"]
    assert not binary.measurable(np.array([1, 1])) and binary.measurable(np.array([0, 1]))
    assert regression.parity_scale(np.array([1000.0, 1002.0])) == 1.0  # their std
    assert binary.parity_scale(np.array([0.2, 0.9])) == 1.0  # probabilities: absolute
    assert regression.parity_labels(np.array([1.0]), np.array([2.0]))  # values: no labels
    assert not binary.parity_labels(np.array([0.2]), np.array([0.4]))  # across 0.3
