"""What the Prometheus exporters cost per metric point, in-process.

* ``prometheus`` consume: points folded into the accumulator per second (gauges, cumulative
  sums and 8-bucket histograms mixed, 512 points per request, as ``bench.workload`` makes
  them);
* ``prometheus`` scrape: the text exposition after every series changed, and again with
  nothing changed (the cached family texts), in samples per second;
* ``prometheusremotewrite`` encoding: translation, WriteRequest building and snappy, points
  per second (no network).

    python -m bench.bench_prometheus [--points 512] [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from exporters.prometheusremotewrite import PrometheusRemoteWriteConfig, PrometheusRemoteWriteExporter

from .workload import metrics_request


def _settings(name: str) -> CreateSettings:
    logger = logging.getLogger("appguard.bench")
    logger.setLevel(logging.ERROR)
    return CreateSettings(ComponentID(name), Kind.EXPORTER, Telemetry(), logger)


def _payloads(points: int, services: int) -> list[Payload]:
    """One request per service (distinct series), parsed from bytes as a receiver does."""
    out = []
    for i in range(services):
        req = metrics_request(points)
        kv = req.resource_metrics[0].resource.attributes.add()
        kv.key = "service.instance.id"
        kv.value.string_value = f"instance-{i}"
        out.append(Payload.from_bytes(Signal.METRICS, req.SerializeToString()))
    return out


async def bench_pull(points: int, rounds: int) -> None:
    exporter = PrometheusExporter(_settings("prometheus"), PrometheusExporterConfig())
    payloads = _payloads(points, rounds)
    total = sum(p.items for p in payloads)
    start = time.perf_counter()
    for payload in payloads:
        await exporter.consume(payload)
    elapsed = time.perf_counter() - start
    print(f"prometheus consume, new series:     {total / elapsed:12,.0f} points/s  ({exporter.series_count()} series)")
    # The same series again (values replaced): the steady state of a running pipeline.
    fresh = _payloads(points, rounds)
    start = time.perf_counter()
    for payload in fresh:
        await exporter.consume(payload)
    elapsed = time.perf_counter() - start
    print(f"prometheus consume, known series:   {total / elapsed:12,.0f} points/s")

    samples = sum(len(s.samples) for s in exporter.accumulator.series.values())
    start = time.perf_counter()
    body, _ = await exporter.scrape("text/plain;version=0.0.4")
    elapsed = time.perf_counter() - start
    print(f"prometheus scrape, all changed:     {samples / elapsed:12,.0f} samples/s  ({len(body) / 1e6:.1f} MB, {elapsed * 1000:.0f} ms)")
    start = time.perf_counter()
    await exporter.scrape("text/plain;version=0.0.4")
    elapsed = time.perf_counter() - start
    print(f"prometheus scrape, nothing changed: {samples / elapsed:12,.0f} samples/s  ({elapsed * 1000:.1f} ms)")


def bench_remote_write(points: int, rounds: int) -> None:
    config = PrometheusRemoteWriteConfig.model_validate({"endpoint": "http://127.0.0.1:1/api/v1/write"})
    exporter = PrometheusRemoteWriteExporter(_settings("prometheusremotewrite"), config, frozenset({Signal.METRICS}))
    payloads = _payloads(points, rounds)
    total = sum(p.items for p in payloads)
    start = time.perf_counter()
    size = 0
    for payload in payloads:
        size += sum(len(b) for b in exporter.prepare(payload).bodies)
    elapsed = time.perf_counter() - start
    print(f"remote write encode (translate, protobuf, snappy): {total / elapsed:12,.0f} points/s  ({size / total:.0f} B/point compressed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=512, help="data points per request")
    parser.add_argument("--rounds", type=int, default=40, help="requests (each from another service instance)")
    args = parser.parse_args()
    asyncio.run(bench_pull(args.points, args.rounds))
    bench_remote_write(args.points, args.rounds)


if __name__ == "__main__":
    main()
