"""Finding errors in OTLP: span events and log records made by the real OpenTelemetry Python SDK,
and hand-made requests for the edge cases (no stack trace, huge or binary attributes, markers
in the wrong place, requests without their bytes).

The helpers at the top (``sdk_traces``, ``sdk_logs``) are shared with the exporter's tests.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from collector.pdata import InvalidData, Payload, Signal
from exporters.errors.extract import (
    MAX_ATTRIBUTES,
    MAX_MESSAGE_CHARS,
    MAX_STACKTRACE_CHARS,
    MAX_VALUE_CHARS,
    Extractor,
    LogsOptions,
    TracesOptions,
    clip_stacktrace,
    parse_severity,
    severity_level,
)
from storage.errors_store import _copy_rows

RESOURCE = {
    "service.name": "checkout",
    "service.version": "2.1.0",
    "deployment.environment.name": "staging",
    "host.name": "web-1",
}


class OrderError(Exception):
    """An application exception with a module-qualified name."""


# --------------------------------------------------------------------------- SDK helpers


def sdk_traces(work: Callable[[Tracer], None], resource: dict[str, Any] | None = None) -> tuple[Payload, list[ReadableSpan]]:
    """Run ``work`` with a real SDK tracer; return the spans as one received OTLP request."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    work(provider.get_tracer("tests.errors", "1.0"))
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    raw = encode_spans(spans).SerializeToString()
    return Payload.from_bytes(Signal.TRACES, raw), spans


