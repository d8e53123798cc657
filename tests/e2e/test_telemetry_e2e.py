"""End to end: a page in headless Chromium reports to the real CLI's browser telemetry
endpoints (``api`` extension -> the CLI's own OTLP receiver -> pipelines), as a web application
with the AppGuard snippet would.

- an error the page catches twice, sent with its real V8 ``error.stack``: one issue of two
  events in PostgreSQL and through the API, with the JavaScript frames parsed;
- a page view (on load) and a custom event (a click) reach the logs pipeline (a ``file``
  exporter here, Loki in production) as ``browser.page_view`` and ``browser.custom_event``;
- web vitals (sent gzip-compressed) appear on the ``prometheus`` exporter's scrape as
  ``browser_web_vital_*`` histograms whose counts add up across reports, and in a real
  Prometheus server scraping it.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.e2e.stack import (
    Stack,
    StartStack,
    attribute,
    log_records,
    project_key,
    registered,
    rows,
    sample,
    scrape,
    until,
)
from tests.support.browser import BrowserRun, browser_page, chromium
from tests.support.net import serving
from tests.support.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.e2e

__all__ = ["browser_page", "chromium", "prometheus_binary"]

SESSION = "e2e-session-0001"


@pytest.fixture
def stack(start_stack: StartStack, tmp_path: Path) -> Stack:
    return start_stack(
        errors={"observers": []},
        file=tmp_path / "logs.jsonl",
        prometheus=True,
        ingest={},
        pipelines={"logs": ["errors", "file"], "metrics": ["prometheus"]},
    )


# --------------------------------------------------------------------------- the web application

INDEX = """<!doctype html>
<title>Cart</title>
<link rel="icon" href="data:,">
<button id="pay">Pay</button> <button id="coupon">Coupon</button>
<script src="/assets/cart.js"></script>
"""

# The application, and in place of the AppGuard snippet a few lines that send what it sends.
CART_JS = """
const API = "%(api)s/api/telemetry/";
const KEY = "%(key)s";
window.answers = [];

function send(kind, body) {
  const common = {session_id: "%(session)s", service: "shop-web", release: "shop-web@3.1.0",
                  environment: "production", url: location.href, timestamp: new Date().toISOString(),
                  user: {id: "u7", email: "u7@example.com"}};
  return fetch(API + kind, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-AppGuard-Key": KEY},
    body: JSON.stringify(Object.assign(common, body)),
  }).then(async (reply) => window.answers.push({kind, status: reply.status, body: await reply.json()}));
}

function priceOf(item) {
  return item.price * item.quantity;
}

function total(cart) {
  return cart.items.map(priceOf).reduce((a, b) => a + b, 0);
}

function checkout() {
  try {
    return total({items: [{price: 2, quantity: 1}, undefined]});
  } catch (error) {
    send("error", {type: error.name, message: error.message, stacktrace: error.stack,
                   mechanism: "manual", handled: true});
  }
}

document.getElementById("pay").addEventListener("click", () => checkout());
document.getElementById("coupon").addEventListener("click",
  () => send("event", {name: "coupon_applied", properties: {code: "SPRING", discount: 12.5}}));
