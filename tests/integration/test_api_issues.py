"""The errors endpoints over HTTP, against real PostgreSQL and Redis, on data written through
ErrorStore: list filters and search, Link-header pagination, detail and links, events,
actions and bulk actions, roles, charts and the dashboard, and hostile input."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import jsonschema
import orjson
import psycopg
import pytest

from tests.support.api import ApiClient
from tests.support.issue_data import NOW, PUBLIC, TRACE, Seeder, dataset, ev


async def ids_of(http: ApiClient, token: str, qs: str) -> set[int]:
    reply = await http.call("GET", f"/api/issues?{qs}", token=token)
    assert reply.status == 200, (qs, reply.body)
    return {i["id"] for i in reply.body["issues"]}


async def test_list_filters_search_and_sort(http: ApiClient, tokens: dict[str, str], seed: Seeder) -> None:
    ids = await seed(dataset())
    viewer = tokens["viewer"]
    assert await ids_of(http, viewer, "") == set(ids.values())
    assert await ids_of(http, viewer, "service=checkout") == {ids["cart"], ids["pool"]}
    assert await ids_of(http, viewer, "service=login&service=batch") == {ids["login"], ids["old"]}
    assert await ids_of(http, viewer, "environment=staging") == {ids["pool"]}
    assert await ids_of(http, viewer, "level=warning") == {ids["login"]}
    assert await ids_of(http, viewer, "type=ValueError") == {ids["pool"]}
    assert await ids_of(http, viewer, "statsPeriod=24h") == {ids["cart"], ids["pool"], ids["login"]}
    start = quote((NOW - timedelta(days=4)).isoformat())
    end = quote((NOW - timedelta(days=2)).isoformat())
    assert await ids_of(http, viewer, f"start={start}&end={end}") == {ids["old"]}
    search = quote("is:unresolved service:checkout !environment:staging TypeError")
    assert await ids_of(http, viewer, f"query={search}") == {ids["cart"]}
    assert await ids_of(http, viewer, "query=" + quote('"disk full"')) == {ids["old"]}
    assert await ids_of(http, viewer, "status=unresolved&project=2") == set()
    by_events = await http.call("GET", "/api/issues?sort=events&limit=1", token=viewer)
    assert [i["id"] for i in by_events.body["issues"]] == [ids["cart"]]
    assert by_events.body["issues"][0]["event_count"] == 3
    by_first = await http.call("GET", "/api/issues?sort=first_seen", token=viewer)
    assert by_first.body["issues"][-1]["id"] == ids["old"]
    by_users = await http.call("GET", "/api/issues?sort=users&limit=1", token=viewer)
    assert by_users.body["issues"][0]["user_count"] == 2
    # A resolved issue leaves the unresolved list and joins the resolved one.
    await http.call("PUT", f"/api/issues/{ids['pool']}", json={"status": "resolved"}, token=tokens["member"])
    assert ids["pool"] not in await ids_of(http, viewer, "status=unresolved")
    assert await ids_of(http, viewer, "status=resolved") == {ids["pool"]}
    assert await ids_of(http, viewer, f"query={quote('is:resolved')}") == {ids["pool"]}


@pytest.mark.parametrize(
    ("qs", "field"),
    [
        ("sort=loudest", "sort"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("status=sleeping", "status"),
        ("statsPeriod=3x", "statsPeriod"),
        ("statsPeriod=24h&start=2024-01-01T00:00:00Z", "statsPeriod"),
        ("start=yesterday", "start"),
        ("cursor=forged.cursor", "cursor"),
        ("query=is:", "query"),
        ("query=" + quote('"unterminated'), "query"),
        ("project=0", "project"),
        ("colour=red", "colour"),
        ("sort=events&sort=users", "sort"),
        ("start=2024-02-01T00:00:00Z&end=2024-01-01T00:00:00Z", "start"),
    ],
)
async def test_invalid_list_parameters_are_400_naming_the_field(
    http: ApiClient, tokens: dict[str, str], qs: str, field: str
) -> None:
    reply = await http.call("GET", f"/api/issues?{qs}", token=tokens["viewer"])
    assert (reply.status, reply.error_code) == (400, "invalid_parameter"), (qs, reply.body)
    # A list parameter is named with the position of the bad value (status.0).
    assert reply.body["error"]["field"].split(".")[0] == field, reply.body


def _ms(timestamp: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 timestamp of the API."""
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def _links(header: str) -> dict[str, dict[str, str]]:
    out = {}
    for part in header.split(", <"):
        url, _, rest = part.lstrip("<").partition(">")
        attrs = dict(item.strip().split("=", 1) for item in rest.split(";") if "=" in item)
        attrs = {k: v.strip('"') for k, v in attrs.items()}
        out[attrs["rel"]] = {"url": url, **attrs}
    return out


