"""Strategies written in the experiment file: phase templates over searched parameters.

A written strategy is a list of phases whose values are fixed or expressions over the
strategy's parameters (``lr: "{base_lr} / 2"``), with ``repeat`` for a phase that
comes once per step (``repeat: "{steps}"``, ``as: i``). For sampled parameters it
expands into the same :class:`PhasePlan` a built-in strategy returns, so the engine,
the schedulers, the analysis and retraining cannot tell the two apart.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from trainables.phases import Phase, PhasePlan, PlanError
from trainables.strategies._context import PlanContext
from trainables.strategies._expression import (
    Expression,
    ExpressionError,
    MissingParameter,
    Text,
    parse_expression,
    parse_text,
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

_Kind = Literal["int", "float", "text", "bool", "trainable", "section", "map", "list"]


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    """What one field of a phase (or of a section inside it) takes."""

    kind: _Kind
    nullable: bool = False
    required: bool = False
    section: type | None = None


@functools.cache
def _spec_of(cls: type) -> dict[str, _FieldSpec]:
    """Field specs of a plan dataclass, read from its type hints, so a field added to
    ``Phase`` or ``LRSchedule`` can be written without touching this module."""
    hints = typing.get_type_hints(cls)
    specs = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        nullable = type(None) in args
        if nullable:
            (hint,) = [arg for arg in args if arg is not type(None)]
        # A field without a default must be written; the others keep theirs when left out.
        required = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        origin = typing.get_origin(hint)
        section = None
        if field.name == "trainable":
            kind: _Kind = "trainable"
        elif dataclasses.is_dataclass(hint):
            kind, section = "section", hint
        elif origin in (Mapping, dict) or (origin is not None and _is_mapping(origin)):
            kind = "map"
        elif origin is tuple:
            kind = "list"
        elif hint is bool:
            kind = "bool"
        elif hint is int:
            kind = "int"
        elif hint is float:
            kind = "float"
        elif hint is str:
            kind = "text"
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no written form for {hint}")
        specs[field.name] = _FieldSpec(kind, nullable, required, section)
    return specs


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    """One written value: a constant, an expression or words with ``{name}`` holes."""

    kind: _Kind
    path: str
    constant: Any = None
    expression: Expression | None = None
    text: Text | None = None

    @property
    def references(self) -> frozenset[str]:
        if self.expression is not None:
            return self.expression.references
        if self.text is not None:
            return self.text.references
        return frozenset()

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        if self.text is not None:
            return self.text.evaluate(values)
        if self.expression is None:
            return self.constant
        try:
            value = self.expression.evaluate(values)
        except MissingParameter:
            raise
        except ExpressionError as error:
            raise PlanError(f"{self.path}: {error}{_at(values)}") from None
        return self._typed(value, values)

    def _typed(self, value: Any, values: Mapping[str, Any]) -> Any:
        if self.kind == "trainable" and value in ("all", "none"):
            return value
        if self.kind in ("int", "trainable"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PlanError(f"{self.path}: takes a whole number, got {value!r}{_at(values)}")
            if not float(value).is_integer():
                raise PlanError(
                    f"{self.path}: must come out a whole number, got {value:g} from"
                    f" {self.expression.source!r}{_at(values)}; wrap it in round(...)"
                    if self.expression is not None
                    else f"{self.path}: must be a whole number, got {value}"
                )
            return int(value)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PlanError(f"{self.path}: takes a number, got {value!r}{_at(values)}")
            return float(value)
        if self.kind == "bool" and not isinstance(value, bool):
            raise PlanError(f"{self.path}: takes true or false, got {value!r}{_at(values)}")
        return value


def _at(values: Mapping[str, Any]) -> str:
    shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
    return f" (at {shown})" if shown else ""


def _leaf(kind: _Kind, path: str, raw: Any) -> _Leaf:
    """Read one written value of ``kind``; PlanError naming ``path`` if it cannot be one."""
    try:
        if kind == "text":
            if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                raise PlanError(f"{path}: takes words, got {raw!r}")
            return _Leaf(kind, path, text=parse_text(str(raw)))
        if isinstance(raw, str):
            if kind == "trainable" and raw in ("all", "none"):
                return _Leaf(kind, path, constant=raw)
            return _Leaf(kind, path, expression=parse_expression(raw))
    except ExpressionError as error:
        raise PlanError(f"{path}: {error}") from None
    leaf = _Leaf(kind, path, constant=raw)
    return dataclasses.replace(leaf, constant=leaf._typed(raw, {}))


@dataclasses.dataclass(frozen=True)
class _Section:
    """A nested value written as a mapping (``lr_schedule``, ``early_stopping``, ...)."""

    cls: type
    path: str
    fields: Mapping[str, _Node]

    @property
    def references(self) -> frozenset[str]:
        return frozenset().union(*(_references(node) for node in self.fields.values()))


@dataclasses.dataclass(frozen=True)
class _Items:
    """A mapping of names to numbers (``head_lr``) or a list of words (``tasks``)."""

    kind: Literal["map", "list"]
    path: str
    items: tuple[tuple[str, _Leaf], ...]

    @property
    def references(self) -> frozenset[str]:
        return frozenset().union(*(leaf.references for _, leaf in self.items))


_Node = _Leaf | _Section | _Items | None


def _references(node: _Node) -> frozenset[str]:
    return frozenset() if node is None else node.references


def _node(spec: _FieldSpec, path: str, raw: Any) -> _Node:
    if raw is None:
        if not spec.nullable:
            raise PlanError(f"{path}: needs a value")
        return None
    if spec.kind == "section":
        assert spec.section is not None
        return _section(spec.section, path, raw)
    if spec.kind == "map":
        if not isinstance(raw, Mapping):
            raise PlanError(f"{path}: give a mapping of names to values, got {raw!r}")
        # A section's free-form mapping (weighting params, head_lr) holds numbers.
        return _Items(
            "map",
            path,
            tuple((str(k), _leaf("float", f"{path}.{k}", v)) for k, v in raw.items()),
        )
    if spec.kind == "list":
        if isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",")]
        if not isinstance(raw, Sequence):
            raise PlanError(f"{path}: give a list, got {raw!r}")
        return _Items(
            "list", path, tuple(("", _leaf("text", f"{path}[{i}]", v)) for i, v in enumerate(raw))
        )
    return _leaf(spec.kind, path, raw)


def _section(cls: type, path: str, raw: Any) -> _Section:
    if not isinstance(raw, Mapping):
        raise PlanError(f"{path}: give a mapping of its fields, got {raw!r}")
    specs = _spec_of(cls)
    unknown = [str(key) for key in raw if key not in specs]
    if unknown:
        raise PlanError(
            f"{path}.{unknown[0]}: unknown field; {path.rsplit('.', 1)[-1]} takes"
            f" {', '.join(specs)}"
        )
    missing = [name for name, spec in specs.items() if spec.required and name not in raw]
    if missing:
        raise PlanError(f"{path}.{missing[0]}: required")
    return _Section(cls, path, {k: _node(specs[k], f"{path}.{k}", v) for k, v in raw.items()})


@dataclasses.dataclass(frozen=True)
class _Repeat:
    """``repeat: count, as: name, phase(s): ...``: the body once per value 1..count."""

    path: str
    count: _Leaf
    variable: str
    body: tuple[_Item, ...]


_Item = _Section | _Repeat

_REPEAT_KEYS = ("repeat", "as", "phase", "phases")


def _items(raw: Any, path: str) -> tuple[_Item, ...]:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PlanError(f"{path}: give a list of phases")
    return tuple(_item(entry, f"{path}[{i}]") for i, entry in enumerate(raw))


def _item(raw: Any, path: str) -> _Item:
    if not isinstance(raw, Mapping):
        raise PlanError(f"{path}: give a phase as a mapping of its fields, got {raw!r}")
    if "repeat" not in raw:
        return _section(Phase, path, raw)
    unknown = [str(key) for key in raw if key not in _REPEAT_KEYS]
    if unknown:
        raise PlanError(f"{path}.{unknown[0]}: unknown field; a repeat takes repeat, as, phase")
    variable = raw.get("as", "i")
    if not isinstance(variable, str) or not variable.isidentifier():
        raise PlanError(f"{path}.as: name the step variable, e.g. i; got {variable!r}")
    if ("phase" in raw) == ("phases" in raw):
        raise PlanError(f"{path}: give the repeated phase as phase (or a list as phases)")
    body = (
        (_item(raw["phase"], f"{path}.phase"),)
        if "phase" in raw
        else _items(raw["phases"], f"{path}.phases")
    )
    return _Repeat(path, _leaf("int", f"{path}.repeat", raw["repeat"]), variable, body)


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
