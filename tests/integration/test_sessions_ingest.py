"""Session replay over HTTP: the real ``api`` extension (PostgreSQL for keys, sessions and
bodies, or a directory for the bodies; Redis for the rate limits). Segments compressed or not,
out of order and twice; faults and abuse (truncated gzip, size limits, floods, keys, CORS);
the read API with filters, pagination and roles; retention by the background task."""

from __future__ import annotations

import asyncio
import gzip
import random
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from api.extension import ApiExtension
from bench.rrweb_workload import recording, split
from storage.errors_store import ErrorEvent
from storage.projects import ProjectKey, ProjectStore
from tests.support.api import ApiClient, client, running_api
from tests.support.issue_data import Seeder

ORIGIN = "https://shop.example.com"
SEGMENT_LIMIT = 64 * 1024
SESSION_LIMIT = 256 * 1024
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
NOW_MS = int((datetime.now(UTC) - timedelta(minutes=30)).timestamp() * 1000)


class Replay:
    """The API under test, a plain HTTP session, and the key of project 1."""

    def __init__(self, api: ApiExtension, session: aiohttp.ClientSession, key: ProjectKey, folder: Path | None) -> None:
        self.api = api
        self.session = session
        self.key = key
        self.folder = folder
        assert api.services is not None
        self.projects = ProjectStore(api.services.pool)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    async def send(
        self,
        session_id: str,
        sequence: int,
        events: list[dict[str, Any]],
        *,
        encoding: str = "gzip",
        key: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        **fields: Any,
    ) -> tuple[int, dict[str, str], Any]:
        body = {"sequence": sequence, "url": f"{ORIGIN}/", "user_agent": FIREFOX, "events": events, **fields}
        raw = data if data is not None else orjson.dumps(body)
        sent = {"Content-Type": "application/json", "X-AppGuard-Key": self.key.public_key if key is None else key}
        if encoding == "gzip" and data is None:
            raw, sent["Content-Encoding"] = gzip.compress(raw), "gzip"
        elif encoding == "deflate" and data is None:
            raw, sent["Content-Encoding"] = zlib.compress(raw), "deflate"
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v}
        return await self.request("POST", f"/api/sessions/{session_id}/segments", data=raw, headers=sent)

    async def request(
        self, method: str, path: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        async with self.session.request(method, self.base + path, data=data, headers=headers or {}) as reply:
            content = await reply.read()
            decoded = orjson.loads(content) if content and reply.content_type == "application/json" else content
            return reply.status, dict(reply.headers), decoded


async def _replay(
    tmp_path: Path, dsn: str, redis_url: str, prefix: str, storage: str, **overrides: Any
) -> AsyncIterator[Replay]:
    folder = tmp_path / "replays" if storage == "directory" else None
    sessions = {"storage": storage, "max_segment_size": SEGMENT_LIMIT, "max_session_size": SESSION_LIMIT}
    if folder is not None:
        sessions["directory"] = str(folder)
    sessions.update(overrides.pop("sessions", {}))
    ingest = {"allowed_origins": [ORIGIN], **overrides.pop("ingest", {})}
    async with (
        running_api(tmp_path, dsn, redis_url, prefix, sessions=sessions, ingest=ingest, **overrides) as api,
        aiohttp.ClientSession() as session,
    ):
        assert api.services is not None
        key = (await ProjectStore(api.services.pool).list_keys(1))[0]
        yield Replay(api, session, key, folder)


@pytest.fixture(params=["postgres", "directory"])
async def replay(
    request: pytest.FixtureRequest, tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Replay]:
    async for running in _replay(tmp_path, appguard_dsn, redis_url, redis_prefix, request.param):
        yield running


class User:
    """A client signed in with a bearer token (None: anonymous)."""

    def __init__(self, http: ApiClient, token: str | None) -> None:
        self.http = http
        self.token = token

    async def call(self, method: str, path: str) -> Any:
        return await self.http.call(method, path, token=self.token)


@pytest.fixture
async def users(replay: Replay) -> AsyncIterator[dict[str, User]]:
    """An admin, a member, a viewer and an anonymous caller."""
    async with client(replay.api) as http:
        admin = (await http.register("admin@example.com")).body["access_token"]
        member = (await http.register("member@example.com")).body["access_token"]
        viewer = await http.register("viewer@example.com")
        changed = await http.call(
            "PATCH", f"/api/users/{viewer.body['user']['id']}", json={"role": "viewer"}, token=admin
        )
        assert changed.status == 200, changed.body
        viewer_token = (await http.login("viewer@example.com")).body["access_token"]
    async with client(replay.api) as http:
        yield {
            "admin": User(http, admin),
            "member": User(http, member),
            "viewer": User(http, viewer_token),
            "anonymous": User(http, None),
        }


async def get(user: User, path: str) -> Any:
    reply = await user.call("GET", path)
    assert reply.status == 200, (path, reply.status, reply.body)
    return reply.body


def events_of(seed: int, duration_s: float = 60, **options: Any) -> list[dict[str, Any]]:
    return recording(seed, start_ms=NOW_MS, duration_s=duration_s, nodes=120, **options)


async def wait_for_minute_start() -> None:
    """The limits count per minute of the clock: start a flood well inside one."""
    if time.time() % 60 > 50:
        await asyncio.sleep(61 - time.time() % 60)


# --------------------------------------------------------------------------- ingestion


async def test_segments_in_any_encoding_order_and_twice_replay_in_order(replay: Replay, users: dict[str, User]) -> None:
    events = events_of(1, duration_s=120, page_every_s=40, error_every_s=50)
    parts = split(events, 10_000)
    order = list(range(len(parts)))
    random.Random(2).shuffle(order)
    encodings = ["gzip", "deflate", "none"]
    for n, index in enumerate([*order, *order[:4]]):
        status, _, answer = await replay.send(
            "0f8fad5b-d9cb-469f-a165-70867728950e", index, parts[index], encoding=encodings[n % 3],
            user={"id": "u-1", "email": "ann@example.com"}, service="shop-web", environment="production",
        )  # fmt: skip
        assert status == 200, answer
        assert answer == {"sequence": index, "duplicate": n >= len(order)}

    viewer = users["viewer"]
    played = await get(viewer, "/api/sessions/0f8fad5b-d9cb-469f-a165-70867728950e/recording")
    assert played["segments"] == len(parts)
    assert played["events"] == events

    detail = await get(viewer, "/api/sessions/0f8fad5b-d9cb-469f-a165-70867728950e")
    session = detail["session"]
    assert session["segment_count"] == len(parts) and session["page_count"] == 3
    assert session["error_count"] == 2 and detail["errors"] == []
    assert session["duration_ms"] == max(e["timestamp"] for e in events) - min(e["timestamp"] for e in events)
    assert (session["browser"], session["browser_version"], session["os"]) == ("Firefox", "121.0", "Ubuntu")
    assert (session["user_id"], session["user_email"], session["service"], session["environment"]) == (
        "u-1", "ann@example.com", "shop-web", "production",
    )  # fmt: skip
    assert session["raw_bytes"] > session["stored_bytes"] > 0
    if replay.folder is not None:
        assert len(list(replay.folder.rglob("*.zst"))) == len(parts)


async def test_a_sequence_sent_again_with_other_events_is_a_409(replay: Replay) -> None:
    events = events_of(2, duration_s=4)
    assert (await replay.send("visit-conflict", 0, events[:3]))[0] == 200
    status, _, answer = await replay.send("visit-conflict", 0, events[3:6])
    assert status == 409 and answer["error"]["field"] == "sequence"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sequence": -1}, "sequence"),
        ({"url": None}, "url"),
        ({"events": []}, "events"),
        ({"events": [{"type": 3, "data": {}, "timestamp": "now"}]}, "events[0].timestamp"),
    ],
)
async def test_a_bad_field_is_a_400_naming_it(replay: Replay, fields: dict[str, Any], field: str) -> None:
    body = {"sequence": 0, "url": f"{ORIGIN}/", "user_agent": FIREFOX, "events": events_of(3, duration_s=2), **fields}
    status, _, answer = await replay.send("visit-badfield", 0, [], data=orjson.dumps(body), encoding="none")
    assert status == 400 and answer["error"]["field"] == field, answer