async def test_pagination_through_hundreds_of_issues_by_link_headers(
    http: ApiClient, tokens: dict[str, str], seed: Seeder
) -> None:
    # Ties in last_seen on purpose: pages must still visit each issue exactly once.
    events = [ev(f"fp-{n:03d}", (n % 40) * 0.5, environment="production") for n in range(310)]
    ids = await seed(events)
    assert len(ids) == 310
    for sort in ("last_seen", "events"):
        path = f"/api/issues?sort={sort}&limit=37&environment=production"
        seen: list[int] = []
        pages: list[list[int]] = []
        while True:
            reply = await http.call("GET", path, token=tokens["viewer"])
            assert reply.status == 200, reply.body
            page = [i["id"] for i in reply.body["issues"]]
            pages.append(page)
            seen += page
            links = _links(reply.headers["Link"])
            assert set(links) == {"previous", "next"}
            assert links["next"]["url"].startswith(f"{PUBLIC}/api/issues?")
            if links["next"]["results"] == "false":
                assert reply.body["next_cursor"] is None
                break
            assert links["next"]["cursor"] == reply.body["next_cursor"]
            query = parse_qs(urlsplit(links["next"]["url"]).query)
            assert query["cursor"] == [reply.body["next_cursor"]] and query["environment"] == ["production"]
            path = links["next"]["url"].removeprefix(PUBLIC)
        assert len(pages) == 9
        assert sorted(seen) == sorted(ids.values())
        assert len(seen) == len(set(seen))
        # And back again through rel="previous".
        back = pages[-1]
        for expected in reversed(pages[:-1]):
            prev = _links(reply.headers["Link"])["previous"]
            assert prev["results"] == "true"
            reply = await http.call("GET", prev["url"].removeprefix(PUBLIC), token=tokens["viewer"])
            back = [i["id"] for i in reply.body["issues"]]
            assert back == expected
        assert _links(reply.headers["Link"])["previous"]["results"] == "false"
    # A cursor made for other filters is refused.
    first = await http.call("GET", "/api/issues?limit=5", token=tokens["viewer"])
    cursor = quote(first.body["next_cursor"])
    other = await http.call("GET", f"/api/issues?limit=5&service=x&cursor={cursor}", token=tokens["viewer"])
    assert (other.status, other.body["error"]["field"]) == (400, "cursor")


