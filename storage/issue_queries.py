"""The read side of error tracking, and the issue actions: what the API and dashboard show.

:class:`IssueQueries` serves

- the issue list (:meth:`~IssueQueries.list_issues`): filters, the search syntax of
  :mod:`storage.search`, four sort orders and keyset pagination with signed cursors;
- an issue's detail (:meth:`~IssueQueries.get_issue_detail`): the issue, its latest event with
  the parsed stack trace (in-app frames marked), tag value counts and event counts;
- an issue's events (:meth:`~IssueQueries.list_events`, :meth:`~IssueQueries.get_event`);
- the actions resolve, resolve in the next release, ignore and reopen, on a list of issues or
  on every issue a search matches (:meth:`~IssueQueries.apply_action`);
- charts of events per interval for an issue or the project, split by service and
  environment, and the dashboard home (:meth:`~IssueQueries.dashboard`).

Every statement is composed from constant SQL text with :mod:`psycopg.sql`; every value a
user typed travels as a query parameter. Invalid input raises
:class:`storage.search.QueryValidationError` (a ``ValueError``), which the API answers with
400. With a :class:`storage.cache.QueryCache` the aggregate reads are cached in Redis and the
actions invalidate what they change. See ``docs/search.md``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from exporters.errors.stacktrace import (
    ExceptionInfo,
    Frame,
    ParsedStacktrace,
    exceptions_from_dicts,
    parse_stacktrace,
)
from storage.cache import QueryCache
from storage.errors_store import Issue
from storage.search import (
    Field,
    Match,
    NumberFilter,
    QueryValidationError,
    SearchQuery,
    Status,
    StatusFilter,
    TextTerm,
    TimeBound,
    TimeFilter,
    ValueFilter,
    check_text,
    like_escape,
    parse_search,
)

Database = AsyncConnectionPool[Any] | psycopg.AsyncConnection[Any]
T = TypeVar("T")

MAX_PAGE = 100
MAX_FILTER_VALUES = 100
MAX_FILTER_CHARS = 500
MAX_BUCKETS = 2000
MAX_RANGE = timedelta(days=400)
#: Tag counts are taken over this many of an issue's latest events.
DEFAULT_TAG_SAMPLE = 1000
MAX_BIGINT = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Attributes the event also has as columns (or that are huge): not repeated as tags.
_NOT_TAGS = (
    "service.name",
    "service.version",
    "deployment.environment",
    "deployment.environment.name",
    "user.id",
    "enduser.id",
    "user.email",
    "user_agent.original",
    "session.id",
)
# Tags made from columns, shown before the attributes'.
_BUILTIN_TAGS = ("service", "environment", "release", "level", "user", "browser", "os")


# --------------------------------------------------------------------------- public types


class Sort(enum.StrEnum):
    """Orders of the issue list, always largest (most recent) first."""

    LAST_SEEN = "last_seen"
    FIRST_SEEN = "first_seen"
    EVENTS = "events"
    USERS = "users"


_SORT_COLUMNS: dict[Sort, LiteralString] = {
    Sort.LAST_SEEN: "i.last_seen",
    Sort.FIRST_SEEN: "i.first_seen",
    Sort.EVENTS: "i.event_count",
    Sort.USERS: "i.user_count",
}
_TIME_SORTS = (Sort.LAST_SEEN, Sort.FIRST_SEEN)


class Interval(enum.StrEnum):
    """Chart bucket widths (UTC)."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


_INTERVAL_STEP = {
    Interval.MINUTE: timedelta(minutes=1),
    Interval.HOUR: timedelta(hours=1),
    Interval.DAY: timedelta(days=1),
}


class Action(enum.StrEnum):
    """What an issue action does."""

    RESOLVE = "resolve"
    RESOLVE_IN_NEXT_RELEASE = "resolve_in_next_release"
    IGNORE = "ignore"
    REOPEN = "reopen"


@dataclass(frozen=True)
class IssueFilters:
    """The issue list's filters; all apply together, and with the search ``query``.

    Empty tuples filter nothing. The time range keeps issues whose ``[first_seen, last_seen]``
    overlaps ``[since, until)``; ``period`` is a range ending now (``since`` wins if both are
    given). Event-level search terms (``release:``, ``tag.*:``) look at events in the range.
    """

    project_id: int = 1
    statuses: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    period: timedelta | None = None
    query: str = ""


@dataclass(frozen=True)
class IssueSummary(Issue):
    """An issue as lists and the detail show it: the stored row, plus the release it was
    resolved after.

    ``resolved_in_release`` is the release from which events reopen a resolved issue; after
    "resolve in next release" it is a synthetic threshold just above
    ``resolved_after_release``, the latest release known when the action was taken.
    """

    resolved_after_release: str | None


@dataclass(frozen=True)
class IssuePage:
    """One page of the issue list; pass a cursor back to get the next or previous page."""

    items: list[IssueSummary]
    next_cursor: str | None
    prev_cursor: str | None


@dataclass(frozen=True)
class FrameView:
    """A stack frame, oldest call first in its exception; ``in_app`` marks the app's own code."""

    function: str | None
    module: str | None
    filename: str | None
    abs_path: str | None
    lineno: int | None
    colno: int | None
    context_line: str | None
    pre_context: list[str] | None
    post_context: list[str] | None
    in_app: bool
    #: Why a minified JavaScript frame was not mapped to its source (docs/sourcemaps.md).
    symbolication_error: str | None = None


@dataclass(frozen=True)
class ExceptionView:
    """One exception of a chain (the reported one last), with its frames."""

    type: str | None
    value: str | None
    relation: str | None
    frames_omitted: int
    frames: list[FrameView]


@dataclass(frozen=True)
class EventSummary:
    """An event as the events list shows it (``message`` cut to 1000 characters)."""

    id: int
    event_id: uuid.UUID
    timestamp: datetime
    issue_id: int
    level: str
    type: str
    message: str
    culprit: str
    service_name: str
    service_version: str | None
    environment: str
    user_id: str | None
    user_email: str | None
    user_agent: str | None
    trace_id: str | None
    span_id: str | None
    session_id: str | None


@dataclass(frozen=True)
class EventDetail:
    """One event in full: the summary, the raw stack trace, its parsed exceptions and attributes."""

    event: EventSummary
    message: str
    stacktrace: str | None
    language: str | None
    exceptions: list[ExceptionView]
    attributes: dict[str, Any]


@dataclass(frozen=True)
class EventPage:
    """One page of an issue's events, newest first."""

    items: list[EventSummary]
    next_cursor: str | None
    prev_cursor: str | None


@dataclass(frozen=True)
class TagValue:
    """A tag value and how many of the sampled events had it."""

    value: str
    count: int


@dataclass(frozen=True)
class TagSummary:
    """A tag's most frequent values: ``total`` sampled events had the tag, with ``distinct`` values."""

    key: str
    total: int
    distinct: int
    top: list[TagValue]


@dataclass(frozen=True)
class EventCounts:
    """An issue's events: all time (from the issue), in the last 24 hours and 7 days, and users."""

    total: int
    last_24h: int
    last_7d: int
    users: int


@dataclass(frozen=True)
class IssueDetail:
    """Everything the issue page shows above the events list.

    ``tags`` count the latest ``tag_sample_size`` events (all of them when fewer).
    """

    issue: IssueSummary
    latest_event: EventDetail | None
    counts: EventCounts
    tags: list[TagSummary]
    tag_sample_size: int


