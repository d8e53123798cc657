"""The browser snippet (``sdk/browser``) in Debian's Chromium, against a server that speaks its
wire contract strictly (:mod:`tests.e2e.snippet_recorder`).

A shop page is served from one loopback port, with ``/sdk/appguard.js`` through the real
``api.sdk`` route; the recorder listens on another port, and two backends the page calls on
two more (one listed in ``propagateTo``, one not). The tests drive the page as a visitor would
(load, click, type, navigate, break things, leave) and check what reached the recorder: page
views, events, errors with stacks, Web Vitals, replay segments with masked inputs and the
snippet's custom timeline events, the session id in W3C baggage, the session carried over page
loads and rolled over after idling, and error-only replay sampling.

The snippet is built by ``npm ci`` at the repository's root; a test session without the build
runs it first.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from playwright.async_api import Page

import api.sdk
from api.routing import ROUTES, Principal, RouteTable
from tests.e2e.snippet_recorder import HeaderEcho, Recorder, Segment, serving
from tests.support.browser import BrowserRun
from tests.support.net import free_port
from tests.support.snippet_build import ensure_snippet_built

pytestmark = pytest.mark.e2e

PAGE = Path(__file__).resolve().parent / "pages" / "snippet.html"
KEY = "0123456789abcdef0123456789abcdef"
FULL_SNAPSHOT, META, CUSTOM, INCREMENTAL = 2, 4, 5, 3
INPUT_SOURCE = 5
SECRET = "Ada Lovelace 4242"


@pytest.fixture(scope="session")
def snippet_dist() -> Path:
    """``sdk/browser/dist``, built by ``npm ci`` at the root when it is missing."""
    return ensure_snippet_built()


class _NoCallers:
    """The shop's routes are all public: nobody signs in."""

    async def authenticate(self, request: web.Request) -> Principal | None:
        return None

    def check_csrf(self, request: web.Request, principal: Principal) -> None:
        return None


@dataclass
class Shop:
    """The page under test; ``config`` is what its inline script passes to AppGuard.init."""

    port: int = field(default_factory=free_port)
    config: dict[str, Any] = field(default_factory=dict)
    tick_ms: int = 0
    declarative: str = ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _page(self, request: web.Request) -> web.Response:
        html = PAGE.read_text().replace("/*CONFIG*/", json.dumps(self.config)).replace("/*TICK_MS*/", str(self.tick_ms))
        return web.Response(text=html, content_type="text/html")

    async def _declarative(self, request: web.Request) -> web.Response:
        html = f"<!doctype html><title>Declared</title>{self.declarative}<h1>Declared shop</h1>"
        return web.Response(text=html, content_type="text/html")

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app[ROUTES] = RouteTable()
        api.sdk.register(app)
        app[ROUTES].install(app, _NoCallers())
        app.router.add_get("/app", self._page)
        app.router.add_get("/app/{tail:.*}", self._page)
        app.router.add_get("/declarative", self._declarative)
        app.router.add_get("/favicon.ico", self._no_icon)
        return app


@dataclass
class Stack:
    shop: Shop
    recorder: Recorder
    allowed: HeaderEcho
    other: HeaderEcho

    def config(self, **extra: Any) -> dict[str, Any]:
        """A config for the shop's page: the recorder as endpoint, the allowed backend for baggage."""
        base: dict[str, Any] = {
            "endpoint": self.recorder.origin,
            "key": KEY,
            "service": "shop-web",
            "environment": "test",
            "release": "1.2.3",
            "propagateTo": [self.allowed.origin],
            "debug": True,
        }
        return base | extra


@pytest.fixture
async def stack(snippet_dist: Path) -> AsyncIterator[Stack]:
    s = Stack(Shop(), Recorder(KEY), HeaderEcho(), HeaderEcho())
    async with (
        serving(s.recorder.app(), s.recorder.port),
        serving(s.allowed.app(), s.allowed.port),
        serving(s.other.app(), s.other.port),
        serving(s.shop.app(), s.shop.port),
    ):
        yield s


async def until(check: Callable[[], Any], what: str, recorder: Recorder, timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = check()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}; the recorder refused: {recorder.problems}")
        await asyncio.sleep(0.1)


async def hide(page: Page) -> None:
    """Make the page hidden, as switching tabs does (headless Chromium never hides on its own)."""
    await page.evaluate(
        """() => {
            Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
            Object.defineProperty(document, 'hidden', {value: true, configurable: true});
            document.dispatchEvent(new Event('visibilitychange', {bubbles: true}));
        }"""
    )


async def show(page: Page) -> None:
    await page.evaluate(
        """() => {
            delete document.visibilityState;
            delete document.hidden;
            document.dispatchEvent(new Event('visibilitychange', {bubbles: true}));
        }"""
    )


