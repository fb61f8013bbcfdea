"""Arithmetic over a strategy's parameters, as an experiment file writes it.

``"{base_lr} / {decay} ** ({steps} + 1)"`` is read by a small parser into a tree and
evaluated by walking it: numbers, ``{name}`` references, ``+ - * / **``, parentheses
and the calls ``min``, ``max`` and ``round``. Nothing a user writes reaches Python's
``eval``: there is no attribute access, no other call and no bare name.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "FUNCTIONS",
    "Expression",
    "ExpressionError",
    "MissingParameter",
    "Text",
    "parse_expression",
    "parse_text",
]

#: The calls an expression may make; every other name is refused.
FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "round": round}

#: Longer expressions or deeper nesting are refused: a recipe needs neither, and a
#: bound keeps a hostile file from exhausting the parser's stack.
MAX_LENGTH = 500
MAX_DEPTH = 32

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|\{\s*(?P<ref>[A-Za-z_][A-Za-z0-9_]*)\s*\}"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/(),])"
    r")"
)
_TEXT_REF = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")


class ExpressionError(ValueError):
    """An expression that cannot be read or evaluated; one line saying why."""


class MissingParameter(ExpressionError):
    """An expression uses a parameter that the values at hand do not set."""

    def __init__(self, name: str) -> None:
        super().__init__(f"uses {{{name}}}, which is not set here")
        self.name = name


@dataclasses.dataclass(frozen=True)
class _Number:
    value: int | float

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return self.value


@dataclasses.dataclass(frozen=True)
class _Reference:
    name: str

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        if self.name not in values:
            raise MissingParameter(self.name)
        return values[self.name]


@dataclasses.dataclass(frozen=True)
class _Negate:
    operand: _Node

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return -_number(self.operand.evaluate(values), "-")


@dataclasses.dataclass(frozen=True)
class _Binary:
    op: str
    left: _Node
    right: _Node

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        left = _number(self.left.evaluate(values), self.op)
        right = _number(self.right.evaluate(values), self.op)
        try:
            if self.op == "+":
                return left + right
            if self.op == "-":
                return left - right
            if self.op == "*":
                return left * right
            if self.op == "/":
                return left / right
            return _power(left, right)
        except ZeroDivisionError:
            raise ExpressionError("divides by zero") from None
        except OverflowError:
            raise ExpressionError(f"{self.op} gives a number too large") from None


@dataclasses.dataclass(frozen=True)
class _Call:
    function: str
    arguments: tuple[_Node, ...]

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        numbers = [_number(argument.evaluate(values), self.function) for argument in self.arguments]
        if self.function == "round":
            if len(numbers) == 2 and not isinstance(numbers[1], int):
                raise ExpressionError("round(x, digits) takes a whole number of digits")
            return round(*numbers)
        return FUNCTIONS[self.function](numbers)


_Node = _Number | _Reference | _Negate | _Binary | _Call


def _number(value: Any, where: str) -> int | float:
    # bool is an int to Python, but `true * 2` in a recipe is a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"{where} takes numbers, got {value!r}")
    return value


def _power(base: int | float, exponent: int | float) -> int | float:
    # Integers are raised as floats: 10 ** 10 ** 9 would otherwise compute for hours.
    result = float(base) ** exponent
    if isinstance(result, complex):
        raise ExpressionError(f"{base} ** {exponent} is not a real number")
    whole = isinstance(base, int) and isinstance(exponent, int) and exponent >= 0
    if whole and abs(result) < 2**53:
        return int(result)
    return result


@dataclasses.dataclass(frozen=True)
class Expression:
    """A parsed expression: evaluate it with the parameters' values.

    Attributes:
        source: The text as written, for messages.
        references: The parameter names it uses.
    """

    source: str
    tree: _Node
    references: frozenset[str]

    @property
    def lone_reference(self) -> str | None:
        """The name, when the whole expression is one ``{name}``: its value is taken as
        it is, so a categorical of words (``"{schedule}"``) works too."""
        return self.tree.name if isinstance(self.tree, _Reference) else None

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The value under ``values``; ExpressionError if it cannot be computed."""
        result = self.tree.evaluate(values)
        if isinstance(result, float) and not math.isfinite(result):
            raise ExpressionError(f"{self.source!r} comes out as {result}")
        return result


