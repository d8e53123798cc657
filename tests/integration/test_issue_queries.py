"""IssueQueries against the real PostgreSQL: filters and search semantics, detail, events,
actions and bulk actions, charts and the dashboard, on data written through ErrorStore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from exporters.errors.stacktrace import parse_stacktrace
from storage.errors_store import ErrorEvent, ErrorStore
from storage.issue_queries import (
    Action,
    Interval,
    IssueFilters,
    IssueQueries,
    QueryValidationError,
    Sort,
    browser_of,
    next_release_threshold,
    os_of,
)
from storage.search import SearchSyntaxError

# Whole minutes, a little in the past, so that chart buckets are predictable.
NOW = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)

JS_STACK = (
    "TypeError: Cannot read properties of undefined (reading 'total')\n"
    "    at computeTotal (/srv/shop/src/cart.js:42:17)\n"
    "    at Layer.handle (/srv/shop/node_modules/express/lib/router/layer.js:95:5)\n"
    "    at checkout (/srv/shop/src/routes/checkout.js:12:3)"
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


def js_frames() -> list[dict[str, Any]]:
    """What the errors exporter stores in ``frames``: the parsed exceptions as dicts."""
    return [e.to_dict() for e in parse_stacktrace(JS_STACK, language="nodejs").exceptions]


def ev(fingerprint: str, minutes_ago: float, **fields: Any) -> ErrorEvent:
    return ErrorEvent(fingerprint=fingerprint, timestamp=NOW - timedelta(minutes=minutes_ago), **fields)


CART: dict[str, Any] = {
    "type": "TypeError",
    "message": "Cannot read properties of undefined (reading 'total')",
    "culprit": "cart.js in computeTotal",
    "service_name": "checkout",
    "environment": "production",
}


def dataset() -> dict[str, list[ErrorEvent]]:
    """Named issues and their events."""
    pool = {
        "type": "ValueError",
        "message": "connection reset by peer",
        "culprit": "db.pool in acquire",
        "service_name": "checkout",
        "environment": "staging",
    }
    login = {
        "type": "KeyError",
        "message": "'token'",
        "service_name": "login",
        "environment": "production",
        "level": "warning",
    }
    payments = {
        "type": "ConnectionError",
        "message": "connection reset",
        "service_name": "payments",
        "environment": "production",
        "level": "fatal",
    }
    discount = {
        "type": "DiscountError",
        "message": "50%_off is invalid",
        "service_name": "checkout",
        "environment": "production",
    }
    return {
        "cart": [
            ev(
                "cart",
                1,
                **CART,
                service_version="1.3.0",
                user_id="alice",
                user_agent=CHROME,
                attributes={
                    "http.route": "/cart",
                    "http.method": "POST",
                    "service.name": "checkout",
                    "telemetry.sdk.language": "nodejs",
                },
                frames=js_frames(),
                stacktrace=JS_STACK,
                trace_id="ab" * 16,
                span_id="cd" * 8,
                session_id="sess-1",
            ),
            ev(
                "cart",
                2,
                **CART,
                service_version="1.3.0",
                user_id="bob",
                user_agent=CHROME,
                attributes={"http.route": "/cart", "http.method": "POST"},
            ),
            ev(
                "cart",
                2,
                **CART,
                service_version="1.3.0",
                user_id="alice",
                user_agent=FIREFOX,
                attributes={"http.route": "/cart", "http.method": "GET"},
            ),
            ev("cart", 3, **CART, service_version="1.2.0", user_agent=CHROME, attributes={"http.route": "/cart"}),
            ev("cart", 10, **CART, service_version="1.2.0", attributes={"http.route": "/cart/items"}),
            ev("cart", 40, **CART, service_version="1.2.0"),
        ],
        "pool": [ev("pool", 2 * 1440, **pool), ev("pool", 1440, **pool)],
        "login": [ev("login", 20, **login, user_email="carol@example.com")],
        "payments": [
            ev("payments", 5, **payments, user_id="dave", service_version="2.0.0"),
            ev("payments", 6, **payments, user_id="erin", service_version="2.0.0"),
            ev("payments", 7, **payments, user_id="frank", service_version="2.1.0"),
        ],
        "discount": [ev("discount", 5 * 1440, **discount)],
        "resolved": [
            ev("resolved", 30, type="RuntimeError", message="gone", service_name="login", environment="production")
        ],
        "ignored": [
            ev("ignored", 30, type="UserWarning", message="noisy", service_name="login", environment="production")
        ],
        "regressed": [
            ev(
                "regressed",
                50,
                type="IndexError",
                message="out of range",
                service_name="payments",
                environment="production",
            )
        ],
    }


ALL = {"cart", "pool", "login", "payments", "discount", "resolved", "ignored", "regressed"}


@pytest.fixture
async def store(appguard_dsn: str) -> AsyncIterator[ErrorStore]:
    opened = await ErrorStore.open(appguard_dsn)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pool(appguard_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(appguard_dsn, min_size=1, max_size=4, kwargs={"autocommit": True}) as opened:
        yield opened


@pytest.fixture
def queries(pool: AsyncConnectionPool[Any]) -> IssueQueries:
    return IssueQueries(pool)


@pytest.fixture
async def seeded(store: ErrorStore, queries: IssueQueries) -> dict[str, int]:
    """The dataset written through the store; ``resolved``, ``ignored`` and ``regressed`` set up."""
    ids: dict[str, int] = {}
    for name, events in dataset().items():
        report = await store.write_events(events)
        ids[name] = next(iter(report.new_issues))
    await queries.resolve([ids["resolved"], ids["regressed"]])
    await queries.ignore([ids["ignored"]])
    # A new event after the resolution reopens it as regressed.
    await store.write_events(
        [
            ErrorEvent(
                fingerprint="regressed",
                timestamp=datetime.now(UTC),
                type="IndexError",
                message="out of range",
                service_name="payments",
            )
        ]
    )
    return ids


async def names(queries: IssueQueries, ids: dict[str, int], filters: IssueFilters) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    page = await queries.list_issues(filters, limit=100)
    assert page.next_cursor is None
    return {by_id[item.id] for item in page.items}


async def snapshot(dsn: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT * FROM appguard.issues ORDER BY id")
        issues = await cur.fetchall()
        cur = await conn.execute("SELECT count(*) FROM appguard.error_events")
        count = await cur.fetchone()
        return [*issues, ("events", count)]


# --------------------------------------------------------------------------- search semantics

UNRESOLVED = {"cart", "pool", "login", "payments", "discount", "regressed"}
CHECKOUT = {"cart", "pool", "discount"}

SEARCHES: list[tuple[str, set[str]]] = [
    ("", ALL),
    ("is:unresolved", UNRESOLVED),
    ("is:resolved", {"resolved"}),
    ("is:ignored", {"ignored"}),
    ("is:muted", {"ignored"}),
    ("is:regressed", {"regressed"}),
    ("is:new", UNRESOLVED - {"regressed"}),
    ("!is:unresolved", {"resolved", "ignored"}),
    ("is:[resolved, ignored]", {"resolved", "ignored"}),
    ("service:checkout", CHECKOUT),
    ("!service:checkout", ALL - CHECKOUT),
    ("-service:checkout", ALL - CHECKOUT),
    ("service:!=checkout", ALL - CHECKOUT),
    ("service.name:checkout", CHECKOUT),
    ("service:check*", CHECKOUT),
    ("service:*out", CHECKOUT),
    ("service:Checkout", set()),
    ('service:"checkout"', CHECKOUT),
    ("service:[login, payments]", {"login", "payments", "resolved", "ignored", "regressed"}),
    ("env:staging", {"pool"}),
    ("environment:production", ALL - {"pool"}),
    ("level:warning", {"login"}),
    ("level:fatal", {"payments"}),
    ("type:KeyError", {"login"}),
    ("error.type:KeyError", {"login"}),
    ("culprit:*computeTotal", {"cart"}),
    ("TypeError", {"cart"}),
    ("typeerror", {"cart"}),
    ("TypeError: Cannot", {"cart"}),
    ('"connection reset"', {"pool", "payments"}),
    ("connection reset", {"pool", "payments"}),
    ("reset connection", {"pool", "payments"}),
    ('"reset connection"', set()),
    ("-connection", ALL - {"pool", "payments"}),
    ('!"connection reset"', ALL - {"pool", "payments"}),
    ("50%", {"discount"}),
    ("%", {"discount"}),
    ("_", {"discount"}),
    ("release:1.3.0", {"cart"}),
    ("release:1.2.*", {"cart"}),
    ("release:2.1.0", {"payments"}),
    ("!release:1.3.0", ALL - {"cart"}),
    ("first_release:1.2.0", {"cart"}),
    ("!first_release:1.2.0", ALL - {"cart"}),
    ("user:alice", {"cart"}),
    ("user:carol@example.com", {"login"}),
    ("user.email:carol@example.com", {"login"}),
    ("user.id:carol@example.com", set()),
    ("user:[dave, alice]", {"cart", "payments"}),
    ("tag.http.route:/cart", {"cart"}),
    ("tag.http.route:/cart*", {"cart"}),
    ("tags[http.method]:GET", {"cart"}),
    ("tag.http.method:DELETE", set()),
    ("!tag.http.method:POST", ALL - {"cart"}),
    ("events:>2", {"cart", "payments"}),
    ("events:6", {"cart"}),
    ("times_seen:>=6", {"cart"}),
    ("!events:>1", {"login", "discount", "resolved", "ignored"}),
    ("users:>=3", {"payments"}),
    ("users:2", {"cart"}),
    ("first_seen:+1d", {"pool", "discount"}),
    ("first_seen:>1d", {"pool", "discount"}),
    ("age:-1d", ALL - {"pool", "discount"}),
    ("first_seen:<1d", ALL - {"pool", "discount"}),
    ("last_seen:+3d", {"discount"}),
    ("lastSeen:-30m", {"cart", "payments", "regressed", "login"}),
    ("!last_seen:-30m", {"pool", "discount", "resolved", "ignored"}),
    ("is:unresolved service:checkout !env:staging TypeError", {"cart"}),
    ("is:unresolved level:error service:checkout TypeError", {"cart"}),
]


@pytest.mark.parametrize(("query", "expected"), SEARCHES, ids=[q or "<empty>" for q, _ in SEARCHES])
async def test_search_semantics(queries: IssueQueries, seeded: dict[str, int], query: str, expected: set[str]) -> None:
    assert await names(queries, seeded, IssueFilters(query=query)) == expected


async def test_search_with_absolute_dates(queries: IssueQueries, seeded: dict[str, int]) -> None:
    three_days_ago = (NOW - timedelta(days=3)).isoformat().replace("+00:00", "Z")
    assert await names(queries, seeded, IssueFilters(query=f"first_seen:<{three_days_ago}")) == {"discount"}
    assert await names(queries, seeded, IssueFilters(query=f"last_seen:>={three_days_ago}")) == ALL - {"discount"}
    day = (NOW - timedelta(days=5)).date().isoformat()
    assert await names(queries, seeded, IssueFilters(query=f"first_seen:{day}")) == {"discount"}
    assert await names(queries, seeded, IssueFilters(query=f"!first_seen:{day}")) == ALL - {"discount"}


async def test_explicit_filters(queries: IssueQueries, seeded: dict[str, int]) -> None:
    async def check(expected: set[str], **fields: Any) -> None:
        assert await names(queries, seeded, IssueFilters(**fields)) == expected, fields

    await check({"resolved", "ignored"}, statuses=("resolved", "ignored"))
    await check({"regressed"}, statuses=("regressed",))
    await check({"login", "resolved", "ignored"}, services=("login",))
    await check({"pool"}, environments=("staging",))
    await check({"login"}, levels=("warning",))
    await check({"payments", "login"}, levels=("warning", "fatal"))
    await check({"cart"}, types=("TypeError",))
    await check({"cart"}, services=("checkout",), query="is:unresolved TypeError")
    await check(set(), project_id=2)
    # The range keeps issues whose [first_seen, last_seen] overlaps it.
    await check(ALL - {"pool", "discount"}, period=timedelta(hours=12))
    await check({"pool"}, since=NOW - timedelta(days=3), until=NOW - timedelta(hours=12))
    await check({"pool", "discount"}, until=NOW - timedelta(hours=12))
    # Event-level terms only look at events inside the range: cart's 1.2.0 events are 3 minutes
    # and more old, its 1.3.0 events 1 and 2 minutes.
    await check({"cart"}, query="release:1.2.0", since=NOW - timedelta(minutes=5))
    await check(set(), query="release:1.2.0", since=NOW - timedelta(minutes=2.5))
    await check({"cart"}, query="release:1.3.0", since=NOW - timedelta(minutes=2.5))


async def test_sort_orders(queries: IssueQueries, seeded: dict[str, int]) -> None:
    by_id = {v: k for k, v in seeded.items()}

    async def order(sort: Sort) -> list[str]:
        page = await queries.list_issues(IssueFilters(query="is:unresolved"), sort=sort, limit=100)
        return [by_id[i.id] for i in page.items]

    assert (await order(Sort.EVENTS))[:2] == ["cart", "payments"]
    assert (await order(Sort.USERS))[:2] == ["payments", "cart"]
    assert (await order(Sort.LAST_SEEN))[0] == "regressed"
    assert (await order(Sort.FIRST_SEEN))[-2:] == ["pool", "discount"]


@pytest.mark.parametrize(
    "query",
    [
        "is:bogus",
        "events:>lots",
        "first_seen:yesterday",
        '"unterminated',
        "a OR b",
        "service:",
        "service:>x",
        "events:>99999999999999999999",
        "first_seen:-999999999d",
    ],
)
async def test_search_errors_are_validation_errors(queries: IssueQueries, seeded: dict[str, int], query: str) -> None:
    with pytest.raises(SearchSyntaxError) as caught:
        await queries.list_issues(IssueFilters(query=query))
    assert isinstance(caught.value, QueryValidationError)
    assert caught.value.position >= 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"sort": "title"}, "unknown sort"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"filters": IssueFilters(statuses=("open",))}, "unknown status"),
        ({"filters": IssueFilters(project_id=0)}, "project_id"),
        ({"filters": IssueFilters(project_id=2**70)}, "project_id"),
        ({"filters": IssueFilters(services=("x" * 501,))}, "longer than"),
        ({"filters": IssueFilters(services=tuple(str(n) for n in range(101)))}, "at most"),
        ({"filters": IssueFilters(since=NOW, until=NOW)}, "empty"),
        ({"filters": IssueFilters(period=timedelta(days=-1))}, "period"),
        ({"cursor": "garbage"}, "invalid cursor"),
    ],
)
async def test_invalid_list_arguments(
    queries: IssueQueries, seeded: dict[str, int], call: dict[str, Any], message: str
) -> None:
    with pytest.raises(QueryValidationError, match=message):
        await queries.list_issues(**call)


async def test_cursors_are_tied_to_their_query(queries: IssueQueries, seeded: dict[str, int]) -> None:
    page = await queries.list_issues(IssueFilters(query="is:unresolved"), limit=2)
    assert page.next_cursor is not None and page.prev_cursor is None
    following = await queries.list_issues(IssueFilters(query="is:unresolved"), cursor=page.next_cursor, limit=2)
    assert {i.id for i in following.items}.isdisjoint({i.id for i in page.items})
    with pytest.raises(QueryValidationError, match="other filters"):
        await queries.list_issues(IssueFilters(query="is:resolved"), cursor=page.next_cursor, limit=2)
    with pytest.raises(QueryValidationError, match="sort"):
        await queries.list_issues(IssueFilters(query="is:unresolved"), cursor=page.next_cursor, sort=Sort.EVENTS)
    body, tag = page.next_cursor.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + tag
    with pytest.raises(QueryValidationError, match="invalid cursor"):
        await queries.list_issues(IssueFilters(query="is:unresolved"), cursor=forged, limit=2)
    # Another process's secret does not validate this one's cursors.
    other = IssueQueries(queries.db, cursor_secret=b"another secret")
    with pytest.raises(QueryValidationError, match="invalid cursor"):
        await other.list_issues(IssueFilters(query="is:unresolved"), cursor=page.next_cursor, limit=2)
    shared = IssueQueries(queries.db, cursor_secret=b"shared")
    replica = IssueQueries(queries.db, cursor_secret=b"shared")
    first = await shared.list_issues(limit=3)
    assert first.next_cursor is not None
    assert (await replica.list_issues(cursor=first.next_cursor, limit=3)).items


# --------------------------------------------------------------------------- detail and events


async def test_issue_detail(queries: IssueQueries, seeded: dict[str, int]) -> None:
    detail = await queries.get_issue_detail(seeded["cart"])
    assert detail is not None
    assert detail.issue.title == "TypeError: Cannot read properties of undefined (reading 'total')"
    assert (detail.issue.first_release, detail.issue.last_release) == ("1.2.0", "1.3.0")
    assert detail.counts.total == 6 and detail.counts.last_24h == 6 and detail.counts.last_7d == 6
    assert detail.counts.users == 2

    latest = detail.latest_event
    assert latest is not None
    assert latest.event.timestamp == NOW - timedelta(minutes=1)
    assert (latest.event.trace_id, latest.event.session_id) == ("ab" * 16, "sess-1")
    assert latest.language == "javascript"
    (exc,) = latest.exceptions
    assert exc.type == "TypeError"
    assert [(f.function, f.in_app) for f in exc.frames] == [
        ("checkout", True),
        ("Layer.handle", False),
        ("computeTotal", True),
    ]
    assert exc.frames[-1].filename == "/srv/shop/src/cart.js" and exc.frames[-1].lineno == 42

    tags = {t.key: t for t in detail.tags}
    assert [t.key for t in detail.tags][:6] == ["service", "environment", "release", "level", "user", "browser"]
    assert detail.tag_sample_size == 6
    assert [(v.value, v.count) for v in tags["service"].top] == [("checkout", 6)]
    assert [(v.value, v.count) for v in tags["release"].top] == [("1.2.0", 3), ("1.3.0", 3)]
    assert (tags["release"].total, tags["release"].distinct) == (6, 2)
    assert [(v.value, v.count) for v in tags["user"].top] == [("alice", 2), ("bob", 1)]
    assert [(v.value, v.count) for v in tags["browser"].top] == [("Chrome 120", 3), ("Firefox 121", 1)]
    assert [(v.value, v.count) for v in tags["os"].top] == [("Windows", 3), ("Linux", 1)]
    assert [(v.value, v.count) for v in tags["http.route"].top] == [("/cart", 4), ("/cart/items", 1)]
    assert [(v.value, v.count) for v in tags["http.method"].top] == [("POST", 2), ("GET", 1)]
    # Attributes that are columns already are not repeated as tags.
    assert "service.name" not in tags

    assert await queries.get_issue_detail(seeded["cart"], project_id=2) is None
    assert await queries.get_issue_detail(10**9) is None
    with pytest.raises(QueryValidationError):
        await queries.get_issue_detail(0)


async def test_issue_detail_top_values_are_bounded(pool: AsyncConnectionPool[Any], store: ErrorStore) -> None:
    events = [ev("wide", n / 10, type="E", message="m", attributes={"request.id": f"r{n}"}) for n in range(30)]
    issue_id = next(iter((await store.write_events(events)).new_issues))
    detail = await IssueQueries(pool, tag_sample=20).get_issue_detail(issue_id, top_values=5)
    assert detail is not None
    tag = next(t for t in detail.tags if t.key == "request.id")
    assert detail.tag_sample_size == 20
    assert (tag.total, tag.distinct, len(tag.top)) == (20, 20, 5)
    # The latest 20 events: r0..r19.
    assert {v.value for v in tag.top} <= {f"r{n}" for n in range(20)}


async def test_event_detail_from_raw_stacktrace_only(queries: IssueQueries, store: ErrorStore) -> None:
    python_stack = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/handlers.py", line 10, in handle\n'
        "    total(cart)\n"
        '  File "/usr/lib/python3.11/decimal.py", line 5, in total\n'
        "    raise ValueError('bad')\n"
        "ValueError: bad"
    )
    report = await store.write_events(
        [
            ev(
                "py",
                1,
                type="ValueError",
                message="bad",
                stacktrace=python_stack,
                attributes={"telemetry.sdk.language": "python"},
            )
        ]
    )
    detail = await queries.get_issue_detail(next(iter(report.new_issues)))
    assert detail is not None and detail.latest_event is not None
    frames = detail.latest_event.exceptions[-1].frames
    assert [(f.filename, f.in_app) for f in frames] == [
        ("/srv/app/handlers.py", True),
        ("/usr/lib/python3.11/decimal.py", False),
    ]


async def test_events_pagination_both_ways(queries: IssueQueries, seeded: dict[str, int]) -> None:
    issue = seeded["cart"]
    seen: list[int] = []
    pages = []
    cursor = None
    while True:
        page = await queries.list_events(issue, cursor=cursor, limit=4)
        pages.append(page)
        seen += [e.id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 6
    timestamps = [e.timestamp for p in pages for e in p.items]
    assert timestamps == sorted(timestamps, reverse=True)
    back = await queries.list_events(issue, cursor=pages[-1].prev_cursor, limit=4)
    assert [e.id for e in back.items] == [e.id for e in pages[0].items]
    assert back.prev_cursor is None
    with pytest.raises(QueryValidationError):
        await queries.list_events(seeded["pool"], cursor=pages[0].next_cursor)

    first = pages[0].items[0]
    full = await queries.get_event(issue, first.event_id)
    assert full is not None and full.event.id == first.id and full.stacktrace == JS_STACK
    assert await queries.get_event(seeded["pool"], first.event_id) is None
    with pytest.raises(QueryValidationError):
        await queries.get_event(issue, "not-a-uuid")


# --------------------------------------------------------------------------- actions


async def issue(queries: IssueQueries, issue_id: int) -> Any:
    found = await queries.get_issue(issue_id)
    assert found is not None
    return found


async def test_resolve_ignore_reopen(queries: IssueQueries, seeded: dict[str, int]) -> None:
    cart = seeded["cart"]
    result = await queries.resolve([cart])
    assert (result.action, result.matched, result.updated) == (Action.RESOLVE, [cart], [cart])
    resolved = await issue(queries, cart)
    assert (resolved.status, resolved.substatus, resolved.resolved_in_release) == ("resolved", None, None)
    assert resolved.resolved_at is not None
    again = await queries.resolve([cart])
    assert (again.matched, again.updated) == ([cart], [])
    assert (await issue(queries, cart)).resolved_at == resolved.resolved_at

    assert (await queries.ignore([cart])).updated == [cart]
    ignored = await issue(queries, cart)
    assert (ignored.status, ignored.substatus, ignored.resolved_at) == ("ignored", None, None)

    assert (await queries.reopen([cart])).updated == [cart]
    reopened = await issue(queries, cart)
    assert (reopened.status, reopened.substatus) == ("unresolved", "ongoing")
    assert (await queries.reopen([cart])).updated == []


async def test_resolve_in_next_release(queries: IssueQueries, store: ErrorStore, seeded: dict[str, int]) -> None:
    cart, pay, login = seeded["cart"], seeded["payments"], seeded["login"]
    result = await queries.resolve_in_next_release([cart, pay, login])
    assert result.updated == sorted([cart, pay, login])
    assert result.without_release == [login]
    resolved = await issue(queries, cart)
    assert resolved.status == "resolved"
    assert resolved.resolved_after_release == "1.3.0"
    assert resolved.resolved_in_release == next_release_threshold("1.3.0")
    assert (await issue(queries, pay)).resolved_after_release == "2.1.0"
    plain = await issue(queries, login)
    assert (plain.status, plain.resolved_in_release, plain.resolved_after_release) == ("resolved", None, None)

    # Events of the release the issue was resolved "after" do not reopen it...
    later = datetime.now(UTC) + timedelta(seconds=1)
    await store.write_events([ErrorEvent(fingerprint="cart", timestamp=later, service_version="1.3.0", **CART)])
    assert (await issue(queries, cart)).status == "resolved"
    # ...the next release's do.
    await store.write_events(
        [ErrorEvent(fingerprint="cart", timestamp=later + timedelta(seconds=1), service_version="1.3.1", **CART)]
    )
    regressed = await issue(queries, cart)
    assert (regressed.status, regressed.substatus, regressed.resolved_after_release) == (
        "unresolved",
        "regressed",
        None,
    )


@pytest.mark.parametrize(
    ("latest", "later", "not_later"),
    [
        (
            "1.3.0",
            ["1.3.1", "1.4.0", "2.0.0", "1.3.0.1", "1.3.1-rc.1", "v1.3.1"],
            ["1.3.0", "1.2.9", "1.3", "1.3.0+build.7", "1.3.0-rc.1"],
        ),
        ("v2.0", ["2.0.1", "v2.1"], ["2.0", "v2.0.0", "1.9.9"]),
        ("1.3.0-rc.1", ["1.3.0-rc.2", "1.3.0", "1.3.0-rc.1.1"], ["1.3.0-rc.1", "1.3.0-beta.9", "1.2.9"]),
        ("shop@1.3.0", ["shop@1.3.1"], ["shop@1.3.0", "shop@1.2.0"]),
        ("2024-06-01-a1b2c3", ["2024-06-02-000000", "2024-06-01-a1b2c3x"], ["2024-06-01-a1b2c3", "2024-05-31-ffffff"]),
        ("a1b2c3d", ["a1b2c3e", "b000000", "a1b2c3d0"], ["a1b2c3d", "0fffffff", "a1b2c3c"]),
    ],
)
async def test_next_release_threshold_orders_with_version_cmp(
    appguard_dsn: str, latest: str, later: list[str], not_later: list[str]
) -> None:
    threshold = next_release_threshold(latest)
    async with await psycopg.AsyncConnection.connect(appguard_dsn) as conn:
        for release in later + not_later:
            cur = await conn.execute("SELECT appguard.version_cmp(%s, %s)", (release, threshold))
            row = await cur.fetchone()
            assert row is not None
            # The store reopens an issue for events whose version_cmp to the threshold is >= 0.
            assert (row[0] >= 0) == (release in later), (release, threshold)


async def test_bulk_actions_by_ids_and_by_query(
    appguard_dsn: str, queries: IssueQueries, seeded: dict[str, int]
) -> None:
    by_ids = await queries.apply_action("ignore", issue_ids=[seeded["cart"], seeded["pool"], 10**9])
    assert by_ids.matched == sorted([seeded["cart"], seeded["pool"]])
    assert by_ids.updated == by_ids.matched

    by_query = await queries.apply_action(Action.RESOLVE, filters=IssueFilters(query="service:login"))
    login_issues = sorted(seeded[n] for n in ("login", "resolved", "ignored"))
    assert by_query.matched == login_issues
    assert by_query.updated == sorted([seeded["login"], seeded["ignored"]])  # "resolved" already was
    assert await names(queries, seeded, IssueFilters(query="is:resolved")) == {"login", "resolved", "ignored"}

    reopened = await queries.apply_action("reopen", filters=IssueFilters(statuses=("ignored", "resolved")))
    assert set(reopened.updated) == {seeded[n] for n in ("cart", "pool", "login", "resolved", "ignored")}
    assert await names(queries, seeded, IssueFilters(query="!is:unresolved")) == set()

    before = await snapshot(appguard_dsn)
    with pytest.raises(QueryValidationError, match="more than 3"):
        await queries.apply_action("ignore", filters=IssueFilters(), max_issues=3)
    with pytest.raises(QueryValidationError, match="at most 3"):
        await queries.apply_action("ignore", issue_ids=[1, 2, 3, 4], max_issues=3)
    with pytest.raises(QueryValidationError, match="either"):
        await queries.apply_action("ignore", issue_ids=[1], filters=IssueFilters())
    with pytest.raises(QueryValidationError, match="unknown action"):
        await queries.apply_action("delete", issue_ids=[1])
    with pytest.raises(QueryValidationError):
        await queries.apply_action("ignore", issue_ids=["1 OR 1=1"])  # type: ignore[list-item]
    assert await snapshot(appguard_dsn) == before


async def test_actions_stay_in_their_project(queries: IssueQueries, store: ErrorStore, seeded: dict[str, int]) -> None:
    report = await store.write_events([ev("other-project", 1, type="E", message="m", project_id=2)])
    other = next(iter(report.new_issues))
    result = await queries.resolve([other, seeded["cart"]])
    assert result.matched == [seeded["cart"]]
    assert (await queries.get_issue(other, project_id=2)) is not None
    assert (await queries.get_issue(other, project_id=2)).status == "unresolved"  # type: ignore[union-attr]
    assert (await queries.resolve([other], project_id=2)).updated == [other]


# --------------------------------------------------------------------------- charts and dashboard


async def test_issue_chart_buckets(queries: IssueQueries, seeded: dict[str, int]) -> None:
    chart = await queries.issue_chart(
        seeded["cart"], since=NOW - timedelta(minutes=59), until=NOW + timedelta(minutes=1), interval="minute"
    )
    assert chart.interval is Interval.MINUTE
    assert chart.start == NOW - timedelta(minutes=59) and len(chart.buckets) == 60
    assert all(b2 - b1 == timedelta(minutes=1) for b1, b2 in zip(chart.buckets, chart.buckets[1:], strict=False))
    counts = {b: n for b, n in zip(chart.buckets, chart.totals, strict=True) if n}
    expected = {NOW - timedelta(minutes=m): n for m, n in {1: 1, 2: 2, 3: 1, 10: 1, 40: 1}.items()}
    assert counts == expected
    assert [(s.service_name, s.environment, s.total) for s in chart.series] == [("checkout", "production", 6)]

    # The start rounds down to its minute (NOW - 3 min), so the event 3 minutes old counts.
    open_ended = await queries.issue_chart(seeded["cart"], since=NOW - timedelta(minutes=2, seconds=30))
    assert open_ended.start == NOW - timedelta(minutes=3) and open_ended.end > NOW
    assert open_ended.interval is Interval.MINUTE and open_ended.totals[:3] == [1, 2, 1]

    hourly = await queries.issue_chart(seeded["cart"], period=timedelta(hours=6), interval=Interval.HOUR)
    assert sum(hourly.totals) == 6 and len(hourly.buckets) in (6, 7)
    assert all(b.minute == 0 and b.second == 0 for b in hourly.buckets)


async def test_project_chart_split_by_service_and_environment(queries: IssueQueries, seeded: dict[str, int]) -> None:
    chart = await queries.project_chart(period=timedelta(days=3), interval="day")
    assert all(b.hour == 0 and b.minute == 0 for b in chart.buckets)
    series = {(s.service_name, s.environment): s.total for s in chart.series}
    assert series == {
        ("checkout", "production"): 6,
        ("checkout", "staging"): 2,
        ("login", "production"): 3,
        ("payments", "production"): 4,
        ("payments", ""): 1,
    }
    assert sum(chart.totals) == sum(series.values())
    assert [s.total for s in chart.series] == sorted((s.total for s in chart.series), reverse=True)
    only = await queries.project_chart(period=timedelta(days=3), interval="day", environments=["staging"])
    assert {(s.service_name, s.environment) for s in only.series} == {("checkout", "staging")}
    assert (await queries.project_chart(period=timedelta(days=3), interval="day", project_id=2)).series == []

    auto = await queries.project_chart(period=timedelta(hours=1))
    assert auto.interval is Interval.MINUTE
    assert (await queries.project_chart(period=timedelta(days=2))).interval is Interval.HOUR
    assert (await queries.project_chart(period=timedelta(days=30))).interval is Interval.DAY
    with pytest.raises(QueryValidationError, match="buckets"):
        await queries.project_chart(period=timedelta(days=30), interval="minute")
    with pytest.raises(QueryValidationError, match="interval"):
        await queries.project_chart(interval="fortnight")
    with pytest.raises(QueryValidationError, match="empty"):
        await queries.project_chart(since=NOW, until=NOW - timedelta(hours=1))


async def test_dashboard(queries: IssueQueries, seeded: dict[str, int]) -> None:
    home = await queries.dashboard(period=timedelta(hours=1), top=3)
    by_id = {v: k for k, v in seeded.items()}
    assert [(by_id[t.issue.id], t.events) for t in home.top_issues] == [("cart", 6), ("payments", 3), ("regressed", 2)]
    # Written in the last hour: everything but pool and discount.
    assert home.new_issues == 6
    assert [by_id[i.id] for i in home.newest_issues] == ["payments", "login", "ignored", "resolved", "cart"]
    assert home.unresolved_issues == len(UNRESOLVED)
    assert home.total_events == sum(home.chart.totals) == 6 + 3 + 1 + 1 + 1 + 2
    assert home.events_per_minute == pytest.approx(
        home.total_events / ((home.chart.end - home.chart.start).total_seconds() / 60)
    )
    assert home.chart.interval is Interval.MINUTE


def test_user_agent_classification() -> None:
    assert browser_of(CHROME) == "Chrome 120"
    assert browser_of(FIREFOX) == "Firefox 121"
    edge = CHROME + " Edg/120.0.2210.91"
    assert browser_of(edge) == "Edge 120"
    safari = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1"
    )
    assert (browser_of(safari), os_of(safari)) == ("Safari 17", "iOS")
    assert browser_of("python-requests/2.31.0") == "python-requests"
    assert browser_of("???") == "Other"
    assert os_of("python-requests/2.31.0") is None
    assert os_of(CHROME) == "Windows" and os_of(FIREFOX) == "Linux"


# --------------------------------------------------------------------------- SQL injection

PAYLOADS = [
    "' OR '1'='1",
    "'; DROP TABLE appguard.issues; --",
    '" OR ""="',
    "1; SELECT pg_sleep(5)",
    "%' AND 1=1 --",
    "\\'; DELETE FROM appguard.issues; --",
    "' UNION SELECT id, title FROM appguard.issues --",
    "$$; DROP TABLE appguard.error_events; $$",
    "checkout' --",
    "*",
    "%",
    "\x00",
    "\ud800",
    "é" * 3000,
]


async def test_sql_injection_attempts_are_just_data(
    appguard_dsn: str, queries: IssueQueries, seeded: dict[str, int]
) -> None:
    before = await snapshot(appguard_dsn)
    outcomes: list[str] = []

    async def attempt(call: Any) -> None:
        try:
            await call
        except QueryValidationError as exc:
            outcomes.append(f"refused: {exc}")
        else:
            outcomes.append("served")

    for payload in PAYLOADS:
        quoted = '"' + payload.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for query in (
            payload,
            quoted,
            f"service:{quoted}",
            f"tag.http.route:{quoted}",
            f"tags[{payload}]:x",
            f"user:{quoted}",
            f"release:{quoted}",
            f"type:{quoted}",
            f"level:[{quoted}, error]",
            f"env:{quoted}",
            f"first_seen:{payload}",
            f"events:{payload}",
            f"is:{payload}",
        ):
            await attempt(queries.list_issues(IssueFilters(query=query)))
            await attempt(queries.apply_action("ignore", filters=IssueFilters(query=query + " events:>1000000")))
        for field in ("statuses", "services", "environments", "levels", "types"):
            one_filter: dict[str, Any] = {field: (payload,)}
            await attempt(queries.list_issues(IssueFilters(**one_filter)))
            await attempt(queries.count_issues(IssueFilters(**one_filter)))
        await attempt(queries.list_issues(sort=payload))
        await attempt(queries.list_issues(cursor=payload))
        await attempt(queries.list_events(seeded["cart"], cursor=payload))
        await attempt(queries.get_issue_detail(payload))  # type: ignore[arg-type]
        await attempt(queries.get_event(seeded["cart"], payload))
        await attempt(queries.project_chart(services=[payload], environments=[payload]))
        await attempt(queries.project_chart(interval=payload))
        await attempt(queries.apply_action(payload, issue_ids=[seeded["cart"]]))

    # Every filter value matched as data: the injected text found nothing.
    for payload in PAYLOADS[:10]:
        quoted = '"' + payload.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for query in (f"service:{quoted}", f"tag.http.route:{quoted}", f"user:{quoted}", f"release:{quoted}"):
            if payload in ("*", "%"):
                continue
            assert (await queries.list_issues(IssueFilters(query=query))).items == [], query
    assert "served" in outcomes and any(o.startswith("refused") for o in outcomes)
    assert await snapshot(appguard_dsn) == before


async def test_a_single_connection_serves_everything(appguard_dsn: str, seeded: dict[str, int]) -> None:
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        single = IssueQueries(conn)
        detail = await single.get_issue_detail(seeded["cart"])
        assert detail is not None and detail.counts.total == 6 and detail.latest_event is not None
        assert (await single.resolve([seeded["cart"]])).updated == [seeded["cart"]]
        assert [i.id for i in (await single.list_issues(IssueFilters(query="is:resolved TypeError"))).items] == [
            seeded["cart"]
        ]
