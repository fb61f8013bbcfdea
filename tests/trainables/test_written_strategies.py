"""Strategies written in the experiment file expand into the plans their text says."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest
import yaml

from tests.conftest import TINY_CONTEXT
from tests.trainables.test_strategies import SCENES_CONTEXT
from trainables.phases import EarlyStopping, EWCSpec, LRSchedule, PhasePlan, PlanError
from trainables.strategies import FactoryStrategy, PlanContext, WrittenStrategy, build_plan

FINE_TUNE = yaml.safe_load(
    """
phases:
  - {name: frozen, epochs: "{freeze_epochs}", trainable: none, lr: "{base_lr}"}
  - name: unfrozen
    epochs: "{epochs}"
    trainable: all
    lr: "{base_lr} / 2"
    layer_lr_decay: "1 / {lr_mult} ** 0.2"
    lr_schedule: {kind: one_cycle, pct_start: 0.3}
"""
)
GRADUAL = yaml.safe_load(
    """
phases:
  - {name: head, epochs: 1, trainable: none, lr: "{lr}"}
  - repeat: "{steps}"
    as: i
    phase: {name: "unfreeze {i}", epochs: 1, trainable: "{i}", lr: "{lr} / {decay} ** {i}"}
  - name: all
    epochs: "{final_epochs}"
    trainable: all
    lr: "{lr} / {decay} ** ({steps} + 1)"
    lr_schedule: {kind: cosine, final_lr: 1.0e-6}
