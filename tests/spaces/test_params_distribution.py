"""Domains as Optuna distributions: the same ones ``suggest`` records."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from spaces import SPACES, Categorical, Fixed, FloatRange, IntRange, StrategySpace

NUM_GROUPS = 6


def test_each_domain_kind_maps_to_its_distribution() -> None:
    assert FloatRange(1e-4, 1e-2, log=True).distribution() == FloatDistribution(
        1e-4, 1e-2, log=True
    )
    assert FloatRange(0.0, 0.5).distribution() == FloatDistribution(0.0, 0.5)
    assert IntRange(1, 9, step=2).distribution() == IntDistribution(1, 9, step=2)
    choices = (None, True, False, 3, 0.5, "cosine")
    assert Categorical(choices).distribution() == CategoricalDistribution(choices)
    assert Fixed(3).distribution() is None


def _progressive() -> StrategySpace:
    # A preset override adds a categorical with a None choice to the default space.
    return SPACES["progressive"](NUM_GROUPS).with_overrides({"preset": [None, "small", "medium"]})


def test_progressive_space_has_every_domain_kind() -> None:
    domains = _progressive().params.values()
    assert any(isinstance(d, IntRange) for d in domains)
    assert any(isinstance(d, FloatRange) and d.log for d in domains)
    assert any(isinstance(d, FloatRange) and not d.log for d in domains)
    assert any(isinstance(d, Categorical) and None in d.choices for d in domains)


@pytest.mark.parametrize(
    "space",
    [_progressive(), SPACES["sequential"](NUM_GROUPS)],
    ids=["progressive", "sequential"],
)
def test_every_corner_of_a_space_is_a_valid_optuna_trial(space: StrategySpace) -> None:
    """Optuna checks that each value lies in its distribution, None and bool choices
    (sequential's ``use_ewc``) included."""
    distributions = {name: domain.distribution() for name, domain in space.params.items()}
    for point in space.corner_points():
        searched = {name: value for name, value in point.items() if distributions[name] is not None}
        trial = optuna.trial.create_trial(
            params=searched,
            distributions={name: distributions[name] for name in searched},
            value=0.0,
        )
        assert trial.params == searched


@pytest.mark.parametrize("strategy", list(SPACES))
def test_distributions_match_what_suggest_records(strategy: str) -> None:
    space = SPACES[strategy](NUM_GROUPS)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        space.sample(trial)
        for key, recorded in trial.distributions.items():
            name = key.split("/", 1)[1]
            assert space.params[name].distribution() == recorded, name