@dataclass(frozen=True)
class ChartSeries:
    """Events per bucket of one service and environment."""

    service_name: str
    environment: str
    counts: list[int]
    total: int


@dataclass(frozen=True)
class Chart:
    """Events per ``interval`` bucket from ``start`` (aligned to the interval) to ``end``.

    ``buckets`` are the buckets' start times; ``totals`` and every series' ``counts`` have one
    number per bucket. Series are largest first.
    """

    start: datetime
    end: datetime
    interval: Interval
    buckets: list[datetime]
    totals: list[int]
    series: list[ChartSeries]


@dataclass(frozen=True)
class TopIssue:
    """An issue and its events within the dashboard's range."""

    issue: IssueSummary
    events: int


@dataclass(frozen=True)
class Dashboard:
    """The dashboard home over a range: the error rate, new issues and top issues."""

    chart: Chart
    total_events: int
    events_per_minute: float
    new_issues: int
    newest_issues: list[IssueSummary]
    top_issues: list[TopIssue]
    unresolved_issues: int


@dataclass(frozen=True)
class Facets:
    """The values the issue list's filters offer: those the project's issues have."""

    services: list[str]
    environments: list[str]
    levels: list[str]
    types: list[str]


@dataclass(frozen=True)
class ActionResult:
    """What an action did: the issues it selected, those it changed (the others were already
    in that state) and, for resolve in next release, those resolved without a known release."""

    action: Action
    matched: list[int]
    updated: list[int]
    without_release: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- cursors


