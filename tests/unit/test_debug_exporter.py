"""The debug exporter: what each verbosity writes, where it writes it, and sampling."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.debug import DebugConfig, DebugExporter, factory, go_float, json_number

LOGGER = "test.debugexporter"
T0 = 1581452772_000000321  # 2020-02-11 20:26:12.000000321 UTC
T1 = 1581452773_000000789
TRACE_ID = bytes(range(1, 17))
SPAN_A = bytes(range(0x11, 0x19))
SPAN_B = bytes(range(0x21, 0x29))


def kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=str(value))


def traces() -> ExportTraceServiceRequest:
    """Two resources; the first has two scopes. Three spans in all, one with an event and a link."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "checkout"), kv("deployment.environment", "prod")])
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "io.opentelemetry.test", "1.2.0"
    a = ss.spans.add(
        trace_id=TRACE_ID, span_id=SPAN_A, name="GET /cart", kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0, end_time_unix_nano=T1, trace_state="ot=th:0",
    )
    a.attributes.extend([kv("http.method", "GET"), kv("http.status_code", 200)])
    a.status.code, a.status.message = Status.STATUS_CODE_ERROR, "boom"
    a.dropped_attributes_count = 1
    ev = a.events.add(name="exception", time_unix_nano=T1, dropped_attributes_count=2)
    ev.attributes.extend([kv("exception.type", "ValueError")])
    link = a.links.add(trace_id=TRACE_ID, span_id=SPAN_B, trace_state="k=v", dropped_attributes_count=4)
    link.attributes.extend([kv("link.kind", "retry")])
    ss.spans.add(
        trace_id=TRACE_ID, span_id=SPAN_B, parent_span_id=SPAN_A, name="SELECT cart", kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0, end_time_unix_nano=T1,
    )
    rs.scope_spans.add().scope.name = "empty-scope"
    rs2 = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.4.0")
    rs2.resource.attributes.extend([kv("service.name", "billing")])
    rs2.scope_spans.add().spans.add(name="charge", trace_id=bytes(16), span_id=bytes(8))
    return req


