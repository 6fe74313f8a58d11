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
