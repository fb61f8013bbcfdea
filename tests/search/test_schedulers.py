"""Schedulers: plain ASHA decides at epochs, per-strategy ASHA at epochs among trials of
one strategy, phase-aligned ASHA at shares of each plan."""

from __future__ import annotations

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from search.config import SearchConfig
from search.schedulers import SCHEDULERS, StrategyASHAScheduler, build_scheduler


def _rungs(scheduler: ASHAScheduler) -> list[float]:
    return sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)


def test_asha_decides_at_epochs():
    scheduler = build_scheduler(SearchConfig(scheduler="asha", grace_period=2), max_t=25)
    assert scheduler._time_attr == "epoch"
    assert _rungs(scheduler) == [2, 6, 18]


def test_phase_asha_decides_at_shares_of_each_plan():
    config = SearchConfig(scheduler="phase_asha", grace_fraction=0.25, reduction_factor=2)
    scheduler = build_scheduler(config, max_t=25)
    assert scheduler._time_attr == "plan_progress"
    assert _rungs(scheduler) == pytest.approx([0.25, 0.5, 1.0])


class _Trial:
    def __init__(self, trial_id: str, strategy: str = "single_phase") -> None:
        self.trial_id = trial_id
        self.config = {"strategy": strategy}


def test_phase_asha_compares_a_frozen_phase_with_frozen_phases_only():
    scheduler = build_scheduler(
        SearchConfig(scheduler="phase_asha", grace_fraction=0.25, reduction_factor=2), max_t=50
    )
    fast, slow = _Trial("fast"), _Trial("slow")
    for trial in (fast, slow):
        scheduler.on_trial_add(None, trial)
    # A 40-epoch single-phase plan at epoch 10 (25%) vs a 4-epoch frozen phase at 25%:
    # judged at the same share of their plans, the better score survives.
    first = scheduler.on_trial_result(
        None, fast, {"plan_progress": 0.25, "target_score": 0.6, "epoch": 1}
    )
    second = scheduler.on_trial_result(
        None, slow, {"plan_progress": 0.25, "target_score": 0.1, "epoch": 10}
    )
    assert first == TrialScheduler.CONTINUE
    assert second == TrialScheduler.STOP


def _at_epoch_2(scheduler: ASHAScheduler, trial: _Trial, score: float) -> str:
    return scheduler.on_trial_result(None, trial, {"epoch": 2, "target_score": score})


def test_strategy_asha_compares_a_trial_with_its_own_strategy_only():
    config = SearchConfig(scheduler="strategy_asha", grace_period=2, reduction_factor=2)
    scheduler = build_scheduler(config, max_t=24)
    assert isinstance(scheduler, StrategyASHAScheduler)
    assert scheduler._time_attr == "epoch"
    progressive = [_Trial(f"p{i}", "progressive") for i in range(2)]
    single = [_Trial(f"s{i}", "single_phase") for i in range(2)]
    for trial in progressive + single:
        scheduler.on_trial_add(None, trial)
    # Progressive plans lead at epoch 2; the first single-phase trial is not judged
    # against them, the second trails the first and stops.
    assert _at_epoch_2(scheduler, progressive[0], 0.9) == TrialScheduler.CONTINUE
    assert _at_epoch_2(scheduler, progressive[1], 0.8) == TrialScheduler.STOP
    assert _at_epoch_2(scheduler, single[0], 0.3) == TrialScheduler.CONTINUE
    assert _at_epoch_2(scheduler, single[1], 0.2) == TrialScheduler.STOP
    assert _rungs(scheduler) == [2, 4, 8, 16]  # every strategy's rungs are these
    assert scheduler._strategy_brackets["progressive"] is not scheduler._brackets[0]

    # One set of rungs for all: the same single-phase trial stops.
    plain = build_scheduler(config.model_copy(update={"scheduler": "asha"}), max_t=24)
    plain.on_trial_add(None, progressive[0])
    plain.on_trial_add(None, single[0])
    assert _at_epoch_2(plain, progressive[0], 0.9) == TrialScheduler.CONTINUE
    assert _at_epoch_2(plain, single[0], 0.3) == TrialScheduler.STOP


def test_strategy_asha_keeps_its_rungs_through_save_and_restore(tmp_path):
    config = SearchConfig(scheduler="strategy_asha", grace_period=2, reduction_factor=2)
    scheduler = build_scheduler(config, max_t=24)
    leader, trailing = _Trial("a"), _Trial("b")
    for trial in (leader, trailing):
        scheduler.on_trial_add(None, trial)
    _at_epoch_2(scheduler, leader, 0.7)
    scheduler.save(str(tmp_path / "scheduler.pkl"))
    restored = build_scheduler(config, max_t=24)
    restored.restore(str(tmp_path / "scheduler.pkl"))
    # The restored scheduler remembers the leader's score at epoch 2.
    assert _at_epoch_2(restored, trailing, 0.5) == TrialScheduler.STOP
    assert "single_phase" in restored.debug_string()


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_builds(name):
    scheduler = build_scheduler(SearchConfig(scheduler=name), max_t=10)
    expected = {
        "asha": ASHAScheduler,
        "strategy_asha": StrategyASHAScheduler,
        "phase_asha": ASHAScheduler,
        "median": MedianStoppingRule,
    }
    assert isinstance(scheduler, expected.get(name, FIFOScheduler))
