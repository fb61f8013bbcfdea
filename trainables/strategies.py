"""Strategies: functions ``(params, context) -> PhasePlan``.

A strategy only decides the phases; the engine runs them all the same way. The
parameter names here are the ones the search spaces sample and the exported
best-config files carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from trainables.data import DataSpec
from trainables.phases import (
    EarlyStopping,
    LRSchedule,
    ModelSpec,
    Phase,
    PhasePlan,
    PlanError,
)

__all__ = [
    "PROGRESSIVE_PRESETS",
    "STRATEGIES",
    "PlanContext",
    "build_plan",
    "progressive",
    "single_phase",
]

#: The transfer-learning document's epoch splits by data-set size (frozen, partial,
#: full). "Large" gives 20-50 epochs in total; 5+10+15 sits inside that range.
PROGRESSIVE_PRESETS: dict[str, tuple[int, int, int]] = {
    "small": (3, 2, 2),
    "medium": (3, 3, 4),
    "large": (5, 10, 15),
}


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a plan takes from the experiment rather than from the sampled params.

    Attributes:
        epoch_scale: Multiplies every phase's epochs (rounded, at least 1), so a
            document's recipe keeps its shape at a budget that fits a laptop.
    """

    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    seed: int = 0
    epoch_scale: float = 1.0

    def epochs(self, planned: int) -> int:
        return max(1, round(planned * self.epoch_scale))


def _early_stopping(params: Mapping[str, Any]) -> EarlyStopping | None:
    patience = params.get("early_stopping_patience")
    if patience is None or patience <= 0:
        return None
    return EarlyStopping(patience=int(patience), metric="val/loss", mode="min")


def progressive(params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """Frozen backbone, then the top ``unfreeze_depth`` groups, then everything.

    Each phase's lr is the previous one divided by ``lr_decay`` (the document: 10x).

    Params:
        frozen_epochs, partial_epochs, full_epochs: Phase lengths, or ``preset``
            (``small``/``medium``/``large``) for the document's splits.
        unfreeze_depth: Backbone layer groups, from the top, that train in phase 2.
        base_lr: Phase 1 learning rate. lr_decay: Divisor between phases.
        batch_size, dropout, weight_decay, early_stopping_patience (0 = off).
    """
    if "preset" in params and params["preset"] is not None:
        if params["preset"] not in PROGRESSIVE_PRESETS:
            raise PlanError(
                f"preset: use one of {', '.join(PROGRESSIVE_PRESETS)}, got {params['preset']!r}"
            )
        frozen, partial, full = PROGRESSIVE_PRESETS[params["preset"]]
    else:
        frozen, partial, full = (
            int(params["frozen_epochs"]),
            int(params["partial_epochs"]),
            int(params["full_epochs"]),
        )
    base_lr = float(params["base_lr"])
    decay = float(params.get("lr_decay", 10.0))
    if decay <= 0:
        raise PlanError(f"lr_decay: must be > 0, got {decay}")
    stopping = _early_stopping(params)
    phases = (
        Phase("frozen", context.epochs(frozen), "none", base_lr, early_stopping=stopping),
        Phase(
            "partial",
            context.epochs(partial),
            int(params["unfreeze_depth"]),
            base_lr / decay,
            early_stopping=stopping,
        ),
        Phase("full", context.epochs(full), "all", base_lr / decay**2, early_stopping=stopping),
    )
    return _plan("progressive", phases, params, context)


def single_phase(params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """All layers train from the start with ReduceLROnPlateau and early stopping.

    Params:
        epochs, lr, plateau_factor, plateau_patience, early_stopping_patience
        (0 = off), batch_size, dropout, weight_decay.
    """
    schedule = LRSchedule(
        kind="plateau",
        factor=float(params.get("plateau_factor", 0.1)),
        patience=int(params.get("plateau_patience", 2)),
    )
    phase = Phase(
        "end_to_end",
        context.epochs(int(params["epochs"])),
        "all",
        float(params["lr"]),
        lr_schedule=schedule,
        early_stopping=_early_stopping(params),
    )
    return _plan("single_phase", (phase,), params, context)


def _plan(
    strategy: str, phases: tuple[Phase, ...], params: Mapping[str, Any], context: PlanContext
) -> PhasePlan:
    model = context.model
    if "dropout" in params:
        model = dataclasses.replace(model, dropout=float(params["dropout"]))
    return PhasePlan(
        strategy=strategy,
        phases=phases,
        model=model,
        data=context.data,
        batch_size=int(params.get("batch_size", 64)),
        seed=context.seed,
        weight_decay=float(params.get("weight_decay", 0.0)),
    ).validate()


StrategyFn = Callable[[Mapping[str, Any], PlanContext], PhasePlan]

#: Strategies by the name an experiment file and the search space use.
STRATEGIES: dict[str, StrategyFn] = {
    "progressive": progressive,
    "single_phase": single_phase,
}


def build_plan(strategy: str, params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """The plan of ``strategy`` for sampled ``params``; PlanError if it cannot run."""
    if strategy not in STRATEGIES:
        raise PlanError(f"strategy: use one of {', '.join(STRATEGIES)}, got {strategy!r}")
    try:
        return STRATEGIES[strategy](params, context)
    except KeyError as missing:
        raise PlanError(f"{strategy}.{missing.args[0]}: missing parameter") from None
