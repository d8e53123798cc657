"""The dashboard's session replay pages: the list of recorded sessions and the replay player.

``/sessions`` is rendered on the server from :class:`storage.sessions.SessionStore`, the store
behind ``GET /api/sessions`` (:mod:`api.sessions`), with the same filters: has errors, user, a
part of a page URL, browser and a duration range (the form takes seconds, the store
milliseconds), newest first, a page at a time by cursor.

``/sessions/{session_id}`` renders the session's facts and the error events that carried its id
(each linked to its issue); the browser then fetches the recording from the API and replays it
with ``rrweb-player`` (from npm, served under ``/vendor/rrweb-player/``), drawing the timeline of
errors, page views and custom events (``api/static/js/session-player.js``). The issue page's
"Session replay" link adds ``?t=<ms since the epoch>&event=<event id>``: the player opens paused
at that moment with that error highlighted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import ApiError
from api.pages import render
from api.projects import project_store
from api.routing import ROUTES, params, query
from api.sessions import SessionListQuery, SessionParams, filters_of, session_store
from storage.sessions import InvalidCursor, Session, normalize_event_id
from storage.users_store import Role

#: Sessions per page of the list.
PAGE_SIZE = 25

# The replay rebuilds the recorded page inside a sandboxed iframe (same origin, no scripts): its
# <style> elements and style attributes, and rrweb-player's own sizing, are inline styles; its
# images and fonts come from wherever the recorded site had them (or data:/blob: URLs). So this
# page, unlike the others, admits inline styles and images and fonts from anywhere. Scripts stay
# same-origin only: rrweb never runs the recorded page's scripts, and nothing here needs eval.
REPLAY_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src * data: blob:; "
    "font-src * data:; media-src * data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SessionsPageQuery(BaseModel):
    """The session list's form, as typed; checked when the list is queried."""

    model_config = ConfigDict(extra="ignore")

    project: str = Field(default="", max_length=20)
    has_errors: str = Field(default="", max_length=10)
    user: str = Field(default="", max_length=256)
    url: str = Field(default="", max_length=2048)
    browser: str = Field(default="", max_length=100)
    #: Seconds.
    min_duration: str = Field(default="", max_length=20)
    max_duration: str = Field(default="", max_length=20)
    cursor: str = Field(default="", max_length=1024)

    def fields(self) -> dict[str, str]:
        """The filled-in filters (the cursor aside)."""
        values = {
            "project": self.project,
            "has_errors": self.has_errors,
            "user": self.user.strip(),
            "url": self.url.strip(),
            "browser": self.browser.strip(),
            "min_duration": self.min_duration.strip(),
            "max_duration": self.max_duration.strip(),
        }
        return {key: value for key, value in values.items() if value}

    def api_query(self) -> dict[str, Any]:
        """The form as ``GET /api/sessions``'s query; durations from seconds to milliseconds."""
        out: dict[str, Any] = dict(self.fields())
        for name in ("min_duration", "max_duration"):
            if name in out:
                out[name] = _seconds_to_ms(name, out[name])
        out["limit"] = PAGE_SIZE
        if self.cursor:
            out["cursor"] = self.cursor
        return out

    def link(self, **changes: str | None) -> str:
        """``/sessions`` with this form's filters, some replaced (None removes one)."""
        values: dict[str, str] = dict(self.fields())
        for key, value in changes.items():
            if value:
                values[key] = value
            else:
                values.pop(key, None)
        return "/sessions" + (f"?{urlencode(values)}" if values else "")


class SessionPageQuery(BaseModel):
    """Where the replay starts: ``t`` (ms since the epoch) and the error event to highlight."""

    model_config = ConfigDict(extra="ignore")

    t: int | None = Field(default=None, ge=0, le=2**53)
    event: str | None = Field(default=None, max_length=100)


class _FormError(ValueError):
    pass


def _seconds_to_ms(name: str, text: str) -> int:
    try:
        seconds = float(text)
    except ValueError:
        raise _FormError(f"{name}: {text!r} is not a number of seconds") from None
    if not 0 <= seconds <= 10**9:
        raise _FormError(f"{name}: must be a number of seconds from 0")
    return round(seconds * 1000)


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))


