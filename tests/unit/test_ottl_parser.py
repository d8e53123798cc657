"""The OTTL condition parser: literals, paths, calls, precedence, and errors with columns."""

from __future__ import annotations

import pytest

from collector.ottl import OTTLError, parse_condition
from collector.ottl.ast import And, BoolConst, Call, Comparison, Enum, ListValue, Literal, Not, Or, Path


def comparison(text: str) -> Comparison:
    node = parse_condition(text)
    assert isinstance(node, Comparison)
    return node


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ('"a string"', "a string", "str"),
        ('"tab\\there"', "tab\there", "str"),
        ('"quote \\" and backslash \\\\"', 'quote " and backslash \\', "str"),
        ('"\\u00e9\\U0001F600"', "é😀", "str"),
        ('"\\x41\\101"', "AA", "str"),
        ('"\\\\d+"', "\\d+", "str"),
        ("1", 1, "int"),
        ("-1", -1, "int"),
        ("+7", 7, "int"),
        ("1.5", 1.5, "float"),
        ("-.5", -0.5, "float"),
        ("1.5e3", 1500.0, "float"),
        ("true", True, "bool"),
        ("false", False, "bool"),
        ("nil", None, "nil"),
        ("0x0102ff", b"\x01\x02\xff", "bytes"),
    ],
)
def test_literals(text: str, value: object, kind: str) -> None:
    node = comparison(f"name == {text}")
    assert isinstance(node.right, Literal)
    assert node.right.value == value
    assert node.right.kind == kind


def test_paths_with_keys_and_context() -> None:
    node = comparison('resource.attributes["k8s.pod"]["nested"][0] != nil')
    assert isinstance(node.left, Path)
    assert [s.name for s in node.left.segments] == ["resource", "attributes"]
    assert node.left.segments[1].keys == ["k8s.pod", "nested", 0]
    assert node.left.text == 'resource.attributes["k8s.pod"]["nested"][0]'
    assert node.op == "!="


def test_enum_and_converter_and_named_arguments() -> None:
    node = comparison("kind == SPAN_KIND_SERVER")
    assert isinstance(node.right, Enum) and node.right.name == "SPAN_KIND_SERVER"
    node = comparison('Substring(target = name, start = 0, length = 3) == "GET"')
    assert isinstance(node.left, Call)
    assert [(a.name, type(a.value).__name__) for a in node.left.args] == [("target", "Path"), ("start", "Literal"), ("length", "Literal")]


def test_lists_as_arguments() -> None:
    node = comparison('Concat(["a", name, 1], "-") == "a-x-1"')
    assert isinstance(node.left, Call)
    first = node.left.args[0].value
    assert isinstance(first, ListValue) and len(first.items) == 3


def test_converter_alone_is_a_boolean() -> None:
    node = parse_condition('IsMatch(name, "^GET")')
    assert isinstance(node, BoolConst) and isinstance(node.value, Call)
    node = parse_condition("true")
    assert isinstance(node, BoolConst) and isinstance(node.value, Literal)


def test_precedence_not_then_and_then_or() -> None:
    node = parse_condition('not name == "a" and kind == 1 or kind == 2')
    assert isinstance(node, Or)
    left, right = node.operands
    assert isinstance(left, And) and isinstance(right, Comparison)
    assert isinstance(left.operands[0], Not)


def test_parentheses_override_precedence() -> None:
    node = parse_condition('name == "a" and (kind == 1 or kind == 2)')
    assert isinstance(node, And)
    assert isinstance(node.operands[1], Or)
    node = parse_condition('not (name == "a" or name == "b")')
    assert isinstance(node, Not) and isinstance(node.operand, Or)


def test_keywords_need_word_boundaries() -> None:
    node = comparison("notice == 1")
    assert isinstance(node.left, Path) and node.left.segments[0].name == "notice"
    node = comparison("android_or == nil")
    assert isinstance(node.left, Path)


def test_multiline_condition() -> None:
    node = parse_condition('\n    attributes["test"] == "pass" or\n    attributes["test"] == "also pass"')
    assert isinstance(node, Or)


@pytest.mark.parametrize(
    ("text", "col", "fragment"),
    [
        ('attributes[test] == "pass"', 12, "expected a string or integer key"),
        ('name == "unterminated', 9, "unexpected character"),
        ("name ==", 8, "expected a value"),
        ("name", 5, "expected a comparison operator"),
        ('name == "a" "b"', 13, "after a complete condition"),
        ('(name == "a"', 13, "')' to close"),
        ("name == 1 + 2", 11, "math expressions"),
        ("name == -1 -1", 12, "math expressions"),
        ('isMatch(name, "a")', 1, "converter names must start with an uppercase letter"),
        ('name == {"a": 1}', 9, "map literals"),
        ("name == 0x123", 9, "even number of hex digits"),
        ('name == "\\q"', 10, "invalid escape"),
        ("Foo == 1", 1, "neither an enum"),
        ('Split(name, ",")[0] == "a"', 17, "indexing the result of a converter"),
        ("not not true", 5, "expected a value"),
        ("name == 99999999999999999999", 9, "int64 range"),
        ('IsMatch(pattern = "a", name)', 24, "positional arguments must come before named"),
        ("   ", 1, "empty"),
        ("a.B == 1", 3, "path segments are lower case"),
        ("name == @", 9, "unexpected character '@'"),
    ],
)
def test_errors_carry_the_column(text: str, col: int, fragment: str) -> None:
    with pytest.raises(OTTLError) as info:
        parse_condition(text)
    assert info.value.col == col, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"column {col}: ")
