"""Reading a written strategy: every value checked against the plan field it sets and
parsed into a tree of templates (constants, expressions and words with ``{name}``
holes, sections, lists and repeats) that :class:`WrittenStrategy` turns into plans.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from trainables.phases import Phase, PlanError
from trainables.strategies._expression import (
    Expression,
    ExpressionError,
    MissingParameter,
    Text,
    parse_expression,
    parse_text,
)

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
