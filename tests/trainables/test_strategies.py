"""Strategies produce the plans the documents describe; every strategy honours the contract."""

from __future__ import annotations

import dataclasses

import pytest

from spaces import SPACES
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.data import DataSpec
from trainables.phases import EWCSpec, LRSchedule, PhasePlan, PlanError, WeightingSpec
from trainables.strategies import (
    BUILTIN_STRATEGIES,
    MULTITASK_TASKS,
    PROGRESSIVE_PRESETS,
    WEIGHTING_PARAM_NAMES,
    PlanContext,
    build_plan,
)

BASE = {"unfreeze_depth": 2, "base_lr": 1e-3, "lr_decay": 10.0, "batch_size": 32, "dropout": 0.3}
SCENES_CONTEXT = dataclasses.replace(
    TINY_CONTEXT,
    data=DataSpec(kind="synthetic_scenes", num_samples=64, image_size=16, num_classes=4),
)
#: The multi-task document's joint run, as parameters.
JOINT = {
    "warmup_style": "alternate",
    "warmup_epochs": 5,
    "joint_epochs": 40,
    "finetune_epochs": 5,
    "lr": 1e-3,
    "weighting": "loss_ratio",
    "alpha": 0.5,
    "momentum": 0.0,
}
SEQUENTIAL = {"order": "seg,det,cls", "task_epochs": 15, "lr": 1e-3}


def context_for(strategy: str) -> PlanContext:
    """A tiny context whose data has the tasks ``strategy`` trains."""
    return SCENES_CONTEXT if strategy in ("joint", "sequential") else TINY_CONTEXT


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


@pytest.mark.parametrize("strategy", sorted(BUILTIN_STRATEGIES))
def test_every_strategy_plan_round_trips_through_a_dict(strategy):
    context = context_for(strategy)
    for baseline in SPACES[strategy](6).baselines:
        plan = build_plan(strategy, baseline.params, context)
        assert PhasePlan.from_dict(plan.to_dict()) == plan
        assert plan.strategy == strategy
        assert plan.seed == context.seed and plan.data == context.data


def test_plans_without_schedule_params_are_the_documents():
    params = {**BASE, "preset": "medium"}
    plan = build_plan("progressive", params, TINY_CONTEXT)
    assert all(phase.lr_schedule == LRSchedule() for phase in plan.phases)
    assert build_plan("progressive", {**params, "lr_schedule": "constant"}, TINY_CONTEXT) == plan
    single = {"epochs": 40, "lr": 1e-4}
    (phase,) = build_plan("single_phase", single, TINY_CONTEXT).phases
    assert phase.lr_schedule == LRSchedule("plateau", factor=0.1, patience=2)


def test_cosine_anneals_every_phase_but_never_upwards():
    params = {**BASE, "base_lr": 1e-4, "preset": "small", "lr_schedule": "cosine"}
    plan = build_plan("progressive", {**params, "final_lr": 1e-5}, TINY_CONTEXT)
    assert [p.lr_schedule.kind for p in plan.phases] == ["cosine"] * 3
    # Phase 3 starts at 1e-6, below final_lr, so it stays there.
    assert [p.lr_schedule.final_lr for p in plan.phases] == pytest.approx([1e-5, 1e-5, 1e-6])
    (phase,) = build_plan(
        "single_phase", {"epochs": 30, "lr": 1e-4, "lr_schedule": "cosine"}, TINY_CONTEXT
    ).phases
    assert phase.lr_schedule.final_lr == 1e-5  # the multi-task document's recommendation


def test_step_size_scales_with_the_phase():
    params = {"epochs": 40, "lr": 1e-4, "lr_schedule": "step", "step_size": 10, "step_gamma": 0.5}
    context = dataclasses.replace(TINY_CONTEXT, epoch_scale=0.5)
    (phase,) = build_plan("single_phase", params, context).phases
    assert (phase.epochs, phase.lr_schedule) == (20, LRSchedule("step", step_size=5, gamma=0.5))
    with pytest.raises(PlanError, match="single_phase.step_size: missing parameter"):
        build_plan("single_phase", {"epochs": 40, "lr": 1e-4, "lr_schedule": "step"}, TINY_CONTEXT)


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