async def test_detail_events_and_links(http: ApiClient, tokens: dict[str, str], seed: Seeder) -> None:
    ids = await seed(dataset())
    viewer = tokens["viewer"]
    reply = await http.call("GET", f"/api/issues/{ids['cart']}", token=viewer)
    assert reply.status == 200, reply.body
    detail = reply.body
    assert detail["issue"]["id"] == ids["cart"] and detail["counts"]["total"] == 3 and detail["counts"]["users"] == 2
    latest = detail["latest_event"]
    assert latest["event"]["trace_id"] == TRACE
    frames = latest["exceptions"][-1]["frames"]
    assert sorted(f["in_app"] for f in frames) == [False, True, True]
    assert {f["filename"] for f in frames if not f["in_app"]} == {"/srv/shop/node_modules/express/lib/router/layer.js"}
    tags = {t["key"]: t for t in detail["tags"]}
    assert {"value": "production", "count": 3} in tags["environment"]["top"]
    assert tags["user"]["distinct"] == 2
    links = detail["links"]
    trace_url = urlsplit(links["trace"])
    assert links["trace"].startswith("https://grafana.example.com/explore?")
    trace_state = orjson.loads(unquote(parse_qs(trace_url.query)["left"][0]))
    assert trace_state["datasource"] == "tempo-1" and trace_state["queries"][0]["query"] == TRACE
    logs_state = orjson.loads(unquote(parse_qs(urlsplit(links["logs"]).query)["left"][0]))
    assert logs_state["datasource"] == "loki-1" and TRACE in logs_state["queries"][0]["expr"]
    assert links["replay"].startswith(f"{PUBLIC}/sessions/sess-42?t=")
    # An issue whose latest event has no trace or session gets no links.
    plain = await http.call("GET", f"/api/issues/{ids['pool']}", token=viewer)
    assert plain.body["links"] == {"trace": None, "logs": None, "replay": None}
    # Events, newest first, by pages.
    page1 = await http.call("GET", f"/api/issues/{ids['cart']}/events?limit=2", token=viewer)
    assert page1.status == 200 and len(page1.body["events"]) == 2
    nxt = _links(page1.headers["Link"])["next"]
    assert nxt["results"] == "true"
    page2 = await http.call("GET", nxt["url"].removeprefix(PUBLIC), token=viewer)
    assert len(page2.body["events"]) == 1 and page2.body["next_cursor"] is None
    stamps = [e["timestamp"] for e in page1.body["events"] + page2.body["events"]]
    assert stamps == sorted(stamps, reverse=True)
    event_id = page1.body["events"][0]["event_id"]
    one = await http.call("GET", f"/api/issues/{ids['cart']}/events/{event_id}", token=viewer)
    assert one.status == 200 and one.body["event"]["event"]["event_id"] == event_id
    assert one.body["links"]["replay"] == (
        f"{PUBLIC}/sessions/sess-42?t={_ms(one.body['event']['event']['timestamp'])}&event={event_id}"
    )
    # Not found, wrong issue, malformed ids.
    assert (await http.call("GET", "/api/issues/999999", token=viewer)).error_code == "issue_not_found"
    assert (await http.call("GET", "/api/issues/999999/events", token=viewer)).status == 404
    assert (await http.call("GET", "/api/issues/999999/stats", token=viewer)).status == 404
    wrong = await http.call("GET", f"/api/issues/{ids['pool']}/events/{event_id}", token=viewer)
    assert (wrong.status, wrong.error_code) == (404, "event_not_found")
    assert (await http.call("GET", f"/api/issues/{ids['cart']}/events/{uuid.uuid4()}", token=viewer)).status == 404
    bad = await http.call("GET", f"/api/issues/{ids['cart']}/events/not-a-uuid", token=viewer)
    assert (bad.status, bad.body["error"]["field"]) == (400, "event_id")
    bad = await http.call("GET", "/api/issues/abc", token=viewer)
    assert (bad.status, bad.body["error"]["field"]) == (400, "id")
    bad = await http.call("GET", f"/api/issues/{ids['cart']}/events?cursor=x.y", token=viewer)
    assert (bad.status, bad.body["error"]["field"]) == (400, "cursor")


