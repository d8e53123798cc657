"""The session store against PostgreSQL, with each segment body backend: segments in any order
and twice, the session row they build, conflicts and the size limit, reading the recording
back, deleting, and retention removing rows and files."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from psycopg_pool import AsyncConnectionPool

from bench.rrweb_workload import recording, split
from storage.projects import ProjectStore
from storage.session_blobs import DirectoryBlobs, PostgresBlobs, SegmentBlobs
from storage.sessions import (
    IncomingSegment,
    SequenceConflict,
    SessionFilters,
    SessionOfAnotherProject,
    SessionStore,
    SessionTooLarge,
    SessionUser,
)

UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15"
START = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)


@pytest.fixture(params=["postgres", "directory"])
async def store(
    request: pytest.FixtureRequest, pool: AsyncConnectionPool[Any], tmp_path: Path
) -> AsyncIterator[SessionStore]:
    blobs: SegmentBlobs = PostgresBlobs(pool) if request.param == "postgres" else DirectoryBlobs(tmp_path / "replays")
    yield SessionStore(pool, blobs, max_session_size=4 << 20)


def segment(session_id: str, sequence: int, events: list[dict[str, Any]], **extra: Any) -> IncomingSegment:
    fields: dict[str, Any] = {"url": "https://shop.example.com/", "user_agent": UA, **extra}
    return IncomingSegment(
        project_id=fields.pop("project_id", 1), session_id=session_id, sequence=sequence, events=events, **fields
    )


def page_urls(parts: list[list[dict[str, Any]]]) -> list[str]:
    """The page each segment is sent from, as the snippet reports it: the last page shown by then."""
    current, out = "https://shop.example.com/", []
    for part in parts:
        for event in part:
            if event["type"] == 5 and event["data"]["tag"] == "appguard.pageview":
                current = event["data"]["payload"]["url"]
        out.append(current)
    return out


async def read_events(store: SessionStore, session_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async for chunk in store.recording(session_id, await store.segment_sequences(session_id)):
        out.extend(orjson.loads(chunk))
    return out


async def count_rows(pool: AsyncConnectionPool[Any], table: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) FROM appguard.{table}")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_segments_out_of_order_and_twice_make_one_recording_in_order(store: SessionStore) -> None:
    events = recording(7, start_ms=START, duration_s=180, page_every_s=50, error_every_s=70)
    parts = split(events, 10_000)
    order = list(range(len(parts)))
    random.Random(1).shuffle(order)
    duplicated = order + order[::3]  # a third of them again, later
    urls = page_urls(parts)
    answers = []
    for index in duplicated:
        user = SessionUser(id="u-7", email="ann@example.com", name="ann") if index == 5 else SessionUser()
        sent = segment("visit-000007", index, parts[index], user=user, service="shop-web", url=urls[index])
        answers.append(await store.add_segment(sent))
    assert [a.duplicate for a in answers] == [False] * len(order) + [True] * len(order[::3])
    assert await read_events(store, "visit-000007") == events

    session = await store.get_session("visit-000007")
    assert session is not None
    assert session.segment_count == len(parts) and session.event_count == len(events)
    assert session.page_count == 4  # pages at 0, 50, 100, 150 s
    assert session.error_count == 2  # at 70 and 140 s
    assert session.started_at == datetime.fromtimestamp(events[0]["timestamp"] / 1000, UTC)
    assert session.duration_ms == max(e["timestamp"] for e in events) - events[0]["timestamp"]
    assert (session.browser, session.os, session.os_version) == ("Safari", "Mac OS X", "10.15.7")
    assert (session.user_id, session.user_email, session.user_name) == ("u-7", "ann@example.com", "ann")
    assert session.service == "shop-web"
    assert session.first_url == "https://shop.example.com/"
    assert session.last_url == "https://shop.example.com/products/kenya-aa"  # the fourth page
    raw = sum(len(orjson.dumps(p)) for p in parts)
    assert session.raw_bytes == raw and 0 < session.stored_bytes < raw / 2


async def test_the_same_sequence_with_other_events_is_refused_not_dropped(store: SessionStore) -> None:
    events = recording(1, start_ms=START, duration_s=20)
    await store.add_segment(segment("visit-conflict", 0, events[:5]))
    with pytest.raises(SequenceConflict, match="segment 0"):
        await store.add_segment(segment("visit-conflict", 0, events[5:10]))
    assert await read_events(store, "visit-conflict") == events[:5]


async def test_a_session_past_its_size_limit_refuses_the_segment_and_keeps_the_rest(
    pool: AsyncConnectionPool[Any], tmp_path: Path
) -> None:
    blobs = DirectoryBlobs(tmp_path / "replays")
    store = SessionStore(pool, blobs, max_session_size=60_000)
    parts = split(recording(2, start_ms=START, duration_s=240), 10_000)
    sizes = [len(orjson.dumps(p)) for p in parts]
    stored = 0
    refused_at = None
    for index, part in enumerate(parts):
        if stored + sizes[index] > 60_000:
            refused_at = index
            with pytest.raises(SessionTooLarge, match="max_session_size"):
                await store.add_segment(segment("visit-large1", index, part))
            break
        await store.add_segment(segment("visit-large1", index, part))
        stored += sizes[index]
    assert refused_at is not None and refused_at > 0
    session = await store.get_session("visit-large1")
    assert session is not None and session.raw_bytes == stored and session.segment_count == refused_at
    # The refused segment left no file behind.
    assert not blobs.path("visit-large1", refused_at).exists()
    # A retry of a stored segment is still a duplicate, not a refusal.
    assert (await store.add_segment(segment("visit-large1", 0, parts[0]))).duplicate


async def test_a_session_id_of_another_project_is_refused(store: SessionStore, pool: AsyncConnectionPool[Any]) -> None:
    other = await ProjectStore(pool).create_project("web-shop")
    events = recording(3, start_ms=START, duration_s=5)
    await store.add_segment(segment("visit-shared", 0, events))
    with pytest.raises(SessionOfAnotherProject):
        await store.add_segment(segment("visit-shared", 1, events, project_id=other.id))
    assert (await store.get_session("visit-shared")).segment_count == 1  # type: ignore[union-attr]


async def test_concurrent_segments_of_one_session_are_all_counted(store: SessionStore) -> None:
    events = recording(4, start_ms=START, duration_s=120, page_every_s=30)
    parts = split(events, 5_000)
    answers = await asyncio.gather(*(store.add_segment(segment("visit-concur", i, p)) for i, p in enumerate(parts)))
    assert not any(a.duplicate for a in answers)
    session = await store.get_session("visit-concur")
    assert session is not None
    assert session.segment_count == len(parts) and session.event_count == len(events)
    assert session.page_count == 4
    assert await read_events(store, "visit-concur") == events


async def test_the_list_filters_and_pages_newest_first(store: SessionStore) -> None:
    chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    for n in range(7):
        events = recording(n, start_ms=START + n * 60_000, duration_s=10 + n * 10, error_every_s=5 if n % 3 == 0 else 0)
        await store.add_segment(
            segment(
                f"visit-list-{n}",
                0,
                events,
                user_agent=chrome if n % 2 else UA,
                user=SessionUser(email=f"U{n}@Example.com"),
            )
        )
    page = await store.list_sessions(SessionFilters(), limit=3)
    assert [s.id for s in page.sessions] == ["visit-list-6", "visit-list-5", "visit-list-4"]
    seen = [s.id for s in page.sessions]
    while page.next_cursor is not None:
        page = await store.list_sessions(SessionFilters(), limit=3, cursor=page.next_cursor)
        seen += [s.id for s in page.sessions]
    assert seen == [f"visit-list-{n}" for n in range(6, -1, -1)]

    async def ids(**filters: Any) -> list[str]:
        return [s.id for s in (await store.list_sessions(SessionFilters(**filters))).sessions]

    assert await ids(has_errors=True) == ["visit-list-6", "visit-list-3", "visit-list-0"]
    assert await ids(browser="chrome") == ["visit-list-5", "visit-list-3", "visit-list-1"]
    assert await ids(user="u4@example.com") == ["visit-list-4"]
    assert await ids(min_duration_ms=35_000, max_duration_ms=60_000) == ["visit-list-5", "visit-list-4", "visit-list-3"]
    assert await ids(url="SHOP.example.com/", project_id=1) == [f"visit-list-{n}" for n in range(6, -1, -1)]
    assert await ids(url="/nowhere") == []
    assert await ids(project_id=2) == []


async def test_delete_and_retention_remove_rows_and_bodies(
    store: SessionStore, pool: AsyncConnectionPool[Any], tmp_path: Path
) -> None:
    old = recording(5, start_ms=START - 40 * 86_400_000, duration_s=30)
    recent = recording(6, start_ms=START, duration_s=30)
    for name, events in (
        ("visit-old-01", old),
        ("visit-old-02", old),
        ("visit-new-01", recent),
        ("visit-del-01", recent),
    ):
        for i, part in enumerate(split(events, 10_000)):
            await store.add_segment(segment(name, i, part))
    bodies_before = await count_rows(pool, "session_segment_bodies")

    assert await store.delete_session("visit-del-01")
    assert not await store.delete_session("visit-del-01")
    assert await store.delete_older_than(timedelta(days=30)) == 2
    assert await store.delete_older_than(timedelta(days=30)) == 0  # a second pass (or process) finds nothing

    assert [s.id for s in (await store.list_sessions(SessionFilters())).sessions] == ["visit-new-01"]
    assert await count_rows(pool, "session_segments") == len(split(recent, 10_000))
    if isinstance(store.blobs, DirectoryBlobs):
        files = sorted(p.parent.name for p in store.blobs.root.rglob("*.zst"))
        assert set(files) == {"visit-new-01"}
        assert not store.blobs.session_dir("visit-old-01").exists()
    else:
        assert bodies_before > await count_rows(pool, "session_segment_bodies") == len(split(recent, 10_000))
    assert await read_events(store, "visit-new-01") == recent


async def test_the_bodies_are_zstd_of_the_events_json(pool: AsyncConnectionPool[Any]) -> None:
    store = SessionStore(pool, PostgresBlobs(pool), max_session_size=1 << 20)
    events = recording(8, start_ms=START, duration_s=5)
    await store.add_segment(segment("visit-zstd-1", 0, events))
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT body FROM appguard.session_segment_bodies WHERE session_id = 'visit-zstd-1'")
        row = await cur.fetchone()
    assert row is not None
    assert zstandard.ZstdDecompressor().decompress(bytes(row[0])) == orjson.dumps(events)
