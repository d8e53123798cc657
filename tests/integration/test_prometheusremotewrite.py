"""The ``prometheusremotewrite`` exporter: into a real Prometheus (remote write receiver on),
and against a local receiver that decodes every request strictly and answers as scripted."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.consumer import PermanentError
from collector.pdata import Signal
from collector.telemetry import Telemetry
from exporters.prometheusremotewrite import (
    PrometheusRemoteWriteConfig,
    PrometheusRemoteWriteExporter,
    WriteRequest,
)
from tests.integration.test_prometheus_exporter import RESOURCE, SPAN_ID, TRACE_ID, delta_request, every_type_request
from tests.support.prometheus import (
    NO_RECORDED_VALUE,
    PrometheusServer,
    add_exemplar,
    add_metric,
    payload_of,
    prometheus_binary,
    scope_metrics,
)

__all__ = ["prometheus_binary"]

FAST_RETRY = {"initial_interval": "10ms", "max_interval": "50ms", "max_elapsed_time": "5s"}


def make_exporter(telemetry: Telemetry, **raw: Any) -> PrometheusRemoteWriteExporter:
    raw.setdefault("retry_on_failure", FAST_RETRY)
    settings = CreateSettings(ComponentID("prometheusremotewrite"), Kind.EXPORTER, telemetry, logging.getLogger("appguard.test.prw"))
    return PrometheusRemoteWriteExporter(settings, PrometheusRemoteWriteConfig.model_validate(raw), frozenset({Signal.METRICS}))


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    running: list[PrometheusRemoteWriteExporter] = []

    async def start(telemetry: Telemetry | None = None, **raw: Any) -> PrometheusRemoteWriteExporter:
        exporter = make_exporter(telemetry or Telemetry(), **raw)
        await exporter.start(Host())
        running.append(exporter)
        return exporter

    yield start
    for exporter in running:
        await exporter.shutdown()


def metric_value(telemetry: Telemetry, name: str, **labels: str) -> float:
    return telemetry.registry.get_sample_value(name, {"exporter": "prometheusremotewrite", **labels}) or 0.0


# ---- a strict local receiver


@dataclass
class Receiver:
    """Decodes each POST as remote write 1.0 and checks what the specification requires."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    bodies: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = request.headers
        self.headers.append(dict(headers))
        try:
            assert headers.get("Content-Encoding") == "snappy", headers
            assert headers.get("Content-Type") == "application/x-protobuf", headers
            assert headers.get("X-Prometheus-Remote-Write-Version") == "0.1.0", headers
            assert headers.get("User-Agent", "").startswith("AppGuard/"), headers
            raw = bytes(cramjam.snappy.decompress_raw(body))
            message = WriteRequest.FromString(raw)
            # Nothing the receiver does not know: the message re-encodes to the same bytes.
            assert message.SerializeToString() == raw
            for ts in message.timeseries:
                names = [label.name for label in ts.labels]
                assert names == sorted(names) and len(set(names)) == len(names), names
                assert "__name__" in names, names
                assert all(label.name and label.value for label in ts.labels), ts
                stamps = [s.timestamp for s in ts.samples]
                assert stamps == sorted(stamps), stamps
        except Exception as exc:  # the exporter sent something invalid: fail the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return web.Response(status=400, text=str(exc))
        status, extra = self.script.pop(0) if self.script else (204, {})
        self.answered.append(status)
        if 200 <= status < 300:
            self.requests.append(message)
            self.bodies.append(len(raw))
        return web.Response(status=status, headers=extra, text="" if status < 300 else f"scripted {status}")

    def series(self) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
        """Every series received, by sorted labels."""
        out: dict[tuple[tuple[str, str], ...], list[tuple[int, float]]] = {}
        for message in self.requests:
            for ts in message.timeseries:
                key = tuple((label.name, label.value) for label in ts.labels)
                out.setdefault(key, []).extend((s.timestamp, s.value) for s in ts.samples)
        return out

    def by_name(self, name: str) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
        return {k: v for k, v in self.series().items() if ("__name__", name) in k}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/api/v1/write", recv.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recv.url = f"http://127.0.0.1:{port}/api/v1/write"
    yield recv
    await runner.cleanup()
    assert not recv.errors, recv.errors


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# ---- into a real Prometheus


