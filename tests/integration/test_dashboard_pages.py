"""The dashboard's error pages over HTTP, on issues written through ErrorStore: what the home,
the issue list (filters, search, pages) and an issue's page render, hostile values escaped, and
the front-end packages served from npm's folder."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import psycopg

from api.dashboard import VENDOR_ROOT, ago, compact
from api.extension import ApiExtension
from tests.support.api import ApiClient, client
from tests.support.issue_data import NOW, TRACE, Seeder, dataset, ev


def issue_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-issue-id="(\d+)"', page)]


async def signed_in(api: ApiExtension, email: str = "admin@example.com") -> ApiClient:
    browser = ApiClient(f"http://127.0.0.1:{api.port}")
    reply = await browser.register(email, cookies=True)
    assert reply.status == 201, reply.body
    return browser


async def test_home_shows_rates_top_and_new_issues(api: ApiExtension, seed: Seeder) -> None:
    ids = await seed(dataset())
    browser = await signed_in(api)
    try:
        page = await browser.call("GET", "/")
    finally:
        await browser.close()
    assert page.status == 200
    body = page.body
    # Five events in the last 24 hours (the sixth is three days old), three new issues.
    assert re.search(r'id="stat-events">5<', body), body
    assert re.search(r'id="stat-new">3<', body)
    top = body[body.index('id="top-issues"') : body.index("</ol>", body.index('id="top-issues"'))]
    assert top.index(f'href="/issues/{ids["cart"]}"') < top.index(f'href="/issues/{ids["pool"]}"')
    assert f'href="/issues/{ids["old"]}"' not in top
    assert 'data-src="/api/stats/errors?statsPeriod=24h"' in body
    assert '<link rel="stylesheet" href="/vendor/uplot/uPlot.min.css">' in body


async def test_issue_list_filters_search_sort_and_pages(api: ApiExtension, seed: Seeder) -> None:
    ids = await seed(dataset())
    # 60 more issues of one service, so the list has pages.
    await seed([ev(f"bulk-{n}", 100 + n, service_name="bulk", type="RuntimeError") for n in range(60)])
    browser = await signed_in(api)
    try:
        first = await browser.call("GET", "/issues")
        assert first.status == 200
        # The default search is Sentry's: unresolved issues, most recently seen first.
        assert 'value="is:unresolved"' in first.body
        listed = issue_ids(first.body)
        assert len(listed) == 25 and listed[0] == ids["cart"]
        # The filter menus offer what the issues have.
        assert '<option value="checkout">' in first.body and '<option value="staging">' in first.body

        async def listing(qs: str) -> list[int]:
            reply = await browser.call("GET", "/issues?" + qs)
            assert reply.status == 200, reply.body
            return issue_ids(reply.body)

        assert await listing("query=level:warning") == [ids["login"]]
        assert await listing("query=&service=login") == [ids["login"]]
        assert await listing("query=&environment=staging") == [ids["pool"]]
        assert set(await listing("query=TypeError+service:checkout")) == {ids["cart"]}
        assert ids["cart"] not in await listing("query=!service:checkout&statsPeriod=30d")
        assert ids["old"] not in await listing("query=&statsPeriod=24h")
        assert (await listing("query=&sort=events"))[0] == ids["cart"]
        assert await listing('query="connection+reset"') == [ids["pool"]]

        # Following the "next page" links visits every issue once.
        seen: list[int] = []
        path: str | None = "/issues?query=&sort=first_seen"
        while path is not None:
            reply = await browser.call("GET", path)
            seen.extend(issue_ids(reply.body))
            found = re.search(r'<a rel="next" href="([^"]+)"', reply.body)
            path = html.unescape(found.group(1)) if found else None
        assert len(seen) == len(set(seen)) == 64

        # A search the list cannot run is shown, not a failure.
        bad = await browser.call("GET", "/issues?query=times_seen:lots")
        assert bad.status == 200 and 'id="search-error"' in bad.body and issue_ids(bad.body) == []
        bad = await browser.call("GET", "/issues?statsPeriod=forever")
        assert bad.status == 200 and "statsPeriod" in bad.body
    finally:
        await browser.close()


async def test_issue_page_shows_the_stack_tags_links_and_events(api: ApiExtension, seed: Seeder) -> None:
    ids = await seed(dataset())
    browser = await signed_in(api)
    try:
        page = await browser.call("GET", f"/issues/{ids['cart']}")
        missing = await browser.call("GET", "/issues/999999")
        bad = await browser.call("GET", "/issues/abc")
    finally:
        await browser.close()
    assert page.status == 200
    body = page.body
    assert 'id="issue-events">3<' in body and 'id="issue-users">2<' in body
    # The parsed stack: newest frame first, in-app frames marked, library frames not.
    frames = re.findall(r'<li class="frame (in-app|system)">.*?<span class="frame-function">([^<]+)</span>', body, re.S)
    assert frames == [("in-app", "computeTotal"), ("system", "Layer.handle"), ("in-app", "checkout")]
    assert "src/cart.js" in body
    # Tags with their counts; links to the trace, the logs and the replay.
    tags = body[body.index('id="tags"') : body.index("</section>", body.index('id="tags"'))]
    shown = {
        key: re.findall(r'<span class="tag-value">([^<]+)</span> <span class="muted">([^<]+)</span>', block)
        for key, block in re.findall(r'<div class="tag" data-key="([^"]+)">(.*?)</div>', tags, re.S)
    }
    assert shown["user"] == [("u1", "2 (67%)"), ("u2", "1 (33%)")]
    assert shown["release"] == [("1.0.0", "3 (100%)")] and shown["http.route"] == [("/cart", "1 (100%)")]
    assert 'id="link-trace"' in body and TRACE in body and 'id="link-logs"' in body
    assert '<a href="https://guard.example.com/sessions/sess-42?t=' in body
    # The events table and the chart's source; a member may act on the issue.
    assert body.count('<a href="/issues/{}?project=1&amp;event='.format(ids["cart"])) == 3
    assert f'data-src="/api/issues/{ids["cart"]}/stats?project=1&amp;statsPeriod=14d"' in body
    assert 'data-action="resolve"' in body
    assert missing.status == 404 and "there is no issue 999999" in missing.body
    assert bad.status == 400


async def test_a_chosen_event_is_shown_and_viewers_get_no_actions(
    api: ApiExtension, seed: Seeder, tokens: dict[str, str], appguard_dsn: str
) -> None:
    ids = await seed(dataset())
    with psycopg.connect(appguard_dsn) as conn:
        oldest = conn.execute(
            "SELECT event_id FROM appguard.error_events WHERE issue_id = %s ORDER BY timestamp LIMIT 1",
            [ids["cart"]],
        ).fetchone()
    assert oldest is not None
    viewer = ApiClient(f"http://127.0.0.1:{api.port}")
    try:
        assert (await viewer.login("viewer@example.com", cookies=True)).status == 200
        page = await viewer.call("GET", f"/issues/{ids['cart']}?event={oldest[0]}")
        listing = await viewer.call("GET", "/issues")
    finally:
        await viewer.close()
    assert page.status == 200
    assert f"<code>{oldest[0]}</code>" in page.body
    assert 'aria-current="true"' in page.body
    assert 'id="issue-actions"' not in page.body and 'id="bulk-bar"' not in listing.body


async def test_hostile_values_are_escaped(api: ApiExtension, seed: Seeder) -> None:
    script = "<script>alert(1)</script>"
    ids = await seed([ev("xss", 1, type="Evil" + script, message=script, service_name=script, attributes={"k": script})])
    browser = await signed_in(api)
    try:
        pages = [
            (await browser.call("GET", path)).body
            for path in ("/", "/issues?query=", f"/issues/{ids['xss']}", "/issues?query=" + script)
        ]
    finally:
        await browser.close()
    for body in pages:
        assert script not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


async def test_front_end_packages_are_served_from_npm(api: ApiExtension) -> None:
    assert (VENDOR_ROOT / "uplot" / "dist" / "uPlot.esm.js").is_file(), "run npm ci at the repository's root"
    async with client(api) as anonymous:
        module = await anonymous.call("GET", "/vendor/uplot/uPlot.esm.js")
        style = await anonymous.call("GET", "/vendor/uplot/uPlot.min.css")
        outside = await anonymous.call("GET", "/vendor/uplot/../package.json")
    assert module.status == 200 and "export" in module.body
    assert style.status == 200
    assert outside.status in (403, 404)


def test_relative_times_and_compact_counts() -> None:
    assert ago(NOW, NOW + timedelta(seconds=10)) == "just now"
    assert ago(NOW, NOW + timedelta(minutes=1, seconds=5)) == "1 minute ago"
    assert ago(NOW, NOW + timedelta(hours=5)) == "5 hours ago"
    assert ago(NOW, NOW + timedelta(days=40)) == "1 month ago"
    assert ago(None) == ""
    assert [compact(n) for n in (7, 1234, 56_789, 3_400_000)] == ["7", "1.2k", "57k", "3.4M"]