async def test_actions_roles_and_bulk_actions(
    http: ApiClient, tokens: dict[str, str], seed: Seeder, appguard_dsn: str
) -> None:
    ids = await seed(dataset())
    cart = ids["cart"]
    before = table_digest(appguard_dsn)
    payload: dict[str, Any]
    # Viewers read but do not act; anonymous callers do neither.
    for method, path, payload in (
        ("PUT", f"/api/issues/{cart}", {"status": "resolved"}),
        ("PUT", "/api/issues", {"ids": [cart], "status": "ignored"}),
    ):
        denied = await http.call(method, path, json=payload, token=tokens["viewer"])
        assert (denied.status, denied.error_code) == (403, "forbidden")
        assert (await http.call(method, path, json=payload)).status == 401
    assert (await http.call("GET", "/api/issues")).status == 401
    assert table_digest(appguard_dsn) == before

    async def put(status: str, token: str = tokens["member"], **extra: Any) -> Any:
        reply = await http.call("PUT", f"/api/issues/{cart}", json={"status": status, **extra}, token=token)
        assert reply.status == 200, reply.body
        return reply.body

    done = await put("resolved")
    assert done["changed"] and done["issue"]["status"] == "resolved" and done["issue"]["resolved_in_release"] is None
    assert not (await put("resolved"))["changed"]
    # The detail (cached) reflects the action at once.
    shown = await http.call("GET", f"/api/issues/{cart}", token=tokens["viewer"])
    assert shown.body["issue"]["status"] == "resolved"
    nxt = await put("resolved", resolve_in_next_release=True)
    assert nxt["changed"] and not nxt["without_release"]
    assert nxt["issue"]["resolved_after_release"] == "1.0.0" and nxt["issue"]["resolved_in_release"] is not None
    no_release = await http.call(
        "PUT", f"/api/issues/{ids['login']}", json={"status": "resolved", "resolve_in_next_release": True},
        token=tokens["admin"],
    )  # fmt: skip
    # The login service never reported a release.
    assert no_release.body["without_release"] is True
    await http.call("PUT", f"/api/issues/{ids['login']}", json={"status": "unresolved"}, token=tokens["admin"])
    ignored = await put("ignored", token=tokens["admin"])
    assert ignored["issue"]["status"] == "ignored"
    reopened = await put("unresolved")
    assert reopened["issue"]["status"] == "unresolved" and reopened["issue"]["substatus"] == "ongoing"
    # Bad bodies and unknown issues.
    for payload, field in (
        ({"status": "fixed"}, "status"),
        ({"status": "ignored", "resolve_in_next_release": True}, None),
        ({"status": "resolved", "extra": 1}, "extra"),
        ({}, "status"),
    ):
        bad = await http.call("PUT", f"/api/issues/{cart}", json=payload, token=tokens["member"])
        assert (bad.status, bad.error_code) == (400, "invalid_request"), payload
        if field is not None:
            assert bad.body["error"]["field"] == field
    missing = await http.call("PUT", "/api/issues/999999", json={"status": "resolved"}, token=tokens["member"])
    assert (missing.status, missing.error_code) == (404, "issue_not_found")
    # Bulk by ids: unknown ids are left out of matched.
    bulk = await http.call(
        "PUT", "/api/issues", json={"ids": [ids["login"], ids["old"], 999999], "status": "ignored"},
        token=tokens["member"],
    )  # fmt: skip
    assert bulk.status == 200, bulk.body
    assert bulk.body["action"] == "ignore"
    assert sorted(bulk.body["matched"]) == sorted([ids["login"], ids["old"]]) == sorted(bulk.body["updated"])
    assert await ids_of(http, tokens["viewer"], "status=ignored") == {ids["login"], ids["old"]}
    # Bulk by search.
    bulk = await http.call(
        "PUT", "/api/issues", json={"query": "is:ignored service:login", "status": "unresolved"}, token=tokens["member"]
    )
    assert bulk.body["action"] == "reopen" and bulk.body["updated"] == [ids["login"]]
    bulk = await http.call(
        "PUT", "/api/issues", json={"query": "service:checkout", "status": "resolved"}, token=tokens["member"]
    )
    assert sorted(bulk.body["matched"]) == sorted([cart, ids["pool"]]) == sorted(bulk.body["updated"])
    assert await ids_of(http, tokens["viewer"], "status=resolved") == {cart, ids["pool"]}
    for payload in (
        {"status": "resolved"},
        {"ids": [cart], "query": "x", "status": "resolved"},
        {"ids": [], "status": "resolved"},
        {"ids": [0], "status": "resolved"},
        {"ids": ["1; DROP TABLE appguard.issues"], "status": "resolved"},
    ):
        bad = await http.call("PUT", "/api/issues", json=payload, token=tokens["member"])
        assert (bad.status, bad.error_code) == (400, "invalid_request"), payload
    bad = await http.call("PUT", "/api/issues", json={"query": "is:", "status": "resolved"}, token=tokens["member"])
    assert (bad.status, bad.body["error"]["field"]) == (400, "query")


