"""The task protocol: what every task (binary, multiclass, regression, ...) answers, and the
registry that maps a task's name (``schema.task``, a model card's ``task``) to its class.

Everything that differs by task lives on the task's class, so the stages, lifecycle, serving
and reports ask the task object instead of branching on its name: its objective and
estimator, scores and labels, metrics (which are higher-is-better) and the figures shown for
them, the fairness gap and its wording, plots, prediction-log columns, response shapes and the
ONNX outputs. A new task is one module in this package (found by :mod:`tarn.core.tasks`), plus
the ``schema.task`` literal in ``config.py``, the browser page and the edge runner.

Imports stay light (numpy only): ``tarn status`` asks a task for its figure names; pandas,
scikit-learn, fairlearn, XGBoost and matplotlib are imported inside the methods that use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from tarn.config import SchemaConfig

MISSING_GROUP = "<missing>"
LIST_ROWS = 64  # up to this many rows, Python lists serialize faster than numpy arrays

# the prediction log's score columns (tarn.core.predictions re-exports them)
PROBA = "proba"
LABEL = "label"
PREDICTION = "prediction"
# the model outputs monitoring watches for drift are named <PREDICTED>_...
PREDICTED = "predicted"
# the plot files dvc.yaml declares: every task writes them (header only where a curve does not
# apply), so `dvc repro` finds its outputs whatever the task
DVC_PLOTS = {"roc.csv": ["fpr", "tpr"], "pr.csv": ["recall", "precision"],
             "calibration.csv": ["mean_predicted", "fraction_positive"],
             "confusion.csv": ["actual", "predicted"]}

_KINDS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: ``Task(kind, ...)``, :meth:`Task.of` and :meth:`Task.from_card` now
    build ``cls`` for ``cls.KIND``."""
    if not cls.KIND:
        raise ValueError(f"{cls.__name__} has no KIND: name the task it implements")
    _KINDS[cls.KIND] = cls
    return cls


def kinds() -> tuple[str, ...]:
    """Every registered task name, in registration order."""
    return tuple(_KINDS)


def task_class(kind: str) -> type[Task]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown task {kind!r}: tarn knows {', '.join(_KINDS)}") from None


def figure_names() -> tuple[str, ...]:
    """Every task's quality figures, in a stable order (a version logs its own task's as
    ``test_<m>``)."""
    return tuple(dict.fromkeys(m for cls in _KINDS.values() for m in cls.METRICS))


def proba_column(i: int) -> str:
    """The log column of the probability of class index ``i`` (multiclass)."""
    return f"{PROBA}_{i}"