def test_joint_is_the_documents_warmup_joint_finetune():
    plan = build_plan("joint", JOINT, SCENES_CONTEXT)
    warmup, joint, finetune = plan.phases
    assert [p.name for p in plan.phases] == ["warmup", "joint", "finetune"]
    assert [p.epochs for p in plan.phases] == [5, 40, 5]
    assert (warmup.tasks, warmup.task_sampling) == (MULTITASK_TASKS, "alternate")
    assert joint.tasks == finetune.tasks == ("seg", "det", "cls")
    assert joint.task_sampling == "joint"
    assert joint.weighting == WeightingSpec("loss_ratio", {"alpha": 0.5, "momentum": 0.0})
    assert finetune.weighting == WeightingSpec("equal")
    assert {p.lr for p in plan.phases} == {1e-3}
    assert {p.lr_schedule for p in plan.phases} == {LRSchedule()}
    assert {p.trainable for p in plan.phases} == {"all"}
    assert all(p.early_stopping is None for p in plan.phases)


@pytest.mark.parametrize(
    ("style", "names", "tasks"),
    [
        (
            "per_task",
            ["warmup/seg", "warmup/cls", "joint"],
            [("seg",), ("cls",), MULTITASK_TASKS],
        ),
        (
            "gradual",
            ["warmup/+seg", "warmup/+cls", "joint"],
            [("seg",), ("seg", "det", "cls"), MULTITASK_TASKS],
        ),
    ],
)
def test_task_specific_warmups_skip_zero_lengths(style, names, tasks):
    params = {
        **JOINT,
        "warmup_style": style,
        "warmup_seg": 2,
        "warmup_det": 0,
        "warmup_cls": 3,
        "finetune_epochs": 0,
        "weighting": "dwa",
        "head_lr_cls": 2.0,
    }
    plan = build_plan("joint", params, SCENES_CONTEXT)
    assert [p.name for p in plan.phases] == names
    assert [p.tasks for p in plan.phases] == tasks
    assert [p.epochs for p in plan.phases] == [2, 3, 40]
    # A lone task trains on its plain loss; joined tasks use the searched weighting.
    assert plan.phases[0].weighting == WeightingSpec("equal")
    expected = "equal" if style == "per_task" else "dwa"
    assert plan.phases[1].weighting.method == expected
    assert [dict(p.head_lr) for p in plan.phases] == [{}, {"cls": 2.0}, {"cls": 2.0}]


def test_gradual_warmup_adds_one_task_per_phase():
    params = {**JOINT, "warmup_style": "gradual", "warmup_seg": 1, "warmup_det": 1}
    plan = build_plan("joint", {**params, "warmup_cls": 1}, SCENES_CONTEXT)
    assert [p.tasks for p in plan.phases[:3]] == [("seg",), ("seg", "det"), MULTITASK_TASKS]


@pytest.mark.parametrize(
    "warmup",
    [
        {"warmup_style": "alternate", "warmup_epochs": 0},
        {"warmup_style": "per_task", "warmup_seg": 0, "warmup_det": 0, "warmup_cls": 0},
        {"warmup_style": "gradual", "warmup_seg": 0, "warmup_det": 0, "warmup_cls": 0},
    ],
)
def test_zero_warmup_starts_with_joint_training(warmup):
    plan = build_plan("joint", {**JOINT, **warmup}, SCENES_CONTEXT)
    assert [p.name for p in plan.phases] == ["joint", "finetune"]


def test_epoch_scale_scales_joint_phases_but_keeps_skipped_ones_skipped():
    context = dataclasses.replace(SCENES_CONTEXT, epoch_scale=0.1)
    params = {
        **JOINT,
        "warmup_style": "per_task",
        "warmup_seg": 0,
        "warmup_det": 3,
        "warmup_cls": 15,
        "finetune_epochs": 0,
    }
    plan = build_plan("joint", params, context)
    assert [(p.name, p.epochs) for p in plan.phases] == [
        ("warmup/det", 1),
        ("warmup/cls", 2),
        ("joint", 4),
    ]


