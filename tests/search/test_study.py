"""The study hears what happened to each trial: complete, pruned or failed."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from search.study import trial_state


@pytest.mark.parametrize(
    ("result", "error", "state", "value"),
    [
        ({"target_score": 0.9, "plan_complete": 1}, False, TrialState.COMPLETE, 0.9),
        ({"target_score": 0.4, "plan_complete": 0}, False, TrialState.PRUNED, None),
        ({"target_score": math.nan, "plan_complete": 1}, False, TrialState.FAIL, None),
        ({"target_score": 0.9, "plan_complete": 0}, True, TrialState.FAIL, None),
        (None, True, TrialState.FAIL, None),
        ({"epoch": 1}, False, TrialState.FAIL, None),
    ],
)
def test_trial_state(result, error, state, value):
    got_state, got_value, reason = trial_state(result, "target_score", error)
    assert got_state == state
    assert got_value == value
    assert (reason is None) == (state != TrialState.FAIL)


def _suggested(seed: int, storage_path) -> list[dict]:
    import optuna

    from search.config import ExperimentConfig
    from search.study import StudySearch

    space = ExperimentConfig().search_space()
    searcher = StudySearch(
        space=space.define_by_run,
        metric="target_score",
        mode="max",
        points_to_evaluate=space.points_to_evaluate(),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        study_name="repro",
        storage=optuna.storages.RDBStorage(f"sqlite:///{storage_path}"),
    )
    configs = []
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        # A made-up score that depends on the config, so TPE has something to model.
        score = 1.0 if config["strategy"] == "progressive" else 0.5
        searcher.on_trial_complete(f"t{i}", {"target_score": score, "plan_complete": 1})
    return configs


def test_one_seed_gives_identical_trial_parameters(tmp_path):
    first = _suggested(0, tmp_path / "a.db")
    assert first == _suggested(0, tmp_path / "b.db")
    assert first != _suggested(1, tmp_path / "c.db")
    # The documents' recipes come first, whatever the seed.
    assert first[0]["progressive"]["base_lr"] == 1e-3
    assert first[1]["single_phase"]["lr"] == 1e-4
