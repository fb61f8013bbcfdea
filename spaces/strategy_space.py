"""A strategy's search space: its parameters' domains, the conditions that switch some of
them on, and its documented baselines."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

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

__all__ = ["Baseline", "StrategySpace"]


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A source document's own setting, evaluated before the sampler proposes any."""

    name: str
    params: Mapping[str, Any]
    source: str


@dataclasses.dataclass(frozen=True)
class StrategySpace:
    """Domains of one strategy's parameters, sampled under ``<strategy>/<param>``.

    Attributes:
        params: Domains in declaration order, which is also the sampling order.
        baselines: Documented settings; each names a value for every parameter that is
            active under its own values.
        conditions: Parameters that are active only when an earlier one takes certain
            values (``{"alpha": When("weighting", "loss_ratio")}``); a parameter whose
            condition's parameter is inactive is inactive too.
    """

    strategy: str
    params: Mapping[str, Param]
    baselines: tuple[Baseline, ...] = ()
    conditions: Mapping[str, When] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        order = list(self.params)
        for name, when in self.conditions.items():
            if name not in self.params:
                raise SpaceError(f"{self.strategy}.{name}: a condition for an unknown parameter")
            if when.param not in self.params or order.index(when.param) >= order.index(name):
                raise SpaceError(
                    f"{self.strategy}.{name}: its condition needs {when.param!r} declared before it"
                )

    def with_overrides(self, overrides: Mapping[str, Any]) -> StrategySpace:
        """This space with some domains replaced; conditions stay; unknown names are refused."""
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

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name`` is sampled, given the values of the parameters before it."""
        when = self.conditions.get(name)
        return when is None or when.holds(values)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter in declaration order; values by plain name."""
        values: dict[str, Any] = {}
        for name, domain in self.params.items():
            if self.is_active(name, values):
                values[name] = domain.suggest(trial, self.optuna_name(name))
        return values

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """Parameters active under ``values`` (a complete point), in declaration order.

        A fixed domain decides with its own value: an override wins over the point.
        """
        effective = {**values, **self._fixed_values()}
        seen: dict[str, Any] = {}
        for name in self.params:
            if self.is_active(name, seen) and name in effective:
                seen[name] = effective[name]
        return [name for name in self.params if name in seen]

    def extreme_points(self) -> list[dict[str, Any]]:
        """Corners at every range's top, one per choice of each categorical that switches
        other parameters on or off, so the longest plan the space allows is among them."""
        gates = {when.param for when in self.conditions.values()}
        points: list[dict[str, Any]] = [{}]
        for name, domain in self.params.items():
            grown = []
            for point in points:
                if not self.is_active(name, point):
                    grown.append(point)
                elif isinstance(domain, Categorical) and name in gates:
                    grown.extend({**point, name: choice} for choice in domain.choices)
                else:
                    grown.append({**point, name: _top(domain)})
            points = grown
        return points

    def corner_points(self) -> list[dict[str, Any]]:
        """Every range at its bottom and at its top, crossed with every categorical
        choice: where a range or choice that cannot make a plan shows up before a
        search samples it."""
        points: list[dict[str, Any]] = []
        for end in (0, -1):
            grown: list[dict[str, Any]] = [{}]
            for name, domain in self.params.items():
                step = []
                for point in grown:
                    if not self.is_active(name, point):
                        step.append(point)
                    elif isinstance(domain, Categorical):
                        step.extend({**point, name: choice} for choice in domain.choices)
                    elif isinstance(domain, (IntRange, FloatRange)):
                        step.append({**point, name: (domain.low, domain.high)[end]})
                    else:
                        step.append({**point, name: domain.value})
                grown = step
            points += grown
        return points

    def baseline_points(self) -> list[dict[str, Any]]:
        """Baselines as Optuna parameter dicts (what ``enqueue_trial`` takes), each with the
        parameters that are active under it.

        A fixed domain's value replaces the baseline's, as it does in the trial: a fixed
        ``preset`` stands in for the baseline's phase lengths. A fixed parameter the
        baseline does not name is carried too, as a sampled trial carries it.
        """
        fixed = self._fixed_values()
        points = []
        for b in self.baselines:
            values = {**fixed, **{name: fixed.get(name, value) for name, value in b.params.items()}}
            active = self.active(values)
            points.append(
                {"strategy": self.strategy, **{self.optuna_name(n): values[n] for n in active}}
            )
        return points

    def _fixed_values(self) -> dict[str, Any]:
        return {
            name: domain.value for name, domain in self.params.items() if isinstance(domain, Fixed)
        }


def _top(domain: Param) -> Any:
    if isinstance(domain, (IntRange, FloatRange)):
        return domain.high
    if isinstance(domain, Categorical):
        return domain.choices[-1]
    return domain.value
