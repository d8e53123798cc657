"""Benchmark: error events written per second by ErrorStore.write_events.

Batches look like what the errors exporter sends after grouping: a few hundred events each,
drawn from a few hundred issues with a skewed (Zipf-like) popularity, each with a stack trace,
ten frames, attributes and a user. Scenarios:

- one writer, fresh events;
- two writers at once (two pools, as two collector replicas would be), same issues;
- the same batches written again (every event a duplicate: the retry path).

Usage: python bench/bench_store.py [--events N] [--batch N] [--issues N]
The server is APPGUARD_BENCH_POSTGRES_DSN, else APPGUARD_TEST_POSTGRES_DSN, else
postgresql://postgres@127.0.0.1:5432/test, else an embedded PostgreSQL in a temporary directory.
A scratch database is created for the run and dropped after it. Figures only; nothing fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.embedded import EmbeddedPostgres
from storage.errors_store import ErrorEvent, ErrorStore, _copy_rows

TICKS = os.sysconf("SC_CLK_TCK")
STACK = "\n".join(
    f'  File "/srv/app/module_{n}.py", line {10 * n}, in handler_{n}\n    do_work_{n}()' for n in range(10)
)


def make_events(count: int, issues: int, rng: random.Random) -> list[ErrorEvent]:
    """Events over ``issues`` fingerprints, popular ones far more frequent, in the last hour."""
    weights = [1.0 / (rank + 1) for rank in range(issues)]
    picks = rng.choices(range(issues), weights=weights, k=count)
    now = datetime.now(UTC)
    frames = [{"filename": f"/srv/app/module_{n}.py", "lineno": 10 * n, "function": f"handler_{n}"} for n in range(10)]
    return [
        ErrorEvent(
            fingerprint=f"{issue:032x}",
            secondary_fingerprint=f"legacy-{issue:032x}",
            timestamp=now - timedelta(seconds=rng.random() * 3600),
            type="ValueError",
            message=f"invalid literal for int() with base 10: '{rng.randrange(10**6)}'",
            culprit=f"app.module_{issue % 10} in handler",
            trace_id=uuid.uuid4().hex,
            span_id=uuid.uuid4().hex[:16],
            session_id=f"s{rng.randrange(5000)}",
            service_name="checkout",
            service_version="1.4.2",
            environment="production",
            stacktrace=STACK,
            frames=frames,
            attributes={"http.route": "/api/cart", "http.status_code": 500},
            user_id=f"user-{rng.randrange(2000)}",
            user_agent="Mozilla/5.0",
        )
        for issue in picks
    ]


def batches(events: list[ErrorEvent], size: int) -> list[list[ErrorEvent]]:
    """``events`` cut into batches of ``size``."""
    return [events[i : i + size] for i in range(0, len(events), size)]


def server_cpu(dsn: str) -> float | None:
    """CPU seconds used so far by the server processes serving ``dsn``'s database.

    Read from /proc, so only for a server on this machine run by a user we may inspect; None
    otherwise. CPU time, unlike wall time, hardly changes when other work shares the machine.
    """
    with psycopg.connect(dsn) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


class Meter:
    """Wall time, this process's CPU time and the server's CPU time over a scenario."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def __enter__(self) -> Meter:
        self.server = server_cpu(self.dsn)
        self.client = time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.client = time.process_time() - self.client
        after = server_cpu(self.dsn)
        self.server = None if after is None or self.server is None else after - self.server

    def line(self, label: str, events: int, inserted: int) -> str:
        """One result line: rate, then CPU per event on each side."""
        server = "n/a" if self.server is None else f"{self.server / events * 1e6:5.1f}"
        return (
            f"{label:<28} {events / self.wall:9,.0f} events/s ({inserted} inserted in {self.wall:.2f} s); "
            f"CPU per event: client {self.client / events * 1e6:5.1f} us, server {server} us"
        )


async def write_all(store: ErrorStore, work: list[list[ErrorEvent]]) -> int:
    """Write the batches one after the other; return the events inserted."""
    inserted = 0
    for batch in work:
        inserted += (await store.write_events(batch)).inserted
    return inserted


async def run(dsn: str, events: int, batch: int, issues: int) -> None:
    """Run the scenarios against a migrated scratch database at ``dsn``."""
    rng = random.Random(7)
    first = make_events(events, issues, rng)
    second = make_events(events, issues, rng)
    third = make_events(events, issues, rng)

    started = time.perf_counter()
    for chunk in batches(first, batch):
        _copy_rows(chunk)
    encode = time.perf_counter() - started
    print(f"{'encoding only (client):':<28} {events / encode:9,.0f} events/s")

    store_a = await ErrorStore.open(dsn)
    store_b = await ErrorStore.open(dsn)
    try:
        with Meter(dsn) as meter:
            inserted = await write_all(store_a, batches(first, batch))
        print(meter.line("one writer:", len(first), inserted))

        half = len(second) // 2
        with Meter(dsn) as meter:
            counts = await asyncio.gather(
                write_all(store_a, batches(second[:half] + third[:half], batch)),
                write_all(store_b, batches(third[half:] + second[half:], batch)),
            )
        print(meter.line("two writers, shared issues:", len(second) + len(third), sum(counts)))

        with Meter(dsn) as meter:
            again = await write_all(store_a, batches(first, batch))
        print(meter.line("rewrite (all duplicates):", len(first), again))
    finally:
        await store_a.close()
        await store_b.close()

    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*), sum(event_count) FROM appguard.issues")
        row = await cur.fetchone()
        assert row is not None
        cur = await conn.execute("SELECT count(*) FROM appguard.error_events")
        stored = await cur.fetchone()
        assert stored is not None
        print(f"issues: {row[0]}, sum(event_count): {row[1]}, events stored: {stored[0]} (expected {3 * events})")


def main() -> None:
    """Parse arguments, find or start a server, run the benchmark in a scratch database."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--issues", type=int, default=300)
    args = parser.parse_args()

    dsn = os.environ.get(
        "APPGUARD_BENCH_POSTGRES_DSN",
        os.environ.get("APPGUARD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    embedded: EmbeddedPostgres | None = None
    data_dir = ""
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        data_dir = tempfile.mkdtemp(prefix="appguard-bench-pg-")
        embedded = EmbeddedPostgres(data_dir, database="bench")
        dsn = embedded.start()
        print(f"no server at the configured DSN; using an embedded PostgreSQL ({dsn})")

    name = f"appguard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        print(f"{args.events} events per scenario, batches of {args.batch}, {args.issues} issues")
        asyncio.run(run(make_conninfo(dsn, dbname=name), args.events, args.batch, args.issues))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
