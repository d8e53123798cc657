"""The filter processor alone: spans/s through a three-condition filter.

Pre-built export requests of 512 spans (``bench.workload``; 8 attributes per span, 2% of them
health checks, a quarter of them ``redis GET``) are parsed before timing, as the receiver
would hand them over; each is then filtered once (a fresh request each time, so none of the
protobuf objects are already warm). Scenarios:

  explicit:  traces.span with three conditions, request bytes attached (as received)
  inferred:  the same three as trace_conditions
  mutated:   the same, on requests without their bytes (changed by an earlier processor)
  no match:  three conditions that match nothing (the request passes through untouched)

    python -m bench.bench_filter [--requests 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from bench.workload import traces_request
from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from processors.filter import FilterConfig, factory

SPANS = 512

CONDITIONS = [
    'attributes["url.path"] == "/healthz"',
    'resource.attributes["deployment.environment.name"] == "staging"',
    'name == "redis GET"',
]
INFERRED = [
    'span.attributes["url.path"] == "/healthz"',
    'resource.attributes["deployment.environment.name"] == "staging"',
    'span.name == "redis GET"',
]
NO_MATCH = [
    'attributes["url.path"] == "/nowhere"',
    'resource.attributes["deployment.environment.name"] == "staging"',
    'name == "nothing"',
]


class _Nop:
    mutates_data = False

    def __init__(self) -> None:
        self.items = 0

    async def consume(self, payload: Payload) -> None:
        self.items += payload.items


def requests(count: int) -> list[bytes]:
    out = []
    for seed in range(count):
        req = traces_request(SPANS, seed=seed)
        for i, span in enumerate(req.resource_spans[0].scope_spans[0].spans):
            if i % 50 == 0:
                span.attributes[1].value.string_value = "/healthz"
        out.append(req.SerializeToString())
    return out


def measure(config: dict[str, Any], raws: list[bytes], keep_bytes: bool) -> tuple[float, float, int]:
    """(spans/s wall, spans/s CPU, spans passed on) for one pass over fresh payloads."""
    sink = _Nop()
    settings = CreateSettings(ComponentID("filter", "bench"), Kind.PROCESSOR, Telemetry(), logging.getLogger("bench"))
    proc = factory.create(settings=settings, config=FilterConfig.model_validate(config), signal=Signal.TRACES, next_consumer=sink)
    payloads = []
    for raw in raws:
        payload = Payload.from_bytes(Signal.TRACES, raw)
        if not keep_bytes:
            payload.mutable()
        payloads.append(payload)

    async def go() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for payload in payloads:
            await proc.consume(payload)
        return time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = asyncio.run(go())
    spans = len(payloads) * SPANS
    return spans / wall, spans / cpu, sink.items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="requests of 512 spans per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario; the best is shown")
    args = parser.parse_args()
    raws = requests(args.requests)
    scenarios: list[tuple[str, dict[str, Any], bool]] = [
        ("explicit", {"traces": {"span": CONDITIONS}}, True),
        ("inferred", {"trace_conditions": INFERRED}, True),
        ("mutated", {"traces": {"span": CONDITIONS}}, False),
        ("no match", {"traces": {"span": NO_MATCH}}, True),
    ]
    print(f"filter processor, {args.requests} requests x {SPANS} spans, best of {args.rounds}")
    for label, config, keep in scenarios:
        results = [measure(config, raws, keep) for _ in range(args.rounds)]
        wall, cpu, kept = max(results)
        print(f"  {label:9s} {wall:>12,.0f} spans/s   ({cpu:,.0f} spans/s of CPU)   kept {kept / (args.requests * SPANS):.0%}")


if __name__ == "__main__":
    main()
