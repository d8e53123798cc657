"""The example apps under ``examples/``, run as their READMEs say, against the real CLI (the OTLP
receiver, the ``errors`` exporter and the ``api`` extension with its Sentry ingest): each one
fails as a user's app would, and the failure is found as an issue in PostgreSQL.

- ``examples/python``: the coffee shop on the standard library's WSGI server with the Sentry
  Python SDK; an order for a product out of stock becomes an issue with the app's own frames.
- ``examples/nextjs``: the Next.js shop, built for production (``next build``) and served by
  ``next start`` on loopback. A checkout that throws in a route handler reaches AppGuard through
  the OpenTelemetry Node SDK set up in ``instrumentation.ts``, its frames pointed at the app's
  TypeScript sources; a coupon that fails in the browser (Debian's Chromium) is caught by the
  page's React error boundary and sent with ``@sentry/browser`` to the envelope endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.e2e.stack import Stack, StartStack, project_key, rows, until
from tests.support.browser import BrowserRun
from tests.support.net import free_port, wait_for_port

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PYTHON_APP = EXAMPLES / "python"
NEXT_APP = EXAMPLES / "nextjs"


@pytest.fixture
def stack(start_stack: StartStack) -> Stack:
    return start_stack(
        batch=False,
        errors={"observers": [], "retry_on_failure": {"initial_interval": "100ms", "max_interval": "1s"}},
        api={"auth": {"registration": "invite"}},
        sentry=True,
        pipelines={"traces": ["errors"], "logs": ["errors"]},
    )


async def issue_with_events(dsn: str, exc_type: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The issue of ``exc_type`` and its events, once it has some."""
    issues = await rows(dsn, "SELECT * FROM appguard.issues WHERE type = %s", exc_type)
    if len(issues) != 1:
        return None
    events = await rows(
        dsn, 'SELECT * FROM appguard.error_events WHERE issue_id = %s ORDER BY "timestamp"', issues[0]["id"]
    )
    return (issues[0], events) if events else None


async def diagnosis(stack: Stack, dsn: str, log: Path) -> str:
    """What to look at when an issue did not arrive: the issues there are and both logs."""
    issues = await rows(dsn, "SELECT type, title, service_name FROM appguard.issues")
    app_log = await asyncio.to_thread(log.read_text, errors="replace")
    return f"issues: {issues}\n--- collector:\n{stack.output()}\n--- app:\n{app_log}"


