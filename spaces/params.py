"""Parameter domains of a search space, the conditions that switch them on, and how a
user's overrides replace them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

__all__ = [
    "Categorical",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "SpaceError",
    "When",
    "lr_schedule_params",
    "parse_override",
]


class SpaceError(ValueError):
    """A search-space override that cannot be sampled; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def check(self, name: str) -> None:
        if not self.low <= self.high:
            raise SpaceError(f"{name}: range [{self.low}, {self.high}] is inverted; put low first")
        if self.log and self.low <= 0:
            raise SpaceError(f"{name}: a log range needs low > 0, got {self.low}")

    def contains(self, value: Any) -> bool:
        return self.low <= value <= self.high

    def distribution(self) -> FloatDistribution:
        """This domain as the Optuna distribution that ``suggest`` samples from."""
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclasses.dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def check(self, name: str) -> None:
        if not self.low <= self.high:
            raise SpaceError(f"{name}: range [{self.low}, {self.high}] is inverted; put low first")
        if self.step < 1:
            raise SpaceError(f"{name}: step must be >= 1, got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise SpaceError(f"{name}: a log range of whole numbers needs low >= 1 and step 1")

    def contains(self, value: Any) -> bool:
        return self.low <= value <= self.high

    def distribution(self) -> IntDistribution:
        """This domain as the Optuna distribution that ``suggest`` samples from."""
        return IntDistribution(self.low, self.high, step=self.step, log=self.log)


@dataclasses.dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def check(self, name: str) -> None:
        if not self.choices:
            raise SpaceError(f"{name}: give at least one choice")

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def distribution(self) -> CategoricalDistribution:
        """This domain as the Optuna distribution that ``suggest`` samples from."""
        return CategoricalDistribution(self.choices)


@dataclasses.dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def check(self, name: str) -> None:
        return None

    def contains(self, value: Any) -> bool:
        return value == self.value

    def distribution(self) -> None:
        """None: a fixed parameter is not searched, so Optuna has no distribution for it."""
        return None


Param = FloatRange | IntRange | Categorical | Fixed


@dataclasses.dataclass(frozen=True, init=False)
class When:
    """A parameter is active only when the earlier parameter ``param`` takes one of ``values``.

    An inactive parameter is not sampled at all, so Optuna never sees a value that the
    strategy would ignore. ``When("weighting", "dwa", "validation")`` reads as written.
    """

    param: str
    values: tuple[Any, ...]

    def __init__(self, param: str, *values: Any) -> None:
        object.__setattr__(self, "param", param)
        object.__setattr__(self, "values", values)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for the values sampled so far (absent: it does not)."""
        return self.param in values and values[self.param] in self.values


def parse_override(name: str, default: Param, raw: Any) -> Param:
    """A user's override of one parameter, read in the shape of its default.

    A scalar fixes the parameter; a two-item list is ``[low, high]`` for a range
    and the choices for a categorical; a mapping names the fields
    (``{low, high, log}`` or ``{choices: [...]}``). Numbers may come as strings, as
    YAML reads ``1e-3``.

    Raises:
        SpaceError: One line naming ``name``, what is wrong and the shape it takes.
    """
    if isinstance(raw, Mapping):
        if "choices" in raw:
            param: Param = Categorical(tuple(raw["choices"]))
        elif "low" not in raw or "high" not in raw:
            raise SpaceError(
                f"{name}: give a range as {{low, high}} or choices as {{choices: [...]}},"
                f" got keys {', '.join(map(str, raw))}"
            )
        else:
            integral = isinstance(default, IntRange) or (
                isinstance(raw["low"], int)
                and isinstance(raw["high"], int)
                and not isinstance(default, FloatRange)
            )
            log = raw.get(
                "log", default.log if isinstance(default, (FloatRange, IntRange)) else False
            )
            param = _range(name, [raw["low"], raw["high"]], integral, raw.get("step", 1), log)
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        values = list(raw)
        if isinstance(default, (Categorical, Fixed)):
            param = Categorical(tuple(values))
        elif len(values) != 2:
            raise SpaceError(f"{name}: give a range as [low, high], got {values}")
        elif isinstance(default, IntRange):
            param = _range(name, values, True, default.step, default.log)
        else:
            param = _range(name, values, False, 1, default.log)
    elif isinstance(default, IntRange):
        (value,) = _whole_numbers(name, [raw], f"takes a whole number, got {raw!r}")
        param = Fixed(value)
    elif isinstance(default, FloatRange):
        value = _number(raw)
        if value is None:
            raise SpaceError(f"{name}: takes a number, got {raw!r}")
        param = Fixed(value)
    else:
        param = Fixed(raw)
    param.check(name)
    return param


def _range(name: str, bounds: list[Any], integral: bool, step: Any, log: Any) -> Param:
    if integral:
        low, high, whole_step = _whole_numbers(
            name, [*bounds, step], f"takes whole numbers, got {bounds} (step {step})"
        )
        return IntRange(low, high, whole_step, bool(log))
    numbers = [_number(bound) for bound in bounds]
    if None in numbers:
        raise SpaceError(f"{name}: a range takes numbers, got {bounds}")
    return FloatRange(float(numbers[0]), float(numbers[1]), bool(log))


def _whole_numbers(name: str, values: list[Any], problem: str) -> list[int]:
    numbers = [_number(value) for value in values]
    if any(number is None or not float(number).is_integer() for number in numbers):
        raise SpaceError(f"{name}: {problem}")
    return [int(number) for number in numbers]


def _number(value: Any) -> float | int | None:
    """``value`` as a number, or None where it is none."""
    # bool is an int to Python, but `[true, false]` for a range is a mistake.
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def lr_schedule_params(
    kinds: tuple[str, ...], step_size: IntRange
) -> tuple[dict[str, Param], dict[str, When]]:
    """``lr_schedule`` over ``kinds``, then the parameters of each kind, each active only
    under its kind: ``final_lr`` (cosine; the multi-task document recommends 1e-5),
    ``step_size``/``step_gamma`` (step), ``plateau_factor``/``plateau_patience``
    (plateau) and ``one_cycle_pct_start``/``one_cycle_div``/``one_cycle_final_div``
    (one_cycle, fastai's fine-tuning schedule); then ``lr_warmup_epochs``, a linear
    warmup in front of any kind (fixed at 0: no warmup unless a file searches it).

    Returns:
        Domains in sampling order and their conditions, to merge into a space.
    """
    every: dict[str, tuple[str, Param]] = {
        "final_lr": ("cosine", FloatRange(1e-6, 1e-4, log=True)),
        "step_size": ("step", step_size),
        "step_gamma": ("step", FloatRange(0.1, 0.5)),
        "plateau_factor": ("plateau", FloatRange(0.1, 0.5)),
        "plateau_patience": ("plateau", IntRange(1, 4)),
        "one_cycle_pct_start": ("one_cycle", FloatRange(0.1, 0.5)),
        # torch's and fastai's defaults: start at lr/25, end 1e4 times lower than that.
        "one_cycle_div": ("one_cycle", Fixed(25.0)),
        "one_cycle_final_div": ("one_cycle", Fixed(1.0e4)),
    }
    params: dict[str, Param] = {"lr_schedule": Categorical(kinds)}
    conditions: dict[str, When] = {}
    for name, (kind, domain) in every.items():
        if kind in kinds:
            params[name] = domain
            conditions[name] = When("lr_schedule", kind)
    params["lr_warmup_epochs"] = Fixed(0)
    return params, conditions
