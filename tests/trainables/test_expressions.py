"""The evaluator of a written strategy's expressions: arithmetic, and nothing else."""

from __future__ import annotations

import pytest

from trainables.strategies import ExpressionError, parse_expression, parse_text


@pytest.mark.parametrize(
    ("source", "values", "expected"),
    [
        ("{lr} / 2", {"lr": 1e-3}, 1e-3 / 2),
        ("{lr} / {decay} ** ({steps} + 1)", {"lr": 1e-2, "decay": 2.0, "steps": 3}, 1e-2 / 16),
        ("1 / {m} ** 0.2", {"m": 100}, 1 / 100**0.2),
        ("-2 ** 2", {}, -4),
        ("2 ** -1", {}, 0.5),
        ("2 ** 3 ** 2", {}, 512),
        ("(1 + 2) * 3 - 4 / 2", {}, 7.0),
        ("min({a}, {b}) + max({a}, {b}, 10)", {"a": 1, "b": 5}, 11),
        ("round({x})", {"x": 2.6}, 3),
        ("round({x}, 1)", {"x": 2.66}, 2.7),
        ("1.0e-4 * 10", {}, 1e-3),
        (".5 + 1.", {}, 1.5),
        ("{steps} + 1", {"steps": 3}, 4),
        ("{kind}", {"kind": "cosine"}, "cosine"),
    ],
)
def test_arithmetic_follows_pythons_rules(source, values, expected):
    value = parse_expression(source).evaluate(values)
    assert value == pytest.approx(expected) if isinstance(expected, float) else value == expected
    assert type(value) is type(expected)


def test_references_are_the_names_in_braces():
    expression = parse_expression("{lr} / {decay} ** min({i}, 3)")
    assert expression.references == {"lr", "decay", "i"}
    assert parse_expression("{kind}").lone_reference == "kind"
    assert parse_expression("{lr} * 2").lone_reference is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{lr}.real", "attribute access is not allowed"),
        ("(1).__class__", "attribute access is not allowed"),
        ("__import__('os').system('true')", "'__import__' is not allowed"),
        ("abs({lr})", "'abs' is not allowed"),
        ("eval('1')", "'eval' is not allowed"),
        ("lr * 2", "'lr' is not allowed: write a parameter in braces ({lr})"),
        ("min", "min is a call"),
        ("{lr}[0]", "indexing is not allowed"),
        ("lambda: 1", "'lambda' is not allowed"),
        ("'text'", "unexpected"),
        ("{lr} if 1 else 2", "'if' is not allowed"),
        ("{a + b}", "braces hold one parameter name"),
        ("1 +", "ends too early"),
        ("(1 + 2", "ends too early"),
        ("1 2", "unexpected '2'"),
        ("round(1, 2, 3)", "round takes a number and digits"),
        ("(" * 40 + "1" + ")" * 40, "nested more than"),
        ("1" * 600, "longer than"),
    ],
)
def test_anything_but_arithmetic_is_refused_in_one_line(source, message):
    with pytest.raises(ExpressionError, match=None) as caught:
        parse_expression(source)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("source", "values", "message"),
    [
        ("{lr} / ({m} - 10)", {"lr": 1.0, "m": 10}, "divides by zero"),
        ("10.0 ** 400", {}, "too large"),
        ("10 ** 10 ** 10", {}, "too large"),
        ("{x} ** 0.5", {"x": -4.0}, "not a real number"),
        ("{kind} * 2", {"kind": "cosine"}, "takes numbers, got 'cosine'"),
        ("{flag} + 1", {"flag": True}, "takes numbers, got True"),
        ("{lr} * 2", {}, "uses {lr}, which is not set here"),
        ("round({x}, 0.5)", {"x": 1.0}, "whole number of digits"),
        ("1e308 * 10", {}, "comes out as inf"),
    ],
)
def test_evaluation_problems_are_one_line(source, values, message):
    with pytest.raises(ExpressionError) as caught:
        parse_expression(source).evaluate(values)
    assert message in str(caught.value)


def test_text_fills_its_holes_and_refuses_more_than_names():
    text = parse_text("unfreeze {i} of {steps}")
    assert text.references == {"i", "steps"}
    assert text.evaluate({"i": 2, "steps": 5}) == "unfreeze 2 of 5"
    assert parse_text("frozen").evaluate({}) == "frozen"
    with pytest.raises(ExpressionError, match="braces hold one parameter name"):
        parse_text("unfreeze {i + 1}")
    with pytest.raises(ExpressionError, match="braces hold one parameter name"):
        parse_text("unfreeze {i")
