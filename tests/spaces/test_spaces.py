"""Search spaces: every sampled point and every baseline builds a valid plan."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from spaces import (
    SPACES,
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    SearchSpace,
    SpaceError,
    StrategySpace,
    When,
    build_search_space,
)
from spaces.params import parse_override
from tests.conftest import TINY_CONTEXT
from tests.trainables.test_strategies import context_for
from trainables.phases import WeightingSpec
from trainables.strategies import MULTITASK_TASKS, build_plan

NUM_GROUPS = TINY_CONTEXT.model.num_groups
SAMPLERS = {
    "random": lambda: optuna.samplers.RandomSampler(seed=0),
    "tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
}


def _ask(study: optuna.Study, space: SearchSpace) -> tuple[optuna.Trial, dict[str, Any]]:
    """One trial and its strategy's params by plain name, as the trial driver gets them."""
    trial = study.ask()
    fixed = space.define_by_run(trial)
    values = {k.split("/", 1)[1]: v for k, v in {**trial.params, **fixed}.items() if "/" in k}
    return trial, values


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_every_sampled_point_builds_a_valid_plan(strategy, sampler):
    space = build_search_space({strategy: {}}, NUM_GROUPS)
    (strategy_space,) = space.strategies
    study = optuna.create_study(sampler=SAMPLERS[sampler]())
    for _ in range(40):
        trial, params = _ask(study, space)
        assert trial.params["strategy"] == strategy
        # Only active parameters are sampled: Optuna never sees one the plan ignores.
        assert set(params) == set(strategy_space.active(params))
        plan = build_plan(strategy, params, context_for(strategy))
        assert plan.validate() is plan
        assert all(phase.epochs >= 1 for phase in plan.phases)
        study.tell(trial, plan.total_epochs / 100)


@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_baselines_lie_in_the_default_space_and_build_plans(strategy):
    space = SPACES[strategy](NUM_GROUPS)
    assert space.baselines, "every strategy ships its document's setting as a baseline"
    assert len({b.name for b in space.baselines}) == len(space.baselines)
    assert space.baselines[0].name.startswith("document:")
    for baseline in space.baselines:
        assert baseline.source
        # A value for every active sampled parameter, and none for an inactive one.
        sampled = {
            n for n in space.active(baseline.params) if not isinstance(space.params[n], Fixed)
        }
        assert sampled <= set(baseline.params) <= set(space.active(baseline.params))
        for name, value in baseline.params.items():
            assert space.params[name].contains(value), (name, value)
        build_plan(strategy, baseline.params, context_for(strategy))


@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_extreme_points_are_active_params_and_build_plans(strategy):
    space = SPACES[strategy](NUM_GROUPS)
    points = space.extreme_points()
    for point in points:
        assert list(point) == space.active(point)
        build_plan(strategy, point, context_for(strategy))


def test_the_longest_joint_plan_is_among_the_extreme_points():
    space = SPACES["joint"](NUM_GROUPS)
    context = context_for("joint")
    longest = max(build_plan("joint", p, context).total_epochs for p in space.extreme_points())
    assert longest == 3 * 15 + 60 + 15  # per-task or gradual warmups, joint, fine-tune
    # Overriding the warmup styles' order does not hide the longest one.
    space = space.with_overrides({"warmup_style": ["gradual", "alternate"]})
    longest = max(build_plan("joint", p, context).total_epochs for p in space.extreme_points())
    assert longest == 120


def test_the_joint_document_baseline_is_its_recipe():
    document = SPACES["joint"](NUM_GROUPS).baselines[0]
    assert document.name == "document: joint 5/40/5"
    plan = build_plan("joint", document.params, context_for("joint"))
    assert [(p.name, p.epochs) for p in plan.phases] == [
        ("warmup", 5),
        ("joint", 40),
        ("finetune", 5),
    ]
    warmup, joint, finetune = plan.phases
    assert warmup.task_sampling == "alternate" and warmup.tasks == MULTITASK_TASKS
    assert joint.weighting == WeightingSpec("loss_ratio", {"alpha": 0.5, "momentum": 0.0})
    assert finetune.weighting == WeightingSpec("equal")
    assert {p.lr for p in plan.phases} == {1e-3}
    assert {p.lr_schedule.kind for p in plan.phases} == {"constant"}
    assert joint.early_stopping is None
    assert (plan.label_smoothing, plan.focal_gamma) == (0.0, 0.0)


