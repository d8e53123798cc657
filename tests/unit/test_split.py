"""Merging and splitting export requests (collector/split.py) on data the real SDK encodes.

The builders here make OTLP requests with the OpenTelemetry SDK and its OTLP encoders; the
batch processor's tests use them too.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.pdata import ExportRequest, Payload, Signal, count_items
from collector.split import merge_payloads, merge_requests, resources_of, split_request

# {service.name: {scope name: items}}
Layout = dict[str, dict[str, int]]


def trace_request(layout: Layout, tag: str = "") -> ExportRequest:
    """Spans recorded by the SDK, one resource per service and one scope per tracer."""
    spans: list[Any] = []
    for service, scopes in layout.items():
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        for scope, n in scopes.items():
            tracer = provider.get_tracer(scope)
            for i in range(n):
                with tracer.start_as_current_span(f"{tag}{scope}-{i}"):
                    pass
        spans += exporter.get_finished_spans()
        provider.shutdown()
    return encode_spans(spans)


def log_request(layout: Layout, tag: str = "") -> ExportRequest:
    """Log records emitted through the SDK, one resource per service, one scope per logger."""
    records: list[Any] = []
    for service, scopes in layout.items():
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=Resource.create({"service.name": service}))
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        for scope, n in scopes.items():
            logger = provider.get_logger(scope)
            for i in range(n):
                logger.emit(body=f"{tag}{scope}-{i}", severity_text="INFO")
        records += exporter.get_finished_logs()
        provider.shutdown()
    return encode_logs(records)


def metric_request(layout: Layout) -> ExportRequest:
    """One counter per scope with ``n`` data points (attribute sets), per service."""
    merged: ExportRequest | None = None
    for service, scopes in layout.items():
        reader = InMemoryMetricReader()
        provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader])
        for scope, n in scopes.items():
            counter = provider.get_meter(scope).create_counter(f"{scope}.requests")
            for i in range(n):
                counter.add(1, {"point": i})
        data = reader.get_metrics_data()
        provider.shutdown()
        assert data is not None
        request = encode_metrics(data)
        merged = request if merged is None else merge_requests(Signal.METRICS, [merged, request])
    assert merged is not None
    return merged


BUILDERS = {Signal.TRACES: trace_request, Signal.LOGS: log_request, Signal.METRICS: metric_request}


def flatten(signal: Signal, message: ExportRequest) -> list[tuple[str, str, str]]:
    """(service, scope, item) for every item in order: what must survive merging and splitting."""
    out = []
    for entry in resources_of(signal, message):
        service = next(a.value.string_value for a in entry.resource.attributes if a.key == "service.name")
        for scope in getattr(
            entry, {"traces": "scope_spans", "logs": "scope_logs", "metrics": "scope_metrics"}[signal.value]
        ):
            if signal is Signal.TRACES:
                out += [(service, scope.scope.name, s.name) for s in scope.spans]
            elif signal is Signal.LOGS:
                out += [(service, scope.scope.name, r.body.string_value) for r in scope.log_records]
            else:
                for metric in scope.metrics:
                    points = getattr(metric, metric.WhichOneof("data")).data_points
                    out += [
                        (service, scope.scope.name, f"{metric.name}#{p.attributes[0].value.int_value}") for p in points
                    ]
    return out


LAYOUT: Layout = {"checkout": {"http": 3, "db": 2}, "cart": {"http": 10}, "auth": {"a": 1, "b": 1, "c": 1}}


def test_merge_requests_keeps_every_resource_in_order() -> None:
    for signal, build in BUILDERS.items():
        first, second = build({"a": {"s1": 2}, "b": {"s2": 1}}), build({"c": {"s3": 4}})
        merged = merge_requests(signal, [first, second])
        assert len(resources_of(signal, merged)) == 3
        assert flatten(signal, merged) == flatten(signal, first) + flatten(signal, second)
        assert len(resources_of(signal, first)) == 2  # inputs are unchanged


def test_merge_payloads_joins_bytes_and_equals_message_merge() -> None:
    for signal, build in BUILDERS.items():
        one, two = build({"a": {"s": 2}}), build({"b": {"s": 3}, "c": {"t": 1}})
        received = Payload.from_bytes(signal, one.SerializeToString())
        built = Payload.from_message(signal, two)  # no bytes attached: serialized for the merge
        merged = merge_payloads(signal, [received, built], metadata={"tenant": ("x",)})
        assert merged.has_raw
        assert merged.items == 6 == count_items(signal, merged.message)
        assert merged.message == merge_requests(signal, [one, two])
        assert merged.metadata == {"tenant": ("x",)}
        assert merged is not received and merged.client_address is None


def test_split_keeps_resources_and_scopes() -> None:
    request = trace_request(LAYOUT, "t")
    parts = split_request(Signal.TRACES, request, 4)
    sizes = [count_items(Signal.TRACES, p) for p in parts]
    assert sizes == [3, 4, 4, 4, 3]
    # Whole scopes where they fit: checkout/http alone, checkout/db moves to the next part.
    first = parts[0].resource_spans  # type: ignore[union-attr]
    assert [[s.scope.name for s in r.scope_spans] for r in first] == [["http"]]
    # Only cart/http (10 spans) is sliced, its first slice filling the 2 places left.
    second = parts[1].resource_spans  # type: ignore[union-attr]
    assert [len(s.spans) for r in second for s in r.scope_spans] == [2, 2]
    # Every item kept its resource (with all its attributes) and scope, in order.
    assert [x for p in parts for x in flatten(Signal.TRACES, p)] == flatten(Signal.TRACES, request)
    original = {r.resource.SerializeToString() for r in request.resource_spans}  # type: ignore[union-attr]
    assert {r.resource.SerializeToString() for p in parts for r in p.resource_spans} == original  # type: ignore[union-attr]


def test_split_small_or_unlimited_returns_the_message_itself() -> None:
    request = trace_request({"a": {"s": 3}})
    assert split_request(Signal.TRACES, request, 0)[0] is request
    assert split_request(Signal.TRACES, request, 3)[0] is request


def test_split_metrics_slices_a_metric_by_points() -> None:
    request = metric_request({"svc": {"big": 7, "small": 2}})
    parts = split_request(Signal.METRICS, request, 3)
    assert [count_items(Signal.METRICS, p) for p in parts] == [3, 3, 3]
    assert [x for p in parts for x in flatten(Signal.METRICS, p)] == flatten(Signal.METRICS, request)
    original = request.resource_metrics[0].scope_metrics[0].metrics[0]  # type: ignore[union-attr]
    for part in parts[:2]:
        metric = part.resource_metrics[0].scope_metrics[0].metrics[0]  # type: ignore[union-attr]
        assert metric.name == original.name and metric.unit == original.unit
        assert metric.sum.is_monotonic == original.sum.is_monotonic
        assert metric.sum.aggregation_temporality == original.sum.aggregation_temporality


def test_split_logs() -> None:
    request = log_request(LAYOUT, "l")
    parts = split_request(Signal.LOGS, request, 5)
    assert all(count_items(Signal.LOGS, p) <= 5 for p in parts)
    assert [x for p in parts for x in flatten(Signal.LOGS, p)] == flatten(Signal.LOGS, request)


def test_split_keeps_a_resource_without_items() -> None:
    request = ExportTraceServiceRequest()
    request.MergeFrom(trace_request({"a": {"s": 3}}))  # type: ignore[arg-type]
    empty = request.resource_spans.add()
    empty.resource.attributes.add(key="service.name").value.string_value = "idle"
    request.MergeFrom(trace_request({"b": {"s": 3}}))  # type: ignore[arg-type]
    parts = split_request(Signal.TRACES, request, 4)
    services = [
        next(a.value.string_value for a in r.resource.attributes if a.key == "service.name")
        for p in parts
        for r in p.resource_spans  # type: ignore[union-attr]
    ]
    assert services == ["a", "idle", "b"]


def _synthetic(sizes: list[list[int]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for i, scopes in enumerate(sizes):
        entry = request.resource_spans.add()
        entry.resource.attributes.add(key="service.name").value.string_value = f"r{i}"
        for j, n in enumerate(scopes):
            scope = entry.scope_spans.add()
            scope.scope.name = f"s{j}"
            for k in range(n):
                scope.spans.add(name=str(k))
    return request


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 12), min_size=0, max_size=4), min_size=1, max_size=5),
    max_items=st.integers(1, 15),
)
def test_split_property(sizes: list[list[int]], max_items: int) -> None:
    request = _synthetic(sizes)
    parts = split_request(Signal.TRACES, request, max_items)
    counts = [count_items(Signal.TRACES, p) for p in parts]
    assert all(c <= max_items for c in counts)
    assert sum(counts) == count_items(Signal.TRACES, request)
    assert [x for p in parts for x in flatten(Signal.TRACES, p)] == flatten(Signal.TRACES, request)
    # A scope is only cut when it is larger than a part.
    pieces: dict[tuple[str, str], int] = {}
    for p in parts:
        for r in p.resource_spans:  # type: ignore[union-attr]
            for s in r.scope_spans:
                key = (r.resource.attributes[0].value.string_value, s.scope.name)
                pieces[key] = pieces.get(key, 0) + 1
    for i, scopes in enumerate(sizes):
        for j, n in enumerate(scopes):
            if n <= max_items:
                assert pieces.get((f"r{i}", f"s{j}"), 0) <= 1
