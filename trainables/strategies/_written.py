"""Strategies written in the experiment file: phase templates over searched parameters.

A written strategy is a list of phases whose values are fixed or expressions over the
strategy's parameters (``lr: "{base_lr} / 2"``), with ``repeat`` for a phase that
comes once per step (``repeat: "{steps}"``, ``as: i``). For sampled parameters it
expands into the same :class:`PhasePlan` a built-in strategy returns, so the engine,
the schedulers, the analysis and retraining cannot tell the two apart.

Reading the section into templates is ``_written_read``'s; this module holds
:class:`WrittenStrategy` and expands its templates into phases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from trainables.phases import Phase, PhasePlan, PlanError
from trainables.strategies._context import PlanContext
from trainables.strategies._expression import MissingParameter
from trainables.strategies._written_read import (
    _at,
    _Item,
    _Items,
    _items,
    _Leaf,
    _leaf,
    _Node,
    _references,
    _Repeat,
    _Section,
    _spec_of,
)

__all__ = ["PLAN_FIELDS", "WrittenStrategy"]

#: Plan-wide values a written strategy may set beside its phases, with their defaults
#: (None: the experiment's own, e.g. the model's dropout).
PLAN_FIELDS: dict[str, tuple[str, Any]] = {
    "batch_size": ("int", 64),
    "dropout": ("float", None),
    "weight_decay": ("float", 0.0),
    "label_smoothing": ("float", 0.0),
    "focal_gamma": ("float", 0.0),
}

#: Fields counted in epochs: multiplied by ``search.epoch_scale`` as the built-ins'
#: are, so a written recipe keeps its shape at a laptop's budget. A phase whose epochs
#: come out 0 is left out, as the built-ins leave out optional phases.
_PHASE_EPOCHS = "epochs"
_SCHEDULE_EPOCHS = {"step_size": "at_least_one", "warmup_epochs": "zero_stays_zero"}


@dataclasses.dataclass(frozen=True)
class WrittenStrategy:
    """A strategy the experiment file writes out; :meth:`build` makes its plan.

    Attributes:
        name: The strategy's name in the experiment file.
        phases: Phase templates and repeats, in order.
        plan_fields: Plan-wide values (``batch_size``, ``dropout``, ...) as written.
        definition: The section as written, kept for the best-config file.
    """

    name: str
    phases: tuple[_Item, ...]
    plan_fields: Mapping[str, _Leaf]
    definition: Mapping[str, Any]

    @classmethod
    def parse(cls, name: str, definition: Mapping[str, Any]) -> WrittenStrategy:
        """Read ``definition`` (``phases`` and plan-wide fields; ``space`` and
        ``baselines`` belong to the search space and are skipped here).

        Raises:
            PlanError: the first unknown field or unreadable value, by its path.
        """
        plan_fields = {}
        for key, raw in definition.items():
            if key in ("phases", "space", "baselines"):
                continue
            if key not in PLAN_FIELDS:
                raise PlanError(
                    f"{key}: unknown field; a written strategy takes phases, space, baselines"
                    f" and {', '.join(PLAN_FIELDS)}"
                )
            plan_fields[key] = _leaf(PLAN_FIELDS[key][0], key, raw)
        if "phases" not in definition:
            raise PlanError("phases: a written strategy needs its list of phases")
        return cls(name, _items(definition["phases"], "phases"), plan_fields, dict(definition))

    def references(self) -> dict[str, str]:
        """Each parameter the phases use, with the path of its first use; a repeat's
        step variable is not a parameter."""
        found: dict[str, str] = {}
        for key, leaf in self.plan_fields.items():
            for name in sorted(leaf.references):
                found.setdefault(name, key)
        _collect(self.phases, frozenset(), found)
        return found

    def step_variables(self) -> dict[str, str]:
        """Each repeat's step variable with the repeat's path."""
        found: dict[str, str] = {}
        _steps(self.phases, found)
        return found

    def build(self, params: Mapping[str, Any], context: PlanContext) -> PhasePlan:
        """The plan at ``params``; PlanError naming the field if it cannot run."""
        phases: list[Phase] = []
        _expand(self.phases, dict(params), context, phases)
        plan_values = {}
        for key, leaf in self.plan_fields.items():
            try:
                plan_values[key] = leaf.evaluate(params)
            except MissingParameter:
                continue  # switched off at this point: the default stands
        model = context.model
        if "dropout" in plan_values:
            model = dataclasses.replace(model, dropout=plan_values.pop("dropout"))
        defaults = {key: default for key, (_, default) in PLAN_FIELDS.items() if key != "dropout"}
        return PhasePlan(
            strategy=self.name,
            phases=tuple(phases),
            model=model,
            data=context.data,
            seed=context.seed,
            **{**defaults, **plan_values},
        )


def _collect(items: Sequence[_Item], steps: frozenset[str], found: dict[str, str]) -> None:
    for item in items:
        if isinstance(item, _Repeat):
            for name in sorted(item.count.references - steps):
                found.setdefault(name, item.count.path)
            _collect(item.body, steps | {item.variable}, found)
            continue
        for name, node in item.fields.items():
            for ref in sorted(_references(node) - steps):
                found.setdefault(ref, f"{item.path}.{name}")


def _steps(items: Sequence[_Item], found: dict[str, str]) -> None:
    for item in items:
        if isinstance(item, _Repeat):
            found.setdefault(item.variable, f"{item.path}.as")
            _steps(item.body, found)


def _expand(
    items: Sequence[_Item], values: dict[str, Any], context: PlanContext, out: list[Phase]
) -> None:
    for item in items:
        if isinstance(item, _Repeat):
            count = _required(item.count, values)
            if count < 0:
                raise PlanError(f"{item.count.path}: must be >= 0, got {count}{_at(values)}")
            for step in range(1, count + 1):
                _expand(item.body, {**values, item.variable: step}, context, out)
            continue
        fields = _evaluate_section(item, values)
        assert fields is not None  # a phase's required fields raise rather than vanish
        if fields[_PHASE_EPOCHS] < 0:
            raise PlanError(
                f"{item.path}.epochs: must be >= 0 (0 leaves the phase out),"
                f" got {fields[_PHASE_EPOCHS]}{_at(values)}"
            )
        epochs = context.optional_epochs(fields[_PHASE_EPOCHS])
        if epochs == 0:
            continue
        fields[_PHASE_EPOCHS] = epochs
        schedule = fields.get("lr_schedule")
        if schedule is not None:
            for name, rule in _SCHEDULE_EPOCHS.items():
                planned = getattr(schedule, name, None)
                if isinstance(planned, int) and planned > 0:
                    scaled = (
                        context.epochs(planned)
                        if rule == "at_least_one"
                        else context.optional_epochs(planned)
                    )
                    schedule = dataclasses.replace(schedule, **{name: scaled})
            fields["lr_schedule"] = schedule
        stopping = fields.get("early_stopping")
        if stopping is not None and stopping.patience <= 0:
            # As for the built-ins: a patience of 0 switches early stopping off.
            fields["early_stopping"] = None
        out.append(Phase(**fields))


def _required(leaf: _Leaf, values: Mapping[str, Any]) -> Any:
    try:
        return leaf.evaluate(values)
    except MissingParameter as missing:
        raise PlanError(
            f"{leaf.path}: uses {{{missing.name}}}, which is switched off here{_at(values)}"
        ) from None


def _evaluate_section(section: _Section, values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The section's fields as values; None when a required field uses a parameter that
    is switched off at this point (the section is then left out, if it may be)."""
    specs = _spec_of(section.cls)
    fields: dict[str, Any] = {}
    for name, node in section.fields.items():
        try:
            value = _evaluate(node, values)
        except MissingParameter as missing:
            if specs[name].required:
                if section.cls is Phase:
                    raise PlanError(
                        f"{section.path}.{name}: uses {{{missing.name}}}, which is switched"
                        f" off here{_at(values)}"
                    ) from None
                return None
            continue  # an optional field keeps its default where its parameter is off
        if value is None and node is not None and not specs[name].nullable:
            continue  # a section left out where its parameter is off: its default stands
        fields[name] = value
    return fields


def _evaluate(node: _Node, values: Mapping[str, Any]) -> Any:
    if node is None:
        return None
    if isinstance(node, _Leaf):
        return node.evaluate(values)
    if isinstance(node, _Items):
        if node.kind == "map":
            return {key: leaf.evaluate(values) for key, leaf in node.items}
        return tuple(leaf.evaluate(values) for _, leaf in node.items)
    fields = _evaluate_section(node, values)
    return None if fields is None else node.cls(**fields)