class CursorCodec:
    """Opaque page cursors: base64url JSON with an HMAC-SHA256 tag.

    Replicas behind one load balancer must share ``secret``; without one a random secret is
    drawn, and cursors are then valid in this process only.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret if secret else secrets.token_bytes(32)

    def encode(self, payload: list[Any]) -> str:
        """A cursor carrying ``payload`` (a JSON-encodable list)."""
        body = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=")
        tag = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:16]).rstrip(b"=")
        return (body + b"." + tag).decode()

    def decode(self, cursor: str) -> list[Any]:
        """The payload of a cursor this codec made; :class:`QueryValidationError` otherwise."""
        if not isinstance(cursor, str) or len(cursor) > 1024 or cursor.count(".") != 1:
            raise QueryValidationError("invalid cursor")
        body, _, tag = cursor.encode("ascii", "replace").partition(b".")
        expected = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:16]).rstrip(b"=")
        if not hmac.compare_digest(expected, tag):
            raise QueryValidationError("invalid cursor")
        try:
            payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
            raise QueryValidationError("invalid cursor") from exc
        if not isinstance(payload, list):
            raise QueryValidationError("invalid cursor")
        return payload


def _to_micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


# --------------------------------------------------------------------------- validation


def _check_id(value: Any, what: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BIGINT:
        raise QueryValidationError(f"{what} must be a positive 64-bit integer")
    return value


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise QueryValidationError(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _check_values(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        values = (values,)
    if len(values) > MAX_FILTER_VALUES:
        raise QueryValidationError(f"at most {MAX_FILTER_VALUES} {what} values")
    for value in values:
        if not isinstance(value, str):
            raise QueryValidationError(f"{what} values must be text")
        check_text(value, what=f"a {what} value", max_chars=MAX_FILTER_CHARS)
    return list(values)


def _utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise QueryValidationError(f"{what} must be a date and time")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _resolve_range(
    since: datetime | None, until: datetime | None, period: timedelta | None, default: timedelta | None
) -> tuple[datetime | None, datetime | None]:
    """Absolute bounds of a time range given as bounds, a period ending now, or a default period.

    With a ``default`` (charts) both bounds are always set, the end defaulting to now; without
    one (the issue list) a missing bound stays open.
    """
    end = _utc(until, "until") if until is not None else None
    start = _utc(since, "since") if since is not None else None
    if end is None and default is not None:
        end = datetime.now(UTC)
    if start is None:
        span = period if period is not None else default
        if span is not None:
            if not isinstance(span, timedelta) or not timedelta(0) < span <= MAX_RANGE:
                raise QueryValidationError(f"the period must be positive and at most {MAX_RANGE.days} days")
            start = (end or datetime.now(UTC)) - span
    if start is not None and end is not None and start >= end:
        raise QueryValidationError("the time range is empty: since must be before until")
    return start, end


# --------------------------------------------------------------------------- SQL composition


class _Where:
    """AND-ed conditions and their parameters, in order.

    Fragments are LiteralStrings built only from constants of this module; values are always
    ``%s`` parameters.
    """

    def __init__(self) -> None:
        self.parts: list[sql.Composable] = []
        self.params: list[Any] = []

    def add(self, fragment: LiteralString, *params: Any) -> None:
        self.parts.append(sql.SQL(fragment))
        self.params.extend(params)

    def add_composed(self, fragment: sql.Composable, params: Sequence[Any]) -> None:
        self.parts.append(fragment)
        self.params.extend(params)

    def clause(self) -> sql.Composable:
        return sql.SQL(" AND ").join(self.parts) if self.parts else sql.SQL("TRUE")


def _matches(
    column: LiteralString, column_params: Sequence[Any], values: Sequence[Match], prefix: str = ""
) -> tuple[sql.Composable, list[Any]]:
    """``column`` equal to any exact value or LIKE any pattern; ``prefix`` goes before each value."""
    branches: list[sql.Composable] = []
    params: list[Any] = []
    exact = [prefix + m.text for m in values if not m.wildcard]
    if exact:
        branches.append(sql.SQL(column + " = ANY(%s)"))
        params += [*column_params, exact]
    for m in values:
        if m.wildcard:
            branches.append(sql.SQL(column + " LIKE %s"))
            params += [*column_params, like_escape(prefix) + m.text]
    return sql.SQL("(") + sql.SQL(" OR ").join(branches) + sql.SQL(")"), params


def _negate(condition: sql.Composable, negated: bool) -> sql.Composable:
    # IS NOT TRUE rather than NOT: a NULL column (no first release, no such attribute) is
    # "not matching", so the negation keeps it.
    return sql.SQL("(") + condition + sql.SQL(") IS NOT TRUE") if negated else condition


_ISSUE_FIELD_COLUMNS: dict[Field, LiteralString] = {
    Field.LEVEL: "i.level",
    Field.SERVICE: "i.service_name",
    Field.ENVIRONMENT: "i.environment",
    Field.TYPE: "i.type",
    Field.CULPRIT: "i.culprit",
    Field.FIRST_RELEASE: "i.first_release",
}
_NUMBER_COLUMNS: dict[Field, LiteralString] = {Field.EVENTS: "i.event_count", Field.USERS: "i.user_count"}
_TIME_COLUMNS: dict[Field, LiteralString] = {Field.FIRST_SEEN: "i.first_seen", Field.LAST_SEEN: "i.last_seen"}
_COMPARATORS: dict[str, LiteralString] = {"=": " = ", "!=": " <> ", ">": " > ", ">=": " >= ", "<": " < ", "<=": " <= "}
_USER_PREFIXES = {Field.USER: ("id:", "email:"), Field.USER_ID: ("id:",), Field.USER_EMAIL: ("email:",)}
_STATUS_VALUES = {Status.UNRESOLVED, Status.RESOLVED, Status.IGNORED}


def _event_range(start: datetime | None, end: datetime | None) -> tuple[LiteralString, list[Any]]:
    fragment: LiteralString = ""
    params: list[Any] = []
    if start is not None:
        fragment += ' AND e."timestamp" >= %s'
        params.append(start)
    if end is not None:
        fragment += ' AND e."timestamp" < %s'
        params.append(end)
    return fragment, params


def _search_conditions(where: _Where, query: SearchQuery, start: datetime | None, end: datetime | None) -> None:
    """Add the conditions of a parsed search on ``appguard.issues i``."""
    for term in query.terms:
        if isinstance(term, StatusFilter):
            statuses = [s.value for s in term.statuses if s in _STATUS_VALUES]
            substatuses = [s.value for s in term.statuses if s not in _STATUS_VALUES]
            branches: list[sql.Composable] = []
            params: list[Any] = []
            if statuses:
                branches.append(sql.SQL("i.status = ANY(%s)"))
                params.append(statuses)
            if substatuses:
                branches.append(sql.SQL("i.substatus = ANY(%s)"))
                params.append(substatuses)
            condition: sql.Composable = sql.SQL("(") + sql.SQL(" OR ").join(branches) + sql.SQL(")")
            where.add_composed(_negate(condition, term.negated), params)
        elif isinstance(term, ValueFilter):
            if term.field in _ISSUE_FIELD_COLUMNS:
                condition, params = _matches(_ISSUE_FIELD_COLUMNS[term.field], (), term.values)
            elif term.field in _USER_PREFIXES:
                ors: list[sql.Composable] = []
                params = []
                for prefix in _USER_PREFIXES[term.field]:
                    part, part_params = _matches("u.user_key", (), term.values, prefix)
                    ors.append(part)
                    params += part_params
                condition = (
                    sql.SQL("EXISTS (SELECT 1 FROM appguard.issue_users u WHERE u.issue_id = i.id AND (")
                    + sql.SQL(" OR ").join(ors)
                    + sql.SQL("))")
                )
            else:
                if term.field is Field.RELEASE:
                    match, match_params = _matches("e.service_version", (), term.values)
                else:
                    match, match_params = _matches("(e.attributes ->> %s)", (term.tag,), term.values)
                range_sql, range_params = _event_range(start, end)
                condition = (
                    sql.SQL(
                        "EXISTS (SELECT 1 FROM appguard.error_events e WHERE e.issue_id = i.id AND e.project_id = i.project_id"
                        + range_sql
                        + " AND "
                    )
                    + match
                    + sql.SQL(")")
                )
                params = range_params + match_params
            where.add_composed(_negate(condition, term.negated), params)
        elif isinstance(term, NumberFilter):
            where.add_composed(sql.SQL(_NUMBER_COLUMNS[term.field] + _COMPARATORS[term.op.value] + "%s"), [term.value])
        elif isinstance(term, TimeFilter):
            column = _TIME_COLUMNS[term.field]
            parts: list[sql.Composable] = []
            params = []
            for bound, inclusive, lower in (
                (term.lower, term.lower_inclusive, True),
                (term.upper, term.upper_inclusive, False),
            ):
                if bound is None:
                    continue
                comparator: LiteralString = (
                    (" >= " if inclusive else " > ") if lower else (" <= " if inclusive else " < ")
                )
                parts.append(sql.SQL(column + comparator + ("%s" if bound.at is not None else "now() - %s")))
                params.append(_bound_value(bound))
            condition = sql.SQL("(") + sql.SQL(" AND ").join(parts) + sql.SQL(")")
            where.add_composed(_negate(condition, term.negated), params)
        elif isinstance(term, TextTerm):
            # One ILIKE over the three fields costs a third less than three; the newlines keep a
            # match from spanning two fields (search words hold no newline).
            condition = sql.SQL("(i.title || E'\\n' || i.culprit || E'\\n' || i.type) ILIKE %s")
            where.add_composed(_negate(condition, term.negated), ["%" + like_escape(term.text) + "%"])


def _bound_value(bound: TimeBound) -> datetime | timedelta:
    value = bound.at if bound.at is not None else bound.ago
    assert value is not None
    return value


def _issue_where(filters: IssueFilters) -> tuple[_Where, dict[str, Any]]:
    """The conditions of the list's filters, and a canonical form of them (for cache keys and
    cursor checks)."""
    project_id = _check_id(filters.project_id, "project_id")
    statuses = _check_values(filters.statuses, "status")
    for status in statuses:
        if status not in Status.__members__.values():
            raise QueryValidationError(f"unknown status {status!r}; use one of {', '.join(Status)}")
    services = _check_values(filters.services, "service")
    environments = _check_values(filters.environments, "environment")
    levels = _check_values(filters.levels, "level")
    types = _check_values(filters.types, "type")
    start, end = _resolve_range(filters.since, filters.until, filters.period, None)
    query = parse_search(filters.query)

    where = _Where()
    where.add("i.project_id = %s", project_id)
    if statuses:
        where.add("(i.status = ANY(%s) OR i.substatus = ANY(%s))", statuses, statuses)
    for column, values in (
        ("i.service_name", services),
        ("i.environment", environments),
        ("i.level", levels),
        ("i.type", types),
    ):
        if values:
            where.add_composed(sql.SQL(column + " = ANY(%s)"), [values])
    if start is not None:
        where.add("i.last_seen >= %s", start)
    if end is not None:
        where.add("i.first_seen < %s", end)
    _search_conditions(where, query, start, end)
    canonical = {
        "project_id": project_id,
        "statuses": sorted(statuses),
        "services": sorted(services),
        "environments": sorted(environments),
        "levels": sorted(levels),
        "types": sorted(types),
        # A period is kept as such: the cached first page of "last 24 hours" is one entry.
        "since": filters.since.isoformat() if filters.since else None,
        "until": filters.until.isoformat() if filters.until else None,
        "period": filters.period.total_seconds() if filters.period else None,
        "query": filters.query.strip(),
    }
    return where, canonical


_ISSUE_SELECT: LiteralString = """
    i.id, i.project_id, i.fingerprint, i.title, i.type, i.culprit, i.level, i.service_name,
    i.environment, i.status, i.substatus, i.status_changed_at, i.resolved_at, i.resolved_in_release,
    CASE WHEN i.status = 'resolved' AND i.resolved_in_release IS NOT NULL
         THEN i.metadata ->> 'next_release_after' END AS resolved_after_release,
    i.first_seen, i.last_seen, i.first_release, i.last_release, i.event_count, i.user_count, i.metadata
"""

_EVENT_SELECT: LiteralString = """
    e.id, e.event_id, e."timestamp", e.issue_id, e.level, e.type, left(e.message, 1000) AS message,
    e.culprit, e.service_name, e.service_version, e.environment, e.user_id, e.user_email,
    e.user_agent, e.trace_id, e.span_id, e.session_id
