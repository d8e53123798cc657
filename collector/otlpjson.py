"""OTLP/JSON: the JSON encoding of OTLP messages, as the OTLP specification defines it.

OTLP/JSON is the proto3 JSON mapping with one deviation that matters: the ``traceId``,
``spanId`` and ``parentSpanId`` byte fields (in spans, span links, log records and metric
exemplars) are hex strings, not base64. Decoding is lenient the way the specification and the
stock collector are: keys in lowerCamelCase or in their proto (snake_case) spelling, enums as
integers or names, 64-bit integers as numbers or strings, unknown fields ignored. Encoding
writes lowerCamelCase keys, integer enums and hex ids.

``google.protobuf.json_format`` does the mapping; this module only translates the id fields
between hex and the base64 that ``json_format`` expects, walking just the containers that can
hold them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from collector.pdata import REQUEST_TYPES, ExportRequest, InvalidData, Signal

M = TypeVar("M", bound=Message)

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL_HUMP.sub("_", name).lower()


class _Node:
    """A container that holds id fields or containers that do, keyed by lowerCamelCase name.

    Both spellings of every key are worked out once here, not per span.
    """

    __slots__ = ("children", "ids")

    def __init__(self, ids: dict[str, int] | None = None, children: dict[str, tuple[bool, _Node]] | None = None) -> None:
        self.ids = tuple((_spellings(camel), size) for camel, size in (ids or {}).items())
        self.children = tuple((_spellings(camel), is_list, node) for camel, (is_list, node) in (children or {}).items())


def _spellings(camel: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys to look for when decoding, the key written when encoding)."""
    snake = _snake(camel)
    return ((camel, snake) if snake != camel else (camel,)), (camel,)


_TRACE_AND_SPAN = {"traceId": 16, "spanId": 8}
_SPAN = _Node({**_TRACE_AND_SPAN, "parentSpanId": 8}, {"links": (True, _Node(_TRACE_AND_SPAN))})
_POINTS = _Node(children={"dataPoints": (True, _Node(children={"exemplars": (True, _Node(_TRACE_AND_SPAN))}))})
_METRIC = _Node(children={kind: (False, _POINTS) for kind in ("gauge", "sum", "histogram", "exponentialHistogram")})


def _resource_level(resource_key: str, scope_key: str, items_key: str, item: _Node) -> dict[str, tuple[bool, _Node]]:
    scope = _Node(children={items_key: (True, item)})
    return {resource_key: (True, _Node(children={scope_key: (True, scope)}))}


# One root for all signals: the top-level key says which signal a document holds, so the same
# walk serves export requests and the TracesData/MetricsData/LogsData documents files carry.
_ROOT = _Node(
    children={
        **_resource_level("resourceSpans", "scopeSpans", "spans", _SPAN),
        **_resource_level("resourceMetrics", "scopeMetrics", "metrics", _METRIC),
        **_resource_level("resourceLogs", "scopeLogs", "logRecords", _Node(_TRACE_AND_SPAN)),
    }
)


class _FieldError(Exception):
    """An id field failed to convert; the walk prefixes the path on the way out."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


# A converter turns one id value into its other spelling, or raises ValueError.
_Converter = Callable[[Any, int], str]


def _walk(obj: dict[str, Any], node: _Node, convert: _Converter, both_spellings: bool) -> None:
    for (decoding, encoding), size in node.ids:
        for key in decoding if both_spellings else encoding:
            value = obj.get(key)
            if value is not None:
                try:
                    obj[key] = convert(value, size)
                except ValueError as exc:
                    raise _FieldError(key, str(exc)) from None
    for (decoding, encoding), is_list, child in node.children:
        for key in decoding if both_spellings else encoding:
            value = obj.get(key)
            if value is None:
                continue
            if not is_list:
                if isinstance(value, dict):
                    try:
                        _walk(value, child, convert, both_spellings)
                    except _FieldError as exc:
                        raise _FieldError(f"{key}.{exc.path}", str(exc)) from None
                continue
            if not isinstance(value, list):
                continue  # json_format reports the wrong type with its own message
            for i, element in enumerate(value):
                if isinstance(element, dict):
                    try:
                        _walk(element, child, convert, both_spellings)
                    except _FieldError as exc:
                        raise _FieldError(f"{key}[{i}].{exc.path}", str(exc)) from None


def _hex_to_base64(value: Any, size: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a hex string of {2 * size} characters, got {type(value).__name__}")
    if value == "":
        return ""
    try:
        raw = bytes.fromhex(value) if len(value) == 2 * size else b""
    except ValueError:
        raise ValueError(f"{value!r} is not a hex string") from None
    # bytes.fromhex skips spaces, so the decoded length is checked as well as the text's
    if len(raw) != size:
        raise ValueError(f"must be {2 * size} hex characters ({size} bytes), got {value!r}")
    return base64.b64encode(raw).decode("ascii")


def _base64_to_hex(value: Any, size: int) -> str:
    return binascii.a2b_base64(value).hex()


def loads(data: bytes | str) -> Any:
    """Parse JSON text, raising :class:`InvalidData` for bad UTF-8 or bad JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidData(f"the JSON body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    else:
        text = data
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidData(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidData("invalid JSON: nested too deeply") from None


def parse(data: bytes | str, message_type: type[M]) -> M:
    """Decode OTLP/JSON ``data`` into a new ``message_type`` message.

    Raises :class:`InvalidData` naming the problem (and the id field, for a bad id).
    """
    doc = loads(data)
    if not isinstance(doc, dict):
        raise InvalidData(f"the JSON body must be an object, not {type(doc).__name__}")
    try:
        _walk(doc, _ROOT, _hex_to_base64, True)
    except _FieldError as exc:
        raise InvalidData(f"{exc.path}: {exc}") from None
    message = message_type()
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise InvalidData(f"invalid OTLP JSON: {exc}") from None
    return message


def parse_request(signal: Signal, data: bytes | str) -> ExportRequest:
    """Decode the OTLP/JSON body of an export request of ``signal``."""
    return parse(data, REQUEST_TYPES[signal])


def to_dict(message: Message) -> dict[str, Any]:
    """``message`` as an OTLP/JSON object: lowerCamelCase keys, integer enums, hex ids."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _walk(doc, _ROOT, _base64_to_hex, False)
    return doc


def dumps(message: Message) -> bytes:
    """``message`` encoded as compact OTLP/JSON (UTF-8 bytes)."""
    return json.dumps(to_dict(message), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
