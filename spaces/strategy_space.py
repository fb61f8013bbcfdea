"""A strategy's search space: its parameters' domains and its documented baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

from spaces.params import Categorical, FloatRange, IntRange, Param, SpaceError, parse_override

__all__ = ["Baseline", "StrategySpace"]


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A source document's own setting, evaluated before the sampler proposes any."""

    name: str
    params: Mapping[str, Any]
    source: str


@dataclasses.dataclass(frozen=True)
class StrategySpace:
    """Domains of one strategy's parameters, sampled under ``<strategy>/<param>``."""

    strategy: str
    params: Mapping[str, Param]
    baselines: tuple[Baseline, ...] = ()

    def with_overrides(self, overrides: Mapping[str, Any]) -> StrategySpace:
        """This space with some domains replaced; unknown names are refused."""
        params = dict(self.params)
        for name, raw in overrides.items():
            if name not in params:
                raise SpaceError(
                    f"{self.strategy}.space.{name}: unknown parameter;"
                    f" {self.strategy} has {', '.join(sorted(params))}"
                )
            params[name] = parse_override(f"{self.strategy}.space.{name}", params[name], raw)
        return dataclasses.replace(self, params=params)

    def optuna_name(self, param: str) -> str:
        return f"{self.strategy}/{param}"

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every parameter; returns the values by plain parameter name."""
        return {
            name: domain.suggest(trial, self.optuna_name(name))
            for name, domain in self.params.items()
        }

    def extreme_points(self) -> list[dict[str, Any]]:
        """The space's corners at every range's top (for the longest plan it allows)."""
        point = {}
        for name, domain in self.params.items():
            if isinstance(domain, (IntRange, FloatRange)):
                point[name] = domain.high
            elif isinstance(domain, Categorical):
                point[name] = domain.choices[-1]
            else:
                point[name] = domain.value
        return [point]

    def baseline_points(self) -> list[dict[str, Any]]:
        """Baselines as Optuna parameter dicts (what ``enqueue_trial`` takes)."""
        return [
            {
                "strategy": self.strategy,
                **{self.optuna_name(k): v for k, v in b.params.items() if k in self.params},
            }
            for b in self.baselines
        ]