def metrics() -> ExportMetricsServiceRequest:
    """One metric of every type."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([kv("service.name", "checkout")])
    sm = rm.scope_metrics.add()
    sm.scope.name = "meter"

    m = sm.metrics.add(name="requests", unit="1", description="requests served")
    m.sum.is_monotonic = True
    m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    p = m.sum.data_points.add(start_time_unix_nano=T0, time_unix_nano=T1, as_int=42)
    p.attributes.extend([kv("route", "/cart"), kv("code", 200)])

    m = sm.metrics.add(name="temperature", unit="Cel")
    m.gauge.data_points.add(time_unix_nano=T1, as_double=21.5)
    ex = m.gauge.data_points[0].exemplars.add(time_unix_nano=T1, as_double=21.5, trace_id=TRACE_ID, span_id=SPAN_A)
    ex.filtered_attributes.extend([kv("sensor", "s1")])

    m = sm.metrics.add(name="latency", unit="s")
    m.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    h = m.histogram.data_points.add(
        start_time_unix_nano=T0, time_unix_nano=T1, count=3, sum=0.6, min=0.1, max=0.3,
        explicit_bounds=[0.1, 0.5], bucket_counts=[1, 2, 0],
    )
    h.attributes.extend([kv("route", "/cart")])

    m = sm.metrics.add(name="size", unit="By")
    m.exponential_histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    e = m.exponential_histogram.data_points.add(start_time_unix_nano=T0, time_unix_nano=T1, count=5, sum=7.5, scale=0, zero_count=1)
    e.positive.offset = 0
    e.positive.bucket_counts.extend([2, 1])
    e.negative.offset = 0
    e.negative.bucket_counts.extend([1])

    m = sm.metrics.add(name="rpc", unit="ms")
    q = m.summary.data_points.add(start_time_unix_nano=T0, time_unix_nano=T1, count=10, sum=12.5)
    q.quantile_values.add(quantile=0.5, value=1.1)
    q.quantile_values.add(quantile=0.99, value=2.7)
    return req


def logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend([kv("service.name", "checkout")])
    sl = rl.scope_logs.add()
    sl.scope.name = "app.logger"
    rec = sl.log_records.add(
        time_unix_nano=T1, severity_number=SeverityNumber.SEVERITY_NUMBER_INFO, severity_text="Info",
        trace_id=TRACE_ID, span_id=SPAN_A, flags=1, event_name="user.login",
    )
    rec.body.string_value = "user signed in"
    rec.attributes.extend([kv("user.id", 42), kv("ratio", 0.25)])
    rec = sl.log_records.add(severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR2)
    rec.body.CopyFrom(any_value({"b": [1, 2.0, True], "a": "x", "raw": b"\x00\xff"}))
    return req


def payload(message: object, signal: Signal) -> Payload:
    # from bytes, as a receiver hands it on: the exporter must leave the bytes attached
    return Payload.from_bytes(signal, message.SerializeToString())  # type: ignore[attr-defined]


def make(**config: object) -> tuple[DebugExporter, Telemetry]:
    telemetry = Telemetry()
    settings = CreateSettings(ComponentID("debug"), Kind.EXPORTER, telemetry, logging.getLogger(LOGGER))
    cfg = factory.config_class.model_validate(config)
    exporter = factory.create(settings=settings, config=cfg, signals=frozenset(Signal))
    assert isinstance(exporter, DebugExporter)
    return exporter, telemetry


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)


def test_config_defaults_and_validation() -> None:
    cfg = factory.default_config()
    assert (cfg.verbosity, cfg.sampling_initial, cfg.sampling_thereafter, cfg.use_internal_logger) == ("basic", 2, 1, True)
    assert DebugConfig.model_validate({"verbosity": "Detailed"}).verbosity == "detailed"
    with pytest.raises(ValidationError, match="not supported"):
        DebugConfig.model_validate({"verbosity": "none"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        DebugConfig.model_validate({"loglevel": "debug"})
    with pytest.raises(ValidationError):
        DebugConfig.model_validate({"sampling_initial": -1})


async def test_basic_writes_one_summary_line_per_batch(caplog: pytest.LogCaptureFixture) -> None:
    exporter, telemetry = make()
    assert exporter.mutates_data is False
    traces_payload = payload(traces(), Signal.TRACES)
    await exporter.consume(traces_payload)
    await exporter.consume(payload(metrics(), Signal.METRICS))
    await exporter.consume(payload(logs(), Signal.LOGS))
    assert messages(caplog) == [
        'Traces {"resource spans": 2, "spans": 3}',
        'Metrics {"resource metrics": 1, "metrics": 5, "data points": 5}',
        'Logs {"resource logs": 1, "log records": 2}',
    ]
    assert traces_payload.has_raw  # read, never mutated
    assert telemetry.registry.get_sample_value("otelcol_exporter_sent_spans_total", {"exporter": "debug"}) == 3
    assert telemetry.registry.get_sample_value("otelcol_exporter_sent_log_records_total", {"exporter": "debug"}) == 2


async def test_normal_writes_about_one_line_per_item(caplog: pytest.LogCaptureFixture) -> None:
    exporter, _ = make(verbosity="normal")
    await exporter.consume(payload(traces(), Signal.TRACES))
    await exporter.consume(payload(metrics(), Signal.METRICS))
    await exporter.consume(payload(logs(), Signal.LOGS))
    head, body, mhead, mbody, lhead, lbody = messages(caplog)
    assert head == 'Traces {"resource spans": 2, "spans": 3}'
    assert body.splitlines() == [
        "ResourceTraces #0 service.name=checkout deployment.environment=prod",
        "ScopeTraces #0 io.opentelemetry.test@1.2.0",
        "GET /cart 0102030405060708090a0b0c0d0e0f10 1112131415161718 http.method=GET http.status_code=200",
        "SELECT cart 0102030405060708090a0b0c0d0e0f10 2122232425262728",
        "ScopeTraces #1 empty-scope",
        "ResourceTraces #1 [https://opentelemetry.io/schemas/1.4.0] service.name=billing",
        "ScopeTraces #0",
        "charge  ",
    ]
    assert mhead.startswith("Metrics ")
    assert mbody.splitlines() == [
        "ResourceMetrics #0 service.name=checkout",
        "ScopeMetrics #0 meter",
        "requests{route=/cart,code=200} 42",
        "temperature{} 21.5",
        "latency{route=/cart} count=3 sum=0.6 min=0.1 max=0.3 le0.1=1 le0.5=2 0",
        "size{} count=5 sum=7.5 le1=1 le1=2 le2=1 zero_count0=1",
        "rpc{} count=10 sum=12.500000 q0.5=1.1 q0.99=2.7",
    ]
    assert lhead == 'Logs {"resource logs": 1, "log records": 2}'
    assert lbody.splitlines() == [
        "ResourceLog #0 service.name=checkout",
        "ScopeLog #0 app.logger",
        "user signed in user.id=42 ratio=0.25",
        '{"a":"x","b":[1,2,true],"raw":"AP8="}',
    ]


async def test_detailed_traces_match_the_stock_text_layout(caplog: pytest.LogCaptureFixture) -> None:
    exporter, _ = make(verbosity="detailed")
    await exporter.consume(payload(traces(), Signal.TRACES))
    head, body = messages(caplog)
    assert head == 'Traces {"resource spans": 2, "spans": 3}'
    expected_first_span = [
        "ResourceSpans #0",
        "Resource SchemaURL: ",
        "Resource attributes:",
        "     -> service.name: Str(checkout)",
        "     -> deployment.environment: Str(prod)",
        "ScopeSpans #0",
        "ScopeSpans SchemaURL: ",
        "InstrumentationScope io.opentelemetry.test 1.2.0",
        "Span #0",
        "    Trace ID       : 0102030405060708090a0b0c0d0e0f10",
        "    Parent ID      : ",
        "    ID             : 1112131415161718",
        "    Name           : GET /cart",
        "    Kind           : Server",
        "    TraceState     : ot=th:0",
        "    Start time     : 2020-02-11 20:26:12.000000321 +0000 UTC",
        "    End time       : 2020-02-11 20:26:13.000000789 +0000 UTC",
        "    Status code    : Error",
        "    Status message : boom",
        "    DroppedAttributesCount: 1",
        "    DroppedEventsCount: 0",
        "    DroppedLinksCount: 0",
        "Attributes:",
        "     -> http.method: Str(GET)",
        "     -> http.status_code: Int(200)",
        "Events:",
        "SpanEvent #0",
        "     -> Name: exception",
        "     -> Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC",
        "     -> DroppedAttributesCount: 2",
        "     -> Attributes::",
        "          -> exception.type: Str(ValueError)",
        "Links:",
        "SpanLink #0",
        "     -> Trace ID: 0102030405060708090a0b0c0d0e0f10",
        "     -> ID: 2122232425262728",
        "     -> TraceState: k=v",
        "     -> DroppedAttributesCount: 4",
        "     -> Attributes::",
        "          -> link.kind: Str(retry)",
        "Span #1",
        "    Trace ID       : 0102030405060708090a0b0c0d0e0f10",
        "    Parent ID      : 1112131415161718",
        "    ID             : 2122232425262728",
        "    Name           : SELECT cart",
        "    Kind           : Client",
    ]
    lines = body.splitlines()
    assert lines[: len(expected_first_span)] == expected_first_span
    assert "ScopeSpans #1" in lines and "InstrumentationScope empty-scope " in lines
    assert "Resource SchemaURL: https://opentelemetry.io/schemas/1.4.0" in lines
    # the span with all-zero ids prints them empty, as pdata does
    charge = lines.index("    Name           : charge")
    assert lines[charge - 3 : charge] == ["    Trace ID       : ", "    Parent ID      : ", "    ID             : "]
    assert lines[charge + 2] == "    Start time     : 1970-01-01 00:00:00 +0000 UTC"


async def test_detailed_metrics_show_every_type(caplog: pytest.LogCaptureFixture) -> None:
    exporter, _ = make(verbosity="detailed")
    await exporter.consume(payload(metrics(), Signal.METRICS))
    _, body = messages(caplog)
    text = body + "\n"
    assert """\