async def test_prometheus_receives_every_metric_type(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    prom = await asyncio.to_thread(PrometheusServer(prometheus_binary, tmp_path, remote_write_receiver=True).start)
    try:
        exporter = await started(endpoint=prom.remote_write_url, external_labels={"cluster": "eu-1"}, send_metadata=True)
        now = time.time_ns()
        await exporter.consume(payload_of(every_type_request(now)))
        value = lambda expr, v: asyncio.to_thread(prom.wait_for_value, expr, v)  # noqa: E731
        ident = 'job="shop/checkout",instance="pod-1",otel_scope_name="io.appguard.test",otel_scope_version="1.0.0",cluster="eu-1"'
        row = await value(f"queue_depth{{{ident}}}", 7)
        assert row["metric"]["queue_name"] == "a;b"
        await value("cpu_utilization_ratio", 0.25)
        await value('http_requests_total{http_method="GET",http_status_code="200"}', 42)
        await value("pool_connections", 3)
        # Remote write le values are Go's shortest decimal form.
        for le, n in (("0.1", 1), ("1", 3), ("10", 6), ("+Inf", 10)):
            await value(f'http_server_duration_seconds_bucket{{le="{le}",http_route="/cart"}}', n)
        await value("http_server_duration_seconds_count", 10)
        await value("http_server_duration_seconds_sum", 42.5)
        await value('rpc_latency_milliseconds{quantile="0.5"}', 2)
        await value('rpc_latency_milliseconds{quantile="0.99"}', 9)
        await value("rpc_latency_milliseconds_count", 4)
        await value("rpc_latency_milliseconds_sum", 12)
        for le, n in (("0", 1), ("2", 3), ("4", 6), ("+Inf", 6)):
            await value(f'payload_size_bytes_bucket{{le="{le}"}}', n)
        row = await value("target_info", 1)
        assert row["metric"] == {
            "__name__": "target_info",
            "job": "shop/checkout",
            "instance": "pod-1",
            "deployment_environment": "test",
            "host_name": "h1",
            "cluster": "eu-1",
        }
        # The samples carry the points' own time.
        data = await asyncio.to_thread(prom.api, "query", query="timestamp(pool_connections)")
        assert abs(float(data["result"][0]["value"][1]) - now / 1e9) < 0.002
        # Delta sums cannot be written: neither the non-monotonic one nor a monotonic one.
        await exporter.consume(payload_of(delta_request(5, now - 10**9, now)))
        await value("http_requests_total", 42)
        assert await asyncio.to_thread(prom.series, '{__name__=~"queue_changes.*|jobs_done.*"}') == []
        # A point without a recorded value ends its series at once (the stale marker).
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, RESOURCE)
        add_metric(sm, "pool.connections", "sum").data_points.add(start_time_unix_nano=now - 10**9, time_unix_nano=now + 10**9, flags=NO_RECORDED_VALUE)
        await exporter.consume(payload_of(req))
        await asyncio.to_thread(prom.wait_for, "pool_connections", lambda rows: rows == [])
    finally:
        await asyncio.to_thread(prom.stop)


# ---- against the strict receiver


