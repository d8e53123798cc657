"""The errors endpoints: the issue list, an issue's detail and events, actions, charts and the
dashboard home.

Thin handlers over :class:`storage.issue_queries.IssueQueries`, which composes every SQL
statement with parameters and caches the aggregate reads in Redis (:class:`QueryCache` on the
API's Redis client and key prefix). Its :class:`QueryValidationError` becomes a 400 naming the
parameter at fault.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.errors import ApiError
from api.routing import ROUTES, body, json_response, params, query
from api.services import Services, services
from storage.cache import QueryCache
from storage.issue_queries import (
    MAX_PAGE,
    Action,
    ActionResult,
    Chart,
    Dashboard,
    EventCounts,
    EventDetail,
    EventSummary,
    IssueFilters,
    IssueQueries,
    IssueSummary,
    TagSummary,
)
from storage.search import QueryValidationError, SearchSyntaxError, parse_search
from storage.users_store import Role

_QUERIES = web.AppKey("appguard_issue_queries", IssueQueries)

#: Most issue ids one bulk action may list.
MAX_BULK_IDS = 1000

_PERIOD = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
_PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

IssueStatus = Literal["unresolved", "resolved", "ignored"]


# --------------------------------------------------------------------------- request models


class _RangeQuery(BaseModel):
    """A time range: ``start``/``end`` (ISO 8601) or ``statsPeriod`` (``24h``, ``14d``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    project: int = Field(default=1, ge=1, le=2**63 - 1, description="the project's id")
    start: datetime | None = Field(default=None, description="start of the range (ISO 8601)")
    end: datetime | None = Field(default=None, description="end of the range (ISO 8601), exclusive")
    stats_period: str | None = Field(
        default=None,
        alias="statsPeriod",
        max_length=10,
        description="a range ending now: a number and s, m, h, d or w (24h, 14d)",
    )

    def period(self) -> timedelta | None:
        """``statsPeriod`` as a duration; 400 naming it when it is not one."""
        if self.stats_period is None:
            return None
        if self.start is not None or self.end is not None:
            raise ApiError(
                400,
                "invalid_parameter",
                "statsPeriod: give statsPeriod, or start and end, not both",
                field="statsPeriod",
            )
        found = _PERIOD.match(self.stats_period)
        if found is None:
            raise ApiError(
                400, "invalid_parameter", "statsPeriod: use a number and s, m, h, d or w (24h)", field="statsPeriod"
            )
        return timedelta(seconds=int(found.group(1)) * _PERIOD_UNITS[found.group(2)])


class IssueListQuery(_RangeQuery):
    """Filters (repeat a parameter for several values), search, sort and a page."""

    status: list[IssueStatus] = Field(default_factory=list, max_length=3)
    service: list[str] = Field(default_factory=list, max_length=100)
    environment: list[str] = Field(default_factory=list, max_length=100)
    level: list[str] = Field(default_factory=list, max_length=100)
    type: list[str] = Field(default_factory=list, max_length=100)
    query: str = Field(default="", max_length=2000, description="search, e.g. is:unresolved level:error TypeError")
    sort: Literal["last_seen", "first_seen", "events", "users"] = "last_seen"
    cursor: str | None = Field(default=None, max_length=1024)
    limit: int = Field(default=25, ge=1, le=MAX_PAGE)


class IssueParams(BaseModel):
    """The issue's id in the path."""

    id: int = Field(ge=1, le=2**63 - 1)


class EventParams(BaseModel):
    """The issue's id and the event's UUID in the path."""

    id: int = Field(ge=1, le=2**63 - 1)
    event_id: uuid.UUID


class ProjectQuery(BaseModel):
    """The project."""

    model_config = ConfigDict(extra="forbid")

    project: int = Field(default=1, ge=1, le=2**63 - 1)


class EventListQuery(ProjectQuery):
    """A page of events."""

    cursor: str | None = Field(default=None, max_length=1024)
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)


class ChartQuery(_RangeQuery):
    """A chart's range and bucket width (default: by the range's length)."""

    interval: Literal["minute", "hour", "day"] | None = None