@dataclass(frozen=True)
class Task:
    """One task: ``Task(kind, classes, threshold, target)`` builds the registered class for
    ``kind``; the class attributes below are what each task declares."""

    kind: str  # the registered name: "binary" | "multiclass" | "regression" | ...
    classes: tuple[str, ...] = field(default=())  # class names by index (classification)
    threshold: float = 0.5  # binary: probability at or above which a row is class 1
    target: str = "target"

    KIND: ClassVar[str] = ""
    CLASSIFICATION: ClassVar[bool] = False
    DEFAULT_CLASSES: ClassVar[tuple[str, ...]] = ()  # a card without classes (old versions)
    LOSS: ClassVar[str] = ""  # the validation loss tuning minimizes (reported as val_<loss>)
    EVAL_METRIC: ClassVar[str] = ""  # XGBoost's name for LOSS (the key of evals_result())
    OBJECTIVE: ClassVar[str] = ""  # XGBoost's objective
    # quality figures the task reports (and may gate on); the first is the loss
    METRICS: ClassVar[tuple[str, ...]] = ()
    HIGHER_IS_BETTER: ClassVar[frozenset[str]] = frozenset()  # of METRICS; the others: lower
    PREDICT_FN: ClassVar[str] = "predict"  # the pyfunc method MLflow serves
    REPORT_FIGURES: ClassVar[tuple[str, ...]] = ()  # `tarn report`'s test figures
    HTML_QUALITY: ClassVar[tuple[str, ...]] = ()  # quality rows of the evaluation page
    HTML_GROUPS: ClassVar[tuple[tuple[str, str], ...]] = ()  # per-group (figure, heading)
    TRIAL_FIGURES: ClassVar[dict[str, str]] = {}  # a trial's extra figures: name -> metric
    COST_FIGURES: ClassVar[dict[str, str]] = {}  # mitigation's extra costs: name -> metric
    GAP_MEANING: ClassVar[str] = ""  # the fairness gap, in words (evaluation page)
    GAP_MEASURE: ClassVar[str] = ""  # the fairness gap, in a gate's reason
    GAP_NAME: ClassVar[str] = ""  # the fairness gap, short (mitigation sentences)
    # `tarn report`'s fairness columns: (evaluate.json figure after "<feature>_", heading)
    REPORT_FAIRNESS: ClassVar[tuple[tuple[str, str], ...]] = ()
    PARITY: ClassVar[str] = "absolute"  # ONNX parity: absolute or relative to the spread
    # the ONNX graph's outputs as the bundle's metadata names them (edge/runner.py reads them)
    ONNX_OUTPUTS: ClassVar[dict[str, str]] = {}
    ONNX_OPTIONS: ClassVar[dict | None] = None  # skl2onnx options for the final estimator

    def __new__(cls, kind: str | None = None, *args, **kwargs):
        if cls is Task and kind is not None:
            cls = task_class(str(kind))
        return object.__new__(cls)

    def __post_init__(self) -> None:
        if self.KIND and self.kind != self.KIND:
            raise ValueError(f"{type(self).__name__} is the {self.KIND!r} task, not "
                             f"{self.kind!r}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def of(cls, schema: SchemaConfig, threshold: float = 0.5) -> Task:
        return Task(schema.task, tuple(schema.classes), float(threshold), schema.target.name)

    def card(self) -> dict:
        """What a loaded model needs to know about its own predictions (MLmodel metadata)."""
        return {"task": self.kind, "classes": list(self.classes), "threshold": self.threshold,
                "target": self.target}

    @classmethod
    def from_card(cls, card: dict | None) -> Task:
        """The task a model was trained for; a card without one is a binary model (every
        version before tasks existed)."""
        card = card or {}
        kind = str(card.get("task") or "binary")
        if kind not in _KINDS:
            raise ValueError(f"unknown task {kind!r} in the model's metadata")
        classes = tuple(str(c) for c in card.get("classes") or _KINDS[kind].DEFAULT_CLASSES)
        return Task(kind, classes, float(card.get("threshold", 0.5)),
                    str(card.get("target") or "target"))

    # ------------------------------------------------------------------ facts
    @property
    def classification(self) -> bool:
        return self.CLASSIFICATION

    @property
    def decision_threshold(self) -> float | None:
        """The score at or above which a row is class 1 (None: the task has no threshold)."""
        return None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def loss(self) -> str:
        return self.LOSS

    @property
    def eval_metric(self) -> str:
        return self.EVAL_METRIC

    @property
    def objective(self) -> str:
        return self.OBJECTIVE

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.METRICS

    @property
    def primary(self) -> str:
        """The default gate metric: the task's loss."""
        return self.METRICS[0]

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        return any(metric in cls.HIGHER_IS_BETTER for cls in _KINDS.values())

    @classmethod
    def gate_metric(cls, metric: str) -> str:
        """``metric`` (``promote.metric``), or the task's loss when it is "" or names another
        task's metric."""
        return metric if metric in cls.METRICS else cls.METRICS[0]

    def compatible(self, other: Task) -> str:
        """Why a version of this task cannot answer ``other``'s clients the same way ("" =
        it can): the task itself; classification also its classes."""
        if self.kind != other.kind:
            return (f"task {self.kind}, the champion's {other.kind}: responses change shape "
                    "and no metric compares the two")
        return ""

    # ------------------------------------------------------------------ models
    def estimator(self, **params):
        """An unfitted XGBoost estimator for this task."""
        raise NotImplementedError

    def dask_estimator(self, dxgb, **params):
        """The distributed XGBoost estimator (``dxgb`` is ``xgboost.dask``)."""
        raise NotImplementedError

    def reference_estimator(self, seed: int):
        """scikit-learn's HistGradientBoosting with its defaults, for this task."""
        raise NotImplementedError

    def scores(self, model, X) -> np.ndarray:
        """The model's scores for ``X``: binary, the probability of class 1 ``(n,)``;
        multiclass, one probability per class ``(n, K)``; regression, the value ``(n,)``."""
        return np.asarray(model.predict(X), dtype=np.float64)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """Labels (class indexes) from scores; for a value the values themselves."""
        return np.asarray(scores).astype(np.float64)

    def label_names(self, labels: np.ndarray) -> list[str]:
        return [self.classes[int(i)] for i in labels]

    def from_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Scores from one column per score (validation files, the prediction log)."""
        return np.asarray(matrix, dtype=np.float64)[:, 0]

    def missing_classes(self, y: np.ndarray) -> list[str]:
        """Classes the model knows that ``y`` lacks, where boosting cannot continue without
        them ([] = it can)."""
        return []

    def labels_of(self, values) -> np.ndarray:
        """Target values (class indexes or numbers) as the array the metrics read."""
        return np.asarray(values).astype(np.int64 if self.CLASSIFICATION else np.float64)

    # ------------------------------------------------------------------ figures
    def metric(self, name: str, y: np.ndarray, scores: np.ndarray) -> float:
        """One quality figure by name (one of :attr:`METRICS`)."""
        from sklearn import metrics as skm

        y = np.asarray(y)
        labels = list(range(max(2, self.n_classes)))
        if name == "logloss":
            return float(skm.log_loss(y, scores, labels=labels))
        if name == "roc_auc":
            return float(skm.roc_auc_score(y, scores))
        if name == "accuracy":
            return float(skm.accuracy_score(y, self.decide(scores)))
        if name == "f1_macro":
            return float(skm.f1_score(y, self.decide(scores), average="macro", labels=labels,
                                      zero_division=0))
        if name == "rmse":
            return float(np.sqrt(skm.mean_squared_error(y, scores)))
        if name == "mae":
            return float(skm.mean_absolute_error(y, scores))
        if name == "r2":
            return float(skm.r2_score(y, scores))
        raise ValueError(f"unknown metric {name!r} for a {self.kind} task")

    def quality(self, y: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict:
        """Pure: the quality figures of one model on labelled rows."""
        y = np.asarray(y)
        out = {m: self.metric(m, y, scores) for m in self.METRICS}
        out.update(self.extra_quality(y, scores, bins))
        out["rows"] = int(len(y))
        return out

    def measurable(self, y) -> bool:
        """Whether the quality figures can be computed on these labels."""
        return True

    def extra_quality(self, y: np.ndarray, scores: np.ndarray, bins: int) -> dict:
        """The task's figures besides :attr:`METRICS` (calibration, per class, means)."""
        return {}

    def confusion(self, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Counts: rows = true class, columns = predicted class."""
        from sklearn import metrics as skm

        return skm.confusion_matrix(y, self.decide(scores),
                                    labels=list(range(max(2, self.n_classes))))

    def fairness(self, y: np.ndarray, scores: np.ndarray, frame: pd.DataFrame,
                 features: list[str], min_group_rows: int = 1) -> dict:
        """Per sensitive feature: per-group figures (fairlearn's MetricFrame) and ``gap``, the
        one number the fairness gate reads (see ``promote.max_demographic_parity_difference``;
        :attr:`GAP_MEANING` says what it measures for the task).

        The gap is taken over the groups with at least ``min_group_rows`` rows
        (``bias.min_group_rows``): a group of 3 rows has a selection rate of 0, 1/3, 2/3 or 1
        by chance alone, and would decide the gate. Smaller groups are still shown, and listed
        under ``small_groups``; the fairlearn differences beside the gap cover every group.
        With fewer than two groups that large the gap is None: not measurable on these rows.
        """
        y = np.asarray(y)
        out: dict = {}
        for feat in features:
            groups = group_values(frame[feat])
            out[feat], mf = self.group_fairness(y, scores, groups, min_group_rows)
            out[feat]["small_groups"] = {str(g): int(n) for g, n in mf.by_group["count"].items()
                                         if n < min_group_rows}
            out[feat]["min_group_rows"] = int(min_group_rows)
        return out

    def group_fairness(self, y: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                       min_rows: int) -> tuple[dict, object]:
        """One feature's fairness figures (with ``gap`` and ``groups``) and its MetricFrame
        (with a ``count`` column)."""
        raise NotImplementedError

    def mitigation_costs(self, with_m: dict, without_m: dict) -> dict:
        """Mitigation's cost beyond the loss: :attr:`COST_FIGURES` (without minus with,
        positive = mitigation cost quality)."""
        return {name: without_m[m] - with_m[m] for name, m in self.COST_FIGURES.items()}

    def fairness_changes(self, feat: str, fa: dict, fb: dict) -> dict:
        """Mitigation's effect on a feature's figures beyond the gap (with minus without)."""
        return {}

    # ------------------------------------------------------------------ data bias
    # the target itself across groups (prepare's bias report, tarn.core.bias), before a model
    def target_figures(self, y: pd.Series, w: pd.Series) -> dict:
        """What the target looks like in one group of rows (weights ``w``)."""
        raise NotImplementedError

    def target_metrics(self) -> tuple[dict, dict]:
        """fairlearn metrics over the target per group: (unweighted, weighted) by name."""
        raise NotImplementedError

    def group_target_figures(self, f: pd.Series) -> dict:
        """One group's :meth:`target_figures` from its :meth:`target_metrics` row."""
        raise NotImplementedError

    def compare_to_reference(self, table: pd.DataFrame, at_ref: pd.Series,
                             target: pd.Series) -> None:
        """Each group against the reference group, as a column of ``table``."""
        raise NotImplementedError

    def data_headline(self, h: pd.DataFrame, measurable: bool, overall: dict,
                      four_fifths: float) -> dict:
        """The headline figures over the large groups ``h``, with ``gap``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ plots
    def plots(self, y: np.ndarray, scores: np.ndarray, bins: int, out: Path) -> None:
        """Every file of :data:`DVC_PLOTS` (header only where a curve does not apply), the
        task's own files beside them, and ``evaluation.png``."""
        import pandas as pd

        for name, cols in DVC_PLOTS.items():
            pd.DataFrame(columns=cols).to_csv(out / name, index=False)
        self.task_plots(y, scores, bins, out)

    def task_plots(self, y: np.ndarray, scores: np.ndarray, bins: int, out: Path) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ serving
    def predict_rows(self, scores: np.ndarray) -> list[dict]:
        """One ``/predict`` row per score."""
        return [{"prediction": v} for v in np.asarray(scores, dtype=np.float64).tolist()]

    def invocations_predictions(self, scores: np.ndarray) -> list | np.ndarray:
        """The ``predictions`` of an ``/invocations`` answer, as ``mlflow models serve``
        answers for :attr:`PREDICT_FN` (a list, or an array written as nested lists)."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores.tolist() if len(scores) <= LIST_ROWS else scores

    def log_columns(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """Pure: one request's scores as the prediction log's columns."""
        return {PREDICTION: np.asarray(scores, dtype=np.float64)}

    def log_score_columns(self) -> list[str]:
        """The log columns :meth:`logged_scores` reads the scores back from."""
        return [PREDICTION]

    def logged_scores(self, log: pd.DataFrame) -> np.ndarray | None:
        """The scores the server logged with each row, or None when the log lacks them."""
        names = self.log_score_columns()
        if any(n not in log.columns for n in names):
            return None
        return self.from_matrix(log[names].to_numpy(dtype=np.float64))

    def drift_columns(self, scores: np.ndarray) -> tuple[dict[str, np.ndarray],
                                                         tuple[str, ...], tuple[str, ...]]:
        """Pure: the model outputs monitoring watches for drift, as (columns, numeric names,
        categorical names)."""
        cols = {f"{PREDICTED}_value": np.asarray(scores, dtype=np.float64)}
        return cols, tuple(cols), ()

    def evidently_columns(self, scores: np.ndarray) -> dict:
        """The columns an Evidently quality report reads beside the features and the target
        (:mod:`tarn.core.evidently_reports`)."""
        return {PREDICTION: np.asarray(scores, dtype=np.float64)}

    def evidently_roles(self, target: str) -> dict:
        """Evidently's ``DataDefinition`` keywords naming the target and the model outputs."""
        from evidently import Regression

        return {"regression": [Regression(target=target, prediction=PREDICTION)]}

    def evidently_frame(self, data: pd.DataFrame, source: pd.DataFrame,
                        target: str) -> pd.DataFrame:
        """The report's rows (``data``, picked from ``source``) as Evidently matches them
        (as they are, but for classes)."""
        return data

    def explain_outputs(self) -> tuple[str, ...]:
        """What each explained raw score is the score of."""
        return (self.target,)

    def explain_scale(self) -> str:
        """What an explained raw score is, in words (shown beside the numbers)."""
        return "the predicted value"

    def parity_labels(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether two sets of scores give the same labels (ONNX parity)."""
        return bool(np.array_equal(self.decide(a), self.decide(b)))

    def parity_scale(self, python_scores: np.ndarray) -> float:
        """What an absolute score difference is divided by before the parity tolerance."""
        return 1.0


def rate_headline(rates: dict, h: pd.DataFrame, measurable: bool,
                  four_fifths: float) -> dict:
    """Data bias of labels: per class (or the positive label) its rate per large group;
    disparate impact (min / max) and statistical parity difference (max - min), the gap."""
    out: dict = {}
    out["disparate_impact_min"] = float(min(
        (r.min() / r.max() if r.max() > 0 else np.nan)
        for r in rates.values())) if measurable else None
    out["statistical_parity_difference"] = float(max(
        r.max() - r.min() for r in rates.values())) if measurable else None
    out["gap"] = out["statistical_parity_difference"]
    out["passes_four_fifths"] = bool(
        (h["disparate_impact"].dropna() >= four_fifths).all()) if measurable else None
    return out


def group_values(col: pd.Series) -> np.ndarray:
    """A sensitive column as group names, missing values as their own group."""
    return col.astype(object).where(col.notna(), MISSING_GROUP).to_numpy()


def spread(mf, columns: list[str], min_rows: int) -> float | None:
    """The largest (max - min over groups) of ``columns``, over groups of ``min_rows`` or
    more rows; None when fewer than two groups are that large (not measurable)."""
    big = mf.by_group[mf.by_group["count"] >= min_rows]
    if len(big) < 2:
        return None
    return float(max(big[c].max() - big[c].min() for c in columns))


def by_group(mf) -> dict:
    return {str(g): {k: float(v) for k, v in row.items()} for g, row in mf.by_group.iterrows()}


def pyplot():
    """matplotlib's pyplot, after :mod:`tarn.core.html_report` chose the offline backend."""
    from tarn.core import html_report

    return html_report.plt


def save_figure(fig, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / "evaluation.png", dpi=110)
    plt.close(fig)


def confusion_axes(ax, cm: np.ndarray, names: list[str]) -> None:
    from tarn.core import html_report as html

    ax.imshow(cm, cmap="Blues")
    html.annotate_counts(ax, cm)  # white on the dark cells: the largest count stays readable
    ticks = list(range(len(names)))
    ax.set(title="Confusion matrix", xlabel="predicted", ylabel="actual", xticks=ticks,
           yticks=ticks)
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_yticklabels(names)


def calibration_curve(y: np.ndarray, proba: np.ndarray, bins: int) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    """(fraction of positives, mean predicted) per non-empty uniform bin."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    frac, mean = [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            frac.append(y[m].mean())
            mean.append(proba[m].mean())
    return np.array(frac), np.array(mean)
