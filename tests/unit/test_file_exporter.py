"""The file exporter: JSON lines, length-prefixed protobuf, zstd, rotation, flushing, group_by."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from pydantic import ValidationError

from collector import otlpjson
from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.configtypes import ComponentConfig
from collector.pdata import REQUEST_TYPES, Payload, Signal
from collector.telemetry import Telemetry
from exporters.file import FileConfig, FileExporter, factory, list_backups

MIB = 1024 * 1024


# --- data: what the real OpenTelemetry SDK produces, plus what it cannot (summaries, logs) ---


def sdk_traces(seq: int = 0, service: str = "shop") -> ExportTraceServiceRequest:
    """Spans from the real SDK: two scopes, an event, a link, a recorded exception."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "seq": seq}))
    provider.add_span_processor(SimpleSpanProcessor(spans))
    web, db = provider.get_tracer("shop.web", "1.0.0"), provider.get_tracer("shop.db")
    with web.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={"http.status_code": 500, "seq": seq}) as span:
        span.add_event("cache miss", {"key": "cart:1"})
        with db.start_as_current_span("SELECT cart", kind=SpanKind.CLIENT, links=[Link(span.get_span_context())]) as child:
            child.record_exception(ValueError("bad row"))
            child.set_status(Status(StatusCode.ERROR, "bad row"))
    provider.shutdown()
    return encode_spans(spans.get_finished_spans())


