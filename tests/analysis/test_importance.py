"""Parameter importance on hand-made trials: the parameter that drives the score wins."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from typing import Any

import optuna
import pytest

from analysis.importance import (
    EVALUATORS,
    MIN_TRIALS,
    ParamImportance,
    parameter_importance,
)
from analysis.ranking import TrialRecord
from analysis.targets import NSL
from search.config import load_experiment
from spaces import Categorical, Fixed, FloatRange, IntRange, StrategySpace, When

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None, reason="fANOVA needs scikit-learn"
)
EACH_EVALUATOR = [pytest.param("fanova", marks=needs_sklearn), "ped_anova"]

SPACE = StrategySpace(
    strategy="toy",
    params={
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "dropout": FloatRange(0.0, 0.5),
        "schedule": Categorical(("constant", "step")),
        "step_size": IntRange(1, 5),
        "batch_size": Fixed(32),
    },
    conditions={"step_size": When("schedule", "step")},
)
SPACES = {"toy": SPACE}


def toy_trials(n: int, seed: int = 0, **fixed: Any) -> list[TrialRecord]:
    """Trials whose accuracy depends on ``lr`` alone (best at 1e-2); the rest is noise."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        params: dict[str, Any] = {
            "lr": 10 ** rng.uniform(-4, -1),
            "dropout": rng.uniform(0.0, 0.5),
            "schedule": rng.choice(("constant", "step")),
            "batch_size": 32,
            **fixed,
        }
        if params["schedule"] == "step":
            params["step_size"] = rng.randint(1, 5)
        accuracy = 0.9 - 0.25 * abs(math.log10(params["lr"]) + 2)
        records.append(TrialRecord(f"t{i:02d}", "toy", params, {"val/acc": accuracy}, "done"))
    return records


def by_evaluator(results: list[ParamImportance], strategy: str) -> dict[str, ParamImportance]:
    return {r.evaluator: r for r in results if r.strategy == strategy}


@pytest.mark.parametrize("evaluator", EACH_EVALUATOR)
def test_the_parameter_that_drives_the_score_ranks_first(evaluator: str) -> None:
    (result,) = parameter_importance(toy_trials(24), NSL.targets, SPACES, evaluators=[evaluator])
    assert (result.strategy, result.evaluator, result.trials, result.note) == (
        "toy",
        evaluator,
        24,
        None,
    )
    assert next(iter(result.importances)) == "lr"
    values = list(result.importances.values())
    assert values == sorted(values, reverse=True)
    assert sum(values) == pytest.approx(1.0)
    # step_size is conditional (absent where schedule is constant); batch_size is fixed.
    assert set(result.importances) == {"lr", "dropout", "schedule"}


def test_only_finished_trials_count_and_too_few_give_a_note() -> None:
    records = toy_trials(MIN_TRIALS + 2)
    records = [
        TrialRecord(r.trial_id, r.strategy, r.params, r.metrics, status)
        for r, status in zip(
            records, ["done", "early_stopped", "stopped", "failed", "stopped", "done"], strict=True
        )
    ]
    results = parameter_importance(records, NSL.targets, SPACES)
    assert [r.evaluator for r in results] == list(EVALUATORS)
    for result in results:
        assert result.importances == {}
        assert result.trials == 3
        assert result.note == f"3 finished trials; importance needs at least {MIN_TRIALS}"


def test_deterministic_for_a_seed_and_optuna_left_as_found() -> None:
    verbosity = optuna.logging.get_verbosity()
    first = parameter_importance(toy_trials(16), NSL.targets, SPACES, seed=3)
    again = parameter_importance(toy_trials(16), NSL.targets, SPACES, seed=3)
    assert first == again
    assert optuna.logging.get_verbosity() == verbosity


def test_a_conditional_parameter_counts_where_every_trial_has_it() -> None:
    (result,) = parameter_importance(
        toy_trials(12, schedule="step"), NSL.targets, SPACES, evaluators=["ped_anova"]
    )
    # schedule took one value, so it is not assessed; step_size is then in every trial.
    assert set(result.importances) == {"lr", "dropout", "step_size"}


def test_a_none_choice_the_tables_dropped_is_read_back() -> None:
    space = StrategySpace(
        "toy",
        params={**SPACE.params, "preset": Categorical((None, "small"))},
        conditions=SPACE.conditions,
    )
    records = toy_trials(12)
    # As trial_records gives them: a None value is not among the params.
    for i, record in enumerate(records):
        if i % 2:
            record.params["preset"] = "small"
    (result,) = parameter_importance(records, NSL.targets, {"toy": space}, evaluators=["ped_anova"])
    assert "preset" in result.importances


def test_unknown_params_are_ignored_and_out_of_range_values_widen_the_domain() -> None:
    records = toy_trials(12)
    records[0].params.update(legacy_param=7, lr=0.5)
    (result,) = parameter_importance(records, NSL.targets, SPACES, evaluators=["ped_anova"])
    assert result.note is None
    assert "legacy_param" not in result.importances
    assert "lr" in result.importances


def test_notes_when_nothing_can_be_assessed(monkeypatch: pytest.MonkeyPatch) -> None:
    other = StrategySpace("other", params={"lr": FloatRange(1e-4, 1e-1, log=True)})
    flat = [
        TrialRecord(r.trial_id, r.strategy, r.params, {"val/acc": 0.5}, r.status)
        for r in toy_trials(6)
    ]
    alien = [TrialRecord(f"a{i}", "alien", {}, {"val/acc": 0.5}, "done") for i in range(5)]
    monkeypatch.setitem(sys.modules, "sklearn", None)
    notes = {
        (r.strategy, r.evaluator): r.note
        for r in parameter_importance(
            toy_trials(6) + alien, NSL.targets, {**SPACES, "other": other}
        )
    }
    assert notes == {
        ("toy", "fanova"): "fANOVA needs scikit-learn; pip install scikit-learn",
        ("toy", "ped_anova"): None,
        ("other", "fanova"): f"0 finished trials; importance needs at least {MIN_TRIALS}",
        ("other", "ped_anova"): f"0 finished trials; importance needs at least {MIN_TRIALS}",
        ("alien", "fanova"): "alien has no search space here",
        ("alien", "ped_anova"): "alien has no search space here",
    }
    (result,) = parameter_importance(flat, NSL.targets, SPACES, evaluators=["ped_anova"])
    assert result.note == "all 6 finished trials scored 0.5882"
    fixed = toy_trials(6, lr=1e-3, dropout=0.1, schedule="constant")
    (result,) = parameter_importance(fixed, NSL.targets, SPACES, evaluators=["ped_anova"])
    assert result.note == "no searched parameter varied across 6 finished trials"
    with pytest.raises(ValueError, match="unknown importance evaluator 'mdi'"):
        parameter_importance(flat, NSL.targets, SPACES, evaluators=["mdi"])


def test_experiment_spaces_carry_the_overrides() -> None:
    spaces = load_experiment(None).strategy_spaces()
    assert list(spaces) == ["progressive", "single_phase"]
    assert spaces["progressive"].params["lr_schedule"] == Fixed("constant")
