"""The Redis query cache against real Redis and PostgreSQL: hits and misses, invalidation by
writes and actions (no stale answer after a write), scopes, lost generations, Redis down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from storage.cache import QueryCache, invalidate_after_write
from storage.errors_store import ErrorEvent, ErrorStore
from storage.issue_queries import IssueFilters, IssueQueries
from tests.support.net import free_port

NOW = datetime.now(UTC).replace(microsecond=0)


def event(fingerprint: str, seconds_ago: float = 0, **fields: Any) -> ErrorEvent:
    fields.setdefault("type", "ValueError")
    fields.setdefault("message", f"bad {fingerprint}")
    fields.setdefault("service_name", "checkout")
    return ErrorEvent(fingerprint=fingerprint, timestamp=NOW - timedelta(seconds=seconds_ago), **fields)


@pytest.fixture
async def store(appguard_dsn: str) -> AsyncIterator[ErrorStore]:
    opened = await ErrorStore.open(appguard_dsn)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def cache(redis_client: aioredis.Redis, redis_prefix: str) -> QueryCache:
    return QueryCache(redis_client, prefix=redis_prefix, ttl=30)


@pytest.fixture
async def queries(appguard_dsn: str, cache: QueryCache) -> AsyncIterator[IssueQueries]:
    async with AsyncConnectionPool(appguard_dsn, kwargs={"autocommit": True}) as pool:
        yield IssueQueries(pool, cache=cache)


async def write(store: ErrorStore, cache: QueryCache, events: list[ErrorEvent]) -> set[int]:
    """Write as the errors exporter does: store, then invalidate."""
    report = await store.write_events(events)
    await invalidate_after_write(cache, events, report)
    return {o.issue_id for o in report.outcomes if o.issue_id is not None}


async def titles(queries: IssueQueries, query: str = "") -> list[str]:
    return [i.title for i in (await queries.list_issues(IssueFilters(query=query))).items]


async def test_hits_then_a_write_is_visible_at_once(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await write(store, cache, [event("a", 10)])
    assert await titles(queries) == ["ValueError: bad a"]
    assert (cache.hits, cache.misses) == (0, 1)
    assert await titles(queries) == ["ValueError: bad a"]
    assert (cache.hits, cache.misses) == (1, 1)
    keys = [k.decode() async for k in redis_client.scan_iter(match=redis_prefix + "q:issues:project:1:*")]
    assert len(keys) == 1
    assert 0 < await redis_client.pttl(keys[0]) <= 30_000

    # The cache really serves stored answers: a write nobody announced is not seen...
    await store.write_events([event("b", 5)])
    assert await titles(queries) == ["ValueError: bad a"]
    # ...and an announced one is, on the very next read.
    await write(store, cache, [event("c", 1)])
    assert await titles(queries) == ["ValueError: bad c", "ValueError: bad b", "ValueError: bad a"]
    assert cache.misses == 2


async def test_a_batch_of_duplicates_invalidates_nothing(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore
) -> None:
    batch = [event("a", 10)]
    await write(store, cache, batch)
    await titles(queries)
    await write(store, cache, batch)  # all duplicates
    await titles(queries)
    assert cache.hits == 1


async def test_actions_invalidate_lists_and_details(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore
) -> None:
    (issue_id,) = await write(store, cache, [event("a", 10)])
    assert await titles(queries, "is:unresolved") == ["ValueError: bad a"]
    detail = await queries.get_issue_detail(issue_id)
    assert detail is not None and detail.issue.status == "unresolved"
    assert (await queries.get_issue_detail(issue_id)) == detail
    hits = cache.hits

    await queries.resolve([issue_id])

    assert await titles(queries, "is:unresolved") == []
    resolved = await queries.get_issue_detail(issue_id)
    assert resolved is not None and resolved.issue.status == "resolved"
    assert cache.hits == hits
    await queries.apply_action("reopen", filters=IssueFilters(query="is:resolved"))
    reopened = await queries.get_issue_detail(issue_id)
    assert reopened is not None and reopened.issue.status == "unresolved"


async def test_issue_scopes_are_independent(queries: IssueQueries, cache: QueryCache, store: ErrorStore) -> None:
    (a,) = await write(store, cache, [event("a", 10)])
    (b,) = await write(store, cache, [event("b", 10)])
    await queries.get_issue_detail(a)
    await queries.get_issue_detail(b)
    await queries.issue_chart(b, period=timedelta(hours=1))
    misses = cache.misses

    await write(store, cache, [event("a", 1)])

    detail_a = await queries.get_issue_detail(a)
    assert detail_a is not None and detail_a.counts.total == 2
    assert cache.misses == misses + 1
    await queries.get_issue_detail(b)
    await queries.issue_chart(b, period=timedelta(hours=1))
    assert cache.misses == misses + 1  # b's entries survived a write to a


async def test_charts_and_dashboard_are_cached_and_invalidated(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore
) -> None:
    (a,) = await write(store, cache, [event("a", 60), event("a", 30)])
    chart = await queries.project_chart(period=timedelta(hours=1))
    home = await queries.dashboard(period=timedelta(hours=1))
    issue_chart = await queries.issue_chart(a, period=timedelta(hours=1))
    assert sum(chart.totals) == home.total_events == sum(issue_chart.totals) == 2
    assert await queries.project_chart(period=timedelta(hours=1)) == chart
    assert await queries.dashboard(period=timedelta(hours=1)) == home
    assert cache.hits == 2

    await write(store, cache, [event("a", 5), event("new", 5)])

    assert sum((await queries.project_chart(period=timedelta(hours=1))).totals) == 4
    fresh = await queries.dashboard(period=timedelta(hours=1))
    assert (fresh.total_events, fresh.new_issues) == (4, 2)
    assert sum((await queries.issue_chart(a, period=timedelta(hours=1))).totals) == 3


async def test_a_lost_generation_only_costs_a_miss(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore, redis_client: aioredis.Redis
) -> None:
    await write(store, cache, [event("a", 10)])
    await titles(queries)
    await redis_client.delete(cache.project_generation_key(1))
    await store.write_events([event("b", 5)])  # unannounced: only the lost key can reveal it
    assert await titles(queries) == ["ValueError: bad b", "ValueError: bad a"]
    assert cache.hits == 0


async def test_an_unreadable_entry_is_recomputed(
    queries: IssueQueries, cache: QueryCache, store: ErrorStore, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    await write(store, cache, [event("a", 10)])
    await titles(queries)
    (key,) = [k async for k in redis_client.scan_iter(match=redis_prefix + "q:*")]
    await redis_client.set(key, b'{"not": "a page"}')
    assert await titles(queries) == ["ValueError: bad a"]
    assert await titles(queries) == ["ValueError: bad a"]
    assert cache.hits == 1


async def test_redis_down_falls_back_to_postgres(appguard_dsn: str, store: ErrorStore) -> None:
    down = QueryCache.from_url(f"redis://127.0.0.1:{free_port()}/0", ttl=30)
    try:
        async with AsyncConnectionPool(appguard_dsn, kwargs={"autocommit": True}) as pool:
            queries = IssueQueries(pool, cache=down)
            report = await store.write_events([event("a", 10)])
            assert await invalidate_after_write(down, [event("a", 10)], report) is False
            assert await titles(queries) == ["ValueError: bad a"]
            (issue_id,) = report.new_issues
            assert (await queries.resolve([issue_id])).updated == [issue_id]
            assert await titles(queries, "is:resolved") == ["ValueError: bad a"]
            assert down.hits == 0 and down.misses == 2
    finally:
        await down.close()


def test_the_ttl_must_be_positive(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError):
        QueryCache(redis_client, ttl=0)