class ProjectChartQuery(ChartQuery):
    """The project chart, optionally of some services or environments."""

    service: list[str] = Field(default_factory=list, max_length=100)
    environment: list[str] = Field(default_factory=list, max_length=100)


class DashboardQuery(ChartQuery):
    """The dashboard home's range and how many top issues."""

    top: int = Field(default=10, ge=1, le=100)


class StatusChange(BaseModel):
    """The new status; ``resolve_in_next_release`` only with ``resolved``."""

    model_config = ConfigDict(extra="forbid")

    status: IssueStatus
    resolve_in_next_release: bool = False

    @model_validator(mode="after")
    def _next_release_resolves(self) -> StatusChange:
        if self.resolve_in_next_release and self.status != "resolved":
            raise ValueError("resolve_in_next_release needs status resolved")
        return self

    def action(self) -> Action:
        """The issue action this change is."""
        if self.status == "resolved":
            return Action.RESOLVE_IN_NEXT_RELEASE if self.resolve_in_next_release else Action.RESOLVE
        return Action.IGNORE if self.status == "ignored" else Action.REOPEN


class BulkStatusChange(StatusChange):
    """A status change of the listed issues, or of every issue a search matches (at most 10,000)."""

    ids: list[int] | None = Field(default=None, min_length=1, max_length=MAX_BULK_IDS)
    query: str | None = Field(default=None, max_length=2000, description="the issue list's search syntax")
    project: int = Field(default=1, ge=1, le=2**63 - 1)

    @model_validator(mode="after")
    def _ids_or_query(self) -> BulkStatusChange:
        if (self.ids is None) == (self.query is None):
            raise ValueError("give ids or query")
        if self.ids is not None and not all(1 <= i <= 2**63 - 1 for i in self.ids):
            raise ValueError("ids must be positive 64-bit integers")
        return self


# --------------------------------------------------------------------------- response models


class IssueList(BaseModel):
    """A page of issues; pass a cursor back as ``cursor`` for the next or previous page."""

    issues: list[IssueSummary]
    next_cursor: str | None
    prev_cursor: str | None


class Links(BaseModel):
    """Where to look further: the trace in Grafana Explore (Tempo), the logs of the trace
    (Loki) and the session replay; null when the event has no such id or nothing is configured."""

    trace: str | None = None
    logs: str | None = None
    replay: str | None = None


class IssueDetailOut(BaseModel):
    """An issue with its latest event (stack trace, in-app frames), counts, tags and links."""

    issue: IssueSummary
    latest_event: EventDetail | None
    counts: EventCounts
    tags: list[TagSummary]
    tag_sample_size: int
    links: Links


class EventList(BaseModel):
    """A page of an issue's events, newest first."""

    events: list[EventSummary]
    next_cursor: str | None
    prev_cursor: str | None


class EventDetailOut(BaseModel):
    """One event in full, with its links."""

    event: EventDetail
    links: Links


class IssueChanged(BaseModel):
    """The issue after the change; ``changed`` is false when it already was in that state;
    ``without_release`` when resolved in the next release with no release known."""

    issue: IssueSummary
    changed: bool
    without_release: bool


class BulkResult(BaseModel):
    """What a bulk action did: the issues selected, those changed, those without a release."""

    action: Literal["resolve", "resolve_in_next_release", "ignore", "reopen"]
    matched: list[int]
    updated: list[int]
    without_release: list[int]


# --------------------------------------------------------------------------- helpers


def issue_queries(request: web.Request) -> IssueQueries:
    """The application's :class:`IssueQueries`."""
    return request.app[_QUERIES]


# Words of IssueQueries' validation messages, and the parameter they are about.
_FIELD_WORDS = (
    ("cursor", "cursor"),
    ("period", "statsPeriod"),
    ("since", "start"),
    ("until", "end"),
    ("time range", "start"),
    ("interval", "interval"),
    ("bucket", "interval"),
    ("service", "service"),
    ("environment", "environment"),
    ("level", "level"),
    ("type", "type"),
    ("status", "status"),
    ("limit", "limit"),
    ("top", "top"),
    ("project", "project"),
    ("issues", "query"),
    ("search", "query"),
)


