"""A phase plan in one line: single-task and multi-task plans as the tables show them."""

from __future__ import annotations

import dataclasses

import pytest

from analysis.recipes import plan_summary, plan_tasks
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.data import DataSpec
from trainables.phases import EWCSpec, LRSchedule, WeightingSpec
from trainables.strategies import build_plan

SCENES = dataclasses.replace(
    TINY_CONTEXT,
    data=DataSpec(kind="synthetic_scenes", num_samples=64, image_size=16, num_classes=4),
)
SINGLE_PHASE = {
    "epochs": 12,
    "lr": 1e-4,
    "plateau_factor": 0.2,
    "plateau_patience": 2,
    "early_stopping_patience": 3,
    "batch_size": 16,
    "dropout": 0.1,
}
JOINT = {
    "warmup_style": "alternate",
    "warmup_epochs": 2,
    "joint_epochs": 6,
    "finetune_epochs": 1,
    "lr": 1e-3,
    "weighting": "loss_ratio",
    "alpha": 0.5,
    "momentum": 0.0,
}


def _plan(strategy, params, context=TINY_CONTEXT):
    return build_plan(strategy, params, context)


def _with_phases(plan, **changes):
    """``plan`` with every phase changed as given."""
    phases = tuple(dataclasses.replace(p, **changes) for p in plan.phases)
    return dataclasses.replace(plan, phases=phases)


@pytest.mark.parametrize("plan", [None])
def test_no_plan_is_a_dash_and_trains_no_tasks(plan):
    assert plan_summary(plan) == "-"
    assert plan_tasks(plan) == []


def test_a_progressive_plan_shows_epochs_lrs_unfrozen_groups_and_batch_size():
    plan = _plan("progressive", TINY_PROGRESSIVE)
    assert plan_summary(plan) == "1+1+1 ep, lr 3e-03/3e-04/3e-05, train none/2/all, bs 32"
    assert plan_tasks(plan) == ["cls"]


def test_only_a_schedule_other_than_the_recipes_own_is_named():
    # single_phase's own schedule is plateau: not named.
    single = _plan("single_phase", SINGLE_PHASE)
    assert plan_summary(single) == "12 ep, lr 1e-04, train all, bs 16"
    cosine = _with_phases(single, lr_schedule=LRSchedule("cosine"))
    assert plan_summary(cosine) == "12 ep, lr 1e-04, cosine, train all, bs 16"
    # Any other recipe's own is constant: plateau there is named, each kind once, sorted.
    progressive = _plan("progressive", TINY_PROGRESSIVE)
    phases = list(progressive.phases)
    phases[0] = dataclasses.replace(phases[0], lr_schedule=LRSchedule("step"))
    phases[2] = dataclasses.replace(phases[2], lr_schedule=LRSchedule("cosine"))
    phases[1] = dataclasses.replace(phases[1], lr_schedule=LRSchedule("cosine"))
    mixed = dataclasses.replace(progressive, phases=tuple(phases))
    assert plan_summary(mixed) == (
        "1+1+1 ep, lr 3e-03/3e-04/3e-05, cosine, step, train none/2/all, bs 32"
    )


def test_a_joint_plan_names_its_phases_sampling_and_weighting_with_one_shared_lr():
    plan = _plan("joint", JOINT, SCENES)
    assert plan_summary(plan) == (
        "warmup 2 alt > joint 6 loss_ratio > finetune 1 equal, lr 1e-03, bs 64"
    )
    assert plan_tasks(plan) == ["seg", "det", "cls"]


def test_a_sequential_plan_shows_ewc_and_its_task_order():
    params = {
        "order": "det,cls,seg",
        "task_epochs": 3,
        "lr": 1e-3,
        "use_ewc": True,
        "ewc_lambda": 100.0,
    }
    plan = _plan("sequential", params, SCENES)
    assert plan_summary(plan) == (
        "task/det 3 > task/cls 3 ewc 1e+02 > task/seg 3 ewc 1e+02, lr 1e-03, bs 64"
    )
    assert plan_tasks(plan) == ["det", "cls", "seg"]


def test_multi_task_lrs_differ_schedules_and_loss_options_are_shown():
    plan = _plan("joint", JOINT, SCENES)
    phases = list(plan.phases)
    phases[1] = dataclasses.replace(
        phases[1], lr=5e-4, lr_schedule=LRSchedule("cosine"), ewc=EWCSpec(2.5)
    )
    phases[2] = dataclasses.replace(phases[2], weighting=WeightingSpec("dwa"))
    changed = dataclasses.replace(plan, phases=tuple(phases), label_smoothing=0.1, focal_gamma=2.0)
    assert plan_summary(changed) == (
        "warmup 2 alt > joint 6 loss_ratio ewc 2e+00 cosine > finetune 1 dwa,"
        " lr 1e-03/5e-04/1e-03, bs 64, smoothing 0.1, focal 2"
    )


def test_tasks_come_in_first_use_order_without_repeats():
    joint = _plan("joint", JOINT, SCENES)
    tasks = (("det",), ("cls", "det"), ("cls",), ("seg",))
    plan = dataclasses.replace(
        joint,
        phases=tuple(dataclasses.replace(joint.phases[0], tasks=t) for t in tasks),
    )
    assert plan_tasks(plan) == ["det", "cls", "seg"]