def test_the_sequential_baselines_are_seg_det_cls_with_and_without_ewc():
    plain, ewc = SPACES["sequential"](NUM_GROUPS).baselines
    for baseline, has_ewc in ((plain, False), (ewc, True)):
        plan = build_plan("sequential", baseline.params, context_for("sequential"))
        assert [p.name for p in plan.phases] == ["task/seg", "task/det", "task/cls"]
        assert [p.ewc is not None for p in plan.phases] == [False, has_ewc, has_ewc]
        assert "15 assumed" in baseline.source


@pytest.mark.parametrize(
    ("strategy", "gate", "value", "present", "absent"),
    [
        ("joint", "weighting", "loss_ratio", {"alpha", "momentum"}, {"temperature"}),
        ("joint", "weighting", "dwa", {"temperature", "momentum"}, {"alpha"}),
        ("joint", "weighting", "uncertainty", set(), {"alpha", "momentum", "temperature"}),
        ("joint", "lr_schedule", "cosine", {"final_lr"}, {"step_size", "step_gamma"}),
        ("joint", "lr_schedule", "constant", set(), {"final_lr", "step_size", "step_gamma"}),
        ("joint", "warmup_style", "alternate", {"warmup_epochs"}, {"warmup_seg", "warmup_cls"}),
        ("joint", "warmup_style", "gradual", {"warmup_seg", "warmup_cls"}, {"warmup_epochs"}),
        ("sequential", "use_ewc", True, {"ewc_lambda", "fisher_batches"}, set()),
        ("sequential", "use_ewc", False, set(), {"ewc_lambda", "fisher_batches"}),
        ("single_phase", "lr_schedule", "plateau", {"plateau_factor"}, {"final_lr"}),
        ("progressive", "lr_schedule", "step", {"step_size", "step_gamma"}, {"plateau_factor"}),
    ],
)
def test_conditional_params_are_sampled_only_when_active(strategy, gate, value, present, absent):
    space = build_search_space({strategy: {}}, NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = 0
    for _ in range(60):
        trial, params = _ask(study, space)
        if params[gate] == value:
            seen += 1
            names = {name.split("/", 1)[1] for name in trial.params if "/" in name}
            assert present <= names and not absent & names
        study.tell(trial, 0.0)
    assert seen, f"{gate}={value!r} never drawn"


def test_a_parameter_is_inactive_when_the_one_it_depends_on_is():
    space = StrategySpace(
        "s",
        {"a": Categorical(("x", "y")), "b": Categorical(("u", "v")), "c": IntRange(1, 2)},
        conditions={"b": When("a", "x"), "c": When("b", "u")},
    )
    assert space.active({"a": "y", "b": "u", "c": 1}) == ["a"]
    assert space.active({"a": "x", "b": "u", "c": 1}) == ["a", "b", "c"]
    assert space.extreme_points() == [
        {"a": "x", "b": "u", "c": 2},
        {"a": "x", "b": "v"},
        {"a": "y"},
    ]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"b": When("c", 1)}, "s.b: its condition needs 'c' declared before it"),
        ({"a": When("b", 1)}, "s.a: its condition needs 'b' declared before it"),
        ({"z": When("a", 1)}, "s.z: a condition for an unknown parameter"),
    ],
)
def test_conditions_must_name_an_earlier_parameter(conditions, message):
    with pytest.raises(SpaceError, match=message):
        StrategySpace("s", {"a": IntRange(0, 1), "b": IntRange(0, 1)}, conditions=conditions)


