"""Runtime values of compiled conditions and the OTTL rules that apply to them.

Values are plain Python objects: ``None`` (nil), ``bool``, ``int`` (int64), ``float``
(float64), ``str``, ``bytes`` and ``list`` (a list literal), plus four small types for what
OTTL keeps distinct: :class:`TraceIDValue` and :class:`SpanIDValue` (pdata's fixed-size ids,
which compare only with their own kind), and :class:`PMap` / :class:`PSlice` (an attribute
map or array, left in the protobuf message until something needs its contents).

The conversions follow the stock Go code: comparisons (``pkg/ottl/compare.go``), the
"string like", "int like" and "float like" getters, JSON as Go's ``encoding/json`` writes it
(sorted keys, HTML characters escaped, Go's float format) and strcase's snake/camel case.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

EQ, NE, LT, LE, GT, GE = range(6)
OPS = {"==": EQ, "!=": NE, "<": LT, "<=": LE, ">": GT, ">=": GE}

ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)


class OTTLRuntimeError(Exception):
    """A condition failed on one item (wrong type, index out of range...)."""


class TraceIDValue(bytes):
    """A 16-byte trace id (an empty id reads as sixteen zero bytes, as in pdata)."""

    __slots__ = ()


class SpanIDValue(bytes):
    """An 8-byte span id (an empty id reads as eight zero bytes, as in pdata)."""

    __slots__ = ()


class PMap:
    """An attribute map (repeated ``KeyValue``), read lazily."""

    __slots__ = ("kvs",)

    def __init__(self, kvs: Any) -> None:
        self.kvs = kvs

    def to_raw(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kv in self.kvs:
            out.setdefault(kv.key, anyvalue_raw(kv.value))
        return out

    def __len__(self) -> int:
        return len(self.to_raw())


class PSlice:
    """An attribute array (repeated ``AnyValue``), read lazily."""

    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        self.values = values

    def to_raw(self) -> list[Any]:
        return [anyvalue_raw(v) for v in self.values]

    def __len__(self) -> int:
        return len(self.values)


_VALUE_TYPE_NAMES = {
    None: "Empty",
    "string_value": "Str",
    "bool_value": "Bool",
    "int_value": "Int",
    "double_value": "Double",
    "array_value": "Slice",
    "kvlist_value": "Map",
    "bytes_value": "Bytes",
}


def anyvalue(v: AnyValue | None) -> Any:
    """An ``AnyValue`` (or ``None`` for a missing one) as a runtime value."""
    if v is None:
        return None
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return None
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "bytes_value":
        return v.bytes_value
    if kind == "array_value":
        return PSlice(v.array_value.values)
    return PMap(v.kvlist_value.values)


def anyvalue_raw(v: AnyValue) -> Any:
    """An ``AnyValue`` as plain Python data (maps and arrays expanded)."""
    value = anyvalue(v)
    if isinstance(value, (PMap, PSlice)):
        return value.to_raw()
    return value


def get_attr(kvs: Any, key: str) -> AnyValue | None:
    """The value of ``key`` in an attribute list (the first one, as pdata's ``Map.Get``)."""
    for kv in kvs:
        if kv.key == key:
            return kv.value
    return None


def is_nil(v: AnyValue | None) -> bool:
    """Whether an attribute lookup gave nil (missing key or empty value)."""
    return v is None or v.WhichOneof("value") is None


def index_value(v: AnyValue | None, keys: Sequence[str | int]) -> Any:
    """Follow ``["a"][0]...`` keys into nested maps and arrays, as OTTL's map getter does."""
    for key in keys:
        if v is None:
            return None
        kind = v.WhichOneof("value")
        if kind == "kvlist_value":
            if not isinstance(key, str):
                raise OTTLRuntimeError("non-string indexing is not supported on a map")
            v = get_attr(v.kvlist_value.values, key)
            if v is None:
                return None
        elif kind == "array_value":
            if not isinstance(key, int):
                raise OTTLRuntimeError("unable to resolve an integer index in slice: a string key was given")
            values = v.array_value.values
            if key < 0 or key >= len(values):
                raise OTTLRuntimeError(f"index {key} out of bounds")
            v = values[key]
        else:
            raise OTTLRuntimeError(f"type {_VALUE_TYPE_NAMES.get(kind, kind)} does not support string indexing")
    return anyvalue(v)


def index_body(body: AnyValue, keys: Sequence[str | int]) -> Any:
    """``log.body["k"]...``: only a map or array body can be indexed."""
    kind = body.WhichOneof("value")
    if kind not in ("kvlist_value", "array_value"):
        raise OTTLRuntimeError(f"log bodies of type {_VALUE_TYPE_NAMES.get(kind, kind)} cannot be indexed")
    return index_value(body, keys)


# -- comparisons -----------------------------------------------------------------------------


def _prim(a: Any, b: Any, op: int) -> bool:
    if op == EQ:
        return bool(a == b)
    if op == NE:
        return bool(a != b)
    if op == LT:
        return bool(a < b)
    if op == LE:
        return bool(a <= b)
    if op == GT:
        return bool(a > b)
    return bool(a >= b)


def _raw(value: Any) -> Any:
    return value.to_raw() if isinstance(value, (PMap, PSlice)) else value


def deep_equal(a: Any, b: Any) -> bool:
    """Go's ``reflect.DeepEqual`` on raw values: types must match exactly (1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compare(a: Any, b: Any, op: int) -> bool:
    """``a op b`` under the OTTL comparison rules; never raises.

    nil equals only nil; an int and a float compare as floats; values of different kinds are
    "not equal" (only ``!=`` is true); maps and lists support only ``==`` and ``!=``.
    """
    if a is None and b is None:
        return op in (EQ, LE, GE)
    if a is None or (type(a) is bytes and not a):
        # An empty byte slice reads as nil, like Go's []byte(nil).
        if b is None or (type(b) is bytes and not b):
            return op in (EQ, LE, GE)
        return op == NE
    ta = type(a)
    tb = type(b)
    if ta is bool:
        return _prim(a, b, op) if tb is bool else op == NE
    if ta is int:
        if tb is int:
            return _prim(a, b, op)
        return _prim(float(a), b, op) if tb is float else op == NE
    if ta is float:
        if tb is float:
            return _prim(a, b, op)
        return _prim(a, float(b), op) if tb is int else op == NE
    if ta is str:
        return _prim(a, b, op) if tb is str else op == NE
    if ta is bytes:
        if b is None or (tb is bytes and not b):
            return op == NE
        return _prim(a, b, op) if tb is bytes else op == NE
    if ta is TraceIDValue or ta is SpanIDValue:
        if op in (EQ, NE) and tb is ta:
            return (bytes(a) == bytes(b)) == (op == EQ)
        return op == NE
    if ta in (PMap, dict) or ta in (PSlice, list):
        want = dict if ta in (PMap, dict) else list
        other = _raw(b)
        if type(other) is not want or op not in (EQ, NE):
            return op == NE
        return deep_equal(_raw(a), other) == (op == EQ)
    return bool(a == b) if op == EQ else (bool(a != b) if op == NE else False)


# -- Go formatting ---------------------------------------------------------------------------


def _shortest_digits(f: float) -> tuple[str, int]:
    """The shortest round-trip digits of ``f`` (> 0) and the decimal exponent of the first."""
    _, digits, exp = Decimal(repr(f)).as_tuple()
    # The coefficient has no leading zeros, so value = 0.d1d2d3... * 10**point.
    point = len(digits) + int(exp)
    return "".join(map(str, digits)).rstrip("0") or "0", point


def format_float_f(f: float) -> str:
    """Go's ``strconv.FormatFloat(f, 'f', -1, 64)``: shortest digits, never an exponent."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    digits, point = _shortest_digits(abs(f))
    sign = "-" if f < 0 else ""
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_float_json(f: float) -> str:
    """A float as Go's ``encoding/json`` writes it (exponent form below 1e-6 or from 1e21)."""
    if math.isnan(f) or math.isinf(f):
        raise OTTLRuntimeError(f"json: unsupported value: {format_float_f(f)}")
    a = abs(f)
    if a == 0 or 1e-6 <= a < 1e21:
        return format_float_f(f)
    digits, point = _shortest_digits(a)
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if f < 0 else ''}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp)}"


