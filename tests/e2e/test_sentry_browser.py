"""End to end: the real ``@sentry/browser`` SDK from npm, in Debian's Chromium, reporting a
minified shop's bug and its Session Replay to the real CLI.

The shop (``tests/sentry_browser/src``: a button whose handler fails in ``applyCoupon``, three
calls deep in another module) is bundled and minified by esbuild from npm, and served with its
page by a loopback server of its own; the DSN points at AppGuard's API on another port, so every
envelope is a cross-origin request. The build's map is uploaded with
``appguard-collector sourcemaps upload`` by a signed-in member. Then Chromium loads the page and
clicks the button, twice in two page loads:

- both errors land in ONE issue whose latest event shows the original functions, files and
  lines (those the sources say), with no ``symbolication_error``;
- the replay integration's segments become an AppGuard session (``GET /api/sessions/{id}``),
  whose recording has rrweb's full snapshot with the page's text;
- the error events carry the replay's id as their session, and the issue page's
  "Session replay" link opens that replay at the error's moment.

Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Request, expect

from tests.e2e.stack import Stack, StartStack, registered, sign_in, until
from tests.support.browser import BrowserRun
from tests.support.net import serving
from tests.support.process import REPO_ROOT

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parent.parent / "sentry_browser"
ESBUILD = APP / "node_modules" / ".bin" / "esbuild"
RELEASE = "sentry-shop@1.4.0"
# The handler's calls, oldest first, with the module each function is written in.
ORIGINAL = [
    ("onCheckoutClicked", "src/main.js"),
    ("checkout", "src/cart.js"),
    ("computeTotal", "src/pricing.js"),
    ("applyCoupon", "src/coupons.js"),
]
# The text of each frame's line, to find the line numbers in the sources themselves.
CALL_SITES = {
    "src/main.js": "const total = checkout(",
    "src/cart.js": "computeTotal(cart.items",
    "src/pricing.js": "return applyCoupon(",
    "src/coupons.js": "coupon.code.trim()",
}
MESSAGE = "Cannot read properties of undefined (reading 'code')"
PAGE_TEXT = "Welcome to the Sentry test shop"


# --------------------------------------------------------------------------- the shop


@dataclass(frozen=True)
class Build:
    """The minified bundle and its map, in ``<root>/static``; the sources copied to ``<root>/src``."""

    root: Path

    @property
    def static_dir(self) -> Path:
        return self.root / "static"

    @property
    def bundle(self) -> Path:
        return self.static_dir / "app.min.js"


def _install() -> None:
    """``npm ci`` in the fixture's folder unless the locked versions are installed."""
    lock = json.loads((APP / "package-lock.json").read_text())["packages"]
    for package in ("@sentry/browser", "esbuild"):
        installed = APP / "node_modules" / package / "package.json"
        if (
            not installed.is_file()
            or json.loads(installed.read_text())["version"] != lock[f"node_modules/{package}"]["version"]
        ):
            break
    else:
        if ESBUILD.exists():
            return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=APP, check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The shop bundled and minified as a release would be (``--bundle --minify --sourcemap``).

    The sources are copied beside the output so the map names them ``../src/<file>``, as a
    project's own build would; the SDK is found through ``NODE_PATH``.
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are needed to build the Sentry browser fixture (tests/sentry_browser)")
    _install()
    root = tmp_path_factory.mktemp("sentry-shop")
    shutil.copytree(APP / "src", root / "src")
    built = Build(root)
    subprocess.run(
        [
            str(ESBUILD), "src/main.js", "--bundle", "--minify", "--sourcemap", "--format=iife",
            f"--outfile={built.bundle}", "--log-level=warning",
        ],
        cwd=root, check=True, capture_output=True, timeout=120,
        env={**os.environ, "NODE_PATH": str(APP / "node_modules")},
    )  # fmt: skip
    return built


def _page(dsn: str) -> str:
    config = json.dumps({"dsn": dsn, "release": RELEASE, "environment": "e2e"})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Sentry test shop</title><link rel="icon" href="data:,"></head>
