"""The dashboard's error pages: the home (error rate, new and top issues), the issue list and an
issue's detail.

The pages are rendered on the server from the same queries as the REST API
(:class:`storage.issue_queries.IssueQueries`), so a page shows what ``/api/issues`` answers; the
browser only draws the charts (uPlot, from npm, served under ``/vendor/``) from the API's chart
endpoints and sends the actions (resolve, ignore...) to the API with the session's CSRF token.

A filter the page cannot use (a bad search, a bad range) does not fail the page: it shows the
problem above an empty list, as a search box should.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import ApiError
from api.issues import IssueListQuery, IssueParams, filters_of, issue_queries, links_for
from api.pages import render
from api.projects import project_store
from api.routing import ROUTES, params, principal, query
from api.services import WEB_ROOT
from storage.issue_queries import QueryValidationError
from storage.projects import DEFAULT_PROJECT
from storage.users_store import Role

_log = logging.getLogger("appguard.api")

#: Front-end packages from npm (``package.json`` at the repository's root), served under
#: ``/vendor/<name>/`` from the folder that holds their browser builds.
VENDOR_ROOT = WEB_ROOT / "node_modules"
VENDOR_PACKAGES: dict[str, str] = {"uplot": "uplot/dist", "rrweb-player": "rrweb-player/dist"}

#: The ranges the pages offer.
PERIODS: list[tuple[str, str]] = [("", "any time"), ("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days"),
                                  ("14d", "14 days"), ("30d", "30 days")]  # fmt: skip
SORTS: list[tuple[str, str]] = [("last_seen", "Last seen"), ("first_seen", "First seen"), ("events", "Events"),
                                ("users", "Users")]  # fmt: skip
#: The search a visitor of ``/issues`` sees first, as in Sentry.
DEFAULT_SEARCH = "is:unresolved"


class IssuesPageQuery(BaseModel):
    """The issue list's form, taken as typed; checked when the list is queried."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    query: str | None = Field(default=None, max_length=2000)
    project: str = ""
    status: str = ""
    service: str = ""
    environment: str = ""
    level: str = ""
    type: str = ""
    stats_period: str = Field(default="", alias="statsPeriod", max_length=10)
    sort: str = "last_seen"
    cursor: str = Field(default="", max_length=1024)

    def search(self) -> str:
        return DEFAULT_SEARCH if self.query is None else self.query

    def api_query(self) -> dict[str, Any]:
        """The form's filled-in fields as the API's query parameters."""
        fields = {
            "query": self.search(),
            "project": self.project or None,
            "status": [self.status] if self.status else [],
            "service": [self.service] if self.service else [],
            "environment": [self.environment] if self.environment else [],
            "level": [self.level] if self.level else [],
            "type": [self.type] if self.type else [],
            "statsPeriod": self.stats_period or None,
            "sort": self.sort or "last_seen",
            "cursor": self.cursor or None,
        }
        return {key: value for key, value in fields.items() if value not in (None, [], "")}

    def link(self, **changes: str | None) -> str:
        """``/issues`` with this form's values, some replaced (None removes one)."""
        values: dict[str, str] = {
            "query": self.search(),
            "project": self.project,
            "status": self.status,
            "service": self.service,
            "environment": self.environment,
            "level": self.level,
            "type": self.type,
            "statsPeriod": self.stats_period,
            "sort": self.sort,
        }
        for key, value in changes.items():
            values[key] = value or ""
        return "/issues?" + urlencode({k: v for k, v in values.items() if v or k == "query"})


class IssuePageQuery(BaseModel):
    """Which event of the issue to show, and the page of its event list."""

    model_config = ConfigDict(extra="ignore")

    project: int = Field(default=1, ge=1, le=2**63 - 1)
    event: uuid.UUID | None = None
    events_cursor: str | None = Field(default=None, max_length=1024)


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))