async def test_stats_and_dashboard(http: ApiClient, tokens: dict[str, str], seed: Seeder) -> None:
    ids = await seed(dataset())
    viewer = tokens["viewer"]
    reply = await http.call("GET", f"/api/issues/{ids['cart']}/stats?statsPeriod=1h&interval=minute", token=viewer)
    assert reply.status == 200, reply.body
    chart = reply.body["chart"]
    assert chart["interval"] == "minute" and len(chart["buckets"]) in (60, 61)
    assert sum(chart["totals"]) == 2  # 5 and 30 minutes ago, not 90
    assert sorted(n for n in chart["totals"] if n) == [1, 1]
    assert all(n == 0 for n in chart["totals"][:20])  # nothing 40 to 60 minutes ago
    hourly = await http.call("GET", f"/api/issues/{ids['cart']}/stats?statsPeriod=24h", token=viewer)
    assert hourly.body["chart"]["interval"] == "hour" and sum(hourly.body["chart"]["totals"]) == 3
    project = await http.call("GET", "/api/stats/errors?statsPeriod=24h&interval=hour", token=viewer)
    series = {(s["service_name"], s["environment"]): s["total"] for s in project.body["chart"]["series"]}
    assert series == {("checkout", "production"): 3, ("checkout", "staging"): 1, ("login", "production"): 1}
    only = await http.call("GET", "/api/stats/errors?statsPeriod=7d&service=batch", token=viewer)
    assert [s["total"] for s in only.body["chart"]["series"]] == [1] and only.body["chart"]["interval"] == "hour"
    home = await http.call("GET", "/api/dashboard?statsPeriod=24h&top=2", token=viewer)
    assert home.status == 200, home.body
    board = home.body["dashboard"]
    assert board["total_events"] == 5 and board["new_issues"] == 3 and board["unresolved_issues"] == 4
    assert [t["issue"]["id"] for t in board["top_issues"]] == [ids["cart"], ids["login"]] or [
        t["events"] for t in board["top_issues"]
    ] == [3, 1]
    assert abs(board["events_per_minute"] - 5 / (24 * 60)) < 1e-3
    # Cached answers are invalidated by writes: a new event shows at once.
    await seed([ev("brand-new", 1, service_name="api")])
    again = await http.call("GET", "/api/dashboard?statsPeriod=24h&top=2", token=viewer)
    assert again.body["dashboard"]["total_events"] == 6 and again.body["dashboard"]["new_issues"] == 4
    for qs, field in (("interval=week", "interval"), ("statsPeriod=0h", "statsPeriod"), ("top=0", "top")):
        bad = await http.call("GET", f"/api/dashboard?{qs}", token=viewer)
        assert (bad.status, bad.body["error"]["field"]) == (400, field), (qs, bad.body)
    bad = await http.call("GET", "/api/stats/errors?statsPeriod=400w&interval=minute", token=viewer)
    assert bad.status == 400


def table_digest(dsn: str) -> str:
    """A digest of every issue and event row, to show that nothing changed."""
    with psycopg.connect(dsn) as conn:
        issues = conn.execute("SELECT i::text FROM appguard.issues i ORDER BY id").fetchall()
        events = conn.execute("SELECT e.id, e.issue_id FROM appguard.error_events e ORDER BY id").fetchall()
        users = conn.execute("SELECT id, role, disabled FROM appguard.users ORDER BY id").fetchall()
    return hashlib.sha256(repr((issues, events, users)).encode()).hexdigest()