"""
)


def _plan(name, definition, params, context=TINY_CONTEXT):
    written = WrittenStrategy.parse(name, definition)
    return build_plan(name, params, dataclasses.replace(context, custom={name: written}))


def test_fine_tune_is_fastais_recipe():
    params = {"freeze_epochs": 1, "base_lr": 2e-3, "epochs": 6, "lr_mult": 100}
    plan = _plan("fine_tune", FINE_TUNE, params)
    frozen, unfrozen = plan.phases
    assert plan.strategy == "fine_tune"
    assert (frozen.name, frozen.epochs, frozen.trainable, frozen.lr) == ("frozen", 1, "none", 2e-3)
    assert (unfrozen.epochs, unfrozen.trainable, unfrozen.lr) == (6, "all", 1e-3)
    assert unfrozen.layer_lr_decay == pytest.approx(100**-0.2)
    assert unfrozen.lr_schedule == LRSchedule("one_cycle", pct_start=0.3)
    assert frozen.lr_schedule == LRSchedule()  # what a phase leaves out keeps its default
    assert plan.model == TINY_CONTEXT.model and plan.data == TINY_CONTEXT.data


@pytest.mark.parametrize("steps", [0, 1, 3, 5])
def test_gradual_unfreeze_repeats_one_phase_per_step(steps):
    plan = _plan("gradual", GRADUAL, {"lr": 1e-2, "steps": steps, "decay": 2.0, "final_epochs": 3})
    assert [p.name for p in plan.phases] == [
        "head",
        *(f"unfreeze {i}" for i in range(1, steps + 1)),
        "all",
    ]
    assert [p.trainable for p in plan.phases] == ["none", *range(1, steps + 1), "all"]
    assert [p.lr for p in plan.phases] == pytest.approx([1e-2 / 2.0**i for i in range(steps + 2)])
    assert plan.phases[-1].lr_schedule == LRSchedule("cosine", final_lr=1e-6)


def test_the_search_epoch_scale_shortens_written_phases_as_it_does_the_builtins():
    definition = {
        "phases": [
            {
                "name": "a",
                "epochs": 10,
                "trainable": "all",
                "lr": 1e-3,
                "lr_schedule": {"kind": "step", "step_size": 4, "warmup_epochs": 2},
            },
            {"name": "skipped", "epochs": "{extra}", "trainable": "all", "lr": 1e-3},
        ]
    }
    context = dataclasses.replace(TINY_CONTEXT, epoch_scale=0.5)
    plan = _plan("scaled", definition, {"extra": 0}, context)
    (phase,) = plan.phases  # a phase whose epochs come out 0 is left out
    assert phase.epochs == 5
    assert (phase.lr_schedule.step_size, phase.lr_schedule.warmup_epochs) == (2, 1)


def test_every_phase_field_can_be_written_so_a_multitask_recipe_works():
    definition = yaml.safe_load(
        textwrap.dedent(
            """
            phases:
              - name: warmup
                epochs: 2
                trainable: all
                lr: "{lr}"
                tasks: [seg, det, cls]
                task_sampling: alternate
              - name: joint
                epochs: "{joint_epochs}"
                trainable: "{depth}"
                lr: "{lr}"
                tasks: seg, det, cls
                weighting: {method: loss_ratio, params: {alpha: "{alpha}", momentum: 0.5}}
                head_lr: {seg: "{seg_lr}", det: 1.0}
                ewc: {strength: "{ewc}", fisher_batches: 4}
                early_stopping: {patience: 3, metric: val/seg_miou, mode: max, restore_best: false}
                lr_schedule: {kind: plateau, factor: 0.5, patience: 1, warmup_epochs: 1}
            batch_size: 16
            weight_decay: "{wd}"
            label_smoothing: 0.1
            focal_gamma: 2
            dropout: 0.3
            """
        )
    )
    params = {"lr": 1e-3, "joint_epochs": 4, "depth": 3, "alpha": 0.5, "seg_lr": 2.0}
    plan = _plan("mine", definition, {**params, "ewc": 10.0, "wd": 1e-4}, SCENES_CONTEXT)
    warmup, joint = plan.phases
    assert warmup.tasks == ("seg", "det", "cls") and warmup.task_sampling == "alternate"
    assert joint.trainable == 3 and joint.tasks == ("seg", "det", "cls")
    assert joint.weighting.method == "loss_ratio"
    assert dict(joint.weighting.params) == {"alpha": 0.5, "momentum": 0.5}
    assert dict(joint.head_lr) == {"seg": 2.0, "det": 1.0}
    assert joint.ewc == EWCSpec(10.0, 4)
    assert joint.early_stopping == EarlyStopping(3, "val/seg_miou", "max", restore_best=False)
    assert joint.lr_schedule == LRSchedule("plateau", factor=0.5, patience=1, warmup_epochs=1)
    assert (plan.batch_size, plan.weight_decay, plan.label_smoothing) == (16, 1e-4, 0.1)
    assert (plan.focal_gamma, plan.model.dropout) == (2.0, 0.3)
    # The plan is data like any other: it round-trips through the dict workers get.
    assert PhasePlan.from_dict(plan.to_dict()) == plan


def test_a_field_whose_parameter_is_switched_off_keeps_its_default():
    definition = {
        "phases": [
            {
                "name": "p",
                "epochs": 3,
                "trainable": "all",
                "lr": "{lr}",
                "lr_schedule": {"kind": "{schedule}", "final_lr": "min({final_lr}, {lr})"},
                "early_stopping": {"patience": "{patience}"},
            }
        ]
    }
    (phase,) = _plan("s", definition, {"lr": 1e-3, "schedule": "constant"}).phases
    assert phase.lr_schedule == LRSchedule("constant")
    assert phase.early_stopping is None  # its required patience is off: no early stopping
    (phase,) = _plan(
        "s", definition, {"lr": 1e-6, "schedule": "cosine", "final_lr": 1e-5, "patience": 0}
    ).phases
    assert phase.lr_schedule == LRSchedule("cosine", final_lr=1e-6)
    assert phase.early_stopping is None  # a patience of 0 is off, as for the built-ins


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr_shedule": {}}, "phases[0].lr_shedule: unknown field; phases[0] takes name, epochs"),
        ({"lr_schedule": {"pct": 0.3}}, "phases[0].lr_schedule.pct: unknown field"),
        ({"epochs": "{n} / 2"}, "phases[0].epochs: must come out a whole number, got 1.5"),
        ({"trainable": "{n} * 0.5"}, "phases[0].trainable: must come out a whole number"),
        ({"trainable": "some"}, "'some' is not allowed"),
        ({"lr": "{n} * 0"}, "phases[0] (p).lr: must be > 0, got 0.0"),
        ({"trainable": "{n} + 4"}, "the backbone has 6 layer groups"),
        ({"epochs": "{n} - 4"}, "phases[0].epochs: must be >= 0"),
        ({"lr": "{off}"}, "phases[0].lr: uses {off}, which is switched off here"),
        ({"tasks": 3}, "phases[0].tasks: give a list"),
        ({"epochs": 2.5}, "phases[0].epochs: must be a whole number, got 2.5"),
        ({"lr_schedule": "cosine"}, "phases[0].lr_schedule: give a mapping of its fields"),
    ],
)
def test_a_phase_that_cannot_run_is_one_line_naming_its_field(change, message):
    phase = {"name": "p", "epochs": 2, "trainable": "all", "lr": 1e-3, **change}
    with pytest.raises(PlanError) as caught:
        _plan("s", {"phases": [phase]}, {"n": 3})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({}, "phases: a written strategy needs its list of phases"),
        ({"phases": []}, "phases: give a list of phases"),
        ({"phases": [{"name": "p", "epochs": 1, "lr": 1.0}]}, "phases[0].trainable: required"),
        ({"phases": [], "optimizer": "sgd"}, "optimizer: unknown field"),
        ({"phases": [{"repeat": 2, "phase": {}, "phases": []}]}, "give the repeated phase as"),
        ({"phases": [{"repeat": 2, "as": "2x", "phase": {}}]}, "phases[0].as: name the step"),
        ({"phases": [{"repeat": 2, "times": 2}]}, "phases[0].times: unknown field"),
    ],
)
def test_a_definition_that_cannot_be_read_names_its_field(definition, message):
    with pytest.raises(PlanError) as caught:
        WrittenStrategy.parse("s", definition)
    assert message in str(caught.value)


def test_references_and_step_variables_carry_the_path_of_their_first_use():
    written = WrittenStrategy.parse("gradual", GRADUAL)
    assert written.references() == {
        "lr": "phases[0].lr",
        "steps": "phases[1].repeat",
        "decay": "phases[1].phase.lr",
        "final_epochs": "phases[2].epochs",
    }
    assert written.step_variables() == {"i": "phases[1].as"}


def test_a_plan_factory_builds_the_plan_and_its_failures_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "my_recipes.py").write_text(
        textwrap.dedent(
            """
            from trainables.phases import Phase, PhasePlan

            def build(params, context):
                steps = range(1, params["n"] + 1)
                phases = [Phase(f"p{k}", 1, k, params["lr"] / 2**k) for k in steps]
                return PhasePlan("anything", tuple(phases), model=context.model, data=context.data)

            def broken(params, context):
                return {"not": "a plan"}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    context = dataclasses.replace(
        TINY_CONTEXT, custom={"mine": FactoryStrategy("mine", "my_recipes:build")}
    )
    plan = build_plan("mine", {"lr": 1e-2, "n": 3}, context)
    assert plan.strategy == "mine"  # the plan carries the experiment's name for it
    assert [p.trainable for p in plan.phases] == [1, 2, 3]
    with pytest.raises(PlanError, match=r"the backbone has 6 layer groups"):
        build_plan("mine", {"lr": 1e-2, "n": 7}, context)
    with pytest.raises(PlanError, match=r"my_recipes:build\(params, context\) failed: KeyError"):
        build_plan("mine", {"n": 1}, context)
    broken = PlanContext(custom={"b": FactoryStrategy("b", "my_recipes:broken")})
    with pytest.raises(PlanError, match="must return a PhasePlan, got dict"):
        build_plan("b", {}, broken)
    with pytest.raises(PlanError, match="cannot import 'no_such_module'"):
        FactoryStrategy("x", "no_such_module:build").check_importable()
    sys.modules.pop("my_recipes", None)
