"""Find errors in OTLP traces and logs, as the OpenTelemetry semantic conventions put them.

An error is one of:

- a **span event named** ``exception`` (``exception.type``, ``exception.message``,
  ``exception.stacktrace``, ``exception.escaped``), which is what every SDK's
  ``record_exception`` / ``RecordError`` writes;
- a **log record carrying** ``exception.type``, ``exception.message`` or
  ``exception.stacktrace`` attributes (the SDK logging bridges set them for ``exc_info``);
- optionally, a **log record at or above a severity** (``logs.min_severity``), exception or not;
- optionally, a **span with status** ``ERROR`` that recorded no exception event
  (``traces.status_errors``).

Errors that arrive already structured (a Sentry event turned into a log record by the
``api`` extension's ingest, see ``docs/sentry.md``) carry AppGuard's own attributes beside the
conventional ones: ``appguard.exception.values`` (Sentry's ``exception.values`` as JSON: the
chained exceptions with their frames, whose ``in_app`` marks are kept), ``appguard.event_id``
(the SDK's event id) and ``appguard.project_id`` (the project the SDK's key belongs to). The
frames are then taken as given rather than parsed out of ``exception.stacktrace``.

The ``errors`` exporter and the ``errormetrics`` connector share :class:`Extractor`.

Most requests carry no error, so the work is arranged to cost next to nothing for them: while
a payload still has the bytes it was received as, one substring search over those bytes tells
whether any span event is named ``exception`` (the name is always encoded as the bytes
``12 09 "exception"``) or whether any ``exception.*`` attribute key is present, and a request
without is done with before its spans are looked at. When there are some, the spans are walked
only until as many exception events were found as the bytes announced. Attribute values are
converted to Python only for the spans and records that hold an error, and
:meth:`Extractor.trim` cuts a request down to those for queueing.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from pydantic import field_validator

from collector.configtypes import ComponentConfig
from collector.pdata import REQUEST_TYPES, Payload, Signal
from exporters.errors.stacktrace import MAX_EXCEPTIONS, ParsedStacktrace, _python_module, exceptions_from_dicts
from storage.projects import DEFAULT_PROJECT

# --------------------------------------------------------------------------- attribute names

EXCEPTION_EVENT = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"
EXCEPTION_ESCAPED = "exception.escaped"
FINGERPRINT = "appguard.fingerprint"
EXCEPTION_VALUES = "appguard.exception.values"
EVENT_ID = "appguard.event_id"
PROJECT_ID = "appguard.project_id"
SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
ENVIRONMENT = "deployment.environment.name"
ENVIRONMENT_OLD = "deployment.environment"
SDK_LANGUAGE = "telemetry.sdk.language"
SESSION_ID = "session.id"
USER_ID = "user.id"
ENDUSER_ID = "enduser.id"
USER_EMAIL = "user.email"
USER_AGENT = "user_agent.original"
ERROR_TYPE = "error.type"

# The conventional exception keys: their values live in columns of their own.
_COLUMN_KEYS = frozenset({EXCEPTION_TYPE, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE})
# Keys left out of ``attributes``: those, and what is stored apart (frames, project, event id).
_STORED_APART = _COLUMN_KEYS | {EXCEPTION_VALUES, EVENT_ID, PROJECT_ID}

# What the encoded bytes of a request contain when an error may be in it (see module doc).
# Span.Event.name is field 2 (tag 0x12); the length of "exception" is 9.
_EXCEPTION_EVENT_BYTES = b"\x12\x09exception"
# KeyValue.key is field 1 (tag 0x0a), followed by the key's length.
_EXCEPTION_KEY_BYTES = (
    b"\x0a\x0e" + EXCEPTION_TYPE.encode(),
    b"\x0a\x11" + EXCEPTION_MESSAGE.encode(),
    b"\x0a\x14" + EXCEPTION_STACKTRACE.encode(),
)

# --------------------------------------------------------------------------- bounds

#: Attributes kept per error (resource, span or log record, and event together).
MAX_ATTRIBUTES = 128
#: Characters kept of a string attribute value (messages and stack traces have their own bounds).
MAX_VALUE_CHARS = 1024
#: Items kept of an array or map value; nesting deeper than MAX_DEPTH is summarized as text.
MAX_ITEMS = 32
MAX_DEPTH = 3
#: Characters kept of an exception message.
MAX_MESSAGE_CHARS = 8192
#: Characters of a stack trace kept for storage: its first three quarters and its last quarter.
MAX_STACKTRACE_CHARS = 128 * 1024

# --------------------------------------------------------------------------- severities

_SEVERITY_BASES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
_SEVERITY_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL", "PANIC": "FATAL", "ERR": "ERROR", "EMERGENCY": "FATAL"}


def parse_severity(value: Any) -> int:
    """A severity number (1..24) from a number or a name such as ``ERROR``, ``warn``, ``INFO3``."""
    if isinstance(value, bool):
        raise ValueError("a severity name (TRACE, DEBUG, INFO, WARN, ERROR, FATAL) or number 1-24 is expected")
    if isinstance(value, int):
        if 1 <= value <= 24:
            return value
        raise ValueError(f"severity number {value} is outside 1-24")
    if isinstance(value, str):
        text = value.strip().upper()
        digits = text[-1] if text[-1:] in ("1", "2", "3", "4") else ""
        name = text[: len(text) - len(digits)] if digits else text
        name = _SEVERITY_ALIASES.get(name, name)
        if name in _SEVERITY_BASES:
            return _SEVERITY_BASES[name] + (int(digits) - 1 if digits else 0)
        if text.isdigit():
            return parse_severity(int(text))
    raise ValueError(f"{value!r} is not a severity (TRACE, DEBUG, INFO, WARN, ERROR, FATAL, optionally 1-4, or 1-24)")


def severity_level(number: int, text: str = "") -> str:
    """The error tracker's level for a log severity: debug, info, warning, error or fatal.

    A record without a severity number is judged by its severity text; without either, an
    exception in it makes it an ``error``.
    """
    if number <= 0 and text:
        try:
            number = parse_severity(text)
        except ValueError:
            number = 0
    if number <= 0:
        return "error"
    if number <= 8:
        return "debug"
    if number <= 12:
        return "info"
    if number <= 16:
        return "warning"
    if number <= 20:
        return "error"
    return "fatal"


# --------------------------------------------------------------------------- config


class TracesOptions(ComponentConfig):
    """``traces``: which spans hold errors besides those with an ``exception`` event."""

    #: Also report spans whose status is ERROR but that recorded no exception event.
    status_errors: bool = False


class LogsOptions(ComponentConfig):
    """``logs``: which log records are errors besides those carrying ``exception.*``."""

    #: Also report every record at or above this severity (name or number); off when unset.
    min_severity: int | None = None

    @field_validator("min_severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return None if value is None or value == "" else parse_severity(value)


# --------------------------------------------------------------------------- values


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An OTLP value as a JSON-ready Python value, bounded in size.

    Bytes become base64 text (as OTLP/JSON writes them), non-finite doubles their names,
    strings are cut at :data:`MAX_VALUE_CHARS`, arrays and maps at :data:`MAX_ITEMS`.
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        text = value.string_value
        return text if len(text) <= MAX_VALUE_CHARS else clip(text, MAX_VALUE_CHARS)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "bytes_value":
        return clip(base64.b64encode(value.bytes_value[: MAX_VALUE_CHARS]).decode("ascii"), MAX_VALUE_CHARS)
    if kind == "array_value":
        if depth >= MAX_DEPTH:
            return f"[{len(value.array_value.values)} values]"
        return [any_value(v, depth + 1) for v in value.array_value.values[:MAX_ITEMS]]
    if kind == "kvlist_value":
        if depth >= MAX_DEPTH:
            return f"{{{len(value.kvlist_value.values)} entries}}"
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values[:MAX_ITEMS]}
    return None


def as_text(value: AnyValue) -> str | None:
    """A string, number or boolean value as text; None for anything else or no value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clip_stacktrace(text: str) -> str:
    """A stack trace bounded for storage: its head and its tail around a note of what was cut."""
    if len(text) <= MAX_STACKTRACE_CHARS:
        return text
    head = MAX_STACKTRACE_CHARS * 3 // 4
    tail = MAX_STACKTRACE_CHARS // 4
    cut = len(text) - head - tail
    return f"{text[:head]}\n… {cut} characters cut …\n{text[-tail:]}"