def test_joint_schedule_early_stopping_and_finetune_lr():
    params = {
        **JOINT,
        "lr_schedule": "cosine",
        "final_lr": 1e-5,
        "early_stopping_patience": 4,
        "finetune_lr_factor": 0.1,
        "label_smoothing": 0.1,
        "focal_gamma": 2.0,
        "head_lr_seg": 0.5,
        "head_lr_det": 1.0,
        "head_lr_cls": 2.0,
    }
    plan = build_plan("joint", params, SCENES_CONTEXT)
    warmup, joint, finetune = plan.phases
    assert joint.lr_schedule == LRSchedule("cosine", final_lr=1e-5)
    assert warmup.lr_schedule == finetune.lr_schedule == LRSchedule()
    assert joint.early_stopping.patience == 4 and joint.early_stopping.metric == "val/loss"
    assert warmup.early_stopping is None and finetune.early_stopping is None
    assert finetune.lr == pytest.approx(1e-4)
    assert {tuple(p.head_lr.items()) for p in plan.phases} == {
        (("seg", 0.5), ("det", 1.0), ("cls", 2.0))
    }
    assert (plan.label_smoothing, plan.focal_gamma) == (0.1, 2.0)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("equal", {}),
        ("loss_ratio", {"alpha": -0.5, "momentum": 0.3}),
        ("dwa", {"temperature": 2.0, "momentum": 0.3}),
        ("validation", {"temperature": 2.0, "momentum": 0.3}),
        ("uncertainty", {}),
    ],
)
def test_weighting_gets_only_the_params_its_method_takes(method, expected):
    params = {**JOINT, "weighting": method, "alpha": -0.5, "momentum": 0.3, "temperature": 2.0}
    joint = next(p for p in build_plan("joint", params, SCENES_CONTEXT).phases if p.name == "joint")
    assert joint.weighting == WeightingSpec(method, expected)


def test_weighting_param_names_match_the_weighting_methods():
    from trainables.weighting import WEIGHTING_PARAMS

    assert {m: set(p) for m, p in WEIGHTING_PARAM_NAMES.items()} == {
        m: set(p) for m, p in WEIGHTING_PARAMS.items()
    }


def test_sequential_trains_tasks_in_order_with_ewc_after_the_first():
    params = {**SEQUENTIAL, "order": "cls,seg,det", "use_ewc": True, "ewc_lambda": 100.0}
    plan = build_plan("sequential", {**params, "fisher_batches": 10}, SCENES_CONTEXT)
    assert [p.name for p in plan.phases] == ["task/cls", "task/seg", "task/det"]
    assert [p.tasks for p in plan.phases] == [("cls",), ("seg",), ("det",)]
    assert [p.ewc for p in plan.phases] == [None, EWCSpec(100.0, 10), EWCSpec(100.0, 10)]
    assert {p.epochs for p in plan.phases} == {15}
    assert {p.trainable for p in plan.phases} == {"all"}


def test_sequential_without_ewc_has_none_and_head_lrs_follow_the_task():
    params = {**SEQUENTIAL, "use_ewc": False, "ewc_lambda": 100.0, "head_lr_det": 2.0}
    plan = build_plan("sequential", params, SCENES_CONTEXT)
    assert all(p.ewc is None for p in plan.phases)
    assert [dict(p.head_lr) for p in plan.phases] == [{}, {"det": 2.0}, {}]


@pytest.mark.parametrize(
    ("strategy", "params", "message"),
    [
        ("joint", {**JOINT, "warmup_style": "slow"}, "warmup_style: use one of alternate"),
        ("joint", {**JOINT, "weighting": "gradnorm"}, "weighting: use one of equal"),
        ("joint", {**JOINT, "warmup_epochs": -1}, "warmup_epochs: must be >= 0"),
        ("joint", {**JOINT, "warmup_style": "per_task"}, "joint.warmup_seg: missing parameter"),
        ("joint", {**JOINT, "head_lr_cls": 0.0}, "head_lr.cls: give a positive multiplier"),
        ("sequential", {**SEQUENTIAL, "order": "seg,seg,cls"}, "order: name each task once"),
        ("sequential", {**SEQUENTIAL, "use_ewc": True}, "sequential.ewc_lambda: missing"),
        ("sequential", {**SEQUENTIAL, "order": "seg,depth"}, "not 'depth'"),
    ],
)
def test_impossible_multitask_params_are_refused(strategy, params, message):
    with pytest.raises(PlanError, match=message):
        build_plan(strategy, params, SCENES_CONTEXT)


def test_multitask_strategies_need_data_with_their_tasks():
    with pytest.raises(PlanError, match="synthetic_signs data has tasks cls, not 'seg'"):
        build_plan("joint", JOINT, TINY_CONTEXT)


@pytest.mark.parametrize("strategy", ["progressive", "single_phase"])
def test_single_task_strategies_take_a_head_lr_multiplier(strategy):
    params = {
        "progressive": TINY_PROGRESSIVE,
        "single_phase": {"epochs": 2, "lr": 1e-3, "early_stopping_patience": 0},
    }[strategy]
    plain = build_plan(strategy, params, TINY_CONTEXT)
    faster = build_plan(strategy, {**params, "head_lr_cls": 2.0}, TINY_CONTEXT)
    assert all(phase.head_lr == {} for phase in plain.phases)
    assert all(phase.head_lr == {"cls": 2.0} for phase in faster.phases)