Metric #0
Descriptor:
     -> Name: requests
     -> Description: requests served
     -> Unit: 1
     -> DataType: Sum
     -> IsMonotonic: true
     -> AggregationTemporality: Cumulative
NumberDataPoints #0
Data point attributes:
     -> route: Str(/cart)
     -> code: Int(200)
StartTimestamp: 2020-02-11 20:26:12.000000321 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Value: 42
""" in text
    assert """\
     -> DataType: Gauge
NumberDataPoints #0
StartTimestamp: 1970-01-01 00:00:00 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Value: 21.500000
Exemplars:
Exemplar #0
     -> Trace ID: 0102030405060708090a0b0c0d0e0f10
     -> Span ID: 1112131415161718
     -> Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
     -> Value: 21.500000
     -> FilteredAttributes:
          -> sensor: Str(s1)
""" in text
    assert """\
     -> DataType: Histogram
     -> AggregationTemporality: Delta
HistogramDataPoints #0
Data point attributes:
     -> route: Str(/cart)
StartTimestamp: 2020-02-11 20:26:12.000000321 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Count: 3
Sum: 0.600000
Min: 0.100000
Max: 0.300000
ExplicitBounds #0: 0.100000
ExplicitBounds #1: 0.500000
Buckets #0, Count: 1
Buckets #1, Count: 2
Buckets #2, Count: 0
""" in text
    assert """\
     -> DataType: ExponentialHistogram
     -> AggregationTemporality: Delta
