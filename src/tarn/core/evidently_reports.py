"""Every Evidently call in one module (its API broke in 0.7; the next break is one file).

Reports: model quality per task (binary or multiclass classification, regression), quality per
sensitive group (one report per segment: Evidently's ``GroupBy`` returns overall figures for
classification metrics), and data drift between a reference and a current dataset. Each is
saved as self-contained HTML + JSON.

Columns a quality report reads beside the features and the target: binary, ``prediction``
(0/1) and ``proba`` (P(class 1)); multiclass, ``prediction`` (class index) and ``proba_<i>``
per class (:func:`model_columns`); regression, ``prediction`` (the value). Each task's class
says its columns and Evidently roles (``Task.evidently_columns``, ``Task.evidently_roles``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from tarn.config import PrepareConfig, SchemaConfig
from tarn.core.features import feature_columns
from tarn.core.task import Task
from tarn.core.tasks.base import PREDICTION, PROBA  # the column names the tasks write


def model_columns(task: Task, scores) -> dict:
    """The columns a quality report reads (see the module docstring), from a task's scores."""
    return task.evidently_columns(scores)


def _definition(schema: SchemaConfig, cfg: PrepareConfig, df: pd.DataFrame,
                task: Task | None):
    from evidently import DataDefinition

    num, cat = feature_columns(schema, cfg)
    kwargs: dict = {"numerical_columns": [c for c in num if c in df],
                    "categorical_columns": [c for c in cat if c in df]}
    if task is not None:  # else data only
        kwargs.update(task.evidently_roles(schema.target.name))
    return DataDefinition(**kwargs)


def _model_frame(data: pd.DataFrame, df: pd.DataFrame, schema: SchemaConfig,
                 task: Task | None) -> pd.DataFrame:
    """The rows as Evidently matches them for the task (multiclass: by class name)."""
    return data if task is None else task.evidently_frame(data, df, schema.target.name)


def _dataset(df: pd.DataFrame, schema: SchemaConfig, cfg: PrepareConfig, task: Task | None,
             extra_numeric: tuple[str, ...] = (), extra_categorical: tuple[str, ...] = ()):
    from evidently import DataDefinition, Dataset

    num, cat = feature_columns(schema, cfg)
    if extra_numeric or extra_categorical:  # drift of model outputs: plain columns, no
        num, cat = [*num, *extra_numeric], [*cat, *extra_categorical]  # classification role
        keep = [c for c in [*num, *cat] if c in df]
        data = df[keep].copy()
        for c in num:
            if c in data:
                data[c] = data[c].astype("float64")
        return Dataset.from_pandas(data, data_definition=DataDefinition(
            numerical_columns=[c for c in num if c in data],
            categorical_columns=[c for c in cat if c in data]))
    keep = [c for c in [*num, *cat, schema.target.name, PREDICTION, PROBA] if c in df]
    data = df[keep].copy()
    for c in num:  # Evidently wants plain numpy dtypes, not pandas' nullable ones
        if c in data:
            data[c] = data[c].astype("float64")
    data = _model_frame(data, df, schema, task)
    return Dataset.from_pandas(data, data_definition=_definition(schema, cfg, data, task))


