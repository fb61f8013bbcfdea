"""Search spaces: every sampled point and every baseline builds a valid plan."""

from __future__ import annotations

import optuna
import pytest

from spaces import SPACES, Categorical, Fixed, FloatRange, IntRange, SpaceError, build_search_space
from spaces.params import parse_override
from tests.conftest import TINY_CONTEXT
from trainables.strategies import build_plan

NUM_GROUPS = TINY_CONTEXT.model.num_groups


@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_every_sampled_point_builds_a_valid_plan(strategy):
    space = build_search_space({strategy: {}}, NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        assert trial.params["strategy"] == strategy
        params = {k.split("/", 1)[1]: v for k, v in {**trial.params, **fixed}.items() if "/" in k}
        plan = build_plan(strategy, params, TINY_CONTEXT)
        assert plan.validate() is plan
        assert all(phase.epochs >= 1 for phase in plan.phases)
        study.tell(trial, 0.0)


@pytest.mark.parametrize("strategy", sorted(SPACES))
def test_baselines_lie_in_the_default_space_and_build_plans(strategy):
    space = SPACES[strategy](NUM_GROUPS)
    assert space.baselines, "every strategy ships its document's setting as a baseline"
    for baseline in space.baselines:
        assert baseline.source
        assert set(baseline.params) == set(space.params)
        for name, value in baseline.params.items():
            assert space.params[name].contains(value), (name, value)
        build_plan(strategy, baseline.params, TINY_CONTEXT)


def test_progressive_baseline_is_the_documents_recipe():
    (baseline,) = SPACES["progressive"](6).baselines
    plan = build_plan("progressive", baseline.params, TINY_CONTEXT)
    assert [p.epochs for p in plan.phases] == [3, 3, 4]
    assert [p.lr for p in plan.phases] == pytest.approx([1e-3, 1e-4, 1e-5])
    assert [p.trainable for p in plan.phases] == ["none", 2, "all"]


def test_points_to_evaluate_enqueue_the_baselines():
    space = build_search_space({"progressive": {}, "single_phase": {}}, NUM_GROUPS)
    points = space.points_to_evaluate()
    assert [p["strategy"] for p in points] == ["progressive", "single_phase"]
    study = optuna.create_study()
    for point in points:
        study.enqueue_trial(point)
    first = study.ask()
    space.define_by_run(first)
    assert first.params["progressive/base_lr"] == 1e-3
    assert first.params["progressive/frozen_epochs"] == 3


def test_fixed_parameters_reach_the_trial_config():
    space = build_search_space({"progressive": {"lr_decay": 10.0}}, NUM_GROUPS)
    trial = optuna.create_study().ask()
    fixed = space.define_by_run(trial)
    assert fixed == {"progressive/lr_decay": 10.0, "progressive/preset": None}
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
    ],
)
def test_bad_overrides_name_the_fix(default, raw, message):
    with pytest.raises(SpaceError, match=message):
        parse_override("p", default, raw)


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
        plan = build_plan("progressive", values, TINY_CONTEXT)
        seen.add(tuple(p.epochs for p in plan.phases))
        study.tell(trial, 0.0)
    assert seen == {tuple(e) for e in epochs}