send("pageview", {title: document.title, navigation: "load", referrer: document.referrer});
"""


@pytest.fixture
async def shop(stack: Stack, appguard_dsn: str) -> AsyncIterator[str]:
    """The web application's origin, served from this process."""
    key = await project_key(appguard_dsn)
    script = CART_JS % {"api": stack.api, "key": key.public_key, "session": SESSION}

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html")

    async def cart_js(_: web.Request) -> web.Response:
        return web.Response(text=script, content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/cart", index)
    app.router.add_get("/assets/cart.js", cart_js)
    async with serving(app) as origin:
        yield origin


# --------------------------------------------------------------------------- checks


EVENTS = (
    "SELECT e.event_id, e.issue_id, e.project_id, e.type, e.session_id, e.user_id, e.service_name, "
    "e.service_version, e.environment, e.frames, e.attributes, i.title, i.event_count "
    "FROM appguard.error_events e JOIN appguard.issues i ON i.id = e.issue_id ORDER BY e.received_at, e.id"
)


async def _answers(run: BrowserRun, count: int) -> list[dict[str, Any]]:
    await run.page.wait_for_function(f"window.answers.length >= {count}")
    answers: list[dict[str, Any]] = await run.page.evaluate("window.answers")
    return answers


async def test_browser_errors_become_one_issue_and_page_views_events_reach_the_logs(
    stack: Stack, shop: str, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    page = browser_page.page
    await page.goto(f"{shop}/cart?coupon=SPRING")
    [pageview] = await _answers(browser_page, 1)
    assert (pageview["kind"], pageview["status"], pageview["body"]) == ("pageview", 200, {"accepted": 1})

    # The same bug twice: one issue, two events.
    await page.click("#pay")
    await _answers(browser_page, 2)
    await page.click("#pay")
    await page.click("#coupon")
    answers = await _answers(browser_page, 4)
    errors = [a for a in answers if a["kind"] == "error"]
    assert [a["status"] for a in answers] == [200, 200, 200, 200], answers
    assert len(errors) == 2 and errors[0]["body"]["event_id"] != errors[1]["body"]["event_id"]
    assert browser_page.errors == []

    events = await until(lambda: rows(appguard_dsn, EVENTS), lambda found: len(found) >= 2, what="two error events")
    assert len(events) == 2
    assert {e["event_id"].hex for e in events} == {a["body"]["event_id"] for a in errors}
    first, second = events
    assert first["issue_id"] == second["issue_id"] and second["event_count"] == 2
    assert first["type"] == "TypeError"
    assert first["title"].startswith("TypeError: Cannot read properties of undefined")
    assert (first["project_id"], first["session_id"], first["user_id"]) == (1, SESSION, "u7")
    assert (first["service_name"], first["service_version"], first["environment"]) == (
        "shop-web", "shop-web@3.1.0", "production"
    )  # fmt: skip
    assert first["attributes"]["url.path"] == "/cart" and first["attributes"]["handled"] == "yes"
    frames = [f for exc in first["frames"] for f in exc["stacktrace"]["frames"]]
    functions = [
        f.get("function") for f in frames if f.get("filename", f.get("abs_path", "")).endswith("/assets/cart.js")
    ]
    # Oldest first, as the errors exporter stores them; V8's 'Array.map' frame sits between.
    assert functions[-3:] == ["checkout", "total", "priceOf"], frames
    assert all(f.get("lineno") for f in frames if f.get("function") in ("checkout", "total", "priceOf"))

    # Through the API, as the dashboard shows it.
    async with registered(stack.api, name="Owner") as user:
        issues = (await user.get("/api/issues?project=1"))["issues"]
        assert [(i["type"], i["event_count"]) for i in issues] == [("TypeError", 2)]
        latest = (await user.get(f"/api/issues/{issues[0]['id']}?project=1"))["latest_event"]
        shown = [f["function"] for exc in latest["exceptions"] for f in exc["frames"]]
        assert [f for f in shown if f in ("checkout", "total", "priceOf")] == ["checkout", "total", "priceOf"]

    # The page view and the custom event went down the logs pipeline.
    def named(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: r for r in records if (name := attribute(r, "event.name"))}

    found = await until(
        lambda: log_records(stack.file),
        lambda records: {"browser.page_view", "browser.custom_event"} <= set(named(records)),
        what="the page view and the custom event in the logs file",
    )
    by_name = named(found)
    view = by_name["browser.page_view"]
    assert attribute(view, "url.path") == "/cart" and attribute(view, "browser.page.title") == "Cart"
    assert attribute(view, "session.id") == SESSION and "HeadlessChrome" in attribute(view, "user_agent.original")
    custom = by_name["browser.custom_event"]
    assert attribute(custom, "appguard.event.name") == "coupon_applied"
    assert attribute(custom, "appguard.event.property.code") == "SPRING"
    assert len(found) == 4  # the two errors, the page view, the event


async def test_web_vitals_reach_prometheus(
    stack: Stack, appguard_dsn: str, prometheus_binary: str, tmp_path: Path
) -> None:
    key = await project_key(appguard_dsn)
    prom_port = stack.ports.prometheus

    def report(lcp: float) -> bytes:
        body = {
            "session_id": SESSION,
            "service": "shop-web",
            "environment": "production",
            "url": "https://shop.example/cart?coupon=SPRING",
            "metrics": [
                {"name": "LCP", "value": lcp, "rating": "good", "navigation_type": "navigate"},
                {"name": "CLS", "value": 0.02, "rating": "good", "navigation_type": "navigate"},
            ],
        }
        return gzip.compress(orjson.dumps(body))

    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "X-AppGuard-Key": key.public_key}
    url = f"{stack.api}/api/telemetry/performance"
    async with aiohttp.ClientSession() as http:
        for lcp in (1200.0, 2300.0):
            async with http.post(url, data=report(lcp), headers=headers) as reply:
                assert reply.status == 200 and await reply.json() == {"accepted": 2}

    labels = {"job": "shop-web", "url_path": "/cart", "rating": "good", "navigation_type": "navigate"}
    text = await until(
        lambda: scrape(prom_port),
        lambda t: sample(t, "browser_web_vital_lcp_milliseconds_count", **labels) == 2,
        what="both LCP reports on the exporter",
    )
    assert sample(text, "browser_web_vital_lcp_milliseconds_count", **labels) == 2, text
    assert sample(text, "browser_web_vital_lcp_milliseconds_sum", **labels) == 3500
    assert sample(text, "browser_web_vital_lcp_milliseconds_bucket", le="1000.0", **labels) == 0
    assert sample(text, "browser_web_vital_lcp_milliseconds_bucket", le="1500.0", **labels) == 1
    assert sample(text, "browser_web_vital_lcp_milliseconds_bucket", le="2500.0", **labels) == 2
    assert sample(text, "browser_web_vital_cls_bucket", le="0.025", **labels) == 2

    # A real Prometheus server scrapes the exporter.
    with PrometheusServer(prometheus_binary, tmp_path, targets=[f"127.0.0.1:{prom_port}"]) as prom:
        row = await asyncio.to_thread(
            prom.wait_for_value, 'browser_web_vital_lcp_milliseconds_count{job="shop-web",url_path="/cart"}', 2
        )
        assert row["metric"]["rating"] == "good"
        rows = await asyncio.to_thread(
            prom.query,
            'histogram_quantile(0.5, sum by (le) (browser_web_vital_lcp_milliseconds_bucket{job="shop-web"}))',
        )
        assert rows and 1000 < rows[0]["value"] <= 2500