def _invalid(exc: QueryValidationError, default: str) -> ApiError:
    if isinstance(exc, SearchSyntaxError):
        return ApiError(400, "invalid_parameter", f"{default}: {exc}", field=default)
    text = str(exc)
    lowered = text.lower()
    where = next((name for word, name in _FIELD_WORDS if word in lowered), default)
    return ApiError(400, "invalid_parameter", f"{where}: {text}", field=where)


def base_url(request: web.Request) -> str:
    """The API's address as users reach it: ``public_url``, else the request's own."""
    configured = services(request).config.public_url
    return configured if configured is not None else f"{request.scheme}://{request.host}"


def _page_links(request: web.Request, next_cursor: str | None, prev_cursor: str | None) -> str:
    """A Sentry-style ``Link`` header: both relations, ``results`` says whether one leads anywhere."""
    base = f"{base_url(request)}{request.path}"
    kept = [(k, v) for k, v in request.query.items() if k != "cursor"]
    parts = []
    for rel, cursor in (("previous", prev_cursor), ("next", next_cursor)):
        pairs = kept + ([("cursor", cursor)] if cursor is not None else [])
        url = f"{base}?{urlencode(pairs)}" if pairs else base
        results = "true" if cursor is not None else "false"
        parts.append(f'<{url}>; rel="{rel}"; results="{results}"; cursor="{cursor or ""}"')
    return ", ".join(parts)


def _explore(grafana: str, datasource: str, query: dict[str, Any], moment: datetime) -> str:
    # Grafana's Explore takes its state as JSON in `left`; an hour either side of the event.
    at = int(moment.timestamp() * 1000)
    state = {
        "datasource": datasource,
        "queries": [{"refId": "A", "datasource": {"uid": datasource}, **query}],
        "range": {"from": str(at - 3_600_000), "to": str(at + 3_600_000)},
    }
    return f"{grafana}/explore?orgId=1&left={quote(orjson.dumps(state).decode(), safe='')}"


def links_for(request: web.Request, event: EventSummary | None) -> Links:
    """Where to see more of an event: its trace in Grafana/Tempo, its logs in Loki, its replay."""
    if event is None:
        return Links()
    cfg = services(request).config.links
    out = Links()
    if event.trace_id and cfg.grafana_url:
        out.trace = _explore(
            cfg.grafana_url, cfg.tempo_datasource, {"queryType": "traceql", "query": event.trace_id}, event.timestamp
        )
        selector = '{service_name="' + event.service_name.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        out.logs = _explore(
            cfg.grafana_url,
            cfg.loki_datasource,
            {"expr": f'{selector} |= "{event.trace_id}"', "queryType": "range"},
            event.timestamp,
        )
    if event.session_id:
        # The replay page starts playing at the moment of the event (``t``, ms since the epoch).
        replay = cfg.replay_url if cfg.replay_url is not None else f"{base_url(request)}/sessions"
        moment = int(event.timestamp.timestamp() * 1000)
        out.replay = f"{replay}/{quote(event.session_id, safe='')}?t={moment}&event={event.event_id}"
    return out


def filters_of(q: IssueListQuery) -> IssueFilters:
    """The query layer's filters for a validated issue-list query."""
    return IssueFilters(
        project_id=q.project,
        statuses=tuple(q.status),
        services=tuple(q.service),
        environments=tuple(q.environment),
        levels=tuple(q.level),
        types=tuple(q.type),
        since=q.start,
        until=q.end,
        period=q.period(),
        query=q.query,
    )


def _check_search(text: str, field: str) -> None:
    try:
        parse_search(text)
    except QueryValidationError as exc:
        raise _invalid(exc, field) from None


async def _issue_or_404(request: web.Request, issue_id: int, project: int) -> IssueSummary:
    try:
        issue = await issue_queries(request).get_issue(issue_id, project_id=project)
    except QueryValidationError as exc:
        raise _invalid(exc, "id") from None
    if issue is None:
        raise ApiError(404, "issue_not_found", f"there is no issue {issue_id}")
    return issue


# --------------------------------------------------------------------------- handlers


