"""What a plan takes from the experiment rather than from the sampled parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from trainables.data import DataSpec
from trainables.phases import ModelSpec, PhasePlan

__all__ = ["PlanContext", "StrategyBuilder"]


class StrategyBuilder(Protocol):
    """A strategy an experiment defines itself: a written definition or a plan factory."""

    name: str

    def build(self, params: Mapping[str, Any], context: PlanContext) -> PhasePlan: ...


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a plan takes from the experiment rather than from the sampled params.

    Attributes:
        epoch_scale: Multiplies every phase's epochs (rounded, at least 1), so a
            document's recipe keeps its shape at a budget that fits a laptop.
        custom: The experiment's own strategies by name; they travel with the
            context to every trial, so a worker builds their plans as the driver did.
    """

    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    seed: int = 0
    epoch_scale: float = 1.0
    custom: Mapping[str, StrategyBuilder] = dataclasses.field(default_factory=dict)

    def epochs(self, planned: int) -> int:
        return max(1, round(planned * self.epoch_scale))

    def optional_epochs(self, planned: int) -> int:
        """As :meth:`epochs`, but 0 stays 0: a phase planned at 0 epochs is skipped."""
        return 0 if planned == 0 else self.epochs(planned)
