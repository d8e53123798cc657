"""Runtime rules of compiled conditions: comparisons, Go number/JSON formatting, conversions."""

from __future__ import annotations

import math

import pytest

from collector.ottl.values import (
    EQ,
    GE,
    GT,
    LE,
    LT,
    NE,
    PMap,
    PSlice,
    SpanIDValue,
    TraceIDValue,
    compare,
    float_like,
    format_float_f,
    format_float_json,
    go_json,
    go_parse_float,
    go_parse_int,
    int_like,
    string_like,
    to_camel,
    to_snake,
    trace_state_get,
)
from tests.unit.test_ottl_compiler import attrs, value

ALL = (EQ, NE, LT, LE, GT, GE)


def results(a: object, b: object) -> tuple[bool, ...]:
    return tuple(compare(a, b, op) for op in ALL)


NOT_EQUAL = (False, True, False, False, False, False)


def test_nil_rules() -> None:
    assert results(None, None) == (True, False, False, True, False, True)
    others: tuple[object, ...] = (0, 0.0, "", False, [], b"x", TraceIDValue(bytes(16)))
    for other in others:
        assert results(None, other) == NOT_EQUAL
        assert results(other, None) == NOT_EQUAL
    # an empty byte slice reads as nil, like Go's []byte(nil)
    assert results(b"", None)[:2] == (True, False)


def test_numbers_compare_as_floats_across_kinds() -> None:
    assert results(1, 1.0) == (True, False, False, True, False, True)
    assert results(2, 1.5) == (False, True, False, False, True, True)
    # Go converts the int to float64 before comparing, losing precision like this
    assert compare(2**53 + 1, float(2**53), EQ)
    assert results(math.nan, math.nan) == (False, True, False, False, False, False)


def test_different_kinds_are_only_not_equal() -> None:
    for a, b in ((1, "1"), ("true", True), (True, 1), (1.0, True), (b"a", "a"), ([1], 1)):
        assert results(a, b) == NOT_EQUAL, (a, b)


def test_bools_and_strings_order() -> None:
    assert results(False, True) == (False, True, True, True, False, False)
    assert results("a", "b") == (False, True, True, True, False, False)
    assert compare("é", "z", GT)  # code point order is UTF-8 byte order


def test_ids_compare_only_with_their_own_kind() -> None:
    tid = TraceIDValue(bytes(range(16)))
    assert compare(tid, TraceIDValue(bytes(range(16))), EQ)
    assert results(tid, bytes(range(16))) == NOT_EQUAL
    assert results(tid, TraceIDValue(bytes(16)))[:2] == (False, True)
    assert not compare(tid, TraceIDValue(bytes(16)), LT)
    assert results(SpanIDValue(bytes(8)), TraceIDValue(bytes(8))) == NOT_EQUAL


def test_maps_and_slices_compare_deeply_and_only_for_equality() -> None:
    a = PMap(attrs({"x": 1, "y": ["a"]}))
    b = PMap(attrs({"y": ["a"], "x": 1}))
    c = PMap(attrs({"x": 1.0, "y": ["a"]}))
    assert compare(a, b, EQ) and not compare(a, b, NE)
    assert compare(a, c, NE)  # 1 and 1.0 differ for Go's reflect.DeepEqual
    assert not compare(a, b, LT)
    s = PSlice(value([1, "a"]).array_value.values)
    assert compare(s, [1, "a"], EQ)
    assert compare(s, a, NE)


@pytest.mark.parametrize(
    ("f", "fixed", "json"),
    [
        (1.5, "1.5", "1.5"),
        (2.0, "2", "2"),
        (100.0, "100", "100"),
        (0.1, "0.1", "0.1"),
        (-0.5, "-0.5", "-0.5"),
        (1e20, "100000000000000000000", "100000000000000000000"),
        (1e21, "1000000000000000000000", "1e+21"),
        (1e-6, "0.000001", "0.000001"),
        (1.5e-7, "0.00000015", "1.5e-7"),
        (123456789.125, "123456789.125", "123456789.125"),
    ],
)
def test_go_float_formats(f: float, fixed: str, json: str) -> None:
    assert format_float_f(f) == fixed
    assert format_float_json(f) == json


def test_go_json() -> None:
    assert go_json({"b": [1, 2.5, "x<y&z"], "a": True, "c": None}) == '{"a":true,"b":[1,2.5,"x\\u003cy\\u0026z"],"c":null}'
    assert go_json(b"\x00\xff") == '"AP8="'
    assert go_json("line\nbreak\t\"q\"") == '"line\\nbreak\\t\\"q\\""'


def test_string_like() -> None:
    assert string_like(None) is None
    assert string_like("s") == "s"
    assert string_like(b"\x01\xab") == "01ab"
    assert string_like(SpanIDValue(bytes.fromhex("0102030405060708"))) == "0102030405060708"
    assert string_like(12) == "12"
    assert string_like(False) == "false"
    assert string_like(PMap(attrs({"k": "v"}))) == '{"k":"v"}'


def test_go_number_parsing() -> None:
    assert go_parse_int("42") == 42 and go_parse_int("-7") == -7 and go_parse_int("+3") == 3
    for bad in ("4.0", " 4", "1_000", "0x10", "9223372036854775808", ""):
        assert go_parse_int(bad) is None, bad
    assert go_parse_float("1e3") == 1000.0 and go_parse_float(".5") == 0.5 and go_parse_float("0x1p-2") == 0.25
    assert go_parse_float("Inf") == math.inf
    for bad in (" 1", "1_0", "1e400", "abc", ""):
        assert go_parse_float(bad) is None, bad


def test_int_and_float_like() -> None:
    assert int_like(2.9) == 2 and int_like(-2.9) == -2
    assert int_like(True) == 1 and int_like("12") == 12 and int_like("x") is None
    assert float_like(3) == 3.0 and float_like("2.5") == 2.5 and float_like(False) == 0.0


@pytest.mark.parametrize(
    ("text", "snake", "camel"),
    [
        # strcase v0.3 lowers capitals that follow capitals when camel-casing
        ("myHTTPServer2", "my_http_server_2", "MyHttpserver2"),
        ("JSONData", "json_data", "Jsondata"),
        ("CONSTANT_CASE", "constant_case", "ConstantCase"),
        ("http.server.duration", "http_server_duration", "HttpServerDuration"),
        ("already_snake", "already_snake", "AlreadySnake"),
        ("  spaced out  ", "spaced_out", "SpacedOut"),
        ("ID", "id", "Id"),
    ],
)
def test_case_conversion(text: str, snake: str, camel: str) -> None:
    assert to_snake(text) == snake
    assert to_camel(text) == camel


def test_trace_state() -> None:
    assert trace_state_get("a=1, b=2", "b") == "2"
    assert trace_state_get("a=1", "z") is None
    assert trace_state_get("broken", "a") is None
