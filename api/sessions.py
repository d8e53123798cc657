"""Session replays: the endpoint browsers send rrweb segments to, and the dashboard's read API.

``POST /api/sessions/{session_id}/segments`` is public, like the telemetry endpoints
(:mod:`api.ingest`): the request is authenticated by a project's ingest key (401, 403), counted
against the key's and the address's rate limits (429 with ``Retry-After``), read within
``sessions.max_segment_size`` with its gzip, deflate or br undone (413, 415, 400), checked
field by field (400 naming the field), then stored by :class:`storage.sessions.SessionStore`:
``{"sequence": n, "duplicate": false}``, or ``true`` when the same segment was stored before
(a retry). A segment past ``sessions.max_session_size`` is refused with 413, a sequence number
sent again with other events with 409. CORS follows ``api.ingest.allowed_origins``.

Dashboard users (viewer and up) list sessions with filters and keyset pagination, read one
with the error events that carried its id, and fetch its recording: every stored segment's
events in sequence order, streamed. Members and admins delete sessions. A background task of
each API process deletes the sessions past ``sessions.retention``.

Other ingest paths (Sentry's replay items) store segments with :func:`store_segment`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from api.errors import ApiError
from api.ingest import Refused, ingest, ingest_path
from api.routing import PUBLIC, ROUTES, json_object_body, json_response, params, query, validate_body
from api.services import SERVICES, services
from api.sessions_config import SessionsConfig
from storage.session_blobs import SESSION_ID, DirectoryBlobs, PostgresBlobs, SegmentBlobs
from storage.sessions import (
    IncomingSegment,
    InvalidCursor,
    InvalidSegment,
    SequenceConflict,
    Session,
    SessionFilters,
    SessionOfAnotherProject,
    SessionStore,
    SessionTooLarge,
    SessionUser,
    StoredSegment,
)
from storage.users_store import Role

_log = logging.getLogger("appguard.api.sessions")

_SETTING = "sessions.max_segment_size"
_SESSION_PATTERN = SESSION_ID.pattern
_MAX_SEQUENCE = 2**31 - 1

# How long a shutdown waits for a retention pass under way.
_STOP_TIMEOUT = 30.0

SESSIONS = web.AppKey("appguard_sessions", SessionStore)


# --------------------------------------------------------------------------- request models


SessionId = Annotated[str, Field(pattern=_SESSION_PATTERN, description="8 to 64 letters, digits, _ or -")]
Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]


class SessionParams(BaseModel):
    """The session's id in the path."""

    session_id: SessionId


class SegmentUser(BaseModel):
    """Who the application says the visitor is."""

    model_config = ConfigDict(extra="ignore")

    id: Short | int | None = None
    email: Short | None = None
    username: Short | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | int | None) -> str | None:
        return str(value) if value is not None else None


class SegmentBody(BaseModel):
    """One segment as the snippet sends it; ``events`` are checked on their own (rrweb events:
    objects with an integer ``type``, ``data`` and a ``timestamp`` in ms since the epoch)."""

    model_config = ConfigDict(extra="ignore")

    sequence: int = Field(ge=0, le=_MAX_SEQUENCE, strict=True)
    url: Annotated[str, StringConstraints(max_length=8192)]
    user_agent: Annotated[str, StringConstraints(max_length=2048)]
    service: Short | None = None
    environment: Short | None = None
    release: Short | None = None
    user: SegmentUser | None = None
    previous_session_id: Annotated[str, Field(pattern=_SESSION_PATTERN)] | None = None
    events: list[Any] = Field(default_factory=list, description="rrweb events, oldest first")