"""

_TAGS_SQL: LiteralString = """
WITH ev AS MATERIALIZED (
    SELECT e.service_name, e.environment, e.service_version, e.level, e.user_agent,
           coalesce(e.user_id, e.user_email) AS user_key, e.attributes
    FROM appguard.error_events e
    WHERE e.issue_id = %(issue)s
    ORDER BY e."timestamp" DESC
    LIMIT %(sample)s
), pairs AS (
    SELECT 'service' AS key, ev.service_name AS value FROM ev WHERE ev.service_name <> ''
    UNION ALL SELECT 'environment', ev.environment FROM ev WHERE ev.environment <> ''
    UNION ALL SELECT 'release', ev.service_version FROM ev WHERE ev.service_version IS NOT NULL
    UNION ALL SELECT 'level', ev.level FROM ev
    UNION ALL SELECT 'user', ev.user_key FROM ev WHERE ev.user_key IS NOT NULL
    UNION ALL SELECT '~user_agent', ev.user_agent FROM ev WHERE ev.user_agent IS NOT NULL
    UNION ALL
    SELECT 'tag:' || a.key, left(a.value #>> '{}', 200)
    FROM ev
    CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(ev.attributes) = 'object' THEN ev.attributes END) a
    WHERE jsonb_typeof(a.value) IN ('string', 'number', 'boolean')
      AND a.key NOT LIKE 'exception.%%' AND a.key <> ALL (%(skip)s)
), counted AS (
    SELECT p.key, p.value, count(*) AS n FROM pairs p GROUP BY p.key, p.value
), ranked AS (
    SELECT c.key, c.value, c.n,
           row_number() OVER (PARTITION BY c.key ORDER BY c.n DESC, c.value) AS rank,
           sum(c.n) OVER (PARTITION BY c.key) AS total,
           count(*) OVER (PARTITION BY c.key) AS distinct_values
    FROM counted c
)
SELECT r.key, r.value, r.n, r.total, r.distinct_values, (SELECT count(*) FROM ev) AS sampled
FROM ranked r
WHERE r.rank <= CASE WHEN r.key = '~user_agent' THEN 500 ELSE %(top)s END
ORDER BY r.key, r.rank
"""

_LATEST_RELEASES_SQL: LiteralString = """
WITH rel AS (
    SELECT DISTINCT i.service_name, r.release
    FROM appguard.issues i
    CROSS JOIN LATERAL (VALUES (i.first_release), (i.last_release)) AS r(release)
    WHERE i.project_id = %(project)s AND i.service_name = ANY(%(services)s) AND r.release IS NOT NULL
)
SELECT a.service_name, min(a.release)
FROM rel a
WHERE NOT EXISTS (
    SELECT 1 FROM rel b
    WHERE b.service_name = a.service_name AND appguard.version_cmp(b.release, a.release) > 0)
