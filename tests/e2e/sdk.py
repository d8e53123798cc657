"""The real OpenTelemetry Python SDK, set up as an application would, exporting to AppGuard.

Each helper returns what the SDK produced (through an in-memory exporter beside the OTLP one)
so a test can check that every item arrived unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

Transport = Literal["grpc", "http"]


def span_exporter(transport: Transport, port: int, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as G

        return G(endpoint=f"127.0.0.1:{port}", insecure=True, headers=headers, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as H

    return H(endpoint=f"http://127.0.0.1:{port}/v1/traces", headers=headers, timeout=10)


def log_exporter(transport: Transport, port: int):  # type: ignore[no-untyped-def]
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as G

        return G(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as H

    return H(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=10)


def metric_exporter(transport: Transport, port: int):  # type: ignore[no-untyped-def]
    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as G

        return G(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as H

    return H(endpoint=f"http://127.0.0.1:{port}/v1/metrics", timeout=10)


def send_spans(transport: Transport, port: int, n: int, *, service: str = "shop", tag: str = "") -> list[ReadableSpan]:
    """Make ``n`` spans (some with events, errors, links) and export each synchronously."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter(transport, port)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e.tests", "1.0")
    for i in range(n):
        with tracer.start_as_current_span(f"request {tag}{i}", attributes={"i": i, "tag": tag, "ratio": i / 3, "ok": i % 2 == 0}) as span:
            with tracer.start_as_current_span("db query", attributes={"db.statement": f"SELECT {i}"}):
                pass
            if i % 3 == 0:
                try:
                    raise ValueError(f"bad item {i}")
                except ValueError as exc:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, str(exc)))
    provider.shutdown()
    return list(memory.get_finished_spans())


def send_logs(transport: Transport, port: int, n: int, *, service: str = "shop", level: int = 30) -> int:
    """Emit ``n`` log records at ``level`` (WARNING) through the SDK logging handler; returns n."""
    import logging

    from opentelemetry.sdk._logs import LoggingHandler

    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter(transport, port)))
    logger = logging.getLogger(f"e2e.{transport}.{port}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    for i in range(n):
        logger.log(level, "log line %d via %s", i, transport, extra={"item": i})
    logger.removeHandler(handler)
    provider.shutdown()
    return n


def send_metrics(transport: Transport, port: int, *, service: str = "shop") -> InMemoryMetricReader:
    """Record a counter, an up-down counter, a histogram and a gauge; export once."""
    memory = InMemoryMetricReader()
    reader = PeriodicExportingMetricReader(metric_exporter(transport, port), export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": service}), metric_readers=[reader, memory])
    meter = provider.get_meter("e2e.meter", "2.0")
    counter = meter.create_counter("orders", unit="1", description="orders placed")
    updown = meter.create_up_down_counter("queue.depth")
    hist = meter.create_histogram("latency", unit="ms")
    meter.create_observable_gauge("temperature", callbacks=[lambda _opts: [__import__("opentelemetry.metrics", fromlist=["Observation"]).Observation(21.5, {"room": "a"})]])
    for i in range(10):
        counter.add(i + 1, {"shop": "eu" if i % 2 else "us"})
        updown.add(1 if i % 3 else -1)
        hist.record(i * 12.5, {"route": "/api"})
    provider.force_flush()
    provider.shutdown()
    return memory


def fail(
    service: str,
    environment: str,
    grpc_port: int,
    call: Callable[[], object],
    times: int = 1,
    *,
    version: str = "1.0.0",
    route: str = "GET /cart",
) -> None:
    """An application failing: ``times`` requests of ``service`` whose handler runs ``call``; each
    exception is recorded on the request's span (``user.id`` u0, u1...), sent over OTLP/gRPC."""
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "service.version": version, "deployment.environment.name": environment}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(span_exporter("grpc", grpc_port)))
    tracer = provider.get_tracer("app")
    for n in range(times):
        with tracer.start_as_current_span(route, attributes={"user.id": f"u{n}"}) as span:
            try:
                call()
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
    provider.shutdown()
