"""Keyset pagination of the issue list over a few thousand issues: every sort order visits every
issue exactly once, forward and backward, with many ties in the sort keys."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from storage.errors_store import ErrorEvent, ErrorStore
from storage.issue_queries import IssueFilters, IssuePage, IssueQueries, Sort

ISSUES = 3000
PAGE = 97
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def queries(appguard_dsn: str) -> AsyncIterator[IssueQueries]:
    store = await ErrorStore.open(appguard_dsn)
    rng = random.Random(7)
    try:
        events: list[ErrorEvent] = []
        for n in range(ISSUES):
            # Few distinct timestamps and counts: most sort keys are shared by many issues.
            base = NOW - timedelta(minutes=rng.randrange(40))
            for k in range(1 + n % 4):
                events.append(
                    ErrorEvent(
                        fingerprint=f"issue-{n}",
                        timestamp=base + timedelta(minutes=k * (n % 2)),
                        type="E",
                        message=f"error {n}",
                        service_name=("a", "b", "c")[n % 3],
                        user_id=f"user-{k % (1 + n % 3)}",
                    )
                )
        for start in range(0, len(events), 2000):
            await store.write_events(events[start : start + 2000])
        # Some resolved issues, for a filtered walk.
        async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
            await conn.execute(
                "UPDATE appguard.issues SET status = 'resolved', substatus = NULL, resolved_at = now() WHERE id % 5 = 0"
            )
    finally:
        await store.close()
    async with AsyncConnectionPool(appguard_dsn, kwargs={"autocommit": True}) as pool:
        yield IssueQueries(pool)


async def expected_order(queries: IssueQueries, sort: Sort, where: str) -> list[int]:
    column = {Sort.LAST_SEEN: "last_seen", Sort.FIRST_SEEN: "first_seen", Sort.EVENTS: "event_count",
              Sort.USERS: "user_count"}[sort]  # fmt: skip
    assert isinstance(queries.db, AsyncConnectionPool)
    async with queries.db.connection() as conn:
        cur = await conn.execute(f"SELECT id, {column} FROM appguard.issues WHERE {where}")  # type: ignore[arg-type]
        rows = await cur.fetchall()
    return [row[0] for row in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]


async def walk(queries: IssueQueries, filters: IssueFilters, sort: Sort) -> tuple[list[IssuePage], list[IssuePage]]:
    forward = [await queries.list_issues(filters, sort=sort, limit=PAGE)]
    while forward[-1].next_cursor is not None:
        forward.append(await queries.list_issues(filters, sort=sort, cursor=forward[-1].next_cursor, limit=PAGE))
    backward = [forward[-1]]
    while backward[-1].prev_cursor is not None:
        backward.append(await queries.list_issues(filters, sort=sort, cursor=backward[-1].prev_cursor, limit=PAGE))
    return forward, backward


@pytest.mark.parametrize("sort", list(Sort))
@pytest.mark.parametrize(("query", "where"), [("", "true"), ("is:unresolved", "status = 'unresolved'")])
async def test_every_issue_once_forward_and_backward(queries: IssueQueries, sort: Sort, query: str, where: str) -> None:
    expected = await expected_order(queries, sort, where)
    assert len(expected) >= ISSUES * 0.8
    forward, backward = await walk(queries, IssueFilters(query=query), sort)

    seen = [item.id for page in forward for item in page.items]
    assert seen == expected  # each once, in (key, id) order
    assert all(len(page.items) == PAGE for page in forward[:-1])
    assert forward[0].prev_cursor is None and forward[-1].next_cursor is None

    back = [item.id for page in reversed(backward) for item in page.items]
    assert back == expected
    assert backward[-1].prev_cursor is None
    # Going back lands on the same page boundaries as going forward.
    assert [[i.id for i in p.items] for p in reversed(backward)] == [[i.id for i in p.items] for p in forward]


async def test_pages_are_stable_while_other_issues_change(queries: IssueQueries) -> None:
    first = await queries.list_issues(sort=Sort.EVENTS, limit=PAGE)
    assert first.next_cursor is not None
    # An issue already shown gains many events and moves: the next page neither repeats
    # nor skips the others.
    shown = first.items[-1].id
    assert isinstance(queries.db, AsyncConnectionPool)
    async with queries.db.connection() as conn:
        await conn.execute("UPDATE appguard.issues SET event_count = event_count + 1000 WHERE id = %s", (shown,))
    second = await queries.list_issues(sort=Sort.EVENTS, cursor=first.next_cursor, limit=PAGE)
    expected = [i for i in await expected_order(queries, Sort.EVENTS, "true") if i != shown]
    assert [i.id for i in first.items[:-1]] + [i.id for i in second.items] == expected[: PAGE - 1 + PAGE]