class SessionListQuery(BaseModel):
    """Filters and paging of the session list."""

    model_config = ConfigDict(extra="forbid")

    project: int | None = Field(default=None, ge=1, le=2**63 - 1)
    has_errors: bool | None = Field(default=None, description="only sessions with (true) or without (false) errors")
    user: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)] | None = Field(
        default=None, description="the user's id, email (any case) or name"
    )
    url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048)] | None = Field(
        default=None, description="a part of one of the session's page URLs (any case)"
    )
    browser: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = Field(
        default=None, description="the browser's name, e.g. Chrome (any case)"
    )
    min_duration: int | None = Field(default=None, ge=0, description="milliseconds")
    max_duration: int | None = Field(default=None, ge=0, description="milliseconds")
    limit: int = Field(default=50, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=1024, description="next_cursor of the previous page")


# --------------------------------------------------------------------------- response models


class SegmentAnswer(BaseModel):
    """The segment is stored; ``duplicate`` when it was already (a retry)."""

    sequence: int
    duplicate: bool


class SessionSummary(BaseModel):
    """A recorded session; durations in milliseconds, sizes in bytes (raw: the events' JSON)."""

    id: str
    project_id: int
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    page_count: int
    error_count: int
    user_id: str | None
    user_email: str | None
    user_name: str | None
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
    segment_count: int
    stored_bytes: int
    raw_bytes: int


class SessionList(BaseModel):
    """A page of sessions, newest first; pass ``next_cursor`` as ``cursor`` for the next one."""

    sessions: list[SessionSummary]
    next_cursor: str | None


class SessionErrorOut(BaseModel):
    """An error event that carried the session's id."""

    event_id: str
    issue_id: int
    timestamp: datetime
    type: str
    message: str


class SessionDetail(BaseModel):
    """A session and its error events, oldest first; ``error_count`` counts these and the
    errors the recording marked, each once."""

    session: SessionSummary
    errors: list[SessionErrorOut]


class Recording(BaseModel):
    """Every stored segment's rrweb events, in sequence order, and how many segments."""

    events: list[dict[str, Any]]
    segments: int


# --------------------------------------------------------------------------- helpers


def session_store(app: web.Application) -> SessionStore:
    """The application's session store."""
    return app[SESSIONS]


def summary_out(session: Session, *, error_count: int | None = None) -> SessionSummary:
    """The API's view of a session."""
    fields = {name: getattr(session, name) for name in SessionSummary.model_fields if name != "error_count"}
    return SessionSummary(**fields, error_count=session.error_count if error_count is None else error_count)


def parse_segment(raw: bytes, *, session_id: str, project_id: int) -> IncomingSegment:
    """The segment of a request body; :class:`ApiError` 400 naming the field at fault."""
    data = json_object_body(raw)
    events = data.pop("events", None)
    if events is None:
        raise ApiError(400, "invalid_request", "events: required", field="events")
    body = validate_body(SegmentBody, data)
    user = body.user or SegmentUser()
    return IncomingSegment(
        project_id=project_id,
        session_id=session_id,
        sequence=body.sequence,
        url=body.url,
        user_agent=body.user_agent,
        events=events,
        service=body.service or None,
        environment=body.environment or None,
        release=body.release or None,
        user=SessionUser(id=user.id if isinstance(user.id, str) else None, email=user.email, name=user.username),
        previous_session_id=body.previous_session_id,
    )


async def store_segment(app: web.Application, segment: IncomingSegment) -> StoredSegment:
    """Store a segment; the store's refusals as :class:`ApiError` (400, 409, 413)."""
    try:
        return await session_store(app).add_segment(segment)
    except InvalidSegment as exc:
        raise ApiError(400, "invalid_request", str(exc), field=exc.field) from None
    except SessionTooLarge as exc:
        raise Refused(413, str(exc), field="events") from None
    except SequenceConflict as exc:
        raise ApiError(409, "sequence_conflict", str(exc), field="sequence") from None
    except SessionOfAnotherProject as exc:
        raise ApiError(409, "session_conflict", str(exc), field="session_id") from None


