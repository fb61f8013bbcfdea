"""Which hyperparameters of a strategy mattered, by Optuna's importance evaluators.

Each strategy's finished trials become an in-memory Optuna study (objective:
``target_score``, the search objective, recomputed from the final metrics), and
fANOVA and PED-ANOVA rank its searched parameters by how much of the objective's
variation they explain. With the few trials a search affords, the ranking is a
hint of where to look, not a measurement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

from analysis.ranking import RAN_PLAN, TrialRecord
from analysis.targets import Target, target_score
from spaces.params import Categorical, Fixed, FloatRange, IntRange, Param
from spaces.strategy_space import StrategySpace

__all__ = [
    "EVALUATORS",
    "MIN_TRIALS",
    "ParamImportance",
    "parameter_importance",
]

#: Evaluator names, in the order they are reported.
EVALUATORS = ("fanova", "ped_anova")
#: Fewer finished trials than this give a note instead of importances: below it a
#: forest or a top quantile has next to nothing to split.
MIN_TRIALS = 4
#: PED-ANOVA contrasts the best trials with all of them; its default top 10% is a
#: single trial in a small study, so the top holds at least this many.
MIN_TOP_TRIALS = 2


@dataclasses.dataclass(frozen=True)
class ParamImportance:
    """One evaluator's importances for one strategy.

    Attributes:
        strategy: Strategy name.
        evaluator: ``fanova`` or ``ped_anova``.
        importances: Parameter name to importance, summing to 1, most important first;
            empty when ``note`` says why.
        trials: Finished trials of the strategy the importances come from.
        note: Why nothing could be computed (too few trials, nothing varied, the
            evaluator's dependency missing), else None.
    """

    strategy: str
    evaluator: str
    importances: dict[str, float]
    trials: int
    note: str | None = None


def parameter_importance(
    records: Sequence[TrialRecord],
    targets: Sequence[Target],
    spaces: Mapping[str, StrategySpace],
    *,
    evaluators: Sequence[str] = EVALUATORS,
    seed: int = 0,
) -> list[ParamImportance]:
    """Importances of each strategy's searched parameters for ``target_score``.

    Only trials with status ``done`` or ``early_stopped`` count. The parameters
    assessed are those with a searched (not fixed) domain that every finished trial
    of the strategy has and that take at least two distinct values: fANOVA needs
    each assessed parameter in every trial, so a conditional parameter counts only
    where its condition held in all of them, and both evaluators assess the same
    set so that they compare. Parameters a trial has but its space lacks are
    ignored. A range that a trial's value lies outside (a documented baseline
    beside a narrowed override) is widened to hold it.

    Args:
        records: The trials, e.g. from :func:`analysis.results.trial_records`.
        targets: The targets ``target_score`` is computed against.
        spaces: Strategy spaces by name, e.g. ``ExperimentConfig.strategy_spaces()``.
        evaluators: Names from :data:`EVALUATORS`.
        seed: Seed of fANOVA's forest; PED-ANOVA draws nothing at random.

    Returns:
        One entry per strategy (those of ``spaces`` first, then any other that has
        finished trials) and evaluator, in that order.

    Raises:
        ValueError: An unknown evaluator name.
    """
    unknown = [name for name in evaluators if name not in EVALUATORS]
    if unknown:
        raise ValueError(
            f"unknown importance evaluator {', '.join(map(repr, unknown))};"
            f" use {', '.join(EVALUATORS)}"
        )
    finished: dict[str, list[TrialRecord]] = {name: [] for name in spaces}
    for record in records:
        if record.status in RAN_PLAN:
            finished.setdefault(record.strategy, []).append(record)
    results = []
    with _quiet():
        for strategy, trials in finished.items():
            space = spaces.get(strategy)
            study, params, note = None, [], None
            if space is None:
                note = f"{strategy} has no search space here"
            elif len(trials) < MIN_TRIALS:
                note = f"{len(trials)} finished trials; importance needs at least {MIN_TRIALS}"
            else:
                study, params, note = _study(space, trials, targets)
            for evaluator in evaluators:
                why = note or _unavailable(evaluator)
                importances = (
                    {} if study is None or why else _evaluate(study, params, evaluator, seed)
                )
                results.append(ParamImportance(strategy, evaluator, importances, len(trials), why))
    return results


def _unavailable(evaluator: str) -> str | None:
    """Why ``evaluator`` cannot run here, else None."""
    # Optuna's fANOVA fits scikit-learn's random forest, an optional dependency.
    if evaluator == "fanova" and importlib.util.find_spec("sklearn") is None:
        return "fANOVA needs scikit-learn; pip install scikit-learn"
    return None


def _study(
    space: StrategySpace, records: Sequence[TrialRecord], targets: Sequence[Target]
) -> tuple[optuna.Study | None, list[str], str | None]:
    """An in-memory study of ``records`` over their common varying parameters, the
    parameters, and the note that replaces both when there is nothing to assess."""
    points = [_point(space, record.params) for record in records]
    scores = [target_score(record.metrics, targets) for record in records]
    params = [
        name
        for name in space.params
        if all(name in point for point in points) and len({point[name] for point in points}) > 1
    ]
    if not params:
        return None, [], f"no searched parameter varied across {len(records)} finished trials"
    if len(set(scores)) == 1:
        return None, [], f"all {len(records)} finished trials scored {scores[0]:.4g}"
    distributions = {
        name: _distribution(space.params[name], [point[name] for point in points])
        for name in params
    }
    study = optuna.create_study(direction="maximize", study_name=f"importance/{space.strategy}")
    study.add_trials(
        optuna.trial.create_trial(
            params={name: point[name] for name in params},
            distributions=distributions,
            value=score,
        )
        for point, score in zip(points, scores, strict=True)
    )
    return study, params, None


def _point(space: StrategySpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's values of the searched parameters active in it, by plain name.

    The results tables drop null parameters, so a ``None`` value comes back absent; it
    is read as None again where the domain allows it and the condition holds.
    """
    seen: dict[str, Any] = {}
    for name, domain in space.params.items():
        if name in params:
            seen[name] = params[name]
        elif _allows_none(domain) and space.is_active(name, seen):
            seen[name] = None
    return {
        name: value for name, value in seen.items() if not isinstance(space.params[name], Fixed)
    }