async def list_issues(request: web.Request) -> web.StreamResponse:
    """List issues: filters, search, sort and cursor pagination."""
    q = query(request, IssueListQuery)
    _check_search(q.query, "query")
    try:
        page = await issue_queries(request).list_issues(filters_of(q), sort=q.sort, cursor=q.cursor, limit=q.limit)
    except QueryValidationError as exc:
        raise _invalid(exc, "query") from None
    out = IssueList(issues=page.items, next_cursor=page.next_cursor, prev_cursor=page.prev_cursor)
    return json_response(out, headers={"Link": _page_links(request, page.next_cursor, page.prev_cursor)})


async def get_issue(request: web.Request) -> web.StreamResponse:
    """An issue's detail."""
    target = params(request, IssueParams)
    q = query(request, ProjectQuery)
    try:
        detail = await issue_queries(request).get_issue_detail(target.id, project_id=q.project)
    except QueryValidationError as exc:
        raise _invalid(exc, "id") from None
    if detail is None:
        raise ApiError(404, "issue_not_found", f"there is no issue {target.id}")
    latest = detail.latest_event.event if detail.latest_event is not None else None
    out = IssueDetailOut(
        issue=detail.issue,
        latest_event=detail.latest_event,
        counts=detail.counts,
        tags=detail.tags,
        tag_sample_size=detail.tag_sample_size,
        links=links_for(request, latest),
    )
    return json_response(out)


async def list_issue_events(request: web.Request) -> web.StreamResponse:
    """An issue's events, newest first, a page at a time."""
    target = params(request, IssueParams)
    q = query(request, EventListQuery)
    await _issue_or_404(request, target.id, q.project)
    try:
        page = await issue_queries(request).list_events(target.id, project_id=q.project, cursor=q.cursor, limit=q.limit)
    except QueryValidationError as exc:
        raise _invalid(exc, "cursor") from None
    out = EventList(events=page.items, next_cursor=page.next_cursor, prev_cursor=page.prev_cursor)
    return json_response(out, headers={"Link": _page_links(request, page.next_cursor, page.prev_cursor)})


async def get_issue_event(request: web.Request) -> web.StreamResponse:
    """One event of an issue, in full."""
    target = params(request, EventParams)
    q = query(request, ProjectQuery)
    try:
        event = await issue_queries(request).get_event(target.id, target.event_id, project_id=q.project)
    except QueryValidationError as exc:
        raise _invalid(exc, "event_id") from None
    if event is None:
        raise ApiError(404, "event_not_found", f"issue {target.id} has no event {target.event_id}")
    return json_response(EventDetailOut(event=event, links=links_for(request, event.event)))


async def update_issue(request: web.Request) -> web.StreamResponse:
    """Resolve, resolve in the next release, ignore or reopen an issue."""
    target = params(request, IssueParams)
    q = query(request, ProjectQuery)
    change = body(request, StatusChange)
    queries = issue_queries(request)
    try:
        result = await queries.apply_action(change.action(), issue_ids=[target.id], project_id=q.project)
    except QueryValidationError as exc:
        raise _invalid(exc, "id") from None
    if not result.matched:
        raise ApiError(404, "issue_not_found", f"there is no issue {target.id}")
    issue = await _issue_or_404(request, target.id, q.project)
    return json_response(
        IssueChanged(
            issue=issue, changed=target.id in result.updated, without_release=target.id in result.without_release
        )
    )


async def update_issues(request: web.Request) -> web.StreamResponse:
    """Change the status of the listed issues, or of every issue a search matches."""
    change = body(request, BulkStatusChange)
    queries = issue_queries(request)
    result: ActionResult
    try:
        if change.ids is not None:
            result = await queries.apply_action(change.action(), issue_ids=change.ids, project_id=change.project)
        else:
            assert change.query is not None
            _check_search(change.query, "query")
            filters = IssueFilters(project_id=change.project, query=change.query)
            result = await queries.apply_action(change.action(), filters=filters)
    except QueryValidationError as exc:
        raise _invalid(exc, "ids" if change.ids is not None else "query") from None
    return json_response(
        BulkResult(
            action=result.action.value,  # type: ignore[arg-type]
            matched=result.matched,
            updated=result.updated,
            without_release=result.without_release,
        )
    )


