"""What the ``attributes`` and ``resource`` processors cost per item, in-process.

For each signal and a few typical configs it pushes received payloads (parsed, bytes kept)
of 512 items through the processor into a sink that asks for the bytes, as an OTLP exporter
would, and prints microseconds per item for the processor alone and for processor plus
encoding. A "nothing to do" config (deleting a key that is absent) shows the bytes-kept path; an insert
of a key found nowhere in the request shows the append-without-looking path.

    python -m bench.bench_attributes [--items 512] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from processors import attributes, resource

from .workload import request_for

CONFIGS: dict[str, tuple[Any, dict[str, Any]]] = {
    "resource: upsert 2": (
        resource,
        {"attributes": [
            {"key": "deployment.environment.name", "value": "staging", "action": "upsert"},
            {"key": "cloud.region", "value": "eu-west-3", "action": "insert"},
        ]},
    ),
    "attributes: delete absent key": (attributes, {"actions": [{"key": "password", "action": "delete"}]}),
    # "cloud.region" occurs nowhere in the request: appended without reading the keys.
    "attributes: insert 1, key new to the request": (
        attributes,
        {"actions": [{"key": "cloud.region", "value": "eu-west-3", "action": "insert"}]},
    ),
    # "env" occurs in the request's bytes (in deployment.environment.name): each item's keys are read.
    "attributes: insert 1, key seen in the request": (
        attributes,
        {"actions": [{"key": "env", "value": "prod", "action": "insert"}]},
    ),
    "attributes: 4 mixed": (
        attributes,
        {"actions": [
            {"key": "env", "value": "prod", "action": "insert"},
            {"key": "client.address", "action": "hash"},
            {"key": "thread.id", "action": "delete"},
            {"key": "http.response.status_code", "action": "convert", "converted_type": "string"},
        ]},
    ),
    "attributes: include regexp + 1 (spans, logs)": (
        attributes,
        {
            "include": {"match_type": "regexp", "attributes": [{"key": "url.path", "value": "^/api/items/1"}]},
            "actions": [{"key": "env", "value": "prod", "action": "insert"}],
        },
    ),
}


class BytesSink:
    """Asks for the bytes, as an OTLP exporter does."""

    mutates_data = False

    async def consume(self, payload: Payload) -> None:
        payload.to_bytes()


async def measure(module: Any, config: dict[str, Any], signal: Signal, raw: bytes, items: int, rounds: int) -> tuple[float, float]:
    cfg = module.factory.config_class.model_validate(config)
    settings = CreateSettings(ComponentID.parse(module.factory.type), Kind.PROCESSOR, Telemetry())
    proc = module.factory.create(settings=settings, config=cfg, signal=signal, next_consumer=BytesSink())
    parse_only = 0.0
    total = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        payload = Payload.from_bytes(signal, raw, items=items)
        parsed = time.perf_counter()
        await proc.consume(payload)
        done = time.perf_counter()
        parse_only += parsed - start
        total += done - parsed
    # Processor plus encoding, per item; and the processor with a sink that never encodes.
    with_encoding = total / rounds / items * 1e6
    proc.next = _Nothing()
    total = 0.0
    for _ in range(rounds):
        payload = Payload.from_bytes(signal, raw, items=items)
        start = time.perf_counter()
        await proc.consume(payload)
        total += time.perf_counter() - start
    return total / rounds / items * 1e6, with_encoding


class _Nothing:
    mutates_data = False

    async def consume(self, payload: Payload) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    print(f"{'signal':8} {'config':48} {'us/item':>8} {'+encode':>8}")
    for signal in Signal:
        raw = request_for(signal, args.items).SerializeToString()
        for name, (module, config) in CONFIGS.items():
            if signal is Signal.METRICS and "include" in config:
                continue  # metrics are selected by name only
            alone, with_encoding = asyncio.run(measure(module, config, signal, raw, args.items, args.rounds))
            print(f"{signal.value:8} {name:48} {alone:8.2f} {with_encoding:8.2f}")


if __name__ == "__main__":
    main()