@dataclasses.dataclass(frozen=True)
class Text:
    """Words with ``{name}`` holes, such as a phase's name ``"unfreeze {i}"``."""

    source: str
    references: frozenset[str]

    def evaluate(self, values: Mapping[str, Any]) -> str:
        def fill(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise MissingParameter(match.group(1))
            return str(values[match.group(1)])

        return _TEXT_REF.sub(fill, self.source)


def parse_text(source: str) -> Text:
    """``source`` with its ``{name}`` holes; braces around anything else are refused."""
    stripped = _TEXT_REF.sub("", source)
    if "{" in stripped or "}" in stripped:
        raise ExpressionError(
            f"{source!r}: in words, braces hold one parameter name, such as {{i}}"
        )
    return Text(source, frozenset(_TEXT_REF.findall(source)))


def parse_expression(source: str) -> Expression:
    """Read ``source`` into an :class:`Expression`.

    Raises:
        ExpressionError: one line naming what is not allowed, e.g. a bare name, an
            attribute, a call other than min, max and round.
    """
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    parser = _Parser(source)
    tree = parser.expression(0)
    if parser.peek() is not None:
        raise ExpressionError(f"{source!r}: unexpected {parser.peek()[1]!r}")
    return Expression(source, tree, frozenset(parser.references))


class _Parser:
    """Recursive descent with Python's precedence: ``**`` binds tighter than unary
    minus on its left (``-2 ** 2`` is -4) and groups to the right."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = self._tokenize(source)
        for kind, text in self.tokens:
            if kind == "name" and text not in FUNCTIONS:
                raise ExpressionError(f"{source!r}: {_refused_name(text)}")
        self.position = 0
        self.references: set[str] = set()

    def _tokenize(self, source: str) -> list[tuple[str, str]]:
        tokens, index = [], 0
        while index < len(source):
            if source[index:].strip() == "":
                break
            match = _TOKEN.match(source, index)
            if match is None or match.end() == index:
                # Problems are named in reading order: a refused name before the
                # character the tokens stop at.
                for kind, text in tokens:
                    if kind == "name" and text not in FUNCTIONS:
                        raise ExpressionError(f"{source!r}: {_refused_name(text)}")
                rest = source[index:].lstrip()
                raise ExpressionError(f"{source!r}: {_what_is_refused(rest)}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            index = match.end()
        return tokens

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self, op: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ExpressionError(f"{self.source!r}: ends too early")
        if op is not None and token != ("op", op):
            raise ExpressionError(f"{self.source!r}: expected {op!r}, got {token[1]!r}")
        self.position += 1
        return token

    def _at(self, *ops: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] in ops

    def expression(self, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"{self.source!r}: nested more than {MAX_DEPTH} deep")
        node = self._term(depth)
        while self._at("+", "-"):
            op = self._take()[1]
            node = _Binary(op, node, self._term(depth))
        return node

    def _term(self, depth: int) -> _Node:
        node = self._unary(depth)
        while self._at("*", "/"):
            op = self._take()[1]
            node = _Binary(op, node, self._unary(depth))
        return node

    def _unary(self, depth: int) -> _Node:
        if self._at("-", "+"):
            op = self._take()[1]
            operand = self._unary(depth + 1)
            return _Negate(operand) if op == "-" else operand
        base = self._atom(depth)
        if self._at("**"):
            self._take()
            return _Binary("**", base, self._unary(depth + 1))
        return base

    def _atom(self, depth: int) -> _Node:
        kind, text = self._take()
        if kind == "number":
            return _Number(float(text) if any(c in text for c in ".eE") else int(text))
        if kind == "ref":
            self.references.add(text)
            return _Reference(text)
        if kind == "name":
            if text not in FUNCTIONS or not self._at("("):
                raise ExpressionError(f"{self.source!r}: {_refused_name(text)}")
            self._take("(")
            arguments = [self.expression(depth + 1)]
            while self._at(","):
                self._take()
                arguments.append(self.expression(depth + 1))
            self._take(")")
            if text == "round" and len(arguments) > 2:
                raise ExpressionError(f"{self.source!r}: round takes a number and digits")
            return _Call(text, tuple(arguments))
        if (kind, text) == ("op", "("):
            node = self.expression(depth + 1)
            self._take(")")
            return node
        raise ExpressionError(f"{self.source!r}: unexpected {text!r}")


def _refused_name(name: str) -> str:
    if name in FUNCTIONS:
        return f"{name} is a call: write {name}(a, b)"
    return (
        f"{name!r} is not allowed: write a parameter in braces ({{{name}}}); the only"
        f" calls are {', '.join(FUNCTIONS)}"
    )


def _what_is_refused(rest: str) -> str:
    if rest.startswith("."):
        return "attribute access is not allowed"
    if rest.startswith("["):
        return "indexing is not allowed"
    if rest.startswith("{"):
        return "braces hold one parameter name, such as {lr}"
    return f"unexpected {rest[:1]!r}; use numbers, {{name}}, + - * / **, ( ), min, max, round"