async def stored_session(page: Page) -> dict[str, Any]:
    return dict(await page.evaluate("JSON.parse(sessionStorage.getItem('appguard.session'))"))


def all_events(segments: list[Segment]) -> list[dict[str, Any]]:
    return [event for segment in segments for event in segment.events]


def starts_with_snapshot(segment: Segment) -> bool:
    """Whether the segment has a full snapshot, right after its Meta event, before any change."""
    types = [e["type"] for e in segment.events]
    return (
        META in types
        and types[types.index(META) + 1] == FULL_SNAPSHOT
        and INCREMENTAL not in types[: types.index(META)]
    )


def customs(segments: list[Segment], tag: str) -> list[dict[str, Any]]:
    return [payload for segment in segments for payload in segment.custom(tag)]


async def test_a_visit_is_reported_recorded_and_carried_over_a_second_page_load(
    stack: Stack, browser_page: BrowserRun
) -> None:
    page, rec = browser_page.page, stack.recorder
    # A long flush interval: segments leave only when the page is hidden or unloaded, or grows.
    stack.shop.config = stack.config(
        user={"id": "u-42", "email": "ada@example.com", "username": "ada"}, replay={"flushSeconds": 600}
    )

    await page.goto(stack.shop.url("/app"))
    loads = await until(lambda: rec.of("pageview"), "the load page view", rec)
    load = loads[0]
    sid = load["session_id"]
    assert load["navigation"] == "load"
    assert load["title"] == "Snippet test shop"
    assert urlsplit(load["url"]).path == "/app"
    assert (load["service"], load["environment"], load["release"]) == ("shop-web", "test", "1.2.3")
    assert load["user"] == {"id": "u-42", "email": "ada@example.com", "username": "ada"}
    assert "previous_session_id" not in load
    assert await page.evaluate("AppGuard.getSessionId()") == sid
    assert (await stored_session(page))["id"] == sid

    # A visitor clicks, types a secret into a text field and a password, and goes to checkout
    # (a client-side navigation).
    await page.click("#buy")
    await page.locator("#holder").press_sequentially(SECRET)
    await page.locator("#password").press_sequentially("hunter2-password")
    await page.click("#checkout")
    pushes = await until(lambda: rec.of("pageview", lambda b: b["navigation"] == "push"), "the push page view", rec)
    assert pushes[0]["session_id"] == sid
    assert pushes[0]["url"] == stack.shop.url("/app/checkout?step=2")
    assert pushes[0]["referrer"] == stack.shop.url("/app")
    # Only the hash changes: no page view (checked below, once later requests have arrived).
    await page.evaluate("history.replaceState({}, '', location.pathname + location.search + '#pay')")

    await page.evaluate("AppGuard.track('checkout_started', {plan: 'pro', seats: 3, trial: false, extra: {a: 1}})")
    await page.click("#crash")
    await page.click("#reject")
    manual_id = await page.evaluate(
        "AppGuard.captureException(new Error('caught by hand'), {attributes: {order: 'A-1', total: 12.5}})"
    )

    # The page's own calls: baggage goes to the listed backend only, merged with the page's.
    await page.evaluate(
        f"fetch('{stack.allowed.origin}/orders', {{headers: {{baggage: 'tenant=acme,session.id=stale'}}}}).then(r => r.json())"
    )
    await page.evaluate(
        f"""new Promise((resolve) => {{
            const xhr = new XMLHttpRequest();
            xhr.open('GET', '{stack.allowed.origin}/xhr');
            xhr.onloadend = resolve;
            xhr.send();
        }})"""
    )
    await page.evaluate(f"fetch('{stack.other.origin}/plain').then(r => r.json())")

    assert stack.allowed.headers_of("/orders")[0]["baggage"] == f"tenant=acme,session.id={sid}"
    assert stack.allowed.headers_of("/xhr")[0]["baggage"] == f"session.id={sid}"
    assert "baggage" not in stack.other.headers_of("/plain")[0]

    event = (await until(lambda: rec.of("event"), "the custom event", rec))[0]
    assert event["name"] == "checkout_started"
    assert event["properties"] == {"plan": "pro", "seats": 3, "trial": False, "extra": '{"a":1}'}
    assert event["session_id"] == sid

    errors = await until(lambda: len(rec.of("error")) >= 3 and rec.of("error"), "three errors", rec)
    by_mechanism = {e["mechanism"]: e for e in errors}
    assert set(by_mechanism) == {"onerror", "onunhandledrejection", "manual"}
    uncaught, rejected, manual = (by_mechanism[m] for m in ("onerror", "onunhandledrejection", "manual"))
    assert (uncaught["type"], uncaught["message"], uncaught["handled"]) == ("TypeError", "checkout exploded", False)
    assert uncaught["stacktrace"].startswith("TypeError: checkout exploded\n    at ")
    assert (rejected["type"], rejected["message"], rejected["handled"]) == ("RangeError", "payment rejected", False)
    assert rejected["stacktrace"].startswith("RangeError: payment rejected\n    at ")
    assert (manual["type"], manual["message"], manual["handled"]) == ("Error", "caught by hand", True)
    assert manual["event_id"] == manual_id
    assert manual["attributes"] == {"order": "A-1", "total": 12.5}
    assert len({e["event_id"] for e in errors}) == 3
    assert all(e["url"] == stack.shop.url("/app/checkout?step=2#pay") for e in errors)

    # Hiding the page sends the Web Vitals batch and the replay so far.
    await hide(page)
    perf = (await until(lambda: rec.of("performance"), "the Web Vitals batch", rec))[0]
    names = {m["name"] for m in perf["metrics"]}
    assert {"TTFB", "FCP", "LCP", "CLS"} <= names, names
    ttfb = next(m for m in perf["metrics"] if m["name"] == "TTFB")
    assert ttfb["navigation_type"] == "navigate" and ttfb["value"] >= 0
    segments = await until(lambda: rec.segments_of(sid), "replay segments", rec)
    first_page = list(segments)
    assert [s.sequence for s in first_page] == list(range(len(first_page)))
    assert all(s.gzipped for s in first_page)
    assert starts_with_snapshot(first_page[0])
    assert first_page[0].body["user"] == {"id": "u-42", "email": "ada@example.com", "username": "ada"}

    # The timeline marks, matching what was sent as telemetry.
    assert [p["navigation"] for p in customs(first_page, "appguard.pageview")] == ["load", "push"]
    assert customs(first_page, "appguard.event") == [{"name": "checkout_started", "properties": event["properties"]}]
    marked = {p["event_id"]: p for p in customs(first_page, "appguard.error")}
    assert set(marked) == {e["event_id"] for e in errors}
    assert marked[uncaught["event_id"]] == {
        "event_id": uncaught["event_id"],
        "type": "TypeError",
        "message": "checkout exploded",
    }

    # Typing was recorded, masked; blocked content never left the page.
    recorded = json.dumps([s.body for s in first_page])
    inputs = [e for e in all_events(first_page) if e["type"] == INCREMENTAL and e["data"].get("source") == INPUT_SOURCE]
    assert inputs and all(set(e["data"]["text"]) <= {"*"} for e in inputs)
    for secret in (SECRET, "Lovelace", "hunter2", "blocked-text-never-recorded"):
        assert secret not in recorded

    # Back to the page, a last click, then a second page load in the same tab: the click leaves
    # with the unloading page (uncompressed, keepalive); the next page keeps the session and
    # numbers its segments on.
    await show(page)
    await page.click("#buy")
    await page.goto(stack.shop.url("/app/second"))
    second = (
        await until(lambda: rec.of("pageview", lambda b: b["url"].endswith("/app/second")), "the second load", rec)
    )[0]
    assert second["navigation"] == "load" and second["session_id"] == sid
    await hide(page)
    segments = await until(
        lambda: [s for s in rec.segments_of(sid) if s.body["url"].endswith("/app/second")],
        "the second page's segments",
        rec,
    )
    everything = rec.segments_of(sid)
    assert [s.sequence for s in everything] == list(range(len(everything)))
    unloaded = [s for s in everything if not s.gzipped]
    assert unloaded and unloaded[0].body["url"] == stack.shop.url("/app/checkout?step=2#pay")
    assert starts_with_snapshot(segments[0])
    assert [p["navigation"] for p in customs(everything, "appguard.pageview")] == ["load", "push", "load"]

    # Nothing else was sent: two page views on the first page (the hash change made none).
    assert [b["navigation"] for b in rec.of("pageview")] == ["load", "push", "load"]
    assert rec.problems == []
    assert browser_page.failed == []
    # The page's console shows the two errors it made on purpose, and nothing from the snippet.
    assert all(re.search("checkout exploded|payment rejected", line) for line in browser_page.errors), (
        browser_page.errors
    )


