"""The ``strategies`` section: a built-in strategy's space overrides, or a strategy of
your own (phases or a plan factory, its space and baselines)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from search.config._section import _Section
from trainables.callables import CALLABLE_PATH
from trainables.phases import PlanError
from trainables.strategies import (
    PLAN_FIELDS,
    FactoryStrategy,
    StrategyBuilder,
    WrittenStrategy,
)

__all__ = ["DEFAULT_STRATEGIES", "StrategyConfig"]


class StrategyConfig(_Section):
    """One strategy to compare.

    A built-in takes ``space``, overrides of its default parameter domains. A strategy
    of your own writes its ``phases`` (or names a ``plan_factory``), its ``space`` and
    ``baselines``, and may set the plan-wide fields (``batch_size``, ``dropout``, ...).
    """

    space: dict[str, Any] = Field(default_factory=dict)
    phases: list[Any] | None = None
    plan_factory: str | None = None
    baselines: list[Any] = Field(default_factory=list)
    batch_size: Any = None
    dropout: Any = None
    weight_decay: Any = None
    label_smoothing: Any = None
    focal_gamma: Any = None

    @property
    def is_own(self) -> bool:
        return self.phases is not None or self.plan_factory is not None

    def definition(self) -> dict[str, Any]:
        """The section as the file writes it (what the best-config file keeps), in the
        order a reader follows: phases, plan-wide fields, space, baselines."""
        written = self.model_dump(exclude_defaults=True)
        order = ("phases", "plan_factory", *PLAN_FIELDS, "space", "baselines")
        return {key: written[key] for key in order if key in written}

    def builder(self, name: str) -> StrategyBuilder:
        """The strategy of your own this section defines; PlanError naming the field."""
        if self.phases is not None and self.plan_factory is not None:
            raise PlanError("plan_factory: give either phases or a plan_factory, not both")
        if self.plan_factory is not None:
            if not CALLABLE_PATH.fullmatch(self.plan_factory):
                raise PlanError(
                    f"plan_factory: write 'package.module:function', got {self.plan_factory!r}"
                )
            written = [key for key in PLAN_FIELDS if getattr(self, key) is not None]
            if written:
                raise PlanError(
                    f"{written[0]}: a plan_factory sets the plan itself; read the value from"
                    " params in the factory instead"
                )
            factory = FactoryStrategy(name, self.plan_factory)
            factory.check_importable()
            return factory
        definition = {k: v for k, v in self.definition().items() if v is not None}
        return WrittenStrategy.parse(name, definition)


#: The quickstart's comparison: the documents' own schedules and one lr for the
#: whole network, so a dozen trials go to epochs, depth and learning rates.
DEFAULT_STRATEGIES = {
    "progressive": StrategyConfig(space={"lr_schedule": "constant", "head_lr_cls": 1.0}),
    "single_phase": StrategyConfig(space={"lr_schedule": "plateau", "head_lr_cls": 1.0}),
}