def filters_of(q: SessionListQuery) -> SessionFilters:
    """The store's filters for a validated list query."""
    return SessionFilters(
        project_id=q.project,
        has_errors=q.has_errors,
        user=q.user,
        url=q.url,
        browser=q.browser,
        min_duration_ms=q.min_duration,
        max_duration_ms=q.max_duration,
    )


async def _session_or_404(request: web.Request, session_id: str) -> Session:
    found = await session_store(request.app).get_session(session_id)
    if found is None:
        raise ApiError(404, "session_not_found", f"there is no session {session_id}")
    return found


# --------------------------------------------------------------------------- handlers


async def ingest_segment(request: web.Request) -> web.StreamResponse:
    """Take one rrweb segment of a session from a browser."""
    session_id = params(request, SessionParams).session_id
    config = services(request).config.sessions
    key, raw = await ingest(request).accept(request, config.max_segment_size, _SETTING)
    segment = parse_segment(raw, session_id=session_id, project_id=key.project_id)
    stored = await store_segment(request.app, segment)
    return json_response(SegmentAnswer(sequence=stored.sequence, duplicate=stored.duplicate))


async def list_sessions(request: web.Request) -> web.StreamResponse:
    """Sessions, newest first, filtered."""
    q = query(request, SessionListQuery)
    if q.min_duration is not None and q.max_duration is not None and q.min_duration > q.max_duration:
        raise ApiError(400, "invalid_parameter", "min_duration must not exceed max_duration", field="min_duration")
    try:
        page = await session_store(request.app).list_sessions(filters_of(q), limit=q.limit, cursor=q.cursor)
    except InvalidCursor as exc:
        raise ApiError(400, "invalid_parameter", f"cursor: {exc}", field="cursor") from None
    return json_response(SessionList(sessions=[summary_out(s) for s in page.sessions], next_cursor=page.next_cursor))


async def get_session(request: web.Request) -> web.StreamResponse:
    """A session with the error events that carried its id."""
    session_id = params(request, SessionParams).session_id
    store = session_store(request.app)
    session = await _session_or_404(request, session_id)
    errors = await store.session_errors(session_id)
    unnamed, marked = await store.recorded_error_ids(session_id)
    count = unnamed + len(marked | {e.event_id for e in errors})
    return json_response(
        SessionDetail(
            session=summary_out(session, error_count=count),
            errors=[SessionErrorOut(**vars(e)) for e in errors],
        )
    )


async def get_recording(request: web.Request) -> web.StreamResponse:
    """The session's rrweb events, every stored segment in sequence order (streamed)."""
    session_id = params(request, SessionParams).session_id
    store = session_store(request.app)
    await _session_or_404(request, session_id)
    sequences = await store.segment_sequences(session_id)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_compression()
    await response.prepare(request)
    await response.write(b'{"events":[')
    sent = 0
    async for events in store.recording(session_id, sequences):
        inner = events.strip()[1:-1]
        if not inner.strip():
            continue
        await response.write(b"," + inner if sent else inner)
        sent += 1
    if sent < len(sequences):
        _log.warning(
            "session %s: %d of %d segment bodies are missing", session_id, len(sequences) - sent, len(sequences)
        )
    await response.write(b'],"segments":' + str(sent).encode() + b"}")
    await response.write_eof()
    return response


async def delete_session(request: web.Request) -> web.StreamResponse:
    """Delete a session and its recording."""
    session_id = params(request, SessionParams).session_id
    if not await session_store(request.app).delete_session(session_id):
        raise ApiError(404, "session_not_found", f"there is no session {session_id}")
    return web.Response(status=204)


# --------------------------------------------------------------------------- retention