async def test_an_idle_session_rolls_over_to_a_new_id_that_names_the_old_one(
    stack: Stack, browser_page: BrowserRun
) -> None:
    page, rec = browser_page.page, stack.recorder
    # Three seconds of inactivity end a session.
    stack.shop.config = stack.config(sessionIdleMinutes=0.05, replay={"flushSeconds": 1})
    await page.goto(stack.shop.url("/app"))
    first = (await until(lambda: rec.of("pageview"), "the load page view", rec))[0]["session_id"]
    await until(lambda: rec.segments_of(first), "the first session's replay", rec)

    await asyncio.sleep(4)
    await page.evaluate("AppGuard.track('back_after_a_break')")
    event = (await until(lambda: rec.of("event"), "the event after the break", rec))[0]
    assert event["session_id"] != first
    assert event["previous_session_id"] == first
    stored = await stored_session(page)
    assert (stored["id"], stored["previous_id"]) == (event["session_id"], first)

    # The new session has its own replay, numbered from 0, starting with a full snapshot and
    # naming the session before it.
    new = await until(lambda: rec.segments_of(event["session_id"]), "the new session's replay", rec)
    assert new[0].sequence == 0
    assert starts_with_snapshot(new[0])
    assert new[0].body["previous_session_id"] == first
    assert rec.problems == []