ExponentialHistogramDataPoints #0
StartTimestamp: 2020-02-11 20:26:12.000000321 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Count: 5
Sum: 7.500000
Bucket [-2.000000, -1.000000), Count: 1
Bucket [0, 0], Count: 1
Bucket (1.000000, 2.000000], Count: 2
Bucket (2.000000, 4.000000], Count: 1
""" in text
    assert """\
     -> DataType: Summary
SummaryDataPoints #0
StartTimestamp: 2020-02-11 20:26:12.000000321 +0000 UTC
Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC
Count: 10
Sum: 12.500000
QuantileValue #0: Quantile 0.500000, Value 1.100000
QuantileValue #1: Quantile 0.990000, Value 2.700000
""" in text


async def test_detailed_logs(caplog: pytest.LogCaptureFixture) -> None:
    exporter, _ = make(verbosity="detailed")
    await exporter.consume(payload(logs(), Signal.LOGS))
    _, body = messages(caplog)
    assert body.splitlines() == [
        "ResourceLog #0",
        "Resource SchemaURL: ",
        "Resource attributes:",
        "     -> service.name: Str(checkout)",
        "ScopeLogs #0",
        "ScopeLogs SchemaURL: ",
        "InstrumentationScope app.logger ",
        "LogRecord #0",
        "ObservedTimestamp: 1970-01-01 00:00:00 +0000 UTC",
        "Timestamp: 2020-02-11 20:26:13.000000789 +0000 UTC",
        "SeverityText: Info",
        "SeverityNumber: Info(9)",
        "EventName: user.login",
        "Body: Str(user signed in)",
        "Attributes:",
        "     -> user.id: Int(42)",
        "     -> ratio: Double(0.25)",
        "Trace ID: 0102030405060708090a0b0c0d0e0f10",
        "Span ID: 1112131415161718",
        "Flags: 1",
        "LogRecord #1",
        "ObservedTimestamp: 1970-01-01 00:00:00 +0000 UTC",
        "Timestamp: 1970-01-01 00:00:00 +0000 UTC",
        "SeverityText: ",
        "SeverityNumber: Error2(18)",
        'Body: Map({"a":"x","b":[1,2,true],"raw":"AP8="})',
        "Trace ID: ",
        "Span ID: ",
        "Flags: 0",
    ]


async def test_stdout_when_the_internal_logger_is_off(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    exporter, _ = make(use_internal_logger=False, verbosity="normal")
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == 'Logs {"resource logs": 1, "log records": 2}'
    assert "user signed in user.id=42 ratio=0.25" in out
    assert messages(caplog) == []


async def test_sampling_per_second_like_zap(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    telemetry = Telemetry()
    settings = CreateSettings(ComponentID("debug", "sampled"), Kind.EXPORTER, telemetry, logging.getLogger(LOGGER))
    config = DebugConfig(sampling_initial=2, sampling_thereafter=3)
    exporter = DebugExporter(settings, config, clock=lambda: now[0])
    batch = payload(traces(), Signal.TRACES)
    for _ in range(10):
        await exporter.consume(batch)
    # entries 1 and 2 pass, then every third: 5 and 8
    assert len(messages(caplog)) == 4
    # logs are counted apart from traces
    await exporter.consume(payload(logs(), Signal.LOGS))
    assert len(messages(caplog)) == 5
    now[0] += 1.0  # a new second starts a new count
    await exporter.consume(batch)
    await exporter.consume(batch)
    await exporter.consume(batch)
    assert len(messages(caplog)) == 7
    # sampled-out batches were still consumed: every span counts as sent
    assert telemetry.registry.get_sample_value("otelcol_exporter_sent_spans_total", {"exporter": "debug/sampled"}) == 39


async def test_sampling_thereafter_zero_drops_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    settings = CreateSettings(ComponentID("debug"), Kind.EXPORTER, Telemetry(), logging.getLogger(LOGGER))
    exporter = DebugExporter(settings, DebugConfig(sampling_initial=1, sampling_thereafter=0), clock=lambda: 5.0)
    for _ in range(5):
        await exporter.consume(payload(logs(), Signal.LOGS))
    assert len(messages(caplog)) == 1


def test_number_formatting_follows_go() -> None:
    assert [go_float(v) for v in (15.0, 1e6, 123456.0, 1e-5, 0.0001, 0.1 + 0.2)] == [
        "15", "1e+06", "123456", "1e-05", "0.0001", "0.30000000000000004",
    ]
    assert [json_number(v) for v in (15.0, 1e6, 1e-7, 1e21, 2.5)] == ["15", "1000000", "1e-7", "1e+21", "2.5"]
    assert json.loads("[" + json_number(1e-7) + "]") == [1e-7]