async def _retain(app: web.Application, config: SessionsConfig, stopping: asyncio.Event) -> None:
    """Delete the sessions past the retention now, then every ``retention_interval``, until
    ``stopping`` is set. A pass is never cancelled halfway: a query cut off inside its
    transaction could leave the pooled connection busy and the shutdown waiting on it."""
    store = session_store(app)
    while not stopping.is_set():
        try:
            deleted = await store.delete_older_than(timedelta(seconds=config.retention))
            if deleted:
                _log.info("retention: deleted %d sessions older than %s", deleted, timedelta(seconds=config.retention))
        except Exception as exc:  # the database may be away for a while; try again next time
            _log.warning("session retention pass failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), config.retention_interval)


def blobs_for(config: SessionsConfig, app: web.Application) -> SegmentBlobs:
    """The segment body backend the config names."""
    if config.storage == "directory":
        assert config.directory is not None
        return DirectoryBlobs(config.directory)
    return PostgresBlobs(app[SERVICES].pool)


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the session endpoints (after ``api.ingest``) and the retention task."""
    config = app[SERVICES].config.sessions
    blobs = blobs_for(config, app)
    app[SESSIONS] = SessionStore(
        app[SERVICES].pool,
        blobs,
        max_session_size=config.max_session_size,
        compression_level=config.compression_level,
    )
    ingest_path(app, r"/api/sessions/[^/]+/segments")
    retention: dict[str, asyncio.Task[None]] = {}
    stopping = asyncio.Event()

    async def start(app: web.Application) -> None:
        if isinstance(blobs, DirectoryBlobs):
            await asyncio.to_thread(blobs.root.mkdir, parents=True, exist_ok=True)
        if config.retention > 0:
            stopping.clear()
            retention["task"] = asyncio.create_task(_retain(app, config, stopping), name="session retention")

    async def stop(_: web.Application) -> None:
        task = retention.pop("task", None)
        if task is None:
            return
        stopping.set()
        try:
            # The pass under way finishes (it is short: batches of a few hundred rows).
            await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT)
        except TimeoutError:
            _log.warning("the session retention pass did not finish within %s s; cancelled", _STOP_TIMEOUT)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)

    routes = app[ROUTES]
    tags = ["sessions"]
    not_found = {404: "no such session"}
    routes.add(
        "POST", "/api/sessions/{session_id}/segments", ingest_segment, role=PUBLIC,
        summary="Send a segment of a session replay",
        description="A JSON object `{sequence, url, user_agent, service?, environment?, release?, user?, "
        "previous_session_id?, events}` where `events` are rrweb events; gzip, deflate or br encoded, or not. "
        "Authenticated by a project's ingest key (X-AppGuard-Key or ?key=). A segment stored already "
        "answers `duplicate: true`. See docs/sessions.md.",
        params=SessionParams, body=SegmentBody, reads_body=True, responses={200: SegmentAnswer},
        errors={
            401: "no ingest key, or an unknown one",
            403: "the ingest key is revoked, or the page's origin is not in api.ingest.allowed_origins",
            409: "the sequence number was stored with other events, or the session id is another project's",
            413: "the segment is larger than sessions.max_segment_size, or the session would pass sessions.max_session_size",
            415: "a Content-Type other than application/json (or text/plain), or an unknown Content-Encoding",
            429: "over the rate limit of the key or the client address (Retry-After)",
        },
        tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/sessions", list_sessions, role=Role.VIEWER, summary="List recorded sessions",
        description="Newest first (by start); `error_count` counts the errors the recording marked.",
        query=SessionListQuery, responses={200: SessionList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/sessions/{session_id}", get_session, role=Role.VIEWER, summary="A session with its errors",
        params=SessionParams, responses={200: SessionDetail}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/sessions/{session_id}/recording", get_recording, role=Role.VIEWER,
        summary="A session's rrweb events, to replay",
        description="Every stored segment's events, in sequence order, each segment once.",
        params=SessionParams, responses={200: Recording}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/sessions/{session_id}", delete_session, role=Role.MEMBER,
        summary="Delete a session and its recording", params=SessionParams, responses={204: None},
        errors=not_found, tags=tags,
    )  # fmt: skip