GROUP BY a.service_name
"""

# Same pattern as appguard.version_cmp() (0001_init.sql): what counts as a semantic version.
_VERSION_RE = re.compile(
    r"^(?P<package>(?:.*)@)?(?P<v>[vV]?)(?P<numbers>[0-9]+(?:\.[0-9]+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def next_release_threshold(release: str) -> str:
    """The smallest practical release string that compares above ``release``.

    Stored as ``resolved_in_release`` by "resolve in next release", it makes the store reopen
    the issue only for events of releases later than ``release`` (``version_cmp >= 0``):

    - a pre-release ``1.2.3-rc.1`` becomes ``1.2.3-rc.1.0``, its exact successor;
    - a release ``1.2.3`` becomes ``1.2.3.0.0.0.1``: above it, and below every later release
      except one spelt with more than six numeric parts;
    - anything else (a commit hash, a date) compares in byte order, as the store does, and
      becomes ``release`` followed by the character U+0001, its successor in that order.
    """
    match = _VERSION_RE.match(release)
    if match is None:
        return release + "\x01"
    base = (match.group("package") or "") + match.group("v") + match.group("numbers")
    if match.group("pre"):
        return f"{base}-{match.group('pre')}.0"
    return base + ".0.0.0.1"


# --------------------------------------------------------------------------- stack traces and user agents


def _frame_view(frame: Frame) -> FrameView:
    return FrameView(
        function=frame.function,
        module=frame.module,
        filename=frame.filename,
        abs_path=frame.abs_path,
        lineno=frame.lineno,
        colno=frame.colno,
        context_line=frame.context_line,
        pre_context=list(frame.pre_context) if frame.pre_context else None,
        post_context=list(frame.post_context) if frame.post_context else None,
        in_app=frame.in_app,
        symbolication_error=frame.symbolication_error,
    )


def parse_event_exceptions(
    frames: Any, stacktrace: str | None, exc_type: str, message: str, attributes: Mapping[str, Any] | None
) -> tuple[str | None, list[ExceptionView]]:
    """The language and exceptions of a stored event.

    ``frames`` is what the errors exporter stored: Sentry-style exception values (each with
    ``stacktrace.frames``, the reported exception last), a ``{"language", "values"}`` object,
    or a plain list of frames. Without any, the raw ``stacktrace`` text is parsed. Frames that
    carry no ``in_app`` get the built-in rules' decision.
    """
    hint = attributes.get("telemetry.sdk.language") if isinstance(attributes, Mapping) else None
    language = hint if isinstance(hint, str) else None
    values: Any = frames
    if isinstance(frames, Mapping):
        given = frames.get("language")
        language = given if isinstance(given, str) else language
        values = frames.get("values")
    parsed: ParsedStacktrace | None = None
    if isinstance(values, list) and values and all(isinstance(v, Mapping) for v in values):
        if any("stacktrace" in v or "type" in v or "value" in v for v in values):
            parsed = exceptions_from_dicts(values, language=language)
        else:
            frame_list = [Frame.from_dict(v, language) for v in values]
            first_line = message.split("\n", 1)[0] if message else None
            parsed = ParsedStacktrace(language, [ExceptionInfo(exc_type or None, first_line, frame_list)])
    elif stacktrace:
        parsed = parse_stacktrace(stacktrace, language=language, exc_type=exc_type or None, exc_message=message or None)
    if parsed is None:
        return language, []
    return parsed.language or language, [
        ExceptionView(e.type, e.value, e.relation, e.frames_omitted, [_frame_view(f) for f in e.frames])
        for e in parsed.exceptions
    ]


_BROWSERS = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"OPR/(\d+)")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS|Chromium)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)[\d.]*(?: Mobile/\S+)? Safari/")),
    ("Internet Explorer", re.compile(r"MSIE (\d+)|Trident/.*rv:(\d+)")),
)
_SYSTEMS = (
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Android", re.compile(r"Android")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("Linux", re.compile(r"Linux|X11")),
)
_PRODUCT_RE = re.compile(r"^([A-Za-z][\w.-]{0,49})/")


def browser_of(user_agent: str) -> str:
    """``Chrome 120``-style browser name and major version; a non-browser client's product name
    (``python-requests``); or ``Other``."""
    for name, pattern in _BROWSERS:
        found = pattern.search(user_agent)
        if found:
            major = next((g for g in found.groups() if g), None)
            return f"{name} {major}" if major else name
    product = _PRODUCT_RE.match(user_agent)
    return product.group(1) if product and product.group(1) != "Mozilla" else "Other"


def os_of(user_agent: str) -> str | None:
    """The operating system a browser user agent names, or None."""
    for name, pattern in _SYSTEMS:
        if pattern.search(user_agent):
            return name
    return None


# --------------------------------------------------------------------------- the queries


class IssueQueries:
    """The dashboard's queries and the issue actions over one database.

    ``db`` is a psycopg ``AsyncConnectionPool`` (autocommit connections recommended) or a
    single ``AsyncConnection`` in autocommit mode (an action must have committed before it
    invalidates the cache, which an enclosing transaction of the caller's would prevent). With ``cache``, the issue list's first pages, issue details,
    charts and the dashboard home are cached in Redis, and actions invalidate them.
    ``cursor_secret`` signs page cursors; replicas must share it.
    """

    def __init__(
        self,
        db: Database,
        *,
        cache: QueryCache | None = None,
        cursor_secret: bytes | None = None,
        tag_sample: int = DEFAULT_TAG_SAMPLE,
    ) -> None:
        self.db = db
        self.cache = cache
        self.cursors = CursorCodec(cursor_secret)
        self.tag_sample = tag_sample

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if isinstance(self.db, AsyncConnectionPool):
            async with self.db.connection() as conn:
                yield conn
        else:
            yield self.db

    # ---- the issue list

    async def list_issues(
        self,
        filters: IssueFilters | None = None,
        *,
        sort: Sort | str = Sort.LAST_SEEN,
        cursor: str | None = None,
        limit: int = 25,
    ) -> IssuePage:
        """A page of issues matching ``filters``, in ``sort`` order (largest first, then by id).

        ``cursor`` is a ``next_cursor`` or ``prev_cursor`` of an earlier page of the same
        filters and sort. Pages are keyset-paginated: each costs the same wherever it is.
        """
        filters = filters or IssueFilters()
        try:
            order = Sort(sort)
        except ValueError:
            raise QueryValidationError(f"unknown sort {sort!r}; use one of {', '.join(Sort)}") from None
        limit = _check_limit(limit)
        where, canonical = _issue_where(filters)
        digest = hashlib.sha256(orjson.dumps([canonical, order.value])).hexdigest()[:16]
        if cursor is None and self.cache is not None:
            return await self.cache.get_or_compute(
                "issues",
                type_=IssuePage,
                project_id=canonical["project_id"],
                params=[canonical, order.value, limit],
                compute=lambda: self._list_issues(where, order, None, limit, digest),
            )
        position = self._decode_issue_cursor(cursor, order, digest) if cursor is not None else None
        return await self._list_issues(where, order, position, limit, digest)

    def _decode_issue_cursor(self, cursor: str, order: Sort, digest: str) -> tuple[bool, Any, int]:
        payload = self.cursors.decode(cursor)
        if len(payload) != 6 or payload[0] != "i" or payload[1] != order.value or payload[2] not in ("n", "p"):
            raise QueryValidationError("invalid cursor for this sort order")
        if payload[5] != digest:
            raise QueryValidationError("the cursor belongs to a query with other filters")
        key, issue_id = payload[3], payload[4]
        if isinstance(key, bool) or not isinstance(key, int) or not isinstance(issue_id, int):
            raise QueryValidationError("invalid cursor")
        value: Any = _from_micros(key) if order in _TIME_SORTS else key
        return payload[2] == "n", value, issue_id

    def _issue_cursor(self, order: Sort, forward: bool, item: IssueSummary, digest: str) -> str:
        value = {
            Sort.LAST_SEEN: lambda: _to_micros(item.last_seen),
            Sort.FIRST_SEEN: lambda: _to_micros(item.first_seen),
            Sort.EVENTS: lambda: item.event_count,
            Sort.USERS: lambda: item.user_count,
        }[order]()
        return self.cursors.encode(["i", order.value, "n" if forward else "p", value, item.id, digest])

    async def _list_issues(
        self, where: _Where, order: Sort, position: tuple[bool, Any, int] | None, limit: int, digest: str
    ) -> IssuePage:
        column = _SORT_COLUMNS[order]
        forward = position is None or position[0]
        parts = list(where.parts)
        params = list(where.params)
        if position is not None:
            comparator: LiteralString = " < " if forward else " > "
            parts.append(sql.SQL("(" + column + ", i.id)" + comparator + "(%s, %s)"))
            params += [position[1], position[2]]
        direction: LiteralString = "DESC" if forward else "ASC"
        query = sql.SQL(
            "SELECT {cols} FROM appguard.issues i WHERE {where} ORDER BY {key} {dir}, i.id {dir} LIMIT %s"
        ).format(
            cols=sql.SQL(_ISSUE_SELECT),
            where=sql.SQL(" AND ").join(parts),
            key=sql.SQL(column),
            dir=sql.SQL(direction),
        )
        async with self._connection() as conn, conn.cursor(row_factory=class_row(IssueSummary)) as cur:
            await cur.execute(query, [*params, limit + 1])
            rows = await cur.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if not forward:
            rows.reverse()
        next_cursor = prev_cursor = None
        if rows:
            if (forward and more) or not forward:
                next_cursor = self._issue_cursor(order, True, rows[-1], digest)
            if (not forward and more) or (forward and position is not None):
                prev_cursor = self._issue_cursor(order, False, rows[0], digest)
        return IssuePage(rows, next_cursor, prev_cursor)

    async def count_issues(self, filters: IssueFilters | None = None) -> int:
        """How many issues match ``filters``."""
        where, _ = _issue_where(filters or IssueFilters())
        query = sql.SQL("SELECT count(*) FROM appguard.issues i WHERE {}").format(where.clause())
        async with self._connection() as conn:
            cur = await conn.execute(query, where.params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ---- one issue

    async def get_issue(self, issue_id: int, *, project_id: int = 1) -> IssueSummary | None:
        """One issue of the project, or None."""
        issue_id = _check_id(issue_id)
        project_id = _check_id(project_id, "project_id")
        async with self._connection() as conn, conn.cursor(row_factory=class_row(IssueSummary)) as cur:
            await cur.execute(
                sql.SQL("SELECT {} FROM appguard.issues i WHERE i.id = %s AND i.project_id = %s").format(
                    sql.SQL(_ISSUE_SELECT)
                ),
                (issue_id, project_id),
            )
            return await cur.fetchone()

    async def get_issue_detail(self, issue_id: int, *, project_id: int = 1, top_values: int = 10) -> IssueDetail | None:
        """The issue with its latest event (parsed frames), event counts and tag value counts;
        None if the project has no such issue."""
        issue_id = _check_id(issue_id)
        project_id = _check_id(project_id, "project_id")
        if isinstance(top_values, bool) or not isinstance(top_values, int) or not 1 <= top_values <= 100:
            raise QueryValidationError("top_values must be between 1 and 100")
        return await self._cached(
            "detail",
            IssueDetail | None,
            lambda: self._issue_detail(issue_id, project_id, top_values),
            [project_id, top_values, self.tag_sample],
            issue_id=issue_id,
        )

    async def _issue_detail(self, issue_id: int, project_id: int, top_values: int) -> IssueDetail | None:
        issue = await self.get_issue(issue_id, project_id=project_id)
        if issue is None:
            return None
        # Independent reads: with a pool they run at once on their own connections, so the
        # detail costs the slowest of them rather than their sum.
        latest, counts, (tags, sampled) = await asyncio.gather(
            self._with_connection(lambda conn: self._latest_event(conn, issue)),
            self._with_connection(lambda conn: self._event_counts(conn, issue_id)),
            self._with_connection(lambda conn: self._tags(conn, issue_id, top_values)),
        )
        return IssueDetail(
            issue=issue,
            latest_event=latest,
            counts=EventCounts(issue.event_count, counts[0], counts[1], issue.user_count),
            tags=tags,
            tag_sample_size=sampled,
        )

    async def _cached(
        self,
        kind: str,
        type_: Any,
        compute: Callable[[], Awaitable[T]],
        params: Any,
        *,
        project_id: int | None = None,
        issue_id: int | None = None,
    ) -> T:
        """``compute()``'s answer, through the Redis cache when there is one (see
        :meth:`QueryCache.get_or_compute`)."""
        if self.cache is None:
            return await compute()
        return await self.cache.get_or_compute(
            kind, type_=type_, compute=compute, params=params, project_id=project_id, issue_id=issue_id
        )

    async def _with_connection(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        async with self._connection() as conn:
            return await work(conn)

    @staticmethod
    async def _event_counts(conn: psycopg.AsyncConnection[Any], issue_id: int) -> tuple[int, int]:
        cur = await conn.execute(
            """
            SELECT count(*) FILTER (WHERE e."timestamp" >= now() - interval '24 hours'), count(*)
            FROM appguard.error_events e
            WHERE e.issue_id = %s AND e."timestamp" >= now() - interval '7 days'
            """,
            (issue_id,),
        )
        row = await cur.fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def _latest_event(self, conn: psycopg.AsyncConnection[Any], issue: IssueSummary) -> EventDetail | None:
        # The latest event happened at last_seen: looking there first touches one partition.
        for exact in (True, False):
            condition: LiteralString = ' AND e."timestamp" = %s' if exact else ""
            cur = await conn.execute(
                sql.SQL(
                    "SELECT {}, e.message AS full_message, e.stacktrace, e.frames, e.attributes "
                    "FROM appguard.error_events e WHERE e.issue_id = %s"
                    + condition
                    + ' ORDER BY e."timestamp" DESC, e.id DESC LIMIT 1'
                ).format(sql.SQL(_EVENT_SELECT)),
                (issue.id, issue.last_seen) if exact else (issue.id,),
            )
            row = await cur.fetchone()
            if row is not None:
                return self._event_detail(row, [d.name for d in cur.description or ()])
        return None

    @staticmethod
    def _event_detail(row: Sequence[Any], names: list[str]) -> EventDetail:
        data = dict(zip(names, row, strict=True))
        message = data.pop("full_message")
        stacktrace = data.pop("stacktrace")
        frames = data.pop("frames")
        attributes = data.pop("attributes") or {}
        summary = EventSummary(**data)
        language, exceptions = parse_event_exceptions(frames, stacktrace, summary.type, message, attributes)
        return EventDetail(
            summary, message, stacktrace, language, exceptions, attributes if isinstance(attributes, dict) else {}
        )

    async def _tags(self, conn: psycopg.AsyncConnection[Any], issue_id: int, top: int) -> tuple[list[TagSummary], int]:
        cur = await conn.execute(
            _TAGS_SQL, {"issue": issue_id, "sample": self.tag_sample, "top": top, "skip": list(_NOT_TAGS)}
        )
        rows = await cur.fetchall()
        sampled = int(rows[0][5]) if rows else 0
        grouped: dict[str, TagSummary] = {}
        agents: list[tuple[str, int]] = []
        agents_total = 0
        for key, value, n, total, distinct, _ in rows:
            if key == "~user_agent":
                agents.append((value, int(n)))
                agents_total = int(total)
                continue
            name = key[4:] if key.startswith("tag:") else key
            summary = grouped.get(name)
            if summary is None:
                summary = grouped[name] = TagSummary(name, int(total), int(distinct), [])
            summary.top.append(TagValue(value, int(n)))
        if agents:
            for name, classify in (("browser", browser_of), ("os", os_of)):
                counts: dict[str, int] = {}
                for agent, n in agents:
                    label = classify(agent)
                    if label is not None:
                        counts[label] = counts.get(label, 0) + n
                unseen = agents_total - sum(n for _, n in agents)
                if unseen > 0 and name == "browser":
                    counts["Other"] = counts.get("Other", 0) + unseen
                if counts:
                    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                    grouped[name] = TagSummary(
                        name, sum(counts.values()), len(ordered), [TagValue(v, n) for v, n in ordered[:top]]
                    )
        builtin = [grouped.pop(key) for key in _BUILTIN_TAGS if key in grouped]
        others = sorted(grouped.values(), key=lambda t: (-t.total, t.key))[:30]
        return builtin + others, sampled

    # ---- events

    async def list_events(
        self, issue_id: int, *, project_id: int = 1, cursor: str | None = None, limit: int = 50
    ) -> EventPage:
        """A page of an issue's events, newest first (keyset on timestamp and id)."""
        issue_id = _check_id(issue_id)
        project_id = _check_id(project_id, "project_id")
        limit = _check_limit(limit)
        forward, position = True, None
        if cursor is not None:
            payload = self.cursors.decode(cursor)
            if (
                len(payload) != 5
                or payload[0] != "e"
                or payload[1] != issue_id
                or payload[2] not in ("n", "p")
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in payload[3:])
            ):
                raise QueryValidationError("invalid cursor for this issue's events")
            forward, position = payload[2] == "n", (_from_micros(payload[3]), payload[4])
        where: LiteralString = "e.issue_id = %s AND e.project_id = %s"
        params: list[Any] = [issue_id, project_id]
        if position is not None:
            where += ' AND (e."timestamp", e.id) < (%s, %s)' if forward else ' AND (e."timestamp", e.id) > (%s, %s)'
            params += list(position)
        direction: LiteralString = "DESC" if forward else "ASC"
        query = sql.SQL(
            "SELECT {} FROM appguard.error_events e WHERE "
            + where
            + ' ORDER BY e."timestamp" '
            + direction
            + ", e.id "
            + direction
            + " LIMIT %s"
        ).format(sql.SQL(_EVENT_SELECT))
        async with self._connection() as conn, conn.cursor(row_factory=class_row(EventSummary)) as cur:
            await cur.execute(query, [*params, limit + 1])
            rows = await cur.fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        if not forward:
            rows.reverse()
        next_cursor = prev_cursor = None
        if rows:
            if (forward and more) or not forward:
                last = rows[-1]
                next_cursor = self.cursors.encode(["e", issue_id, "n", _to_micros(last.timestamp), last.id])
            if (not forward and more) or (forward and position is not None):
                first = rows[0]
                prev_cursor = self.cursors.encode(["e", issue_id, "p", _to_micros(first.timestamp), first.id])
        return EventPage(rows, next_cursor, prev_cursor)

    async def get_event(self, issue_id: int, event_id: uuid.UUID | str, *, project_id: int = 1) -> EventDetail | None:
        """One event of an issue, in full, by its ``event_id``; None if there is none."""
        issue_id = _check_id(issue_id)
        project_id = _check_id(project_id, "project_id")
        try:
            event_uuid = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
        except ValueError:
            raise QueryValidationError("event_id must be a UUID") from None
        async with self._connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT {}, e.message AS full_message, e.stacktrace, e.frames, e.attributes "
                    "FROM appguard.error_events e WHERE e.event_id = %s AND e.issue_id = %s AND e.project_id = %s "
                    'ORDER BY e."timestamp" DESC LIMIT 1'
                ).format(sql.SQL(_EVENT_SELECT)),
                (event_uuid, issue_id, project_id),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return self._event_detail(row, [d.name for d in cur.description or ()])

    # ---- actions

    async def resolve(self, issue_ids: Sequence[int], *, project_id: int = 1) -> ActionResult:
        """Resolve issues: any later event reopens them."""
        return await self.apply_action(Action.RESOLVE, issue_ids=issue_ids, project_id=project_id)

    async def resolve_in_next_release(self, issue_ids: Sequence[int], *, project_id: int = 1) -> ActionResult:
        """Resolve issues so that only events of releases after the latest known one reopen them."""
        return await self.apply_action(Action.RESOLVE_IN_NEXT_RELEASE, issue_ids=issue_ids, project_id=project_id)

    async def ignore(self, issue_ids: Sequence[int], *, project_id: int = 1) -> ActionResult:
        """Ignore issues: they keep counting events and stay ignored."""
        return await self.apply_action(Action.IGNORE, issue_ids=issue_ids, project_id=project_id)

    async def reopen(self, issue_ids: Sequence[int], *, project_id: int = 1) -> ActionResult:
        """Make resolved or ignored issues unresolved again (substatus ``ongoing``)."""
        return await self.apply_action(Action.REOPEN, issue_ids=issue_ids, project_id=project_id)

    async def apply_action(
        self,
        action: Action | str,
        *,
        issue_ids: Sequence[int] | None = None,
        filters: IssueFilters | None = None,
        project_id: int = 1,
        max_issues: int = 10_000,
    ) -> ActionResult:
        """Apply ``action`` to the listed issues, or to every issue ``filters`` match.

        Exactly one of ``issue_ids`` and ``filters`` is given; with ``filters`` their
        ``project_id`` is used. Ids of other projects or of no issue are left out of
        ``matched``. More than ``max_issues`` selected issues refuse the whole action. The
        rows are locked in id order, the order the store's writers use, so an action and a
        write wait for each other but never deadlock.
        """
        try:
            act = Action(action)
        except ValueError:
            raise QueryValidationError(f"unknown action {action!r}; use one of {', '.join(Action)}") from None
        if (issue_ids is None) == (filters is None):
            raise QueryValidationError("give either issue ids or filters")
        where = _Where()
        if filters is not None:
            where, canonical = _issue_where(filters)
            project_id = canonical["project_id"]
        else:
            assert issue_ids is not None
            if isinstance(issue_ids, (str, bytes)) or len(issue_ids) > max_issues:
                raise QueryValidationError(f"give at most {max_issues} issue ids")
            ids = sorted({_check_id(i) for i in issue_ids})
            project_id = _check_id(project_id, "project_id")
            where.add("i.project_id = %s", project_id)
            where.add("i.id = ANY(%s)", ids)
        select = sql.SQL(
            "SELECT i.id, i.service_name FROM appguard.issues i WHERE {} ORDER BY i.id LIMIT %s FOR NO KEY UPDATE"
        ).format(where.clause())
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(select, [*where.params, max_issues + 1])
            targets = await cur.fetchall()
            if len(targets) > max_issues:
                raise QueryValidationError(f"the action would change more than {max_issues} issues; narrow the search")
            matched = [row[0] for row in targets]
            without_release: list[int] = []
            if not matched:
                updated: list[int] = []
            elif act is Action.IGNORE or act is Action.REOPEN:
                status: LiteralString = "'ignored'" if act is Action.IGNORE else "'unresolved'"
                substatus: LiteralString = "NULL" if act is Action.IGNORE else "'ongoing'"
                cur = await conn.execute(
                    sql.SQL(
                        "UPDATE appguard.issues i SET status = " + status + ", substatus = " + substatus + ", "
                        "status_changed_at = now(), resolved_at = NULL, resolved_in_release = NULL, "
                        "metadata = i.metadata - 'next_release_after' "
                        "WHERE i.id = ANY(%s) AND i.status <> " + status + " RETURNING i.id"
                    ),
                    (matched,),
                )
                updated = sorted(row[0] for row in await cur.fetchall())
            else:
                releases: list[str | None] = [None] * len(matched)
                afters: list[str | None] = [None] * len(matched)
                if act is Action.RESOLVE_IN_NEXT_RELEASE:
                    cur = await conn.execute(
                        _LATEST_RELEASES_SQL,
                        {"project": project_id, "services": sorted({row[1] for row in targets})},
                    )
                    latest = dict(await cur.fetchall())
                    for index, (issue_id, service) in enumerate(targets):
                        found = latest.get(service)
                        if found is None:
                            without_release.append(issue_id)
                        else:
                            releases[index], afters[index] = next_release_threshold(found), found
                cur = await conn.execute(
                    """
                    UPDATE appguard.issues i
                    SET status = 'resolved', substatus = NULL, status_changed_at = now(), resolved_at = now(),
                        resolved_in_release = t.release,
                        metadata = CASE WHEN t.after IS NULL THEN i.metadata - 'next_release_after'
                                        ELSE i.metadata || jsonb_build_object('next_release_after', t.after) END
                    FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS t(id, release, after)
                    WHERE i.id = t.id
                      AND (i.status <> 'resolved' OR i.resolved_in_release IS DISTINCT FROM t.release)
                    RETURNING i.id
                    """,
                    (matched, releases, afters),
                )
                updated = sorted(row[0] for row in await cur.fetchall())
        if updated and self.cache is not None:
            await self.cache.bump_generation(project_id, updated)
        return ActionResult(act, matched, updated, without_release)

    # ---- charts and the dashboard

    async def issue_chart(
        self,
        issue_id: int,
        *,
        project_id: int = 1,
        since: datetime | None = None,
        until: datetime | None = None,
        period: timedelta | None = None,
        interval: Interval | str | None = None,
    ) -> Chart:
        """Events of one issue per interval over a range (default: the last 24 hours)."""
        issue_id = _check_id(issue_id)
        project_id = _check_id(project_id, "project_id")
        start, end, step = _chart_range(since, until, period, interval)
        where = _Where()
        where.add("e.project_id = %s", project_id)
        where.add("e.issue_id = %s", issue_id)

        async def compute() -> Chart:
            return await self._chart(where, start, end, step)

        return await self._cached(
            "issue-chart", Chart, compute, [project_id, _range_key(since, until, period), step.value], issue_id=issue_id
        )

    async def project_chart(
        self,
        *,
        project_id: int = 1,
        since: datetime | None = None,
        until: datetime | None = None,
        period: timedelta | None = None,
        interval: Interval | str | None = None,
        services: Sequence[str] = (),
        environments: Sequence[str] = (),
    ) -> Chart:
        """Events of the whole project per interval, split by service and environment, over a
        range (default: the last 24 hours), optionally of some services or environments only."""
        project_id = _check_id(project_id, "project_id")
        start, end, step = _chart_range(since, until, period, interval)
        service_list = _check_values(services, "service")
        environment_list = _check_values(environments, "environment")
        where = _Where()
        where.add("e.project_id = %s", project_id)
        if service_list:
            where.add("e.service_name = ANY(%s)", service_list)
        if environment_list:
            where.add("e.environment = ANY(%s)", environment_list)

        async def compute() -> Chart:
            return await self._chart(where, start, end, step)

        return await self._cached(
            "project-chart",
            Chart,
            compute,
            [_range_key(since, until, period), step.value, sorted(service_list), sorted(environment_list)],
            project_id=project_id,
        )

    async def _chart(self, where: _Where, start: datetime, end: datetime, step: Interval) -> Chart:
        query = sql.SQL(
            """
            SELECT b.bucket, b.service_name, b.environment, count(*)
            FROM (SELECT date_bin(%s, e."timestamp", %s) AS bucket, e.service_name, e.environment
                  FROM appguard.error_events e
                  WHERE {} AND e."timestamp" >= %s AND e."timestamp" < %s) b
            GROUP BY 1, 2, 3
            """
        ).format(where.clause())
        async with self._connection() as conn:
            cur = await conn.execute(query, [_INTERVAL_STEP[step], _EPOCH, *where.params, start, end])
            rows = await cur.fetchall()
        return _build_chart(start, end, step, rows)

    async def dashboard(
        self,
        *,
        project_id: int = 1,
        since: datetime | None = None,
        until: datetime | None = None,
        period: timedelta | None = None,
        interval: Interval | str | None = None,
        top: int = 10,
    ) -> Dashboard:
        """The dashboard home over a range (default: the last 24 hours): events per interval
        by service and environment, new issues, the ``top`` issues by events in the range."""
        project_id = _check_id(project_id, "project_id")
        if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 100:
            raise QueryValidationError("top must be between 1 and 100")
        start, end, step = _chart_range(since, until, period, interval)

        async def compute() -> Dashboard:
            return await self._dashboard(project_id, start, end, step, top)

        return await self._cached(
            "dashboard", Dashboard, compute, [_range_key(since, until, period), step.value, top], project_id=project_id
        )

    async def facets(self, *, project_id: int = 1, limit: int = 200) -> Facets:
        """Up to ``limit`` distinct services, environments, levels and exception types of the
        project's issues, sorted, for the filter menus."""
        project_id = _check_id(project_id, "project_id")

        async def compute() -> Facets:
            async with self._connection() as conn:
                cur = await conn.execute(
                    """
                    SELECT (SELECT array_agg(v ORDER BY v) FROM (SELECT DISTINCT service_name AS v
                              FROM appguard.issues WHERE project_id = %(p)s AND service_name <> ''
                              ORDER BY 1 LIMIT %(n)s) s),
                           (SELECT array_agg(v ORDER BY v) FROM (SELECT DISTINCT environment AS v
                              FROM appguard.issues WHERE project_id = %(p)s AND environment <> ''
                              ORDER BY 1 LIMIT %(n)s) e),
                           (SELECT array_agg(v ORDER BY v) FROM (SELECT DISTINCT level AS v
                              FROM appguard.issues WHERE project_id = %(p)s ORDER BY 1 LIMIT %(n)s) l),
                           (SELECT array_agg(v ORDER BY v) FROM (SELECT DISTINCT type AS v
                              FROM appguard.issues WHERE project_id = %(p)s AND type <> ''
                              ORDER BY 1 LIMIT %(n)s) t)
                    """,
                    {"p": project_id, "n": limit},
                )
                row = await cur.fetchone()
            assert row is not None
            return Facets(*(list(values or []) for values in row))

        return await self._cached("facets", Facets, compute, [limit], project_id=project_id)

    async def _dashboard(self, project_id: int, start: datetime, end: datetime, step: Interval, top: int) -> Dashboard:
        async with self._connection() as conn:
            # One pass over the range's events serves both the chart and the top issues.
            cur = await conn.execute(
                """
                SELECT b.bucket, b.service_name, b.environment, b.issue_id, count(*)
                FROM (SELECT date_bin(%s, e."timestamp", %s) AS bucket, e.service_name, e.environment, e.issue_id
                      FROM appguard.error_events e
                      WHERE e.project_id = %s AND e."timestamp" >= %s AND e."timestamp" < %s) b
                GROUP BY GROUPING SETS ((b.bucket, b.service_name, b.environment), (b.issue_id))
                """,
                (_INTERVAL_STEP[step], _EPOCH, project_id, start, end),
            )
            rows = await cur.fetchall()
            chart_rows = [(r[0], r[1], r[2], r[4]) for r in rows if r[3] is None]
            per_issue = sorted(((r[3], r[4]) for r in rows if r[3] is not None), key=lambda x: (-x[1], x[0]))[:top]
            cur = await conn.execute(
                """
                SELECT count(*) FILTER (WHERE i.first_seen >= %s AND i.first_seen < %s),
                       count(*) FILTER (WHERE i.status = 'unresolved')
                FROM appguard.issues i WHERE i.project_id = %s
                """,
                (start, end, project_id),
            )
            counts = await cur.fetchone()
            async with conn.cursor(row_factory=class_row(IssueSummary)) as icur:
                await icur.execute(
                    sql.SQL(
                        "SELECT {} FROM appguard.issues i WHERE i.project_id = %s AND i.first_seen >= %s "
                        "AND i.first_seen < %s ORDER BY i.first_seen DESC, i.id DESC LIMIT 5"
                    ).format(sql.SQL(_ISSUE_SELECT)),
                    (project_id, start, end),
                )
                newest = await icur.fetchall()
                await icur.execute(
                    sql.SQL("SELECT {} FROM appguard.issues i WHERE i.id = ANY(%s)").format(sql.SQL(_ISSUE_SELECT)),
                    ([issue_id for issue_id, _ in per_issue],),
                )
                by_id = {issue.id: issue for issue in await icur.fetchall()}
        chart = _build_chart(start, end, step, chart_rows)
        total = sum(chart.totals)
        minutes = (end - start).total_seconds() / 60
        new_issues, unresolved = counts if counts else (0, 0)
        return Dashboard(
            chart=chart,
            total_events=total,
            events_per_minute=total / minutes if minutes else 0.0,
            new_issues=new_issues,
            newest_issues=newest,
            top_issues=[TopIssue(by_id[i], n) for i, n in per_issue if i in by_id],
            unresolved_issues=unresolved,
        )