def _attribute_dict(attributes: Iterable[KeyValue], into: dict[str, Any]) -> None:
    """Add the converted attributes whose keys ``into`` lacks, up to MAX_ATTRIBUTES keys."""
    for kv in attributes:
        if len(into) >= MAX_ATTRIBUTES:
            return
        key = clip(kv.key, 256)
        if key in into or key in _STORED_APART:
            continue
        into[key] = any_value(kv.value)


def _fingerprint_value(value: AnyValue) -> list[str] | str | None:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [t for v in value.array_value.values[:MAX_ITEMS] if (t := as_text(v)) is not None]
    return as_text(value)


def to_datetime(unix_nano: int) -> datetime:
    """An OTLP timestamp as an aware UTC datetime, exactly to the microsecond."""
    return _EPOCH + timedelta(microseconds=unix_nano // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class ResourceInfo:
    """What an error takes from its resource; computed once per resource of a request.

    ``container`` is the ``ResourceSpans`` or ``ResourceLogs`` message the resource came in.
    """

    container: Any
    attributes: dict[str, Any]
    service_name: str
    service_version: str | None
    environment: str
    language: str | None
    #: ``appguard.project_id`` of the resource, if it names a project
    project_id: int | None = None

    @property
    def resource(self) -> Resource:
        """The resource itself."""
        resource: Resource = self.container.resource
        return resource

    @classmethod
    def of(cls, container: Any) -> ResourceInfo:
        """Convert a resource's attributes and pick out the ones errors are filed by."""
        attributes: dict[str, Any] = {}
        _attribute_dict(container.resource.attributes, attributes)

        def text(key: str) -> str | None:
            value = attributes.get(key)
            return value if isinstance(value, str) and value else None

        return cls(
            container=container,
            attributes=attributes,
            service_name=text(SERVICE_NAME) or "",
            service_version=text(SERVICE_VERSION),
            environment=text(ENVIRONMENT) or text(ENVIRONMENT_OLD) or "",
            language=text(SDK_LANGUAGE),
            project_id=_project_id(container.resource.attributes),
        )


Source = Literal["exception_event", "span_status", "log"]


@dataclass(slots=True)
class FoundError:
    """One error found in a request, with the context it was found in.

    ``layers`` are the item's own attribute lists, most specific first (the exception event's,
    then the span's; or the log record's); the resource's come from ``resource``. Lookups go
    through them in that order, so an event attribute wins over the span's, which wins over the
    resource's.
    """

    source: Source
    resource: ResourceInfo
    layers: tuple[Sequence[KeyValue], ...]
    trace_id: bytes
    span_id: bytes
    time_unix_nano: int
    level: str
    exc_type: str | None
    message: str | None
    stacktrace: str | None
    escaped: bool | None
    # ``appguard.fingerprint`` of the event or log record itself (see :attr:`fingerprint`).
    own_fingerprint: list[str] | str | None
    span_name: str | None
    # The ScopeSpans / ScopeLogs message, the span or log record holding the error, the
    # message the error is (event, span or log record) and, for an event, its position in the
    # span: what trimming copies and the event id is derived from.
    scope: Any = field(repr=False)
    owner: Any = field(repr=False)
    item: Any = field(repr=False)
    index: int = 0
    # ``appguard.exception.values`` (JSON), ``appguard.event_id`` and ``appguard.project_id``
    # of the event or log record itself, when it has them.
    values_json: str | None = field(default=None, repr=False)
    given_event_id: uuid.UUID | None = None
    own_project_id: int | None = None

    def text(self, key: str) -> str | None:
        """An attribute's value as non-empty text (strings, numbers, booleans), or None.

        The most specific value counts: the event's, then the span's (or the log record's),
        then the resource's.
        """
        return self.collect(frozenset((key,)), with_attributes=False)[1].get(key)

    def attributes(self) -> dict[str, Any]:
        """Resource, span (or log record) and event attributes merged, the specific winning.

        Bounded to :data:`MAX_ATTRIBUTES` keys; the ``exception.type``, ``.message`` and
        ``.stacktrace`` values are left out (they are stored apart). The span's name is added
        as ``span.name``.
        """
        return self.collect(frozenset())[0]

    def collect(self, keys: frozenset[str], *, with_attributes: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
        """:meth:`attributes` and the :meth:`text` of each of ``keys``, in one pass over the lists."""
        merged: dict[str, Any] = {}
        texts: dict[str, str] = {}
        seen: set[str] = set()
        full = not with_attributes
        # Most specific first: when the bound is reached, what is left out is the least specific.
        for layer in self.layers:
            for kv in layer:
                key = kv.key
                if key in keys and key not in seen:
                    seen.add(key)
                    text = as_text(kv.value)
                    if text:
                        texts[key] = text if len(text) <= MAX_VALUE_CHARS else clip(text, MAX_VALUE_CHARS)
                if full or key in merged or key in _STORED_APART:
                    continue
                merged[key if len(key) <= 256 else clip(key, 256)] = any_value(kv.value)
                full = len(merged) >= MAX_ATTRIBUTES
        resource = self.resource.attributes
        for key in keys - seen:
            value = resource.get(key)
            if isinstance(value, (str, int, float)) and not isinstance(value, bool) and value != "":
                texts[key] = str(value)
        if with_attributes:
            if self.span_name is not None and "span.name" not in merged:
                merged["span.name"] = clip(self.span_name, MAX_VALUE_CHARS)
            for key, value in resource.items():
                if key not in merged and len(merged) < MAX_ATTRIBUTES:
                    merged[key] = value
        return merged, texts

    @property
    def fingerprint(self) -> list[str] | str | None:
        """The ``appguard.fingerprint`` attribute of the event (or log record), else of its span."""
        if self.own_fingerprint is not None:
            return self.own_fingerprint
        for layer in self.layers[1:] if self.source == "exception_event" else self.layers:
            for kv in layer:
                if kv.key == FINGERPRINT:
                    return _fingerprint_value(kv.value)
        return None

    @property
    def project_id(self) -> int:
        """The ``appguard.project_id`` of the event (or log record), else of its resource, else 1."""
        return self.own_project_id or self.resource.project_id or DEFAULT_PROJECT

    def structured_exceptions(self) -> ParsedStacktrace | None:
        """The exceptions and frames the error came with (``appguard.exception.values``), or
        None when it brought none and its stack trace text is to be parsed.

        The frames keep the ``in_app`` marks they came with. A fresh object every call: the
        grouper sets marks on it.
        """
        if self.values_json is None:
            return None
        return structured_exceptions(self.values_json, self.resource.language)

    @property
    def trace_id_hex(self) -> str | None:
        """The trace id as 32 hex digits, or None when the item has none."""
        return self.trace_id.hex() if self.trace_id and any(self.trace_id) else None

    @property
    def span_id_hex(self) -> str | None:
        """The span id as 16 hex digits, or None when the item has none."""
        return self.span_id.hex() if self.span_id and any(self.span_id) else None

    @property
    def timestamp(self) -> datetime:
        """When the error happened (UTC)."""
        return to_datetime(self.time_unix_nano)

    @property
    def event_id(self) -> uuid.UUID:
        """A stable id: the same error in a request sent again gets the same id.

        An ``appguard.event_id`` attribute (a Sentry event's own id) is taken as it is.
        Otherwise it hashes what identifies the error in its source: trace id, span id and the event's
        position and time for an exception event; trace id, span id and start time for a span
        with status ERROR; for a log record (which has no id of its own) its ids, times,
        severity and exception or body text.
        """
        if self.given_event_id is not None:
            return self.given_event_id
        parts = [self.trace_id, self.span_id]
        item = self.item
        if self.source == "exception_event":
            parts += [b"e", self.index.to_bytes(4, "big"), item.time_unix_nano.to_bytes(8, "big")]
        elif self.source == "span_status":
            parts += [b"s", item.start_time_unix_nano.to_bytes(8, "big")]
        else:
            parts += [
                b"l",
                item.time_unix_nano.to_bytes(8, "big"),
                item.observed_time_unix_nano.to_bytes(8, "big"),
                item.severity_number.to_bytes(4, "big", signed=True),
            ]
            for text in (self.exc_type, self.message, self.stacktrace):
                encoded = (text or "").encode("utf-8", "surrogatepass")
                parts += [len(encoded).to_bytes(8, "big"), encoded]
        return uuid.UUID(bytes=hashlib.blake2b(b"".join(parts), digest_size=16).digest())

    @property
    def type_name(self) -> str:
        """The exception type as the attributes name it ("" when they do not)."""
        return self.exc_type or ""


# --------------------------------------------------------------------------- extraction


class Extractor:
    """Finds the errors of one payload; see the module docstring for what counts."""

    def __init__(self, traces: TracesOptions | None = None, logs: LogsOptions | None = None) -> None:
        self.status_errors = (traces or TracesOptions()).status_errors
        self.min_severity = (logs or LogsOptions()).min_severity

    def extract(self, payload: Payload) -> list[FoundError]:
        """Every error of a traces or logs payload, in the order of the request."""
        found: list[FoundError] = []
        info: ResourceInfo | None = None
        if payload.signal is Signal.TRACES:
            for rs, ss, span, index, event in self._trace_hits(payload):
                if info is None or info.container is not rs:
                    info = ResourceInfo.of(rs)
                found.append(_from_status(info, ss, span) if event is None else _from_event(info, ss, span, index, event))
        elif payload.signal is Signal.LOGS:
            for rl, sl, record in self._log_hits(payload):
                if info is None or info.container is not rl:
                    info = ResourceInfo.of(rl)
                found.append(_from_log(info, sl, record))
        return found

    def trim(self, payload: Payload) -> Payload | None:
        """A request holding only the spans (log records) that carry errors, or None if none do.

        Resources and scopes come along with what they hold; the spans and records are copied
        whole, so extracting from the trimmed request gives the same errors with the same ids.
        """
        if payload.signal is Signal.TRACES:
            hits: Iterator[tuple[Any, Any, Any]] = ((rs, ss, span) for rs, ss, span, _, _ in self._trace_hits(payload))
            names = ("resource_spans", "scope_spans", "spans")
        elif payload.signal is Signal.LOGS:
            hits = self._log_hits(payload)
            names = ("resource_logs", "scope_logs", "log_records")
        else:
            return None
        request = REQUEST_TYPES[payload.signal]()
        resource_copy = scope_copy = None
        last_resource = last_scope = last_owner = None
        for container, scope, owner in hits:
            if container is not last_resource:
                last_resource, last_scope = container, None
                resource_copy = getattr(request, names[0]).add()
                resource_copy.resource.CopyFrom(container.resource)
                resource_copy.schema_url = container.schema_url
            if scope is not last_scope:
                last_scope = scope
                scope_copy = getattr(resource_copy, names[1]).add()
                scope_copy.scope.CopyFrom(scope.scope)
                scope_copy.schema_url = scope.schema_url
            if owner is not last_owner:
                last_owner = owner
                getattr(scope_copy, names[2]).add().CopyFrom(owner)
        if last_owner is None:
            return None
        return Payload.from_message(payload.signal, request, metadata=payload.metadata, client_address=payload.client_address)

    # ---- traces

    def _trace_hits(self, payload: Payload) -> Iterator[tuple[Any, Any, Any, int, Any]]:
        """(ResourceSpans, ScopeSpans, span, event index, event) per exception event, and
        (..., span, 0, None) per span with status ERROR and no exception when asked for."""
        # How many exception events the bytes announce; None when the bytes are not at hand.
        expected: int | None = None
        status_errors = self.status_errors
        if payload.has_raw:
            expected = payload.to_bytes().count(_EXCEPTION_EVENT_BYTES)
            if expected == 0 and not status_errors:
                return
        found = 0
        for rs in payload.message.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if expected is not None and found >= expected and not status_errors:
                        return
                    has_exception = False
                    if span.events:
                        for index, event in enumerate(span.events):
                            if event.name == EXCEPTION_EVENT:
                                found += 1
                                has_exception = True
                                yield rs, ss, span, index, event
                    if status_errors and not has_exception and span.status.code == 2:
                        yield rs, ss, span, 0, None

    # ---- logs

    def _log_hits(self, payload: Payload) -> Iterator[tuple[Any, Any, Any]]:
        """(ResourceLogs, ScopeLogs, record) per record that is an error."""
        min_severity = self.min_severity
        expected: int | None = None
        if payload.has_raw:
            raw = payload.to_bytes()
            expected = sum(raw.count(marker) for marker in _EXCEPTION_KEY_BYTES)
            if expected == 0 and min_severity is None:
                return
        remaining = expected
        for rl in payload.message.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    if remaining is not None and remaining <= 0 and min_severity is None:
                        return
                    keys = 0
                    if remaining is None or remaining > 0:
                        for kv in record.attributes:
                            if kv.key in _COLUMN_KEYS:
                                keys += 1
                    if keys:
                        if remaining is not None:
                            remaining -= keys
                    elif min_severity is None or _severity_number(record) < min_severity:
                        continue
                    yield rl, sl, record


def _severity_number(record: Any) -> int:
    number: int = record.severity_number
    if number == 0 and record.severity_text:
        try:
            return parse_severity(record.severity_text)
        except ValueError:
            return 0
    return number


@dataclass(slots=True)
class _ExceptionAttributes:
    """The ``exception.*`` and ``appguard.*`` attributes of an event or log record."""

    exc_type: str | None = None
    message: str | None = None
    stacktrace: str | None = None
    escaped: bool | None = None
    fingerprint: list[str] | str | None = None
    values_json: str | None = None
    event_id: uuid.UUID | None = None
    project_id: int | None = None


def _exception_attributes(attributes: Iterable[KeyValue]) -> _ExceptionAttributes:
    found = _ExceptionAttributes()
    for kv in attributes:
        key = kv.key
        if not key.startswith(("exception.", "appguard.")):
            continue
        if key == EXCEPTION_TYPE:
            found.exc_type = as_text(kv.value) or None
        elif key == EXCEPTION_MESSAGE:
            text = as_text(kv.value)
            found.message = clip(text, MAX_MESSAGE_CHARS) if text is not None else None
        elif key == EXCEPTION_STACKTRACE:
            found.stacktrace = as_text(kv.value) or None
        elif key == EXCEPTION_ESCAPED:
            value = kv.value
            found.escaped = value.bool_value if value.HasField("bool_value") else (as_text(value) or "").lower() == "true"
        elif key == FINGERPRINT:
            found.fingerprint = _fingerprint_value(kv.value)
        elif key == EXCEPTION_VALUES:
            found.values_json = as_text(kv.value) or None
        elif key == EVENT_ID:
            found.event_id = _uuid(as_text(kv.value))
        elif key == PROJECT_ID:
            found.project_id = _positive_int(as_text(kv.value))
    return found


def _uuid(text: str | None) -> uuid.UUID | None:
    if text is None or len(text) not in (32, 36):
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.isdigit() or len(text) > 18:
        return None
    return int(text) or None


def _project_id(attributes: Iterable[KeyValue]) -> int | None:
    for kv in attributes:
        if kv.key == PROJECT_ID:
            return _positive_int(as_text(kv.value))
    return None


# Exception types that Python's traceback prints without their module.
_PY_UNQUALIFIED = frozenset({"builtins", "__builtins__", "__main__"})


def python_type_name(exc_type: str | None, module: str | None) -> str | None:
    """An exception type as Python's traceback names it: with its module, unless builtin or
    ``__main__`` (Sentry's Python SDK sends the two apart)."""
    if exc_type and module and module not in _PY_UNQUALIFIED and not exc_type.startswith(f"{module}."):
        return f"{module}.{exc_type}"
    return exc_type


def structured_exceptions(values_json: str, language: str | None) -> ParsedStacktrace | None:
    """The exceptions of an ``appguard.exception.values`` attribute (Sentry's ``exception.values``,
    innermost cause first, frames oldest first), or None when it holds none.

    So that one bug reported through a Sentry SDK and through OpenTelemetry lands in one issue,
    Python exceptions and frames are named as Python's own traceback names them (which is what
    the ``exception.stacktrace`` of the OpenTelemetry SDK is parsed from): the type with its
    module, and a frame's module only when its path is a library's (site-packages or the
    standard library). Everything else, ``in_app`` included, is kept as it came.
    """
    try:
        data = orjson.loads(values_json)
    except orjson.JSONDecodeError:
        return None
    values = data.get("values") if isinstance(data, dict) else data
    if not isinstance(values, list):
        return None
    mappings = [v for v in values if isinstance(v, dict)][-MAX_EXCEPTIONS:]
    parsed = exceptions_from_dicts(mappings, language=language)
    if not parsed.exceptions:
        return None
    for exc, value in zip(parsed.exceptions, mappings, strict=True):
        mechanism = value.get("mechanism")
        if exc.relation is None and isinstance(mechanism, dict):
            exc.relation = _MECHANISM_RELATIONS.get(str(mechanism.get("source") or "").partition("[")[0])
        if parsed.language == "python":
            module = value.get("module")
            exc.type = python_type_name(exc.type, module if isinstance(module, str) else None)
            for frame in exc.frames:
                path = frame.abs_path or frame.filename
                if path:
                    frame.module = _python_module(path)
    return parsed


# Sentry's ``mechanism.source`` of a chained exception -> its relation to the one it is chained to.
_MECHANISM_RELATIONS = {"__cause__": "cause", "__context__": "context", "exceptions": "group"}


def _from_event(info: ResourceInfo, scope: Any, span: Any, index: int, event: Any) -> FoundError:
    found = _exception_attributes(event.attributes)
    failed = span.status.code == 2 or bool(found.escaped)
    when = event.time_unix_nano or span.end_time_unix_nano or span.start_time_unix_nano or time.time_ns()
    return FoundError(
        source="exception_event",
        resource=info,
        layers=(event.attributes, span.attributes),
        trace_id=span.trace_id,
        span_id=span.span_id,
        time_unix_nano=when,
        # An exception the span survived (status not ERROR, not escaped) was handled.
        level="error" if failed else "warning",
        exc_type=found.exc_type,
        message=found.message,
        stacktrace=found.stacktrace,
        escaped=found.escaped,
        own_fingerprint=found.fingerprint,
        span_name=span.name,
        scope=scope,
        owner=span,
        item=event,
        index=index,
        values_json=found.values_json,
        given_event_id=found.event_id,
        own_project_id=found.project_id,
    )


def _from_status(info: ResourceInfo, scope: Any, span: Any) -> FoundError:
    error_type = None
    for kv in span.attributes:
        if kv.key == ERROR_TYPE:
            error_type = as_text(kv.value)
            break
    when = span.end_time_unix_nano or span.start_time_unix_nano or time.time_ns()
    return FoundError(
        source="span_status",
        resource=info,
        layers=(span.attributes,),
        trace_id=span.trace_id,
        span_id=span.span_id,
        time_unix_nano=when,
        level="error",
        exc_type=error_type or None,
        message=clip(span.status.message or span.name, MAX_MESSAGE_CHARS),
        stacktrace=None,
        escaped=None,
        own_fingerprint=None,
        span_name=span.name,
        scope=scope,
        owner=span,
        item=span,
    )


def _from_log(info: ResourceInfo, scope: Any, record: Any) -> FoundError:
    found = _exception_attributes(record.attributes)
    message = found.message
    if found.exc_type is None and message is None and found.stacktrace is None:
        # A record at or above min_severity without an exception: its body is the message.
        body = record.body
        text = as_text(body)
        if text is None and body.WhichOneof("value") is not None:
            text = str(any_value(body))
        message = clip(text or "", MAX_MESSAGE_CHARS)
    when = record.time_unix_nano or record.observed_time_unix_nano or time.time_ns()
    return FoundError(
        source="log",
        resource=info,
        layers=(record.attributes,),
        trace_id=record.trace_id,
        span_id=record.span_id,
        time_unix_nano=when,
        level=severity_level(record.severity_number, record.severity_text),
        exc_type=found.exc_type,
        message=message,
        stacktrace=found.stacktrace,
        escaped=found.escaped,
        own_fingerprint=found.fingerprint,
        span_name=None,
        scope=scope,
        owner=record,
        item=record,
        values_json=found.values_json,
        given_event_id=found.event_id,
        own_project_id=found.project_id,
    )
