"""The otlp receiver on real sockets: OpenTelemetry SDK exporters over gRPC and HTTP, OTLP/JSON
written by hand, metadata, CORS, TLS, startup and shutdown."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import json
import logging
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import psutil
import pytest
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.consumer import ConsumeError, Consumer
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from receivers.otlp import OTLPReceiver, OTLPReceiverConfig
from receivers.otlp import factory as otlp_factory

RESOURCE = Resource.create({"service.name": "checkout", "deployment.environment.name": "test"})
GRPC_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


class Recorder:
    """A consumer that records what it gets, refuses with ``error`` when set, or waits for ``gate``."""

    mutates_data = False

    def __init__(self, error: ConsumeError | None = None) -> None:
        self.got: list[Payload] = []
        self.error = error
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def consume(self, payload: Payload) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        self.got.append(payload)

    def of(self, signal: Signal) -> list[Payload]:
        return [p for p in self.got if p.signal is signal]


@asynccontextmanager
async def running(
    protocols: Mapping[str, Any] | None = None,
    consumer: Consumer | None = None,
    *,
    signals: Sequence[Signal] = tuple(Signal),
    host: Host | None = None,
    telemetry: Telemetry | None = None,
    admission: Mapping[str, Any] | None = None,
) -> AsyncIterator[OTLPReceiver]:
    """An otlp receiver on ephemeral loopback ports, shut down on the way out."""
    if protocols is None:
        protocols = {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}
    config = OTLPReceiverConfig.model_validate({"protocols": protocols, "admission": admission or {}})
    settings = CreateSettings(ComponentID("otlp"), Kind.RECEIVER, telemetry or Telemetry(), logging.getLogger("appguard.receiver.otlp"))
    consumer = consumer or Recorder()
    receiver = otlp_factory.create(settings=settings, config=config, consumers={s: consumer for s in signals})
    await receiver.start(host or Host())
    try:
        yield receiver
    finally:
        await receiver.shutdown()


def grpc_call(port: int, signal: Signal, tls: bytes | None = None) -> tuple[grpc.aio.Channel, Any]:
    """A raw unary call sending bytes, as a load generator or a stock collector would."""
    target = f"127.0.0.1:{port}"
    if tls is not None:
        channel = grpc.aio.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=tls))
    else:
        channel = grpc.aio.insecure_channel(target)
    return channel, channel.unary_unary(GRPC_METHODS[signal], request_serializer=None, response_deserializer=None)


def sdk_spans() -> Sequence[ReadableSpan]:
    """A small trace made by the SDK: a server span with events, a link, an error child."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.checkout", "1.2.3")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={"http.request.method": "GET"}) as root:
        root.add_event("cache miss", {"key": "cart:42"})
        other = root.get_span_context()
        with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT, links=[Link(other, {"why": "test"})]) as child:
            child.set_status(Status(StatusCode.ERROR, "deadlock"))
            child.record_exception(RuntimeError("deadlock detected"))
    provider.shutdown()
    return memory.get_finished_spans()


