"""Search spaces: one module per strategy family, plus the documented baselines.

The search samples the strategy itself as a parameter, so one Optuna study
compares strategies; each strategy's parameters are sampled under
``<strategy>/<param>`` only when that strategy is drawn, and a conditional parameter
(:class:`When`) only when the parameter it depends on takes one of its values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optuna

from spaces.joint import joint_space
from spaces.params import (
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    Param,
    SpaceError,
    When,
    parse_override,
)
from spaces.progressive import progressive_space
from spaces.sequential import sequential_space
from spaces.single_phase import single_phase_space
from spaces.strategy_space import Baseline, StrategySpace
from spaces.written import WRITTEN_BUILTINS, check_parameters, written_builtin, written_space

__all__ = [
    "SPACES",
    "Baseline",
    "Categorical",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "WRITTEN_BUILTINS",
    "SearchSpace",
    "SpaceError",
    "StrategySpace",
    "When",
    "build_search_space",
    "builtin_space",
    "check_parameters",
    "parse_override",
    "written_builtin",
    "written_space",
]

#: Space builders by strategy name; each takes the backbone's number of layer groups.
SPACES: dict[str, Callable[[int], StrategySpace]] = {
    "progressive": progressive_space,
    "single_phase": single_phase_space,
    "joint": joint_space,
    "sequential": sequential_space,
}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The strategies one experiment compares, as one define-by-run space."""

    strategies: tuple[StrategySpace, ...]

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any]:
        """Optuna define-by-run function: strategy first, then its parameters.

        Returns the active fixed parameters, which Optuna does not sample but the
        trial's config must still carry.
        """
        by_name = {space.strategy: space for space in self.strategies}
        strategy = trial.suggest_categorical("strategy", list(by_name))
        space = by_name[strategy]
        values = space.sample(trial)
        return {
            space.optuna_name(name): value
            for name, value in values.items()
            if isinstance(space.params[name], Fixed)
        }

    def points_to_evaluate(self) -> list[dict[str, Any]]:
        """Every strategy's documented baselines, in the order they are given."""
        return [point for space in self.strategies for point in space.baseline_points()]

    def baselines(self) -> list[tuple[str, Baseline]]:
        return [(space.strategy, b) for space in self.strategies for b in space.baselines]


def builtin_space(name: str, overrides: Mapping[str, Any], num_groups: int) -> StrategySpace:
    """The built-in ``name``'s space with a user's ``overrides`` of its domains.

    Raises:
        SpaceError: an unknown strategy or parameter, or an override that cannot
            be sampled.
    """
    if name not in SPACES:
        raise SpaceError(f"strategies.{name}: unknown strategy; use one of {', '.join(SPACES)}")
    return SPACES[name](num_groups).with_overrides(overrides)


def build_search_space(strategies: Mapping[str, Mapping[str, Any]], num_groups: int) -> SearchSpace:
    """The space over built-in ``strategies`` (name -> parameter overrides)."""
    spaces = [builtin_space(name, overrides, num_groups) for name, overrides in strategies.items()]
    if not spaces:
        raise SpaceError("strategies: name at least one strategy to search")
    return SearchSpace(tuple(spaces))
