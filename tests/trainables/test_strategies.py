"""Strategies produce the plans the documents describe; every strategy honours the contract."""

from __future__ import annotations

import dataclasses

import pytest

from spaces import SPACES
from tests.conftest import TINY_CONTEXT
from trainables.phases import PhasePlan, PlanError
from trainables.strategies import PROGRESSIVE_PRESETS, STRATEGIES, build_plan

BASE = {"unfreeze_depth": 2, "base_lr": 1e-3, "lr_decay": 10.0, "batch_size": 32, "dropout": 0.3}


@pytest.mark.parametrize(
    ("preset", "epochs"), [("small", [3, 2, 2]), ("medium", [3, 3, 4]), ("large", [5, 10, 15])]
)
def test_progressive_presets_are_the_documents_splits(preset, epochs):
    plan = build_plan("progressive", {**BASE, "preset": preset}, TINY_CONTEXT)
    assert [p.epochs for p in plan.phases] == epochs
    assert PROGRESSIVE_PRESETS[preset] == tuple(epochs)


def test_progressive_freezes_then_unfreezes_top_groups_then_all():
    params = {**BASE, "frozen_epochs": 3, "partial_epochs": 3, "full_epochs": 4}
    plan = build_plan("progressive", params, TINY_CONTEXT)
    assert [p.name for p in plan.phases] == ["frozen", "partial", "full"]
    assert [p.trainable_groups(6) for p in plan.phases] == [[], [4, 5], [0, 1, 2, 3, 4, 5]]
    assert [p.lr for p in plan.phases] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert plan.model.dropout == 0.3
    assert plan.batch_size == 32
    assert plan.phase_boundaries() == [3, 6, 10]


def test_single_phase_trains_everything_with_plateau_and_early_stopping():
    params = {
        "epochs": 40,
        "lr": 1e-4,
        "plateau_factor": 0.2,
        "plateau_patience": 3,
        "early_stopping_patience": 5,
        "batch_size": 64,
        "dropout": 0.4,
    }
    (phase,) = build_plan("single_phase", params, TINY_CONTEXT).phases
    assert phase.trainable == "all" and phase.epochs == 40 and phase.lr == 1e-4
    assert (phase.lr_schedule.kind, phase.lr_schedule.factor, phase.lr_schedule.patience) == (
        "plateau",
        0.2,
        3,
    )
    assert phase.early_stopping.patience == 5 and phase.early_stopping.metric == "val/loss"


def test_epoch_scale_keeps_every_phase_at_least_one_epoch():
    context = dataclasses.replace(TINY_CONTEXT, epoch_scale=0.1)
    plan = build_plan("progressive", {**BASE, "preset": "medium"}, context)
    assert [p.epochs for p in plan.phases] == [1, 1, 1]
    context = dataclasses.replace(TINY_CONTEXT, epoch_scale=2.0)
    plan = build_plan("progressive", {**BASE, "preset": "small"}, context)
    assert [p.epochs for p in plan.phases] == [6, 4, 4]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_plan_round_trips_through_a_dict(strategy):
    (baseline,) = SPACES[strategy](6).baselines
    plan = build_plan(strategy, baseline.params, TINY_CONTEXT)
    assert PhasePlan.from_dict(plan.to_dict()) == plan
    assert plan.strategy == strategy
    assert plan.seed == TINY_CONTEXT.seed and plan.data == TINY_CONTEXT.data


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**BASE, "preset": "huge"}, "preset: use one of small, medium, large"),
        ({**BASE, "frozen_epochs": 1, "partial_epochs": 1}, "progressive.full_epochs: missing"),
        ({**BASE, "preset": "small", "unfreeze_depth": 9}, "the backbone has 6 layer groups"),
        ({**BASE, "preset": "small", "lr_decay": 0}, "lr_decay: must be > 0"),
    ],
)
def test_impossible_progressive_params_are_refused(params, message):
    with pytest.raises(PlanError, match=message):
        build_plan("progressive", params, TINY_CONTEXT)


def test_unknown_strategy_is_refused():
    with pytest.raises(PlanError, match="strategy: use one of"):
        build_plan("curriculum", {}, TINY_CONTEXT)
