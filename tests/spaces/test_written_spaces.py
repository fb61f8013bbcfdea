"""Written spaces read as the built-ins' do, and the built-ins written out make their plans."""

from __future__ import annotations

import dataclasses
from typing import Any

import optuna
import pytest

from spaces import (
    SPACES,
    WRITTEN_BUILTINS,
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    SearchSpace,
    SpaceError,
    When,
    check_parameters,
    written_builtin,
    written_space,
)
from tests.conftest import TINY_CONTEXT
from trainables.strategies import WrittenStrategy, build_plan

NUM_GROUPS = TINY_CONTEXT.model.num_groups


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"low": 1, "high": 3}, IntRange(1, 3)),
        ([1, 3], IntRange(1, 3)),
        ({"low": 2, "high": 64, "log": True}, IntRange(2, 64, log=True)),
        ({"low": 1.0e-4, "high": 1.0e-2, "log": True}, FloatRange(1e-4, 1e-2, log=True)),
        (["1e-4", "1e-2"], FloatRange(1e-4, 1e-2)),
        ([1.5, 4.0], FloatRange(1.5, 4.0)),
        ({"low": 0, "high": 10, "step": 2}, IntRange(0, 10, 2)),
        ({"choices": [10, 100]}, Categorical((10, 100))),
        ({"choices": ["cosine", "one_cycle"]}, Categorical(("cosine", "one_cycle"))),
        (0.3, Fixed(0.3)),
        ("cosine", Fixed("cosine")),
        ({"value": 25.0}, Fixed(25.0)),
    ],
)
def test_every_written_form_reads_as_its_domain(raw, expected):
    assert written_space("s", {"p": raw}, []).params["p"] == expected


def test_when_switches_a_parameter_on_under_an_earlier_ones_values():
    space = written_space(
        "s",
        {
            "schedule": {"choices": ["constant", "cosine", "step"]},
            "final_lr": {"low": 1e-6, "high": 1e-4, "when": {"schedule": "cosine"}},
            "gamma": {"low": 0.1, "high": 0.5, "when": {"schedule": ["step", "cosine"]}},
        },
        [],
    )
    assert space.conditions == {
        "final_lr": When("schedule", "cosine"),
        "gamma": When("schedule", "step", "cosine"),
    }
    assert space.active({"schedule": "constant", "final_lr": 1e-5}) == ["schedule"]


@pytest.mark.parametrize(
    ("raw_space", "baselines", "message"),
    [
        ({"p": [1, 2, 3]}, [], "strategies.s.space.p: [low, high] takes two numbers"),
        ({"p": {"low": 3, "high": 1}}, [], "strategies.s.space.p: range [3, 1] is inverted"),
        ({"p": {"low": 0.0, "high": 1.0, "log": True}}, [], "a log range needs low > 0"),
        ({"p": {"min": 1, "max": 2}}, [], "strategies.s.space.p.min: unknown key"),
        ({"p": {"choices": [1], "low": 0}}, [], "either choices or a range"),
        ({"p": {"choices": "ab"}}, [], "strategies.s.space.p.choices: give a list"),
        ({"p": {"low": 1, "high": 2, "when": {"q": 1}}}, [], "needs 'q' declared before it"),
        ({"p": [1, 5]}, [{"p": 9}], "strategies.s.baselines[0].p: 9 is outside the space"),
        ({"p": [1, 5]}, [{"p": 2.5}], "baselines[0].p: takes a whole number, got 2.5"),
        ({"p": [1, 5]}, [{"q": 2}], "baselines[0].q: not a parameter of the space"),
        ({"p": [1, 5], "q": [0.0, 1.0]}, [{"p": 2}], "baselines[0]: give a value for q"),
        ({"p": [1, 5]}, [3], "baselines[0]: give a mapping of parameter values"),
        ({"p": [1, 5]}, {"p": 2}, "strategies.s.baselines: give a list"),
    ],
)
def test_a_space_or_baseline_that_cannot_be_sampled_is_one_line(raw_space, baselines, message):
    with pytest.raises(SpaceError) as caught:
        written_space("s", raw_space, baselines)
    assert message in str(caught.value)


def test_baselines_are_evaluated_first_with_the_fixed_values():
    space = written_space(
        "s", {"lr": [1e-4, 1e-2], "epochs": 4}, [{"lr": 2e-3}, {"lr": 1e-3, "epochs": 9}]
    )
    assert SearchSpace((space,)).points_to_evaluate() == [
        {"strategy": "s", "s/lr": 2e-3, "s/epochs": 4},
        {"strategy": "s", "s/lr": 1e-3, "s/epochs": 4},  # a fixed value replaces the baseline's
    ]


@pytest.mark.parametrize(
    ("references", "steps", "message"),
    [
        (
            {"lr": "phases[0].lr", "x": "phases[1].lr"},
            {},
            "phases[1].lr: uses {x}, which the space",
        ),
        ({"lr": "phases[0].lr"}, {"lr": "phases[1].as"}, "step variable 'lr' is also a space"),
        ({}, {}, "strategies.s.space.lr: no phase uses it"),
    ],
)
def test_phases_and_space_name_the_same_parameters(references, steps, message):
    space = written_space("s", {"lr": [1e-4, 1e-2]}, [])
    with pytest.raises(SpaceError) as caught:
        check_parameters(space, references, steps)
    assert message in str(caught.value)


def test_a_parameter_used_only_as_a_condition_counts_as_used():
    space = written_space(
        "s",
        {"kind": {"choices": ["a", "b"]}, "lr": {"low": 0.1, "high": 1.0, "when": {"kind": "a"}}},
        [],
    )
    check_parameters(space, {"lr": "phases[0].lr"}, {})


def _written(strategy: str) -> tuple[Any, WrittenStrategy]:
    definition = written_builtin(strategy, NUM_GROUPS)
    space = written_space(f"my_{strategy}", definition["space"], definition["baselines"])
    written = WrittenStrategy.parse(f"my_{strategy}", definition)
    check_parameters(space, written.references(), written.step_variables())
    return space, written


@pytest.mark.parametrize("epoch_scale", [1.0, 0.5])
@pytest.mark.parametrize("strategy", sorted(WRITTEN_BUILTINS))
def test_a_builtin_written_out_makes_the_builtins_plans(strategy, epoch_scale):
    """The contract between the two kinds of strategy: for the built-in's baselines and
    for hundreds of points sampled across its whole space (every schedule kind), the
    written definition's plan equals the Python builder's, field for field."""
    space, written = _written(strategy)
    search = SearchSpace((space,))
    context = dataclasses.replace(
        TINY_CONTEXT, epoch_scale=epoch_scale, custom={written.name: written}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in search.points_to_evaluate():
        study.enqueue_trial(point)
    kinds = set()
    for _ in range(300):
        trial = study.ask()
        fixed = search.define_by_run(trial)
        params = {k.split("/", 1)[1]: v for k, v in {**trial.params, **fixed}.items() if "/" in k}
        expected = build_plan(strategy, params, context)
        got = build_plan(written.name, params, context)
        assert dataclasses.replace(got, strategy=strategy) == expected, params
        kinds.add(params["lr_schedule"])
        study.tell(trial, 0.0)
    assert kinds == set(SPACES[strategy](NUM_GROUPS).params["lr_schedule"].choices)