async def issues_page(request: web.Request) -> web.StreamResponse:
    """The issue list with its filters, search, sort and pages."""
    form = query(request, IssuesPageQuery)
    queries = issue_queries(request)
    error: str | None = None
    page = None
    listing: IssueListQuery | None = None
    try:
        listing = IssueListQuery.model_validate(form.api_query())
        page = await queries.list_issues(filters_of(listing), sort=listing.sort, cursor=listing.cursor, limit=25)
    except ValidationError as exc:
        error = _problem(exc)
    except (QueryValidationError, ApiError) as exc:
        error = str(exc)
    facets = await queries.facets(project_id=listing.project if listing is not None else DEFAULT_PROJECT)
    return render(
        request,
        "issues.html",
        title="Issues",
        form=form,
        projects=await project_store(request).list_projects(),
        chosen_project=form.project or str(DEFAULT_PROJECT),
        facets=facets,
        periods=PERIODS,
        sorts=SORTS,
        error=error,
        issues=page.items if page is not None else [],
        next_link=form.link(cursor=page.next_cursor) if page and page.next_cursor else None,
        prev_link=form.link(cursor=page.prev_cursor) if page and page.prev_cursor else None,
        can_change=principal(request).role.includes(Role.MEMBER),
    )


async def issue_page(request: web.Request) -> web.StreamResponse:
    """An issue: its stack trace, tags, chart, events, links and actions."""
    target = params(request, IssueParams)
    q = query(request, IssuePageQuery)
    queries = issue_queries(request)
    detail = await queries.get_issue_detail(target.id, project_id=q.project)
    if detail is None:
        raise ApiError(404, "issue_not_found", f"there is no issue {target.id}")
    shown = detail.latest_event
    if q.event is not None:
        shown = await queries.get_event(target.id, q.event, project_id=q.project)
        if shown is None:
            raise ApiError(404, "event_not_found", f"issue {target.id} has no event {q.event}")
    try:
        events = await queries.list_events(target.id, project_id=q.project, cursor=q.events_cursor, limit=20)
    except QueryValidationError:
        events = await queries.list_events(target.id, project_id=q.project, limit=20)
    return render(
        request,
        "issue.html",
        title=detail.issue.title,
        issue=detail.issue,
        counts=detail.counts,
        tags=detail.tags,
        tag_sample_size=detail.tag_sample_size,
        event=shown,
        links=links_for(request, shown.event if shown is not None else None),
        events=events,
        can_change=principal(request).role.includes(Role.MEMBER),
    )


async def home_page(request: web.Request) -> web.StreamResponse:
    """The dashboard home: the last 24 hours' error rate, new issues and top issues."""
    home = await issue_queries(request).dashboard(top=10)
    return render(request, "home.html", title="Overview", home=home)


# --------------------------------------------------------------------------- template helpers


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``3 minutes ago``-style text for a moment in the past."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 45:
        return "just now"
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def compact(number: int | float) -> str:
    """``1.2k``-style text for counts."""
    if number >= 1_000_000:
        return f"{number / 1_000_000:.1f}M"
    if number >= 10_000:
        return f"{number / 1000:.0f}k"
    if number >= 1000:
        return f"{number / 1000:.1f}k"
    return f"{number:g}" if isinstance(number, float) else str(number)


def register(app: web.Application) -> None:
    """Declare the error pages and the vendor files."""
    from api.services import SERVICES

    env = app[SERVICES].templates
    env.filters["ago"] = ago
    env.filters["compact"] = compact
    routes = app[ROUTES]
    for name, folder in VENDOR_PACKAGES.items():
        directory = VENDOR_ROOT / folder
        if directory.is_dir():
            routes.add_static(f"/vendor/{name}", directory)
        else:
            _log.warning("front-end package %s is not installed (%s): charts will not show; run npm ci", name, directory)
    routes.page("/", home_page, role=Role.VIEWER, summary="Dashboard home")
    routes.page("/issues", issues_page, role=Role.VIEWER, summary="Issue list", query=IssuesPageQuery)
    routes.page(
        "/issues/{id}", issue_page, role=Role.VIEWER, summary="Issue detail", params=IssueParams, query=IssuePageQuery
    )
