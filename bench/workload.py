"""Pre-built OTLP requests for the benchmarks: realistic spans, log records and data points."""

from __future__ import annotations

import os
import random
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SEVERITY_NUMBER_INFO
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.pdata import ExportRequest, Signal


def _resource(target, service: str) -> None:  # type: ignore[no-untyped-def]
    for key, value in (("service.name", service), ("service.version", "1.4.2"), ("deployment.environment.name", "prod"), ("host.name", "web-1")):
        kv = target.resource.attributes.add()
        kv.key = key
        kv.value.string_value = value


def traces_request(spans: int = 512, *, exception_ratio: float = 0.0, seed: int = 1) -> ExportTraceServiceRequest:
    """One request of ``spans`` spans (one resource, one scope), 8 attributes each."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _resource(rs, "checkout")
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.flask"
    ss.scope.version = "0.48b0"
    trace_id = os.urandom(16)
    for i in range(spans):
        span = ss.spans.add()
        span.trace_id = trace_id if i % 16 else os.urandom(16)
        span.span_id = os.urandom(8)
        span.parent_span_id = os.urandom(8)
        span.name = rnd.choice(["GET /api/items", "POST /api/cart", "SELECT items", "redis GET"])
        span.kind = Span.SPAN_KIND_SERVER
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + i * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + rnd.randint(10_000, 9_000_000)
        for key, value in (
            ("http.request.method", "GET"),
            ("url.path", f"/api/items/{i}"),
            ("http.response.status_code", 200),
            ("server.address", "shop.example.com"),
            ("network.protocol.version", "1.1"),
            ("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("client.address", "10.1.2.3"),
            ("thread.id", 12),
        ):
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
        if exception_ratio and rnd.random() < exception_ratio:
            span.status.code = Status.STATUS_CODE_ERROR
            ev = span.events.add()
            ev.name = "exception"
            ev.time_unix_nano = span.end_time_unix_nano
            for key, value in (
                ("exception.type", "ValueError"),
                ("exception.message", f"invalid item id {i}"),
                (
                    "exception.stacktrace",
                    'Traceback (most recent call last):\n  File "/app/shop/views.py", line 42, in get_item\n'
                    "    item = load(item_id)\n  File \"/app/shop/store.py\", line 17, in load\n"
                    f"    raise ValueError(f\"invalid item id {{item_id}}\")\nValueError: invalid item id {i}\n",
                ),
            ):
                kv = ev.attributes.add()
                kv.key = key
                kv.value.string_value = value
    return req


def logs_request(records: int = 512) -> ExportLogsServiceRequest:
    """One request of ``records`` log records with 4 attributes each."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    _resource(rl, "checkout")
    sl = rl.scope_logs.add()
    sl.scope.name = "checkout.logger"
    for i in range(records):
        rec = sl.log_records.add()
        rec.time_unix_nano = 1_700_000_000_000_000_000 + i
        rec.observed_time_unix_nano = rec.time_unix_nano
        rec.severity_number = SEVERITY_NUMBER_INFO
        rec.severity_text = "INFO"
        rec.body.string_value = f"served item {i} to user {i % 97} in {i % 50} ms"
        rec.trace_id = os.urandom(16)
        rec.span_id = os.urandom(8)
        for key, value in (("code.function", "get_item"), ("code.lineno", "42"), ("user.id", str(i % 97)), ("http.route", "/api/items/:id")):
            kv = rec.attributes.add()
            kv.key = key
            kv.value.string_value = value
    return req


def metrics_request(points: int = 512) -> ExportMetricsServiceRequest:
    """One request with ``points`` data points: gauges, sums and histograms mixed."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    _resource(rm, "checkout")
    sm = rm.scope_metrics.add()
    sm.scope.name = "checkout.metrics"
    per_metric = 16
    for m in range(points // per_metric):
        metric = sm.metrics.add()
        metric.name = f"app.metric_{m}"
        kind = m % 3
        for p in range(per_metric):
            dp: Any
            if kind == 0:
                metric.unit = "1"
                dp = metric.gauge.data_points.add()
                dp.as_double = p * 1.5
            elif kind == 1:
                metric.unit = "By"
                metric.sum.is_monotonic = True
                metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
                dp = metric.sum.data_points.add()
                dp.as_int = p * 10
            else:
                metric.unit = "s"
                metric.histogram.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
                dp = metric.histogram.data_points.add()
                dp.count = 10
                dp.sum = 3.5
                dp.explicit_bounds.extend([0.005, 0.01, 0.05, 0.1, 0.5, 1, 5])
                dp.bucket_counts.extend([1, 1, 2, 2, 2, 1, 1, 0])
            dp.time_unix_nano = 1_700_000_000_000_000_000
            dp.start_time_unix_nano = 1_699_999_000_000_000_000
            for key, value in (("http.route", f"/api/{p}"), ("http.response.status_code", "200")):
                kv = dp.attributes.add()
                kv.key = key
                kv.value.string_value = value
    return req


def request_for(signal: Signal, items: int = 512) -> ExportRequest:
    """A request of the given signal with ``items`` items."""
    if signal is Signal.TRACES:
        return traces_request(items)
    if signal is Signal.LOGS:
        return logs_request(items)
    return metrics_request(items)
