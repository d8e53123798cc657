"""The filter processor on OTLP requests: what is dropped, what goes on, and what it reports.

Requests come from the real OpenTelemetry SDK (spans, logs and metrics encoded by its OTLP
encoders) or are built field by field for the edge cases.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber as SdkSeverity
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.component import ComponentID, CreateSettings, Kind
from collector.consumer import PermanentError
from collector.pdata import ExportRequest, Payload, Signal
from collector.telemetry import Telemetry
from processors.filter import FilterConfig, FilterProcessor, factory
from tests.support.components import Sink
from tests.unit.test_ottl_compiler import attrs


def settings(telemetry: Telemetry | None = None, name: str = "t") -> CreateSettings:
    return CreateSettings(ComponentID("filter", name), Kind.PROCESSOR, telemetry or Telemetry(), logging.getLogger("test.filter"))


def make(config: dict[str, Any], signal: Signal, telemetry: Telemetry | None = None) -> tuple[FilterProcessor, Sink]:
    sink = Sink()
    proc = factory.create(settings=settings(telemetry), config=FilterConfig.model_validate(config), signal=signal, next_consumer=sink)
    assert isinstance(proc, FilterProcessor)
    return proc, sink


async def run(config: dict[str, Any], signal: Signal, message: ExportRequest, telemetry: Telemetry | None = None) -> Payload | None:
    """Filter ``message`` (as received: bytes attached); the payload passed on, or None."""
    proc, sink = make(config, signal, telemetry)
    await proc.consume(Payload.from_bytes(signal, message.SerializeToString()))
    assert len(sink.got) <= 1
    return sink.got[0] if sink.got else None


# -- real SDK data ---------------------------------------------------------------------------


def sdk_traces() -> tuple[ExportTraceServiceRequest, list[Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "host.name": "web-1"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("io.otel.flask", "1.2.3")
    with tracer.start_as_current_span("GET /users", kind=trace.SpanKind.SERVER, attributes={"http.route": "/users"}) as root:
        root.add_event("cache.miss", {"grpc": True})
        root.add_event("exception", {"exception.type": "ValueError"})
        with tracer.start_as_current_span("SELECT users", kind=trace.SpanKind.CLIENT, attributes={"db.system": "postgresql"}):
            pass
    for _ in range(3):
        with tracer.start_as_current_span("GET /healthz", kind=trace.SpanKind.SERVER, attributes={"http.route": "/healthz"}):
            pass
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    return encode_spans(spans), spans


def sdk_logs() -> ExportLogsServiceRequest:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("app.logs")
    for severity, text, body in [
        (SdkSeverity.DEBUG, "DEBUG", "cache warmed"),
        (SdkSeverity.INFO, "INFO", "user logged in with password=hunter2"),
        (SdkSeverity.WARN, "WARN", "slow query"),
        (SdkSeverity.ERROR, "ERROR", "payment failed"),
    ]:
        logger.emit(timestamp=1, severity_number=severity, severity_text=text, body=body, attributes={"k": text})
    provider.shutdown()
    return encode_logs(exporter.get_finished_logs())


def sdk_metrics() -> ExportMetricsServiceRequest:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "checkout"}), metric_readers=[reader])
    meter = provider.get_meter("app.metrics")
    requests = meter.create_counter("http.requests")
    requests.add(1, {"http.method": "GET", "http.route": "/users"})
    requests.add(2, {"http.method": "POST", "http.route": "/users"})
    requests.add(5, {"http.method": "GET", "http.route": "/healthz"})
    meter.create_histogram("http.duration", unit="ms").record(12.5, {"http.route": "/users"})
    meter.create_up_down_counter("queue.size").add(3)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return encode_metrics(data)


def span_names(message: Any) -> list[str]:
    return [sp.name for rs in message.resource_spans for ss in rs.scope_spans for sp in ss.spans]


async def test_sdk_spans_drop_health_checks_and_keep_ids() -> None:
    message, spans = sdk_traces()
    out = await run({"traces": {"span": ['attributes["http.route"] == "/healthz"']}}, Signal.TRACES, message)
    assert out is not None
    assert sorted(span_names(out.message)) == ["GET /users", "SELECT users"]
    assert out.items == 2
    by_name = {s.name: s for s in spans}
    for sp in out.message.resource_spans[0].scope_spans[0].spans:
        ctx = by_name[sp.name].context
        assert sp.trace_id == ctx.trace_id.to_bytes(16, "big")
        assert sp.span_id == ctx.span_id.to_bytes(8, "big")
    child = next(sp for sp in out.message.resource_spans[0].scope_spans[0].spans if sp.name == "SELECT users")
    assert child.parent_span_id == by_name["GET /users"].context.span_id.to_bytes(8, "big")


async def test_sdk_span_events_drop_but_the_span_stays() -> None:
    message, _ = sdk_traces()
    out = await run({"traces": {"spanevent": ['attributes["grpc"] == true', 'name == "exception"']}}, Signal.TRACES, message)
    assert out is not None
    spans = {sp.name: sp for sp in out.message.resource_spans[0].scope_spans[0].spans}
    assert len(spans["GET /users"].events) == 0
    assert out.items == 5


async def test_sdk_logs() -> None:
    out = await run({"logs": {"log_record": ['IsMatch(body, ".*password.*")', "severity_number < SEVERITY_NUMBER_INFO"]}}, Signal.LOGS, sdk_logs())
    assert out is not None
    bodies = [r.body.string_value for r in out.message.resource_logs[0].scope_logs[0].log_records]
    assert bodies == ["slow query", "payment failed"]


async def test_sdk_metrics_datapoints_and_metrics() -> None:
    out = await run({"metrics": {"datapoint": ['attributes["http.route"] == "/healthz"', 'attributes["http.method"] == "POST"']}}, Signal.METRICS, sdk_metrics())
    assert out is not None
    metrics = {m.name: m for m in out.message.resource_metrics[0].scope_metrics[0].metrics}
    assert [dict((kv.key, kv.value.string_value) for kv in dp.attributes) for dp in metrics["http.requests"].sum.data_points] == [
        {"http.method": "GET", "http.route": "/users"}
    ]
    assert set(metrics) == {"http.requests", "http.duration", "queue.size"}
    out = await run({"metrics": {"metric": ["type == METRIC_DATA_TYPE_HISTOGRAM", 'HasAttrOnDatapoint("http.method", "POST")']}}, Signal.METRICS, sdk_metrics())
    assert out is not None
    assert [m.name for m in out.message.resource_metrics[0].scope_metrics[0].metrics] == ["queue.size"]


# -- structure edge cases --------------------------------------------------------------------


def traces_message(layout: list[tuple[dict[str, Any], list[list[str]]]]) -> ExportTraceServiceRequest:
    """Resources (attributes, scopes); each scope a list of span names (name "e:x" adds events)."""
    req = ExportTraceServiceRequest()
    for resource_attrs, scopes in layout:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(attrs(resource_attrs))
        for i, names in enumerate(scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{i}"
            for name in names:
                sp = ss.spans.add(name=name, trace_id=bytes(range(16)), span_id=bytes(range(8)))
                sp.attributes.extend(attrs({"n": name}))
                sp.events.add(name="ev1")
                sp.events.add(name="ev2")
    return req


def layout_of(message: Any) -> list[list[list[str]]]:
    return [[[sp.name for sp in ss.spans] for ss in rs.scope_spans] for rs in message.resource_spans]


async def test_emptied_scopes_and_resources_are_removed() -> None:
    message = traces_message([({"r": "a"}, [["x", "y"], ["x"]]), ({"r": "b"}, [["x"], ["z"]])])
    out = await run({"traces": {"span": ['name == "x"']}}, Signal.TRACES, message)
    assert out is not None
    assert layout_of(out.message) == [[["y"]], [["z"]]]
    out = await run({"traces": {"span": ['name == "x" or name == "y"']}}, Signal.TRACES, message)
    assert out is not None
    assert layout_of(out.message) == [[["z"]]]
    assert out.message.resource_spans[0].resource.attributes[0].value.string_value == "b"


async def test_originally_empty_scopes_go_only_with_item_conditions() -> None:
    message = traces_message([({"r": "a"}, [[], ["y"]]), ({"r": "b"}, [])])
    out = await run({"traces": {"span": ['name == "none"']}}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[["y"]]]
    out = await run({"traces": {"resource": ['attributes["r"] == "none"']}}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[[], ["y"]], []]
    assert out.has_raw  # nothing was dropped: the received bytes travel on


async def test_resource_and_scope_conditions() -> None:
    message = traces_message([({"r": "a"}, [["x"], ["y"]]), ({"r": "b"}, [["z"]])])
    out = await run({"traces": {"resource": ['attributes["r"] == "a"']}}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[["z"]]]
    out = await run({"trace_conditions": ['scope.name == "scope1"']}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[["x"]], [["z"]]]


async def test_a_dropped_parent_is_not_looked_into() -> None:
    # The span-event condition fails on every event it sees, and propagates: it must see none.
    message = traces_message([({"r": "a"}, [["x"]])])
    config = {
        "error_mode": "propagate",
        "trace_conditions": ['resource.attributes["r"] == "a"', 'Substring(spanevent.name, 0, 99) == "x"'],
    }
    out = await run(config, Signal.TRACES, message)
    assert out is None
    config["trace_conditions"] = ['span.name == "x"', 'Substring(spanevent.name, 0, 99) == "x"']
    assert await run(config, Signal.TRACES, message) is None


async def test_hierarchical_inferred_conditions() -> None:
    message = traces_message([({"host.name": "localhost"}, [["a"]]), ({"host.name": "web"}, [["b"], ["grpc"]])])
    out = await run(
        {"trace_conditions": ['resource.attributes["host.name"] == "localhost"', 'spanevent.name == "ev1"', 'span.name == "grpc"']},
        Signal.TRACES,
        message,
    )
    assert out is not None and layout_of(out.message) == [[["b"]]]
    assert [e.name for e in out.message.resource_spans[0].scope_spans[0].spans[0].events] == ["ev2"]
    # One cross-context condition runs per span event: it drops events, never spans.
    out = await run(
        {"trace_conditions": ['resource.attributes["host.name"] == "localhost" or spanevent.name == "ev2"']},
        Signal.TRACES,
        message,
    )
    assert out is not None and layout_of(out.message) == [[["a"]], [["b"], ["grpc"]]]
    events = [[e.name for e in sp.events] for rs in out.message.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    assert events == [[], ["ev1"], ["ev1"]]


def metrics_message() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    g = sm.metrics.add(name="gauge")
    for v in (1, 2):
        g.gauge.data_points.add(as_int=v)
    h = sm.metrics.add(name="hist")
    h.histogram.data_points.add(count=3, sum=1.0)
    sm.metrics.add(name="nodata")
    sm.metrics.add(name="empty_sum").sum.SetInParent()
    return req


async def test_metric_whose_points_all_drop_goes() -> None:
    out = await run({"metrics": {"datapoint": ["value_int == 1"]}}, Signal.METRICS, metrics_message())
    assert out is not None
    metrics = out.message.resource_metrics[0].scope_metrics[0].metrics
    # a metric without a data type stays; one left (or found) without points goes
    assert [(m.name, m.WhichOneof("data")) for m in metrics] == [("gauge", "gauge"), ("hist", "histogram"), ("nodata", None)]
    assert [dp.as_int for dp in metrics[0].gauge.data_points] == [2]
    out = await run({"metrics": {"datapoint": ["value_int != nil"]}}, Signal.METRICS, metrics_message())
    assert out is not None
    assert [m.name for m in out.message.resource_metrics[0].scope_metrics[0].metrics] == ["hist", "nodata"]
    out = await run({"metric_conditions": ['resource.attributes["x"] == nil']}, Signal.METRICS, metrics_message())
    assert out is None


async def test_everything_dropped_passes_nothing_on() -> None:
    message = traces_message([({"r": "a"}, [["x"]])])
    telemetry = Telemetry()
    assert await run({"traces": {"span": ["true"]}}, Signal.TRACES, message, telemetry) is None
    value = telemetry.registry.get_sample_value("otelcol_processor_filter_spans_filtered_total", {"filter": "filter/t"})
    assert value == 1
    assert telemetry.registry.get_sample_value("otelcol_processor_outgoing_items_total", {"processor": "filter/t", "otel_signal": "traces"}) == 0


async def test_empty_requests() -> None:
    empty = ExportTraceServiceRequest()
    assert await run({"traces": {"span": ['name == "x"']}}, Signal.TRACES, empty) is None
    out = await run({}, Signal.TRACES, empty)
    assert out is not None  # without conditions the processor passes everything through


async def test_nothing_dropped_keeps_the_received_bytes() -> None:
    message = traces_message([({"r": "a"}, [["x"]])])
    raw = message.SerializeToString()
    proc, sink = make({"traces": {"span": ['name == "y"', 'attributes["n"] == "nope"']}}, Signal.TRACES)
    payload = Payload.from_bytes(Signal.TRACES, raw)
    await proc.consume(payload)
    assert sink.got[0] is payload and payload.has_raw and payload.to_bytes() is raw


async def test_telemetry_counts_filtered_items() -> None:
    telemetry = Telemetry()
    out = await run({"logs": {"log_record": ["severity_number < SEVERITY_NUMBER_WARN"]}}, Signal.LOGS, sdk_logs(), telemetry)
    assert out is not None and out.items == 2
    sample = telemetry.registry.get_sample_value
    assert sample("otelcol_processor_filter_logs_filtered_total", {"filter": "filter/t"}) == 2
    assert sample("otelcol_processor_incoming_items_total", {"processor": "filter/t", "otel_signal": "logs"}) == 4
    assert sample("otelcol_processor_outgoing_items_total", {"processor": "filter/t", "otel_signal": "logs"}) == 2
    # a second filter on the same service registry shares the family
    await run({"metrics": {"datapoint": ["true"]}}, Signal.METRICS, sdk_metrics(), telemetry)
    assert sample("otelcol_processor_filter_datapoints_filtered_total", {"filter": "filter/t"}) == 5


# -- error modes -----------------------------------------------------------------------------

FAILING = 'Substring(name, 0, 100) == "x"'


async def test_ignore_logs_and_treats_the_condition_as_false(caplog: pytest.LogCaptureFixture) -> None:
    message = traces_message([({"r": "a"}, [["x", "y"]])])
    with caplog.at_level(logging.WARNING, "test.filter"):
        out = await run({"traces": {"span": [FAILING, 'name == "y"']}}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[["x"]]]
    assert len(caplog.records) == 1
    assert "failed on 2 item(s)" in caplog.text and "invalid range for substring" in caplog.text


async def test_silent_does_not_log(caplog: pytest.LogCaptureFixture) -> None:
    message = traces_message([({"r": "a"}, [["x", "y"]])])
    with caplog.at_level(logging.DEBUG, "test.filter"):
        out = await run({"error_mode": "silent", "traces": {"span": [FAILING, 'name == "y"']}}, Signal.TRACES, message)
    assert out is not None and layout_of(out.message) == [[["x"]]]
    assert not caplog.records


async def test_propagate_refuses_the_request() -> None:
    message = traces_message([({"r": "a"}, [["x", "y"]])])
    proc, sink = make({"error_mode": "propagate", "traces": {"span": ['name == "y"', FAILING]}}, Signal.TRACES)
    payload = Payload.from_bytes(Signal.TRACES, message.SerializeToString())
    with pytest.raises(PermanentError) as info:
        await proc.consume(payload)
    assert "invalid range for substring" in str(info.value)
    assert not sink.got
    assert payload.has_raw  # the request was left as it came


async def test_a_group_error_mode_overrides_the_processor_one(caplog: pytest.LogCaptureFixture) -> None:
    message = sdk_logs()
    config = {
        "error_mode": "propagate",
        "log_conditions": [
            {"error_mode": "silent", "conditions": ["Substring(log.body, 0, 1000) == nil"]},
            {"conditions": ['log.severity_text == "DEBUG"']},
        ],
    }
    with caplog.at_level(logging.DEBUG, "test.filter"):
        out = await run(config, Signal.LOGS, message)
    assert out is not None and out.items == 3
    assert not caplog.records
    config["log_conditions"][0]["error_mode"] = "propagate"  # type: ignore[index]
    config["error_mode"] = "ignore"
    with pytest.raises(PermanentError):
        await run(config, Signal.LOGS, message)


# -- the byte prefilter ----------------------------------------------------------------------


async def test_prefilter_agrees_with_plain_evaluation() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(attrs({"container.name": "app_container_1"}))  # in the resource only
    ss = rs.scope_spans.add()
    cases: list[dict[str, Any]] = [
        {"container.name": "app_container_1"},  # matches
        {"other": "app_container_1"},  # the literal, under another key
        {"container.name": "app_container_10"},  # the literal as a prefix
        {"container.name": 7},
        {},
    ]
    for i, a in enumerate(cases):
        sp = ss.spans.add(name=f"s{i}")
        sp.attributes.extend(attrs(a))
    ss2 = rs.scope_spans.add()
    ss2.spans.add(name="t").attributes.extend(attrs({"container.name": "app_container_1"}))
    config = {"traces": {"span": ['attributes["container.name"] == "app_container_1"']}}
    out = await run(config, Signal.TRACES, req)
    assert out is not None and layout_of(out.message) == [[["s1", "s2", "s3", "s4"]]]
    # The same on a request that a previous processor changed (no received bytes).
    proc, sink = make(config, Signal.TRACES)
    copy = ExportTraceServiceRequest()
    copy.CopyFrom(req)
    payload = Payload.from_message(Signal.TRACES, copy)
    assert not payload.has_raw
    await proc.consume(payload)
    assert layout_of(sink.got[0].message) == [[["s1", "s2", "s3", "s4"]]]
    # != is the prefilter's other side
    out = await run({"traces": {"span": ['attributes["container.name"] != "app_container_1"']}}, Signal.TRACES, req)
    assert out is not None and layout_of(out.message) == [[["s0"], ["t"]]]


# -- in a pipeline ---------------------------------------------------------------------------


async def test_in_pipelines_sharing_a_receiver() -> None:
    from collector.config import parse_config
    from collector.graph import build_graph
    from collector.registry import Registry, builtin_factories
    from tests.support.components import factories

    registry = Registry([*factories(), *[f for f in builtin_factories() if f.type == "filter"]])
    config = parse_config(
        {
            "receivers": {"testrecv": None},
            "processors": {
                "filter/health": {"traces": {"span": ['attributes["http.route"] == "/healthz"']}},
                "filter/db": {"trace_conditions": ['span.kind == SPAN_KIND_CLIENT']},
            },
            "exporters": {"testsink/all": None, "testsink/filtered": None},
            "service": {
                "pipelines": {
                    "traces/all": {"receivers": ["testrecv"], "exporters": ["testsink/all"]},
                    "traces/filtered": {"receivers": ["testrecv"], "processors": ["filter/health", "filter/db"], "exporters": ["testsink/filtered"]},
                }
            },
        },
        registry,
    )
    graph = build_graph(config, Telemetry(), registry)
    receiver = graph.receivers[ComponentID("testrecv")]
    message, _ = sdk_traces()
    await receiver.consumers[Signal.TRACES].consume(Payload.from_bytes(Signal.TRACES, message.SerializeToString()))  # type: ignore[attr-defined]
    everything = graph.exporters[ComponentID("testsink", "all")]
    filtered = graph.exporters[ComponentID("testsink", "filtered")]
    assert sorted(span_names(everything.got[0].message)) == ["GET /healthz"] * 3 + ["GET /users", "SELECT users"]  # type: ignore[attr-defined]
    assert span_names(filtered.got[0].message) == ["GET /users"]  # type: ignore[attr-defined]