INJECTIONS = (
    "' OR '1'='1",
    "checkout'; DROP TABLE appguard.issues; --",
    "1) OR 1=1 --",
    '" OR ""="',
    "%' UNION SELECT password_hash FROM appguard.users --",
    "\\'; UPDATE appguard.issues SET status='resolved'; --",
    "$$; DELETE FROM appguard.error_events; $$",
)


async def test_sql_injection_in_every_filter_changes_nothing(
    http: ApiClient, tokens: dict[str, str], seed: Seeder, appguard_dsn: str
) -> None:
    await seed(dataset())
    before = table_digest(appguard_dsn)
    params = ("status", "service", "environment", "level", "type", "query", "sort", "cursor", "statsPeriod",
              "start", "end", "project", "limit")  # fmt: skip
    for payload in INJECTIONS:
        for name in params:
            for path in ("/api/issues", "/api/stats/errors", "/api/dashboard", "/api/issues/1/events"):
                reply = await http.call("GET", f"{path}?{name}={quote(payload)}", token=tokens["admin"])
                assert reply.status in (200, 400, 404), (path, name, reply.body)
                if reply.status == 200 and path == "/api/issues":
                    # Taken as a value that matches nothing, never as SQL.
                    assert reply.body["issues"] == [], (name, payload)
                assert "password" not in str(reply.body).lower() or reply.status == 400
        bulk = await http.call(
            "PUT", "/api/issues", json={"query": payload, "status": "resolved"}, token=tokens["admin"]
        )
        assert bulk.status in (200, 400)
        if bulk.status == 200:
            assert bulk.body["matched"] == []
        for path in (f"/api/issues/{quote(payload, safe='')}", f"/api/issues/1/events/{quote(payload, safe='')}"):
            assert (await http.call("GET", path, token=tokens["admin"])).status in (400, 404)
    assert table_digest(appguard_dsn) == before
    assert len(await ids_of(http, tokens["admin"], "")) == 4


async def test_real_answers_match_the_openapi_document(http: ApiClient, tokens: dict[str, str], seed: Seeder) -> None:
    ids = await seed(dataset())
    document = (await http.call("GET", "/api/openapi.json")).body
    token = tokens["member"]
    cart = ids["cart"]
    events = await http.call("GET", f"/api/issues/{cart}/events", token=token)
    event_id = events.body["events"][0]["event_id"]
    calls: list[tuple[str, str, str, Any]] = [
        ("get", "/api/issues", "/api/issues?limit=2", None),
        ("get", "/api/issues/{id}", f"/api/issues/{cart}", None),
        ("get", "/api/issues/{id}/events", f"/api/issues/{cart}/events", None),
        ("get", "/api/issues/{id}/events/{event_id}", f"/api/issues/{cart}/events/{event_id}", None),
        ("get", "/api/issues/{id}/stats", f"/api/issues/{cart}/stats", None),
        ("get", "/api/stats/errors", "/api/stats/errors?statsPeriod=7d", None),
        ("get", "/api/dashboard", "/api/dashboard", None),
        ("put", "/api/issues/{id}", f"/api/issues/{cart}", {"status": "ignored"}),
        ("put", "/api/issues", "/api/issues", {"ids": [cart], "status": "unresolved"}),
    ]
    for method, template, path, payload in calls:
        reply = await http.call(method.upper(), path, json=payload, token=token)
        assert reply.status == 200, (path, reply.body)
        content = document["paths"][template][method]["responses"]["200"]["content"]["application/json"]
        jsonschema.Draft202012Validator({**content["schema"], "components": document["components"]}).validate(
            reply.body
        )
    refused = await http.call("PUT", f"/api/issues/{cart}", json={"status": "x"}, token=token)
    content = document["paths"]["/api/issues/{id}"]["put"]["responses"]["400"]["content"]["application/json"]
    jsonschema.Draft202012Validator({**content["schema"], "components": document["components"]}).validate(refused.body)