def _allows_none(domain: Param) -> bool:
    if isinstance(domain, Fixed):
        return domain.value is None
    return isinstance(domain, Categorical) and None in domain.choices


def _distribution(domain: Param, values: Sequence[Any]) -> BaseDistribution:
    """The domain's distribution, widened to every value the trials took, since Optuna
    refuses a trial whose value its distribution does not hold."""
    if isinstance(domain, Categorical):
        extra = tuple(value for value in dict.fromkeys(values) if value not in domain.choices)
        return dataclasses.replace(domain, choices=domain.choices + extra).distribution()
    assert isinstance(domain, (FloatRange, IntRange)), "fixed domains are not assessed"
    low, high = min(domain.low, *values), max(domain.high, *values)
    if isinstance(domain, IntRange):
        on_grid = all((value - low) % domain.step == 0 for value in values)
        step = domain.step if on_grid else 1
        return IntRange(low, high, step, domain.log and low >= 1 and step == 1).distribution()
    return FloatRange(low, high, domain.log and low > 0).distribution()


def _evaluate(
    study: optuna.Study, params: list[str], evaluator: str, seed: int
) -> dict[str, float]:
    if evaluator == "fanova":
        chosen: optuna.importance.BaseImportanceEvaluator = FanovaImportanceEvaluator(seed=seed)
    else:
        quantile = max(0.1, MIN_TOP_TRIALS / len(study.trials))
        chosen = PedAnovaImportanceEvaluator(target_quantile=quantile)
    importances = optuna.importance.get_param_importances(study, evaluator=chosen, params=params)
    # Equal importances fall to the name, so the order never depends on set order.
    return {
        name: float(value)
        for name, value in sorted(importances.items(), key=lambda item: (-item[1], item[0]))
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna without its study-creation log lines and experimental warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
