"""Strategies: ``(params, context) -> PhasePlan``.

A strategy only decides the phases; the engine runs them all the same way. The
built-ins are Python (``progressive``, ``single_phase``, ``joint``, ``sequential``);
an experiment's own are written in its file (:class:`WrittenStrategy`) or built by
its own Python (:class:`FactoryStrategy`), and travel in the :class:`PlanContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.phases import PhasePlan, PlanError
from trainables.strategies._builtin import (
    BUILTIN_STRATEGIES,
    MULTITASK_TASKS,
    PROGRESSIVE_PRESETS,
    WARMUP_STYLES,
    WEIGHTING_PARAM_NAMES,
    joint,
    progressive,
    sequential,
    single_phase,
)
from trainables.strategies._context import PlanContext, StrategyBuilder
from trainables.strategies._expression import (
    Expression,
    ExpressionError,
    parse_expression,
    parse_text,
)
from trainables.strategies._factory import FactoryStrategy
from trainables.strategies._params import (
    JointParams,
    ProgressiveParams,
    SequentialParams,
    SinglePhaseParams,
    StrategyParams,
)
from trainables.strategies._written import PLAN_FIELDS, WrittenStrategy
from trainables.weighting import check_weighting

__all__ = [
    "BUILTIN_STRATEGIES",
    "MULTITASK_TASKS",
    "PLAN_FIELDS",
    "PROGRESSIVE_PRESETS",
    "RESERVED_NAMES",
    "WARMUP_STYLES",
    "WEIGHTING_PARAM_NAMES",
    "Expression",
    "ExpressionError",
    "FactoryStrategy",
    "JointParams",
    "PlanContext",
    "ProgressiveParams",
    "SequentialParams",
    "SinglePhaseParams",
    "StrategyBuilder",
    "StrategyParams",
    "WrittenStrategy",
    "build_plan",
    "joint",
    "parse_expression",
    "parse_text",
    "progressive",
    "sequential",
    "single_phase",
]

#: Names an experiment's own strategy cannot take: the built-ins', and "strategy",
#: the key a trial's config names its strategy under.
RESERVED_NAMES = frozenset({*BUILTIN_STRATEGIES, "strategy"})


def build_plan(strategy: str, params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """The plan of ``strategy`` for sampled ``params``; PlanError if it cannot run."""
    if strategy in BUILTIN_STRATEGIES:
        try:
            plan = BUILTIN_STRATEGIES[strategy](params, context)
        except KeyError as missing:
            raise PlanError(f"{strategy}.{missing.args[0]}: missing parameter") from None
    elif strategy in context.custom:
        plan = context.custom[strategy].build(params, context)
    else:
        known = [*BUILTIN_STRATEGIES, *context.custom]
        raise PlanError(f"strategy: use one of {', '.join(known)}, got {strategy!r}")
    plan.validate()
    for i, phase in enumerate(plan.phases):
        try:
            check_weighting(phase.weighting)
        except ValueError as error:
            raise PlanError(f"phases[{i}] ({phase.name}).{error}") from None
    return plan