_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_STR_RE = re.compile(r'[\x00-\x1f"\\<>&\u2028\u2029]')
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_str(s: str) -> str:
    def repl(m: re.Match[str]) -> str:
        c = m.group()
        if c in _JSON_SHORT:
            return _JSON_SHORT[c]
        if c in _HTML_ESCAPES:
            return _HTML_ESCAPES[c]
        return f"\\u{ord(c):04x}"

    return '"' + _JSON_STR_RE.sub(repl, s) + '"'


def go_json(value: Any) -> str:
    """``json.Marshal`` of a raw value, as Go writes it."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        return format_float_json(value)
    if isinstance(value, str):
        return _json_str(value)
    if isinstance(value, bytes):
        return _json_str(base64.b64encode(value).decode())
    if isinstance(value, (PMap, PSlice)):
        return go_json(value.to_raw())
    if isinstance(value, dict):
        return "{" + ",".join(f"{_json_str(k)}:{go_json(value[k])}" for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise OTTLRuntimeError(f"unsupported type: {type(value).__name__}")


def as_string(v: AnyValue) -> str:
    """pdata ``Value.AsString()``: the canonical text of an ``AnyValue`` (``log.body.string``)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return format_float_f(v.double_value)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return go_json(anyvalue_raw(v))


def string_like(value: Any) -> str | None:
    """OTTL's "string like" getter: nil stays nil, other values become their text."""
    if value is None:
        return None
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bytes or t is TraceIDValue or t is SpanIDValue:
        return bytes(value).hex()
    return go_json(value)


