"""What the ``loki`` exporter costs per log record, in-process.

Two figures per line format, on requests of ``--records`` log records (4 attributes, trace
context, one resource and scope, as ``bench.workload`` makes them):

* encode: the exporter's conversion to Loki streams, protobuf encoding and snappy block, the
  CPU work of a push;
* push: records per second through the whole exporter (queue, HTTP, the test Loki server
  decoding and validating each push strictly) on this one event loop; the server's decoding
  shares the core, so this is a floor.

    python -m bench.bench_loki [--records 512] [--rounds 40] [--pushes 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.loki import LokiExporter, LokiExporterConfig, wire
from tests.support.loki_server import LokiServer

from .workload import logs_request

FORMATS = ("json", "logfmt", "raw")


def _exporter(endpoint: str, fmt: str) -> LokiExporter:
    config = LokiExporterConfig.model_validate({"endpoint": endpoint, "format": fmt, "sending_queue": {"num_consumers": 4}})
    settings = CreateSettings(ComponentID("loki"), Kind.EXPORTER, Telemetry(), logging.getLogger("bench.loki"))
    return LokiExporter(settings, config, frozenset({Signal.LOGS}))


def _fresh_request(records: int) -> bytes:
    # Timestamps of now, so that the server's age checks accept the entries.
    req = logs_request(records)
    now = time.time_ns()
    for rec in req.resource_logs[0].scope_logs[0].log_records:
        rec.time_unix_nano = rec.observed_time_unix_nano = now
    return req.SerializeToString()


def encode_rate(fmt: str, records: int, rounds: int) -> float:
    """Log records per second through convert + encode + snappy (best of ``rounds``)."""
    exporter = _exporter("http://127.0.0.1:9/loki/api/v1/push", fmt)
    raw = _fresh_request(records)
    best = float("inf")
    for _ in range(rounds):
        payload = Payload.from_bytes(Signal.LOGS, raw)
        start = time.perf_counter()
        pushes = exporter.encode(payload)
        for push in pushes:
            wire.snappy_block(push.body)
        best = min(best, time.perf_counter() - start)
    return records / best


async def push_rate(fmt: str, records: int, pushes: int) -> float:
    """Log records per second through the exporter into the test Loki server."""
    async with LokiServer() as loki:
        exporter = _exporter(loki.push_url, fmt)
        await exporter.start(Host())
        raw = _fresh_request(records)
        start = time.perf_counter()
        for _ in range(pushes):
            await exporter.consume(Payload.from_bytes(Signal.LOGS, raw))
        await loki.wait_for_entries(records * pushes, timeout=600)
        elapsed = time.perf_counter() - start
        await exporter.shutdown()
    return records * pushes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=512, help="log records per request")
    parser.add_argument("--rounds", type=int, default=40, help="encode rounds (the best one counts)")
    parser.add_argument("--pushes", type=int, default=200, help="requests pushed to the server per format")
    args = parser.parse_args()
    print(f"loki exporter, {args.records} records per request")
    print(f"{'format':<8} {'encode (records/s)':>20} {'us/record':>10} {'push to server (records/s)':>28}")
    for fmt in FORMATS:
        encode = encode_rate(fmt, args.records, args.rounds)
        pushed = asyncio.run(push_rate(fmt, args.records, args.pushes))
        print(f"{fmt:<8} {encode:>20,.0f} {1e6 / encode:>10.1f} {pushed:>28,.0f}")


if __name__ == "__main__":
    main()
