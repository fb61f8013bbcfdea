"""Each built-in strategy's parameters as a frozen dataclass, read once from the sampled
(or written) values.

A field's default is the strategy's documented default; a field without one is
required, and a missing one raises ``KeyError`` with its name (the registry turns that
into "``<strategy>.<name>``: missing parameter"). Some fields are required only by the
choice of another (``step_size`` by a step schedule, ``ewc_lambda`` by ``use_ewc``):
they default to None and :func:`required` asks for them where they are used. Names a
class does not know are left alone: a search space may carry more than one strategy
reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from trainables.weighting import WEIGHTING_PARAMS

__all__ = [
    "JointParams",
    "ProgressiveParams",
    "ScheduleParams",
    "SequentialParams",
    "SinglePhaseParams",
    "StrategyParams",
    "required",
]

_T = TypeVar("_T")
_P = TypeVar("_P", bound="StrategyParams")

#: Every task-weighting method's parameter names (``alpha``, ``temperature``, ...).
_WEIGHTING_NAMES = tuple(dict.fromkeys(n for names in WEIGHTING_PARAMS.values() for n in names))


def _field(default: Any = dataclasses.MISSING, *, convert: Callable[[Any], Any]) -> Any:
    """A field read with ``convert`` (None stays None)."""
    return dataclasses.field(default=default, metadata={"convert": convert})


def required(value: _T | None, name: str) -> _T:
    """``value`` of a field another field's choice requires; KeyError(name) if absent."""
    if value is None:
        raise KeyError(name)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleParams:
    """The lr schedule inside each phase, shared by every built-in strategy.

    ``lr_schedule`` None is the strategy's own default. ``lr_warmup_epochs`` puts a
    linear warmup in front of any kind; the other fields belong to one kind each.
    """

    lr_schedule: str | None = _field(None, convert=str)
    lr_warmup_epochs: int = _field(0, convert=int)
    final_lr: float = _field(1e-5, convert=float)
    step_size: int | None = _field(None, convert=int)
    step_gamma: float = _field(0.1, convert=float)
    plateau_factor: float = _field(0.1, convert=float)
    plateau_patience: int = _field(2, convert=int)
    one_cycle_pct_start: float = _field(0.3, convert=float)
    one_cycle_div: float = _field(25.0, convert=float)
    one_cycle_final_div: float = _field(1.0e4, convert=float)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyParams(ScheduleParams):
    """What every built-in strategy reads besides its phases: the schedule, batch size,
    regularisation, early stopping (None or <= 0: off) and the heads' lr multipliers."""

    batch_size: int = _field(64, convert=int)
    dropout: float | None = _field(None, convert=float)
    weight_decay: float = _field(0.0, convert=float)
    label_smoothing: float = _field(0.0, convert=float)
    focal_gamma: float = _field(0.0, convert=float)
    early_stopping_patience: int | None = _field(None, convert=int)
    head_lr_seg: float | None = _field(None, convert=float)
    head_lr_det: float | None = _field(None, convert=float)
    head_lr_cls: float | None = _field(None, convert=float)

    @classmethod
    def read(cls: type[_P], params: Mapping[str, Any]) -> _P:
        """The fields from ``params``, each converted; KeyError(name) for a missing
        required one."""
        values = {}
        for field in dataclasses.fields(cls):
            convert = field.metadata.get("convert")
            if convert is None:
                continue  # worked out by a subclass's ``read``
            if field.name in params and params[field.name] is not None:
                values[field.name] = convert(params[field.name])
            elif field.default is dataclasses.MISSING:
                raise KeyError(field.name)
        return cls(**values)

    def head_lr(self) -> dict[str, float]:
        """The heads' lr multipliers that were given, by task."""
        given = {"seg": self.head_lr_seg, "det": self.head_lr_det, "cls": self.head_lr_cls}
        return {task: factor for task, factor in given.items() if factor is not None}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgressiveParams(StrategyParams):
    """Frozen, partial and full phases: their lengths (or a ``preset``), how many groups
    phase 2 unfreezes, phase 1's lr and the divisor between phases."""

    base_lr: float = _field(convert=float)
    unfreeze_depth: int = _field(convert=int)
    preset: str | None = _field(None, convert=str)
    frozen_epochs: int | None = _field(None, convert=int)
    partial_epochs: int | None = _field(None, convert=int)
    full_epochs: int | None = _field(None, convert=int)
    lr_decay: float = _field(10.0, convert=float)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SinglePhaseParams(StrategyParams):
    """One end-to-end phase: its length and lr."""

    epochs: int = _field(convert=int)
    lr: float = _field(convert=float)


@dataclasses.dataclass(frozen=True, kw_only=True)
class JointParams(StrategyParams):
    """Warmup, the joint phase and fine-tuning: lengths, lr, the joint phase's
    weighting and that method's parameters (``weighting_params``)."""

    lr: float = _field(convert=float)
    joint_epochs: int = _field(convert=int)
    finetune_epochs: int = _field(convert=int)
    finetune_lr_factor: float = _field(1.0, convert=float)
    warmup_style: str = _field("alternate", convert=str)
    warmup_epochs: int | None = _field(None, convert=int)
    warmup_seg: int | None = _field(None, convert=int)
    warmup_det: int | None = _field(None, convert=int)
    warmup_cls: int | None = _field(None, convert=int)
    weighting: str = _field("loss_ratio", convert=str)
    #: Every weighting method's parameter that was given; the method takes its own.
    weighting_params: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, params: Mapping[str, Any]) -> JointParams:
        weighting = {name: float(params[name]) for name in _WEIGHTING_NAMES if name in params}
        return dataclasses.replace(super().read(params), weighting_params=weighting)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SequentialParams(StrategyParams):
    """One phase per task in ``order`` (comma-separated), with optional EWC."""

    lr: float = _field(convert=float)
    task_epochs: int = _field(convert=int)
    order: str = _field("seg,det,cls", convert=str)
    use_ewc: bool = _field(False, convert=bool)
    ewc_lambda: float | None = _field(None, convert=float)
    fisher_batches: int = _field(20, convert=int)
