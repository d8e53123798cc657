"""The ``otlp`` (gRPC) and ``otlphttp`` exporters against a real OTLP server (the test sink)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.config import parse_config
from collector.confmap import ConfigError
from collector.exporterhelper import ExporterBase
from collector.graph import build_graph
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.otlp import OTLPGrpcExporter, OTLPGrpcExporterConfig
from exporters.otlphttp import OTLPHttpExporter, OTLPHttpExporterConfig
from extensions.bearertokenauth import BearerTokenAuth, BearerTokenAuthConfig
from extensions.file_storage import FileStorage, FileStorageConfig
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink
from tests.unit.test_exporterhelper import FAST_RETRY, span_names, traces, until

ALL = frozenset(Signal)
REPO = Path(__file__).resolve().parents[2]


def metrics_payload(points: int) -> Payload:
    req = ExportMetricsServiceRequest()
    gauge = req.resource_metrics.add().scope_metrics.add().metrics.add(name="g").gauge
    for i in range(points):
        gauge.data_points.add(as_double=float(i), time_unix_nano=1)
    return Payload.from_bytes(Signal.METRICS, req.SerializeToString())


def logs_payload(records: int) -> Payload:
    req = ExportLogsServiceRequest()
    scope = req.resource_logs.add().scope_logs.add()
    for i in range(records):
        scope.log_records.add().body.string_value = f"line {i}"
    return Payload.from_bytes(Signal.LOGS, req.SerializeToString())


def _field(number: int, data: bytes) -> bytes:
    # A length-delimited protobuf field (lengths here stay below 128: one-byte varint).
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def noncanonical_traces(name: str = "raw") -> Payload:
    """A valid request whose span fields are out of field-number order.

    Parsing and serializing again would reorder them, so equal bytes at the far end prove
    the exporter sent the received bytes as they were.
    """
    span = _field(5, name.encode()) + _field(1, os.urandom(16)) + _field(2, os.urandom(8))
    raw = _field(1, _field(2, _field(2, span)))
    payload = Payload.from_bytes(Signal.TRACES, raw)
    assert payload.message.SerializeToString() != raw
    return payload


def grpc_exporter(sink: OTLPSink, telemetry: Telemetry, **raw: Any) -> OTLPGrpcExporter:
    cfg = {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY, **raw}
    settings = CreateSettings(ComponentID("otlp"), Kind.EXPORTER, telemetry, logging.getLogger("appguard.test.otlp"))
    return OTLPGrpcExporter(settings, OTLPGrpcExporterConfig.model_validate(cfg), ALL)


def http_exporter(sink: OTLPSink, telemetry: Telemetry, **raw: Any) -> OTLPHttpExporter:
    cfg = {"endpoint": sink.http_endpoint, "retry_on_failure": FAST_RETRY, **raw}
    settings = CreateSettings(ComponentID("otlphttp"), Kind.EXPORTER, telemetry, logging.getLogger("appguard.test.otlphttp"))
    return OTLPHttpExporter(settings, OTLPHttpExporterConfig.model_validate(cfg), ALL)


def sent(telemetry: Telemetry, exporter: str, name: str = "otelcol_exporter_sent_spans_total") -> float:
    return telemetry.registry.get_sample_value(name, {"exporter": exporter}) or 0.0


@pytest.fixture
async def sink() -> Any:
    async with OTLPSink() as s:
        yield s
    assert not s.errors, s.errors


# ---- end to end, every signal, bytes unchanged


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_grpc_sends_every_signal_with_the_original_bytes(sink: OTLPSink, compression: str) -> None:
    tel = Telemetry()
    exp = grpc_exporter(sink, tel, compression=compression, headers={"X-Scope-OrgID": "tenant-1"})
    await exp.start(Host())
    payloads = [noncanonical_traces(), metrics_payload(4), logs_payload(5)]
    for p in payloads:
        await exp.consume(p)
    await sink.wait_for_items(10)
    await exp.shutdown()
    by_signal = {r.signal: r for r in sink.requests}
    for p in payloads:
        got = by_signal[p.signal]
        assert got.transport == "grpc"
        assert got.raw == p.to_bytes()
        assert got.headers["x-scope-orgid"] == "tenant-1"
        assert got.headers["user-agent"].startswith("AppGuard/")
    assert sent(tel, "otlp") == 1
    assert sent(tel, "otlp", "otelcol_exporter_sent_metric_points_total") == 4
    assert sent(tel, "otlp", "otelcol_exporter_sent_log_records_total") == 5


@pytest.mark.parametrize("compression", ["gzip", "zstd", "deflate", "none"])
async def test_http_proto_with_compression_sends_the_original_bytes(sink: OTLPSink, compression: str) -> None:
    tel = Telemetry()
    exp = http_exporter(sink, tel, compression=compression)
    await exp.start(Host())
    payloads = [noncanonical_traces(), metrics_payload(2), logs_payload(1)]
    for p in payloads:
        await exp.consume(p)
    await sink.wait_for_items(4)
    await exp.shutdown()
    for r in sink.requests:
        assert r.encoding == ("identity" if compression == "none" else compression)
        assert r.content_type == "application/x-protobuf"
        assert r.raw == next(p for p in payloads if p.signal is r.signal).to_bytes()
    assert sent(tel, "otlphttp") == 1


async def test_batched_requests_are_sent_as_joined_bytes(sink: OTLPSink) -> None:
    exp = grpc_exporter(sink, Telemetry(), sending_queue={"batch": {"min_size": 3, "flush_timeout": "5s"}})
    await exp.start(Host())
    payloads = [noncanonical_traces(f"b{i}") for i in range(3)]
    for p in payloads:
        await exp.consume(p)
    await sink.wait_for_items(3)
    await exp.shutdown()
    assert [r.raw for r in sink.requests] == [b"".join(p.to_bytes() for p in payloads)]


async def test_http_json_encoding(sink: OTLPSink) -> None:
    exp = http_exporter(sink, Telemetry(), encoding="json", compression="none", headers={"user-agent": "custom/1"})
    await exp.start(Host())
    payload = traces(2)
    await exp.consume(payload)
    await sink.wait_for_items(2)
    await exp.shutdown()
    got = sink.requests[0]
    assert got.content_type == "application/json"
    assert got.raw.startswith(b"{")
    assert got.message == payload.message
    assert got.headers["user-agent"] == "custom/1"


async def test_http_signal_endpoint_overrides(sink: OTLPSink) -> None:
    config = OTLPHttpExporterConfig.model_validate({"traces_endpoint": f"{sink.http_endpoint}/v1/traces", "compression": "none"})
    settings = CreateSettings(ComponentID("otlphttp"), Kind.EXPORTER, Telemetry())
    with pytest.raises(ConfigError, match="logs_endpoint"):
        OTLPHttpExporter(settings, config, frozenset({Signal.LOGS}))
    exp = OTLPHttpExporter(settings, config, frozenset({Signal.TRACES}))
    await exp.start(Host())
    await exp.consume(traces(1))
    await sink.wait_for_items(1)
    await exp.shutdown()
    base = OTLPHttpExporterConfig.model_validate({"endpoint": "http://h:1/prefix/"})
    assert base.signal_url(Signal.LOGS) == "http://h:1/prefix/v1/logs"


async def test_mutated_payload_is_serialized(sink: OTLPSink) -> None:
    exp = grpc_exporter(sink, Telemetry())
    await exp.start(Host())
    payload = traces(1)
    payload.mutable().resource_spans[0].scope_spans[0].spans[0].name = "renamed"  # type: ignore[union-attr]
    await exp.consume(payload)
    await sink.wait_for_items(1)
    await exp.shutdown()
    assert span_names([Payload.from_bytes(Signal.TRACES, sink.requests[0].raw)]) == ["renamed"]


# ---- failures


async def test_grpc_unavailable_is_retried_then_delivered_once(sink: OTLPSink) -> None:
    tel = Telemetry()
    exp = grpc_exporter(sink, tel)
    await exp.start(Host())
    sink.fail_next(3, grpc_code=grpc.StatusCode.UNAVAILABLE)
    await exp.consume(traces(4))
    await sink.wait_for_items(4)
    await exp.shutdown()
    assert sink.answered_failures == 3
    assert len(sink.requests) == 1
    assert sent(tel, "otlp") == 4
    assert sent(tel, "otlp", "otelcol_exporter_send_failed_spans_total") == 0


async def test_grpc_resource_exhausted_needs_retry_info_to_be_retried(sink: OTLPSink) -> None:
    tel = Telemetry()
    exp = grpc_exporter(sink, tel)
    await exp.start(Host())
    sink.fail_next(1, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    await exp.consume(traces(2))
    await until(lambda: sent(tel, "otlp", "otelcol_exporter_send_failed_spans_total") == 2)
    assert sink.answered_failures == 1 and sink.requests == []

    sink.fail_next(1, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await exp.consume(traces(2))
    await sink.wait_for_items(2)
    waited = loop.time() - start
    await exp.shutdown()
    assert sink.answered_failures == 2
    assert waited >= 0.3  # the RetryInfo delay, longer than the 10ms backoff


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED])
async def test_grpc_permanent_codes_are_not_retried(sink: OTLPSink, code: grpc.StatusCode) -> None:
    tel = Telemetry()
    exp = grpc_exporter(sink, tel)
    await exp.start(Host())
    sink.fail_next(1, grpc_code=code)
    await exp.consume(traces(1))
    await until(lambda: sent(tel, "otlp", "otelcol_exporter_send_failed_spans_total") == 1)
    await asyncio.sleep(0.05)
    await exp.shutdown()
    assert sink.answered_failures == 1 and sink.requests == []


async def test_http_503_with_retry_after_waits_then_delivers(sink: OTLPSink) -> None:
    tel = Telemetry()
    exp = http_exporter(sink, tel)
    await exp.start(Host())
    sink.fail_next(1, http_status=503, retry_after=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await exp.consume(traces(2))
    await sink.wait_for_items(2)
    waited = loop.time() - start
    await exp.shutdown()
    assert waited >= 1.0
    assert sink.answered_failures == 1 and len(sink.requests) == 1


@pytest.mark.parametrize(("status", "retried"), [(429, True), (502, True), (504, True), (400, False), (401, False), (404, False), (500, False)])
async def test_http_statuses(sink: OTLPSink, status: int, retried: bool) -> None:
    tel = Telemetry()
    exp = http_exporter(sink, tel)
    await exp.start(Host())
    sink.fail_next(1, http_status=status)
    await exp.consume(traces(1))
    if retried:
        await sink.wait_for_items(1)
    else:
        await until(lambda: sent(tel, "otlphttp", "otelcol_exporter_send_failed_spans_total") == 1)
    await exp.shutdown()
    assert sink.answered_failures == 1
    assert len(sink.requests) == (1 if retried else 0)


async def test_http_wait_for_result_reports_the_server_message(sink: OTLPSink) -> None:
    from collector.consumer import PermanentError

    exp = http_exporter(sink, Telemetry(), sending_queue={"wait_for_result": True})
    await exp.start(Host())
    sink.fail_next(1, http_status=400, message="span too old")
    with pytest.raises(PermanentError, match="span too old"):
        await exp.consume(traces(1))
    await exp.shutdown()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_partial_success_is_logged(sink: OTLPSink, transport: str, caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    exp: ExporterBase = grpc_exporter(sink, tel) if transport == "grpc" else http_exporter(sink, tel)
    await exp.start(Host())
    sink.partial_next(1, rejected=2, message="2 spans too old")
    with caplog.at_level(logging.WARNING, logger="appguard.test"):
        await exp.consume(traces(3))
        await sink.wait_for_items(3)
        await until(lambda: any("Partial success" in r.getMessage() for r in caplog.records))
    await exp.shutdown()
    assert any("2 spans too old" in r.getMessage() and "2 spans rejected" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_outage_then_recovery_delivers_everything(sink: OTLPSink, transport: str) -> None:
    tel = Telemetry()
    exp: ExporterBase = grpc_exporter(sink, tel) if transport == "grpc" else http_exporter(sink, tel)
    await exp.start(Host())
    await sink.stop()
    payloads = [traces(2, service=f"o{i}") for i in range(5)]
    for p in payloads:
        await exp.consume(p)
    await asyncio.sleep(0.3)
    assert sink.requests == []
    await sink.start()
    await sink.wait_for_items(10)
    await exp.shutdown()
    assert sorted(span_names([Payload.from_bytes(Signal.TRACES, r.raw) for r in sink.requests])) == sorted(span_names(payloads))
    assert len(sink.requests) == 5


async def test_auth_extension_headers_are_sent(sink: OTLPSink) -> None:
    auth = BearerTokenAuth(BearerTokenAuthConfig(token="s3cret"))
    await auth.start(Host())
    host = Host({ComponentID("bearertokenauth"): auth})
    for exp in (
        grpc_exporter(sink, Telemetry(), auth={"authenticator": "bearertokenauth"}),
        http_exporter(sink, Telemetry(), auth={"authenticator": "bearertokenauth"}),
    ):
        await exp.start(host)
        await exp.consume(traces(1))
    await sink.wait_for_items(2)
    assert [r.headers["authorization"] for r in sink.requests] == ["Bearer s3cret", "Bearer s3cret"]


async def test_missing_auth_extension_fails_start(sink: OTLPSink) -> None:
    exp = grpc_exporter(sink, Telemetry(), auth={"authenticator": "oauth2client"})
    with pytest.raises(ValueError, match="not an enabled extension"):
        await exp.start(Host())


# ---- persistent queue end to end


async def test_persistent_queue_delivers_after_exporter_restart(sink: OTLPSink, tmp_path: Path) -> None:
    async def file_storage() -> FileStorage:
        ext = FileStorage(CreateSettings(ComponentID("file_storage"), Kind.EXTENSION, Telemetry()), FileStorageConfig(directory=str(tmp_path)))
        await ext.start(Host())
        return ext

    await sink.stop()
    ext = await file_storage()
    first = grpc_exporter(sink, Telemetry(), sending_queue={"storage": "file_storage"})
    await first.start(Host({ComponentID("file_storage"): ext}))
    payloads = [traces(1, service=f"p{i}") for i in range(4)]
    for p in payloads:
        await first.consume(p)
    await first.shutdown()
    await ext.shutdown()

    await sink.start()
    ext = await file_storage()
    second = grpc_exporter(sink, Telemetry(), sending_queue={"storage": "file_storage"})
    await second.start(Host({ComponentID("file_storage"): ext}))
    await sink.wait_for_items(4)
    await second.shutdown()
    await ext.shutdown()
    assert sorted(r.raw for r in sink.requests) == sorted(p.to_bytes() for p in payloads)


_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from collector.component import ComponentID, CreateSettings, Host, Kind
    from collector.pdata import Signal
    from collector.telemetry import Telemetry
    from exporters.otlp import OTLPGrpcExporter, OTLPGrpcExporterConfig
    from extensions.file_storage import FileStorage, FileStorageConfig
    from tests.unit.test_exporterhelper import traces

    async def main() -> None:
        directory, port = sys.argv[1], sys.argv[2]
        ext = FileStorage(CreateSettings(ComponentID("file_storage"), Kind.EXTENSION, Telemetry()), FileStorageConfig(directory=directory))
        await ext.start(Host())
        cfg = OTLPGrpcExporterConfig.model_validate(
            {"endpoint": f"127.0.0.1:{port}", "tls": {"insecure": True}, "sending_queue": {"storage": "file_storage"}}
        )
        exp = OTLPGrpcExporter(CreateSettings(ComponentID("otlp"), Kind.EXPORTER, Telemetry()), cfg, frozenset({Signal.TRACES}))
        await exp.start(Host({ComponentID("file_storage"): ext}))
        for i in range(3):
            p = traces(1, service=f"k{i}")
            await exp.consume(p)
            print(p.to_bytes().hex(), flush=True)
        print("ACKED", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_acknowledged_requests_survive_kill_9(sink: OTLPSink, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there: the writer can only queue
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WRITER, str(tmp_path), str(port),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 60)).decode() for _ in range(4)]
        assert lines[-1].strip() == "ACKED", lines
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    acked = sorted(bytes.fromhex(line.strip()) for line in lines[:3])

    ext = FileStorage(CreateSettings(ComponentID("file_storage"), Kind.EXTENSION, Telemetry()), FileStorageConfig(directory=str(tmp_path)))
    await ext.start(Host())
    exp = grpc_exporter(sink, Telemetry(), sending_queue={"storage": "file_storage"})
    await exp.start(Host({ComponentID("file_storage"): ext}))
    await sink.wait_for_items(3)
    await exp.shutdown()
    await ext.shutdown()
    assert sorted(r.raw for r in sink.requests) == acked


# ---- config from YAML as written for the stock collector


STOCK_YAML = {
    "receivers": {"testrecv": None},
    "exporters": {
        "otlp": {
            "endpoint": "1.2.3.4:1234",
            "compression": "gzip",
            "tls": {"ca_file": "/var/lib/mycert.pem"},
            "timeout": "10s",
            "sending_queue": {
                "enabled": True, "sizer": "items", "num_consumers": 2, "queue_size": 100000,
                "batch": {"flush_timeout": "200ms", "min_size": 1000, "max_size": 10000},
            },
            "retry_on_failure": {
                "enabled": True, "initial_interval": "10s", "randomization_factor": 0.7,
                "multiplier": 1.3, "max_interval": "60s", "max_elapsed_time": "10m",
            },
            "auth": {"authenticator": "nop"},
            "headers": {"can you have a . here?": "F0000000-0000-0000-0000-000000000000", "header1": 234, "another": "somevalue"},
            "keepalive": {"time": "20s", "timeout": "30s", "permit_without_stream": True},
            "balancer_name": "round_robin",
        },
        "otlphttp": {
            "endpoint": "https://1.2.3.4:1234",
            "tls": {"ca_file": "/var/lib/mycert.pem", "cert_file": "certfile", "key_file": "keyfile", "insecure": True},
            "timeout": "10s", "read_buffer_size": 123, "write_buffer_size": 345,
            "sending_queue": {"enabled": True, "num_consumers": 2, "queue_size": 10},
            "retry_on_failure": {"enabled": True, "initial_interval": "10s", "randomization_factor": 0.7,
                                 "multiplier": 1.3, "max_interval": "60s", "max_elapsed_time": "10m"},
            "headers": [{"name": "header1", "value": "234"}],
            "compression": "gzip",
            "profiles_endpoint": "https://custom.profiles.endpoint:8080/v1development/profiles",
        },
        "otlp_grpc/2": {"endpoint": "otelcol2:4317", "tls": {"insecure": True}},
        "otlp_http/2": {"endpoint": "https://example.com:4318"},
    },
    "extensions": {"file_storage/otc": {"directory": "/tmp", "timeout": "10s"}},
    "service": {
        "extensions": ["file_storage/otc"],
        "pipelines": {"traces": {"receivers": ["testrecv"], "exporters": ["otlp", "otlphttp", "otlp_grpc/2", "otlp_http/2"]}},
    },
}


def test_stock_collector_yaml_is_accepted() -> None:
    from collector.registry import Registry, builtin_factories
    from tests.support.components import factories

    registry = Registry([*builtin_factories(), *factories()])
    cfg = parse_config(STOCK_YAML, registry)
    grpc_cfg = cfg.exporters[ComponentID("otlp")]
    assert isinstance(grpc_cfg, OTLPGrpcExporterConfig)
    assert grpc_cfg.timeout == 10.0 and grpc_cfg.retry_on_failure.max_elapsed_time == 600.0
    assert grpc_cfg.headers["header1"] == "234"
    assert grpc_cfg.sending_queue.batch is not None and grpc_cfg.sending_queue.batch.max_size == 10000
    http_cfg = cfg.exporters[ComponentID("otlphttp")]
    assert isinstance(http_cfg, OTLPHttpExporterConfig)
    assert http_cfg.signal_url(Signal.TRACES) == "https://1.2.3.4:1234/v1/traces"
    assert http_cfg.headers == {"header1": "234"}
    assert http_cfg.timeout == 10.0
    assert OTLPHttpExporterConfig.model_validate({"endpoint": "http://x:4318"}).timeout == 30.0
    graph = build_graph(cfg, Telemetry(), registry)
    assert isinstance(graph.exporters[ComponentID("otlp_grpc", "2")], OTLPGrpcExporter)
    assert isinstance(graph.exporters[ComponentID("otlp_http", "2")], OTLPHttpExporter)


@pytest.mark.parametrize(
    ("exporter", "body", "fragment"),
    [
        ("otlp", {}, "endpoint: required key is missing"),
        ("otlp", {"endpoint": "https://"}, 'non-empty "endpoint"'),
        ("otlp", {"endpoint": "x:1", "compression": "zstd"}, "not available for gRPC"),
        ("otlp", {"endpoint": "x:1", "balancer_name": "random"}, "balancer_name"),
        ("otlphttp", {}, "at least one endpoint"),
        ("otlphttp", {"endpoint": "localhost:4318"}, "not an http"),
        ("otlphttp", {"endpoint": "http://x", "encoding": "xml"}, "encoding"),
        ("otlphttp", {"endpoint": "http://x", "compression": "snappy"}, "not available"),
    ],
)
def test_invalid_exporter_config(exporter: str, body: dict[str, Any], fragment: str) -> None:
    from collector.registry import Registry, builtin_factories
    from tests.support.components import factories

    raw = {
        "receivers": {"testrecv": None},
        "exporters": {exporter: body},
        "service": {"pipelines": {"traces": {"receivers": ["testrecv"], "exporters": [exporter]}}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, Registry([*builtin_factories(), *factories()]))
    assert f"exporters.{exporter}" in str(info.value) and fragment in str(info.value)


# ---- the sink itself


async def test_sink_refuses_malformed_requests(sink: OTLPSink) -> None:
    async with grpc.aio.insecure_channel(sink.grpc_endpoint) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"\xff\xff\xff")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(AssertionError, match="malformed"):
        await sink.wait_for_items(1, timeout=0.1)
    sink.errors.clear()


def test_sink_in_a_thread_serves_the_opentelemetry_sdk() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    sink = OTLPSink()
    sink.start_in_thread()
    try:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True)))
        provider.add_span_processor(SimpleSpanProcessor(HTTPSpanExporter(endpoint=f"{sink.http_endpoint}/v1/traces")))
        with provider.get_tracer("t").start_as_current_span("hello"):
            pass
        sink.wait_for_items_blocking(2)
        assert {r.transport for r in sink.requests} == {"grpc", "http"}
        sink.stop_in_thread(keep_thread=True)
        sink.start_in_thread()  # same ports after an outage
        with provider.get_tracer("t").start_as_current_span("again"):
            pass
        sink.wait_for_items_blocking(4)
        provider.shutdown()
    finally:
        sink.stop_in_thread()
    assert not sink.errors
