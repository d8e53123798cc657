"""The text of a Loki log line for one OTLP log record: ``json``, ``logfmt`` or ``raw``.

The fields and their names are the stock Loki exporter's (``pkg/translator/loki``):

* ``json``: an object with ``body``, ``traceid``, ``spanid``, ``severity``, ``flags``,
  ``attributes``, ``resources`` and ``instrumentation_scope`` (``name``, ``version``), each
  left out when empty. Values keep their JSON types; bytes are base64.
* ``logfmt``: the body's own ``key=value`` pairs when it is logfmt (else ``msg=<body>``), then
  ``traceID``, ``spanID``, ``severity``, ``flags``, ``attribute_<key>``, ``resource_<key>``,
  ``instrumentation_scope_name`` and ``_version``. Maps and lists are flattened
  (``attribute_http_request_0=...``).
* ``raw``: the body as a string.

What depends only on the resource or the scope (their JSON members, their logfmt pairs) is
rendered once per resource or scope and joined to each record's own part.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope

FORMATS = ("json", "logfmt", "raw")


def raw_value(value: AnyValue) -> Any:
    """An attribute or body value as plain Python (``pcommon.Value.AsRaw``; bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "kvlist_value":
        return {kv.key: raw_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [raw_value(v) for v in value.array_value.values]
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind is None or kind == "string_value_strindex":
        return None
    return getattr(value, kind)


def dumps(raw: Any) -> str:
    """Compact JSON, non-ASCII kept as is (NaN and infinities become ``null``)."""
    # orjson is about six times faster than the json module here, where every record's line
    # is an encoding.
    return orjson.dumps(raw).decode()


# ---- json


def json_member(name: str, raw: Any) -> bytes:
    """``"name":<json>``, for the parts rendered once per resource or scope."""
    return orjson.dumps(name) + b":" + orjson.dumps(raw)


def scope_json(scope: InstrumentationScope) -> bytes:
    """The ``instrumentation_scope`` member of the line, or nothing without a scope name."""
    if not scope.name:
        return b""
    inner: dict[str, str] = {"name": scope.name}
    if scope.version:
        inner["version"] = scope.version
    return json_member("instrumentation_scope", inner)


def json_line(record: dict[str, Any], tail: bytes) -> bytes:
    """The JSON line: the record's own members, then ``tail`` (resources and scope members)."""
    text = orjson.dumps(record)
    if not tail:
        return text
    if len(text) == 2:
        return b"{" + tail + b"}"
    return text[:-1] + b"," + tail + b"}"


# ---- logfmt

# A logfmt key is anything but spaces, '=' and '"'; a value is bare or double-quoted.
_LOGFMT_PAIR = re.compile(r'\s*([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?=\s|$)')
_LOGFMT_BAD_KEY = re.compile(r'[\s="]')
# go-logfmt quotes a value holding a space or control character, '=', '"' or U+FFFD.
_LOGFMT_QUOTE = re.compile('[\x00- ="\ufffd]')


def parse_logfmt(text: str) -> list[tuple[str, Any]] | None:
    """The ``key=value`` pairs of a logfmt line, or ``None`` when ``text`` is not one.

    Every token must be a pair: a plain sentence is not taken for a series of bare keys.
    """
    pairs: list[tuple[str, Any]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _LOGFMT_PAIR.match(text, pos)
        if match is None:
            return None
        value = match.group(2)
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        pairs.append((match.group(1), value))
        pos = match.end()
    return pairs or None


def flatten(prefix: str, raw: Any, out: list[tuple[str, Any]]) -> None:
    """Append ``raw`` as logfmt pairs: maps and lists become ``prefix_key`` / ``prefix_N``."""
    if isinstance(raw, dict):
        head = prefix + "_" if prefix else ""
        for key, value in raw.items():
            flatten(head + key, value, out)
    elif isinstance(raw, list):
        head = prefix + "_" if prefix else ""
        for i, value in enumerate(raw):
            flatten(f"{head}{i}", value, out)
    elif raw is not None:
        out.append((prefix, raw))


def body_pairs(kind: str | None, raw: Any) -> list[tuple[str, Any]]:
    """The logfmt pairs a body starts the line with."""
    if kind is None:
        return []
    if kind == "string_value":
        return parse_logfmt(raw) or [("msg", raw)]
    out: list[tuple[str, Any]] = []
    if kind == "kvlist_value":
        flatten("", raw, out)
    elif kind == "array_value":
        flatten("body", raw, out)
    else:
        out.append(("msg", raw))
    return out


def set_pair(pairs: list[tuple[str, Any]], key: str, value: Any) -> None:
    """Replace the value of ``key`` if the body already has it, else append the pair."""
    for i, (k, _) in enumerate(pairs):
        if k == key:
            pairs[i] = (key, value)
            return
    pairs.append((key, value))


def _logfmt_value(value: Any) -> str:
    if isinstance(value, str):
        if value == "null":
            return '"null"'
        if _LOGFMT_QUOTE.search(value):
            return dumps(value)
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "NaN" if math.isnan(value) else "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def logfmt(pairs: Iterable[tuple[str, Any]]) -> str:
    """Render pairs as a logfmt line; characters a key cannot hold become ``_``."""
    parts = []
    for key, value in pairs:
        if _LOGFMT_BAD_KEY.search(key):
            key = _LOGFMT_BAD_KEY.sub("_", key)
        if key:
            parts.append(f"{key}={_logfmt_value(value)}")
    return " ".join(parts)


def scope_logfmt(scope: InstrumentationScope) -> list[tuple[str, Any]]:
    """The scope's pairs at the end of a logfmt line."""
    if not scope.name:
        return []
    pairs: list[tuple[str, Any]] = [("instrumentation_scope_name", scope.name)]
    if scope.version:
        pairs.append(("instrumentation_scope_version", scope.version))
    return pairs


def prefixed_pairs(prefix: str, items: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``prefix<key>`` pairs for attributes (``attribute_``) or resources (``resource_``)."""
    out: list[tuple[str, Any]] = []
    for key, raw in items:
        flatten(prefix + key, raw, out)
    return out