def sdk_metrics() -> MetricsData:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("shop.checkout")
    meter.create_counter("orders").add(3, {"country": "fr"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/cart"})
    meter.create_up_down_counter("in_flight").add(-1)
    meter.create_gauge("temperature").set(21.5)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def sdk_logs() -> Sequence[ReadableLogRecord]:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("shop.checkout")
    logger.emit(LogRecord(body="payment declined", severity_number=SeverityNumber.ERROR, severity_text="ERROR", attributes={"order": 42}))
    logger.emit(LogRecord(body={"structured": ["yes", 1]}, severity_number=SeverityNumber.INFO))
    provider.shutdown()
    return memory.get_finished_logs()


async def send_with_sdk(kind: str, port: int, signal: Signal, data: Any, **kwargs: Any) -> Any:
    """Export ``data`` with the SDK's own OTLP exporter (blocking, so in a thread)."""
    if kind == "grpc":
        classes: dict[Signal, Any] = {Signal.TRACES: GrpcSpanExporter, Signal.METRICS: GrpcMetricExporter, Signal.LOGS: GrpcLogExporter}
        exporter = classes[signal](endpoint=f"localhost:{port}", insecure=True, timeout=5, **kwargs)
    else:
        classes = {Signal.TRACES: HttpSpanExporter, Signal.METRICS: HttpMetricExporter, Signal.LOGS: HttpLogExporter}
        exporter = classes[signal](endpoint=f"http://127.0.0.1:{port}/v1/{signal.value}", timeout=5, **kwargs)
    try:
        return await asyncio.to_thread(exporter.export, data)
    finally:
        exporter.shutdown()


def sample(telemetry: Telemetry, name: str, transport: str) -> float:
    return telemetry.registry.get_sample_value(name, {"receiver": "otlp", "transport": transport}) or 0.0


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_sdk_exporters_all_signals(transport: str) -> None:
    spans, metrics, logs = sdk_spans(), sdk_metrics(), sdk_logs()
    telemetry = Telemetry()
    recorder = Recorder()
    async with running(consumer=recorder, telemetry=telemetry) as receiver:
        port = receiver.grpc_port if transport == "grpc" else receiver.http_port
        assert port
        for signal, data in ((Signal.TRACES, spans), (Signal.METRICS, metrics), (Signal.LOGS, logs)):
            result = await send_with_sdk(transport, port, signal, data)
            assert result.name == "SUCCESS", signal
    expected = {Signal.TRACES: encode_spans(spans), Signal.METRICS: encode_metrics(metrics), Signal.LOGS: encode_logs(logs)}
    for signal, message in expected.items():
        [payload] = recorder.of(signal)
        assert payload.message == message
        # protobuf bytes travel on as they came, already counted
        assert payload.has_raw
        assert payload.items == {Signal.TRACES: 2, Signal.METRICS: 4, Signal.LOGS: 2}[signal]
        assert payload.client_address == "127.0.0.1"
        assert payload.metadata == {}
    assert sample(telemetry, "otelcol_receiver_accepted_spans_total", transport) == 2
    assert sample(telemetry, "otelcol_receiver_accepted_metric_points_total", transport) == 4
    assert sample(telemetry, "otelcol_receiver_accepted_log_records_total", transport) == 2


async def test_sdk_exporters_with_gzip() -> None:
    spans = sdk_spans()
    recorder = Recorder()
    async with running(consumer=recorder) as receiver:
        assert receiver.grpc_port and receiver.http_port
        grpc_result = await send_with_sdk("grpc", receiver.grpc_port, Signal.TRACES, spans, compression=grpc.Compression.Gzip)
        http_result = await send_with_sdk("http", receiver.http_port, Signal.TRACES, spans, compression=HttpCompression.Gzip)
    assert (grpc_result.name, http_result.name) == ("SUCCESS", "SUCCESS")
    assert [p.message for p in recorder.got] == [encode_spans(spans)] * 2


TRACE_ID = "5b8efff798038103d269b633813fc60c"
SPAN_ID = "eee19b7ec3c1b174"

JSON_BODIES = {
    # camelCase keys, string int64s, enum names, an unknown field
    Signal.TRACES: {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "browser"},
                        "spans": [
                            {
                                "traceId": TRACE_ID.upper(),
                                "spanId": SPAN_ID,
                                "name": "click",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000500000000",
                                "status": {"code": "STATUS_CODE_OK"},
                                "someNewField": True,
                            }
                        ],
                    }
                ],
            }
        ]
    },
    # snake_case keys and numbers for int64s
    Signal.METRICS: {
        "resource_metrics": [
            {
                "scope_metrics": [
                    {
                        "metrics": [
                            {
                                "name": "clicks",
                                "sum": {
                                    "aggregation_temporality": 2,
                                    "is_monotonic": True,
                                    "data_points": [{"as_int": 5, "time_unix_nano": 1700000000000000000, "exemplars": [{"as_int": "1", "trace_id": TRACE_ID, "span_id": SPAN_ID}]}],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    },
    Signal.LOGS: {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1700000000000000000", "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "TypeError: x is undefined"}, "traceId": TRACE_ID, "spanId": SPAN_ID},
                            {"severity_number": "SEVERITY_NUMBER_WARN", "body": {"stringValue": "slow"}},
                        ]
                    }
                ]
            }
        ]
    },
}


