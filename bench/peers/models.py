"""The peers, fitted on tarn's own prepared splits and scored with tarn's own figures.

X and y come from ``tarn.core.catalog.load_split`` (the reader every tarn stage uses), so the
features are the contract's columns minus ``prepare.exclude_features``, typed as tarn's model
sees them; the figures are ``tarn.core.task.Task.metric``, the ones `tarn evaluate` reports.
Text and category columns become pandas ``category`` columns whose categories are the values
seen in train + valid (a test value never seen is missing, as an unknown category is for
tarn's one-hot encoder). Per model:

- HistGradientBoosting (scikit-learn defaults), fitted on train + valid: a column of at most
  255 categories (HGB's limit, ``max_bins``) stays ``category`` and HGB splits on it natively
  (``categorical_features="from_dtype"``); a larger one becomes its ordinal codes as numbers
  (missing stays missing), since HGB refuses more categories than bins.
- XGBoost defaults (``XGBClassifier()`` / ``XGBRegressor()``, ``tree_method="hist"``), fitted
  on train + valid, with ``enable_categorical=True`` on the same ``category`` columns for every
  dataset: native categorical splits work for any number of categories (one-hot would make a
  6,000-value column 6,000 dense columns), and it is XGBoost's own documented way.
- FLAML ``AutoML`` with its default estimator list, holdout on tarn's valid split
  (``X_val``/``y_val``), metric the task's loss (``log_loss``/``rmse``), and tarn's tune + train
  wall-clock seconds as ``time_budget``; FLAML refits its best model on train + valid
  (``retrain_full``, its default), as tarn's train stage refits on train + valid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import load_params
from tarn.core.catalog import SPLITS, load_split
from tarn.core.task import Task

HGB_MAX_CATEGORIES = 255
MAIN_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "r2"}
FLAML_METRIC = {"logloss": "log_loss", "rmse": "rmse"}
PEERS = ("hgb", "xgb", "flaml")


@dataclass(frozen=True)
class Splits:
    task: Task
    X: dict[str, pd.DataFrame]  # train, valid, test: categoricals as pandas category
    y: dict[str, np.ndarray]

    def fit_rows(self) -> tuple[pd.DataFrame, np.ndarray]:
        """train + valid, the rows tarn's final model is refitted on."""
        return (pd.concat([self.X["train"], self.X["valid"]], ignore_index=True),
                np.concatenate([self.y["train"], self.y["valid"]]))


def load(root: Path) -> Splits:
    """The prepared splits of a tarn project, as the peers get them."""
    params = load_params(root / "params.yaml", env={})
    split = {name: load_split(params, root, name) for name in SPLITS}
    X = as_categories({n: s.X.reset_index(drop=True) for n, s in split.items()})
    return Splits(Task.of(params.schema), X, {n: s.y for n, s in split.items()})


def as_categories(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Text columns as ``category``, one category list per column from train + valid."""
    seen = pd.concat([frames["train"], frames["valid"]])
    out = {n: f.copy() for n, f in frames.items()}
    for col in seen.columns:
        if pd.api.types.is_numeric_dtype(seen[col]):
            continue
        cats = sorted(seen[col].dropna().astype(str).unique())
        for f in out.values():
            values = f[col].astype(object).where(f[col].notna(), None)
            f[col] = pd.Categorical(values.map(lambda v: None if v is None else str(v)),
                                    categories=cats)
    return out


def hgb_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Columns of more than 255 categories as ordinal codes (missing: NaN) for HGB."""
    X = X.copy()
    for col in X.columns:
        if isinstance(X[col].dtype, pd.CategoricalDtype) and \
                len(X[col].cat.categories) > HGB_MAX_CATEGORIES:
            X[col] = X[col].cat.codes.astype(np.float64).replace(-1, np.nan)
    return X


def figures(task: Task, y: np.ndarray, scores: np.ndarray) -> dict:
    """Test loss and the task's main figure, as tarn computes them."""
    main = MAIN_METRIC[task.kind]
    return {"loss_name": task.loss, "loss": task.metric(task.loss, y, scores),
            "metric_name": main, "metric": task.metric(main, y, scores)}


def check_classes(task: Task, model) -> None:
    """predict_proba's columns must be tarn's class indexes 0..K-1, in order."""
    if task.classification:
        got = [int(c) for c in model.classes_]
        if got != list(range(max(2, task.n_classes))):
            raise SystemExit(f"the model learned classes {got}: some class is missing from "
                             "train + valid, its probabilities would not line up")


def fit_hgb(s: Splits, budget: float) -> tuple[object, pd.DataFrame, dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X, y = s.fit_rows()
    cls = HistGradientBoostingRegressor if s.task.kind == "regression" else \
        HistGradientBoostingClassifier
    model = cls(categorical_features="from_dtype").fit(hgb_frame(X), y)
    return model, hgb_frame(s.X["test"]), {"n_iter": int(model.n_iter_)}


def fit_xgb(s: Splits, budget: float) -> tuple[object, pd.DataFrame, dict]:
    from xgboost import XGBClassifier, XGBRegressor

    X, y = s.fit_rows()
    cls = XGBRegressor if s.task.kind == "regression" else XGBClassifier
    model = cls(tree_method="hist", enable_categorical=True).fit(X, y)
    return model, s.X["test"], {"n_estimators": model.get_params()["n_estimators"] or 100}


def fit_flaml(s: Splits, budget: float) -> tuple[object, pd.DataFrame, dict]:
    from flaml import AutoML

    automl = AutoML()
    automl.fit(s.X["train"], s.y["train"], X_val=s.X["valid"], y_val=s.y["valid"],
               task="regression" if s.task.kind == "regression" else "classification",
               metric=FLAML_METRIC[s.task.loss], time_budget=max(1.0, budget), verbose=0)
    return automl, s.X["test"], {"best_estimator": automl.best_estimator,
                                 "time_budget_s": round(budget, 1)}


FIT = {"hgb": fit_hgb, "xgb": fit_xgb, "flaml": fit_flaml}


def run_peer(name: str, root: Path, budget: float) -> dict:
    """Fit one peer on the project's splits (timed) and score it on the test split."""
    s = load(root)
    t0 = time.perf_counter()
    model, X_test, extra = FIT[name](s, budget)
    fit_s = time.perf_counter() - t0
    check_classes(s.task, model)
    return {"fit_s": fit_s, **figures(s.task, s.y["test"], s.task.scores(model, X_test)),
            **extra}


def score_tarn(root: Path) -> tuple[dict, str]:
    """tarn's registered model (the train stage's copy in models/model/, loaded the way tarn
    loads it) on the test split, and its registry version."""
    from tarn.core.catalog import MODEL_DIR, load_train_info
    from tarn.core.model import load_local, task_of

    params = load_params(root / "params.yaml", env={})
    model_dir = root / params.paths.models / MODEL_DIR
    task = task_of(model_dir)
    test = load_split(params, root, "test")
    scores = task.scores(load_local(model_dir), test.X)
    return figures(task, test.y, scores), str(load_train_info(params, root)["version"])
