"""The session replay viewer in a real browser (Debian's Chromium through Playwright), against the
``api`` extension on the real PostgreSQL and Redis.

A real rrweb recording is made first: a small shop page of the test's own, served on loopback,
runs ``@rrweb/record`` (from npm) while Chromium types, clicks, changes the page's content,
navigates within the page and reports an error; the events it emitted are sent to the ingest
endpoint in three segments, out of order, and the error is stored as an error event of the
session. Then a viewer of the dashboard finds the session in ``/sessions``, replays it (what the
replay's iframe shows changes with the moment), jumps with the timeline's markers, opens it at a
moment with ``?t=``, follows the issue page's "Session replay" link to the error's moment, and
goes from the replay back to the issue. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect

from api.extension import ApiExtension
from storage.cache import QueryCache, invalidate_after_write
from storage.errors_store import ErrorEvent, ErrorStore
from tests.e2e.stack import fill_registration, project_key, replay_frame, replay_shot
from tests.support.api import ApiClient, running_api
from tests.support.browser import BrowserRun
from tests.support.net import serving

pytestmark = pytest.mark.e2e

RECORDER = Path(__file__).resolve().parents[2] / "node_modules" / "@rrweb" / "record" / "dist" / "record.umd.min.cjs"

# The recorded application: a shop page whose content changes as the visitor uses it. The
# moments of its changes are kept (ms since the epoch) so the test knows what the replay must
# show when.
SHOP = """<!doctype html>
<html><head><meta charset="utf-8"><title>Test shop</title>
<style>
  body { font-family: sans-serif; margin: 2rem; background: #fffbe6; }
  h1 { color: #7a3e00; }
  #status { font-size: 1.4rem; padding: 0.6rem; background: #e6f4ff; }
  .failed { background: #ffd6d6 !important; }
</style></head>
<body>
<h1 id="title">Welcome to the test shop</h1>
<p id="status">Your cart is empty</p>
<label>Name <input id="name" autocomplete="off"></label>
<button id="add">Add to cart</button>
<button id="checkout">Go to checkout</button>
<script src="/record.js"></script>
<script>
  window.recorded = [];
  window.moments = {};
  rrwebRecord.record({ emit: (event) => window.recorded.push(event) });
  const custom = (tag, payload) => rrwebRecord.record.addCustomEvent(tag, payload);
  // Like an application's router or error handler, the page reports a little after it changed:
  // a marker's moment then shows the page as changed.
  const later = (report) => setTimeout(report, 100);
  document.getElementById("add").addEventListener("click", () => {
    const who = document.getElementById("name").value;
    document.getElementById("status").textContent = `1 item in the cart of ${who}`;
    window.moments.added = Date.now();
    custom("appguard.event", { name: "cart.add", properties: { sku: "A-42" } });
  });
  document.getElementById("checkout").addEventListener("click", () => {
    history.pushState({}, "", "/shop/checkout");
    document.getElementById("title").textContent = "Checkout";
    later(() => {
      window.moments.checkout = Date.now();
      custom("appguard.pageview", { url: location.href, title: "Checkout", navigation: "push" });
    });
  });
  window.fail = (eventId) => {
    const status = document.getElementById("status");
    status.textContent = "Payment failed: card declined";
    status.className = "failed";
    later(() => {
      window.moments.failed = Date.now();
      custom("appguard.error", { event_id: eventId, type: "TypeError", message: "card declined" });
    });
  };
</script>
</body></html>
"""


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, auth={"cookie_secure": False}) as ext:
        yield ext


@pytest.fixture
async def shop() -> AsyncIterator[str]:
    """The shop page and the recorder, on a loopback port of their own."""
    if not RECORDER.is_file():
        pytest.fail(f"{RECORDER} is missing: run npm ci at the repository's root")

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=SHOP, content_type="text/html")

    async def recorder(_: web.Request) -> web.Response:
        return web.Response(body=RECORDER.read_bytes(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/shop", page)
    app.router.add_get("/record.js", recorder)
    async with serving(app) as origin:
        yield origin


async def record_a_visit(
    browser: Browser, shop: str, error_id: uuid.UUID
) -> tuple[list[dict[str, Any]], dict[str, int], str]:
    """Use the shop for a few seconds while rrweb records: the events, the moments, the User-Agent."""
    context = await browser.new_context(viewport={"width": 1000, "height": 600})
    try:
        page = await context.new_page()
        await page.goto(f"{shop}/shop")
        await page.wait_for_function("window.recorded.length >= 2")
        await asyncio.sleep(0.8)
        await page.locator("#name").press_sequentially("Ada", delay=60)
        await page.locator("#add").click()
        await asyncio.sleep(1.2)
        await page.locator("#checkout").click()
        await asyncio.sleep(1.2)
        await page.evaluate("(id) => window.fail(id)", str(error_id))
        await asyncio.sleep(1.0)
        await page.mouse.move(200, 200)
        await asyncio.sleep(0.3)
        events: list[dict[str, Any]] = await page.evaluate("window.recorded")
        moments: dict[str, int] = await page.evaluate("window.moments")
        agent: str = await page.evaluate("navigator.userAgent")
    finally:
        await context.close()
    return events, moments, agent


async def send_segments(
    api: ApiExtension, key: str, session_id: str, events: list[dict[str, Any]], url: str, agent: str
) -> None:
    """The recording in three segments, sent last one first."""
    third = len(events) // 3
    parts = [events[:third], events[third : 2 * third], events[2 * third :]]
    http = ApiClient(f"http://127.0.0.1:{api.port}")
    try:
        for sequence in (2, 0, 1):
            reply = await http.call(
                "POST",
                f"/api/sessions/{session_id}/segments",
                json={
                    "sequence": sequence,
                    "url": url,
                    "user_agent": agent,
                    "service": "shop-web",
                    "environment": "production",
                    "user": {"id": "u-ada", "email": "ada@example.com", "username": "Ada"},
                    "events": parts[sequence],
                },
                headers={"X-AppGuard-Key": key},
            )
            assert reply.status == 200, reply.body
            assert reply.body == {"sequence": sequence, "duplicate": False}
    finally:
        await http.close()


async def store_error(dsn: str, redis_url: str, prefix: str, event_id: uuid.UUID, session_id: str, at_ms: int) -> None:
    """The error the shop reported, as the errors exporter would store it."""
    store = await ErrorStore.open(dsn, run_migrations=False)
    cache = QueryCache.from_url(redis_url, prefix=prefix)
    try:
        event = ErrorEvent(
            fingerprint="shop-card-declined",
            timestamp=datetime.fromtimestamp(at_ms / 1000, UTC),
            type="TypeError",
            message="card declined",
            event_id=event_id,
            session_id=session_id,
            service_name="shop-web",
            environment="production",
        )
        report = await store.write_events([event])
        await invalidate_after_write(cache, [event], report)
    finally:
        await cache.close()
        await store.close()


async def offset_of(page: Page) -> int:
    return int(await page.locator("#replay").get_attribute("data-current-offset") or -1)


async def test_a_recorded_session_is_listed_replayed_and_linked_with_its_error(
    api: ApiExtension,
    chromium: Browser,
    browser_page: BrowserRun,
    shop: str,
    appguard_dsn: str,
    redis_url: str,
    redis_prefix: str,
) -> None:
    session_id = uuid.uuid4().hex
    error_id = uuid.uuid4()
    events, moments, agent = await record_a_visit(chromium, shop, error_id)
    assert {"added", "checkout", "failed"} <= set(moments), moments
    key = (await project_key(appguard_dsn)).public_key
    await send_segments(api, key, session_id, events, f"{shop}/shop", agent)
    await store_error(appguard_dsn, redis_url, redis_prefix, error_id, session_id, moments["failed"])
    start = min(e["timestamp"] for e in events)

    base = f"http://127.0.0.1:{api.port}"
    page = browser_page.page
    await fill_registration(page, base, "/sessions")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()

    # The list: the session, with its user, browser, pages and error.
    row = page.locator(f"#session-table tr[data-session-id='{session_id}']")
    await expect(row).to_have_count(1)
    await expect(row.locator(".user")).to_have_text("Ada")
    await expect(row.locator(".browser")).to_contain_text("Chrom")
    await expect(row.locator(".pages")).to_have_text("2")
    await expect(row.locator(".duration")).to_have_text(f"{(max(e['timestamp'] for e in events) - start) // 1000}s")
    await expect(row.locator(".errors .badge")).to_have_text("1")
    await expect(row.locator(".url")).to_have_text(f"{shop}/shop")
    await browser_page.screenshot("session-list")
    # The error filter keeps it; its opposite does not.
    await page.locator("#session-filters select[name=has_errors]").select_option("false")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("#no-sessions")).to_be_visible()
    await page.locator("#session-filters select[name=has_errors]").select_option("true")
    await page.locator("#session-filters input[name=url]").fill("/shop/checkout")
    await page.get_by_role("button", name="Filter").click()
    await expect(row).to_have_count(1)

    # The replay: paused at the start, it shows the shop as it first was.
    await row.locator("a.session-link").click()
    await expect(page).to_have_url(f"{base}/sessions/{session_id}")
    root = page.locator("#replay")
    await expect(root).to_have_attribute("data-ready", "true")
    shown = replay_frame(page)
    await expect(shown.locator("#title")).to_have_text("Welcome to the test shop")
    await expect(shown.locator("#status")).to_have_text("Your cart is empty")
    assert await offset_of(page) == 0
    first = await replay_shot(browser_page, "replay-start")
    await browser_page.screenshot("replay-page")

    # The timeline: two page views, the custom event and the error, in their places; the lists.
    await expect(page.locator("#timeline-track .marker-page")).to_have_count(2)
    await expect(page.locator("#timeline-track .marker-custom")).to_have_count(1)
    await expect(page.locator("#timeline-track .marker-error")).to_have_count(1)
    await expect(page.locator("#session-events .event-page .url")).to_have_text(
        [f"{shop}/shop", f"{shop}/shop/checkout"]
    )
    await expect(page.locator("#session-events .event-custom .name")).to_have_text("cart.add")
    await expect(page.locator("#session-errors .issue-link")).to_have_text("TypeError: card declined")

    # Playing: time advances and the replay reaches the visitor's first change.
    await page.locator(".rr-controller__btns button").first.click()
    await expect(root).to_have_attribute("data-state", "playing")
    await expect(shown.locator("#status")).to_have_text("1 item in the cart of Ada", timeout=20_000)
    assert await offset_of(page) > 0
    played = await replay_shot(browser_page, "replay-playing")
    assert played != first

    # A marker seeks: the checkout page view shows the checkout heading (and pauses there).
    await page.locator(".rr-controller__btns button").first.click()
    await expect(root).to_have_attribute("data-state", "paused")
    checkout = page.locator("#timeline-track .marker-page").nth(1)
    await checkout.click()
    expected = moments["checkout"] - start
    assert abs(await offset_of(page) - expected) < 300, (await offset_of(page), expected)
    await expect(shown.locator("#title")).to_have_text("Checkout")
    await expect(shown.locator("#status")).to_have_text("1 item in the cart of Ada")
    later = await replay_shot(browser_page, "replay-checkout")
    assert later not in (first, played)

    # ?t= opens paused at that moment: after the cart change, before the checkout.
    moment = (moments["added"] + moments["checkout"]) // 2
    await page.goto(f"{base}/sessions/{session_id}?t={moment}")
    await expect(root).to_have_attribute("data-ready", "true")
    assert await offset_of(page) == moment - start
    await expect(shown.locator("#status")).to_have_text("1 item in the cart of Ada")
    await expect(shown.locator("#title")).to_have_text("Welcome to the test shop")
    await expect(root).not_to_have_attribute("data-state", "playing")
    await replay_shot(browser_page, "replay-at-t")

    # The issue page's "Session replay" link opens the replay at the error, highlighted.
    await page.locator("#session-errors .issue-link").click()
    await expect(page).to_have_url(re.compile(rf"/issues/\d+\?event={error_id}$"))
    await expect(page.get_by_role("heading", level=1)).to_contain_text("TypeError")
    await browser_page.screenshot("issue")
    await page.locator("#link-replay").click()
    await expect(page).to_have_url(f"{base}/sessions/{session_id}?t={moments['failed']}&event={error_id}")
    await expect(root).to_have_attribute("data-ready", "true")
    assert await offset_of(page) == moments["failed"] - start
    await expect(shown.locator("#status")).to_have_text("Payment failed: card declined")
    await expect(shown.locator("#title")).to_have_text("Checkout")
    await expect(page.locator("#timeline-track .marker-error")).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(page.locator(f"#session-errors li[data-event-id='{error_id}']")).to_have_attribute(
        "aria-current", "true"
    )
    failed = await replay_shot(browser_page, "replay-at-error")
    assert failed not in (first, later)
    await browser_page.screenshot("replay-at-error-page")

    # With the event alone, the replay opens at that error's marker.
    await page.goto(f"{base}/sessions/{session_id}?event={error_id}")
    await expect(root).to_have_attribute("data-ready", "true")
    assert abs(await offset_of(page) - (moments["failed"] - start)) <= 50
    await expect(shown.locator("#status")).to_have_text("Payment failed: card declined")
    await expect(page.locator(f"#session-errors li[data-event-id='{error_id}']")).to_have_attribute(
        "aria-current", "true"
    )

    # From the replay, the error marker leads to the issue: it selects the error, whose link opens it.
    await page.locator("#timeline-track .marker-page").first.click()
    await expect(page.locator("#session-errors li[aria-current]")).to_have_count(0)
    await page.locator("#timeline-track .marker-error").click()
    await expect(page.locator(f"#session-errors li[data-event-id='{error_id}']")).to_have_attribute(
        "aria-current", "true"
    )
    await page.locator("#session-errors li[aria-current] .issue-link").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("TypeError")

    assert browser_page.failed == [] and browser_page.errors == [], (browser_page.failed, browser_page.errors)
