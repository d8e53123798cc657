"""Sentry events and transactions made by the real ``sentry-sdk`` (captured in process by a
transport of our own), turned into OTLP, found by the errors extraction and grouped by the
errors exporter's own code: the same bug reported through Sentry and through OpenTelemetry
gets one fingerprint; the SDK's ``in_app``, ``fingerprint``, user, tags and trace ids are kept."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import sentry_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sentry_sdk.envelope import Envelope as SdkEnvelope
from sentry_sdk.transport import Transport

from api.sentry_envelope import parse_envelope
from api.sentry_mapping import (
    event_to_logs,
    render_stacktrace,
    service_name,
    span_kind,
    timestamp_ns,
    transaction_to_traces,
)
from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig
from exporters.errors.extract import Extractor, any_value, structured_exceptions
from exporters.errors.stacktrace import parse_stacktrace
from storage.errors_store import ErrorEvent

# --------------------------------------------------------------------------- the application


class CouponError(Exception):
    """An application exception: its type is named with its module."""


def apply_coupon(cart: dict[str, float], code: str) -> float:
    total = cart["total"]
    return total / len(code.strip())


def checkout(cart: dict[str, float], code: str) -> float:
    try:
        return apply_coupon(cart, code)
    except ZeroDivisionError as exc:
        raise CouponError(f"coupon {code!r} is empty") from exc


def serve(report: Callable[[BaseException], object], code: str = "   ") -> None:
    """A request handler that reports what fails, through whichever SDK it is given."""
    try:
        checkout({"total": 10.0}, code)
    except Exception as exc:
        report(exc)


def load_profile(profiles: dict[str, dict[str, str]], user: str) -> str:
    return profiles[user]["email"]


# --------------------------------------------------------------------------- SDK helpers


class _Captured(Transport):
    envelopes: list[SdkEnvelope] = []

    def capture_envelope(self, envelope: SdkEnvelope) -> None:
        _Captured.envelopes.append(envelope)


@pytest.fixture
def sentry() -> Iterator[Callable[..., None]]:
    """``init(**options)``: the real SDK, reporting into :class:`_Captured`; the test's user,
    tags and breadcrumbs stay in a scope of its own."""

    def init(**options: Any) -> None:
        _Captured.envelopes = []
        options = {"release": "shop@2.4.0", "environment": "production", "server_name": "web-1", **options}
        sentry_sdk.init(
            dsn="http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1",
            transport=_Captured,
            default_integrations=False,
            auto_enabling_integrations=False,
            **options,
        )

    with sentry_sdk.isolation_scope():
        yield init
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # back to the client that records nothing


def sent_items(kind: str) -> list[dict[str, Any]]:
    """The items of ``kind`` the SDK sent, parsed from the envelopes' own bytes."""
    sentry_sdk.flush()
    out = []
    for sdk_envelope in _Captured.envelopes:
        for item in parse_envelope(sdk_envelope.serialize()).items:
            if item.type == kind:
                out.append(item.json())
    return out


EXPORTER = ErrorsExporter(
    CreateSettings(ComponentID("errors"), Kind.EXPORTER, Telemetry(), logging.getLogger("test.errors"), None),
    ErrorsExporterConfig.model_validate({"endpoint": "postgresql://appguard@127.0.0.1/appguard"}),
    frozenset({Signal.TRACES, Signal.LOGS}),
)


def stored(event: dict[str, Any], project_id: int = 1) -> ErrorEvent:
    """What the errors exporter would store for a Sentry event, through the bytes of OTLP."""
    request = event_to_logs(event, project_id=project_id, event_id=event["event_id"])
    [found] = Extractor().extract(Payload.from_bytes(Signal.LOGS, request.SerializeToString()))
    return EXPORTER.to_event(found)