def sdk_logs(work: Callable[[logging.Logger], None], resource: dict[str, Any] | None = None) -> Payload:
    """Run ``work`` with a stdlib logger wired to the SDK's LoggingHandler; return one OTLP request."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(resource or RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = logging.getLogger(f"tests.errors.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    with pytest.warns(DeprecationWarning):
        handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    try:
        work(logger)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    raw = encode_logs(list(memory.get_finished_logs())).SerializeToString()
    return Payload.from_bytes(Signal.LOGS, raw)


def without_bytes(payload: Payload) -> Payload:
    """The same request as a stage that changed it would hand it on: parsed, no bytes attached."""
    message = type(payload.message).FromString(payload.to_bytes())
    return Payload.from_message(payload.signal, message)


def fail_order(order_id: int) -> None:
    """Raise the way application code does, a few frames deep."""

    def load(order: int) -> None:
        raise OrderError(f"order {order} not found")

    load(order_id)


# --------------------------------------------------------------------------- spans


def test_record_exception_on_a_failed_span() -> None:
    def work(tracer: Tracer) -> None:
        with tracer.start_as_current_span("POST /orders", attributes={"http.route": "/orders", "session.id": "s-1", "user.id": "u-7"}) as span:
            try:
                fail_order(42)
            except OrderError as exc:
                span.record_exception(exc, attributes={"appguard.fingerprint": ["orders", "{{ default }}"]})
                span.set_status(Status(StatusCode.ERROR, str(exc)))

    payload, spans = sdk_traces(work)
    found = Extractor().extract(payload)

    assert len(found) == 1
    error = found[0]
    ctx = spans[0].get_span_context()
    assert ctx is not None
    assert error.source == "exception_event"
    assert error.exc_type == f"{__name__}.OrderError"
    assert error.message == "order 42 not found"
    assert error.stacktrace is not None and error.stacktrace.startswith("Traceback (most recent call last):")
    assert "in fail_order" in error.stacktrace and "in load" in error.stacktrace
    assert error.escaped is False
    assert error.level == "error"
    assert error.trace_id_hex == f"{ctx.trace_id:032x}" and error.span_id_hex == f"{ctx.span_id:016x}"
    assert error.fingerprint == ["orders", "{{ default }}"]
    assert error.text("session.id") == "s-1" and error.text("user.id") == "u-7"
    assert error.resource.service_name == "checkout"
    assert error.resource.service_version == "2.1.0"
    assert error.resource.environment == "staging"
    assert error.resource.language == "python"
    assert error.span_name == "POST /orders"
    attrs = error.attributes()
    assert attrs["http.route"] == "/orders" and attrs["host.name"] == "web-1" and attrs["span.name"] == "POST /orders"
    assert not {"exception.type", "exception.message", "exception.stacktrace"} & set(attrs)
    assert error.timestamp == datetime.fromtimestamp(spans[0].events[0].timestamp // 1000 / 1e6, UTC)


def test_an_exception_escaping_the_span_and_one_that_was_handled() -> None:
    def work(tracer: Tracer) -> None:
        with pytest.raises(OrderError), tracer.start_as_current_span("escaping"):
            fail_order(1)
        with tracer.start_as_current_span("handled") as span:
            try:
                fail_order(2)
            except OrderError as exc:
                span.record_exception(exc)  # status stays UNSET: the request still succeeded

    payload, _ = sdk_traces(work)
    found = {f.span_name: f for f in Extractor().extract(payload)}

    # The SDK sets the span's status to ERROR when an exception escapes it.
    assert found["escaping"].level == "error"
    assert found["handled"].escaped is False and found["handled"].level == "warning"


@pytest.mark.parametrize(("kind", "value"), [("bool_value", True), ("string_value", "True"), ("string_value", "true")])
def test_escaped_exceptions_are_errors_whatever_the_status(kind: str, value: Any) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x07" * 16, b"\x08" * 8, "escaped"
    event = span.events.add()
    event.name = "exception"
    kv = event.attributes.add()
    kv.key = "exception.escaped"
    setattr(kv.value, kind, value)

    (error,) = Extractor().extract(Payload.from_bytes(Signal.TRACES, request.SerializeToString()))

    assert error.escaped is True and error.level == "error"


def test_event_ids_are_stable_and_distinct() -> None:
    def work(tracer: Tracer) -> None:
        with tracer.start_as_current_span("two errors") as span:
            for i in range(2):
                try:
                    fail_order(i)
                except OrderError as exc:
                    span.record_exception(exc, timestamp=1_700_000_000_000_000_000)

    payload, _ = sdk_traces(work)
    first = [f.event_id for f in Extractor().extract(payload)]
    again = [f.event_id for f in Extractor().extract(Payload.from_bytes(Signal.TRACES, payload.to_bytes()))]

    assert len(first) == 2 and len(set(first)) == 2
    assert first == again


def test_requests_without_their_bytes_give_the_same_errors() -> None:
    def work(tracer: Tracer) -> None:
        for i in range(30):
            with tracer.start_as_current_span(f"op {i}") as span:
                if i % 7 == 3:
                    try:
                        fail_order(i)
                    except OrderError as exc:
                        span.record_exception(exc)

    payload, _ = sdk_traces(work)
    with_bytes = Extractor().extract(payload)
    parsed_only = Extractor().extract(without_bytes(payload))

    assert [f.span_name for f in with_bytes] == ["op 3", "op 10", "op 17", "op 24"]
    assert [(f.span_name, f.message, f.event_id) for f in parsed_only] == [(f.span_name, f.message, f.event_id) for f in with_bytes]


def test_spans_without_exceptions_give_nothing() -> None:
    def work(tracer: Tracer) -> None:
        with tracer.start_as_current_span("quiet", attributes={"note": "no exception here"}) as span:
            span.add_event("log", {"message": "exception-free"})
        with tracer.start_as_current_span("failed") as span:
            span.set_status(Status(StatusCode.ERROR, "upstream returned 502"))

    payload, _ = sdk_traces(work)

    assert Extractor().extract(payload) == []
    assert Extractor().extract(without_bytes(payload)) == []


def test_span_status_errors_when_asked_for() -> None:
    def work(tracer: Tracer) -> None:
        with tracer.start_as_current_span("GET /upstream", attributes={"error.type": "502"}) as span:
            span.set_status(Status(StatusCode.ERROR, "upstream returned 502"))
        with tracer.start_as_current_span("with exception") as span:
            try:
                fail_order(3)
            except OrderError as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))

    payload, _ = sdk_traces(work)
    found = Extractor(TracesOptions(status_errors=True)).extract(payload)

    by_source = {f.source: f for f in found}
    # The span with an exception event is reported once, through its event.
    assert sorted(f.source for f in found) == ["exception_event", "span_status"]
    status = by_source["span_status"]
    assert status.exc_type == "502" and status.message == "upstream returned 502" and status.level == "error"
    assert status.stacktrace is None
    again = {f.source: f for f in Extractor(TracesOptions(status_errors=True)).extract(without_bytes(payload))}
    assert status.event_id == again["span_status"].event_id


def test_marker_bytes_in_an_attribute_value_only_cost_a_walk() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "tricky"
    kv = span.attributes.add()
    kv.key = "raw"
    kv.value.string_value = "\x12\texception"
    event = span.events.add()
    event.name = "exceptional"
    payload = Payload.from_bytes(Signal.TRACES, request.SerializeToString())

    assert payload.to_bytes().count(b"\x12\x09exception") == 1
    assert Extractor().extract(payload) == []


def test_an_exception_event_without_stack_trace_or_status() -> None:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    ss = rs.scope_spans.add()
    span = ss.spans.add()
    span.trace_id, span.span_id, span.name = b"\x0a" * 16, b"\x0b" * 8, "bare"
    span.end_time_unix_nano = 1_700_000_000_123_456_789
    event = span.events.add()
    event.name = "exception"
    kv = event.attributes.add()
    kv.key = "exception.message"
    kv.value.string_value = "something broke"
    payload = Payload.from_bytes(Signal.TRACES, request.SerializeToString())

    (error,) = Extractor().extract(payload)

    assert error.exc_type is None and error.type_name == ""
    assert error.stacktrace is None and error.message == "something broke"
    assert error.resource.service_name == "" and error.resource.language is None
    # No event time: the span's end time, kept to the microsecond.
    assert error.timestamp == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    assert error.level == "warning"


def _huge_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for i in range(300):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = f"res.{i}", "r" * 10
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x03" * 16, b"\x04" * 8, "huge"
    for i in range(5000):
        kv = span.attributes.add()
        kv.key, kv.value.int_value = f"attr.{i}", i
    event = span.events.add()
    event.name = "exception"
    for key, value in (
        ("exception.type", "MemoryError"),
        ("exception.message", "m" * 100_000),
        ("exception.stacktrace", "Traceback (most recent call last):\n" + '  File "/app/x.py", line 1, in f\n    f()\n' * 20_000 + "MemoryError: m\n"),
        ("blob", "b" * 5_000_000),
    ):
        kv = event.attributes.add()
        kv.key, kv.value.string_value = key, value
    nested = event.attributes.add()
    nested.key = "nested"
    level: AnyValue = nested.value
    for _ in range(10):
        inner = level.array_value.values.add()
        level = inner
    level.string_value = "deep"
    many = event.attributes.add()
    many.key = "many"
    for i in range(1000):
        many.value.array_value.values.add().int_value = i
    return request


def test_huge_attributes_are_bounded() -> None:
    payload = Payload.from_bytes(Signal.TRACES, _huge_request().SerializeToString())

    (error,) = Extractor().extract(payload)
    attrs = error.attributes()

    assert len(attrs) <= MAX_ATTRIBUTES + 1  # plus span.name
    # The event's own attributes are kept first, then the span's, then the resource's.
    assert "blob" in attrs and "nested" in attrs and "many" in attrs
    assert len(attrs["blob"]) == MAX_VALUE_CHARS
    assert len(attrs["many"]) == 32
    assert "deep" not in orjson.dumps(attrs).decode()
    assert error.message is not None and len(error.message) == MAX_MESSAGE_CHARS
    assert error.stacktrace is not None
    stored = clip_stacktrace(error.stacktrace)
    assert len(stored) < MAX_STACKTRACE_CHARS + 100
    assert stored.startswith("Traceback") and stored.endswith("MemoryError: m\n")


def test_binary_and_odd_values_stay_safe() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x05" * 16, b"\x06" * 8, "odd"
    event = span.events.add()
    event.name = "exception"
    values: list[tuple[str, Callable[[AnyValue], None]]] = [
        ("exception.type", lambda v: setattr(v, "string_value", "Boom")),
        ("exception.message", lambda v: setattr(v, "string_value", "nul \x00 inside, and \u2028 and emoji \U0001f525")),
        ("user.id", lambda v: setattr(v, "bytes_value", b"\xff\xfe\x00bad utf-8")),
        ("payload", lambda v: setattr(v, "bytes_value", b"\xc3\x28\xa0\xa1")),
        ("ratio", lambda v: setattr(v, "double_value", float("nan"))),
        ("limit", lambda v: setattr(v, "double_value", float("inf"))),
        ("empty", lambda v: None),
    ]
    for key, setter in values:
        kv = event.attributes.add()
        kv.key = key
        setter(kv.value)
    payload = Payload.from_bytes(Signal.TRACES, request.SerializeToString())

    (error,) = Extractor().extract(payload)
    attrs = error.attributes()

    assert attrs["payload"] == "wyigoQ==" and attrs["ratio"] == "nan" and attrs["limit"] == "inf" and attrs["empty"] is None
    # A user id must be text: bytes are not taken for one.
    assert error.text("user.id") is None
    assert error.message is not None and "\x00" in error.message
    orjson.dumps(attrs)


def test_invalid_utf8_in_a_string_is_refused_before_any_stage() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "XX"
    raw = request.SerializeToString().replace(b"XX", b"\xff\xfe")

    with pytest.raises(InvalidData):
        Payload.from_bytes(Signal.TRACES, raw)


def test_stored_rows_of_odd_errors_encode(tmp_path: Any) -> None:
    """The store's COPY encoding takes what the extraction gives (NUL bytes included)."""
    from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig
    from tests.unit.test_errors_extract_events import make_exporter

    payload = Payload.from_bytes(Signal.TRACES, _huge_request().SerializeToString())
    exporter: ErrorsExporter = make_exporter(ErrorsExporterConfig(), tmp_path)
    events = [exporter.to_event(f) for f in exporter.extractor.extract(payload)]
    rows, days = _copy_rows(events)
    assert len(rows) == 1 and len(days) == 1