<body>
<h1>{PAGE_TEXT}</h1>
<p id="status">Loading</p>
<label>Coupon <input id="coupon" autocomplete="off"></label>
<button id="checkout">Go to checkout</button>
<script>window.SHOP_CONFIG = {config};</script>
<script src="/static/app.min.js"></script>
</body></html>
"""


@contextlib.asynccontextmanager
async def serving_shop(build: Build, dsn: str) -> AsyncIterator[str]:
    """The shop's page and bundle on a loopback port of their own; yields the page's URL."""

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=_page(dsn), content_type="text/html")

    async def bundle(_: web.Request) -> web.Response:
        return web.Response(body=build.bundle.read_bytes(), content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/shop", page)
    app.router.add_get("/static/app.min.js", bundle)
    async with serving(app) as origin:
        yield f"{origin}/shop"


def source_line(build: Build, filename: str) -> int:
    """The line (1-based) of a frame's call site in the shop's sources."""
    lines = (build.root / filename).read_text().splitlines()
    [line] = [n for n, text in enumerate(lines, start=1) if CALL_SITES[filename] in text]
    return line


# --------------------------------------------------------------------------- AppGuard


@pytest.fixture
def stack(start_stack: StartStack) -> Stack:
    return start_stack(sentry=True, pipelines={"logs": ["errors"]})


def cli_upload(api_port: int, token: str, build: Build) -> subprocess.CompletedProcess[str]:
    """``appguard-collector sourcemaps upload`` of the build's map, as a signed-in member."""
    return subprocess.run(
        [
            sys.executable, "-m", "collector.cli", "sourcemaps", "upload", "--url", f"http://127.0.0.1:{api_port}",
            "--project", "1", "--release", RELEASE, "--token", token, "--url-prefix", "~/static",
            str(build.static_dir),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def holding_events(count: int) -> Callable[[Any], bool]:
    """Whether an issue list's issues hold ``count`` events between them."""
    return lambda found: sum(i["event_count"] for i in found["issues"]) >= count


# --------------------------------------------------------------------------- the test


async def test_minified_error_and_replay_from_the_sentry_browser_sdk(
    stack: Stack, build: Build, browser_page: BrowserRun
) -> None:
    api_port = stack.ports.api
    base = stack.api
    page = browser_page.page
    # What the SDK sent, item types only: the story behind a failure.
    envelopes: list[list[str]] = []

    def note_envelope(request: Request) -> None:
        if "/envelope/" in request.url:
            body = (request.post_data_buffer or b"").decode("latin-1")
            envelopes.append(re.findall(r'^\{"type":"(\w+)"', body, flags=re.MULTILINE))

    page.on("request", note_envelope)

    async with registered(base, name="Olga Owner") as api:
        token = api.token
        [key] = (await api.get("/api/projects/1/keys"))["keys"]
        dsn = key["dsn"]
        assert dsn == f"http://{key['public_key']}@127.0.0.1:{api_port}/1"

        # The release's map (with its minified file), uploaded by the build pipeline.
        done = await asyncio.to_thread(cli_upload, api_port, token, build)
        assert done.returncode == 0, done.stderr
        assert "uploaded ~/static/app.min.js" in done.stdout, done.stdout

        # A visitor clicks the button: the bug, uncaught, in the minified bundle. Then again in
        # a second page load.
        async with serving_shop(build, dsn) as shop_url:
            for attempt in (1, 2):
                if attempt == 1:
                    await page.goto(shop_url)
                else:
                    await page.reload()
                await expect(page.locator("#status")).to_have_text("Your cart holds 1 item")
                await page.locator("#checkout").click()
                await expect(page.locator("#status")).to_have_text("Checking out your cart")
                issues = await until(
                    lambda: api.get("/api/issues?project=1"),
                    holding_events(attempt),
                    timeout=45,
                    what=f"{attempt} event(s) of the issue",
                )
                assert [i["event_count"] for i in issues["issues"]] == [attempt], issues
            await browser_page.screenshot("shop-after-the-second-click")
            [issue] = issues["issues"]
            assert (issue["type"], issue["title"]) == ("TypeError", f"TypeError: {MESSAGE}"), issue

            # The replay: its first segment leaves once the replay is 5 s long (the SDK's
            # minReplayDuration), the next after the visitor does something more.
            events = (await api.get(f"/api/issues/{issue['id']}/events?project=1"))["events"]
            assert len(events) == 2
            replay_ids = {e["session_id"] for e in events}
            assert len(replay_ids) == 1 and None not in replay_ids, (events, envelopes)
            [replay_id] = replay_ids
            assert re.fullmatch(r"[0-9a-f]{32}", replay_id), replay_id
            session = await until(
                lambda: api.found(f"/api/sessions/{replay_id}"),
                lambda found: found is not None,
                timeout=45,
                what=lambda: f"the replay's session; failed: {browser_page.failed}, envelopes: {envelopes}",
            )
            assert session is not None, (browser_page.failed, envelopes)
            await page.locator("#coupon").fill("SPRING10")
            session = await until(
                lambda: api.found(f"/api/sessions/{replay_id}"),
                lambda found: found["session"]["segment_count"] >= 2,
                timeout=45,
                what=lambda: f"a second replay segment; failed: {browser_page.failed}, envelopes: {envelopes}",
            )
        assert session["session"]["segment_count"] >= 2, (session, browser_page.failed, envelopes)
        assert {e["event_id"] for e in events} <= {e["event_id"] for e in session["errors"]}, session["errors"]

        # Only the bug itself failed on the shop's page: every envelope was taken (CORS
        # included), nothing else was logged as an error.
        assert browser_page.failed == [], browser_page.failed
        assert browser_page.errors and all(MESSAGE in e for e in browser_page.errors), browser_page.errors
        shop_errors = len(browser_page.errors)

        # ONE issue; its latest event shows the code that was written.
        detail = await api.get(f"/api/issues/{issue['id']}?project=1")
        latest = detail["latest_event"]
        assert latest["event"]["service_version"] == RELEASE
        assert latest["event"]["session_id"] == replay_id
        raw = latest["stacktrace"] or ""
        assert "app.min.js" in raw and "applyCoupon" not in raw, raw  # the SDK sent minified frames
        [exception] = latest["exceptions"]
        assert (exception["type"], exception["value"]) == ("TypeError", MESSAGE)
        frames = exception["frames"]
        in_app = [(f["function"], f["filename"], f["lineno"]) for f in frames if f["in_app"]]
        assert in_app == [(function, filename, source_line(build, filename)) for function, filename in ORIGINAL], frames
        for frame in (f for f in frames if f["in_app"]):
            assert CALL_SITES[frame["filename"]] in (frame["context_line"] or ""), frame
        assert all(f.get("symbolication_error") is None for f in frames), frames
        assert "appguard.symbolication_errors" not in latest["attributes"], latest["attributes"]
        # The SDK's own frames (its wrapper of the click listener) are mapped too, as a library's.
        assert all("node_modules/" in (f["filename"] or "") for f in frames if not f["in_app"]), frames
        assert detail["issue"]["culprit"] == "src/coupons.js in applyCoupon"

        # The replay: the session, its segments, and a recording that replays the page.
        summary = session["session"]
        assert summary["release"] == RELEASE and summary["environment"] == "e2e", summary
        assert summary["first_url"] == shop_url and "Chrome" in summary["browser"], summary
        recording = await api.get(f"/api/sessions/{replay_id}/recording")
        assert recording["segments"] == summary["segment_count"]
        snapshots = [e for e in recording["events"] if e.get("type") == 2]
        assert snapshots, [e.get("type") for e in recording["events"]]
        assert PAGE_TEXT in json.dumps(snapshots[0]), snapshots[0]
        assert "Checking out your cart" in json.dumps(recording["events"])

        # The issue page links to the replay at the error's moment; the link opens it.
        replay_link = detail["links"]["replay"]
        assert replay_link.startswith(f"{base}/sessions/{replay_id}?t="), replay_link
        await page.goto(f"{base}/login")
        await sign_in(page)
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        await page.goto(f"{base}/issues/{issue['id']}")
        await expect(page.locator("body")).to_contain_text("applyCoupon")
        await expect(page.locator("body")).to_contain_text("src/coupons.js")
        link = page.locator("#link-replay")
        await expect(link).to_have_attribute("href", re.compile(rf"/sessions/{replay_id}\?t=\d+"))
        await browser_page.screenshot("issue")
        await link.click()
        await expect(page).to_have_url(re.compile(rf"/sessions/{replay_id}\?t=\d+"))
        await browser_page.screenshot("replay")
        assert browser_page.errors[shop_errors:] == [] and browser_page.failed == [], browser_page.errors