def issue_link(project_id: int, issue_id: int, event_id: str) -> str:
    """The issue page showing this event (the issue page assumes project 1 unless told)."""
    extra = f"&project={project_id}" if project_id != 1 else ""
    return f"/issues/{issue_id}?event={quote(event_id, safe='')}{extra}"


async def sessions_page(request: web.Request) -> web.StreamResponse:
    """The recorded sessions, newest first, with their filters and pages."""
    form = query(request, SessionsPageQuery)
    error: str | None = None
    sessions: list[Session] = []
    next_cursor: str | None = None
    try:
        listing = SessionListQuery.model_validate(form.api_query())
        if (
            listing.min_duration is not None
            and listing.max_duration is not None
            and listing.min_duration > listing.max_duration
        ):
            raise _FormError("min_duration must not exceed max_duration")
        page = await session_store(request.app).list_sessions(
            filters_of(listing), limit=listing.limit, cursor=listing.cursor
        )
        sessions, next_cursor = page.sessions, page.next_cursor
    except ValidationError as exc:
        error = _problem(exc)
    except (_FormError, InvalidCursor) as exc:
        error = str(exc) if not isinstance(exc, InvalidCursor) else f"cursor: {exc}"
    return render(
        request,
        "sessions.html",
        title="Sessions",
        form=form,
        projects=await project_store(request).list_projects(),
        sessions=sessions,
        error=error,
        next_link=form.link(cursor=next_cursor) if next_cursor else None,
        first_link=form.link(cursor=None) if form.cursor else None,
    )


async def session_page(request: web.Request) -> web.StreamResponse:
    """A session: its facts, its errors, and the replay with its timeline."""
    session_id = params(request, SessionParams).session_id
    q = query(request, SessionPageQuery)
    store = session_store(request.app)
    session = await store.get_session(session_id)
    if session is None:
        raise ApiError(404, "session_not_found", f"there is no session {session_id}")
    errors = await store.session_errors(session_id)
    unnamed, marked = await store.recorded_error_ids(session_id)
    chosen = normalize_event_id(q.event) if q.event else ""
    response = render(
        request,
        "session.html",
        title=f"Session {session.id}",
        active="/sessions",
        session=session,
        errors=[
            {
                "event_id": e.event_id,
                "issue_id": e.issue_id,
                "timestamp": e.timestamp,
                "ms": int(e.timestamp.timestamp() * 1000),
                "type": e.type,
                "message": e.message,
                "link": issue_link(session.project_id, e.issue_id, e.event_id),
                "chosen": e.event_id == chosen,
            }
            for e in errors
        ],
        error_count=unnamed + len(marked | {e.event_id for e in errors}),
        t="" if q.t is None else str(q.t),
        event=chosen,
    )
    response.headers["Content-Security-Policy"] = REPLAY_CSP
    return response


# --------------------------------------------------------------------------- template helpers


def ms_duration(ms: int | None) -> str:
    """``1h 02m``, ``3m 05s`` or ``42s`` for a duration in milliseconds."""
    if ms is None or ms < 0:
        return ""
    seconds = ms // 1000
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if ms and not seconds:
        return "<1s"
    return f"{seconds}s"


def utc_moment(value: datetime) -> str:
    """A session's start as UTC text."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def register(app: web.Application) -> None:
    """Declare the session pages (after ``api.sessions``, whose store they read)."""
    from api.services import SERVICES

    env = app[SERVICES].templates
    env.filters["ms_duration"] = ms_duration
    env.filters["utc_moment"] = utc_moment
    routes = app[ROUTES]
    routes.page("/sessions", sessions_page, role=Role.VIEWER, summary="Session replays", query=SessionsPageQuery)
    routes.page(
        "/sessions/{session_id}",
        session_page,
        role=Role.VIEWER,
        summary="A session replay",
        params=SessionParams,
        query=SessionPageQuery,
    )