def sdk_metrics() -> ExportMetricsServiceRequest:
    """Every metric type: the SDK's sum, gauge, histogram and exponential histogram, and a summary."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "shop"}),
        metric_readers=[reader],
        views=[View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("shop.metrics", "2.0")
    meter.create_counter("requests").add(3, {"route": "/cart"})
    meter.create_up_down_counter("sessions").add(-2)
    meter.create_gauge("temperature", unit="Cel").set(21.5, {"room": "a"})
    latency = meter.create_histogram("latency", unit="s")
    for v in (0.1, 0.2, 3.5):
        latency.record(v, {"route": "/cart"})
    size = meter.create_histogram("payload.size", unit="By")
    for v in (1, 10, 100, 1000):
        size.record(v)
    data = reader.get_metrics_data()
    assert data is not None
    request = encode_metrics(data)
    provider.shutdown()
    metric = request.resource_metrics[0].scope_metrics[0].metrics.add(name="rpc.duration", unit="ms")
    point = metric.summary.data_points.add(count=4, sum=10.0, time_unix_nano=1_700_000_000_000_000_000)
    point.quantile_values.add(quantile=0.5, value=2.0)
    point.quantile_values.add(quantile=1.0, value=4.0)
    return request


def logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value="shop"))
    sl = rl.scope_logs.add()
    sl.scope.name = "shop.logger"
    rec = sl.log_records.add(
        time_unix_nano=1_700_000_000_000_000_001,
        severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
        severity_text="WARN",
        trace_id=bytes(range(16)),
        span_id=bytes(range(8, 16)),
    )
    rec.body.string_value = "stock low\nfor item 7"  # a newline must not break the JSON line
    rec.attributes.add(key="item", value=AnyValue(int_value=7))
    return req


def payload(message: Any, signal: Signal) -> Payload:
    return Payload.from_bytes(signal, message.SerializeToString())


# --- helpers -------------------------------------------------------------------------------


def make(**config: Any) -> tuple[FileExporter, Telemetry]:
    telemetry = Telemetry()
    settings = CreateSettings(ComponentID("file"), Kind.EXPORTER, telemetry, logging.getLogger("test.fileexporter"))
    cfg = factory.config_class.model_validate(config)
    exporter = factory.create(settings=settings, config=cfg, signals=frozenset(Signal))
    assert isinstance(exporter, FileExporter)
    return exporter, telemetry


def json_lines(path: Path, signal: Signal) -> list[Any]:
    return [otlpjson.parse_request(signal, line) for line in path.read_bytes().splitlines()]


def frames(data: bytes) -> Iterator[bytes]:
    """The records of a length-prefixed file: 4-byte big-endian length, then the bytes."""
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        yield data[pos + 4 : pos + 4 + size]
        pos += 4 + size
    assert pos == len(data), "trailing bytes after the last record"


def seq_of(request: ExportTraceServiceRequest) -> int:
    attrs = {kv.key: kv.value for kv in request.resource_spans[0].resource.attributes}
    return attrs["seq"].int_value


# --- config --------------------------------------------------------------------------------


def test_config_defaults_and_stock_rules() -> None:
    cfg = FileConfig.model_validate({"path": "out.json"})
    assert (cfg.format, cfg.compression, cfg.append, cfg.rotation, cfg.flush_interval) == ("json", None, False, None, 1.0)
    assert cfg.group_by.enabled is False and cfg.group_by.max_open_files == 100
    # ``rotation:`` with no value turns rotation on with the defaults
    rotation = FileConfig.model_validate({"path": "x", "rotation": None}).rotation
    assert rotation is not None and (rotation.max_megabytes, rotation.max_days, rotation.max_backups, rotation.localtime) == (100, 0, 100, False)
    assert FileConfig.model_validate({"path": "x", "flush_interval": 0}).flush_interval == 1.0
    assert FileConfig.model_validate({"path": "x", "flush_interval": "250ms"}).flush_interval == 0.25
    bad = [
        ({}, "Field required"),
        ({"path": ""}, "path must be non-empty"),
        ({"path": "x", "format": "yaml"}, "'json' or 'proto'"),
        ({"path": "x", "compression": "gzip"}, "zstd"),
        ({"path": "x", "append": True, "compression": "zstd"}, "append and compression"),
        ({"path": "x", "append": True, "rotation": {}}, "append and rotation"),
        ({"path": "x", "group_by": {"enabled": True}}, "exactly one \\*"),
        ({"path": "*.json", "group_by": {"enabled": True}}, "must not start with \\*"),
        ({"path": "d/*.json", "group_by": {"enabled": True, "resource_attribute": ""}}, "resource_attribute"),
        ({"path": "x", "encoding": "otlp_encoding"}, "encoding extensions are not supported"),
        ({"path": "x", "directory_permissions": "0700"}, "requires create_directory"),
        ({"path": "x", "create_directory": True, "directory_permissions": "0999"}, "valid octal"),
        ({"path": "x", "rotation": {"max_size": 1}}, "Extra inputs"),
    ]
    for raw, message in bad:
        with pytest.raises(ValidationError, match=message):
            FileConfig.model_validate(raw)


# --- formats -------------------------------------------------------------------------------


async def test_json_lines_round_trip_every_signal(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    exporter, telemetry = make(path=str(path))
    assert exporter.mutates_data is False
    await exporter.start(Host())
    sent: list[tuple[Signal, Any]] = [
        (Signal.TRACES, sdk_traces(1)),
        (Signal.METRICS, sdk_metrics()),
        (Signal.LOGS, logs()),
        (Signal.TRACES, sdk_traces(2)),
    ]
    payloads = [payload(message, signal) for signal, message in sent]
    for p in payloads:
        await exporter.consume(p)
    await exporter.shutdown()
    assert all(p.has_raw for p in payloads)  # read, never mutated

    lines = path.read_bytes().splitlines()
    assert len(lines) == 4  # one line per export request
    for line, (signal, message) in zip(lines, sent, strict=True):
        assert otlpjson.parse_request(signal, line) == message
    # ids are hex in OTLP JSON, not base64
    first_span = sent[0][1].resource_spans[0].scope_spans[0].spans[0]
    assert f'"traceId":"{first_span.trace_id.hex()}"'.encode() in lines[0]
    decoded: Any = otlpjson.parse_request(Signal.METRICS, lines[1])
    metric_types = {m.WhichOneof("data") for m in decoded.resource_metrics[0].scope_metrics[0].metrics}
    assert metric_types == {"sum", "gauge", "histogram", "exponential_histogram", "summary"}
    sent_spans = telemetry.registry.get_sample_value("otelcol_exporter_sent_spans_total", {"exporter": "file"})
    assert sent_spans == 4
    assert telemetry.registry.get_sample_value("otelcol_exporter_sent_log_records_total", {"exporter": "file"}) == 1


async def test_proto_is_length_prefixed_and_keeps_the_received_bytes(tmp_path: Path) -> None:
    path = tmp_path / "out.pb"
    exporter, _ = make(path=str(path), format="proto")
    await exporter.start(Host())
    sent: list[tuple[Signal, Any]] = [(Signal.METRICS, sdk_metrics()), (Signal.TRACES, sdk_traces()), (Signal.LOGS, logs())]
    payloads = [payload(message, signal) for signal, message in sent]
    for p in payloads:
        await exporter.consume(p)
    await exporter.shutdown()
    records = list(frames(path.read_bytes()))
    assert records == [p.to_bytes() for p in payloads]
    for record, (signal, message) in zip(records, sent, strict=True):
        assert REQUEST_TYPES[signal].FromString(record) == message


async def test_zstd_compresses_each_record(tmp_path: Path) -> None:
    for fmt in ("json", "proto"):
        path = tmp_path / f"out.{fmt}.zst"
        exporter, _ = make(path=str(path), format=fmt, compression="zstd")
        await exporter.start(Host())
        message = sdk_traces()
        await exporter.consume(payload(message, Signal.TRACES))
        await exporter.consume(payload(logs(), Signal.LOGS))
        await exporter.shutdown()
        first, second = (zstandard.ZstdDecompressor().decompress(r) for r in frames(path.read_bytes()))
        if fmt == "json":
            assert otlpjson.parse_request(Signal.TRACES, first) == message
            assert otlpjson.parse_request(Signal.LOGS, second) == logs()
        else:
            assert ExportTraceServiceRequest.FromString(first) == message
            assert ExportLogsServiceRequest.FromString(second) == logs()


# --- flushing ------------------------------------------------------------------------------


async def test_data_is_buffered_until_the_flush_interval_and_flushed_on_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    exporter, _ = make(path=str(path), flush_interval="1h")
    await exporter.start(Host())
    await exporter.consume(payload(sdk_traces(), Signal.TRACES))
    assert path.exists() and path.stat().st_size == 0  # opened (and truncated) at start, not yet written
    await exporter.shutdown()
    assert len(json_lines(path, Signal.TRACES)) == 1


async def test_the_flush_timer_writes_without_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    exporter, _ = make(path=str(path), flush_interval="20ms")
    await exporter.start(Host())
    await exporter.consume(payload(logs(), Signal.LOGS))
    try:
        for _ in range(250):
            if path.stat().st_size:
                break
            await asyncio.sleep(0.02)
        assert json_lines(path, Signal.LOGS) == [logs()]
    finally:
        await exporter.shutdown()


async def test_a_large_buffer_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "out.pb"
    exporter, _ = make(path=str(path), format="proto", flush_interval="1h")
    await exporter.start(Host())
    big = sdk_traces()
    big.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob", value=AnyValue(string_value="x" * (5 * MIB)))
    await exporter.consume(payload(big, Signal.TRACES))
    # past the buffer limit consume() writes before returning, without waiting for the timer
    assert [ExportTraceServiceRequest.FromString(r) for r in frames(path.read_bytes())] == [big]
    await exporter.shutdown()


async def test_append_false_truncates_and_true_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_bytes(b"left over\n")
    exporter, _ = make(path=str(path))
    await exporter.start(Host())
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()
    assert json_lines(path, Signal.LOGS) == [logs()]

    exporter, _ = make(path=str(path), append=True)
    await exporter.start(Host())
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()
    assert json_lines(path, Signal.LOGS) == [logs(), logs()]


async def test_consume_after_shutdown_is_refused(tmp_path: Path) -> None:
    from collector.consumer import PermanentError

    exporter, _ = make(path=str(tmp_path / "out.json"))
    await exporter.start(Host())
    await exporter.shutdown()
    with pytest.raises(PermanentError):
        await exporter.consume(payload(logs(), Signal.LOGS))


async def test_directories(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "out.json"
    exporter, _ = make(path=str(missing))
    with pytest.raises(FileNotFoundError):
        await exporter.start(Host())
    exporter, _ = make(path=str(missing), create_directory=True, directory_permissions="0750")
    await exporter.start(Host())
    await exporter.shutdown()
    assert missing.exists()
    assert (missing.parent.stat().st_mode & 0o777) == 0o750 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- rotation ------------------------------------------------------------------------------

_BACKUP = re.compile(r"^out-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.json$")


async def test_rotation_by_size_renames_with_a_timestamp_and_prunes_backups(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    limit = 0.01  # MiB: about 10 KiB, a handful of records per file
    exporter, _ = make(path=str(path), rotation={"max_megabytes": limit, "max_backups": 3}, flush_interval="10ms")
    await exporter.start(Host())
    for seq in range(60):
        await exporter.consume(payload(sdk_traces(seq), Signal.TRACES))
        if seq % 7 == 0:
            await asyncio.sleep(0.02)  # let the timer flush part of it: rotation across flushes too
    await exporter.shutdown()

    backups = sorted(name for name in os.listdir(tmp_path) if name != "out.json")
    assert len(backups) == 3, backups  # older ones pruned
    assert all(_BACKUP.match(name) for name in backups), backups
    files = [tmp_path / name for name in backups] + [path]  # the timestamps sort oldest first
    seqs: list[int] = []
    for f in files:
        assert f.stat().st_size <= limit * MIB
        records = json_lines(f, Signal.TRACES)
        assert records, f"{f.name} is empty"
        seqs += [seq_of(r) for r in records]
    # what is left is the newest records, in order, none split or lost between the files kept
    assert seqs == list(range(60 - len(seqs), 60))
    assert [p for _, p in list_backups(str(path))] == [str(f) for f in reversed(files[:-1])]


async def test_rotation_continues_an_existing_file_and_drops_backups_past_max_days(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    old = tmp_path / "out-2001-02-03T04-05-06.789.json"
    recent_name = "out-2999-01-01T00-00-00.000.json"  # in the future: younger than any cutoff
    old.write_text("old\n")
    (tmp_path / recent_name).write_text("recent\n")
    (tmp_path / "unrelated.json").write_text("keep\n")
    exporter, _ = make(path=str(path), rotation={"max_days": 1})
    await exporter.start(Host())
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()
    assert not old.exists()
    assert (tmp_path / recent_name).exists() and (tmp_path / "unrelated.json").exists()

    # lumberjack semantics: a restart with rotation carries on with the same file
    exporter, _ = make(path=str(path), rotation={"max_days": 1})
    await exporter.start(Host())
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()
    assert json_lines(path, Signal.LOGS) == [logs(), logs()]


async def test_a_record_larger_than_the_limit_gets_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "out.pb"
    exporter, _ = make(path=str(path), format="proto", rotation={"max_megabytes": 0.001}, flush_interval="1h")
    await exporter.start(Host())
    small, big = logs(), sdk_traces()
    big.resource_spans[0].scope_spans[0].spans[0].name = "y" * 4000
    await exporter.consume(payload(small, Signal.LOGS))
    await exporter.consume(payload(big, Signal.TRACES))
    await exporter.consume(payload(small, Signal.LOGS))
    await exporter.shutdown()
    backups = [Path(p) for _, p in reversed(list_backups(str(path)))]
    contents = [list(frames(f.read_bytes())) for f in [*backups, path]]
    assert [len(c) for c in contents] == [1, 1, 1]
    assert ExportTraceServiceRequest.FromString(contents[1][0]) == big


# --- group_by ------------------------------------------------------------------------------


def _grouped_traces(*segments: str | None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for i, segment in enumerate(segments):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="idx", value=AnyValue(int_value=i))
        if segment is not None:
            rs.resource.attributes.add(key="fileexporter.path_segment", value=AnyValue(string_value=segment))
        rs.scope_spans.add().spans.add(name=f"span {i}", trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8)
    return req


def _json_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))


def _indexes(path: Path) -> list[list[int]]:
    out = []
    for req in json_lines(path, Signal.TRACES):
        out.append([{kv.key: kv.value for kv in rs.resource.attributes}["idx"].int_value for rs in req.resource_spans])
    return out


async def test_group_by_writes_one_file_per_attribute_value(tmp_path: Path) -> None:
    pattern = tmp_path / "out" / "*.json"
    exporter, telemetry = make(path=str(pattern), group_by={"enabled": True, "max_open_files": 1})
    await exporter.start(Host())
    segments = ("a", "b", None, "a", "../../escape", "nested/c", "../outside")
    await exporter.consume(payload(_grouped_traces(*segments), Signal.TRACES))
    # max_open_files 1: "a" was closed when "b" opened; writing "a" again must not lose the first record
    await exporter.consume(payload(_grouped_traces("a"), Signal.TRACES))
    await exporter.shutdown()
    out = tmp_path / "out"
    written = _json_files(tmp_path)
    assert written == ["out/a.json", "out/b.json", "out/escape.json", "out/nested/c.json", "out/outside.json"]
    assert _indexes(out / "a.json") == [[0, 3], [0]]
    assert _indexes(out / "b.json") == [[1]]
    assert _indexes(out / "escape.json") == [[4]]
    assert _indexes(out / "nested" / "c.json") == [[5]]
    # the resource without the attribute is dropped, so 7 of 8 spans were written
    assert telemetry.registry.get_sample_value("otelcol_exporter_sent_spans_total", {"exporter": "file"}) == 7


def test_the_factory_is_discovered_as_file() -> None:
    assert factory.type == "file" and factory.kind is Kind.EXPORTER and factory.signals == frozenset(Signal)
    assert issubclass(factory.config_class, ComponentConfig)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to make writes fail")
async def test_write_failures_are_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    from collector.consumer import PermanentError

    caplog.set_level(logging.ERROR, logger="test.fileexporter")
    exporter, telemetry = make(path="/dev/full", append=True, flush_interval="1h")
    await exporter.start(Host())
    await exporter.consume(payload(sdk_traces(), Signal.TRACES))  # buffered: accepted
    big = sdk_traces()
    big.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob", value=AnyValue(string_value="x" * (5 * MIB)))
    with pytest.raises(PermanentError, match="No space left"):
        await exporter.consume(payload(big, Signal.TRACES))  # written at once: the failure is the caller's
    await exporter.consume(payload(logs(), Signal.LOGS))
    await exporter.shutdown()  # the last flush fails too, without raising out of shutdown
    failed = telemetry.registry.get_sample_value
    assert failed("otelcol_exporter_send_failed_spans_total", {"exporter": "file"}) == 4
    assert failed("otelcol_exporter_send_failed_log_records_total", {"exporter": "file"}) == 1
    assert failed("otelcol_exporter_sent_spans_total", {"exporter": "file"}) in (None, 0)
    errors = [r.getMessage() for r in caplog.records if r.name == "test.fileexporter"]
    assert len(errors) == 2 and all("cannot write to /dev/full" in e for e in errors)
