"""The tune stage's stop rule on synthetic validation curves (no fits)."""

from __future__ import annotations

import numpy as np
import pytest

from tarn.config import TuneConfig
from tarn.core.tags import RunTag
from tarn.stages.tune import Reference, StopRule, best_so_far, stop_reason

SPACE = {"learning_rate": {"dist": "loguniform", "low": 0.03, "high": 0.3}}
RULE = StopRule(quantile=0.5, warmup_rounds=20, interval=10, min_trials=3)


def curve(final: float, rounds: int, start: float = 0.69, speed: float = 0.05) -> np.ndarray:
    """A validation logloss curve decaying from ``start`` towards ``final``."""
    r = np.arange(1, rounds + 1)
    return final + (start - final) * np.exp(-speed * r)


def refs(*finals: float, rounds: int = 200, speed: float = 0.05,
         learning_rate: float = 0.1) -> list[Reference]:
    return [Reference(best_so_far(curve(f, rounds, speed=speed)), learning_rate)
            for f in finals]


def test_best_so_far_is_the_running_minimum():
    assert best_so_far([0.5, 0.4, 0.45, 0.3, 0.35]).tolist() == [0.5, 0.4, 0.4, 0.3, 0.3]


def test_a_trial_behind_the_median_at_the_same_round_stops():
    slow = curve(0.30, 60, speed=0.01)  # far behind the references at round 60
    reason = stop_reason(RULE, slow, refs(0.27, 0.28, 0.29))
    assert reason.startswith("round 60:") and "0.5 quantile of 3 finished trials" in reason


def test_a_trial_ahead_of_the_median_goes_on():
    good = curve(0.26, 60)
    assert stop_reason(RULE, good, refs(0.27, 0.28, 0.29)) == ""


def test_its_best_so_far_counts_not_its_last_value():
    c = curve(0.26, 60).tolist()
    c[-1] = 0.9  # one bad round after a good curve: early stopping would keep the best
    assert stop_reason(RULE, c, refs(0.27, 0.28, 0.29)) == ""


def test_checked_only_on_interval_rounds_after_the_warmup():
    slow = curve(0.40, 61, speed=0.01)
    references = refs(0.27, 0.28, 0.29)
    assert stop_reason(RULE, slow[:10], references) == ""  # before the warm-up
    assert stop_reason(RULE, slow[:61], references) == ""  # not a checked round
    assert stop_reason(RULE, slow[:20], references)  # first checked round


def test_no_stop_before_enough_trials_have_finished_or_without_a_rule():
    slow = curve(0.40, 60, speed=0.01)
    assert stop_reason(RULE, slow, refs(0.27, 0.28)) == ""
    assert stop_reason(None, slow, refs(0.27, 0.28, 0.29)) == ""


def test_a_reference_shorter_than_the_round_counts_with_its_final_value():
    # the references ended (early stopping) at round 30 with 0.28; the trial is at round 100
    short = refs(0.28, 0.28, 0.28, rounds=30, speed=0.5)
    assert stop_reason(RULE, curve(0.27, 100, speed=0.1), short) == ""
    assert stop_reason(RULE, curve(0.29, 100, speed=0.1), short)


def test_quantile_sets_how_far_behind_a_trial_may_be():
    references = refs(0.26, 0.27, 0.28, 0.29, 0.30)
    middling = curve(0.285, 200)  # behind the median (0.28), ahead of the 0.75 quantile (0.29)
    assert stop_reason(RULE, middling[:100], references)
    lenient = StopRule(quantile=0.75, warmup_rounds=20, interval=10, min_trials=3)
    assert stop_reason(lenient, middling[:100], references) == ""


def test_the_best_trial_so_far_is_never_stopped():
    references = refs(0.27, 0.28, 0.29)
    best = curve(0.265, 200, speed=0.02)
    for r in range(RULE.warmup_rounds, 201):
        if best[r - 1] <= 0.27:  # ahead of every reference's final value
            assert stop_reason(RULE, best[:r], references) == "", r


@pytest.mark.parametrize("quantile", [0.25, 0.5, 1.0])
def test_with_quantile_one_only_a_trial_behind_every_reference_stops(quantile):
    references = refs(0.27, 0.28, 0.29)
    rule = StopRule(quantile=quantile, warmup_rounds=20, interval=10, min_trials=3)
    worst = curve(0.35, 100)
    assert stop_reason(rule, worst, references)


def test_aligned_by_learning_rate_a_slow_rate_is_compared_where_it_has_come_as_far():
    # references at rate 0.1 reach 0.27-0.29; a trial at rate 0.02 learns 5x slower per round
    references = refs(0.27, 0.28, 0.29, rounds=300, learning_rate=0.1)
    slow = curve(0.26, 100, speed=0.05 / 5)  # the same curve as a reference, 5x stretched
    by_rounds = StopRule(0.5, 20, 10, 3, align="rounds")
    by_rate = StopRule(0.5, 20, 10, 3, align="learning_rate")
    assert stop_reason(by_rounds, slow, references, learning_rate=0.02)
    assert stop_reason(by_rate, slow, references, learning_rate=0.02) == ""
    assert "rounds x learning rate" in stop_reason(by_rate, curve(0.35, 100, speed=0.01),
                                                   references, learning_rate=0.02)
    # a fast rate is read at the references' final values once past their end
    assert stop_reason(by_rate, curve(0.285, 100), references, learning_rate=0.5)


def test_rule_from_config():
    cfg = TuneConfig.model_validate({"space": SPACE})
    assert StopRule.from_config(cfg) == StopRule(cfg.stop_quantile, cfg.stop_warmup_rounds,
                                                 cfg.stop_interval, cfg.stop_min_trials,
                                                 cfg.stop_align)
    off = TuneConfig.model_validate({"space": SPACE, "stop_rule": "none"})
    assert StopRule.from_config(off) is None


def test_stop_settings_are_checked():
    from pydantic import ValidationError

    for bad in ({"stop_rule": "median-ish"}, {"stop_quantile": 0}, {"stop_quantile": 1.5},
                {"stop_warmup_rounds": 0}, {"stop_interval": 0}, {"stop_align": "time"}):
        with pytest.raises(ValidationError):
            TuneConfig.model_validate({"space": SPACE, **bad})


def test_the_stopped_tag_lives_in_tags():
    assert RunTag.STOPPED_EARLY == "tarn.stopped_early"