async def issue_stats(request: web.Request) -> web.StreamResponse:
    """An issue's events per interval, by service and environment."""
    target = params(request, IssueParams)
    q = query(request, ChartQuery)
    await _issue_or_404(request, target.id, q.project)
    try:
        chart = await issue_queries(request).issue_chart(
            target.id, project_id=q.project, since=q.start, until=q.end, period=q.period(), interval=q.interval
        )
    except QueryValidationError as exc:
        raise _invalid(exc, "start") from None
    return json_response(ChartOut(chart=chart))


async def error_stats(request: web.Request) -> web.StreamResponse:
    """The project's events per interval, by service and environment."""
    q = query(request, ProjectChartQuery)
    try:
        chart = await issue_queries(request).project_chart(
            project_id=q.project,
            since=q.start,
            until=q.end,
            period=q.period(),
            interval=q.interval,
            services=q.service,
            environments=q.environment,
        )
    except QueryValidationError as exc:
        raise _invalid(exc, "start") from None
    return json_response(ChartOut(chart=chart))


async def dashboard(request: web.Request) -> web.StreamResponse:
    """The dashboard home: error rate, new issues, top issues."""
    q = query(request, DashboardQuery)
    try:
        home = await issue_queries(request).dashboard(
            project_id=q.project, since=q.start, until=q.end, period=q.period(), interval=q.interval, top=q.top
        )
    except QueryValidationError as exc:
        raise _invalid(exc, "start") from None
    return json_response(DashboardOut(dashboard=home))


class ChartOut(BaseModel):
    """Events per bucket: ``buckets`` (start times), ``totals`` and one series per service and
    environment, each with one count per bucket."""

    chart: Chart


class DashboardOut(BaseModel):
    """The dashboard home over the range."""

    dashboard: Dashboard


# --------------------------------------------------------------------------- registration


def _cursor_secret(svc: Services) -> bytes:
    # Derived from the signing secret, so replicas sharing it accept each other's cursors.
    return hmac.new(svc.tokens._key, b"appguard issue cursors", hashlib.sha256).digest()


def register(app: web.Application) -> None:
    """Declare the errors endpoints."""
    from api.services import SERVICES

    svc = app[SERVICES]
    app[_QUERIES] = IssueQueries(
        svc.pool, cache=QueryCache(svc.redis, prefix=svc.key_prefix), cursor_secret=_cursor_secret(svc)
    )
    routes = app[ROUTES]
    tags = ["issues"]
    not_found = {404: "no such issue"}
    routes.add(
        "GET", "/api/issues", list_issues, role=Role.VIEWER, summary="List issues",
        description="Filters combine; repeat a filter for several values. Pages are linked by cursors "
        'in the body and in a Sentry-style Link header (rel="previous" and rel="next", results="true" '
        "when the page exists).",
        query=IssueListQuery, responses={200: IssueList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "PUT", "/api/issues", update_issues, role=Role.MEMBER, summary="Change the status of several issues",
        body=BulkStatusChange, responses={200: BulkResult}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/issues/{id}", get_issue, role=Role.VIEWER, summary="An issue's detail",
        params=IssueParams, query=ProjectQuery, responses={200: IssueDetailOut}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "PUT", "/api/issues/{id}", update_issue, role=Role.MEMBER, summary="Change an issue's status",
        params=IssueParams, query=ProjectQuery, body=StatusChange, responses={200: IssueChanged},
        errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/issues/{id}/events", list_issue_events, role=Role.VIEWER, summary="An issue's events",
        params=IssueParams, query=EventListQuery, responses={200: EventList}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/issues/{id}/events/{event_id}", get_issue_event, role=Role.VIEWER, summary="One event of an issue",
        params=EventParams, query=ProjectQuery, responses={200: EventDetailOut},
        errors={404: "no such event in this issue"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/issues/{id}/stats", issue_stats, role=Role.VIEWER, summary="An issue's events per interval",
        params=IssueParams, query=ChartQuery, responses={200: ChartOut}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/stats/errors", error_stats, role=Role.VIEWER, summary="The project's events per interval",
        query=ProjectChartQuery, responses={200: ChartOut}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/dashboard", dashboard, role=Role.VIEWER, summary="The dashboard home",
        query=DashboardQuery, responses={200: DashboardOut}, tags=tags,
    )  # fmt: skip
