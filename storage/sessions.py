"""Session replays: segments stored once each, and the session rows they keep up to date.

A browser records a session with rrweb and sends it in numbered *segments*. Each segment is
added by :meth:`SessionStore.add_segment` in one transaction that locks the session's row, so
segments of one session arriving together are applied one after the other:

- a segment whose ``(session, sequence)`` is stored already is a *duplicate* (a retry) when its
  events are the same, and refused (:class:`SequenceConflict`) when they differ, so that no
  data is dropped in silence;
- a segment that would take the session's raw size past the limit is refused (:class:`SessionTooLarge`);
- otherwise its body (zstd of the events' JSON) goes to the configured backend
  (:mod:`storage.session_blobs`) and the session row takes the segment into account: the
  earliest and latest event times, page and error counts, sizes, user, first and last URL.

Pages are counted from page markers: rrweb Meta events (``type`` 4, a page load) and the
snippet's ``appguard.pageview`` custom events (SPA navigations). A marker counts when its URL
differs from the one before it in sequence order, so rrweb's repeated Meta events (a new full
snapshot) and a pageview announcing the page just loaded count once. The count is summed over
the segments in sequence order, whatever order they arrived in.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import zstandard
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool
from ua_parser import parse as parse_ua

from storage.session_blobs import SegmentBlobs, check_session_id

META = 4
CUSTOM = 5
PAGEVIEW_TAG = "appguard.pageview"
ERROR_TAG = "appguard.error"
# Distinct page URLs kept per session for the url filter.
MAX_URLS = 200
# Sessions deleted per statement by the retention pass.
_DELETE_BATCH = 500
# A decompressed body larger than this is not one this store wrote.
_MAX_DECODED = 1 << 31
# Event times accepted: from 2000-01-01 to a day ahead of the server's clock (browsers' clocks drift).
_EARLIEST_MS = 946_684_800_000
_FUTURE_SLACK = 24 * 3600.0


class SessionTooLarge(Exception):
    """The segment would take its session past the size limit."""


class SequenceConflict(Exception):
    """A segment with this sequence number, but other events, is stored already."""


class SessionOfAnotherProject(Exception):
    """The session id is used by a session of another project."""


class InvalidCursor(ValueError):
    """A pagination cursor that this store did not hand out."""


class InvalidSegment(ValueError):
    """A segment whose events cannot be stored; ``field`` names the one at fault (``events[3].timestamp``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class UserAgentInfo:
    """What a User-Agent string says: browser, OS and device ('' where it says nothing)."""

    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device: str = ""


def _version(*parts: str | None) -> str:
    found: list[str] = []
    for part in parts:
        if not part:
            break
        found.append(part)
    return ".".join(found)


def _known(family: str | None) -> str:
    return "" if family in (None, "Other") else str(family)


@functools.lru_cache(maxsize=4096)
def parse_user_agent(text: str) -> UserAgentInfo:
    """Browser, OS and device of a User-Agent string (with ``ua-parser``'s regexes; cached)."""
    if not text:
        return UserAgentInfo()
    found = parse_ua(text)
    agent, system, device = found.user_agent, found.os, found.device
    return UserAgentInfo(
        browser=_known(agent.family) if agent else "",
        browser_version=_version(agent.major, agent.minor, agent.patch) if agent else "",
        os=_known(system.family) if system else "",
        os_version=_version(system.major, system.minor, system.patch) if system else "",
        device=_known(device.family) if device else "",
    )


def check_events(events: Any, *, now: datetime | None = None) -> None:
    """Refuse (:class:`InvalidSegment`) anything but a non-empty list of rrweb events: objects
    with an integer ``type``, a ``data`` member and a ``timestamp`` in milliseconds since the
    epoch, from 2000 to a day from ``now``."""
    if not isinstance(events, list):
        raise InvalidSegment("events", "must be a list of rrweb events")
    if not events:
        raise InvalidSegment("events", "must hold at least one event")
    latest = ((now or datetime.now(UTC)).timestamp() + _FUTURE_SLACK) * 1000
    for index, event in enumerate(events):
        where = f"events[{index}]"
        if not isinstance(event, dict):
            raise InvalidSegment(where, "must be an object")
        kind = event.get("type")
        if not isinstance(kind, int) or isinstance(kind, bool):
            raise InvalidSegment(f"{where}.type", "must be an integer")
        if "data" not in event:
            raise InvalidSegment(f"{where}.data", "required")
        stamp = event.get("timestamp")
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
            raise InvalidSegment(f"{where}.timestamp", "must be a number of milliseconds since the epoch")
        if not _EARLIEST_MS <= stamp <= latest:
            raise InvalidSegment(f"{where}.timestamp", f"{stamp} is not a time between 2000 and tomorrow")


def _timestamp(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, UTC)


def _payload(event: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    data = event.get("data")
    if not isinstance(data, Mapping):
        return None, {}
    tag = data.get("tag")
    payload = data.get("payload")
    return (tag if isinstance(tag, str) else None), (payload if isinstance(payload, Mapping) else {})


def normalize_event_id(value: str) -> str:
    """An event id as error_events keeps it (``uuid::text``) when it is one; else as given."""
    compact = value.strip().lower().replace("-", "")
    if len(compact) == 32 and all(c in "0123456789abcdef" for c in compact):
        return f"{compact[:8]}-{compact[8:12]}-{compact[12:16]}-{compact[16:20]}-{compact[20:]}"
    return value.strip()


@dataclass(frozen=True)
class SegmentSummary:
    """What one segment's events tell about the session."""

    first_timestamp: datetime
    last_timestamp: datetime
    event_count: int
    #: URLs of the segment's first and last page markers (None without markers).
    first_page_url: str | None
    last_page_url: str | None
    #: Markers after the first one whose URL differs from the marker before them.
    page_changes: int
    #: The page the segment starts and ends on: its first and last marker, else the URL it was sent from.
    first_url: str
    last_url: str
    #: Distinct page URLs, in the order seen.
    urls: list[str]
    error_count: int
    error_ids: list[str]


def summarize(events: Sequence[Mapping[str, Any]], url: str) -> SegmentSummary:
    """The summary of a segment's events (already checked to have numeric timestamps), sent from ``url``."""
    if not events:
        raise ValueError("a segment has at least one event")
    stamps = [float(event["timestamp"]) for event in events]
    markers: list[str] = []
    errors = 0
    error_ids: list[str] = []
    for event in events:
        kind = event.get("type")
        if kind == META:
            data = event.get("data")
            href = data.get("href") if isinstance(data, Mapping) else None
            if isinstance(href, str) and href:
                markers.append(href)
        elif kind == CUSTOM:
            tag, payload = _payload(event)
            if tag == PAGEVIEW_TAG:
                page = payload.get("url")
                if isinstance(page, str) and page:
                    markers.append(page)
            elif tag == ERROR_TAG:
                errors += 1
                event_id = payload.get("event_id")
                if isinstance(event_id, str) and event_id.strip():
                    error_ids.append(normalize_event_id(event_id))
    changes = sum(1 for before, after in itertools.pairwise(markers) if after != before)
    urls = list(dict.fromkeys([*markers, url] if url else markers))[:MAX_URLS]
    return SegmentSummary(
        first_timestamp=_timestamp(min(stamps)),
        last_timestamp=_timestamp(max(stamps)),
        event_count=len(events),
        first_page_url=markers[0] if markers else None,
        last_page_url=markers[-1] if markers else None,
        page_changes=changes,
        first_url=markers[0] if markers else url,
        last_url=markers[-1] if markers else url,
        urls=urls,
        error_count=errors,
        error_ids=error_ids,
    )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class SessionUser:
    """Who the application said the visitor is."""

    id: str | None = None
    email: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class IncomingSegment:
    """One segment as received: where it belongs, what it says about the session, its events."""

    project_id: int
    session_id: str
    sequence: int
    url: str
    user_agent: str
    events: list[dict[str, Any]]
    service: str | None = None
    environment: str | None = None
    release: str | None = None
    user: SessionUser = field(default_factory=SessionUser)
    previous_session_id: str | None = None


@dataclass(frozen=True)
class StoredSegment:
    """What :meth:`SessionStore.add_segment` did: stored the segment, or found it stored already."""

    sequence: int
    duplicate: bool
    raw_bytes: int
    stored_bytes: int


@dataclass(frozen=True)
class Session:
    """A session's row."""

    id: str
    project_id: int
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    page_count: int
    error_count: int
    segment_count: int
    event_count: int
    raw_bytes: int
    stored_bytes: int
    user_id: str | None
    user_email: str | None
    user_name: str | None
    user_agent: str
    browser: str
    browser_version: str
    os: str
    os_version: str
    device: str
    first_url: str
    last_url: str
    service: str | None
    environment: str | None
    release: str | None
    previous_session_id: str | None


@dataclass(frozen=True)
class SessionError:
    """An error event of the session, from ``appguard.error_events``."""

    event_id: str
    issue_id: int
    timestamp: datetime
    type: str
    message: str


@dataclass(frozen=True)
class SessionFilters:
    """What the session list is narrowed to; None: no condition."""

    project_id: int | None = None
    has_errors: bool | None = None
    #: The user's id, email (any case) or name, exactly.
    user: str | None = None
    #: A part of one of the page URLs (any case).
    url: str | None = None
    #: The browser's name (any case), e.g. ``Chrome``.
    browser: str | None = None
    min_duration_ms: int | None = None
    max_duration_ms: int | None = None


@dataclass(frozen=True)
class SessionPage:
    """A page of the list, newest first, and the cursor of the next page (None on the last)."""

    sessions: list[Session]
    next_cursor: str | None


_SESSION_COLUMNS = (
    "id, project_id, started_at, ended_at, duration_ms, page_count, error_count, segment_count, event_count, "
    "raw_bytes, stored_bytes, user_id, user_email, user_name, user_agent, browser, browser_version, os, "
    "os_version, device, first_url, last_url, service, environment, release, previous_session_id"
)


def encode_cursor(started_at: datetime, session_id: str) -> str:
    """The cursor of the page after the session (``started_at``, ``session_id``)."""
    raw = f"{started_at.astimezone(UTC).isoformat()}|{session_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor of :func:`encode_cursor` stands for; :class:`InvalidCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, session_id = raw.partition("|")
        started_at = datetime.fromisoformat(stamp)
        check_session_id(session_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("not a cursor of this list") from None
    if started_at.tzinfo is None:
        raise InvalidCursor("not a cursor of this list")
    return started_at, session_id


# --------------------------------------------------------------------------- the store


class SessionStore:
    """Session rows and segments in PostgreSQL, segment bodies in ``blobs``."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        blobs: SegmentBlobs,
        *,
        max_session_size: int,
        compression_level: int = 3,
    ) -> None:
        self.pool = pool
        self.blobs = blobs
        self.max_session_size = max_session_size
        self.compression_level = compression_level

    # ---- writing

    async def add_segment(self, segment: IncomingSegment) -> StoredSegment:
        """Store a segment and update its session; see the module's doc for duplicates and refusals.

        Raises :class:`InvalidSegment` for events that are not rrweb events,
        :class:`~storage.session_blobs.UnsafeSessionId`, :class:`SessionOfAnotherProject`,
        :class:`SequenceConflict` and :class:`SessionTooLarge`.
        """
        check_session_id(segment.session_id)
        check_events(segment.events)
        raw = orjson.dumps(segment.events)
        digest = hashlib.sha256(raw).digest()
        summary = summarize(segment.events, segment.url)
        agent = parse_user_agent(segment.user_agent)
        body = zstandard.ZstdCompressor(level=self.compression_level).compress(raw)
        written = False
        try:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO appguard.sessions (id, project_id, started_at, ended_at, user_agent, browser, "
                    "browser_version, os, os_version, device, first_url, last_url) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    [
                        segment.session_id, segment.project_id, summary.first_timestamp, summary.last_timestamp,
                        segment.user_agent, agent.browser, agent.browser_version, agent.os, agent.os_version,
                        agent.device, summary.first_url, summary.last_url,
                    ],
                )  # fmt: skip
                cur = await conn.execute(
                    "SELECT s.project_id, s.raw_bytes, s.urls, g.digest, g.raw_bytes, g.stored_bytes "
                    "FROM appguard.sessions s LEFT JOIN appguard.session_segments g "
                    "ON g.session_id = s.id AND g.sequence = %s WHERE s.id = %s FOR UPDATE OF s",
                    [segment.sequence, segment.session_id],
                )
                row = await cur.fetchone()
                assert row is not None
                project_id, session_bytes, known_urls, stored_digest, stored_raw, stored_size = row
                if project_id != segment.project_id:
                    raise SessionOfAnotherProject(
                        f"session {segment.session_id} belongs to another project than the key's ({segment.project_id})"
                    )
                if stored_digest is not None:
                    if bytes(stored_digest) != digest:
                        raise SequenceConflict(
                            f"segment {segment.sequence} of session {segment.session_id} was received already "
                            "with other events; number each segment of a session once"
                        )
                    return StoredSegment(segment.sequence, True, stored_raw, stored_size)
                if session_bytes + len(raw) > self.max_session_size:
                    raise SessionTooLarge(
                        f"session {segment.session_id} would pass the limit of {self.max_session_size} bytes "
                        f"(sessions.max_session_size): it holds {session_bytes}, the segment adds {len(raw)}"
                    )
                await conn.execute(
                    "INSERT INTO appguard.session_segments (session_id, sequence, first_timestamp, last_timestamp, "
                    "event_count, raw_bytes, stored_bytes, digest, first_page_url, last_page_url, page_changes, "
                    "error_ids) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        segment.session_id, segment.sequence, summary.first_timestamp, summary.last_timestamp,
                        summary.event_count, len(raw), len(body), digest, summary.first_page_url,
                        summary.last_page_url, summary.page_changes, summary.error_ids,
                    ],
                )  # fmt: skip
                written = True
                await self.blobs.put(conn, segment.session_id, segment.sequence, body)
                urls = list(dict.fromkeys([*known_urls, *summary.urls]))[:MAX_URLS]
                await conn.execute(_UPDATE_SESSION, _update_values(segment, summary, urls, len(raw), len(body)))
        except BaseException:
            if written:
                await self.blobs.discard(segment.session_id, segment.sequence)
            raise
        return StoredSegment(segment.sequence, False, len(raw), len(body))

    # ---- reading

    async def get_session(self, session_id: str) -> Session | None:
        """The session, if it exists."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Session))
            await cur.execute(f"SELECT {_SESSION_COLUMNS} FROM appguard.sessions WHERE id = %s", [session_id])
            return await cur.fetchone()

    async def list_sessions(
        self, filters: SessionFilters, *, limit: int = 50, cursor: str | None = None
    ) -> SessionPage:
        """A page of sessions matching ``filters``, newest first (by start), after ``cursor``."""
        where: list[str] = []
        args: list[Any] = []
        if filters.project_id is not None:
            where.append("project_id = %s")
            args.append(filters.project_id)
        if filters.has_errors is not None:
            where.append("error_count > 0" if filters.has_errors else "error_count = 0")
        if filters.user is not None:
            where.append("(user_id = %s OR lower(user_email) = lower(%s) OR user_name = %s)")
            args += [filters.user] * 3
        if filters.url is not None:
            where.append("EXISTS (SELECT 1 FROM unnest(urls) u WHERE strpos(lower(u), lower(%s)) > 0)")
            args.append(filters.url)
        if filters.browser is not None:
            where.append("lower(browser) = lower(%s)")
            args.append(filters.browser)
        if filters.min_duration_ms is not None:
            where.append("duration_ms >= %s")
            args.append(filters.min_duration_ms)
        if filters.max_duration_ms is not None:
            where.append("duration_ms <= %s")
            args.append(filters.max_duration_ms)
        if cursor is not None:
            after_started, after_id = decode_cursor(cursor)
            where.append("(started_at, id) < (%s, %s)")
            args += [after_started, after_id]
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Session))
            await cur.execute(
                f"SELECT {_SESSION_COLUMNS} FROM appguard.sessions {condition} "
                "ORDER BY started_at DESC, id DESC LIMIT %s",
                [*args, limit + 1],
            )
            rows = await cur.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].started_at, rows[-1].id) if more and rows else None
        return SessionPage(rows, next_cursor)

    async def session_errors(self, session_id: str, *, limit: int = 1000) -> list[SessionError]:
        """The error events that carried this session's id, oldest first."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(SessionError))
            await cur.execute(
                'SELECT event_id::text AS event_id, issue_id, "timestamp", type, message '
                'FROM appguard.error_events WHERE session_id = %s ORDER BY "timestamp", event_id LIMIT %s',
                [session_id, limit],
            )
            return await cur.fetchall()

    async def recorded_error_ids(self, session_id: str) -> tuple[int, set[str]]:
        """The recording's error markers: how many carry no event id, and the ids of the others."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT s.error_count, coalesce(e.ids, '{}'), coalesce(e.marked, 0) FROM appguard.sessions s "
                "LEFT JOIN LATERAL (SELECT array_agg(DISTINCT i) AS ids, count(*) AS marked "
                "FROM appguard.session_segments g, unnest(g.error_ids) i WHERE g.session_id = s.id) e ON true "
                "WHERE s.id = %s",
                [session_id],
            )
            row = await cur.fetchone()
        if row is None:
            return 0, set()
        total, ids, marked = row
        return int(total) - int(marked), set(ids)

    async def segment_sequences(self, session_id: str) -> list[int]:
        """The sequence numbers of the session's stored segments, in order."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT sequence FROM appguard.session_segments WHERE session_id = %s ORDER BY sequence",
                [session_id],
            )
            return [r[0] for r in await cur.fetchall()]

    async def recording(self, session_id: str, sequences: Sequence[int], *, batch: int = 8) -> AsyncIterator[bytes]:
        """The events of these segments, in their order: one JSON array per segment found.

        A segment whose body is missing (a file removed behind the store's back) is skipped.
        """
        decompressor = zstandard.ZstdDecompressor()
        for start in range(0, len(sequences), batch):
            part = sequences[start : start + batch]
            bodies = await self.blobs.read(session_id, part)
            for sequence in part:
                body = bodies.get(sequence)
                if body is not None:
                    yield decompressor.decompress(body, max_output_size=_MAX_DECODED)

    # ---- deleting

    async def delete_session(self, session_id: str) -> bool:
        """Delete a session with its segments; False when there was none."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT sequence FROM appguard.session_segments WHERE session_id = %s", [session_id]
            )
            sequences = [r[0] for r in await cur.fetchall()]
            cur = await conn.execute("DELETE FROM appguard.sessions WHERE id = %s RETURNING id", [session_id])
            found = await cur.fetchone() is not None
        if found:
            await self.blobs.remove((session_id, sequence) for sequence in sequences)
        return found

    async def delete_older_than(self, age: timedelta, *, now: datetime | None = None) -> int:
        """Delete the sessions whose last event is older than ``age``; how many were deleted.

        Batches of rows locked with SKIP LOCKED: API processes running this at the same time
        delete disjoint sessions, and a session taking a segment is left for the next pass.
        """
        if age <= timedelta(0):
            raise ValueError(f"the retention age must be positive, not {age}")
        cutoff = (now or datetime.now(UTC)) - age
        deleted = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_DELETE_OLD, [cutoff, _DELETE_BATCH])
                rows = await cur.fetchall()
            ids = {r[0] for r in rows}
            await self.blobs.remove((r[0], r[1]) for r in rows if r[1] is not None)
            deleted += len(ids)
            if len(ids) < _DELETE_BATCH:
                return deleted


