"""A distance threshold meant for thousands of rows must not call a small same-distribution
batch drifted: the noise floor is what sampling alone scores at that size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tarn.core.evidently_reports import noise_floor


def _score(ref: pd.Series, cur: pd.Series, numeric: bool, method: str) -> float:
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Numerical if numeric else ColumnType.Categorical
    return float(get_registered_stattest(method, kind)(ref, cur, kind, 0.1).drift_score)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=3000),
                         "c": rng.choice(list("xyz"), 3000, p=[0.5, 0.3, 0.2])})


def test_a_small_same_distribution_sample_crosses_the_threshold_but_not_the_floor(reference):
    cur = reference.sample(80, random_state=1)
    score = _score(reference["a"], cur["a"], True, "wasserstein")
    floor = noise_floor(reference["a"], 80, True, "wasserstein", 0.1)
    assert score > 0.1  # Evidently alone would call it drifted
    assert score <= floor


def test_a_real_shift_is_above_the_floor(reference):
    rng = np.random.default_rng(2)
    shifted = pd.Series(rng.normal(loc=0.8, size=80))
    assert _score(reference["a"], shifted, True, "wasserstein") > noise_floor(
        reference["a"], 80, True, "wasserstein", 0.1)
    mix = pd.Series(rng.choice(list("xyz"), 80, p=[0.1, 0.2, 0.7]))
    assert _score(reference["c"], mix, False, "jensenshannon") > noise_floor(
        reference["c"], 80, False, "jensenshannon", 0.1)


def test_the_floor_falls_with_the_sample_size(reference):
    floors = [noise_floor(reference["a"], n, True, "wasserstein", 0.1) for n in (50, 400, 2000)]
    assert floors[0] > floors[1] > floors[2]
    assert floors[2] < 0.1  # at a few thousand rows the threshold itself decides
