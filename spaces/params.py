"""Parameter domains of a search space and how a user's overrides replace them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

__all__ = [
    "Categorical",
    "Fixed",
    "FloatRange",
    "IntRange",
    "Param",
    "SpaceError",
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


@dataclasses.dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step)

    def check(self, name: str) -> None:
        if not self.low <= self.high:
            raise SpaceError(f"{name}: range [{self.low}, {self.high}] is inverted; put low first")

    def contains(self, value: Any) -> bool:
        return self.low <= value <= self.high


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


@dataclasses.dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def check(self, name: str) -> None:
        return None

    def contains(self, value: Any) -> bool:
        return value == self.value


Param = FloatRange | IntRange | Categorical | Fixed


def parse_override(name: str, default: Param, raw: Any) -> Param:
    """A user's override of one parameter, read in the shape of its default.

    A scalar fixes the parameter; a two-item list is ``[low, high]`` for a range
    and the choices for a categorical; a mapping names the fields
    (``{low, high, log}`` or ``{choices: [...]}``).
    """
    if isinstance(raw, Mapping):
        if "choices" in raw:
            param: Param = Categorical(tuple(raw["choices"]))
        elif isinstance(default, IntRange) or (
            isinstance(raw.get("low"), int)
            and isinstance(raw.get("high"), int)
            and not isinstance(default, FloatRange)
        ):
            param = IntRange(int(raw["low"]), int(raw["high"]), int(raw.get("step", 1)))
        else:
            log = raw.get("log", default.log if isinstance(default, FloatRange) else False)
            param = FloatRange(float(raw["low"]), float(raw["high"]), bool(log))
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        values = list(raw)
        if isinstance(default, (Categorical, Fixed)):
            param = Categorical(tuple(values))
        elif len(values) != 2:
            raise SpaceError(f"{name}: give a range as [low, high], got {values}")
        elif isinstance(default, IntRange):
            if not all(float(v).is_integer() for v in values):
                raise SpaceError(f"{name}: takes whole numbers, got {values}")
            param = IntRange(int(values[0]), int(values[1]), default.step)
        else:
            param = FloatRange(float(values[0]), float(values[1]), default.log)
    else:
        param = Fixed(raw)
    param.check(name)
    return param