def save(snapshot, out: Path, name: str) -> dict:
    """Write ``name``.html and ``name``.json; return the JSON as a dict."""
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / f"{name}.html"))
    data = json.loads(snapshot.json())
    (out / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    return data


def quality(current: pd.DataFrame, schema: SchemaConfig, cfg: PrepareConfig, task: Task,
            reference: pd.DataFrame | None = None):
    """Model quality for the task (Evidently's classification or regression preset);
    ``current`` holds the target and the :func:`model_columns`."""
    from evidently import Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    cur = _dataset(current, schema, cfg, task)
    ref = None if reference is None else _dataset(reference, schema, cfg, task)
    preset = ClassificationPreset() if task.classification else RegressionPreset()
    return Report([preset]).run(current_data=cur, reference_data=ref)


def classification(current: pd.DataFrame, schema: SchemaConfig, cfg: PrepareConfig,
                   reference: pd.DataFrame | None = None):
    """Binary classification quality; ``current`` holds the target, ``prediction``, ``proba``."""
    return quality(current, schema, cfg, Task("binary", ("0", "1")), reference)


def drift(current: pd.DataFrame, reference: pd.DataFrame, schema: SchemaConfig,
          cfg: PrepareConfig, extra_numeric: tuple[str, ...] = (), methods: dict | None = None,
          extra_categorical: tuple[str, ...] = (), drift_share: float = 0.5,
          per_column_threshold: dict[str, float] | None = None):
    """Data drift of every model feature (and of model outputs: ``extra_numeric`` columns
    such as a predicted probability or value, ``extra_categorical`` ones such as the predicted
    class) between reference and current. ``methods`` takes DataDriftPreset's
    num_method / cat_method / num_threshold / cat_threshold; by default Evidently picks.

    The page's headline ("Dataset Drift is detected") counts the features only, against
    ``drift_share``, with ``per_column_threshold`` raising a column's threshold (tarn's noise
    floor): so it counts exactly what tarn's drift share counts. Model outputs get their own
    ValueDrift metrics below it.

    Evidently draws a correlation heatmap of the current numeric columns on the page
    (``np.corrcoef``): a column constant in a small batch has no correlation, and NumPy warns
    "invalid value encountered in divide" from inside Evidently. That one call is run with
    RuntimeWarnings silenced (tarn never runs it on fewer than ``monitor.min_rows`` rows)."""
    import warnings

    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    m = dict(methods or {})
    extra = (extra_numeric, extra_categorical)
    cur = _dataset(current, schema, cfg, None, *extra)
    ref = _dataset(reference, schema, cfg, None, *extra)
    outputs = [*extra_numeric, *extra_categorical]
    items: list = []
    if outputs:
        num, cat = feature_columns(schema, cfg)
        features = [c for c in [*num, *cat] if c in current and c in reference]
        thresholds = dict(per_column_threshold or {})
        items.append(DataDriftPreset(
            columns=features, drift_share=drift_share,
            per_column_threshold={c: t for c, t in thresholds.items() if c in features}
            or None, **m))
        for col in outputs:
            numeric = col in extra_numeric
            items.append(ValueDrift(
                column=col, method=m.get("num_method" if numeric else "cat_method"),
                threshold=thresholds.get(col, m.get("num_threshold" if numeric
                                                    else "cat_threshold"))))
    else:
        items.append(DataDriftPreset(drift_share=drift_share,
                                     per_column_threshold=per_column_threshold, **m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report(items).run(current_data=cur, reference_data=ref)


def column_drift(current: pd.DataFrame, reference: pd.DataFrame, schema: SchemaConfig,
                 cfg: PrepareConfig, extra_numeric: tuple[str, ...], methods: dict,
                 extra_categorical: tuple[str, ...] = ()) -> dict:
    """The per-column drift tests of :func:`drift` alone (Evidently's ValueDrift, the same
    method and threshold per column kind), as report JSON for :func:`drifted_columns`: no
    page, so a figure per lake batch costs the tests only."""
    from evidently import Report
    from evidently.metrics import ValueDrift

    num, cat = feature_columns(schema, cfg)
    numeric = [c for c in [*num, *extra_numeric] if c in current and c in reference]
    categorical = [c for c in [*cat, *extra_categorical] if c in current and c in reference]
    items = [ValueDrift(column=c, method=methods["num_method"],
                        threshold=methods["num_threshold"]) for c in numeric]
    items += [ValueDrift(column=c, method=methods["cat_method"],
                         threshold=methods["cat_threshold"]) for c in categorical]
    snap = Report(items).run(
        current_data=_dataset(current, schema, cfg, None, extra_numeric, extra_categorical),
        reference_data=_dataset(reference, schema, cfg, None, extra_numeric, extra_categorical))
    return json.loads(snap.json())


def headline(html: Path, title: str, lines: list[str]) -> None:
    """Put tarn's own verdict at the top of a saved Evidently page, above Evidently's headline,
    so a reader of the page sees what tarn decided and why (one place states the decision)."""
    import html as h

    text = html.read_text(encoding="utf-8")
    body = "".join(f"<li>{h.escape(x)}</li>" for x in lines)
    banner = (f'<div id="tarn-verdict" style="font-family:sans-serif;margin:16px;'
              f'padding:12px 16px;border:2px solid #333;border-radius:6px;background:#fff8e1">'
              f'<div style="font-size:20px;font-weight:bold">{h.escape(title)}</div>'
              f'<ul style="margin:8px 0 0 0">{body}</ul></div>')
    text = re.sub(r'<div id="tarn-verdict".*?</ul></div>', "", text, count=1, flags=re.S)
    at = text.find("<body>")
    at = at + len("<body>") if at >= 0 else 0
    html.write_text(text[:at] + banner + text[at:], encoding="utf-8")


def summary(current: pd.DataFrame, reference: pd.DataFrame, schema: SchemaConfig,
            cfg: PrepareConfig):
    """Data quality summary (missing values, ranges, categories) of current vs reference."""
    from evidently import Report
    from evidently.presets import DataSummaryPreset

    return Report([DataSummaryPreset()]).run(
        current_data=_dataset(current, schema, cfg, None),
        reference_data=_dataset(reference, schema, cfg, None))


def drifted_columns(report_json: dict) -> dict[str, dict]:
    """Per column: the drift score, the method, its threshold and whether it drifted.

    Evidently picks the test per column (p-values for small samples, distances for large);
    a p-value drifts when under the threshold, a distance when at or over it."""
    out = {}
    for m in report_json.get("metrics", []):
        cfgm = m.get("config", {})
        if not str(cfgm.get("type", "")).endswith(":ValueDrift"):
            continue
        method = str(cfgm.get("method", ""))
        score, thr = float(m["value"]), float(cfgm.get("threshold", 0.05))
        is_p = "p_value" in method.replace("-", "_").lower()
        out[cfgm["column"]] = {"score": score, "method": method, "threshold": thr,
                               "drifted": score < thr if is_p else score >= thr}
    return out


# drift methods whose score is a distance (drift when at or over the threshold); the others
# return p-values, which already account for the sample size
DISTANCES = frozenset({"wasserstein", "jensenshannon", "hellinger", "kl_div", "psi", "ed"})


def noise_floor(reference: pd.Series, rows: int, numeric: bool, method: str,
                threshold: float, draws: int = 30, quantile: float = 0.95,
                seed: int = 0) -> float:
    """The distance ``method`` gives two independent samples of one distribution, sized as
    the reference and as ``rows``: its ``quantile`` over ``draws`` bootstrap draws (both
    resampled from the reference, with replacement), i.e. what sampling noise alone scores.

    A distance threshold such as Wasserstein 0.1 is meant for thousands of rows: on 80 rows
    of the very same distribution the normed Wasserstein distance is often above 0.1, and
    a small dataset's every new batch would look drifted. Evidently's own test function
    computes the draws, so the floor is in exactly the report's units."""
    import numpy as np
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Numerical if numeric else ColumnType.Categorical
    test = get_registered_stattest(method, kind)
    ref = reference.dropna()
    if ref.empty or rows < 1:
        return 0.0
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(draws):
        base = ref.iloc[rng.integers(0, len(ref), len(ref))].reset_index(drop=True)
        sample = ref.iloc[rng.integers(0, len(ref), rows)].reset_index(drop=True)
        scores.append(float(test(base, sample, kind, threshold).drift_score))
    return float(np.quantile(scores, quantile))


def per_group(current: pd.DataFrame, feature: str, schema: SchemaConfig, cfg: PrepareConfig,
              out: Path, min_rows: int = 30, task: Task | None = None) -> dict[str, Path]:
    """One quality report per group of ``feature`` (groups under ``min_rows`` skipped: their
    figures would be noise; a binary task unless ``task`` says otherwise)."""
    task = task or Task("binary", ("0", "1"))
    written = {}
    for group, part in current.groupby(feature, dropna=False):
        if len(part) < min_rows or part[schema.target.name].nunique() < 2:
            continue
        slug = re.sub(r"[^A-Za-z0-9]+", "-", str(group)).strip("-").lower()
        name = f"quality_{feature}_{slug}"
        save(quality(part, schema, cfg, task), out, name)
        written[str(group)] = out / f"{name}.html"
    return written
