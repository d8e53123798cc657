"""Benchmark: latency of the issue list and the issue detail through the REST API over a
million stored error events.

Seeds the same scratch database as ``bench_issue_queries`` (5,000 issues, 1,000,000 events over
30 days, skewed popularity), starts the real ``api`` extension on it (loopback, an ephemeral
port), registers an admin and times sequential ``GET /api/issues?...`` with filters and search,
and ``GET /api/issues/{id}`` for issues drawn with the events' skew, through an aiohttp client
sending the bearer token: routing, authentication, validation, the query, JSON encoding and
HTTP are all in the figure.

"uncached": the API's Redis cache is invalidated (outside the timed request) before every
request, so each one runs its queries against PostgreSQL; "cached": the entry was filled by an
earlier request, so the answer comes from Redis. Figures only; nothing fails on timing.

Usage: python bench/bench_api_latency.py [--events N] [--issues N] [--runs N] [--keep | --reuse NAME]
(servers as for bench_issue_queries.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_issue_queries import arguments, percentile, scratch_database
from storage.cache import QueryCache

LISTS = [
    ("list: is:unresolved (default view)", "query=is:unresolved"),
    (
        "list: service+env+level+status, by events",
        "service=checkout&environment=production&level=error&status=unresolved&sort=events",
    ),
    ("list: search 'connection reset'", "query=is:unresolved+%22connection+reset%22"),
    ("list: !env:staging type:TypeError", "query=%21env%3Astaging+type%3ATypeError&sort=first_seen"),
    ("list: events:>100 users:>=5, last 7 days", "query=events%3A%3E100+users%3A%3E%3D5&statsPeriod=7d&sort=users"),
    ("list: release:1.29.0, last 24h", "query=release%3A1.29.0&statsPeriod=24h"),
]


async def measure(dsn: str, redis_url: str, runs: int, issues: int) -> None:
    """Start the API on the database and print p50/p99 per request kind, uncached then cached."""
    from tests.support.api import running_api

    prefix = f"appguard-bench:{uuid.uuid4().hex[:8]}:"
    rng = random.Random(11)
    picks = [1 + int(issues * rng.random() ** 3) for _ in range(runs)]
    redis = aioredis.Redis.from_url(redis_url)
    cache = QueryCache(redis, prefix=prefix)
    logging.getLogger("test.api").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="appguard-bench-api-") as data_dir:
        async with running_api(Path(data_dir), dsn, redis_url, prefix) as api, aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{api.port}"
            async with http.post(
                f"{base}/api/auth/register",
                json={"email": f"bench-{uuid.uuid4().hex[:6]}@example.com", "password": "bench password 123"},
            ) as resp:
                token = (await resp.json())["access_token"]
            headers = {"Authorization": f"Bearer {token}"}

            async def get(path: str) -> None:
                async with http.get(base + path, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {path}: {resp.status} {await resp.text()}")

            async def timed(paths: list[str], *, uncached: bool) -> tuple[float, float]:
                samples = []
                for path in paths:
                    if uncached:
                        await cache.bump_generation(1, picks)
                    else:
                        await get(path)  # fill the entry (a no-op when it is there)
                    started = time.perf_counter()
                    await get(path)
                    samples.append((time.perf_counter() - started) * 1000)
                return percentile(samples, 0.5), percentile(samples, 0.99)

            details = [f"/api/issues/{issue}" for issue in picks]
            for uncached in (True, False):
                title = "uncached (PostgreSQL every request)" if uncached else "cached (Redis hits)"
                print(f"\n{title:<46} {'p50 ms':>8} {'p99 ms':>8}")
                for label, qs in LISTS:
                    p50, p99 = await timed([f"/api/issues?{qs}"] * runs, uncached=uncached)
                    print(f"{label:<46} {p50:8.2f} {p99:8.2f}")
                p50, p99 = await timed(details, uncached=uncached)
                print(f"{'detail (skewed issues)':<46} {p50:8.2f} {p99:8.2f}")
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def main() -> None:
    """Seed (or reuse) a database, then print the latency table."""
    args = arguments(__doc__)
    with scratch_database(args) as (target, redis_url):
        asyncio.run(measure(target, redis_url, args.runs, args.issues))


if __name__ == "__main__":
    main()