def _chart_range(
    since: datetime | None, until: datetime | None, period: timedelta | None, interval: Interval | str | None
) -> tuple[datetime, datetime, Interval]:
    start, end = _resolve_range(since, until, period, timedelta(hours=24))
    assert start is not None and end is not None
    span = end - start
    if interval is None:
        step = (
            Interval.MINUTE
            if span <= timedelta(hours=3)
            else Interval.HOUR
            if span <= timedelta(days=7)
            else Interval.DAY
        )
    else:
        try:
            step = Interval(interval)
        except ValueError:
            raise QueryValidationError(f"unknown interval {interval!r}; use one of {', '.join(Interval)}") from None
    width = _INTERVAL_STEP[step]
    aligned = _EPOCH + ((start - _EPOCH) // width) * width
    if (end - aligned) / width > MAX_BUCKETS:
        raise QueryValidationError(f"the chart would have more than {MAX_BUCKETS} buckets; use a wider interval")
    return aligned, end, step


def _range_key(since: datetime | None, until: datetime | None, period: timedelta | None) -> list[Any]:
    # A range relative to now is cached as such, so that "the last 24 hours" is one entry.
    return [
        since.isoformat() if since else None,
        until.isoformat() if until else None,
        period.total_seconds() if period else None,
    ]


def _build_chart(start: datetime, end: datetime, step: Interval, rows: Sequence[Sequence[Any]]) -> Chart:
    width = _INTERVAL_STEP[step]
    count = max(1, -(-(end - start) // width))
    buckets = [start + n * width for n in range(count)]
    index = {_to_micros(b): n for n, b in enumerate(buckets)}
    totals = [0] * count
    series: dict[tuple[str, str], list[int]] = {}
    for bucket, service, environment, n in rows:
        position = index.get(_to_micros(bucket))
        if position is None:
            continue
        counts = series.setdefault((service, environment), [0] * count)
        counts[position] += n
        totals[position] += n
    ordered = sorted(
        (ChartSeries(service, environment, counts, sum(counts)) for (service, environment), counts in series.items()),
        key=lambda s: (-s.total, s.service_name, s.environment),
    )
    return Chart(start, end, step, buckets, totals, ordered)


__all__ = [
    "Action",
    "ActionResult",
    "Chart",
    "ChartSeries",
    "CursorCodec",
    "Dashboard",
    "EventCounts",
    "EventDetail",
    "EventPage",
    "EventSummary",
    "ExceptionView",
    "FrameView",
    "Interval",
    "IssueDetail",
    "IssueFilters",
    "IssuePage",
    "IssueQueries",
    "IssueSummary",
    "QueryValidationError",
    "Sort",
    "TagSummary",
    "TagValue",
    "TopIssue",
    "browser_of",
    "next_release_threshold",
    "os_of",
    "parse_event_exceptions",
]
