"""OTLP/gRPC load generator: pre-serialized requests, several in flight, for a fixed time.

Run as a separate process (``python -m bench.loadgen``) so it does not share the collector's
core. Prints one JSON line: requests sent, requests refused, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc

from bench.workload import request_for
from collector.pdata import Signal

_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


async def run(target: str, signal: Signal, items: int, concurrency: int, duration: float) -> dict[str, float]:
    # A handful of distinct requests, serialized once; the loop only sends bytes.
    bodies = [request_for(signal, items).SerializeToString() for _ in range(8)]
    sent = refused = 0
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(_METHODS[signal], request_serializer=None, response_deserializer=None)
        deadline = time.monotonic() + duration

        async def worker(k: int) -> None:
            nonlocal sent, refused
            i = k
            while time.monotonic() < deadline:
                try:
                    await call(bodies[i % len(bodies)], timeout=10)
                    sent += 1
                except grpc.aio.AioRpcError:
                    refused += 1
                    await asyncio.sleep(0.01)
                i += 1

        start = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.monotonic() - start
    return {"requests": sent, "refused": refused, "seconds": elapsed, "items_per_request": items}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--signal", default="traces", choices=[s.value for s in Signal])
    p.add_argument("--items", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.target, Signal(a.signal), a.items, a.concurrency, a.duration))))


if __name__ == "__main__":
    main()
