"""How to merge requests into a batch, measured; and the batch processor's own cost.

Part 1 merges 16 received requests (parsed, bytes kept) of 512 items each, the ways one could:
copying resource entries into a new message (add().CopyFrom, extend, MergeFrom), or joining
the requests' bytes (what collector/split.py does). What a batch costs in the end depends on
who reads it next, so each is followed by what an OTLP exporter pays (bytes to send) and what
a stage reading the data pays (a parsed message).

Part 2 pushes payloads through the batch processor in-process (many concurrent callers, an
exporter-like sink that asks for the bytes) and prints items/s, with and without
send_batch_max_size splitting.

    python -m bench.bench_batch [--requests 16] [--items 512] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import REQUEST_TYPES, ExportRequest, Payload, Signal
from collector.split import merge_payloads, merge_requests, resources_of, split_request
from collector.telemetry import Telemetry
from processors.batch import BatchConfig, BatchProcessor

from .workload import request_for


def timed(fn: Callable[[], object], rounds: int) -> float:
    """Mean milliseconds per call."""
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds * 1e3


def merge_strategies(signal: Signal, payloads: list[Payload], rounds: int) -> None:
    messages = [p.message for p in payloads]
    request_type = REQUEST_TYPES[signal]

    def extend() -> ExportRequest:
        out = request_type()
        for m in messages:
            resources_of(signal, out).extend(resources_of(signal, m))
        return out

    def merge_from() -> ExportRequest:
        out = request_type()
        for m in messages:
            out.MergeFrom(m)  # type: ignore[arg-type]
        return out

    copied = merge_requests(signal, messages)
    joined = merge_payloads(signal, payloads)
    rows = [
        ("add().CopyFrom (merge_requests)", timed(lambda: merge_requests(signal, messages), rounds)),
        ("extend", timed(extend, rounds)),
        ("MergeFrom", timed(merge_from, rounds)),
        ("bytes join (merge_payloads)", timed(lambda: merge_payloads(signal, payloads), rounds)),
    ]
    to_bytes = timed(copied.SerializeToString, rounds)
    to_message = timed(lambda: request_type.FromString(joined.to_bytes()), rounds)
    print(f"\n{signal.value}: {len(payloads)} requests, {sum(p.items for p in payloads)} items")
    print(f"  {'merge':34s} {'merge ms':>9s} {'+bytes ms':>10s} {'+message ms':>12s}")
    for name, ms in rows:
        if name.startswith("bytes"):
            print(f"  {name:34s} {ms:9.2f} {ms:10.2f} {ms + to_message:12.2f}")
        else:
            print(f"  {name:34s} {ms:9.2f} {ms + to_bytes:10.2f} {ms:12.2f}")
    max_items = max(1, sum(p.items for p in payloads) // 5)
    split_ms = timed(lambda: split_request(signal, copied, max_items), rounds)
    print(f"  split_request into parts of {max_items}: {split_ms:.2f} ms")


class BytesSink:
    """Takes what an OTLP exporter takes: the bytes of each payload."""

    mutates_data = False

    def __init__(self) -> None:
        self.items = 0

    async def consume(self, payload: Payload) -> None:
        payload.to_bytes()
        self.items += payload.items


async def through_processor(signal: Signal, raw: bytes, config: BatchConfig, total: int, concurrency: int) -> float:
    sink = BytesSink()
    settings = CreateSettings(ComponentID("batch"), Kind.PROCESSOR, Telemetry())
    processor = BatchProcessor(settings, config, signal, sink)
    sent = 0

    async def caller() -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            await processor.consume(Payload.from_bytes(signal, raw))

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await processor.shutdown()
    return sink.items / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    for signal in Signal:
        raw = request_for(signal, args.items).SerializeToString()
        payloads = [Payload.from_bytes(signal, raw) for _ in range(args.requests)]
        merge_strategies(signal, payloads, args.rounds)
        total = args.requests * args.rounds
        for label, config in (
            ("batch defaults", BatchConfig()),
            ("send_batch_max_size 2048", BatchConfig(send_batch_size=2048, send_batch_max_size=2048)),
        ):
            rate = asyncio.run(through_processor(signal, raw, config, total, concurrency=64))
            print(f"  processor, {label:26s} {rate:12,.0f} items/s (parse of each request included)")


if __name__ == "__main__":
    main()