def expected_json_messages() -> dict[Signal, Any]:
    traces = ExportTraceServiceRequest()
    rs = traces.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "web"
    ss = rs.scope_spans.add()
    ss.scope.name = "browser"
    span = ss.spans.add(trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID), name="click", kind=ProtoSpan.SPAN_KIND_CLIENT)
    span.start_time_unix_nano, span.end_time_unix_nano = 1700000000000000000, 1700000000500000000
    span.status.code = ProtoStatus.STATUS_CODE_OK
    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="clicks")
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    metric.sum.is_monotonic = True
    point = metric.sum.data_points.add(as_int=5, time_unix_nano=1700000000000000000)
    point.exemplars.add(as_int=1, trace_id=bytes.fromhex(TRACE_ID), span_id=bytes.fromhex(SPAN_ID))
    logs = ExportLogsServiceRequest()
    scope = logs.resource_logs.add().scope_logs.add()
    rec = scope.log_records.add(time_unix_nano=1700000000000000000, severity_number=17, severity_text="ERROR")
    rec.body.string_value = "TypeError: x is undefined"
    rec.trace_id, rec.span_id = bytes.fromhex(TRACE_ID), bytes.fromhex(SPAN_ID)
    warn = scope.log_records.add(severity_number=13)
    warn.body.string_value = "slow"
    return {Signal.TRACES: traces, Signal.METRICS: metrics, Signal.LOGS: logs}