_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])\Z"
)


def go_parse_int(s: str) -> int | None:
    """``strconv.ParseInt(s, 10, 64)``; ``None`` where Go reports an error."""
    if not _INT_RE.match(s):
        return None
    n = int(s)
    return n if -(2**63) <= n < 2**63 else None


def go_parse_float(s: str) -> float | None:
    """``strconv.ParseFloat(s, 64)`` (no spaces or '_'); ``None`` where Go reports an error."""
    if not _FLOAT_RE.match(s):
        return None
    body = s.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        f = float.fromhex(body)
        return -f if s.startswith("-") else f
    f = float(s)
    return None if math.isinf(f) and body.lower() not in ("inf", "infinity") else f


def _trunc_int(f: float) -> int:
    if math.isnan(f) or math.isinf(f):
        raise OTTLRuntimeError(f"cannot convert {format_float_f(f)} to an int")
    return int(f)


def int_like(value: Any) -> int | None:
    """``Int()``: floats truncate toward zero, strings parse (nil when they don't), bools are 0/1."""
    if value is None:
        return None
    t = type(value)
    if t is int:
        return value  # type: ignore[no-any-return]
    if t is bool:
        return 1 if value else 0
    if t is float:
        return _trunc_int(value)
    if t is str:
        return go_parse_int(value)
    raise OTTLRuntimeError(f"unsupported type: {_type_name(value)}")


def float_like(value: Any) -> float | None:
    """``Double()``: ints widen, strings parse (nil when they don't), bools are 0/1."""
    if value is None:
        return None
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        return float(value)
    if t is bool:
        return 1.0 if value else 0.0
    if t is str:
        return go_parse_float(value)
    raise OTTLRuntimeError(f"unsupported type: {_type_name(value)}")


def _type_name(value: Any) -> str:
    if isinstance(value, PMap):
        return "Map"
    if isinstance(value, PSlice):
        return "Slice"
    return {bool: "bool", int: "int64", float: "float64", str: "string", bytes: "[]byte", list: "[]any"}.get(
        type(value), type(value).__name__
    )


