"""End to end: the real AppGuard snippet in Debian's Chromium, reporting to the real AppGuard.

The real CLI runs the ``otlp`` receiver (HTTP), ``batch``, the ``errors`` exporter, a ``file``
exporter for logs (Loki in production), the ``prometheus`` exporter and the ``api`` extension
(PostgreSQL, Redis, ``/sdk/appguard.js``, the telemetry and session endpoints, the dashboard).
A shop page of the test's own (``pages/e2e-shop.html`` and ``.js``) is served from another
loopback origin, the only one ``api.ingest.allowed_origins`` lets in, and installs the snippet
with a script tag from the API. A visitor loads it, adds to the cart (visible text changes),
types a name (masked in the replay), goes to checkout (``history.pushState``), places the order
(an uncaught ``TypeError`` three calls deep), reloads and places it again.

What must arrive: the session row (pages, errors, browser, segments in order) and a recording
with a full snapshot and the page's text but not what was typed; one issue of two events with
the JavaScript frames of the page's script, both tied to the session; the page views in the logs
pipeline; TTFB and FCP histograms on the Prometheus exporter. Then, signed in to the dashboard,
the issue page's "Session replay" link opens the replay at the error, showing the page as it was
then, and seeking to the start shows it as it first was. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from tests.e2e.stack import (
    Stack,
    StartStack,
    attribute,
    log_records,
    project_key,
    registered,
    replay_frame,
    replay_shot,
    rows,
    sample,
    scrape,
    sign_in,
    until,
)
from tests.support.browser import BrowserRun
from tests.support.net import free_port, serving
from tests.support.snippet_build import ensure_snippet_built

pytestmark = pytest.mark.e2e

PAGES = Path(__file__).resolve().parent / "pages"
TYPED = "Ada Lovelace"
FULL_SNAPSHOT = 2


@pytest.fixture
def shop_port() -> int:
    return free_port()


@pytest.fixture
def stack(start_stack: StartStack, tmp_path: Path, shop_port: int) -> Stack:
    ensure_snippet_built()
    return start_stack(
        file=tmp_path / "logs.jsonl",
        prometheus=True,
        ingest={"allowed_origins": [f"http://127.0.0.1:{shop_port}"]},
        pipelines={"logs": ["errors", "file"], "metrics": ["prometheus"]},
    )


@pytest.fixture
async def shop(stack: Stack, appguard_dsn: str, shop_port: int) -> AsyncIterator[str]:
    """The shop, on its own loopback origin, with the snippet's tag pointing at the API."""
    key = (await project_key(appguard_dsn)).public_key
    html = (PAGES / "e2e-shop.html").read_text().replace("{{API}}", stack.api).replace("{{KEY}}", key)

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    async def script(_: web.Request) -> web.Response:
        return web.Response(text=(PAGES / "e2e-shop.js").read_text(), content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/shop", page)
    app.router.add_get("/shop/checkout", page)
    app.router.add_get("/static/shop.js", script)
    async with serving(app, shop_port) as origin:
        yield origin


# --------------------------------------------------------------------------- the visit


async def visit(chromium: Browser, shop: str, run: BrowserRun) -> tuple[str, list[str], list[str]]:
    """A visitor uses the shop and breaks it twice: the session id, its console errors, failed responses."""
    context = await chromium.new_context(viewport={"width": 1000, "height": 640})
    errors: list[str] = []
    failed: list[str] = []
    try:
        page = await context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        await page.goto(f"{shop}/shop")
        await page.wait_for_function("window.AppGuard && AppGuard.getSessionId()")
        session_id: str = await page.evaluate("AppGuard.getSessionId()")
        await asyncio.sleep(1.2)  # a first segment leaves with the load's snapshot
        await page.locator("#add").click()
        await expect(page.locator("#status")).to_have_text("1 item in the cart")
        await page.locator("#holder").press_sequentially(TYPED, delay=30)
        await asyncio.sleep(0.6)
        await page.locator("#checkout").click()
        await expect(page.locator("#title")).to_have_text("Checkout")
        await expect(page).to_have_url(f"{shop}/shop/checkout")
        await asyncio.sleep(1.2)
        await page.locator("#order").click()
        await page.evaluate("AppGuard.flush()")
        await asyncio.sleep(1.2)
        await page.screenshot(path=str(run.folder / "visitor-first-page.png"))

        # The same page loaded again (same tab, same session), and the same bug.
        await page.reload()
        await expect(page.locator("#title")).to_have_text("Checkout")
        await expect(page.locator("#status")).to_have_text("1 item in the cart")
        assert await page.evaluate("AppGuard.getSessionId()") == session_id
        await asyncio.sleep(1.2)
        await page.locator("#order").click()
        await asyncio.sleep(0.3)
        await page.evaluate("AppGuard.flush()")
        await asyncio.sleep(1.5)
        await page.screenshot(path=str(run.folder / "visitor-second-page.png"))
    finally:
        await context.close()
    return session_id, errors, failed


async def test_a_visit_with_the_snippet_arrives_whole_and_replays_from_the_issue(
    stack: Stack, shop: str, chromium: Browser, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    browser_page.folder.mkdir(parents=True, exist_ok=True)
    session_id, visitor_errors, visitor_failed = await visit(chromium, shop, browser_page)
    # The visitor's console shows the two uncaught errors, and nothing from the snippet (a CORS
    # refusal or a failed request would be logged there too).
    assert len(visitor_errors) == 2 and all("reading 'percent'" in e for e in visitor_errors), visitor_errors
    assert visitor_failed == []

    # ---- the error: one issue, two events, JavaScript frames, tied to the session
    events = await until(
        lambda: rows(
            appguard_dsn,
            "SELECT e.event_id, e.issue_id, e.type, e.session_id, e.service_name, e.service_version, e.environment,"
            " e.frames, e.timestamp, i.event_count, i.title FROM appguard.error_events e"
            " JOIN appguard.issues i ON i.id = e.issue_id ORDER BY e.timestamp",
        ),
        lambda found: len(found) >= 2,
        what="two error events",
    )
    assert len(events) == 2, events
    first, second = events
    assert first["issue_id"] == second["issue_id"] and second["event_count"] == 2
    assert first["type"] == "TypeError"
    assert first["title"].startswith("TypeError: Cannot read properties of undefined (reading 'percent')")
    assert {e["session_id"] for e in events} == {session_id}
    assert (first["service_name"], first["service_version"], first["environment"]) == (
        "shop-web", "shop-web@4.2.0", "production"
    )  # fmt: skip
    for event in events:
        frames = [f for exc in event["frames"] for f in exc["stacktrace"]["frames"]]
        mine = [f for f in frames if f.get("abs_path", f.get("filename", "")).endswith("/static/shop.js")]
        # Oldest first, as the errors exporter stores them.
        assert [f.get("function") for f in mine][-3:] == ["placeOrder", "totalOf", "discountOf"], frames
        assert all(f.get("in_app") and f.get("lineno") and f.get("colno") for f in mine[-3:]), mine
    issue_id = first["issue_id"]
    assert len(await rows(appguard_dsn, "SELECT id FROM appguard.issues")) == 1

    # ---- the session row and its segments
    [row] = await until(
        lambda: rows(appguard_dsn, "SELECT * FROM appguard.sessions WHERE id = %s", session_id),
        lambda found: bool(found) and found[0]["error_count"] >= 2 and found[0]["page_count"] >= 2,
        what="the session with its two errors",
    )
    assert row["project_id"] == 1 and "Chrom" in row["browser"], row
    assert (row["service"], row["environment"], row["release"]) == ("shop-web", "production", "shop-web@4.2.0")
    assert row["error_count"] == 2
    # Load, then the push to checkout; the reload of /shop/checkout is not a new page.
    assert row["page_count"] == 2
    assert (row["first_url"], row["last_url"]) == (f"{shop}/shop", f"{shop}/shop/checkout")
    # The open page keeps sending segments: the session's count and its segments are read in
    # one statement, so that both see the same segments.
    segments = await rows(
        appguard_dsn,
        "SELECT g.sequence, g.first_timestamp, g.last_timestamp, g.error_ids, s.segment_count"
        " FROM appguard.session_segments g JOIN appguard.sessions s ON s.id = g.session_id"
        " WHERE g.session_id = %s ORDER BY g.sequence",
        session_id,
    )
    assert len(segments) >= 2 and {s["segment_count"] for s in segments} == {len(segments)}
    assert [s["sequence"] for s in segments] == list(range(len(segments)))
    assert all(a["first_timestamp"] <= b["first_timestamp"] for a, b in itertools.pairwise(segments))
    marked = {uuid.UUID(i) for s in segments for i in s["error_ids"]}
    assert marked == {e["event_id"] for e in events}

    # ---- through the API: the session, the recording, the issue
    async with registered(stack.api, name="Olga Owner") as user:
        detail = await user.get(f"/api/sessions/{session_id}")
        recording = await user.get(f"/api/sessions/{session_id}/recording")
        issue = await user.get(f"/api/issues/{issue_id}?project=1")
    assert [uuid.UUID(e["event_id"]) for e in detail["errors"]] == [e["event_id"] for e in events]
    assert {e["issue_id"] for e in detail["errors"]} == {issue_id}
    assert recording["segments"] == len(segments)
    recorded = recording["events"]
    assert sum(1 for e in recorded if e["type"] == FULL_SNAPSHOT) >= 2  # one per page load
    text = json.dumps(recorded)
    assert "Welcome to the test shop" in text and "1 item in the cart" in text and "Checkout" in text
    assert TYPED not in text and "Lovelace" not in text
    assert "*" * len(TYPED) in text  # the typing was recorded, masked
    shown = [f["function"] for exc in issue["latest_event"]["exceptions"] for f in exc["frames"] if f.get("in_app")]
    assert shown[-3:] == ["placeOrder", "totalOf", "discountOf"], issue["latest_event"]
    replay_link = issue["links"]["replay"]
    latest = str(second["event_id"])
    moment = int(second["timestamp"].timestamp() * 1000)
    assert replay_link == f"{stack.api}/sessions/{session_id}?t={moment}&event={latest}"

    # ---- the page views, in the logs pipeline
    views = await until(
        lambda: [r for r in log_records(stack.file) if attribute(r, "event.name") == "browser.page_view"],
        lambda found: len(found) >= 3,
        what="three page views in the logs file",
    )
    assert [attribute(v, "browser.navigation.type") for v in views] == ["load", "push", "load"]
    assert [attribute(v, "url.path") for v in views] == ["/shop", "/shop/checkout", "/shop/checkout"]
    assert {attribute(v, "session.id") for v in views} == {session_id}
    assert all(attribute(v, "browser.page.title") == "E2E test shop" for v in views)

    # ---- the Web Vitals, on the Prometheus exporter: TTFB and FCP once per page load
    def per_load(text: str, vital: str) -> list[float | None]:
        name = f"browser_web_vital_{vital}_milliseconds_count"
        return [sample(text, name, job="shop-web", navigation_type=kind) for kind in ("navigate", "reload")]

    metrics = await until(
        lambda: scrape(stack.ports.prometheus),
        lambda t: per_load(t, "ttfb") == [1, 1] and per_load(t, "fcp") == [1, 1],
        what="TTFB and FCP histograms of both page loads",
    )
    assert sample(metrics, "browser_web_vital_fcp_milliseconds_bucket", job="shop-web", le="+Inf") == 2
    assert (sample(metrics, "browser_web_vital_ttfb_milliseconds_sum", job="shop-web") or 0) > 0
    # Filed under the page each document was loaded at, not where a pushState took it since.
    ttfb = "browser_web_vital_ttfb_milliseconds_count"
    assert sample(metrics, ttfb, job="shop-web", navigation_type="navigate", url_path="/shop") == 1
    assert sample(metrics, ttfb, job="shop-web", navigation_type="reload", url_path="/shop/checkout") == 1

    # ---- the dashboard: sign in, the issue, its replay link
    page = browser_page.page
    await page.goto(f"{stack.api}/issues/{issue_id}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await sign_in(page)
    await expect(page).to_have_url(f"{stack.api}/issues/{issue_id}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("TypeError")
    await expect(page.locator("#issue-events")).to_have_text("2")
    await expect(page.locator("#stacktrace .frame.in-app .frame-function").first).to_have_text("discountOf")
    await browser_page.screenshot("issue")

    await page.locator("#link-replay").click()
    await expect(page).to_have_url(f"{stack.api}/sessions/{session_id}?t={moment}&event={latest}")
    root = page.locator("#replay")
    await expect(root).to_have_attribute("data-ready", "true")
    await expect(page.locator("#session-pages")).to_have_text("2")
    await expect(page.locator("#timeline-track .marker-error")).to_have_count(2)
    await expect(page.locator(f"#session-errors li[data-event-id='{latest}']")).to_have_attribute(
        "aria-current", "true"
    )
    shown_frame = replay_frame(page)
    # At the error: the reloaded checkout page, the cart as the visitor had filled it.
    await expect(shown_frame.locator("#title")).to_have_text("Checkout")
    await expect(shown_frame.locator("#status")).to_have_text("1 item in the cart")
    at_error = await replay_shot(browser_page, "replay-at-error")
    await browser_page.screenshot("replay-page-at-error")

    # The start: the first page view's marker shows the shop as it first was.
    await page.locator("#timeline-track .marker-page").first.click()
    await expect(shown_frame.locator("#title")).to_have_text("Welcome to the test shop")
    await expect(shown_frame.locator("#status")).to_have_text("Your cart is empty")
    at_start = await replay_shot(browser_page, "replay-at-start")
    assert at_start != at_error
    await browser_page.screenshot("replay-page-at-start")

    assert browser_page.errors == [] and browser_page.failed == [], (browser_page.errors, browser_page.failed)