async def test_http_json_written_by_hand() -> None:
    recorder = Recorder()
    async with running({"http": {"endpoint": "127.0.0.1:0"}}, recorder) as receiver, aiohttp.ClientSession() as session:
        for signal, doc in JSON_BODIES.items():
            url = f"http://127.0.0.1:{receiver.http_port}/v1/{signal.value}"
            async with session.post(url, data=json.dumps(doc), headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/json"
                assert json.loads(await resp.read()) == {}
    expected = expected_json_messages()
    for signal, message in expected.items():
        [payload] = recorder.of(signal)
        assert payload.message == message
        # decoded from JSON: serialized again only when an OTLP exporter needs the bytes
        assert not payload.has_raw
        assert payload.to_bytes() == message.SerializeToString()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw", "zlib", "zstd", "identity", ""])
async def test_http_content_encodings(encoding: str) -> None:
    message = expected_json_messages()[Signal.TRACES]
    body = message.SerializeToString()
    compressed = {
        "gzip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "zlib": zlib.compress(body),
        "deflate-raw": zlib.compress(body, wbits=-15),
        "zstd": zstandard.ZstdCompressor().compress(body),
    }.get(encoding, body)
    header = {"deflate-raw": "deflate"}.get(encoding, encoding)
    recorder = Recorder()
    async with running({"http": {"endpoint": "127.0.0.1:0"}}, recorder) as receiver, aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {"Content-Type": "application/x-protobuf", **({"Content-Encoding": header} if header else {})}
        async with session.post(f"http://127.0.0.1:{receiver.http_port}/v1/traces", data=compressed, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/x-protobuf"
            assert ExportTraceServiceResponse.FromString(await resp.read()) == ExportTraceServiceResponse()
    [payload] = recorder.got
    assert payload.message == message
    assert payload.to_bytes() == body


async def test_empty_requests_succeed_without_reaching_the_pipeline() -> None:
    recorder = Recorder()
    async with running(consumer=recorder) as receiver, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{receiver.http_port}/v1/logs"
        for content_type, body in (("application/json", b""), ("application/json", b"{}"), ("application/x-protobuf", b"")):
            async with session.post(url, data=body, headers={"Content-Type": content_type}) as resp:
                assert resp.status == 200
        # resources without any span are no data either
        empty_scope = ExportTraceServiceRequest()
        empty_scope.resource_spans.add().scope_spans.add()
        assert receiver.grpc_port
        channel, call = grpc_call(receiver.grpc_port, Signal.TRACES)
        async with channel:
            assert await call(b"") == b""
            assert await call(empty_scope.SerializeToString()) == b""
    assert recorder.got == []


async def test_metadata_and_client_address() -> None:
    recorder = Recorder()
    protocols = {"grpc": {"endpoint": "127.0.0.1:0", "include_metadata": True}, "http": {"endpoint": "127.0.0.1:0", "include_metadata": True}}
    body = expected_json_messages()[Signal.TRACES].SerializeToString()
    async with running(protocols, recorder) as receiver, aiohttp.ClientSession() as session:
        assert receiver.grpc_port
        channel, call = grpc_call(receiver.grpc_port, Signal.TRACES)
        async with channel:
            await call(body, metadata=(("x-tenant", "acme"), ("x-tenant", "beta"), ("trace-bin", b"\x00\x01")))
        headers = [("Content-Type", "application/x-protobuf"), ("X-Tenant", "acme"), ("X-Tenant", "beta")]
        async with session.post(f"http://127.0.0.1:{receiver.http_port}/v1/traces", data=body, headers=headers) as resp:
            assert resp.status == 200
    from_grpc, from_http = recorder.got
    assert from_grpc.metadata["x-tenant"] == ("acme", "beta")
    assert "trace-bin" not in from_grpc.metadata
    assert from_http.metadata["x-tenant"] == ("acme", "beta")
    assert from_http.metadata["content-type"] == ("application/x-protobuf",)
    assert from_grpc.client_address == from_http.client_address == "127.0.0.1"


async def test_only_signals_with_pipelines_are_served() -> None:
    recorder = Recorder()
    body = expected_json_messages()[Signal.LOGS].SerializeToString()
    async with running(consumer=recorder, signals=[Signal.TRACES]) as receiver, aiohttp.ClientSession() as session:
        assert receiver.grpc_port
        channel, call = grpc_call(receiver.grpc_port, Signal.LOGS)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(body)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with session.post(f"http://127.0.0.1:{receiver.http_port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}) as resp:
            assert resp.status == 404
    assert recorder.got == []


async def test_custom_url_paths() -> None:
    recorder = Recorder()
    protocols = {"http": {"endpoint": "127.0.0.1:0", "traces_url_path": "traces", "logs_url_path": "/ingest/logs"}}
    async with running(protocols, recorder) as receiver, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{receiver.http_port}"
        for path, status in (("/traces", 200), ("/ingest/logs", 200), ("/v1/traces", 404), ("/v1/metrics", 200)):
            async with session.post(base + path, data=b"{}", headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == status, path


async def test_startup_log_lines_and_loopback_binding(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appguard.receiver.otlp")
    protocols = {"grpc": {"endpoint": "localhost:0"}, "http": {"endpoint": "localhost:0"}}
    async with running(protocols) as receiver:
        lines = [r.getMessage() for r in caplog.records if r.name == "appguard.receiver.otlp"]
        assert lines == [f"Starting GRPC server on localhost:{receiver.grpc_port}", f"Starting HTTP server on localhost:{receiver.http_port}"]
        ports = {receiver.grpc_port, receiver.http_port}
        listening = [c for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
        assert {c.laddr.port for c in listening} == ports
        for c in listening:
            ip = ipaddress.ip_address(c.laddr.ip)
            # gRPC listens on ::ffff:127.0.0.1, IPv4 loopback seen from an IPv6 socket
            assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, c.laddr


async def test_cors() -> None:
    protocols = {"http": {"endpoint": "127.0.0.1:0", "cors": {"allowed_origins": ["https://*.example.com", "http://app.test"], "allowed_headers": ["X-Session"], "max_age": 600}}}
    async with running(protocols) as receiver, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{receiver.http_port}/v1/traces"
        preflight = {"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, x-session"}
        async with session.options(url, headers=preflight) as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
            assert resp.headers["Access-Control-Allow-Methods"] == "POST"
            assert resp.headers["Access-Control-Allow-Headers"] == "content-type, x-session"
            assert resp.headers["Access-Control-Max-Age"] == "600"
        for refused in ({**preflight, "Origin": "https://evil.test"}, {**preflight, "Access-Control-Request-Headers": "x-other"}):
            async with session.options(url, headers=refused) as resp:
                assert resp.status == 204
                assert "Access-Control-Allow-Origin" not in resp.headers
        async with session.post(url, data=b"{}", headers={"Content-Type": "application/json", "Origin": "http://app.test"}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "http://app.test"
            assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        async with session.post(url, data=b"{}", headers={"Content-Type": "application/json", "Origin": "https://example.com.evil"}) as resp:
            assert resp.status == 200
            assert "Access-Control-Allow-Origin" not in resp.headers


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_file, key_file


async def test_tls_on_both_transports(tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    tls = {"cert_file": str(cert_file), "key_file": str(key_file)}
    protocols = {"grpc": {"endpoint": "127.0.0.1:0", "tls": tls}, "http": {"endpoint": "127.0.0.1:0", "tls": tls}}
    recorder = Recorder()
    body = expected_json_messages()[Signal.TRACES].SerializeToString()
    async with running(protocols, recorder) as receiver:
        assert receiver.grpc_port
        channel, call = grpc_call(receiver.grpc_port, Signal.TRACES, tls=cert_file.read_bytes())
        async with channel:
            assert await call(body) == b""
        client_ctx = ssl.create_default_context(cafile=str(cert_file))
        async with aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{receiver.http_port}/v1/traces"
            async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}, ssl=client_ctx) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url.replace("https", "http"), data=body, headers={"Content-Type": "application/x-protobuf"}) as resp:
                    await resp.read()
    assert len(recorder.got) == 2


async def test_shutdown_lets_requests_in_flight_finish() -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    body = expected_json_messages()[Signal.TRACES].SerializeToString()
    async with running(consumer=recorder) as receiver, aiohttp.ClientSession() as session:
        assert receiver.grpc_port and receiver.http_port
        http_port = receiver.http_port
        channel, call = grpc_call(receiver.grpc_port, Signal.TRACES)
        async with channel:

            async def post() -> int:
                async with session.post(f"http://127.0.0.1:{http_port}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}) as resp:
                    return resp.status

            grpc_request = asyncio.ensure_future(call(body))
            http_request = asyncio.ensure_future(post())
            await asyncio.sleep(0.3)  # both requests are inside the pipeline, held by the gate
            assert recorder.entered.is_set() and not grpc_request.done() and not http_request.done()
            stopping = asyncio.create_task(receiver.shutdown())
            await asyncio.sleep(0.2)
            # no new connection is taken while the old requests finish
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as other:
                    await other.post(f"http://127.0.0.1:{http_port}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"})
            assert not stopping.done()
            recorder.gate.set()
            assert await grpc_request == b""
            assert await http_request == 200
            await stopping
    assert len(recorder.got) == 2


async def test_failed_http_start_stops_grpc() -> None:
    # SO_REUSEPORT lets worker processes share a port, but not with a plain listener
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        blocked = f"127.0.0.1:{plain.getsockname()[1]}"
        config = OTLPReceiverConfig.model_validate({"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": blocked}}})
        settings = CreateSettings(ComponentID("otlp"), Kind.RECEIVER, Telemetry())
        receiver = otlp_factory.create(settings=settings, config=config, consumers={Signal.TRACES: Recorder()})
        with pytest.raises(OSError):
            await receiver.start(Host())
    assert receiver.grpc_port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", receiver.grpc_port), timeout=2).close()


async def test_grpc_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "otlp.sock"
    recorder = Recorder()
    body = expected_json_messages()[Signal.TRACES].SerializeToString()
    async with running({"grpc": {"transport": "unix", "endpoint": str(path)}}, recorder) as receiver:
        assert receiver.grpc_port is None and receiver.http_port is None
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            call = channel.unary_unary(GRPC_METHODS[Signal.TRACES], request_serializer=None, response_deserializer=None)
            assert await call(body) == b""
    [payload] = recorder.got
    assert payload.to_bytes() == body


async def test_response_headers_and_no_keep_alive() -> None:
    protocols = {"http": {"endpoint": "127.0.0.1:0", "response_headers": {"X-Served-By": "appguard"}, "keep_alives_enabled": False}}
    async with running(protocols) as receiver, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{receiver.http_port}/v1/traces"
        for body, status in ((b"{}", 200), (b"{", 400)):
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == status
                assert resp.headers["X-Served-By"] == "appguard"
                assert resp.headers["Connection"] == "close"
