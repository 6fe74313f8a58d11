"""The test window: which batches are held out, and what a figure measured on them means."""

from __future__ import annotations

import pandas as pd
import pytest

from tarn.config import PrepareConfig, params_from_dict
from tarn.core import windows
from tarn.lifecycle.retrain import holdout
from tarn.stages.prepare import split
from tests.support.project import repo_params_dict

BATCHES = ["0001-2015", "0002-2016", "0010-2018", "0003-2017"]


def test_a_latest_window_holds_out_the_newest_batches_by_sequence_number():
    cfg = PrepareConfig(test_split="latest", test_latest=1)
    assert windows.held_out(BATCHES, cfg) == ["0010-2018"]
    assert windows.held_out(BATCHES, PrepareConfig(test_split="latest", test_latest=2)) == [
        "0003-2017", "0010-2018"]
    # a new batch moves the window forward
    assert windows.held_out([*BATCHES, "0011-2019"], cfg) == ["0011-2019"]
    # never every batch: nothing would be left to train on
    assert windows.held_out(["0001-a"], cfg) == []


def test_a_fixed_window_is_the_batches_the_patterns_match():
    cfg = PrepareConfig(test_split="batches", test_batches=["*-2016"])
    assert windows.held_out([*BATCHES, "0011-2019"], cfg) == ["0002-2016"]


@pytest.mark.parametrize(("trained", "tested", "needle"), [
    (["0001-a", "0002-b"], ["0003-c"], "forward in time, newer than every batch it trained on"),
    (["0001-a", "0003-c"], ["0002-b"], "held out, not newer than every batch it trained on"),
    (["0001-a", "0002-b"], ["0002-b"], "in-sample, the model trained on 0002-b (optimistic)"),
    ([], ["0002-b"], "rows of batch 0002-b"),
])
def test_a_figure_is_labelled_with_what_it_was_measured_on(trained, tested, needle):
    text = windows.label(tested, 1234, trained)
    assert text.startswith("1,234 rows of batch") and text.endswith(needle)


def test_prepare_tests_on_the_newest_batch_and_says_it_is_forward():
    raw = repo_params_dict()
    raw["prepare"] = {**raw["prepare"], "test_split": "latest", "test_latest": 1}
    params = params_from_dict(raw)
    target = params.schema.target.name
    df = pd.DataFrame({"batch": ["0002-b"] * 10 + ["0001-a"] * 10 + ["0010-z"] * 5,
                       target: [0, 1] * 12 + [0]})
    parts = split(df, params)
    assert set(parts["test"]["batch"]) == {"0010-z"} and len(parts["test"]) == 5
    assert "0010-z" not in set(parts["train"]["batch"]) | set(parts["valid"]["batch"])
    assert windows.is_forward(["0001-a", "0002-b"], ["0010-z"])


def test_an_incremental_holdout_is_the_newest_rows_under_a_moving_window():
    data = pd.DataFrame({"batch": ["0005-b"] * 5 + ["0004-a"] * 5, "row": range(10)})
    fit, hold = holdout(data, 0.3, 0, PrepareConfig(test_split="latest"), None)
    # batch order first (0004-a before 0005-b, whatever the row order), then file order
    assert hold["row"].tolist() == [2, 3, 4] and set(hold["batch"]) == {"0005-b"}
    assert set(fit["batch"]) == {"0004-a", "0005-b"} and len(fit) == 7
    # a fixed window keeps the seeded random share
    _, rand = holdout(data, 0.3, 0, PrepareConfig(test_split="batches"), None)
    assert len(rand) == 3 and rand["row"].tolist() != [2, 3, 4]


def test_a_batch_whose_times_reach_back_into_an_earlier_one_is_named():
    ranges = {"0001-jan": ("2013-01-01", "2013-01-31"), "0002-feb": ("2013-02-01", "2013-02-28"),
              "0003-mar": ("2013-02-20", "2013-03-31")}
    assert windows.overlaps("0002-feb", ranges) == []
    assert windows.overlaps("0003-mar", ranges) == [
        "batch 0003-mar's times (2013-02-20 .. 2013-03-31) overlap batch 0002-feb's "
        "(2013-02-01 .. 2013-02-28)"]


def test_an_unparseable_time_key_is_quarantined_with_a_reason_and_never_a_feature():
    from tarn.core import schema as sc
    from tarn.core.features import feature_columns

    raw = repo_params_dict()
    raw["schema"]["columns"].append({"name": "when", "dtype": "string"})
    raw["schema"]["time_key"] = "when"
    params = params_from_dict(raw)
    assert "when" not in sum(feature_columns(params.schema, params.prepare), [])
    row = {"age": "30", "workclass": "Private", "fnlwgt": "1", "education": "Bachelors",
           "education_num": "13", "marital_status": "Divorced", "occupation": "Sales",
           "relationship": "Unmarried", "race": "White", "sex": "Male", "capital_gain": "0",
           "capital_loss": "0", "hours_per_week": "40", "native_country": "Cuba",
           "income": "<=50K"}
    times = ["2016-03-01", "01/03/2016 10:00", "soon", "12"]
    frame = pd.DataFrame([{**row, "when": t} for t in times])
    mapping = {c: c for c in frame.columns}
    out = sc.conform(frame, params.schema, mapping)
    assert len(out.rows) == 2
    assert out.rejects["reason"].tolist() == [sc.NOT_A_TIME] * 2
    assert out.rejects["detail"].tolist() == [
        "when: 'soon' is not a date or date-time (the time key)",
        "when: '12' is not a date or date-time (the time key)"]


def test_a_time_key_must_be_a_string_column_of_the_contract():
    raw = repo_params_dict()
    raw["schema"]["time_key"] = "age"
    with pytest.raises(Exception, match="time_key 'age' must be a string column"):
        params_from_dict(raw)
    raw["schema"]["time_key"] = "nowhere"
    with pytest.raises(Exception, match="time_key 'nowhere' is not among columns"):
        params_from_dict(raw)
