"""Each processor alone, in process: items/s through it with a consumer that only counts.

    python -m bench.bench_processors [--requests 200] [--items 512]

Requests are pre-built as received ones are (parsed from bytes, bytes attached), a fresh
payload per call, so a processor that mutates pays for what it really costs. The figure for
the whole collector (gRPC in, OTLP out) beside each chain is bench/bench_pipeline.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

from bench.workload import request_for
from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.pdata import Payload, Signal
from collector.registry import default_registry
from collector.telemetry import Telemetry


class _Count:
    mutates_data = False

    def __init__(self) -> None:
        self.items = 0

    async def consume(self, payload: Payload) -> None:
        self.items += payload.items
        payload.to_bytes()  # what an OTLP exporter does next: serialize if the bytes are gone


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("memory_limiter", "memory_limiter", {"check_interval": "1s", "limit_mib": 8000}),
    ("resource (1 upsert)", "resource", {"attributes": [{"key": "deployment.environment.name", "value": "bench", "action": "upsert"}]}),
    ("attributes (insert + delete)", "attributes", {"actions": [{"key": "team", "value": "shop", "action": "insert"}, {"key": "thread.id", "action": "delete"}]}),
    ("filter (3 conditions)", "filter", {"traces": {"span": [
        'attributes["http.request.method"] == "DELETE"',
        'name == "healthcheck"',
        'IsMatch(attributes["url.path"], "^/internal/")',
    ]}}),
    ("batch", "batch", {"timeout": "10ms"}),
    ("python (per request, no-op)", "python", {"function": "bench.bench_processors:noop", "per": "request"}),
]


def noop(request: Any) -> None:
    """The python processor's cheapest function: looks at nothing."""


async def run_case(type_: str, raw_config: dict[str, Any], signal: Signal, bodies: list[bytes], rounds: int) -> float:
    sink = _Count()
    telemetry = Telemetry()
    factory = default_registry().get(Kind.PROCESSOR, type_)
    assert factory is not None
    config = factory.config_class.model_validate(raw_config)
    settings = CreateSettings(ComponentID(type_), Kind.PROCESSOR, telemetry, logging.getLogger("bench"))
    proc = factory.create(settings=settings, config=config, signal=signal, next_consumer=sink)
    await proc.start(Host())
    payloads = [Payload.from_bytes(signal, b) for _ in range(rounds) for b in bodies]
    start = time.process_time()
    # several in flight, as the receiver has them (the batch processor waits for its hand-off)
    chunk = 16
    for i in range(0, len(payloads), chunk):
        await asyncio.gather(*(proc.consume(p) for p in payloads[i : i + chunk]))
    await proc.shutdown()
    elapsed = time.process_time() - start
    return sink.items / elapsed if elapsed else 0.0


async def main_async(requests: int, items: int) -> None:
    signal = Signal.TRACES
    bodies = [request_for(signal, items).SerializeToString() for _ in range(8)]
    rounds = max(1, requests // len(bodies))
    print(f"{'processor alone (traces, ' + str(items) + ' spans a request)':<48} {'spans/s':>12} {'us/request':>11}")
    for label, type_, cfg in CASES:
        rate = await run_case(type_, cfg, signal, bodies, rounds)
        print(f"{label:<48} {rate:>12,.0f} {items / rate * 1e6:>11.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--items", type=int, default=512)
    a = p.parse_args()
    asyncio.run(main_async(a.requests, a.items))


if __name__ == "__main__":
    main()