async def test_a_bad_session_id_in_the_path_is_a_400(replay: Replay) -> None:
    status, _, answer = await replay.send("short", 0, events_of(3, duration_s=2))
    assert status == 400 and answer["error"]["field"] == "session_id"


async def test_corrupt_bodies_and_unknown_encodings_are_refused_and_the_server_goes_on(replay: Replay) -> None:
    body = orjson.dumps(
        {"sequence": 0, "url": f"{ORIGIN}/", "user_agent": FIREFOX, "events": events_of(4, duration_s=20)}
    )
    cases = [
        ("gzip", gzip.compress(body)[:-12], 400),
        ("gzip", gzip.compress(body)[: len(body) // 8], 400),
        ("deflate", b"\x78\x9c" + bytes(range(256)) * 4, 400),
        ("lz4", body, 415),
    ]
    for encoding, data, expected in cases:
        status, _, answer = await replay.send("visit-corrupt", 0, [], data=data, headers={"Content-Encoding": encoding})
        assert status == expected, (encoding, answer)
    status, _, _ = await replay.send("visit-corrupt", 0, [], data=body, headers={"Content-Type": "application/xml"})
    assert status == 415
    status, _, answer = await replay.send("visit-corrupt", 0, events_of(4, duration_s=20))
    assert (status, answer) == (200, {"sequence": 0, "duplicate": False})


async def test_a_segment_over_the_size_limit_is_a_413(replay: Replay) -> None:
    big = events_of(5, duration_s=600)
    assert len(orjson.dumps(big)) > SEGMENT_LIMIT
    for encoding in ("none", "gzip"):
        status, _, answer = await replay.send("visit-toobig", 0, big, encoding=encoding)
        assert status == 413 and "sessions.max_segment_size" in answer["error"]["message"], answer
    assert (await replay.send("visit-toobig", 0, events_of(5, duration_s=5)))[0] == 200


async def test_a_session_over_its_size_limit_refuses_the_segment_and_keeps_the_others(
    replay: Replay, users: dict[str, User]
) -> None:
    parts = split(events_of(6, duration_s=900), 20_000)
    accepted = 0
    for index, part in enumerate(parts):
        status, _, answer = await replay.send("visit-session-cap", index, part)
        if status == 413:
            assert "sessions.max_session_size" in answer["error"]["message"]
            break
        assert status == 200, answer
        accepted += 1
    else:
        pytest.fail("the session never reached its limit")
    session = (await get(users["viewer"], "/api/sessions/visit-session-cap"))["session"]
    assert session["segment_count"] == accepted and 0 < session["raw_bytes"] <= SESSION_LIMIT
    played = await get(users["viewer"], "/api/sessions/visit-session-cap/recording")
    assert played["events"] == [e for part in parts[:accepted] for e in part]


# --------------------------------------------------------------------------- keys, limits, CORS


async def test_keys_are_checked(replay: Replay) -> None:
    events = events_of(7, duration_s=2)
    status, _, answer = await replay.send("visit-keys-01", 0, events, key="0" * 32)
    assert status == 401 and answer["error"]["field"] == "X-AppGuard-Key"
    assert (await replay.send("visit-keys-01", 0, events, key=""))[0] == 401
    assert (await replay.send("visit-keys-01", 0, events, key="not-a-key"))[0] == 401
    other = await replay.projects.create_project("web")
    [key] = await replay.projects.list_keys(other.id)
    await replay.projects.revoke_key(other.id, key.id)
    status, _, answer = await replay.send("visit-keys-01", 0, events, key=key.public_key)
    assert status == 403 and "revoked" in answer["error"]["message"]
    # The key in the query string, as navigator.sendBeacon must send it.
    body = orjson.dumps({"sequence": 0, "url": f"{ORIGIN}/", "user_agent": FIREFOX, "events": events})
    status, _, answer = await replay.request(
        "POST",
        f"/api/sessions/visit-keys-01/segments?key={replay.key.public_key}",
        data=body,
        headers={"Content-Type": "text/plain"},
    )
    assert (status, answer) == (200, {"sequence": 0, "duplicate": False})
    status, _, _ = await replay.request("GET", "/api/sessions/visit-keys-01")
    assert status == 401  # an ingest key does not open the read API


@pytest.fixture
async def limited(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Replay]:
    ingest = {"rate_limit_per_key": 6, "rate_limit_per_address": 10, "trust_forwarded_for": True}
    async for running in _replay(tmp_path, appguard_dsn, redis_url, redis_prefix, "postgres", ingest=ingest):
        yield running


async def test_a_flood_past_the_key_and_the_address_limits_is_a_429_with_retry_after(limited: Replay) -> None:
    events = events_of(8, duration_s=1)
    await wait_for_minute_start()
    # Six requests of one key from six addresses pass; the seventh is over the key's limit.
    for n in range(6):
        status, _, _ = await limited.send("visit-flood-1", n, events, headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert status == 200
    status, headers, answer = await limited.send(
        "visit-flood-1", 6, events, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert status == 429 and "ingest key" in answer["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # Ten requests from one address with two other keys pass; the eleventh is over the address's limit.
    keys = []
    for name in ("flood-a", "flood-b"):
        project = await limited.projects.create_project(name)
        keys.append((await limited.projects.list_keys(project.id))[0].public_key)
    for n in range(10):
        status, _, answer = await limited.send(
            f"visit-flood-{2 + n % 2}", n, events, key=keys[n % 2], headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert status == 200, answer
    status, headers, answer = await limited.send(
        "visit-flood-2", 10, events, key=keys[0], headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert status == 429 and "client address" in answer["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 60
    # A refused segment is not stored.
    assert limited.api.services is not None
    async with limited.api.services.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM appguard.session_segments WHERE session_id = 'visit-flood-1'")
        assert await cur.fetchone() == (6,)


async def test_cors_admits_the_configured_origin_only(replay: Replay) -> None:
    path = "/api/sessions/visit-cors-01/segments"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, content-encoding, x-appguard-key",
    }
    status, headers, _ = await replay.request("OPTIONS", path, headers={"Origin": ORIGIN, **preflight})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "x-appguard-key" in headers["Access-Control-Allow-Headers"]
    status, headers, _ = await replay.request("OPTIONS", path, headers={"Origin": "https://evil.example", **preflight})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers

    events = events_of(9, duration_s=2)
    status, headers, _ = await replay.send("visit-cors-01", 0, events, headers={"Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers, answer = await replay.send("visit-cors-01", 0, events, headers={"Origin": ORIGIN})
    assert (status, answer) == (200, {"sequence": 0, "duplicate": False})
    assert headers["Access-Control-Allow-Origin"] == ORIGIN
    # The dashboard's own endpoints beside the ingest one are not ingest paths: the origin rule
    # does not apply to them (authentication does: no token, 401 rather than 403).
    status, headers, _ = await replay.request("GET", "/api/sessions/visit-cors-01", headers={"Origin": "https://evil.example"})
    assert status == 401 and "Access-Control-Allow-Origin" not in headers


# --------------------------------------------------------------------------- the read API


async def test_the_list_filters_pages_and_needs_a_user(replay: Replay, users: dict[str, User]) -> None:
    for n in range(5):
        start = NOW_MS + n * 60_000
        events = recording(n, start_ms=start, duration_s=10 + 10 * n, nodes=60, error_every_s=4 if n in (1, 4) else 0)
        agent = CHROME if n % 2 else FIREFOX
        status, _, answer = await replay.send(
            f"visit-list-{n}", 0, events, user_agent=agent, user={"email": f"u{n}@example.com"}
        )
        assert status == 200, answer
    viewer = users["viewer"]
    first = await get(viewer, "/api/sessions?limit=2")
    assert [s["id"] for s in first["sessions"]] == ["visit-list-4", "visit-list-3"]
    second = await get(viewer, f"/api/sessions?limit=2&cursor={first['next_cursor']}")
    third = await get(viewer, f"/api/sessions?limit=2&cursor={second['next_cursor']}")
    assert [s["id"] for s in second["sessions"] + third["sessions"]] == ["visit-list-2", "visit-list-1", "visit-list-0"]
    assert third["next_cursor"] is None

    async def ids(filters: str) -> list[str]:
        return [s["id"] for s in (await get(viewer, f"/api/sessions?{filters}"))["sessions"]]

    assert await ids("has_errors=true") == ["visit-list-4", "visit-list-1"]
    assert await ids("has_errors=false&browser=Firefox") == ["visit-list-2", "visit-list-0"]
    assert await ids("user=U3@example.com") == ["visit-list-3"]
    assert await ids("min_duration=25000&max_duration=45000") == ["visit-list-3", "visit-list-2"]
    # Only the longest visit (50 s) reached its second page, /products.
    assert await ids("url=shop.example.com/PRODUCTS&project=1") == ["visit-list-4"]
    assert len(await ids("url=shop.example.com/&project=1")) == 5
    assert await ids("project=99") == []

    for bad in (
        "limit=0",
        "cursor=bogus",
        "min_duration=-1",
        "min_duration=5&max_duration=1",
        "has_errors=maybe",
        "sort=x",
    ):
        reply = await viewer.call("GET", f"/api/sessions?{bad}")
        assert reply.status == 400, (bad, reply.body)
    for path in ("/api/sessions", "/api/sessions/visit-list-1", "/api/sessions/visit-list-1/recording"):
        assert (await users["anonymous"].call("GET", path)).status == 401
    assert (await viewer.call("GET", "/api/sessions/visit-none-1")).status == 404
    assert (await viewer.call("GET", "/api/sessions/visit-none-1/recording")).status == 404


async def test_delete_needs_a_member_and_removes_the_recording(replay: Replay, users: dict[str, User]) -> None:
    parts = split(events_of(10, duration_s=30), 10_000)
    for index, part in enumerate(parts):
        assert (await replay.send("visit-delete", index, part))[0] == 200
    viewer, member = users["viewer"], users["member"]
    assert (await users["anonymous"].call("DELETE", "/api/sessions/visit-delete")).status == 401
    assert (await viewer.call("DELETE", "/api/sessions/visit-delete")).status == 403
    assert (await member.call("DELETE", "/api/sessions/visit-delete")).status == 204
    assert (await member.call("DELETE", "/api/sessions/visit-delete")).status == 404
    assert (await viewer.call("GET", "/api/sessions/visit-delete/recording")).status == 404
    if replay.folder is not None:
        assert not list(replay.folder.rglob("*.zst"))


async def test_the_detail_lists_the_error_events_of_the_session(
    replay: Replay, users: dict[str, User], seed: Seeder
) -> None:
    marked = str(uuid.uuid4())
    events = events_of(11, duration_s=10)
    events.append(
        {
            "type": 5,
            "data": {
                "tag": "appguard.error",
                "payload": {"event_id": marked.replace("-", ""), "type": "TypeError", "message": "x"},
            },
            "timestamp": NOW_MS + 9_000,
        }
    )
    assert (await replay.send("visit-errors", 0, events))[0] == 200
    at = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    backend = ErrorEvent(
        fingerprint="checkout-failed", timestamp=at + timedelta(seconds=5), type="ValueError", message="no stock",
        session_id="visit-errors", service_name="checkout",
    )  # fmt: skip
    browser = ErrorEvent(
        fingerprint="cart-js", timestamp=at + timedelta(seconds=9), type="TypeError", message="x",
        session_id="visit-errors", event_id=uuid.UUID(marked), service_name="shop-web",
    )  # fmt: skip
    issues = await seed([backend, browser])
    detail = await get(users["viewer"], "/api/sessions/visit-errors")
    assert [(e["event_id"], e["issue_id"], e["type"]) for e in detail["errors"]] == [
        (str(backend.event_id), issues["checkout-failed"], "ValueError"),
        (marked, issues["cart-js"], "TypeError"),
    ]
    # The browser error is both marked in the recording and stored: counted once.
    assert detail["session"]["error_count"] == 2


# --------------------------------------------------------------------------- retention


@pytest.fixture(params=["postgres", "directory"])
async def retained(
    request: pytest.FixtureRequest, tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Replay]:
    sessions = {"retention": "240h", "retention_interval": "200ms"}
    async for running in _replay(tmp_path, appguard_dsn, redis_url, redis_prefix, request.param, sessions=sessions):
        yield running


async def test_retention_deletes_old_sessions_and_their_bodies(retained: Replay) -> None:
    old_start = NOW_MS - 20 * 86_400_000
    old_parts = split(recording(12, start_ms=old_start, duration_s=30, nodes=60), 10_000)
    new_parts = split(events_of(13, duration_s=30), 10_000)
    for index, part in enumerate(old_parts):
        assert (await retained.send("visit-old-0001", index, part))[0] == 200
    for index, part in enumerate(new_parts):
        assert (await retained.send("visit-new-0001", index, part))[0] == 200
    assert retained.api.services is not None
    pool = retained.api.services.pool

    async def remaining() -> list[str]:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT DISTINCT session_id FROM appguard.session_segments ORDER BY 1")
            return [r[0] for r in await cur.fetchall()]

    deadline = time.monotonic() + 20
    while "visit-old-0001" in await remaining() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await remaining() == ["visit-new-0001"]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM appguard.session_segment_bodies")
        bodies = (await cur.fetchone() or (0,))[0]
    if retained.folder is not None:
        assert {p.parent.name for p in retained.folder.rglob("*.zst")} == {"visit-new-0001"}
        assert bodies == 0
    else:
        assert bodies == len(new_parts)