# --------------------------------------------------------------------------- logs


def test_logging_with_exc_info_through_the_sdk_handler() -> None:
    def work(logger: logging.Logger) -> None:
        empty: dict[str, int] = {}
        try:
            empty["missing"]
        except KeyError:
            logger.error("lookup failed for %s", "cart", exc_info=True, extra={"session.id": "sess-9", "enduser.id": "e-1"})
        try:
            fail_order(5)
        except OrderError:
            logger.warning("order lookup degraded", exc_info=True)
        logger.info("all fine")
        logger.error("plain error without an exception")

    payload = sdk_logs(work)
    found = Extractor().extract(payload)

    assert [f.exc_type for f in found] == ["KeyError", "OrderError"]
    key_error, order_error = found
    assert key_error.source == "log" and key_error.level == "error"
    assert key_error.message == "missing"  # the handler takes the first argument, not str(exc)
    assert key_error.stacktrace is not None and "Traceback (most recent call last)" in key_error.stacktrace
    assert key_error.text("session.id") == "sess-9" and key_error.text("enduser.id") == "e-1"
    assert key_error.resource.service_name == "checkout"
    assert key_error.attributes()["code.function.name"] == "work"
    assert order_error.level == "warning"
    assert order_error.message == "order 5 not found"
    assert [f.event_id for f in Extractor().extract(without_bytes(payload))] == [f.event_id for f in found]


