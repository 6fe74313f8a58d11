"""How the search spends its budget: budget, rungs, promotions, warm starts, round caps, the
chosen fit and the budget-too-small message. Pure: no fits."""

from __future__ import annotations

import pytest

from tarn.config import MIN_RATE_ROUNDS, TuneConfig
from tarn.core.search_plan import (
    Ladder,
    default_budget,
    fidelity_rungs,
    round_cap,
    warm_starts,
)
from tarn.errors import ConfigError
from tarn.stages.tune import SearchOutcome, TrialResult, choose, too_small_budget
from tests.support.project import params_dict

SPACE = {"learning_rate": {"dist": "loguniform", "low": 0.02, "high": 0.3},
         "max_depth": {"dist": "quniform", "low": 3, "high": 10, "q": 1},
         "reg_alpha": {"dist": "loguniform", "low": 1e-4, "high": 10}}


def tune_cfg(**kw) -> TuneConfig:
    return TuneConfig.model_validate({"space": SPACE, **kw})


def test_the_default_budget_grows_with_the_table_and_shrinks_with_cores():
    small, large = default_budget(26_000, 108, 2), default_budget(300_000, 40, 2)
    assert 30 <= small < large <= 900
    assert default_budget(300_000, 40, 8) < large  # more cores: the same work in less time
    assert default_budget(10, 2, 2) < 31 and default_budget(10**9, 1000, 2) == 900


def test_rungs_grow_by_the_factor_up_to_every_row():
    assert fidelity_rungs(26_000, 20_000, 3) == [26_000]  # a small table: one rung
    assert fidelity_rungs(230_000, 20_000, 3) == [25_555, 76_666, 230_000]
    assert all(r >= 20_000 for r in fidelity_rungs(1_000_000, 20_000, 3))


def test_the_best_third_of_a_rung_is_promoted_once():
    ladder = Ladder([100, 300, 900], factor=3)
    for tid, loss in enumerate([0.5, 0.3, 0.4, 0.6, 0.2, 0.7]):
        ladder.record(tid, 0, loss)
    first = ladder.next_promotion()
    assert first == (4, 1)  # the lowest loss first
    ladder.mark(*first)
    second = ladder.next_promotion()
    assert second == (1, 1)
    ladder.mark(*second)
    assert ladder.next_promotion() is None  # 6 // 3 = 2 promoted from rung 0
    ladder.record(4, 1, 0.25)
    ladder.record(1, 1, 0.28)
    ladder.record(2, 1, 0.29)  # now 3 at rung 1: the best one goes on to the top rung
    assert ladder.next_promotion() == (4, 2)


def test_a_forced_promotion_takes_the_best_of_the_highest_rung_reached():
    ladder = Ladder([100, 300, 900])
    ladder.record(0, 0, 0.5)
    ladder.record(1, 0, 0.4)
    assert ladder.force_promotion() == (1, 2)
    ladder.record(1, 2, 0.3)
    assert ladder.force_promotion() is None  # something has seen every row


def test_warm_starts_begin_with_xgboost_defaults_clipped_into_the_space():
    starts = warm_starts(tune_cfg(warm_starts=[{}, {"learning_rate": 0.1, "max_depth": 0,
                                                     "grow_policy": "lossguide",
                                                     "max_leaves": 31}]))
    defaults = starts[0]
    assert defaults.hparams["learning_rate"] == 0.3 and defaults.hparams["max_depth"] == 6
    assert defaults.hparams["reg_alpha"] == 1e-4  # XGBoost's 0 is below the space: clipped
    hgb = starts[1]  # a start's own values are fitted, even outside the space
    assert hgb.hparams["max_depth"] == 0 and hgb.hparams["grow_policy"] == "lossguide"
    assert isinstance(hgb.hparams["max_leaves"], int)


def test_the_round_cap_is_tied_to_the_learning_rate():
    cfg = tune_cfg()
    assert round_cap(cfg, 0.3) == 1667 and round_cap(cfg, 0.02) == 25000
    assert round_cap(tune_cfg(n_estimators=2000), 0.3) == 2000  # the user's cap is kept


def test_a_cap_that_cannot_reach_early_stopping_is_refused_when_params_load():
    from tarn.config import params_from_dict

    raw = params_dict({"tune.n_estimators": 300})  # 300 x 0.02 = 6 < 20
    with pytest.raises(ConfigError) as e:
        params_from_dict(raw)
    assert "tune.n_estimators 300 cannot converge" in str(e.value)
    assert f"at least {int(MIN_RATE_ROUNDS / 0.02)}" in str(e.value)
    params_from_dict(params_dict({"tune.n_estimators": 1000}))  # 1000 x 0.02 = 20: accepted


def test_unknown_warm_start_keys_are_refused():
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        tune_cfg(warm_starts=[{"learnin_rate": 0.1}])
    with pytest.raises(ValueError, match="grow_policy must be one of"):
        tune_cfg(warm_starts=[{"grow_policy": "sideways"}])


def result(tid, rung, loss, stopped="", cut=False, rounds=100, cap=300, rows=1000,
           duration=1.0):
    return TrialResult(tid, {}, "ok", loss, rung=rung, stopped=stopped, cut=cut,
                       rounds=rounds, cap=cap, rows=rows, duration_s=duration)


def test_the_chosen_fit_comes_from_the_highest_rung_and_is_never_a_stopped_one():
    rs = [result(0, 0, 0.20), result(1, 0, 0.30), result(1, 1, 0.25),
          result(2, 1, 0.10, stopped="round 50: behind")]
    assert (choose(rs).tid, choose(rs).rung) == (1, 1)  # 0.20 was on fewer rows


def test_a_budget_too_small_for_one_fit_says_the_smallest_that_would_do():
    cut = result(0, 0, 0.4, stopped="round 10: the time budget ran out", cut=True, rounds=10,
                 cap=334, duration=2.0)
    out = SearchOutcome([cut], "time budget", 2.0, [1000], 2.0, 1)
    msg = too_small_budget(out, tune_cfg())
    assert "too small for one fit" in msg and "round 10 of up to 334" in msg
    assert "at least 106" in msg  # 1.5 x 0.2 s a round x 334 rounds + 5
    ok = SearchOutcome([cut, result(1, 0, 0.3)], "time budget", 2.0, [1000], 2.0, 2)
    assert too_small_budget(ok, tune_cfg()) == ""


def test_a_fit_at_its_cap_is_flagged():
    assert result(0, 0, 0.3, rounds=300, cap=300).capped
    assert not result(0, 0, 0.3, rounds=120, cap=300).capped


def test_a_latest_validation_split_takes_the_newest_rows_before_the_test_batches():
    import pandas as pd

    from tarn.config import params_from_dict
    from tarn.stages.prepare import split

    p = params_from_dict(params_dict({"prepare.valid_split": "latest",
                                      "prepare.valid_fraction": 0.25}))
    df = pd.DataFrame({"batch": ["0002-b"] * 4 + ["0001-a"] * 4 + ["0003-c-adult-test"] * 2,
                       "income": [0, 1] * 5, "row": range(10)})
    parts = split(df, p)
    assert list(parts["valid"]["batch"]) == ["0002-b"] * 2  # the newest 25 % of 8 rows
    assert set(parts["train"]["batch"]) == {"0001-a", "0002-b"}
    assert list(parts["test"]["batch"]) == ["0003-c-adult-test"] * 2
