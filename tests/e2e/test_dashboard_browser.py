"""The dashboard in a real browser (Debian's Chromium through Playwright), against the real CLI
running the OTLP receiver, the errors exporter and the ``api`` extension, fed by the real
OpenTelemetry SDK: register, sign out, sign in, watch the issue list fill, search, open an
issue, see its stack trace and chart, resolve it. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import asyncio
import re

import psycopg
import pytest
from playwright.async_api import expect

from tests.e2e.sdk import fail
from tests.e2e.stack import Stack, StartStack, fill_registration, sign_in
from tests.support.browser import BrowserRun

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(start_stack: StartStack) -> Stack:
    return start_stack(protocols=("grpc",), batch=False, pipelines={"traces": ["errors"]})


# The application's code: three bugs.
def apply_coupon(cart: dict[str, float], code: str) -> float:
    return cart["total"] / len(code.strip())


def load_profile(profiles: dict[str, dict[str, str]], user: str) -> str:
    return profiles[user]["email"]


def parse_quantity(text: str) -> int:
    return int(text)


def send_errors(grpc_port: int) -> None:
    """A shop reporting failures through the real SDK: several of each bug, two services."""
    fail("shop", "production", grpc_port, lambda: apply_coupon({"total": 10.0}, "   "), 3, version="2.4.0")
    fail("shop", "production", grpc_port, lambda: load_profile({}, "alice"), 2, version="2.4.0")
    fail("billing", "production", grpc_port, lambda: parse_quantity("three"), 1, version="2.4.0")


async def test_register_find_search_open_and_resolve_an_issue(
    stack: Stack, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    base = stack.api
    page = browser_page.page
    sections = page.get_by_role("navigation", name="Sections")

    # Register: the first account becomes the admin and lands on the overview.
    await fill_registration(page, base, "/", name="Olga Owner")
    await browser_page.screenshot("register")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.locator(".role")).to_have_text("admin")

    # Sign out, then sign in again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login"))
    await sign_in(page)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

    # The application reports its errors; the issue list fills.
    await asyncio.to_thread(send_errors, stack.ports.grpc)
    await sections.get_by_role("link", name="Issues").click()
    rows = page.locator("#issue-table tbody tr")
    for _ in range(50):
        if await rows.count() == 3:
            break
        await asyncio.sleep(0.2)
        await page.reload()
    await expect(rows).to_have_count(3)
    await expect(page.locator("#issue-table")).to_contain_text("ZeroDivisionError")
    await expect(page.locator("#issue-table")).to_contain_text("KeyError")
    await expect(page.locator("#issue-table")).to_contain_text("ValueError")
    await browser_page.screenshot("issue-list")

    # Search with the Sentry-like syntax.
    search = page.get_by_role("searchbox", name="Search issues")
    await search.fill("is:unresolved service:shop ZeroDivisionError")
    await search.press("Enter")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("division by zero")
    await browser_page.screenshot("search")

    # Open the issue: counts, the parsed stack with the in-app frame, the chart.
    await rows.first.locator("a.issue-title").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("ZeroDivisionError")
    await expect(page.locator("#issue-events")).to_have_text("3")
    await expect(page.locator("#issue-users")).to_have_text("3")
    in_app = page.locator("#stacktrace .frame.in-app .frame-function")
    await expect(in_app.first).to_have_text("apply_coupon")
    await expect(page.locator("#stacktrace .frame.in-app .context .current").first).to_contain_text(
        'return cart["total"] / len(code.strip())'
    )
    chart = page.locator("#issue-chart")
    await expect(chart).to_have_attribute("data-ready", "true")
    await expect(chart).to_have_attribute("data-total", "3")
    await expect(chart.locator("canvas")).to_have_count(1)
    await page.locator(".chart-periods button[data-period='24h']").click()
    await expect(chart).to_have_attribute("data-src", re.compile(r"statsPeriod=24h$"))
    await expect(chart).to_have_attribute("data-ready", "true")
    await expect(chart).to_have_attribute("data-total", "3")
    await browser_page.screenshot("issue-detail")
    issue_id = int(await page.locator("#issue").get_attribute("data-issue-id") or 0)

    # Resolve it: the page shows it, PostgreSQL has it, the default list no longer lists it.
    await page.locator("#issue-actions button[data-action=resolve]").click()
    await expect(page.locator("#issue-status")).to_contain_text("resolved")
    await expect(page.locator("#issue-actions button[data-action=reopen]")).to_be_visible()
    await browser_page.screenshot("resolved")
    with psycopg.connect(appguard_dsn) as conn:
        row = conn.execute("SELECT status FROM appguard.issues WHERE id = %s", [issue_id]).fetchone()
    assert row == ("resolved",)
    await sections.get_by_role("link", name="Issues").click()
    await expect(rows).to_have_count(2)

    # The overview counts the six events and draws the project's chart.
    await sections.get_by_role("link", name="Overview").click()
    await expect(page.locator("#stat-events")).to_have_text("6")
    await expect(page.locator("#error-rate")).to_have_attribute("data-total", "6")
    await expect(page.locator("#top-issues li")).to_have_count(3)
    await browser_page.screenshot("overview")

    assert browser_page.failed == [] and browser_page.errors == [], (browser_page.failed, browser_page.errors)