async def test_requests_are_well_formed_and_split(receiver: Receiver, started: Callable[..., Any]) -> None:
    exporter = await started(endpoint=receiver.url, max_batch_size_bytes=2000, send_metadata=True, remote_write_queue={"num_consumers": 2})
    now = time.time_ns()
    req = every_type_request(now)
    sm = scope_metrics(req, RESOURCE)
    data = add_metric(sm, "orders", "sum", monotonic=True)
    # Points of one series out of time order in the request: sent in order.
    for i in (3, 1, 2):
        data.data_points.add(as_int=i, start_time_unix_nano=now - 10**10, time_unix_nano=now + i * 10**6)
    add_exemplar(data.data_points[0], 1.0, TRACE_ID, SPAN_ID, now)
    await exporter.consume(payload_of(req))
    await until(lambda: receiver.by_name("orders_total") != {} and receiver.by_name("target_info") != {})
    await exporter.shutdown()
    assert len(receiver.requests) > 1
    assert max(receiver.bodies) <= 2000
    (orders,) = receiver.by_name("orders_total").values()
    assert orders == [(now // 10**6 + i, float(i)) for i in (1, 2, 3)]
    series = receiver.series()
    assert len(series) == sum(len(m.timeseries) for m in receiver.requests), "a series was split over requests"
    exemplars = [e for m in receiver.requests for ts in m.timeseries for e in ts.exemplars]
    assert [(e.value, {label.name: label.value for label in e.labels}) for e in exemplars] == [
        (1.0, {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex()})
    ]
    metadata = {m.metric_family_name: (m.type, m.help, m.unit) for r in receiver.requests for m in r.metadata}
    assert metadata["http_server_duration_seconds"] == (3, "Request time", "seconds")
    assert metadata["http_requests_total"] == (1, "Requests served", "")
    assert metadata["rpc_latency_milliseconds"] == (5, "", "milliseconds")
    assert metadata["queue_depth"][0] == 2


async def test_retries_429_and_5xx_then_delivers(receiver: Receiver, started: Callable[..., Any]) -> None:
    telemetry = Telemetry()
    exporter = await started(telemetry, endpoint=receiver.url)
    receiver.script = [(429, {"Retry-After": "0"}), (500, {}), (503, {})]
    await exporter.consume(payload_of(every_type_request(time.time_ns())))
    await until(lambda: len(receiver.requests) == 1)
    assert receiver.answered == [429, 500, 503, 204]
    await until(lambda: metric_value(telemetry, "otelcol_exporter_sent_metric_points_total") > 0)
    assert metric_value(telemetry, "otelcol_exporter_send_failed_metric_points_total") == 0


async def test_client_errors_are_not_retried(receiver: Receiver, started: Callable[..., Any]) -> None:
    telemetry = Telemetry()
    exporter = await started(telemetry, endpoint=receiver.url, remote_write_queue={"enabled": False})
    receiver.script = [(400, {})]
    with pytest.raises(PermanentError, match="HTTP status 400"):
        await exporter.consume(payload_of(every_type_request(time.time_ns())))
    assert receiver.answered == [400]
    assert metric_value(telemetry, "otelcol_exporter_send_failed_metric_points_total") > 0


async def test_only_failed_requests_are_sent_again(receiver: Receiver, started: Callable[..., Any]) -> None:
    exporter = await started(endpoint=receiver.url, max_batch_size_bytes=1500, remote_write_queue={"enabled": False, "num_consumers": 1})
    payload = payload_of(every_type_request(time.time_ns()))
    parts = len(exporter.prepare(payload).bodies)
    assert parts >= 3
    # The second request fails once: only it is sent again.
    receiver.script = [(204, {}), (503, {})]
    await exporter.consume(payload)
    assert receiver.answered == [204, 503] + [204] * (parts - 1)
    assert len(receiver.requests) == parts
    all_series = [tuple((label.name, label.value) for label in ts.labels) for m in receiver.requests for ts in m.timeseries]
    assert len(all_series) == len(set(all_series))


async def test_stale_marker_and_dropped_points(receiver: Receiver, started: Callable[..., Any]) -> None:
    telemetry = Telemetry()
    exporter = await started(telemetry, endpoint=receiver.url, remote_write_queue={"enabled": False}, target_info={"enabled": False})
    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    add_metric(sm, "g", "gauge").data_points.add(time_unix_nano=now, flags=NO_RECORDED_VALUE)
    await exporter.consume(payload_of(req))
    await exporter.consume(payload_of(delta_request(1, now - 10, now)))
    ((_, [(_, value)]),) = receiver.series().items()
    assert math.isnan(value) and struct.pack("<d", value) == struct.pack("<Q", 0x7FF0000000000002)
    assert receiver.by_name("target_info") == {}
    dropped = telemetry.registry.get_sample_value(
        "appguard_dropped_items_total", {"component": "exporter/prometheusremotewrite", "otel_signal": "metrics", "reason": "not_writable"}
    )
    assert dropped == 1.0


async def test_reserved_headers_win_over_configured_ones(receiver: Receiver, started: Callable[..., Any]) -> None:
    exporter = await started(
        endpoint=receiver.url,
        headers={"X-Scope-OrgID": "tenant-1", "Content-Encoding": "gzip", "User-Agent": "mine"},
        remote_write_queue={"enabled": False},
    )
    await exporter.consume(payload_of(every_type_request(time.time_ns())))
    # The strict receiver checked the reserved headers; the request got through.
    assert len(receiver.requests) == 1
    assert receiver.headers[0]["X-Scope-OrgID"] == "tenant-1"


@pytest.mark.parametrize(("value", "timestamp"), [(0.0, 0), (-0.0, 5), (1.5, -1), (math.inf, 2**62), (math.nan, 1)])
def test_encoding_matches_the_message_classes(value: float, timestamp: int) -> None:
    from exporters.prometheusremotewrite import _field, exemplar_bytes, label_bytes, metadata_bytes, sample_bytes

    ts_body = label_bytes("__name__", "m") + label_bytes("ünï", "cödé") + sample_bytes(value, timestamp)
    ts_body += exemplar_bytes({"trace_id": "ab", "a": "b"}, value, timestamp)
    raw = _field(0x0A, ts_body) + metadata_bytes(3, "m", "help", "seconds") + metadata_bytes(0, "n", "", "")
    expected = WriteRequest()
    ts = expected.timeseries.add()
    ts.labels.add(name="__name__", value="m")
    ts.labels.add(name="ünï", value="cödé")
    ts.samples.add(value=value, timestamp=timestamp)
    ex = ts.exemplars.add(value=value, timestamp=timestamp)
    ex.labels.add(name="a", value="b")
    ex.labels.add(name="trace_id", value="ab")
    expected.metadata.add(type=3, metric_family_name="m", help="help", unit="seconds")
    expected.metadata.add(type=0, metric_family_name="n")
    assert raw == expected.SerializeToString()