def test_log_records_at_or_above_a_severity_when_asked_for() -> None:
    def work(logger: logging.Logger) -> None:
        logger.warning("disk at 91%")
        logger.error("payment %s declined", "p-1")
        logger.critical("database gone")
        logger.info("hello")

    payload = sdk_logs(work)

    assert Extractor().extract(payload) == []
    found = Extractor(logs=LogsOptions.model_validate({"min_severity": "ERROR"})).extract(payload)
    assert [(f.message, f.level, f.exc_type) for f in found] == [
        ("payment p-1 declined", "error", None),
        ("database gone", "fatal", None),
    ]
    warn = Extractor(logs=LogsOptions.model_validate({"min_severity": "warn"})).extract(without_bytes(payload))
    assert [f.message for f in warn] == ["disk at 91%", "payment p-1 declined", "database gone"]


def test_a_hand_made_log_record_with_only_text_severity() -> None:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rec = rl.scope_logs.add().log_records.add()
    rec.severity_text = "Error"
    rec.observed_time_unix_nano = 1_700_000_000_000_000_000
    rec.body.kvlist_value.values.add(key="event").value.string_value = "checkout failed"
    payload = Payload.from_bytes(Signal.LOGS, request.SerializeToString())

    (error,) = Extractor(logs=LogsOptions(min_severity=parse_severity("ERROR"))).extract(payload)

    assert error.level == "error" and error.message == "{'event': 'checkout failed'}"
    assert error.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert error.trace_id_hex is None and error.span_id_hex is None