def test_overridden_conditional_params_keep_their_condition():
    overrides = {"alpha": [0.2, 0.3], "momentum": 0.5, "weighting": ["loss_ratio", "dwa"]}
    space = build_search_space({"joint": overrides}, NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(20):
        trial, params = _ask(study, space)
        drawn.add(params["weighting"])
        if params["weighting"] == "loss_ratio":
            assert 0.2 <= trial.params["joint/alpha"] <= 0.3
        else:
            assert "alpha" not in params and "temperature" in params
        # A fixed value reaches the config as any other, still only when active.
        assert params["momentum"] == 0.5 and "joint/momentum" not in trial.params
        build_plan("joint", params, context_for("joint"))
        study.tell(trial, 0.0)
    assert drawn == {"loss_ratio", "dwa"}


def test_a_fixed_conditional_param_is_left_out_while_inactive():
    space = build_search_space({"sequential": {"use_ewc": False, "ewc_lambda": 10.0}}, NUM_GROUPS)
    _, params = _ask(optuna.create_study(), space)
    assert "ewc_lambda" not in params and params["use_ewc"] is False


def test_baseline_points_carry_only_the_params_active_under_the_overrides():
    space = build_search_space({"joint": {"weighting": "dwa"}}, NUM_GROUPS)
    document = space.points_to_evaluate()[0]
    assert "joint/alpha" not in document and "joint/warmup_epochs" in document
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(document)
    trial, params = _ask(study, space)
    assert params["weighting"] == "dwa" and trial.params["joint/lr"] == 1e-3
    assert "temperature" in params  # the document has none: the sampler draws it


@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_enqueued_baselines_are_replayed_exactly(strategy):
    space = build_search_space({strategy: {}}, NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    points = space.points_to_evaluate()
    for point in points:
        study.enqueue_trial(point)
    for point in points:
        trial, _ = _ask(study, space)
        fixed = space.define_by_run(trial)
        assert {**trial.params, **fixed} == point
        study.tell(trial, 0.0)


def test_progressive_baseline_is_the_documents_recipe():
    (baseline,) = SPACES["progressive"](6).baselines
    plan = build_plan("progressive", baseline.params, TINY_CONTEXT)
    assert [p.epochs for p in plan.phases] == [3, 3, 4]
    assert [p.lr for p in plan.phases] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert [p.trainable for p in plan.phases] == ["none", 2, "all"]


def test_points_to_evaluate_enqueue_the_baselines():
    space = build_search_space({"progressive": {}, "single_phase": {}, "joint": {}}, NUM_GROUPS)
    points = space.points_to_evaluate()
    assert [p["strategy"] for p in points] == ["progressive", "single_phase"] + ["joint"] * 5
    study = optuna.create_study()
    for point in points:
        study.enqueue_trial(point)
    first = study.ask()
    space.define_by_run(first)
    assert first.params["progressive/base_lr"] == 1e-3
    assert first.params["progressive/frozen_epochs"] == 3


def test_fixed_parameters_reach_the_trial_config():
    # A fixed schedule: a sampled one_cycle would carry its fixed div and final_div too.
    overrides = {"lr_decay": 10.0, "lr_schedule": "constant"}
    space = build_search_space({"progressive": overrides}, NUM_GROUPS)
    trial = optuna.create_study().ask()
    fixed = space.define_by_run(trial)
    assert fixed == {
        "progressive/lr_decay": 10.0,
        "progressive/preset": None,
        "progressive/lr_schedule": "constant",
        "progressive/lr_warmup_epochs": 0,
    }
    assert "progressive/lr_decay" not in trial.params


@pytest.mark.parametrize(
    ("default", "raw", "expected"),
    [
        (FloatRange(1e-4, 1e-2, log=True), [1e-3, 1e-2], FloatRange(1e-3, 1e-2, log=True)),
        (IntRange(1, 5), [2, 3], IntRange(2, 3)),
        (IntRange(1, 5), 4, Fixed(4)),
        (Categorical((32, 64)), [16, 32, 128], Categorical((16, 32, 128))),
        (FloatRange(0.0, 0.5), {"low": 0.1, "high": 0.2}, FloatRange(0.1, 0.2)),
        (IntRange(1, 5), {"choices": [1, 3]}, Categorical((1, 3))),
        # YAML reads 1e-3 (no dot) as a string.
        (FloatRange(1e-4, 1e-2, log=True), ["1e-4", "1e-3"], FloatRange(1e-4, 1e-3, log=True)),
        (FloatRange(1e-4, 1e-2, log=True), "1e-3", Fixed(1e-3)),
        (IntRange(1, 5), 4.0, Fixed(4)),
    ],
)
def test_overrides_keep_the_shape_of_the_default(default, raw, expected):
    assert parse_override("p", default, raw) == expected


@pytest.mark.parametrize(
    ("default", "raw", "message"),
    [
        (FloatRange(0.0, 1.0), [1.0, 0.0], "inverted"),
        (FloatRange(1e-4, 1e-2, log=True), [0.0, 1e-2], "log range needs low > 0"),
        (IntRange(1, 5), [1, 2, 3], "give a range as"),
        (Categorical((1, 2)), {"choices": []}, "at least one choice"),
        (FloatRange(0.0, 1.0), ["low", 1.0], "a range takes numbers"),
        (FloatRange(0.0, 1.0), "nan", "takes a number"),
        (IntRange(1, 5), {"low": 1, "high": 5, "step": 0}, "step must be >= 1"),
    ],
)
def test_bad_overrides_name_the_fix(default, raw, message):
    with pytest.raises(SpaceError, match=message):
        parse_override("p", default, raw)


@pytest.mark.parametrize(
    ("strategy", "overrides", "message"),
    [
        ("joint", {"alpha": [1.0, -1.0]}, "joint.space.alpha: range [1.0, -1.0] is inverted"),
        ("joint", {"warmup_seg": [0, 2.5]}, "joint.space.warmup_seg: takes whole numbers"),
        ("joint", {"lr": "fast"}, "joint.space.lr: takes a number, got 'fast'"),
        ("joint", {"momentum": {"lo": 0}}, "joint.space.momentum: give a range as {low, high}"),
        ("joint", {"ewc_lambda": 10.0}, "joint.space.ewc_lambda: unknown parameter"),
        ("sequential", {"ewc_lambda": [0, 10]}, "sequential.space.ewc_lambda: a log range"),
        ("sequential", {"task_epochs": [True, 3]}, "sequential.space.task_epochs: takes whole"),
        ("progressive", {"final_lr": [1e-3, 1e-5]}, "progressive.space.final_lr: range"),
    ],
)
def test_bad_overrides_of_any_parameter_are_one_line(strategy, overrides, message):
    with pytest.raises(SpaceError) as error:
        build_search_space({strategy: overrides}, NUM_GROUPS)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_fixed_parameter_applies_to_the_baselines_too():
    space = build_search_space({"progressive": {"batch_size": 64}}, NUM_GROUPS)
    study = optuna.create_study()
    study.enqueue_trial(space.points_to_evaluate()[0])  # the document's batch is 32
    trial = study.ask()
    fixed = space.define_by_run(trial)
    assert trial.params["progressive/base_lr"] == 1e-3  # the rest is the baseline
    assert fixed["progressive/batch_size"] == 64  # the user's fixed value wins


@pytest.mark.parametrize(
    ("override", "epochs"),
    [("small", [[3, 2, 2]]), (["small", "medium", "large"], [[3, 2, 2], [3, 3, 4], [5, 10, 15]])],
)
def test_the_documents_presets_are_selectable_from_an_experiment_file(override, epochs):
    space = build_search_space({"progressive": {"preset": override}}, NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        values = {k.split("/", 1)[1]: v for k, v in {**trial.params, **fixed}.items() if "/" in k}
        assert "frozen_epochs" not in values  # a preset replaces the phase lengths
        plan = build_plan("progressive", values, TINY_CONTEXT)
        seen.add(tuple(p.epochs for p in plan.phases))
        study.tell(trial, 0.0)
    assert seen == {tuple(e) for e in epochs}


def test_a_fixed_preset_replaces_the_baselines_phase_lengths():
    space = build_search_space({"progressive": {"preset": "small"}}, NUM_GROUPS)
    (point,) = space.points_to_evaluate()
    assert point["progressive/preset"] == "small"
    assert not any(
        name.endswith(("frozen_epochs", "partial_epochs", "full_epochs")) for name in point
    )
    params = {k.split("/", 1)[1]: v for k, v in point.items() if k != "strategy"}
    plan = build_plan("progressive", params, TINY_CONTEXT)
    assert [p.epochs for p in plan.phases] == [3, 2, 2]
    assert plan.phases[0].lr == 1e-3  # the rest is the document's recipe


def test_every_built_in_strategy_has_a_plan_builder_and_a_space_under_one_name():
    from spaces import SPACES
    from trainables.strategies import BUILTIN_STRATEGIES
    from trainables.strategy_names import BUILTIN_STRATEGY_NAMES

    assert set(SPACES) == set(BUILTIN_STRATEGIES) == set(BUILTIN_STRATEGY_NAMES)
