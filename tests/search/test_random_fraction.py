"""A share of the trials after TPE's start-up is drawn at random; the rest are TPE's."""

from __future__ import annotations

import pickle
import warnings

import optuna
import pytest

from search.random_fraction import RandomFractionSampler
from search.sampler import IncrementalTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

STARTUP = 5


def _objective(trial: optuna.Trial) -> float:
    # One narrow peak near x = 0.1: TPE soon proposes around it, random draws do not.
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    return -abs(x - 0.1) - (0.5 if kind == "b" else 0.0)


def _sampler(fraction: float, seed: int = 3) -> RandomFractionSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = IncrementalTPESampler(
            seed=seed, multivariate=True, group=True, n_startup_trials=STARTUP
        )
    return RandomFractionSampler(tpe, fraction, after_trials=STARTUP, seed=seed)


def _run(sampler: optuna.samplers.BaseSampler, trials: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(_objective, n_trials=trials)
    return study


def test_no_fraction_suggests_exactly_what_tpe_does():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = IncrementalTPESampler(seed=3, multivariate=True, group=True, n_startup_trials=5)
    plain = _run(tpe, 30)
    wrapped = _run(_sampler(0.0), 30)
    assert [t.params for t in wrapped.trials] == [t.params for t in plain.trials]


def test_start_up_is_tpes_own_then_about_the_fraction_is_random_and_spread():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = IncrementalTPESampler(seed=3, multivariate=True, group=True, n_startup_trials=5)
    plain = _run(tpe, STARTUP)
    sampler = _sampler(0.33)
    study = _run(sampler, 120)
    trials = study.trials
    # The start-up trials are the ones TPE alone draws.
    assert [t.params for t in trials[:STARTUP]] == [t.params for t in plain.trials]
    assert not any(sampler.is_random(t.number) for t in trials[:STARTUP])
    modelled = [t for t in trials[STARTUP:] if not sampler.is_random(t.number)]
    drawn = [t for t in trials[STARTUP:] if sampler.is_random(t.number)]
    assert 0.2 < len(drawn) / (len(drawn) + len(modelled)) < 0.45
    # TPE's suggestions gather at the peak; the random ones cover the range.
    far = 0.5
    assert sum(abs(t.params["x"] - 0.1) > far for t in modelled) / len(modelled) < 0.1
    assert sum(abs(t.params["x"] - 0.1) > far for t in drawn) / len(drawn) > 0.25
    assert {t.params["kind"] for t in drawn} == {"a", "b"}


def test_which_trials_are_random_depends_on_the_seed_and_survives_pickling():
    first = _sampler(0.33, seed=11)
    study = _run(first, 20)
    chosen = [first.is_random(t.number) for t in study.trials]
    again = _sampler(0.33, seed=11)
    assert [again.is_random(t.number) for t in _run(again, 20).trials] == chosen
    other = _sampler(0.33, seed=12)
    assert [other.is_random(t.number) for t in _run(other, 20).trials] != chosen
    # Tune pickles the searcher; the copy keeps its choices and goes on making them.
    copy = pickle.loads(pickle.dumps(first))
    assert [copy.is_random(t.number) for t in study.trials] == chosen
    study.sampler = copy
    study.optimize(_objective, n_trials=10)
    assert sum(copy.is_random(t.number) for t in study.trials[20:]) > 0


def test_a_fraction_of_one_or_more_is_refused():
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        RandomFractionSampler(optuna.samplers.RandomSampler(), 1.0, after_trials=0)


def test_the_search_wraps_its_tpe_when_configured(tmp_path):
    from search.config import ExperimentConfig
    from search.searcher import build_searcher

    default = ExperimentConfig()
    sampler = build_searcher(default, default.search_space(), f"sqlite:///{tmp_path}/a.db")
    assert isinstance(sampler._sampler, IncrementalTPESampler)
    config = ExperimentConfig.model_validate(
        {"search": {"random_fraction": 0.25, "startup_trials": 7}}
    )
    wrapped = build_searcher(config, config.search_space(), f"sqlite:///{tmp_path}/b.db")._sampler
    assert isinstance(wrapped, RandomFractionSampler)
    assert isinstance(wrapped.base, IncrementalTPESampler)
    assert (wrapped.fraction, wrapped.after_trials) == (0.25, 7)