@pytest.mark.parametrize(
    ("value", "number"),
    [("ERROR", 17), ("error", 17), ("ERROR3", 19), ("warning", 13), ("Warn", 13), ("FATAL4", 24), ("critical", 21), (9, 9), ("5", 5)],
)
def test_parse_severity(value: Any, number: int) -> None:
    assert parse_severity(value) == number


@pytest.mark.parametrize("value", ["LOUD", 0, 25, True, "ERROR5"])
def test_parse_severity_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_severity(value)


def test_severity_levels() -> None:
    assert [severity_level(n) for n in (0, 1, 5, 9, 13, 17, 21, 24)] == [
        "error", "debug", "debug", "info", "warning", "error", "fatal", "fatal"
    ]
    assert severity_level(0, "WARNING") == "warning"
    assert severity_level(0, "weird") == "error"


def test_metrics_and_other_signals_have_no_errors() -> None:
    from bench.workload import metrics_request

    payload = Payload.from_message(Signal.METRICS, metrics_request(16))
    assert Extractor().extract(payload) == []


# --------------------------------------------------------------------------- trimming


def test_trim_keeps_only_what_holds_errors_with_the_same_ids() -> None:
    def work(tracer: Tracer) -> None:
        for i in range(40):
            with tracer.start_as_current_span(f"op {i}", attributes={"i": i}) as span:
                if i in (5, 6, 30):
                    for attempt in range(2 if i == 6 else 1):
                        try:
                            fail_order(i * 10 + attempt)
                        except OrderError as exc:
                            span.record_exception(exc)

    payload, _ = sdk_traces(work)
    extractor = Extractor()
    trimmed = extractor.trim(payload)

    assert trimmed is not None and trimmed.items == 3 and payload.items == 40
    rs = trimmed.message.resource_spans[0]  # type: ignore[union-attr]
    assert rs.resource == payload.message.resource_spans[0].resource  # type: ignore[union-attr]
    assert rs.scope_spans[0].scope.name == "tests.errors" and rs.scope_spans[0].scope.version == "1.0"
    assert [s.name for s in rs.scope_spans[0].spans] == ["op 5", "op 6", "op 30"]
    before = [(f.event_id, f.message) for f in extractor.extract(payload)]
    after = [(f.event_id, f.message) for f in extractor.extract(Payload.from_bytes(Signal.TRACES, trimmed.to_bytes()))]
    assert after == before and len(after) == 4


def test_trim_logs_and_nothing_to_trim() -> None:
    def work(logger: logging.Logger) -> None:
        logger.info("fine")
        try:
            fail_order(1)
        except OrderError:
            logger.exception("failed")
        logger.info("fine again")

    logs = sdk_logs(work)
    trimmed = Extractor().trim(logs)
    assert trimmed is not None and trimmed.items == 1 and trimmed.signal is Signal.LOGS
    record = trimmed.message.resource_logs[0].scope_logs[0].log_records[0]  # type: ignore[union-attr]
    assert record.body.string_value == "failed"

    quiet, _ = sdk_traces(lambda tracer: tracer.start_span("quiet").end())
    assert Extractor().trim(quiet) is None
