"""Throughput of the error-grouping engine over the stack-trace corpus (tests/corpus/).

Prints events per CPU second for parsing alone, for parsing plus fingerprinting with the cache
off (every event new), and with the cache on (the same stack traces arriving again, as they do
in production), overall and per language. Never fails on timing.

    python bench/bench_grouping.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters.errors.grouping import Grouper
from exporters.errors.stacktrace import parse_stacktrace
from tests.unit.test_grouping_corpus import CorpusEvent, group_event, load_corpus


def measure(events: Sequence[CorpusEvent], rounds: int, work: Callable[[CorpusEvent], object]) -> float:
    """Best-of-three events per CPU second of ``work`` over ``rounds`` passes of ``events``.

    CPU time of this process, not wall time: the figure then holds on a shared machine too.
    """
    rates = []
    for _ in range(3):
        start = time.process_time()
        for _ in range(rounds):
            for event in events:
                work(event)
        rates.append(rounds * len(events) / max(time.process_time() - start, 1e-9))
    return max(rates)


def parse_only(event: CorpusEvent) -> object:
    return parse_stacktrace(
        event.stacktrace,
        language=event.attributes.get("language"),
        exc_type=event.attributes.get("type"),
        exc_message=event.attributes.get("message"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="passes over the corpus per measurement")
    args = parser.parse_args()

    events = load_corpus()
    lines = [len((e.stacktrace or "").splitlines()) for e in events]
    print(f"corpus: {len(events)} events, {statistics.mean(lines):.1f} lines per stack trace on average")

    uncached = Grouper(cache_size=0)
    cached = Grouper(cache_size=4096)
    rows = [
        ("parse", measure(events, args.rounds, parse_only)),
        ("parse + fingerprint (no cache)", measure(events, args.rounds, lambda e: group_event(uncached, e))),
        ("parse + fingerprint (cache hits)", measure(events, args.rounds, lambda e: group_event(cached, e))),
    ]
    for name, rate in rows:
        print(f"{name:34s} {rate:12,.0f} events/s  {1e6 / rate:8.1f} µs/event")

    print("per language, parse + fingerprint (no cache):")
    by_language: dict[str, list[CorpusEvent]] = {}
    for event in events:
        by_language.setdefault(event.issue.split("/")[0], []).append(event)
    for language, subset in sorted(by_language.items()):
        rate = measure(
            subset, max(1, args.rounds * len(events) // (4 * len(subset))), lambda e: group_event(uncached, e)
        )
        print(f"  {language:12s} {len(subset):3d} events {rate:12,.0f} events/s  {1e6 / rate:8.1f} µs/event")


if __name__ == "__main__":
    main()
