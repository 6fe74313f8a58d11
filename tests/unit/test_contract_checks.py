"""The checks `tarn init` runs before anything trains, one by one on small frames (pure
functions, no fits): leakage by single-column scores, identifiers, constants, timestamps,
integer codes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tarn.core import contract_checks as checks

N = 2_000


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _text(values) -> pd.Series:
    return pd.Series([str(v) for v in values], dtype=object)


# ------------------------------------------------------------------------- leakage
def _binary_table(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = _rng(seed)
    y = rng.integers(0, 2, N)
    frame = pd.DataFrame({
        "signal": _text(np.round(y * 0.8 + rng.normal(0, 1, N), 3)),  # a real, weak feature
        "noise": _text(np.round(rng.normal(0, 1, N), 3)),
        "colour": _text(rng.choice(["red", "green", "blue"], N)),
        "leak": _text(np.round(y + rng.normal(0, 0.2, N), 3)),  # the target, noisy
        "row_id": _text(rng.permutation(N)),  # unique: seen in no other fold
    })
    return frame, y.astype(float)


def test_a_noisy_copy_of_the_target_scores_near_perfect_and_is_flagged_alone():
    frame, y = _binary_table()
    scores = checks.single_column_scores(frame, {"signal", "noise", "leak", "row_id"}, y,
                                         "binary")
    assert scores["leak"] >= 0.99
    assert 0.6 < scores["signal"] < 0.8 and abs(scores["noise"] - 0.5) < 0.05
    assert abs(scores["row_id"] - 0.5) < 0.05  # unique values: unseen out of fold
    leaks = checks.leakage(scores, "binary")
    assert list(leaks) == ["leak"]
    assert leaks["leak"].startswith("alone it predicts the target with AUC 0.99") or \
        "AUC 1.000" in leaks["leak"]
    assert "(the best other column, signal: 0.69" in leaks["leak"]


def test_a_label_column_that_gives_the_class_away_is_leakage_in_multiclass():
    rng = _rng(1)
    y = rng.integers(0, 3, N)
    frame = pd.DataFrame({
        "outcome": _text(np.array(["won", "lost", "draw"])[y]),
        "weak": _text(np.round(y * 0.3 + rng.normal(0, 1, N), 2)),
    })
    scores = checks.single_column_scores(frame, {"weak"}, y.astype(float), "multiclass")
    assert scores["outcome"] == 1.0 and scores["weak"] < 0.6
    assert "balanced accuracy 1.000" in checks.leakage(scores, "multiclass", 3)["outcome"]


def test_regression_leak_by_r2_and_one_far_above_the_rest():
    rng = _rng(2)
    y = rng.normal(100, 20, N)
    frame = pd.DataFrame({
        "copy": _text(np.round(y * 1.1 + rng.normal(0, 2, N), 2)),
        "x1": _text(np.round(y + rng.normal(0, 40, N), 2)),
    })
    scores = checks.single_column_scores(frame, {"copy", "x1"}, y, "regression")
    assert scores["copy"] >= 0.95 and scores["x1"] < 0.3
    assert "R2 0.9" in checks.leakage(scores, "regression")["copy"]
    far = checks.leakage({"a": 0.85, "b": 0.3, "c": 0.2}, "regression")
    assert list(far) == ["a"] and "far better than the rest: R2 0.850" in far["a"]
    # strong features side by side (diamonds: carat, x, y, z at R2 ~0.87) are not leakage
    assert checks.leakage({"carat": 0.87, "x": 0.87, "y": 0.88, "z": 0.86}, "regression") == {}


def test_scores_sample_at_most_leak_rows_and_stay_fast():
    import time

    rng = _rng(3)
    n = 300_000
    y = rng.integers(0, 2, n).astype(float)
    frame = pd.DataFrame({f"c{i}": _text(rng.integers(0, 1000, n)) for i in range(10)})
    start = time.perf_counter()
    scores = checks.single_column_scores(frame, set(frame.columns), y, "binary")
    assert time.perf_counter() - start < 5 and len(scores) == 10
    assert len(checks.sample_rows(n)) == checks.LEAK_ROWS


@pytest.mark.parametrize(("values", "target", "task", "needle"), [
    (["1", "0", "1", "0"] * 10, ["yes", "no", "yes", "no"] * 10, "binary",
     "determines the target exactly"),
    (["a", "b", "b", "c"] * 10, ["x", "y", "z", "w"] * 10, "multiclass",
     "one value per target class: a function of the target"),
    ([str(v * 2 + 1) for v in range(40)], [str(v) for v in range(40)], "regression",
     "a monotone function of the target"),
    ([str(v) for v in range(40)], [str(v) for v in range(40)], "regression",
     "equal to the target"),
])
def test_a_function_of_the_target_is_named(values, target, task, needle):
    assert needle in checks.function_of_target(_text(values), _text(target), task)


def test_columns_that_vary_within_a_class_are_not_a_function_of_the_target():
    rng = _rng(4)
    target = _text(rng.choice(["yes", "no"], 200))
    assert checks.function_of_target(_text(rng.integers(0, 5, 200)), target, "binary") is None
    assert checks.function_of_target(_text(["k"] * 200), target, "binary") is None  # constant
    amounts = _text(np.round(rng.normal(0, 1, 200), 3))
    assert checks.function_of_target(amounts, _text(rng.normal(0, 1, 200)),
                                     "regression") is None


# ------------------------------------------------------------------------- identifiers
@pytest.mark.parametrize(("name", "values", "numbers", "needle"), [
    ("ref", [f"r-{i:05d}" for i in range(500)], False, "near-unique text (500 distinct"),
    ("n", list(range(1, 501)), True, "unique integers that increase with the row (1..500)"),
    ("n", list(_rng(5).permutation(500) + 1000), True, "unique integers filling 1,000..1,499"),
    ("customer_id", list(_rng(6).choice(10**9, 500, replace=False)), True,
     "unique integers, named like an identifier"),
    ("account_key", [f"a{i % 300}" for i in range(500)], False, "named like an identifier"),
    ("gene", [f"g{i}" for i in _rng(7).integers(0, 3000, 5000)], False,
     "of the rows in values seen fewer than 20 times"),
])
def test_identifiers_are_named_with_the_reason(name, values, numbers, needle):
    present = _text(values)
    nums = np.asarray(values) if numbers else None
    assert needle in checks.identifier(name, present, nums, integer=numbers)


@pytest.mark.parametrize(("name", "values", "numbers", "integer"), [
    ("income", list(np.round(_rng(8).lognormal(10, 1, 500), 2)), True, False),  # floats
    ("balance", list(_rng(9).choice(10**7, 500, replace=False)), True, True),  # wide, unique
    ("age", list(_rng(10).integers(18, 90, 500)), True, True),
    ("region", list(_rng(11).choice(["n", "s"], 500)), False, False),
    ("team", [f"t{i}" for i in _rng(12).integers(0, 1500, 60_000)], False, False),  # 40 rows
    ("ref", ["a", "b", "c"], False, False),  # too few rows to judge
])
def test_measures_and_categories_are_not_identifiers(name, values, numbers, integer):
    nums = np.asarray(values) if numbers else None
    assert checks.identifier(name, _text(values), nums, integer=integer) is None


# ------------------------------------------------------------------------- constants
def test_constant_and_near_constant_shares_count_missing_as_a_value():
    assert checks.dominant(_text(["2013"] * 100), {""}) == ("2013", 1.0)
    value, share = checks.dominant(_text(["a"] * 996 + ["b"] * 4), {""})
    assert value == "a" and share == pytest.approx(0.996) and share >= checks.NEAR_CONSTANT
    assert checks.dominant(_text([""] * 998 + ["x"] * 2), {""})[0] == checks.MISSING


# ------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize(("values", "first", "last"), [
    (["2013-01-01 05:00:00", "2013-06-30 23:59:59", "2013-03-15 12:00:00"],
     "2013-01-01 05:00:00", "2013-06-30 23:59:59"),
    (["2015-01-02", "2014-12-31", "2015-07-04"], "2014-12-31 00:00:00", "2015-07-04 00:00:00"),
    (["2015-01-02T10:00:00Z", "2015-01-01T09:30:00Z"], "2015-01-01 09:30:00+00:00",
     "2015-01-02 10:00:00+00:00"),
    (["31/12/2014", "01/02/2015", "15/06/2015"], "2014-12-31 00:00:00", "2015-06-15 00:00:00"),
    (["2019-01", "2019-02", "2020-11"], "2019-01-01 00:00:00", "2020-11-01 00:00:00"),
])
def test_timestamps_parse_with_their_range(values, first, last):
    assert checks.timestamps(_text(values * 10)) == (first, last)


@pytest.mark.parametrize("values", [
    ["May", "June", "July"],  # a lenient parser reads month names as dates
    ["north", "south"],
    ["1.2.3", "4.5.6"],  # versions
    ["2013-01-01"] * 10 + ["n/k"] * 10,  # mostly not dates
])
def test_words_versions_and_mixed_text_are_not_timestamps(values):
    assert checks.timestamps(_text(values)) is None


# ------------------------------------------------------------------------- integer codes
@pytest.mark.parametrize(("name", "values", "needle"), [
    ("plan", [3, 17, 42, 58, 91], "5 distinct integers with gaps (3..91)"),
    ("airport", [11298, 13930, 12892, 10397], "4 distinct integers with gaps"),
    ("dept", list(range(1, 15)), "14 distinct integers, named like a code"),
    ("status", [1, 2, 3], "named like a code"),
])
def test_few_integers_with_gaps_or_a_code_name_are_codes(name, values, needle):
    ints = np.asarray(values * 50)
    assert needle in checks.integer_codes(name, ints)


@pytest.mark.parametrize(("name", "values"), [
    ("rating", [1, 2, 3, 4, 5]),  # contiguous: an ordinal measure
    ("children", [0, 1, 2, 5, 9]),  # named like a count
    ("range", [50, 100, 150, 250, 300, 400]),  # round numbers: a measure's grid
    ("born", [1950, 1962, 1977, 1990]),  # years
    ("flag", [0, 1]),  # two values: numeric is as good
    ("plan", list(range(0, 60, 2))),  # more than MAX_CODES values
])
def test_counts_measures_years_and_flags_are_not_codes(name, values):
    assert checks.integer_codes(name, np.asarray(values * 50)) is None


def test_codes_need_rows_per_code():
    assert checks.integer_codes("plan", np.asarray([3, 17, 42, 58, 91] * 3)) is None


def test_text_with_thousands_of_values_is_said_to_maybe_name_entities():
    import pandas as pd

    from tarn.core import contract_checks as checks

    many = pd.Series([f"N{i % 1500:04d}" for i in range(30_000)])
    why = checks.high_cardinality(many)
    assert why is not None and why.startswith("1,500 distinct values")
    assert checks.high_cardinality(pd.Series([f"N{i % 500}" for i in range(30_000)])) is None


def test_a_leak_that_takes_two_columns_is_named_by_their_difference():
    import numpy as np
    import pandas as pd

    from tarn.core import contract_checks as checks

    rng = np.random.default_rng(0)
    n = 4000
    scheduled = rng.integers(500, 2300, n)
    delay = rng.normal(5, 30, n)
    arrived = scheduled + delay  # known only after the outcome
    other = rng.normal(0, 1, n) + (delay > 15) * 0.8  # an honest, weaker signal
    y = (delay > 15).astype(float)
    text = pd.DataFrame({"scheduled": scheduled, "arrived": arrived, "other": other}).astype(str)
    numeric = {"scheduled", "arrived", "other"}
    single = checks.single_column_scores(text, numeric, y, "binary")
    assert max(single.values()) < 0.9  # nothing near-perfect alone
    pairs = checks.pair_scores(text, numeric, y, "binary")
    assert pairs[("scheduled", "arrived")] > 0.99
    found = checks.pair_leakage(pairs, single, "binary")
    assert list(found) == ["arrived"] and "scheduled kept" in found["arrived"]
