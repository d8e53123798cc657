"""The ``prometheus`` exporter, scraped by a real Prometheus server and over plain HTTP.

Prometheus runs as a subprocess (tests/support/prometheus.py) and scrapes the exporter every
second; the tests read back what it stored through its query API. Calls to Prometheus block,
so they run in a thread while the event loop keeps serving the scrapes.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.telemetry import Telemetry
from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from tests.support.prometheus import (
    CUMULATIVE,
    DELTA,
    NO_RECORDED_VALUE,
    PrometheusServer,
    add_exemplar,
    add_metric,
    payload_of,
    prometheus_binary,
    scope_metrics,
    set_attributes,
)

__all__ = ["prometheus_binary"]

RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "pod-1",
    "deployment.environment": "test",
    "host.name": "h1",
}
TRACE_ID = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN_ID = bytes.fromhex("00f067aa0ba902b7")

def make_exporter(telemetry: Telemetry | None = None, **raw: Any) -> PrometheusExporter:
    raw.setdefault("endpoint", "127.0.0.1:0")
    settings = CreateSettings(ComponentID("prometheus"), Kind.EXPORTER, telemetry or Telemetry(), logging.getLogger("appguard.test.prometheus"))
    return PrometheusExporter(settings, PrometheusExporterConfig.model_validate(raw))


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    """Start exporters made from config keys; shut them down after the test."""
    running: list[PrometheusExporter] = []

    async def start(**raw: Any) -> PrometheusExporter:
        exporter = make_exporter(**raw)
        await exporter.start(Host())
        running.append(exporter)
        return exporter

    yield start
    for exporter in running:
        await exporter.shutdown()


async def prometheus_for(binary: str, tmp_path: Path, exporter: PrometheusExporter, **kwargs: Any) -> PrometheusServer:
    server = PrometheusServer(binary, tmp_path, targets=[f"127.0.0.1:{exporter.port}"], **kwargs)
    return await asyncio.to_thread(server.start)


def every_type_request(now: int) -> ExportMetricsServiceRequest:
    """One request with a point of every kind the exporter exposes (and one it cannot)."""
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    gauge = add_metric(sm, "queue.depth", "gauge", unit="{item}", description="Items waiting")
    p = gauge.data_points.add(as_int=7, time_unix_nano=now)
    # Two keys that become the same label: values joined in the order of the original keys.
    set_attributes(p.attributes, {"queue_name": "b", "queue.name": "a"})
    ratio = add_metric(sm, "cpu.utilization", "gauge", unit="1")
    ratio.data_points.add(as_double=0.25, time_unix_nano=now)
    counter = add_metric(sm, "http.requests", "sum", unit="{request}", monotonic=True, description="Requests served")
    p = counter.data_points.add(as_int=42, start_time_unix_nano=now - 10**9, time_unix_nano=now)
    set_attributes(p.attributes, {"http.method": "GET", "http.status_code": 200})
    updown = add_metric(sm, "pool.connections", "sum", monotonic=False)
    updown.data_points.add(as_int=3, start_time_unix_nano=now - 10**9, time_unix_nano=now)
    dropped = add_metric(sm, "queue.changes", "sum", monotonic=False, temporality=DELTA)
    dropped.data_points.add(as_int=1, start_time_unix_nano=now - 10**9, time_unix_nano=now)
    hist = add_metric(sm, "http.server.duration", "histogram", unit="s", description="Request time")
    hp = hist.data_points.add(
        start_time_unix_nano=now - 10**9, time_unix_nano=now, count=10, sum=42.5, explicit_bounds=[0.1, 1, 10], bucket_counts=[1, 2, 3, 4]
    )
    set_attributes(hp.attributes, {"http.route": "/cart"})
    summary = add_metric(sm, "rpc.latency", "summary", unit="ms")
    sp = summary.data_points.add(start_time_unix_nano=now - 10**9, time_unix_nano=now, count=4, sum=12.0)
    sp.quantile_values.add(quantile=0.5, value=2.0)
    sp.quantile_values.add(quantile=0.99, value=9.0)
    expo = add_metric(sm, "payload.size", "exponential_histogram", unit="By")
    ep = expo.data_points.add(start_time_unix_nano=now - 10**9, time_unix_nano=now, scale=0, count=6, sum=20.0, zero_count=1)
    ep.positive.offset = 0
    ep.positive.bucket_counts.extend([2, 3])
    return req


def delta_request(value: int, start: int, end: int) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    data = add_metric(sm, "jobs.done", "sum", unit="1", monotonic=True, temporality=DELTA)
    data.data_points.add(as_int=value, start_time_unix_nano=start, time_unix_nano=end)
    return req


# ---- against a real Prometheus


async def test_prometheus_scrapes_every_metric_type(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    exporter = await started()
    now = time.time_ns()
    await exporter.consume(payload_of(every_type_request(now)))
    await exporter.consume(payload_of(delta_request(5, now - 2 * 10**9, now - 10**9)))
    await exporter.consume(payload_of(delta_request(7, now - 10**9, now)))
    prom = await prometheus_for(prometheus_binary, tmp_path, exporter)
    try:
        value = lambda expr, v: asyncio.to_thread(prom.wait_for_value, expr, v)  # noqa: E731
        ident = 'job="shop/checkout",instance="pod-1",otel_scope_name="io.appguard.test",otel_scope_version="1.0.0"'
        row = await value(f'queue_depth{{{ident}}}', 7)
        assert row["metric"]["queue_name"] == "a;b"
        await value("cpu_utilization_ratio", 0.25)
        row = await value('http_requests_total{http_method="GET"}', 42)
        assert row["metric"]["http_status_code"] == "200"
        await value("pool_connections", 3)
        # Delta points accumulated into one counter.
        await value("jobs_done_total", 12)
        # Histogram: cumulative buckets, count and sum.
        for le, n in (("0.1", 1), ("1.0", 3), ("10.0", 6), ("+Inf", 10)):
            await value(f'http_server_duration_seconds_bucket{{le="{le}",http_route="/cart"}}', n)
        await value("http_server_duration_seconds_count", 10)
        await value("http_server_duration_seconds_sum", 42.5)
        # Summary quantiles, count and sum.
        await value('rpc_latency_milliseconds{quantile="0.5"}', 2)
        await value('rpc_latency_milliseconds{quantile="0.99"}', 9)
        await value("rpc_latency_milliseconds_count", 4)
        await value("rpc_latency_milliseconds_sum", 12)
        # Exponential histogram as classic buckets: zero bucket, (1,2], (2,4].
        for le, n in (("0.0", 1), ("2.0", 3), ("4.0", 6), ("+Inf", 6)):
            await value(f'payload_size_bytes_bucket{{le="{le}"}}', n)
        await value("payload_size_bytes_count", 6)
        # Resource attributes other than job/instance in target_info.
        row = await value("target_info", 1)
        assert row["metric"] == {
            "__name__": "target_info",
            "job": "shop/checkout",
            "instance": "pod-1",
            "deployment_environment": "test",
            "host_name": "h1",
        }
        # A non-monotonic delta sum cannot be exposed.
        assert await asyncio.to_thread(prom.series, "queue_changes") == []
        assert await asyncio.to_thread(prom.series, '{__name__=~"queue_changes.*"}') == []
        # The metadata Prometheus read from the exposition.
        meta = await asyncio.to_thread(prom.api, "metadata")
        assert meta["http_server_duration_seconds"][0]["type"] == "histogram"
        assert meta["http_server_duration_seconds"][0]["help"] == "Request time"
        assert meta["http_requests_total"][0]["type"] == "counter"
        assert meta["rpc_latency_milliseconds"][0]["type"] == "summary"
        assert meta["pool_connections"][0]["type"] == "gauge"
    finally:
        await asyncio.to_thread(prom.stop)


async def test_openmetrics_scrape_carries_exemplars(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    exporter = await started(enable_open_metrics=True)
    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    counter = add_metric(sm, "orders.placed", "sum", monotonic=True)
    p = counter.data_points.add(as_int=3, start_time_unix_nano=now - 10**9, time_unix_nano=now)
    add_exemplar(p, 1.0, TRACE_ID, SPAN_ID, now, customer="c1")
    hist = add_metric(sm, "checkout.duration", "histogram", unit="ms")
    hp = hist.data_points.add(start_time_unix_nano=now - 10**9, time_unix_nano=now, count=2, sum=130.0, explicit_bounds=[100.0], bucket_counts=[1, 1])
    add_exemplar(hp, 30.0, TRACE_ID, SPAN_ID, now)
    add_exemplar(hp, 100.0 + 0.5, bytes(range(16)), bytes(range(8)), now)
    await exporter.consume(payload_of(req))
    start = time.time() - 60
    prom = await prometheus_for(prometheus_binary, tmp_path, exporter, exemplars=True)
    try:
        await asyncio.to_thread(prom.wait_for_value, "orders_placed_total", 3)
        found = await asyncio.to_thread(_wait_exemplars, prom, "orders_placed_total", start, 1)
        (series,) = found
        (exemplar,) = series["exemplars"]
        assert exemplar["labels"] == {"trace_id": TRACE_ID.hex(), "span_id": SPAN_ID.hex(), "customer": "c1"}
        assert float(exemplar["value"]) == 1.0
        found = await asyncio.to_thread(_wait_exemplars, prom, "checkout_duration_milliseconds_bucket", start, 2)
        by_le = {s["seriesLabels"]["le"]: s["exemplars"][0]["labels"]["trace_id"] for s in found}
        assert by_le == {"100.0": TRACE_ID.hex(), "+Inf": bytes(range(16)).hex()}
    finally:
        await asyncio.to_thread(prom.stop)


def _wait_exemplars(prom: PrometheusServer, expr: str, start: float, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while True:
        found = prom.exemplars_of(expr, start=start)
        if len(found) >= n:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"exemplars of {expr}: {found}\n{prom.log()[-2000:]}")
        time.sleep(0.2)


async def test_expired_series_disappear(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    exporter = await started(metric_expiration="3s")
    prom = await prometheus_for(prometheus_binary, tmp_path, exporter)
    try:
        await asyncio.to_thread(prom.wait_for_value, 'up{job="appguard"}', 1)
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, RESOURCE)
        add_metric(sm, "short.lived", "gauge").data_points.add(as_double=1.5, time_unix_nano=time.time_ns())
        await exporter.consume(payload_of(req))
        await asyncio.to_thread(prom.wait_for_value, "short_lived", 1.5)
        # Not updated again: gone from the exposition, so Prometheus marks it stale.
        await asyncio.to_thread(prom.wait_for, "short_lived", lambda rows: rows == [], 20.0)
        assert "short_lived" not in set(exporter.families())
    finally:
        await asyncio.to_thread(prom.stop)


async def test_namespace_const_labels_and_resource_labels(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    exporter = await started(
        namespace="app",
        const_labels={"region": "eu", "tier": 1},
        resource_to_telemetry_conversion={"enabled": True, "exclude_service_attributes": True},
    )
    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    data = add_metric(sm, "http.requests", "sum", monotonic=True)
    p = data.data_points.add(as_int=9, start_time_unix_nano=now - 10**9, time_unix_nano=now)
    set_attributes(p.attributes, {"host.name": "from-point"})
    await exporter.consume(payload_of(req))
    prom = await prometheus_for(prometheus_binary, tmp_path, exporter)
    try:
        row = await asyncio.to_thread(prom.wait_for_value, "app_http_requests_total", 9)
        labels = row["metric"]
        # The resource's attribute wins over the point's, as in the stock collector.
        assert labels["host_name"] == "h1"
        assert labels["deployment_environment"] == "test"
        assert labels["region"] == "eu" and labels["tier"] == "1"
        assert labels["job"] == "shop/checkout" and labels["instance"] == "pod-1"
        assert "service_name" not in labels and "service_instance_id" not in labels
        await asyncio.to_thread(prom.wait_for_value, "app_target_info", 1)
    finally:
        await asyncio.to_thread(prom.stop)


# ---- over plain HTTP


async def _get(port: int, path: str = "/metrics", **headers: str) -> tuple[int, dict[str, str], bytes]:
    # aiohttp asks for gzip unless told otherwise.
    headers.setdefault("Accept-Encoding", "identity")
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def test_content_negotiation_and_gzip(started: Callable[..., Any]) -> None:
    om = await started(enable_open_metrics=True)
    text_only = await started()
    for exporter in (om, text_only):
        await exporter.consume(payload_of(every_type_request(time.time_ns())))
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = await _get(om.port, Accept=accept)
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n") and b"# TYPE http_requests counter" in body
    assert b"# UNIT http_server_duration_seconds seconds" in body
    # Without enable_open_metrics the text format is served whatever the scraper prefers.
    status, headers, body = await _get(text_only.port, Accept=accept)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# EOF" not in body and b"# TYPE http_requests_total counter" in body
    status, headers, zipped = await _get(text_only.port, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped) == body
    status, _, _ = await _get(text_only.port, "/other")
    assert status == 404


async def test_exemplars_only_in_openmetrics(started: Callable[..., Any]) -> None:
    exporter = await started(enable_open_metrics=True)
    now = time.time_ns()
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, RESOURCE)
    p = add_metric(sm, "orders", "sum", monotonic=True).data_points.add(as_int=1, time_unix_nano=now)
    add_exemplar(p, 1.0, TRACE_ID, SPAN_ID, now)
    await exporter.consume(payload_of(req))
    text, _ = await exporter.scrape("text/plain")
    om, _ = await exporter.scrape("application/openmetrics-text; version=1.0.0")
    assert TRACE_ID.hex().encode() not in text
    assert f'# {{span_id="{SPAN_ID.hex()}",trace_id="{TRACE_ID.hex()}"}} 1.0'.encode() in om


# ---- accumulation rules


def _lines(body: bytes, prefix: str) -> list[str]:
    return [line for line in body.decode().splitlines() if line.startswith(prefix)]


async def test_point_rules() -> None:
    telemetry = Telemetry()
    exporter = make_exporter(telemetry)
    now = time.time_ns()

    def gauge(value: float, at: int, flags: int = 0) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, {"service.name": "s"})
        add_metric(sm, "temp", "gauge").data_points.add(as_double=value, time_unix_nano=at, flags=flags)
        return req

    await exporter.consume(payload_of(gauge(1.0, now)))
    # An older point does not replace a newer one.
    await exporter.consume(payload_of(gauge(0.5, now - 10**9)))
    body, _ = await exporter.scrape()
    assert [line.rsplit(" ", 1)[1] for line in _lines(body, "temp{")] == ["1.0"]
    # "No recorded value" ends the series.
    await exporter.consume(payload_of(gauge(0.0, now + 1, NO_RECORDED_VALUE)))
    body, _ = await exporter.scrape()
    assert _lines(body, "temp") == []

    # Delta histograms add up while each starts where the last ended; an overlapping one is dropped.
    def hist(counts: list[int], start: int, end: int) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, {"service.name": "s"})
        data = add_metric(sm, "lat", "histogram", unit="s", temporality=DELTA)
        data.data_points.add(start_time_unix_nano=start, time_unix_nano=end, count=sum(counts), sum=float(sum(counts)), explicit_bounds=[1.0], bucket_counts=counts)
        return req

    await exporter.consume(payload_of(hist([1, 2], now, now + 10)))
    await exporter.consume(payload_of(hist([3, 4], now + 10, now + 20)))
    await exporter.consume(payload_of(hist([100, 100], now + 5, now + 15)))
    body, _ = await exporter.scrape()
    assert 'lat_seconds_bucket{job="s",le="1.0",otel_scope_name="io.appguard.test",otel_scope_version="1.0.0"} 4.0' in body.decode()
    assert _lines(body, "lat_seconds_count")[0].endswith(" 10.0")

    # Delta exponential histograms at different scales merge at the smaller one.
    def expo(scale: int, offset: int, counts: list[int], start: int, end: int) -> ExportMetricsServiceRequest:
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, {"service.name": "s"})
        data = add_metric(sm, "size", "exponential_histogram", temporality=DELTA)
        p = data.data_points.add(start_time_unix_nano=start, time_unix_nano=end, scale=scale, count=sum(counts))
        p.positive.offset = offset
        p.positive.bucket_counts.extend(counts)
        return req

    # scale 1: buckets (2^0.5, 2], (2, 2^1.5]; scale 0: bucket (2, 4].
    await exporter.consume(payload_of(expo(1, 1, [1, 1], now, now + 10)))
    await exporter.consume(payload_of(expo(0, 1, [5], now + 10, now + 20)))
    body, _ = await exporter.scrape()
    buckets = {line.split('le="')[1].split('"')[0]: line.rsplit(" ", 1)[1] for line in _lines(body, "size_bucket")}
    assert buckets == {"0.0": "0.0", "2.0": "1.0", "4.0": "7.0", "+Inf": "7.0"}

    # A metric whose name is taken by another type is dropped; the first stays.
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, {"service.name": "s"})
    add_metric(sm, "lat_seconds", "gauge").data_points.add(as_double=3.0, time_unix_nano=now)
    add_metric(sm, "gone", "sum", temporality=DELTA).data_points.add(as_int=1, time_unix_nano=now)
    await exporter.consume(payload_of(req))
    body, _ = await exporter.scrape()
    assert _lines(body, "lat_seconds{") == [] and _lines(body, "# TYPE lat_seconds histogram")
    dropped = telemetry.registry.get_sample_value(
        "appguard_dropped_items_total", {"component": "exporter/prometheus", "otel_signal": "metrics", "reason": "not_exposable"}
    )
    # The gauge of a taken name and the non-monotonic delta sum.
    assert dropped == 2.0


async def test_send_timestamps_and_cached_families() -> None:
    exporter = make_exporter(send_timestamps=True)
    at = 1_700_000_000_123_000_000
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, {"service.name": "s"})
    add_metric(sm, "a", "gauge").data_points.add(as_int=1, time_unix_nano=at)
    add_metric(sm, "b", "gauge").data_points.add(as_int=2, time_unix_nano=at)
    await exporter.consume(payload_of(req))
    body, _ = await exporter.scrape()
    assert _lines(body, "a{")[0].endswith(" 1.0 1700000000123")
    families = exporter.accumulator.families
    assert families["a"].rendered and families["b"].rendered
    # Only the family that changed is rendered again.
    req = ExportMetricsServiceRequest()
    sm = scope_metrics(req, {"service.name": "s"})
    add_metric(sm, "a", "gauge").data_points.add(as_int=5, time_unix_nano=at + 10**9)
    await exporter.consume(payload_of(req))
    assert not families["a"].rendered and families["b"].rendered
    body, _ = await exporter.scrape()
    assert _lines(body, "a{")[0].endswith(" 5.0 1700000001123") and _lines(body, "b{")[0].endswith(" 2.0 1700000000123")


async def test_cumulative_sum_keeps_latest_and_start() -> None:
    exporter = make_exporter()
    now = time.time_ns()
    for value, at in ((10, now), (15, now + 10), (12, now + 5)):
        req = ExportMetricsServiceRequest()
        sm = scope_metrics(req, {"service.name": "s"})
        add_metric(sm, "c", "sum", monotonic=True, temporality=CUMULATIVE).data_points.add(as_int=value, start_time_unix_nano=now - 1, time_unix_nano=at)
        await exporter.consume(payload_of(req))
    body, _ = await exporter.scrape()
    assert _lines(body, "c_total{")[0].endswith(" 15.0")


async def test_sdk_metrics_through_the_exporter(prometheus_binary: str, tmp_path: Path, started: Callable[..., Any]) -> None:
    """What the real OpenTelemetry SDK produces (delta counter, exponential histogram, gauge)."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality as SdkTemporality
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource as SdkResource

    reader = InMemoryMetricReader(preferred_temporality={Counter: SdkTemporality.DELTA, Histogram: SdkTemporality.DELTA})
    provider = MeterProvider(
        resource=SdkResource.create({"service.name": "sdk-app", "service.instance.id": "sdk-1"}),
        metric_readers=[reader],
        views=[View(instrument_name="image.size", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("sdk.test", "0.1")
    orders = meter.create_counter("orders", unit="{order}")
    sizes = meter.create_histogram("image.size", unit="By")
    meter.create_observable_gauge("workers", callbacks=[lambda _: [Observation(4)]])

    exporter = await started()
    for batch in ((3, [100, 3000]), (4, [5000])):
        orders.add(batch[0], {"kind": "web"})
        for size in batch[1]:
            sizes.record(size)
        data = reader.get_metrics_data()
        assert data is not None
        await exporter.consume(payload_of(encode_metrics(data)))
    provider.shutdown()
    prom = await prometheus_for(prometheus_binary, tmp_path, exporter)
    try:
        row = await asyncio.to_thread(prom.wait_for_value, 'orders_total{kind="web"}', 7)
        assert row["metric"]["job"] == "sdk-app" and row["metric"]["instance"] == "sdk-1"
        assert row["metric"]["otel_scope_name"] == "sdk.test" and row["metric"]["otel_scope_version"] == "0.1"
        await asyncio.to_thread(prom.wait_for_value, "workers", 4)
        await asyncio.to_thread(prom.wait_for_value, "image_size_bytes_count", 3)
        await asyncio.to_thread(prom.wait_for_value, "image_size_bytes_sum", 8100)
        await asyncio.to_thread(prom.wait_for_value, 'image_size_bytes_bucket{le="+Inf"}', 3)
        # Every observation falls in a bucket whose le is at least its value.
        rows = await asyncio.to_thread(prom.query, "image_size_bytes_bucket")
        below = {float(r["metric"]["le"]): r["value"] for r in rows}
        assert max(v for le, v in below.items() if le < 100) == 0
        assert min(v for le, v in below.items() if le >= 5000) == 3
        assert min(v for le, v in below.items() if le >= 3000) >= 2
    finally:
        await asyncio.to_thread(prom.stop)
