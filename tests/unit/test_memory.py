"""Memory known before it is spent: the plan lowers parallel fits, then refuses, naming the
widest columns. Pure: no fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder

from tarn.core import memory
from tarn.errors import TarnError

GB = 2**30


def test_fits_at_once_are_lowered_to_what_fits_the_budget():
    p = memory.plan(3_000_000, 600_000, 40, 4, True, 0.5, total=8 * GB)
    assert 1 <= p.parallel < 4
    assert "lowered from 4" in p.describe()
    assert memory.plan(3_000_000, 600_000, 40, 4, True, 0.5, total=64 * GB).parallel == 4


def test_a_matrix_that_cannot_fit_is_refused_naming_the_widest_column():
    X = pd.DataFrame({"city": [f"c{i}" for i in range(50)], "n": np.arange(50)})
    pre = ColumnTransformer([("cat", OneHotEncoder(), ["city"]), ("num", "passthrough", ["n"])],
                            verbose_feature_names_out=False).fit(X)
    p = memory.plan(10_000_000, 0, 51, 1, False, 0.5, total=8 * GB)
    assert p.parallel == 0
    with pytest.raises(TarnError) as e:
        memory.refuse_if_over(p, pre, 10_000_000)
    assert "city (50 columns)" in str(e.value)
    assert "prepare.onehot_max_values" in e.value.hint


def test_the_widest_columns_are_counted_by_their_input():
    X = pd.DataFrame({"a": ["x", "y", "z"], "ab": ["u", "v", "u"]})
    pre = ColumnTransformer([("cat", OneHotEncoder(), ["a", "ab"])],
                            verbose_feature_names_out=False).fit(X)
    assert memory.widest_columns(pre) == [("a", 3), ("ab", 2)]