def go_len(value: Any) -> int:
    """``Len()``: bytes of a string (Go counts UTF-8 bytes), items of a list or map."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogateescape"))
    if isinstance(value, (PMap, PSlice, list)):
        return len(value)
    raise OTTLRuntimeError(f"Len: unsupported type {_type_name(value)}" if value is not None else "Len: target is nil")


def substring(value: Any, start: Any, length: Any, utf8_safe: bool) -> str:
    """``Substring(target, start, length)``: Go slices strings by byte unless utf8_safe."""
    if type(value) is not str:
        raise OTTLRuntimeError(f"expected string but got {_type_name(value) if value is not None else 'nil'}")
    if type(start) is not int or type(length) is not int:
        raise OTTLRuntimeError("Substring start and length must be ints")
    if start < 0:
        raise OTTLRuntimeError(f"invalid start for substring function, {start} cannot be negative")
    if length <= 0:
        raise OTTLRuntimeError(f"invalid length for substring function, {length} cannot be negative or zero")
    if utf8_safe or value.isascii():
        if start + length > len(value):
            raise OTTLRuntimeError(
                f"invalid range for substring function, start({start})+length({length}) cannot be greater than the length of target string({len(value)})"
            )
        return value[start : start + length]
    data = value.encode("utf-8", "surrogateescape")
    if start > len(data) or length > len(data) - start:
        raise OTTLRuntimeError(
            f"invalid range for substring function, start({start})+length({length}) cannot be greater than the length of target string({len(data)})"
        )
    return data[start : start + length].decode("utf-8", "surrogateescape")


# -- case conversion (iancoleman/strcase v0.3, as ConvertCase uses) -----------------------------


def _go_map_case(s: str, upper: bool) -> str:
    if s.isascii():
        return s.upper() if upper else s.lower()
    # Go maps rune by rune; Python's multi-character mappings (ß -> SS) are not Go's.
    out = []
    for ch in s:
        mapped = ch.upper() if upper else ch.lower()
        out.append(mapped if len(mapped) == 1 else ch)
    return "".join(out)


def to_upper(s: str) -> str:
    """``strings.ToUpper``."""
    return _go_map_case(s, True)


def to_lower(s: str) -> str:
    """``strings.ToLower``."""
    return _go_map_case(s, False)


def _is_cap(b: int) -> bool:
    return 0x41 <= b <= 0x5A


def _is_low(b: int) -> bool:
    return 0x61 <= b <= 0x7A


def _is_num(b: int) -> bool:
    return 0x30 <= b <= 0x39


def to_snake(s: str) -> str:
    """strcase ``ToSnake``: ``myHTTPServer2`` -> ``my_http_server_2``."""
    data = s.strip(" \t\n\r\v\f").encode("utf-8", "surrogateescape")
    out = bytearray()
    n = len(data)
    for i, v in enumerate(data):
        v_cap, v_low = _is_cap(v), _is_low(v)
        if v_cap:
            v += 0x20
        if i + 1 < n:
            nxt = data[i + 1]
            v_num = _is_num(v)
            n_cap, n_low, n_num = _is_cap(nxt), _is_low(nxt), _is_num(nxt)
            if (v_cap and (n_low or n_num)) or (v_low and (n_cap or n_num)) or (v_num and (n_cap or n_low)):
                if v_cap and n_low and i > 0 and _is_cap(data[i - 1]):
                    out.append(0x5F)
                out.append(v)
                if v_low or v_num or n_num:
                    out.append(0x5F)
                continue
        out.append(0x5F if v in (0x20, 0x5F, 0x2D, 0x2E) else v)
    return out.decode("utf-8", "surrogateescape")


def to_camel(s: str) -> str:
    """strcase ``ToCamel``: ``my_metric_name`` -> ``MyMetricName`` (other bytes are dropped)."""
    data = s.strip(" \t\n\r\v\f").encode("utf-8", "surrogateescape")
    if not data:
        return ""
    out = bytearray()
    cap_next = True
    prev_cap = False
    for i, v in enumerate(data):
        v_cap, v_low = _is_cap(v), _is_low(v)
        if cap_next:
            if v_low:
                v -= 0x20
        elif i == 0:
            if v_cap:
                v += 0x20
        elif prev_cap and v_cap:
            v += 0x20
        prev_cap = v_cap
        if v_cap or v_low:
            out.append(v)
            cap_next = False
        elif _is_num(v):
            out.append(v)
            cap_next = True
        else:
            cap_next = v in (0x5F, 0x20, 0x2D, 0x2E)
    return out.decode("utf-8", "surrogateescape")


def trace_state_get(state: str, key: str) -> str | None:
    """One entry of a W3C ``tracestate`` header (None when missing or malformed)."""
    for member in state.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        k, sep, v = member.partition("=")
        if not sep:
            return None
        if k == key:
            return v
    return None
