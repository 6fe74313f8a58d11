"""Reweighing reduces the demographic parity difference on data with an injected bias."""

import numpy as np
import pandas as pd

from tarn.config import params_from_dict
from tarn.core import bias
from tarn.core.catalog import SplitData
from tarn.core.features import to_model_frame
from tarn.core.task import Task
from tarn.stages.train import fit_pipeline


def synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n, p=[0.4, 0.6])
    skill = rng.normal(0, 1, n)
    noise = rng.normal(0, 1, n)
    # the injected bias: the label favours M beyond what skill explains
    logit = 1.2 * skill + np.where(sex == "M", 1.0, -1.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"skill": skill, "noise": noise, "sex": sex, "y": y})


PARAMS = params_from_dict({
    "schema": {"target": {"name": "y", "mapping": {"0": 0, "1": 1}}, "sensitive": ["sex"],
               "columns": [{"name": "skill", "dtype": "float"},
                           {"name": "noise", "dtype": "float"},
                           {"name": "sex", "dtype": "category", "categories": ["F", "M"]}]},
    "bias": {"privileged": {"sex": "M"}, "reweighing_features": ["sex"]},
})


def test_reweighing_reduces_demographic_parity_difference():
    train, test = synthetic(6000, 0), synthetic(4000, 1)
    data = SplitData(train, to_model_frame(train, PARAMS.schema, PARAMS.prepare),
                     train["y"].to_numpy(), None)
    w = bias.apply_weights(train, bias.reweighing_table(train, ["sex"], "y"), ["sex"], "y")
    mp = {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1, "n_jobs": 1}
    x_test = to_model_frame(test, PARAMS.schema, PARAMS.prepare)
    dpd = {}
    for name, weight in (("plain", None), ("reweighed", w)):
        pipe = fit_pipeline(data, weight, mp, PARAMS)
        task = Task.of(PARAMS.schema, 0.5)
        dpd[name] = task.fairness(test["y"].to_numpy(), task.scores(pipe, x_test), test,
                                  ["sex"])["sex"]["demographic_parity_difference"]
    assert dpd["plain"] > 0.3  # the injected bias is learned
    assert dpd["reweighed"] < 0.6 * dpd["plain"]  # and reweighing removes much of it
