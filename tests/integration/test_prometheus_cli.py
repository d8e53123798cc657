"""End to end through the real CLI: an application's OpenTelemetry SDK sends OTLP to
``appguard-collector``, which both serves the metrics for a Prometheus to scrape and remote
writes them into a second Prometheus. Both servers must hold the same series and values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.sdk import send_metrics
from tests.support.net import free_port
from tests.support.process import CollectorProcess
from tests.support.prometheus import PrometheusServer, prometheus_binary

__all__ = ["prometheus_binary"]

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers(prometheus_binary: str, tmp_path: Path) -> Iterator[tuple[CollectorProcess, PrometheusServer, PrometheusServer]]:
    grpc_port, scrape_port = free_port(), free_port()
    receiver = PrometheusServer(prometheus_binary, tmp_path, remote_write_receiver=True).start()
    scraper = PrometheusServer(prometheus_binary, tmp_path, targets=[f"127.0.0.1:{scrape_port}"]).start()
    config = f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
exporters:
  prometheus:
    endpoint: 127.0.0.1:{scrape_port}
  prometheusremotewrite:
    endpoint: {receiver.remote_write_url}
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus, prometheusremotewrite]
"""
    proc = CollectorProcess(config, tmp_path).start()
    proc.grpc_port = grpc_port  # type: ignore[attr-defined]
    try:
        proc.wait_ready()
        yield proc, scraper, receiver
    finally:
        code = proc.stop()
        scraper.stop()
        receiver.stop()
        assert code == 0, proc.output()


def test_sdk_metrics_reach_both_prometheus_servers(servers: tuple[CollectorProcess, PrometheusServer, PrometheusServer]) -> None:
    proc, scraper, receiver = servers
    send_metrics("grpc", proc.grpc_port, service="cli-shop")  # type: ignore[attr-defined]
    for prom in (scraper, receiver):
        row = prom.wait_for_value('orders_total{shop="eu"}', 30)
        assert row["metric"]["job"] == "cli-shop" and row["metric"]["otel_scope_name"] == "e2e.meter"
        prom.wait_for_value('orders_total{shop="us"}', 25)
        prom.wait_for_value("queue_depth", 2)
        prom.wait_for_value('latency_milliseconds_count{route="/api"}', 10)
        prom.wait_for_value('latency_milliseconds_sum{route="/api"}', sum(i * 12.5 for i in range(10)))
        prom.wait_for_value('temperature{room="a"}', 21.5)
    # The remote written samples carry the SDK's own timestamps; the scraped ones the scrape's.
    assert receiver.query("count(orders_total)")[0]["value"] == 2