async def issue_of(stack: Stack, dsn: str, exc_type: str, log: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The issue of ``exc_type`` and its events, once it has some; failing with what to look at."""
    found: tuple[dict[str, Any], list[dict[str, Any]]] = await until(
        lambda: issue_with_events(dsn, exc_type), what=lambda: diagnosis(stack, dsn, log)
    )
    return found


def in_app_frames(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The in-app frames of the event's last exception, oldest call first."""
    return [f for f in event["frames"][-1]["stacktrace"]["frames"] if f["in_app"]]


def request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET, or POST ``body`` as JSON; the status and body, error statuses included."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def app_process(
    args: list[str], cwd: Path, env: dict[str, str], log: Path, port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """Run an example app until the block ends; it must be listening on ``port`` within a minute."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            try:
                wait_for_port(port, timeout=60)
            except TimeoutError:
                raise AssertionError(
                    f"{args[0]} did not listen on {port}:\n{log.read_text(errors='replace')}"
                ) from None
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_python_example_reports_an_order_error_through_the_sentry_sdk(
    stack: Stack, appguard_dsn: str, tmp_path: Path
) -> None:
    dsn = (await project_key(appguard_dsn)).dsn(stack.api)
    port = free_port()
    env = {"SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "e2e", "SENTRY_RELEASE": "coffeeshop@1.4.0"}
    args = [sys.executable, "-m", "coffeeshop", "--port", str(port)]
    log = tmp_path / "coffeeshop.log"
    with app_process(args, PYTHON_APP, env, log, port) as app:
        base = f"http://127.0.0.1:{port}"
        assert request(f"{base}/")[0] == 200
        # Served: no issue. Out of stock: a 500, and the issue.
        assert request(f"{base}/orders", {"lines": [{"sku": "espresso-beans", "quantity": 2}]})[0] == 201
        order = {"lines": [{"sku": "espresso-beans", "quantity": 1}, {"sku": "pour-over-kettle", "quantity": 1}]}
        assert request(f"{base}/orders", order, {"X-User-Id": "alice"})[0] == 500
        issue, events = await issue_of(stack, appguard_dsn, "coffeeshop.orders.OutOfStock", log)
    assert app.returncode == 0, log.read_text(errors="replace")
    assert len(await rows(appguard_dsn, "SELECT id FROM appguard.issues")) == 1
    assert (issue["service_name"], issue["environment"], issue["level"]) == ("coffeeshop", "e2e", "error")
    assert issue["title"] == "coffeeshop.orders.OutOfStock: only 0 of pour-over-kettle left, 1 ordered"
    assert issue["culprit"] == "coffeeshop/orders.py in reserve"
    (event,) = events
    assert (event["service_version"], event["user_id"]) == ("coffeeshop@1.4.0", "alice")
    assert event["trace_id"]  # the request's transaction, which the SDK sent beside the error
    # The WSGI app called reserve(): the example's own files, as the SDK sent them.
    frames = in_app_frames(event)
    assert [(f["function"], f["filename"]) for f in frames] == [
        ("application", "coffeeshop/app.py"),
        ("reserve", "coffeeshop/orders.py"),
    ], frames
    assert frames[-1]["abs_path"] == str(PYTHON_APP / "coffeeshop" / "orders.py")
    assert "raise OutOfStock(" in frames[-1]["context_line"]


# Next.js asks nothing of the network with its telemetry off (and no next/font/google).
NEXT_ENV = {"NEXT_TELEMETRY_DISABLED": "1"}
NEXT_BIN = NEXT_APP / "node_modules" / ".bin" / "next"


def build_next_app() -> None:
    """``npm ci`` (unless ``node_modules`` was installed from the lock file as it is now), then
    ``next build``: the production build."""
    npm = shutil.which("npm")
    assert npm, "npm is needed to build the Next.js example"
    installed = NEXT_APP / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < (NEXT_APP / "package-lock.json").stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NEXT_APP, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, **NEXT_ENV}
    done = subprocess.run([str(NEXT_BIN), "build"], cwd=NEXT_APP, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.timeout(900)
async def test_nextjs_example_reports_a_server_error_by_otlp_and_a_browser_error_by_sentry(
    stack: Stack, appguard_dsn: str, tmp_path: Path, browser_page: BrowserRun
) -> None:
    await asyncio.to_thread(build_next_app)
    port = free_port()
    env = {
        **NEXT_ENV,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{stack.ports.http}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "APPGUARD_DSN": (await project_key(appguard_dsn)).dsn(stack.api),
        "APP_ENVIRONMENT": "e2e",
        "APP_VERSION": "2.0.0",
    }
    log = tmp_path / "next.log"
    args = [str(NEXT_BIN), "start", "-H", "127.0.0.1", "-p", str(port)]
    with app_process(args, NEXT_APP, env, log, port):
        base = f"http://127.0.0.1:{port}"

        # The server: a checkout of a product out of stock throws in the route handler.
        status, body = request(f"{base}/api/checkout", {"lines": [{"sku": "pour-over-kettle", "quantity": 1}]})
        assert status == 500, body
        issue, events = await issue_of(stack, appguard_dsn, "OutOfStockError", log)
        assert (issue["service_name"], issue["environment"]) == ("nextjs-shop", "e2e")
        assert issue["title"] == "OutOfStockError: only 0 of pour-over-kettle left, 1 ordered"
        (event,) = events  # Next.js records it once, on the route handler's span
        assert event["service_version"] == "2.0.0" and event["trace_id"] and event["span_id"]
        frames = in_app_frames(event)
        assert [f["function"] for f in frames] == ["POST", "reserve"], event["stacktrace"]
        assert frames[0]["filename"].endswith("app/api/checkout/route.ts"), frames
        assert frames[1]["filename"].endswith("lib/inventory.ts"), frames
        assert all(isinstance(f["lineno"], int) and isinstance(f["colno"], int) for f in frames)

        # The browser: an unknown coupon fails in the click handler; the error boundary shows it
        # and reports it through @sentry/browser.
        page = browser_page.page
        await page.goto(base)
        await expect(page.locator("body")).to_have_attribute("data-reporting", "on")
        await page.get_by_label("Coupon").fill("welcome10")
        await page.get_by_role("button", name="Apply coupon").click()
        await expect(page.locator("#total")).to_have_text("€22.05")
        await page.get_by_label("Coupon").fill("FREECOFFEE")
        await browser_page.screenshot("cart")
        await page.get_by_role("button", name="Apply coupon").click()
        alert = page.locator(".error-boundary[role=alert]")
        await expect(alert).to_contain_text('coupon "FREECOFFEE" does not exist')
        event_id = await page.locator("#event-id").text_content()
        await browser_page.screenshot("error-boundary")
        issue, events = await issue_of(stack, appguard_dsn, "CouponError", log)
        assert (issue["service_name"], issue["environment"]) == ("nextjs-shop", "e2e")
        assert issue["title"] == 'CouponError: coupon "FREECOFFEE" does not exist'
        (event,) = events
        assert event["event_id"].hex == event_id
        assert event["service_version"] == "nextjs-shop@2.0.0"
        # Minified frames of the page's chunks (AppGuard applies no source maps); the newest is
        # in the chunk that holds the coupon code.
        frames = event["frames"][-1]["stacktrace"]["frames"]
        assert frames and all(f["in_app"] and f["filename"].startswith(f"{base}/_next/static/chunks/") for f in frames)
        assert b"does not exist" in request(frames[-1]["filename"])[1]
    # The envelope was accepted (no failed response); the page logged nothing but the caught error.
    assert browser_page.failed == [], browser_page.failed
    assert [e.splitlines()[0] for e in browser_page.errors] == ['CouponError: coupon "FREECOFFEE" does not exist']
