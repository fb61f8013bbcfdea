"""Schedulers: plain ASHA decides at epochs, phase-aligned ASHA at shares of each plan."""

from __future__ import annotations

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler

from search.config import SearchConfig
from search.schedulers import SCHEDULERS, build_scheduler


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
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


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


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_builds(name):
    scheduler = build_scheduler(SearchConfig(scheduler=name), max_t=10)
    expected = {"asha": ASHAScheduler, "phase_asha": ASHAScheduler, "median": MedianStoppingRule}
    assert isinstance(scheduler, expected.get(name, FIFOScheduler))
