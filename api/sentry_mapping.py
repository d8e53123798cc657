"""Sentry events and transactions as OTLP: what the Sentry ingest hands to the pipelines.

An **event** (an envelope's ``event`` item, or a ``store`` body) becomes one log record, the
shape the errors exporter already finds exceptions in (``docs/errors-exporter.md``):

- ``exception.type`` / ``exception.message`` of the reported exception (the last of
  ``exception.values``), ``exception.stacktrace`` rendered from the frames as the platform
  prints them (a Python traceback, a Java or a V8 stack), ``exception.escaped`` for an
  unhandled one; an event without exception carries its message as ``exception.message``;
- ``appguard.exception.values``: the chained exceptions with their structured frames, as JSON,
  which the errors exporter groups as given (``in_app`` kept); ``appguard.fingerprint`` (the
  SDK's ``fingerprint``) and ``appguard.event_id`` (the SDK's event id);
- ``user.id``, ``user.email``, ``user.name``, ``client.address``, the request's ``url.full``,
  ``http.request.method`` and ``user_agent.original``, the event's ``tags`` under their own
  names, ``transaction``, ``logger``, ``handled``/``mechanism``, and the last breadcrumbs
  (``appguard.breadcrumbs``);
- the trace and span ids of ``contexts.trace``; the severity of ``level``; the time of
  ``timestamp``;
- on the resource: ``service.name`` (the name part of a ``name@version`` release, else
  ``server_name``, else ``unknown_service:<platform>``), ``service.version`` (the release),
  ``deployment.environment.name``, ``host.name``, ``telemetry.sdk.*``, the runtime and OS of
  ``contexts`` and ``appguard.project_id``.

A **transaction** becomes its spans: the transaction itself (``contexts.trace``) and each of
its child ``spans``, with their ids, names (the transaction's name, a span's description or
op), kinds derived from the op, times, statuses, and tags and data as attributes.

Everything an SDK sends is untrusted: wrong types are skipped, texts and nesting are bounded,
ids that are not hex of the right length are left out.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from exporters.errors.extract import (
    ENVIRONMENT,
    EVENT_ID,
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    EXCEPTION_VALUES,
    FINGERPRINT,
    PROJECT_ID,
    SDK_LANGUAGE,
    SERVICE_NAME,
    SERVICE_VERSION,
    USER_AGENT,
    USER_EMAIL,
    USER_ID,
    parse_severity,
    python_type_name,
)

#: Characters kept of a text value (messages and stack traces excepted).
MAX_TEXT = 4096
#: Characters kept of a message or an exception's value.
MAX_MESSAGE = 8192
#: Breadcrumbs kept per event: the latest ones.
MAX_BREADCRUMBS = 32
#: Tags (and span data entries) kept per event or span.
MAX_TAGS = 64
#: Child spans kept per transaction.
MAX_SPANS = 1000
# Nesting kept in span data values; deeper values become their JSON text.
_MAX_DEPTH = 3
_INT64 = 2**63

# Sentry's platform -> the OpenTelemetry telemetry.sdk.language value.
_LANGUAGES = {
    "python": "python",
    "node": "nodejs",
    "javascript": "webjs",
    "java": "java",
    "csharp": "dotnet",
    "go": "go",
    "ruby": "ruby",
    "php": "php",
    "cocoa": "swift",
    "native": "cpp",
    "elixir": "erlang",
    "rust": "rust",
}
_SEVERITY_TEXT = {"fatal": "FATAL", "error": "ERROR", "warning": "WARN", "info": "INFO", "debug": "DEBUG"}
# Attribute keys a tag may not overwrite.
_RESERVED_PREFIXES = ("exception.", "appguard.")
# Sentry span status -> OTLP status code (anything else not "ok" is an error).
_UNSET_STATUSES = frozenset({"", "unknown", "unset"})
# Keys of a frame kept in appguard.exception.values (``vars`` and the like are left out).
_FRAME_KEYS = (
    "function",
    "module",
    "filename",
    "abs_path",
    "lineno",
    "colno",
    "context_line",
    "pre_context",
    "post_context",
    "in_app",
    "package",
    "platform",
)
_MECHANISM_KEYS = ("type", "handled", "source", "exception_id", "parent_id", "is_exception_group")


# --------------------------------------------------------------------------- small readers


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string, number or boolean as non-empty text, cut to ``limit``; None otherwise."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = str(value)
    else:
        return None
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _hex_id(value: Any, size: int) -> bytes:
    """A trace (16 bytes) or span (8 bytes) id from its hex text; empty when it is not one."""
    if isinstance(value, str) and len(value) == size * 2:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return b""
        return raw if any(raw) else b""
    return b""


# Times past this (in 2286) are not taken: in nanoseconds they would not fit OTLP's 64 bits.
_LATEST_SECONDS = 1e10


def timestamp_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch of a Sentry timestamp: seconds (a number, or a number in
    text) or an RFC 3339 date; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if not 0 < when.timestamp() < _LATEST_SECONDS:
                return None
            return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < _LATEST_SECONDS:
        # To the microsecond: a double holds no more of a present-day time in seconds.
        return round(value * 1_000_000) * 1000
    return None


# --------------------------------------------------------------------------- attributes


class _Attributes:
    """Attributes being collected for one record, span or resource: first one of a key wins."""

    def __init__(self) -> None:
        self.values: dict[str, KeyValue] = {}

    def add(self, key: str, value: Any) -> None:
        """Add ``value`` (text, number, boolean, list or mapping) unless ``key`` is taken or empty."""
        if not key or key in self.values or value is None:
            return
        kv = KeyValue(key=key[:256])
        if _fill(kv.value, value, 0):
            self.values[key] = kv

    def extend(self, pairs: Mapping[str, Any], limit: int = MAX_TAGS) -> None:
        """Add the entries of a mapping (tags, data) except those under reserved prefixes."""
        for count, (key, value) in enumerate(pairs.items()):
            if count >= limit:
                return
            if isinstance(key, str) and not key.startswith(_RESERVED_PREFIXES):
                self.add(key, value)

    def into(self, target: Any) -> None:
        """Append the attributes to a repeated ``KeyValue`` field."""
        target.extend(self.values.values())


def _fill(out: AnyValue, value: Any, depth: int) -> bool:
    """Set ``out`` from a JSON value, bounded; False for a value that is left out."""
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            out.string_value = str(value)
        else:
            out.int_value = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            return False
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    elif depth >= _MAX_DEPTH and isinstance(value, (list, Mapping)):
        out.string_value = _dumps(value)[:MAX_TEXT]
    elif isinstance(value, list):
        array = out.array_value
        array.SetInParent()
        for item in value[:MAX_TAGS]:
            if not _fill(array.values.add(), item, depth + 1):
                del array.values[-1]
    elif isinstance(value, Mapping):
        kvlist = out.kvlist_value
        kvlist.SetInParent()
        for count, (key, item) in enumerate(value.items()):
            if count >= MAX_TAGS:
                break
            kv = kvlist.values.add(key=str(key)[:256])
            if not _fill(kv.value, item, depth + 1):
                del kvlist.values[-1]
    else:
        return False
    return True


# --------------------------------------------------------------------------- resource


def service_name(event: Mapping[str, Any]) -> str:
    """The service an event is filed under: the name in a ``name@version`` release, else the
    ``server_name``, else ``unknown_service:<platform>`` (OpenTelemetry's spelling)."""
    release = _text(event.get("release"), 200)
    if release and "@" in release.strip("@"):
        name = release.partition("@")[0].strip()
        if name:
            return name
    server = _text(event.get("server_name"), 200)
    if server:
        return server
    return f"unknown_service:{_text(event.get('platform'), 50) or 'other'}"


def language(event: Mapping[str, Any]) -> str | None:
    """The ``telemetry.sdk.language`` of an event's ``platform``."""
    platform = _text(event.get("platform"), 50)
    if platform is None:
        return None
    return _LANGUAGES.get(platform.lower(), platform.lower())


def _resource(event: Mapping[str, Any], project_id: int) -> Resource:
    attrs = _Attributes()
    attrs.add(SERVICE_NAME, service_name(event))
    attrs.add(SERVICE_VERSION, _text(event.get("release"), 200))
    attrs.add(ENVIRONMENT, _text(event.get("environment"), 200))
    attrs.add("host.name", _text(event.get("server_name"), 200))
    sdk = _mapping(event.get("sdk"))
    attrs.add("telemetry.sdk.name", _text(sdk.get("name"), 200))
    attrs.add("telemetry.sdk.version", _text(sdk.get("version"), 100))
    attrs.add(SDK_LANGUAGE, language(event))
    contexts = _mapping(event.get("contexts"))
    runtime = _mapping(contexts.get("runtime"))
    attrs.add("process.runtime.name", _text(runtime.get("name"), 200))
    attrs.add("process.runtime.version", _text(runtime.get("version"), 200))
    os_context = _mapping(contexts.get("os"))
    attrs.add("os.name", _text(os_context.get("name"), 200))
    attrs.add("os.version", _text(os_context.get("version"), 200))
    browser = _mapping(contexts.get("browser"))
    attrs.add("browser.name", _text(browser.get("name"), 200))
    attrs.add("browser.version", _text(browser.get("version"), 200))
    attrs.add(PROJECT_ID, project_id)
    resource = Resource()
    attrs.into(resource.attributes)
    return resource


def _scope(event: Mapping[str, Any]) -> InstrumentationScope:
    sdk = _mapping(event.get("sdk"))
    return InstrumentationScope(name=_text(sdk.get("name"), 200) or "sentry", version=_text(sdk.get("version"), 100) or "")


# --------------------------------------------------------------------------- exceptions


def exception_values(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The event's exceptions (innermost cause first), each with only the keys kept: type,
    value, module, mechanism and the frames' own keys (no local variables)."""
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, Mapping) else exception
    if not isinstance(values, list):
        return []
    out: list[dict[str, Any]] = []
    for value in values:
        if not isinstance(value, Mapping):
            continue
        kept: dict[str, Any] = {}
        for key in ("type", "value", "module"):
            text = _text(value.get(key), MAX_MESSAGE if key == "value" else MAX_TEXT)
            if text is not None:
                kept[key] = text
        mechanism = _mapping(value.get("mechanism"))
        if mechanism:
            kept["mechanism"] = {k: mechanism[k] for k in _MECHANISM_KEYS if isinstance(mechanism.get(k), (str, int))}
        stacktrace = _mapping(value.get("stacktrace"))
        frames = stacktrace.get("frames")
        if isinstance(frames, list):
            kept["stacktrace"] = {
                "frames": [{k: f[k] for k in _FRAME_KEYS if f.get(k) is not None} for f in frames if isinstance(f, Mapping)]
            }
        if kept:
            out.append(kept)
    return out


def message_text(event: Mapping[str, Any]) -> str | None:
    """The event's message: ``logentry.formatted`` (or its ``message``), or ``message``."""
    for key in ("logentry", "message"):
        entry = event.get(key)
        if isinstance(entry, Mapping):
            text = _text(entry.get("formatted"), MAX_MESSAGE) or _text(entry.get("message"), MAX_MESSAGE)
        else:
            text = _text(entry, MAX_MESSAGE)
        if text:
            return text
    return None


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # an integer beyond 64 bits: only the standard library writes those
        return json.dumps(value, default=str)


def _frames(value: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    frames = _mapping(value.get("stacktrace")).get("frames")
    return [f for f in frames if isinstance(f, Mapping)] if isinstance(frames, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def render_stacktrace(values: Sequence[Mapping[str, Any]], platform: str | None) -> str:
    """The exceptions as the platform prints them: a Python traceback (which the errors
    exporter's parser reads back into the same frames), a Java stack trace, or a V8 stack."""
    lang = (platform or "").lower()
    if lang == "python":
        return _render_python(values)
    if lang == "java":
        return _render_java(values)
    return _render_v8(values)


def _render_python(values: Sequence[Mapping[str, Any]]) -> str:
    blocks: list[str] = []
    for position, value in enumerate(values):
        lines: list[str] = []
        # The line that ties a block to the one before says how, when the SDK told (the
        # mechanism's source of the earlier exception); without it the blocks simply follow.
        source = str(_mapping(values[position - 1].get("mechanism")).get("source") or "") if position else ""
        if source == "__cause__":
            lines += ["The above exception was the direct cause of the following exception:", ""]
        elif source == "__context__":
            lines += ["During handling of the above exception, another exception occurred:", ""]
        frames = _frames(value)
        if frames:
            lines.append("Traceback (most recent call last):")
            for frame in frames:
                path = _text(frame.get("abs_path")) or _text(frame.get("filename")) or "<unknown>"
                line = _int(frame.get("lineno"))
                function = _text(frame.get("function")) or "<module>"
                lines.append(f'  File "{path}", line {line if line is not None else "?"}, in {function}')
                context = _text(frame.get("context_line"))
                if context and context.strip():
                    lines.append(f"    {context.strip()}")
        module = value.get("module")
        exc_type = python_type_name(_text(value.get("type")), module if isinstance(module, str) else None)
        message = _text(value.get("value"), MAX_MESSAGE)
        lines.append(f"{exc_type or 'Exception'}: {message}" if message else exc_type or "Exception")
        blocks.append("\n".join(lines))
    # A "previous exception" block is separated from the next one by a blank line.
    return "\n\n".join(blocks)


def _render_java(values: Sequence[Mapping[str, Any]]) -> str:
    lines: list[str] = []
    # Java prints the reported exception first and its causes after it.
    for position, value in enumerate(reversed(values)):
        exc_type = _text(value.get("type")) or "java.lang.Throwable"
        module = _text(value.get("module"))
        if module and "." not in exc_type:
            exc_type = f"{module}.{exc_type}"
        message = _text(value.get("value"), MAX_MESSAGE)
        header = f"{exc_type}: {message}" if message else exc_type
        lines.append(f"Caused by: {header}" if position else header)
        for frame in reversed(_frames(value)):
            where = ".".join(p for p in (_text(frame.get("module")), _text(frame.get("function"))) if p) or "<unknown>"
            filename = _text(frame.get("filename")) or "Unknown Source"
            line = _int(frame.get("lineno"))
            lines.append(f"\tat {where}({filename}:{line})" if line is not None else f"\tat {where}({filename})")
    return "\n".join(lines)


def _render_v8(values: Sequence[Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for position, value in enumerate(reversed(values)):
        exc_type = _text(value.get("type")) or "Error"
        message = _text(value.get("value"), MAX_MESSAGE)
        header = f"{exc_type}: {message}" if message else exc_type
        lines.append(f"  [cause]: {header}" if position else header)
        for frame in reversed(_frames(value)):
            path = _text(frame.get("abs_path")) or _text(frame.get("filename")) or "<anonymous>"
            location = path
            line, column = _int(frame.get("lineno")), _int(frame.get("colno"))
            if line is not None:
                location += f":{line}" + (f":{column}" if column is not None else "")
            function = _text(frame.get("function"))
            lines.append(f"    at {function} ({location})" if function else f"    at {location}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- events


def _level(event: Mapping[str, Any], default: str) -> str:
    level = (_text(event.get("level"), 20) or default).lower()
    return "warning" if level == "warn" else level


def _severity(level: str) -> int:
    try:
        return parse_severity(level)
    except ValueError:
        return parse_severity("error")


def _headers(request: Mapping[str, Any]) -> dict[str, str]:
    headers = request.get("headers")
    pairs: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers if isinstance(headers, list) else ()
    out: dict[str, str] = {}
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str):
            text = _text(pair[1])
            if text is not None:
                out[pair[0].lower()] = text
    return out


def _breadcrumbs(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, Mapping) else crumbs
    if not isinstance(values, list):
        return []
    out: list[dict[str, Any]] = []
    for crumb in values[-MAX_BREADCRUMBS:]:
        if not isinstance(crumb, Mapping):
            continue
        kept = {
            key: text
            for key in ("timestamp", "type", "category", "level", "message")
            if (text := _text(crumb.get(key), 1024)) is not None
        }
        if kept:
            out.append(kept)
    return out


def event_record(event: Mapping[str, Any], *, event_id: str, received_ns: int | None = None) -> LogRecord:
    """The log record of one Sentry event (see the module docstring)."""
    values = exception_values(event)
    platform = _text(event.get("platform"), 50)
    message = message_text(event)
    record = LogRecord()
    now = received_ns or time.time_ns()
    record.observed_time_unix_nano = now
    record.time_unix_nano = timestamp_ns(event.get("timestamp")) or now
    level = _level(event, "error" if values else "info")
    record.severity_number = _severity(level)  # type: ignore[assignment]
    record.severity_text = _SEVERITY_TEXT.get(level, level.upper())
    attrs = _Attributes()
    if values:
        reported = values[-1]
        attrs.add(EXCEPTION_TYPE, reported.get("type"))
        attrs.add(EXCEPTION_MESSAGE, reported.get("value"))
        attrs.add(EXCEPTION_STACKTRACE, render_stacktrace(values, platform))
        attrs.add(EXCEPTION_VALUES, _dumps(values))
        mechanism = _mapping(reported.get("mechanism"))
        handled = mechanism.get("handled")
        if isinstance(handled, bool):
            attrs.add(EXCEPTION_ESCAPED, not handled)
            attrs.add("handled", "yes" if handled else "no")
        attrs.add("mechanism", _text(mechanism.get("type"), 200))
        title = reported.get("type") or "Error"
        if reported.get("value"):
            title = f"{title}: {reported['value']}"
        record.body.string_value = message or title
    else:
        # An event without an exception (capture_message) is an issue all the same.
        attrs.add(EXCEPTION_MESSAGE, message or "<unlabeled event>")
        record.body.string_value = message or "<unlabeled event>"
    fingerprint = event.get("fingerprint")
    if isinstance(fingerprint, list):
        parts = [t for part in fingerprint[:MAX_TAGS] if (t := _text(part, 1024)) is not None]
        if parts:
            attrs.add(FINGERPRINT, parts)
    attrs.add(EVENT_ID, event_id)
    user = _mapping(event.get("user"))
    attrs.add(USER_ID, _text(user.get("id"), 256))
    attrs.add(USER_EMAIL, _text(user.get("email"), 256))
    attrs.add("user.name", _text(user.get("username"), 256))
    address = _text(user.get("ip_address"), 64)
    if address and address != "{{auto}}":
        attrs.add("client.address", address)
    request = _mapping(event.get("request"))
    attrs.add("url.full", _text(request.get("url")))
    attrs.add("http.request.method", _text(request.get("method"), 20))
    attrs.add(USER_AGENT, _headers(request).get("user-agent"))
    attrs.add("transaction", _text(event.get("transaction"), 200))
    attrs.add("logger", _text(event.get("logger"), 200))
    # Sentry's replay integration names the replay the error happened in, AppGuard's session: the
    # browser SDK tags the event with it (``replayId``); Sentry's own ingest fills ``contexts.replay``.
    replay = _mapping(_mapping(event.get("contexts")).get("replay"))
    replay_id = _text(replay.get("replay_id"), 64) or _text(_mapping(event.get("tags")).get("replayId"), 64)
    attrs.add("session.id", replay_id)
    tags = event.get("tags")
    if isinstance(tags, Mapping):
        attrs.extend(tags)
    elif isinstance(tags, list):
        attrs.extend({pair[0]: pair[1] for pair in tags if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)})
    crumbs = _breadcrumbs(event)
    if crumbs:
        attrs.add("appguard.breadcrumbs", crumbs)
    attrs.into(record.attributes)
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    record.trace_id = _hex_id(trace.get("trace_id"), 16)
    record.span_id = _hex_id(trace.get("span_id"), 8)
    return record


def event_to_logs(
    event: Mapping[str, Any], *, project_id: int, event_id: str, received_ns: int | None = None
) -> ExportLogsServiceRequest:
    """An OTLP logs request holding the event's log record under its resource."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(_resource(event, project_id))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.CopyFrom(_scope(event))
    scope_logs.log_records.append(event_record(event, event_id=event_id, received_ns=received_ns))
    return request


# --------------------------------------------------------------------------- transactions


def span_kind(op: str | None) -> Span.SpanKind.ValueType:
    """The OTLP span kind a Sentry span ``op`` implies (``http.server`` is a server span...)."""
    if not op:
        return Span.SpanKind.SPAN_KIND_INTERNAL
    op = op.lower()
    if op.startswith(("http.server", "websocket.server", "rpc.server", "grpc.server", "function.aws", "function.gcp")):
        return Span.SpanKind.SPAN_KIND_SERVER
    if op.startswith(("http.client", "db", "cache", "rpc.client", "grpc.client", "redis", "http.request")):
        return Span.SpanKind.SPAN_KIND_CLIENT
    if op.startswith(("queue.publish", "queue.submit", "topic.publish")):
        return Span.SpanKind.SPAN_KIND_PRODUCER
    if op.startswith(("queue.process", "queue.task", "queue.receive", "celery.task")):
        return Span.SpanKind.SPAN_KIND_CONSUMER
    return Span.SpanKind.SPAN_KIND_INTERNAL


def _status(value: Any, out: Status) -> None:
    status = (_text(value, 100) or "").lower()
    if status in _UNSET_STATUSES:
        return
    if status == "ok":
        out.code = Status.StatusCode.STATUS_CODE_OK
    else:
        out.code = Status.StatusCode.STATUS_CODE_ERROR
        out.message = status


def _span(data: Mapping[str, Any], trace_id: bytes, name: str | None, tags: Mapping[str, Any] | None) -> Span | None:
    span_id = _hex_id(data.get("span_id"), 8)
    trace = _hex_id(data.get("trace_id"), 16) or trace_id
    if not span_id or not trace:
        return None
    span = Span(trace_id=trace, span_id=span_id, parent_span_id=_hex_id(data.get("parent_span_id"), 8))
    op = _text(data.get("op"), 200)
    span.name = name or _text(data.get("description"), 1024) or op or "span"
    span.kind = span_kind(op)
    start = timestamp_ns(data.get("start_timestamp"))
    end = timestamp_ns(data.get("timestamp"))
    span.start_time_unix_nano = start or end or time.time_ns()
    span.end_time_unix_nano = max(end or span.start_time_unix_nano, span.start_time_unix_nano)
    _status(data.get("status"), span.status)
    attrs = _Attributes()
    attrs.add("sentry.op", op)
    if name is not None:
        attrs.add("sentry.description", _text(data.get("description"), 1024))
    attrs.add("sentry.origin", _text(data.get("origin"), 200))
    for extra in (data.get("tags"), tags, data.get("data")):
        if isinstance(extra, Mapping):
            attrs.extend(extra)
    attrs.into(span.attributes)
    return span


def transaction_to_traces(event: Mapping[str, Any], *, project_id: int) -> ExportTraceServiceRequest:
    """An OTLP traces request holding the transaction's span and its child spans; empty when
    the transaction has no valid trace and span ids."""
    request = ExportTraceServiceRequest()
    trace = _mapping(_mapping(event.get("contexts")).get("trace"))
    trace_id = _hex_id(trace.get("trace_id"), 16)
    root_data = {
        **trace,
        "start_timestamp": event.get("start_timestamp"),
        "timestamp": event.get("timestamp"),
    }
    tags = _mapping(event.get("tags"))
    root = _span(root_data, trace_id, _text(event.get("transaction"), 1024) or "transaction", tags)
    if root is None:
        return request
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(_resource(event, project_id))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.CopyFrom(_scope(event))
    scope_spans.spans.append(root)
    children = event.get("spans")
    if isinstance(children, list):
        for child in children[:MAX_SPANS]:
            if isinstance(child, Mapping):
                span = _span(child, trace_id, None, None)
                if span is not None:
                    scope_spans.spans.append(span)
    return request