def otel_event(action: Callable[[Callable[[BaseException], object]], object]) -> ErrorEvent:
    """What the errors exporter stores for the same failure recorded by the OpenTelemetry SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")

    def record(exc: BaseException) -> None:
        with tracer.start_as_current_span("GET /cart") as span:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)

    action(record)
    request = encode_spans(memory.get_finished_spans())
    [found] = Extractor().extract(Payload.from_bytes(Signal.TRACES, request.SerializeToString()))
    return EXPORTER.to_event(found)


def frame_summary(event: ErrorEvent) -> list[tuple[str, list[tuple[str, bool]]]]:
    assert event.frames is not None
    return [
        (e["type"], [(f["function"], f["in_app"]) for f in e.get("stacktrace", {}).get("frames", [])])
        for e in event.frames
    ]


# --------------------------------------------------------------------------- grouping agreement


def test_one_bug_through_sentry_and_opentelemetry_gets_one_fingerprint(sentry: Callable[..., None]) -> None:
    sentry()
    serve(sentry_sdk.capture_exception)
    [event] = sent_items("event")
    from_sentry = stored(event)
    from_otel = otel_event(serve)
    assert from_sentry.fingerprint == from_otel.fingerprint
    assert from_sentry.secondary_fingerprint == from_otel.secondary_fingerprint
    assert from_sentry.type == from_otel.type == f"{__name__}.CouponError"
    assert from_sentry.title == from_otel.title == f"{__name__}.CouponError: coupon '   ' is empty"
    assert frame_summary(from_sentry) == frame_summary(from_otel) == [
        ("ZeroDivisionError", [("checkout", True), ("apply_coupon", True)]),
        (f"{__name__}.CouponError", [("serve", True), ("checkout", True)]),
    ]
    # A different bug is another issue, whichever way it came.
    sentry()
    serve(sentry_sdk.capture_exception, code="x")  # no failure: nothing sent
    try:
        load_profile({}, "alice")
    except KeyError:
        sentry_sdk.capture_exception()
    [other] = sent_items("event")
    assert stored(other).fingerprint != from_sentry.fingerprint


def test_the_frames_come_as_the_sdk_sent_them(sentry: Callable[..., None]) -> None:
    sentry(include_source_context=True)
    serve(sentry_sdk.capture_exception)
    [event] = sent_items("event")
    result = stored(event)
    assert result.frames is not None
    frame = result.frames[-1]["stacktrace"]["frames"][-1]
    assert frame["function"] == "checkout"
    assert frame["context_line"].strip().startswith("raise CouponError(")
    assert frame["pre_context"] and frame["post_context"]
    assert frame["lineno"] == checkout.__code__.co_firstlineno + 4
    assert frame["filename"].endswith("test_sentry_mapping.py")
    assert result.stacktrace is not None and 'in checkout\n    raise CouponError(' in result.stacktrace
    assert result.culprit == "tests/unit/test_sentry_mapping.py in checkout"


def test_the_sdks_in_app_marks_are_kept(sentry: Callable[..., None]) -> None:
    # The SDK is told this module is a library: the built-in rules would call it the app's.
    sentry(in_app_exclude=[__name__])
    serve(sentry_sdk.capture_exception)
    [event] = sent_items("event")
    result = stored(event)
    assert all(not in_app for _, frames in frame_summary(result) for _, in_app in frames)
    assert result.fingerprint == otel_event(serve).secondary_fingerprint  # all frames, none in-app


def test_the_sdks_fingerprint_is_honoured_with_default_semantics(sentry: Callable[..., None]) -> None:
    sentry()
    default = stored(_event_of(serve))
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["{{ default }}", "eu-shop"]
        extended = stored(_event_of(serve))
        scope.fingerprint = ["payments-down"]
        replaced = stored(_event_of(serve))
        replaced_other_bug = stored(_event_of(lambda report: report(KeyError("x"))))
        scope.fingerprint = ["{{ default }}"]
        only_default = stored(_event_of(serve))
    assert len({default.fingerprint, extended.fingerprint, replaced.fingerprint}) == 3
    assert extended.secondary_fingerprint not in (None, default.secondary_fingerprint)
    assert replaced.fingerprint == replaced_other_bug.fingerprint and replaced.secondary_fingerprint is None
    assert only_default.fingerprint == default.fingerprint
    assert replaced.title == default.title


def _event_of(action: Callable[[Callable[[BaseException], object]], object]) -> dict[str, Any]:
    _Captured.envelopes = []
    action(sentry_sdk.capture_exception)
    [event] = sent_items("event")
    return event


# --------------------------------------------------------------------------- what else is kept


def test_user_tags_trace_ids_and_breadcrumbs(sentry: Callable[..., None]) -> None:
    sentry(traces_sample_rate=1.0)
    sentry_sdk.set_user({"id": "u42", "email": "u42@example.com", "username": "ann"})
    sentry_sdk.set_tag("shop", "eu")
    sentry_sdk.add_breadcrumb(category="cart", message="coupon entered", level="info")
    # What Sentry's replay integration adds to an error of a recorded browser session.
    sentry_sdk.set_context("replay", {"replay_id": "5c0d1a2b3c4d4e5f8a9b0c1d2e3f4a5b"})
    with sentry_sdk.start_transaction(op="http.server", name="POST /checkout") as transaction:
        serve(sentry_sdk.capture_exception)
        trace_id, span_id = transaction.trace_id, transaction.span_id
    [event] = sent_items("event")
    result = stored(event, project_id=3)
    assert result.session_id == "5c0d1a2b3c4d4e5f8a9b0c1d2e3f4a5b"
    # What the browser SDK itself sends: the replay id as a tag (Sentry's ingest makes the context).
    tagged = {key: value for key, value in event.items() if key != "contexts"}
    tagged["tags"] = {**event.get("tags", {}), "replayId": "0f1e2d3c4b5a49687766554433221100"}
    assert stored(tagged, project_id=3).session_id == "0f1e2d3c4b5a49687766554433221100"
    assert result.project_id == 3
    assert result.event_id == uuid.UUID(event["event_id"])
    assert (result.trace_id, result.span_id) == (trace_id, span_id)
    assert (result.user_id, result.user_email) == ("u42", "u42@example.com")
    assert (result.service_name, result.service_version, result.environment) == ("shop", "shop@2.4.0", "production")
    assert result.level == "error"
    attributes = result.attributes or {}
    assert attributes["shop"] == "eu"
    assert attributes["transaction"] == "POST /checkout"
    assert attributes["user.name"] == "ann"
    assert attributes["handled"] == "yes"
    assert attributes["host.name"] == "web-1"
    assert attributes["appguard.breadcrumbs"][-1]["message"] == "coupon entered"
    # Kept apart, not repeated among the attributes.
    assert not {"appguard.exception.values", "appguard.event_id", "appguard.project_id"} & set(attributes)
    [tx] = sent_items("transaction")
    spans = transaction_to_traces(tx, project_id=3).resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["POST /checkout"]
    assert spans[0].trace_id.hex() == trace_id and spans[0].kind == Span.SpanKind.SPAN_KIND_SERVER


def test_a_message_event_is_an_issue_at_its_level(sentry: Callable[..., None]) -> None:
    sentry()
    sentry_sdk.capture_message("stock is low for item 1234", level="warning")
    [event] = sent_items("event")
    result = stored(event)
    assert (result.level, result.title, result.type) == ("warning", "stock is low for item 1234", "")
    sentry_sdk.capture_message("stock is low for item 98")
    _Captured.envelopes = _Captured.envelopes[1:]
    [again] = sent_items("event")
    second = stored(again)
    assert second.level == "info"
    assert second.fingerprint == result.fingerprint  # numbers are parameterized


def test_an_unhandled_exception_has_escaped() -> None:
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "platform": "python",
        "exception": {
            "values": [{"type": "RuntimeError", "value": "boom", "mechanism": {"type": "excepthook", "handled": False}}]
        },
    }
    request = event_to_logs(event, project_id=1, event_id=event["event_id"])
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    attributes = {kv.key: any_value(kv.value) for kv in record.attributes}
    assert attributes["exception.escaped"] is True
    assert (attributes["handled"], attributes["mechanism"]) == ("no", "excepthook")
    assert stored(event).level == "error"


# --------------------------------------------------------------------------- rendering


def test_the_python_text_parses_back_to_the_same_frames(sentry: Callable[..., None]) -> None:
    sentry()
    serve(sentry_sdk.capture_exception)
    [event] = sent_items("event")
    values = event["exception"]["values"]
    parsed = parse_stacktrace(render_stacktrace(values, "python"), language="python")
    structured = structured_exceptions(orjson.dumps(values).decode(), "python")
    assert structured is not None

    def summary(exc: Any) -> tuple[Any, ...]:
        frames = [(f.function, f.module, f.abs_path, f.lineno, (f.context_line or "").strip(), f.in_app) for f in exc.frames]
        return exc.type, exc.value, frames

    assert [summary(e) for e in parsed.exceptions] == [summary(e) for e in structured.exceptions]
    assert len(parsed.exceptions) == 2 and all(e.frames for e in parsed.exceptions)


def test_java_and_javascript_texts_name_the_same_functions() -> None:
    java = [
        {"type": "SQLException", "module": "java.sql", "value": "no rows", "stacktrace": {"frames": [
            {"module": "com.acme.shop.OrderService", "function": "load", "filename": "OrderService.java", "lineno": 40},
        ]}},
        {"type": "IllegalStateException", "module": "java.lang", "value": "order missing", "stacktrace": {"frames": [
            {"module": "com.acme.shop.OrderController", "function": "get", "filename": "OrderController.java", "lineno": 12},
            {"module": "com.acme.shop.OrderService", "function": "find", "filename": "OrderService.java", "lineno": 33},
        ]}},
    ]  # fmt: skip
    parsed = parse_stacktrace(render_stacktrace(java, "java"))
    assert parsed.language == "java"
    assert [(e.type, [(f.module, f.function, f.lineno) for f in e.frames]) for e in parsed.exceptions] == [
        ("java.sql.SQLException", [("com.acme.shop.OrderService", "load", 40)]),
        (
            "java.lang.IllegalStateException",
            [("com.acme.shop.OrderController", "get", 12), ("com.acme.shop.OrderService", "find", 33)],
        ),
    ]
    js = [{"type": "TypeError", "value": "x is undefined", "stacktrace": {"frames": [
        {"function": "main", "abs_path": "https://shop.example.com/static/app.js", "lineno": 1, "colno": 200},
        {"function": "render", "abs_path": "https://shop.example.com/static/app.js", "lineno": 3, "colno": 17},
    ]}}]  # fmt: skip
    parsed = parse_stacktrace(render_stacktrace(js, "javascript"))
    assert parsed.language == "javascript"
    assert [(f.function, f.lineno, f.colno) for f in parsed.exceptions[0].frames] == [("main", 1, 200), ("render", 3, 17)]


# --------------------------------------------------------------------------- transactions


def test_a_transaction_becomes_its_spans(sentry: Callable[..., None]) -> None:
    sentry(traces_sample_rate=1.0)
    with sentry_sdk.start_transaction(op="http.server", name="GET /cart") as transaction:
        transaction.set_tag("shop", "eu")
        with sentry_sdk.start_span(op="db", name="SELECT * FROM carts") as db:
            db.set_data("db.system", "postgresql")
        with sentry_sdk.start_span(op="http.client", name="GET https://pay.example.com") as call:
            call.set_status("internal_error")
    [tx] = sent_items("transaction")
    request = transaction_to_traces(tx, project_id=1)
    [resource_spans] = request.resource_spans
    resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "shop" and resource["appguard.project_id"] == 1
    spans = {s.name: s for s in resource_spans.scope_spans[0].spans}
    root, db_span, http_span = spans["GET /cart"], spans["SELECT * FROM carts"], spans["GET https://pay.example.com"]
    assert {root.trace_id.hex()} == {s.trace_id.hex() for s in spans.values()} == {transaction.trace_id}
    assert root.span_id.hex() == transaction.span_id and not root.parent_span_id
    assert db_span.parent_span_id == http_span.parent_span_id == root.span_id
    assert (root.kind, db_span.kind, http_span.kind) == (
        Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT, Span.SpanKind.SPAN_KIND_CLIENT
    )  # fmt: skip
    assert http_span.status.code == Status.StatusCode.STATUS_CODE_ERROR and http_span.status.message == "internal_error"
    assert root.start_time_unix_nano <= db_span.start_time_unix_nano <= db_span.end_time_unix_nano <= root.end_time_unix_nano
    db_attributes = {kv.key: any_value(kv.value) for kv in db_span.attributes}
    assert (db_attributes["sentry.op"], db_attributes["db.system"]) == ("db", "postgresql")
    assert {kv.key: any_value(kv.value) for kv in root.attributes}["shop"] == "eu"
    # The bytes are valid OTLP (ids of the right length), as the receiver checks.
    assert Payload.from_bytes(Signal.TRACES, request.SerializeToString()).items == 3


def test_a_transaction_without_ids_gives_no_spans() -> None:
    assert not transaction_to_traces({"transaction": "x", "contexts": {"trace": {"trace_id": "zz"}}}, project_id=1).resource_spans
    child_without_id = {
        "contexts": {"trace": {"trace_id": "ab" * 16, "span_id": "cd" * 8}},
        "spans": [{"span_id": "short"}, "junk", {"span_id": "ef" * 8, "op": "cache.get"}],
    }
    spans = transaction_to_traces(child_without_id, project_id=1).resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["transaction", "cache.get"]


# --------------------------------------------------------------------------- small readers


def test_timestamps_levels_kinds_and_service_names() -> None:
    assert timestamp_ns(1767323045.5) == 1767323045_500000000
    assert timestamp_ns("1767323045.25") == 1767323045_250000000
    assert timestamp_ns("2026-01-02T03:04:05.123456Z") == 1767323045_123456000
    assert timestamp_ns("2026-01-02T03:04:05") == 1767323045_000000000
    # Times whose nanoseconds would not fit in 64 bits are not taken.
    assert timestamp_ns(18446744074) is None and timestamp_ns("9999-12-31T00:00:00Z") is None
    assert [timestamp_ns(v) for v in ("never", None, True, float("nan"), -5, [1])] == [None] * 6
    assert span_kind("queue.process") == Span.SpanKind.SPAN_KIND_CONSUMER
    assert span_kind("queue.publish") == Span.SpanKind.SPAN_KIND_PRODUCER
    assert span_kind("function") == span_kind(None) == Span.SpanKind.SPAN_KIND_INTERNAL
    assert service_name({"release": "billing@1.2.3+build4"}) == "billing"
    assert service_name({"release": "1a2b3c", "server_name": "web-2"}) == "web-2"
    assert service_name({"release": "@1.0", "platform": "node"}) == "unknown_service:node"
    assert service_name({}) == "unknown_service:other"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(
    ["exception", "message", "logentry", "level", "release", "environment", "user", "tags", "contexts", "request",
     "breadcrumbs", "fingerprint", "platform", "server_name", "timestamp", "sdk", "transaction", "spans", "start_timestamp"]
)  # fmt: skip


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=8), st.sampled_from(["values", "frames"]), JSON)
def test_any_json_maps_to_valid_otlp(event: dict[str, Any], where: str, junk: Any) -> None:
    if where == "values":
        event["exception"] = {"values": [{"type": "E", "stacktrace": {"frames": [junk, {"function": junk}]}}, junk]}
    else:
        event["contexts"] = {"trace": {"trace_id": junk, "span_id": "ab" * 8}}
    logs = event_to_logs(event, project_id=1, event_id=uuid.uuid4().hex)
    payload = Payload.from_bytes(Signal.LOGS, logs.SerializeToString())
    [found] = Extractor().extract(payload)
    assert EXPORTER.to_event(found).fingerprint
    traces = transaction_to_traces(event, project_id=1)
    Payload.from_bytes(Signal.TRACES, traces.SerializeToString())