def _update_values(
    segment: IncomingSegment, summary: SegmentSummary, urls: list[str], raw_bytes: int, stored_bytes: int
) -> dict[str, Any]:
    return {
        "id": segment.session_id,
        "first": summary.first_timestamp,
        "last": summary.last_timestamp,
        "first_url": summary.first_url,
        "last_url": summary.last_url,
        "errors": summary.error_count,
        "events": summary.event_count,
        "raw": raw_bytes,
        "stored": stored_bytes,
        "user_id": segment.user.id,
        "user_email": segment.user.email,
        "user_name": segment.user.name,
        "service": segment.service,
        "environment": segment.environment,
        "release": segment.release,
        "previous": segment.previous_session_id,
        "urls": urls,
    }


# Right-hand sides see the row as it was: the first URL is replaced only by a segment that
# starts earlier, the last one by a segment that ends no earlier. The user is the latest one
# named (a visitor may sign in on the way); service, environment and release the first.
_UPDATE_SESSION = """
UPDATE appguard.sessions SET
    started_at = least(started_at, %(first)s),
    ended_at = greatest(ended_at, %(last)s),
    first_url = CASE WHEN %(first)s < started_at THEN %(first_url)s ELSE first_url END,
    last_url = CASE WHEN %(last)s >= ended_at THEN %(last_url)s ELSE last_url END,
    error_count = error_count + %(errors)s,
    segment_count = segment_count + 1,
    event_count = event_count + %(events)s,
    raw_bytes = raw_bytes + %(raw)s,
    stored_bytes = stored_bytes + %(stored)s,
    user_id = coalesce(%(user_id)s, user_id),
    user_email = coalesce(%(user_email)s, user_email),
    user_name = coalesce(%(user_name)s, user_name),
    service = coalesce(service, %(service)s),
    environment = coalesce(environment, %(environment)s),
    release = coalesce(release, %(release)s),
    previous_session_id = coalesce(previous_session_id, %(previous)s),
    urls = %(urls)s,
    page_count = (
        SELECT coalesce(sum(m.page_changes), 0) + count(*) FILTER (WHERE m.before IS DISTINCT FROM m.first_page_url)
        FROM (
            SELECT first_page_url, page_changes, lag(last_page_url) OVER (ORDER BY sequence) AS before
            FROM appguard.session_segments
            WHERE session_id = %(id)s AND first_page_url IS NOT NULL
        ) m
    ),
    updated_at = now()
WHERE id = %(id)s
"""

# The old sessions of one batch, with their segments (a session without segments gives one
# row with a null sequence).
_DELETE_OLD = """
WITH doomed AS (
    SELECT id FROM appguard.sessions WHERE ended_at < %s ORDER BY ended_at LIMIT %s FOR UPDATE SKIP LOCKED
), segments AS (
    SELECT d.id, g.sequence FROM doomed d LEFT JOIN appguard.session_segments g ON g.session_id = d.id
), gone AS (
    DELETE FROM appguard.sessions WHERE id IN (SELECT id FROM doomed) RETURNING id
)
SELECT s.id, s.sequence FROM segments s JOIN gone USING (id)
"""
