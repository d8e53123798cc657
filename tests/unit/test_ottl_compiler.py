"""OTTL conditions compiled and evaluated on OTLP messages: every path, function and enum of
every context, the comparison rules, context inference and the compile-time errors."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.ottl import OTTLError, build_program, compile_condition, infer_context, parse_condition, plan_is_empty
from collector.pdata import Signal

TRACE_ID = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
SPAN_ID = bytes.fromhex("1112131415161718")
PARENT_ID = bytes.fromhex("2122232425262728")


def value(v: Any) -> AnyValue:
    """A Python value as an OTLP AnyValue (None is the empty value)."""
    if v is None:
        return AnyValue()
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    return AnyValue(kvlist_value=KeyValueList(values=attrs(v)))


def attrs(d: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=value(v)) for k, v in d.items()]


ITEM_ATTRS = {
    "http.method": "GET",
    "http.status_code": 500,
    "ratio": 0.5,
    "ok": True,
    "blob": b"\x01\x02",
    "tags": ["a", "b"],
    "nested": {"inner": {"deep": "x"}},
    "empty": None,
    "big": 1e21,
}


def _resource_and_scope(block: Any, scope_block: Any) -> None:
    block.resource.attributes.extend(attrs({"service.name": "checkout", "host.name": "web-1"}))
    block.resource.dropped_attributes_count = 4
    block.schema_url = "https://resource.schema"
    scope_block.scope.name = "io.otel.flask"
    scope_block.scope.version = "1.2.3"
    scope_block.scope.attributes.extend(attrs({"scope.attr": "v"}))
    scope_block.scope.dropped_attributes_count = 5
    scope_block.schema_url = "https://scope.schema"


def traces() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    ss = rs.scope_spans.add()
    _resource_and_scope(rs, ss)
    sp = ss.spans.add(
        name="GET /users",
        kind=Span.SPAN_KIND_SERVER,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        trace_state="a=1,b=2",
        start_time_unix_nano=100,
        end_time_unix_nano=250,
        dropped_attributes_count=1,
        dropped_events_count=2,
        dropped_links_count=3,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
    )
    sp.attributes.extend(attrs(ITEM_ATTRS))
    ev = sp.events.add(name="exception", time_unix_nano=150, dropped_attributes_count=6)
    ev.attributes.extend(attrs({"exception.type": "ValueError"}))
    sp.links.add(trace_id=TRACE_ID, span_id=SPAN_ID)
    return req


def logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    sl = rl.scope_logs.add()
    _resource_and_scope(rl, sl)
    rec = sl.log_records.add(
        time_unix_nano=100,
        observed_time_unix_nano=200,
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
        severity_text="WARN",
        flags=1,
        dropped_attributes_count=7,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        event_name="user.login",
    )
    rec.body.CopyFrom(value({"message": "password=hunter2", "level": 3}))
    rec.attributes.extend(attrs(ITEM_ATTRS))
    return req


def metrics(kind: str = "sum") -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    sm = rm.scope_metrics.add()
    _resource_and_scope(rm, sm)
    m = sm.metrics.add(name="http.server.duration", description="Duration", unit="ms")
    dp: Any
    if kind == "sum":
        m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        m.sum.is_monotonic = True
        dp = m.sum.data_points.add(as_int=42, start_time_unix_nano=10, time_unix_nano=20, flags=1)
    elif kind == "gauge":
        dp = m.gauge.data_points.add(as_double=2.5, time_unix_nano=20)
    elif kind == "histogram":
        m.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        dp = m.histogram.data_points.add(count=3, sum=7.5, time_unix_nano=20)
    elif kind == "exponential_histogram":
        dp = m.exponential_histogram.data_points.add(count=4, sum=1.5, scale=2, zero_count=1)
    else:
        dp = m.summary.data_points.add(count=5, sum=9.0)
    dp.attributes.extend(attrs({"http.route": "/users", "code": 200}))
    return req


def evaluate(text: str, signal: Signal, context: str | None, message: Any, mode: str = "ignore") -> tuple[bool, list[BaseException]]:
    """Whether the condition drops something from ``message``, and the errors it raised."""
    condition = compile_condition(text, signal, context)
    errors: list[BaseException] = []
    program = build_program(signal, [condition], mode)
    plan = program.plan(message, None, lambda _, exc: errors.append(exc))
    return not plan_is_empty(plan), errors


def check(text: str, signal: Signal, context: str | None, message: Any, expected: bool) -> None:
    dropped, errors = evaluate(text, signal, context, message)
    assert not errors, f"{text}: {errors}"
    assert dropped is expected, text


SPAN_TRUE = [
    'name == "GET /users"',
    "kind == SPAN_KIND_SERVER",
    "kind == 2",
    'kind.string == "Server"',
    'kind.deprecated_string == "SPAN_KIND_SERVER"',
    "status.code == STATUS_CODE_ERROR",
    'status.message == "boom"',
    "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)",
    'trace_id.string == "0102030405060708090a0b0c0d0e0f10"',
    "span_id == SpanID(0x1112131415161718)",
    'span_id.string == "1112131415161718"',
    "parent_span_id == SpanID(0x2122232425262728)",
    'parent_span_id.string == "2122232425262728"',
    'trace_state == "a=1,b=2"',
    'trace_state["b"] == "2"',
    'trace_state["zz"] == nil',
    "start_time_unix_nano == 100",
    "end_time_unix_nano > start_time_unix_nano",
    'attributes["http.method"] == "GET"',
    'attributes["http.status_code"] == 500',
    'attributes["http.status_code"] == 500.0',
    'attributes["http.status_code"] >= 400',
    'attributes["ratio"] < 1',
    'attributes["ok"] == true',
    'attributes["ok"] > false',
    'attributes["blob"] == 0x0102',
    'attributes["missing"] == nil',
    'attributes["empty"] == nil',
    'attributes["nested"]["inner"]["deep"] == "x"',
    'attributes["nested"]["inner"]["absent"] == nil',
    'attributes["tags"][1] == "b"',
    'attributes["http.method"] != "POST"',
    'attributes["missing"] != "x"',
    "dropped_attributes_count == 1",
    "dropped_events_count == 2",
    "dropped_links_count == 3",
    'resource.attributes["service.name"] == "checkout"',
    "resource.dropped_attributes_count == 4",
    'resource.schema_url == "https://resource.schema"',
    'instrumentation_scope.name == "io.otel.flask"',
    'instrumentation_scope.version == "1.2.3"',
    'scope.name == "io.otel.flask"',
    'instrumentation_scope.attributes["scope.attr"] == "v"',
    "instrumentation_scope.dropped_attributes_count == 5",
    'scope.schema_url == "https://scope.schema"',
    'span.name == "GET /users"',
    "Len(events) == 1",
    "Len(links) == 1",
    "Len(name) == 10",
    'Len("é") == 2',
    'Len(attributes["tags"]) == 2',
    'Len(attributes["nested"]) == 1',
    'IsMatch(name, "^GET")',
    'IsMatch(attributes["http.status_code"], "^5")',
    'IsMatch(attributes["nested"], "\\"deep\\":\\"x\\"")',
    'IsMatch(attributes["ok"], "true")',
    'IsMatch(attributes["big"], "^1e\\\\+21$")',
    "IsString(name)",
    'IsString(attributes["http.method"])',
    'not IsString(attributes["ok"])',
    'IsMap(attributes["nested"])',
    "not IsMap(name)",
    'Int(attributes["ratio"]) == 0',
    'Int("42") == 42',
    'Int("4x") == nil',
    'Int(attributes["ok"]) == 1',
    'Double(attributes["http.status_code"]) == 500.0',
    'Double("1e3") == 1000',
    'String(attributes["http.status_code"]) == "500"',
    'String(attributes["ratio"]) == "0.5"',
    'String(span_id) == "1112131415161718"',
    'String(attributes["tags"]) == "[\\"a\\",\\"b\\"]"',
    'Concat([name, attributes["http.status_code"], attributes["missing"]], "|") == "GET /users|500|<nil>"',
    'Substring(name, 0, 3) == "GET"',
    'Substring("héllo", 1, 2) == "é"',
    'Substring("héllo", 1, 1, true) == "é"',
    'ConvertCase(attributes["http.method"], "lower") == "get"',
    'ConvertCase("myHTTPServer2", "snake") == "my_http_server_2"',
    'ConvertCase("my_metric.name", "camel") == "MyMetricName"',
    'ConvertCase("abc", "upper") == "ABC"',
    'ConvertCase(1, "upper") == nil',
    "not IsRootSpan()",
    "true",
    "not false",
    "1 < 2",
    '"b" > "a"',
    "1 == 1.0",
    'resource.attributes["host.name"] == "web-1" and name == "GET /users"',
    'resource.attributes["host.name"] == "nope" or kind == SPAN_KIND_SERVER',
    'not (name == "x" or name == "y")',
]

SPAN_FALSE = [
    'name == "other"',
    'attributes["http.method"] == 1',
    'attributes["http.status_code"] == "500"',
    'attributes["missing"] != nil',
    "name == nil",
    "kind == SPAN_KIND_CLIENT",
    "trace_id == 0x0102030405060708090a0b0c0d0e0f10",
    'attributes["tags"] == "a"',
    'IsMatch(attributes["missing"], ".*")',
    'name < "A"',
    'attributes["ok"] > true',
    "attributes == nil",
    'attributes["http.method"] < 1',
    "IsRootSpan()",
    "false",
    'resource.attributes["host.name"] == "web-1" and name == "nope"',
    'name == "GET /users" and not (kind == SPAN_KIND_SERVER)',
    "nil != nil",
    '"a" == 1',
]


@pytest.mark.parametrize("text", SPAN_TRUE)
def test_span_context_true(text: str) -> None:
    check(text, Signal.TRACES, "span", traces(), True)


@pytest.mark.parametrize("text", SPAN_FALSE)
def test_span_context_false(text: str) -> None:
    check(text, Signal.TRACES, "span", traces(), False)


@pytest.mark.parametrize(
    "text",
    [
        'name == "exception"',
        "time_unix_nano == 150",
        'attributes["exception.type"] == "ValueError"',
        "dropped_attributes_count == 6",
        "event_index == 0",
        'span.name == "GET /users"',
        'span.attributes["http.method"] == "GET"',
        "span.kind == SPAN_KIND_SERVER",
        'resource.attributes["service.name"] == "checkout"',
        'instrumentation_scope.name == "io.otel.flask"',
        'IsMatch(name, ".*cept.*")',
    ],
)
def test_spanevent_context(text: str) -> None:
    check(text, Signal.TRACES, "spanevent", traces(), True)
    check(f"not ({text})", Signal.TRACES, "spanevent", traces(), False)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('name == "http.server.duration"', "sum"),
        ('description == "Duration"', "sum"),
        ('unit == "ms"', "sum"),
        ("type == METRIC_DATA_TYPE_SUM", "sum"),
        ("type == METRIC_DATA_TYPE_GAUGE", "gauge"),
        ("type == METRIC_DATA_TYPE_HISTOGRAM", "histogram"),
        ("type == METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM", "exponential_histogram"),
        ("type == METRIC_DATA_TYPE_SUMMARY", "summary"),
        ("aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE", "sum"),
        ("aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA", "histogram"),
        ("aggregation_temporality == AGGREGATION_TEMPORALITY_UNSPECIFIED", "gauge"),
        ("is_monotonic == true", "sum"),
        ("is_monotonic == false", "gauge"),
        ('HasAttrKeyOnDatapoint("http.route")', "histogram"),
        ('HasAttrOnDatapoint("http.route", "/users")', "summary"),
        ("Len(data_points) == 1", "gauge"),
        ('resource.attributes["service.name"] == "checkout"', "sum"),
        ('metric.name == "http.server.duration"', "sum"),
    ],
)
def test_metric_context(text: str, kind: str) -> None:
    check(text, Signal.METRICS, "metric", metrics(kind), True)
    check(f"not ({text})", Signal.METRICS, "metric", metrics(kind), False)


def test_metric_context_false_cases() -> None:
    check('HasAttrKeyOnDatapoint("nope")', Signal.METRICS, "metric", metrics("sum"), False)
    check('HasAttrOnDatapoint("http.route", "/other")', Signal.METRICS, "metric", metrics("sum"), False)
    check('HasAttrOnDatapoint("code", "200")', Signal.METRICS, "metric", metrics("sum"), False)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ('attributes["http.route"] == "/users"', "sum"),
        ('attributes["code"] == 200', "gauge"),
        ("value_int == 42", "sum"),
        ("value_double == 0.0", "sum"),
        ("value_double == 2.5", "gauge"),
        ("value_int == 0", "gauge"),
        ("value_int == nil", "histogram"),
        ("count == 3", "histogram"),
        ("sum == 7.5", "histogram"),
        ("count == nil", "sum"),
        ("sum == nil", "gauge"),
        ("count == 4", "exponential_histogram"),
        ("scale == 2", "exponential_histogram"),
        ("zero_count == 1", "exponential_histogram"),
        ("scale == nil", "histogram"),
        ("count == 5", "summary"),
        ("sum == 9.0", "summary"),
        ("flags == FLAG_NO_RECORDED_VALUE", "sum"),
        ("start_time_unix_nano == 10", "sum"),
        ("time_unix_nano == 20", "gauge"),
        ('metric.name == "http.server.duration"', "sum"),
        ("metric.type == METRIC_DATA_TYPE_SUMMARY", "summary"),
        ('resource.attributes["host.name"] == "web-1"', "sum"),
        ('instrumentation_scope.version == "1.2.3"', "sum"),
    ],
)
def test_datapoint_context(text: str, kind: str) -> None:
    check(text, Signal.METRICS, "datapoint", metrics(kind), True)
    check(f"not ({text})", Signal.METRICS, "datapoint", metrics(kind), False)


@pytest.mark.parametrize(
    "text",
    [
        'body["message"] == "password=hunter2"',
        'body["level"] == 3',
        'IsMatch(body["message"], "password")',
        'IsMatch(body, "hunter2")',
        "IsMap(body)",
        'body.string == "{\\"level\\":3,\\"message\\":\\"password=hunter2\\"}"',
        "severity_number == SEVERITY_NUMBER_WARN",
        "severity_number >= SEVERITY_NUMBER_WARN",
        "severity_number < SEVERITY_NUMBER_ERROR",
        'severity_text == "WARN"',
        'attributes["http.method"] == "GET"',
        "time_unix_nano == 100",
        "observed_time_unix_nano == 200",
        "flags == 1",
        "dropped_attributes_count == 7",
        "trace_id == TraceID(0x0102030405060708090a0b0c0d0e0f10)",
        'trace_id.string == "0102030405060708090a0b0c0d0e0f10"',
        "span_id == SpanID(0x1112131415161718)",
        'span_id.string == "1112131415161718"',
        'event_name == "user.login"',
        'resource.attributes["service.name"] == "checkout"',
        'instrumentation_scope.name == "io.otel.flask"',
        'log.severity_text == "WARN"',
    ],
)
def test_log_context(text: str) -> None:
    check(text, Signal.LOGS, "log", logs(), True)
    check(f"not ({text})", Signal.LOGS, "log", logs(), False)


def test_log_body_kinds() -> None:
    req = logs()
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    rec.body.CopyFrom(value("plain text with password"))
    check('IsMatch(body, ".*password.*")', Signal.LOGS, "log", req, True)
    check('body == "plain text with password"', Signal.LOGS, "log", req, True)
    check('body.string == "plain text with password"', Signal.LOGS, "log", req, True)
    check("IsString(body)", Signal.LOGS, "log", req, True)
    rec.body.CopyFrom(value(2.5))
    check('body.string == "2.5"', Signal.LOGS, "log", req, True)
    check("body == 2.5", Signal.LOGS, "log", req, True)
    rec.body.CopyFrom(value(b"\x00\xff"))
    check('body.string == "AP8="', Signal.LOGS, "log", req, True)
    rec.ClearField("body")
    check("body == nil", Signal.LOGS, "log", req, True)
    check('body == ""', Signal.LOGS, "log", req, False)
    dropped, errors = evaluate('body["k"] == "v"', Signal.LOGS, "log", req)
    assert not dropped and "cannot be indexed" in str(errors[0])


@pytest.mark.parametrize(
    ("text", "context"),
    [
        ('attributes["service.name"] == "checkout"', "resource"),
        ("dropped_attributes_count == 4", "resource"),
        ('name == "io.otel.flask"', "scope"),
        ('version == "1.2.3"', "scope"),
        ('attributes["scope.attr"] == "v"', "scope"),
        ('resource.attributes["host.name"] == "web-1"', "scope"),
    ],
)
def test_resource_and_scope_contexts(text: str, context: str) -> None:
    for signal, message in ((Signal.TRACES, traces()), (Signal.LOGS, logs()), (Signal.METRICS, metrics())):
        check(text, signal, context, message, True)
        check(f"not ({text})", signal, context, message, False)


def test_empty_ids_read_as_zero_bytes() -> None:
    req = traces()
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    sp.parent_span_id = b""
    check("IsRootSpan()", Signal.TRACES, "span", req, True)
    check("parent_span_id == SpanID(0x0000000000000000)", Signal.TRACES, "span", req, True)
    check('parent_span_id.string == "0000000000000000"', Signal.TRACES, "span", req, True)
    check("parent_span_id == nil", Signal.TRACES, "span", req, False)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('attributes["http.method"]["x"] == nil', "does not support string indexing"),
        ('attributes["tags"][5] == nil', "out of bounds"),
        ('attributes["tags"]["x"] == nil', "integer index"),
        ('attributes["nested"][0] == nil', "non-string indexing"),
        ('Substring(name, 0, 100) == "x"', "invalid range"),
        ('Substring(name, -1, 1) == "x"', "cannot be negative"),
        ('Substring(attributes["http.status_code"], 0, 1) == "5"', "expected string"),
        ('Len(attributes["ok"]) == 1', "unsupported"),
        ('Len(attributes["missing"]) == 1', "nil"),
        ('Int(attributes["nested"]) == 1', "unsupported"),
        ('Concat([name], attributes["http.status_code"]) == "x"', "delimiter must be a string"),
        ("TraceID(attributes[\"blob\"]) == nil", "16 bytes"),
    ],
)
def test_runtime_errors_make_the_condition_false(text: str, fragment: str) -> None:
    dropped, errors = evaluate(text, Signal.TRACES, "span", traces())
    assert not dropped
    assert len(errors) == 1 and fragment in str(errors[0])


@pytest.mark.parametrize(
    ("text", "context", "fragment"),
    [
        ("nonexistent == 1", "span", 'invalid path "nonexistent"'),
        ("status == 1", "span", "invalid path"),
        ("attributes[0] == 1", "span", "indexed with a string key"),
        ("kind.other == 1", "span", "invalid path"),
        ("SEVERITY_NUMBER_INFO == 1", "span", "enum symbol SEVERITY_NUMBER_INFO is not defined in the span context"),
        ('HasAttrOnDatapoint("a", "b")', "span", "only available in the metric context"),
        ("IsRootSpan()", "spanevent", "only available in the span context"),
        ("TraceID(0x01) == nil", "span", "exactly 16 bytes"),
        ("SpanID(0x01) == nil", "span", "exactly 8 bytes"),
        ('ConvertCase(name, "kebab") == nil', "span", "invalid case: kebab"),
        ("IsMatch(name, name)", "span", "pattern must be a string literal"),
        ('IsMatch(name, "(?=a)")', "span", "lookahead"),
        ('Concat(name, "-") == ""', "span", "must be a list"),
        ("events == nil", "span", "only be used inside Len()"),
        ('IsMatch(events, "a")', "span", "only be used inside Len()"),
        ("Int(name)", "span", "does not return a boolean"),
        ("Foo(name)", "span", 'undefined function "Foo"'),
        ('IsMatch(name)', "span", "missing pattern"),
        ('IsMatch(name, "a", "b")', "span", "at most 2 arguments"),
        ('IsMatch(name, nope = "a")', "span", "no argument named 'nope'"),
        ('spanevent.name == "x"', "span", "not available in the span context"),
        ('log.body == "x"', "span", "which traces conditions do not have"),
        ('body.other == "x"', "log", "invalid path"),
        ("value_double.x == 1", "datapoint", "invalid path"),
        ("bucket_counts == nil", "datapoint", "invalid path"),
        ('trace_state["a"]["b"] == nil', "span", "exactly one string key"),
    ],
)
def test_compile_errors(text: str, context: str, fragment: str) -> None:
    signal = {"span": Signal.TRACES, "spanevent": Signal.TRACES, "log": Signal.LOGS, "datapoint": Signal.METRICS}[context]
    with pytest.raises(OTTLError) as info:
        compile_condition(text, signal, context)
    assert fragment in str(info.value)
    assert info.value.col > 0


def test_error_column_points_at_the_culprit() -> None:
    with pytest.raises(OTTLError) as info:
        compile_condition('name == "x" and IsMatch(name, "(a")', Signal.TRACES, "span")
    assert info.value.col == 31
    with pytest.raises(OTTLError) as info:
        compile_condition('name == "x" or nonexistent == 1', Signal.TRACES, "span")
    assert info.value.col == 16


@pytest.mark.parametrize(
    ("text", "signal", "context"),
    [
        ('span.name == "x"', Signal.TRACES, "span"),
        ('resource.attributes["a"] == "b"', Signal.TRACES, "resource"),
        ('scope.name == "x"', Signal.TRACES, "scope"),
        ('instrumentation_scope.name == "x"', Signal.TRACES, "scope"),
        ('scope.name == "x" and resource.attributes["a"] == "b"', Signal.TRACES, "scope"),
        ('resource.attributes["a"] == "b" or span.name == "x"', Signal.TRACES, "span"),
        ('resource.attributes["a"] == "b" or spanevent.name == "x"', Signal.TRACES, "spanevent"),
        ('span.name == "x" and spanevent.name == "y"', Signal.TRACES, "spanevent"),
        ('IsRootSpan() or resource.attributes["a"] == "b"', Signal.TRACES, "span"),
        ('metric.name == "x"', Signal.METRICS, "metric"),
        ('metric.name == "x" and datapoint.attributes["a"] == "b"', Signal.METRICS, "datapoint"),
        ('HasAttrKeyOnDatapoint("k") and resource.attributes["a"] == "b"', Signal.METRICS, "metric"),
        ('log.body == "x"', Signal.LOGS, "log"),
        ('resource.attributes["a"] == "b" and log.severity_number < SEVERITY_NUMBER_WARN', Signal.LOGS, "log"),
    ],
)
def test_context_inference(text: str, signal: Signal, context: str) -> None:
    assert infer_context(signal, parse_condition(text)) == context
    assert compile_condition(text, signal).context == context


@pytest.mark.parametrize(
    ("text", "signal", "fragment"),
    [
        ('name == "x"', Signal.TRACES, 'missing context name for path "name"'),
        ('span.name == "x" and name == "y"', Signal.TRACES, 'missing context name for path "name"'),
        ('log.body == "x"', Signal.TRACES, "which traces conditions do not have"),
        ('span.name == "x"', Signal.LOGS, "which logs conditions do not have"),
        ("true", Signal.TRACES, "unable to infer a context"),
        ('IsMatch("a", "b")', Signal.LOGS, "unable to infer a context"),
    ],
)
def test_inference_errors(text: str, signal: Signal, fragment: str) -> None:
    with pytest.raises(OTTLError) as info:
        compile_condition(text, signal)
    assert fragment in str(info.value)


def test_inferred_conditions_evaluate() -> None:
    check('span.attributes["http.method"] == "GET"', Signal.TRACES, None, traces(), True)
    check('spanevent.attributes["exception.type"] == "ValueError"', Signal.TRACES, None, traces(), True)
    check('datapoint.value_int == 42 and metric.name == "http.server.duration"', Signal.METRICS, None, metrics(), True)
    check('log.severity_number < SEVERITY_NUMBER_WARN', Signal.LOGS, None, logs(), False)


def test_explicit_context_prepends_it_to_bare_paths() -> None:
    condition = compile_condition('name == "GET /users" and resource.attributes["host.name"] == "web-1"', Signal.TRACES, "span")
    assert condition.context == "span"
    check('name == "GET /users" and span.kind == SPAN_KIND_SERVER', Signal.TRACES, "span", traces(), True)


def test_resource_only_parts_are_decided_per_resource() -> None:
    whole = compile_condition('resource.attributes["host.name"] == "web-1"', Signal.TRACES, "span")
    assert whole.eval_level == 0 and not whole.hoists
    part = compile_condition('resource.attributes["host.name"] == "web-1" and name == "x"', Signal.TRACES, "span")
    assert part.eval_level == 2 and [level for level, _, _ in part.hoists] == [0]
    raising = compile_condition('Substring(resource.attributes["host.name"], 0, 3) == "web"', Signal.TRACES, "span")
    assert raising.eval_level == 2  # errors are reported per span, as the stock processor does
    check('Substring(resource.attributes["host.name"], 0, 3) == "web"', Signal.TRACES, "span", traces(), True)


def test_constant_folding() -> None:
    assert compile_condition("1 == 1", Signal.TRACES, "span").code == "True"
    assert compile_condition('not ("a" == 1)', Signal.TRACES, "span").code == "True"
    assert compile_condition("true and false", Signal.TRACES, "span").code == "False"
