"""A strategy built by the user's own Python: ``plan_factory: mypkg.recipes:build``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from trainables.callables import describe_error, import_callable
from trainables.phases import PhasePlan, PlanError
from trainables.strategies._context import PlanContext

__all__ = ["FactoryStrategy"]


@dataclasses.dataclass(frozen=True)
class FactoryStrategy:
    """Calls ``factory(params, context) -> PhasePlan`` for logic a written phase list
    cannot say. Only the path travels to the workers, so the module must be importable
    on every node, as a model factory must.

    Attributes:
        name: The strategy's name in the experiment file; the plan carries it.
        factory: ``"package.module:function"``.
    """

    name: str
    factory: str

    def check_importable(self) -> None:
        """PlanError if the factory does not import: before Ray starts, not in a trial."""
        try:
            import_callable(self.factory, "plan_factory")
        except ValueError as error:
            raise PlanError(str(error)) from None

    def build(self, params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
        try:
            build = import_callable(self.factory, "plan_factory")
        except ValueError as error:
            raise PlanError(str(error)) from None
        try:
            plan = build(dict(params), context)
        except PlanError:
            raise
        except Exception as error:
            raise PlanError(
                f"plan_factory: {self.factory}(params, context) failed: {describe_error(error)}"
            ) from None
        if not isinstance(plan, PhasePlan):
            raise PlanError(
                f"plan_factory: {self.factory} must return a PhasePlan, got {type(plan).__name__}"
            )
        return dataclasses.replace(plan, strategy=self.name)