async def test_error_only_sampling_sends_the_buffer_once_an_error_happens(
    stack: Stack, browser_page: BrowserRun
) -> None:
    page, rec = browser_page.page, stack.recorder
    stack.shop.config = stack.config(
        replay={"sampleRate": 0, "onErrorSampleRate": 1, "bufferSeconds": 1, "flushSeconds": 1}
    )
    stack.shop.tick_ms = 100
    await page.goto(stack.shop.url("/app"))
    sid = (await until(lambda: rec.of("pageview"), "the load page view", rec))[0]["session_id"]
    assert (await stored_session(page))["replay"] == "error"
    await page.evaluate("AppGuard.track('early_marker')")

    # Several flush intervals pass: a fully sampled session would have sent segments by now.
    await asyncio.sleep(4)
    assert rec.segments == []

    await page.evaluate("AppGuard.track('late_marker')")
    await page.click("#crash")
    segments = await until(
        lambda: customs(rec.segments_of(sid), "appguard.error") and rec.segments_of(sid), "the buffered replay", rec
    )
    buffered = segments[0]
    assert buffered.sequence == 0
    events = buffered.events
    assert events[0]["type"] == META and events[1]["type"] == FULL_SNAPSHOT
    # The buffer holds the last one or two snapshot periods: the late marker, not the early one.
    assert sum(1 for e in events if e["type"] == FULL_SNAPSHOT) <= 2
    names = [p["name"] for p in buffered.custom("appguard.event")]
    assert "late_marker" in names and "early_marker" not in names
    assert (await stored_session(page))["replay"] == "full"

    # From the error on, the rest of the session is recorded.
    await page.click("#buy")
    more = await until(lambda: len(rec.segments_of(sid)) >= 2 and rec.segments_of(sid), "segments after the error", rec)
    assert [s.sequence for s in more] == list(range(len(more)))
    assert rec.problems == []


async def test_a_script_tag_with_data_attributes_starts_the_snippet(stack: Stack, browser_page: BrowserRun) -> None:
    page, rec = browser_page.page, stack.recorder
    stack.shop.declarative = (
        f'<script src="/sdk/appguard.js" data-key="{KEY}" data-endpoint="{stack.recorder.origin}" '
        'data-service="declared-shop" data-environment="staging" data-replay="off"></script>'
    )
    await page.goto(stack.shop.url("/declarative"))
    view = (await until(lambda: rec.of("pageview"), "the load page view", rec))[0]
    assert (view["service"], view["environment"], view["title"]) == ("declared-shop", "staging", "Declared")
    assert "release" not in view and "user" not in view
    await page.evaluate("AppGuard.setUser({id: 7, email: 'grace@example.com'})")
    await page.evaluate("AppGuard.track('declared')")
    event = (await until(lambda: rec.of("event"), "the event", rec))[0]
    assert event["user"] == {"id": "7", "email": "grace@example.com"}
    await hide(page)
    await until(lambda: rec.of("performance"), "the Web Vitals batch", rec)
    assert rec.segments == []
    assert rec.problems == []


async def test_refusals_that_may_pass_later_are_retried_and_the_others_are_not(
    stack: Stack, browser_page: BrowserRun
) -> None:
    page, rec = browser_page.page, stack.recorder
    stack.shop.config = stack.config(replay=False)
    path = "/api/telemetry/event"
    rec.scripted[path] = [(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})]
    await page.goto(stack.shop.url("/app"))
    await page.evaluate("AppGuard.track('kept')")
    await until(lambda: rec.of("event"), "the retried event", rec)
    assert rec.attempts[path] == 3

    rec.scripted[path] = [(400, {}), (401, {}), (413, {})]
    for n, name in enumerate(("bad", "unknown_key", "too_big", "after"), start=4):
        await page.evaluate(f"AppGuard.track('{name}')")
        await until(partial(lambda want: rec.attempts[path] >= want, n), name, rec)
    await until(lambda: len(rec.of("event")) == 2, "the event after the refusals", rec)
    assert [e["name"] for e in rec.of("event")] == ["kept", "after"]
    # Give a wrong retry the time it would take, then count: one request each.
    await asyncio.sleep(2.5)
    assert rec.attempts[path] == 7
    assert rec.problems == []
