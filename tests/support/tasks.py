"""Small non-Adult projects for the other tasks: a multiclass one (sklearn's bundled iris) and a
regression one (sklearn's bundled diabetes), written as raw CSV lake batches, each with a
sensitive feature. No download: both datasets ship inside scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tarn.config import Params
from tests.support.project import SMALL, write_params


def iris_frame() -> pd.DataFrame:
    """Iris (150 rows, 3 classes) twice over with a little noise (300 rows), plus a sensitive
    ``group`` (A/B) that leans towards one class, so there is bias to measure."""
    from sklearn.datasets import load_iris

    d = load_iris(as_frame=True)
    rng = np.random.default_rng(0)
    base = d.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frames = []
    for k in range(2):
        f = base + (rng.normal(0, 0.05, base.shape) if k else 0.0)
        f = f.round(2)
        f["species"] = [str(d.target_names[t]) for t in d.target]
        frames.append(f)
    df = pd.concat(frames, ignore_index=True)
    lean = np.where(df["species"] == "setosa", 0.7, 0.4)
    df["group"] = np.where(rng.random(len(df)) < lean, "A", "B")
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)


def diabetes_frame() -> pd.DataFrame:
    """Diabetes (442 rows, unscaled): disease progression a year on, ``sex`` as a category."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes(as_frame=True, scaled=False)
    df = d.data.copy()
    df["sex"] = df["sex"].map({1.0: "one", 2.0: "two"})
    df["progression"] = d.target
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True)


def _write_lake(lake: Path, df: pd.DataFrame, stem: str) -> None:
    """Two training batches and one test batch (the last fifth)."""
    n = len(df)
    cut = [0, int(n * 0.4), int(n * 0.8), n]
    for i, name in enumerate((f"0001-{stem}-train", f"0002-{stem}-train", f"0003-{stem}-test")):
        (lake / name).mkdir(parents=True)
        df.iloc[cut[i]:cut[i + 1]].to_csv(lake / name / f"{stem}.csv", index=False)


def _num(name: str) -> dict:
    return {"name": name, "dtype": "float"}


def task_params(kind: str, **overrides) -> dict:
    """params.yaml overrides for a ``multiclass`` (iris) or ``regression`` (diabetes) project."""
    if kind == "multiclass":
        schema = {"name": "iris", "task": "multiclass", "sensitive": ["group"],
                  "target": {"name": "species",
                             "mapping": {"setosa": 0, "versicolor": 1, "virginica": 2}},
                  "columns": [*(_num(c) for c in ("sepal_length", "sepal_width",
                                                  "petal_length", "petal_width")),
                              {"name": "group", "dtype": "category", "categories": ["A", "B"]}]}
        privileged = {"group": "A"}
    elif kind == "regression":
        schema = {"name": "diabetes", "task": "regression", "sensitive": ["sex"],
                  "target": {"name": "progression", "min": 0, "max": 1000},
                  "columns": [_num("age"),
                              {"name": "sex", "dtype": "category", "categories": ["one", "two"]},
                              *(_num(c) for c in ("bmi", "bp", "s1", "s2", "s3", "s4", "s5",
                                                  "s6"))]}
        privileged = {"sex": "one"}
    else:
        raise ValueError(kind)
    sens = schema["sensitive"][0]
    return {**SMALL, "schema": schema, "prepare.test_batches": ["*-test*"],
            "bias.privileged": privileged, "bias.reweighing_features": [sens],
            "bias.mitigation": "reweighing", "promote.metric": "",
            # small test splits: the two groups have a few dozen rows each
            "bias.min_group_rows": 5,
            "promote.fairness_features": [sens],
            "mlflow.registered_model": f"tarn-{schema['name']}", **overrides}


def task_project(root: Path, kind: str, **overrides) -> Params:
    """params.yaml and a raw lake for a ``multiclass`` or ``regression`` project (no stage run)."""
    params = write_params(root, task_params(kind, **overrides))
    df = iris_frame() if kind == "multiclass" else diabetes_frame()
    _write_lake(root / "data" / "lake", df, params.schema.name)
    return params
