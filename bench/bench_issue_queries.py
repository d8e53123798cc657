"""Benchmark: latency of the dashboard's queries over a million stored error events.

Seeds a scratch database in SQL (generate_series, not the Python write path): ``--issues``
issues (5,000) over eight services and three environments, and ``--events`` events
(1,000,000) spread over the last 30 days with a skewed popularity (the top 1% of issues get
about a fifth of the events), each with a 10-frame exception, attributes, a user and a user
agent; releases grow with time. Then it times, with the cache off and on:

- the issue list: the default view, filters, free text, numeric and time terms, a page deep
  in the list, event-level terms (release, tag) over the last 24 hours;
- the issue detail (latest event with parsed frames, tags over the latest 1,000 events,
  counts) for issues drawn with the same skew as the events;
- an issue's events page, the project chart (7 days) and the dashboard home (24 hours).

"cached" figures are Redis hits (the entry was filled beforehand); "uncached" ones run
against PostgreSQL every time. Figures only; nothing fails on timing.

Usage: python bench/bench_issue_queries.py [--events N] [--issues N] [--runs N] [--keep]
The server is APPGUARD_BENCH_POSTGRES_DSN, else APPGUARD_TEST_POSTGRES_DSN, else
postgresql://postgres@127.0.0.1:5432/test; Redis is APPGUARD_BENCH_REDIS_URL, else
APPGUARD_TEST_REDIS_URL, else redis://127.0.0.1:6379/0 (an embedded one when that does not
answer). The scratch database is dropped afterwards unless ``--keep``; ``--reuse NAME`` runs
the timings on a database kept earlier.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters.errors.stacktrace import parse_stacktrace
from storage import partitions
from storage.cache import QueryCache
from storage.embedded import EmbeddedRedis
from storage.issue_queries import IssueFilters, IssueQueries, Sort
from storage.migrations import migrate

DAYS = 30
SERVICES = ["checkout", "cart", "login", "payments", "search", "catalog", "shipping", "web"]
ENVIRONMENTS = ["production", "production", "production", "staging", "development"]
TYPES = [
    "TypeError",
    "ValueError",
    "KeyError",
    "ConnectionError",
    "TimeoutError",
    "IndexError",
    "AttributeError",
    "RuntimeError",
    "PermissionError",
    "DecodeError",
]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "python-requests/2.31.0",
]
STACK = (
    "Traceback (most recent call last):\n"
    + "".join(
        f'  File "/srv/app/module_{n}.py", line {10 * n + 3}, in handler_{n}\n    do_work_{n}(request)\n'
        for n in range(10)
    )
    + "ValueError: invalid literal for int() with base 10: 'abc'"
)


def seed_sql(issues: int, events: int) -> list[tuple[str, dict[str, Any]]]:
    """The statements that fill a migrated database, with their parameters."""
    frames = Jsonb([e.to_dict() for e in parse_stacktrace(STACK, language="python").exceptions])
    return [
        (
            """
            INSERT INTO appguard.issues (fingerprint, title, type, culprit, level, service_name, environment,
                                         status, substatus, resolved_at, first_seen, last_seen, metadata)
            SELECT 'fp-' || n,
                   t.type || ': ' || (ARRAY['connection reset by peer', 'invalid literal for int()',
                                            'object has no attribute ''total''', 'list index out of range',
                                            'permission denied for table orders'])[1 + n %% 5] || ' #' || n,
                   t.type,
                   'app.module_' || (n %% 40) || ' in handler_' || (n %% 7),
                   CASE WHEN n %% 20 = 0 THEN 'fatal' WHEN n %% 7 = 0 THEN 'warning' ELSE 'error' END,
                   (%(services)s::text[])[1 + n %% cardinality(%(services)s::text[])],
                   (%(envs)s::text[])[1 + (n / 8) %% cardinality(%(envs)s::text[])],
                   s.status,
                   CASE WHEN s.status = 'unresolved' THEN (ARRAY['new', 'ongoing', 'regressed'])[1 + n %% 3] END,
                   CASE WHEN s.status = 'resolved' THEN now() - interval '1 day' END,
                   now(), now(), jsonb_build_object('type', t.type)
            FROM generate_series(1, %(issues)s::int) AS n
            CROSS JOIN LATERAL (SELECT (%(types)s::text[])[1 + n %% cardinality(%(types)s::text[])] AS type) t
            CROSS JOIN LATERAL (SELECT CASE WHEN n %% 20 < 3 THEN 'resolved' WHEN n %% 20 = 3 THEN 'ignored'
                                            ELSE 'unresolved' END AS status) s
            """,
            {"issues": issues, "services": SERVICES, "envs": ENVIRONMENTS, "types": TYPES},
        ),
        (
            """
            INSERT INTO appguard.error_events (event_id, "timestamp", received_at, issue_id, fingerprint, level,
                type, message, culprit, trace_id, span_id, session_id, service_name, service_version, environment,
                user_id, user_agent, stacktrace, frames, attributes)
            SELECT gen_random_uuid(), e.ts, e.ts, i.id, i.fingerprint, i.level, i.type, i.title || ' (' || g || ')',
                   i.culprit, md5(g::text), left(md5(g::text || 's'), 16),
                   CASE WHEN g %% 3 = 0 THEN 'session-' || (g %% 50000) END,
                   i.service_name, '1.' || (%(days)s - 1 - floor(extract(epoch FROM now() - e.ts) / 86400))::int || '.0',
                   i.environment, 'user-' || floor(random() * 20000)::int,
                   (%(agents)s::text[])[1 + g %% cardinality(%(agents)s::text[])],
                   %(stack)s, %(frames)s,
                   jsonb_build_object('http.route', '/api/v1/' || (ARRAY['orders', 'cart', 'users', 'items'])[1 + g %% 4],
                                      'http.method', (ARRAY['GET', 'POST', 'PUT'])[1 + g %% 3],
                                      'host.name', 'web-' || (g %% 12), 'telemetry.sdk.language', 'python',
                                      'service.name', i.service_name)
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
            CROSS JOIN LATERAL (SELECT 1 + floor(%(issues)s * random() ^ 3)::bigint AS issue,
                                       now() - random() * make_interval(days => %(days)s) AS ts
                                WHERE g > 0) e
            JOIN appguard.issues i ON i.id = e.issue
            """,
            {"issues": issues, "days": DAYS, "agents": AGENTS, "stack": STACK, "frames": frames},
        ),
    ]


FINISH_SQL = [
    """
    UPDATE appguard.issues i
    SET first_seen = a.first_ts, last_seen = a.last_ts, event_count = a.n,
        first_release = a.first_release, last_release = a.last_release
    FROM (SELECT issue_id, min("timestamp") AS first_ts, max("timestamp") AS last_ts, count(*) AS n,
                 (array_agg(service_version ORDER BY "timestamp"))[1] AS first_release,
                 (array_agg(service_version ORDER BY "timestamp" DESC))[1] AS last_release
          FROM appguard.error_events GROUP BY issue_id) a
    WHERE i.id = a.issue_id
    """,
    """
    INSERT INTO appguard.issue_users (issue_id, user_key)
    SELECT DISTINCT issue_id, 'id:' || user_id FROM appguard.error_events
    """,
    """
    UPDATE appguard.issues i SET user_count = u.n
    FROM (SELECT issue_id, count(*) AS n FROM appguard.issue_users GROUP BY issue_id) u
    WHERE i.id = u.issue_id
    """,
    "INSERT INTO appguard.issue_fingerprints (hash, issue_id) SELECT fingerprint, id FROM appguard.issues",
]


async def seed(dsn: str, issues: int, events: int) -> None:
    """Migrate and fill the database, printing how long each part took."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrate(conn)
        today = datetime.now(UTC).date()
        for offset in range(DAYS + 1):
            await partitions.create_partition(conn, today - timedelta(days=offset))
        await partitions.create_partition(conn, today + timedelta(days=1))
        (issues_sql, issues_params), (events_sql, events_params) = seed_sql(issues, events)
        started = time.perf_counter()
        await conn.execute(issues_sql, issues_params)
        chunk = 100_000
        for first in range(1, events + 1, chunk):
            await conn.execute(events_sql, {**events_params, "first": first, "last": min(events, first + chunk - 1)})
            done = min(events, first + chunk - 1)
            print(
                f"\r  seeding events: {done:,}/{events:,} ({time.perf_counter() - started:.0f} s)", end="", flush=True
            )
        print()
        for statement in FINISH_SQL:
            await conn.execute(statement)
        await conn.execute("VACUUM ANALYZE")
        print(f"  seeded {issues:,} issues and {events:,} events in {time.perf_counter() - started:.0f} s")


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` (0-1) of the sorted samples."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def timed(label: str, runs: int, call: Callable[[int], Awaitable[Any]]) -> tuple[str, float, float]:
    """p50 and p99 in milliseconds of ``runs`` sequential calls (``call(n)`` for run n)."""
    samples: list[float] = []
    for n in range(runs):
        started = time.perf_counter()
        await call(n)
        samples.append((time.perf_counter() - started) * 1000)
    return label, percentile(samples, 0.5), percentile(samples, 0.99)


def lister(
    queries: IssueQueries, filters: IssueFilters, order: Sort, cursor: str | None
) -> Callable[[int], Awaitable[Any]]:
    """A timed call listing issues with these arguments."""
    return lambda _: queries.list_issues(filters, sort=order, cursor=cursor)


async def measure(dsn: str, redis_url: str, runs: int, issues: int) -> None:
    """Time every query uncached, then cached; the cache's keys are removed afterwards."""
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"appguard-bench:{uuid.uuid4().hex[:8]}:"
    try:
        await _measure(dsn, QueryCache(client, prefix=prefix, ttl=3600), runs, issues)
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _measure(dsn: str, cache: QueryCache, runs: int, issues: int) -> None:
    rng = random.Random(11)
    # Issues drawn like the events: popular ones more often.
    picks = [1 + int(issues * rng.random() ** 3) for _ in range(runs)]
    async with AsyncConnectionPool(dsn, min_size=2, max_size=4, kwargs={"autocommit": True}) as pool:
        plain = IssueQueries(pool, cursor_secret=b"bench")
        cached = IssueQueries(pool, cache=cache, cursor_secret=b"bench")
        deep = await plain.list_issues(IssueFilters(query="is:unresolved"), sort=Sort.USERS, limit=25)
        for _ in range(3):
            assert deep.next_cursor is not None
            deep = await plain.list_issues(
                IssueFilters(query="is:unresolved"), sort=Sort.USERS, cursor=deep.next_cursor
            )
        lists: list[tuple[str, IssueFilters, Sort, str | None]] = [
            ("list: is:unresolved (default view)", IssueFilters(query="is:unresolved"), Sort.LAST_SEEN, None),
            (
                "list: service+env+level, by events",
                IssueFilters(
                    services=("checkout",), environments=("production",), levels=("error",), statuses=("unresolved",)
                ),
                Sort.EVENTS,
                None,
            ),
            (
                "list: free text 'connection reset'",
                IssueFilters(query='is:unresolved "connection reset"'),
                Sort.LAST_SEEN,
                None,
            ),
            (
                "list: events:>100 users:>=5 age:-7d",
                IssueFilters(query="events:>100 users:>=5 age:-7d"),
                Sort.USERS,
                None,
            ),
            (
                "list: !env:staging type:TypeError",
                IssueFilters(query="!env:staging type:TypeError"),
                Sort.FIRST_SEEN,
                None,
            ),
            ("list: 4th page by users", IssueFilters(query="is:unresolved"), Sort.USERS, deep.prev_cursor),
            (
                "list: release:1.29.0, last 24h",
                IssueFilters(query="release:1.29.0", period=timedelta(hours=24)),
                Sort.LAST_SEEN,
                None,
            ),
            (
                "list: tag.http.route, last 24h",
                IssueFilters(query="tag.http.route:/api/v1/cart", period=timedelta(hours=24)),
                Sort.LAST_SEEN,
                None,
            ),
            ("list: user:user-42", IssueFilters(query="user:user-42"), Sort.LAST_SEEN, None),
        ]
        rows: list[tuple[str, float, float]] = []
        for label, filters, order, cursor in lists:
            rows.append(await timed(label, runs, lister(plain, filters, order, cursor)))
        rows.append(await timed("detail (skewed issues)", runs, lambda n: plain.get_issue_detail(picks[n])))
        rows.append(await timed("events page (skewed issues)", runs, lambda n: plain.list_events(picks[n])))
        rows.append(
            await timed(
                "project chart, 7 days by hour",
                max(5, runs // 10),
                lambda _: plain.project_chart(period=timedelta(days=7)),
            )
        )
        rows.append(
            await timed(
                "dashboard home, 24 hours", max(5, runs // 10), lambda _: plain.dashboard(period=timedelta(hours=24))
            )
        )

        cached_rows: list[tuple[str, float, float]] = []
        for label, filters, order, cursor in lists:
            if cursor is not None:
                continue  # pages after the first are never cached
            await cached.list_issues(filters, sort=order)
            cached_rows.append(await timed(label, runs, lister(cached, filters, order, None)))
        for issue_id in set(picks):
            await cached.get_issue_detail(issue_id)
        cached_rows.append(await timed("detail (skewed issues)", runs, lambda n: cached.get_issue_detail(picks[n])))
        await cached.project_chart(period=timedelta(days=7))
        cached_rows.append(
            await timed("project chart, 7 days by hour", runs, lambda _: cached.project_chart(period=timedelta(days=7)))
        )
        await cached.dashboard(period=timedelta(hours=24))
        cached_rows.append(
            await timed("dashboard home, 24 hours", runs, lambda _: cached.dashboard(period=timedelta(hours=24)))
        )

        print(f"\n{'uncached (PostgreSQL every time)':<42} {'p50 ms':>8} {'p99 ms':>8}")
        for label, p50, p99 in rows:
            print(f"{label:<42} {p50:8.2f} {p99:8.2f}")
        print(f"\n{'cached (Redis hits)':<42} {'p50 ms':>8} {'p99 ms':>8}   [{cache.hits} hits, {cache.misses} fills]")
        for label, p50, p99 in cached_rows:
            print(f"{label:<42} {p50:8.2f} {p99:8.2f}")


def server_dsn() -> str:
    """The PostgreSQL server to create the scratch database on."""
    return os.environ.get(
        "APPGUARD_BENCH_POSTGRES_DSN",
        os.environ.get("APPGUARD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )


@contextlib.contextmanager
def scratch_database(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """A seeded scratch database (or the one ``--reuse`` names) and a Redis URL (an embedded
    Redis when the configured one does not answer); dropped afterwards unless kept."""
    dsn = server_dsn()
    redis_url = os.environ.get(
        "APPGUARD_BENCH_REDIS_URL", os.environ.get("APPGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    embedded: EmbeddedRedis | None = None
    redis_dir: str | None = None
    try:
        import redis

        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except Exception:
        redis_dir = tempfile.mkdtemp(prefix="appguard-bench-redis-")
        embedded = EmbeddedRedis(redis_dir)
        redis_url = embedded.start()
        print(f"no Redis at the configured URL; using an embedded one ({redis_url})")

    name = args.reuse or f"appguard_bench_{uuid.uuid4().hex[:8]}"
    if not args.reuse:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = make_conninfo(dsn, dbname=name)
    try:
        if not args.reuse:
            print(f"seeding {name}: {args.issues:,} issues, {args.events:,} events over {DAYS} days")
            asyncio.run(seed(target, args.issues, args.events))
        yield target, redis_url
    finally:
        if args.keep or args.reuse:
            print(f"\nkept database {name} (rerun with --reuse {name})")
        else:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(redis_dir or "", ignore_errors=True)


def arguments(description: str | None) -> argparse.Namespace:
    """The options both latency benchmarks take."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", metavar="NAME", help="time a database kept by an earlier --keep run")
    return parser.parse_args()


def main() -> None:
    """Seed (or reuse) a database, then print the latency table."""
    args = arguments(__doc__)
    with scratch_database(args) as (target, redis_url):
        asyncio.run(measure(target, redis_url, args.runs, args.issues))


if __name__ == "__main__":
    main()
