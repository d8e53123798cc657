"""The alerting pages in a real browser (Debian's Chromium through Playwright), against the
``api`` extension on the real PostgreSQL and Redis, with a webhook receiver on loopback
standing in for the team's endpoint: register, add a webhook channel, create a threshold rule
through the form (a bad window first, shown at its field), switch it off and on, send a test
notification the receiver gets, open the rule and its history, edit it, keep the channel's
secret through an edit, delete both; then retry and delete dead letters, and look at it all as a
viewer, without controls. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from aiohttp import web
from playwright.async_api import Dialog, expect

from alerting.model import Alert, AlertState, Notification, Severity
from alerting.queue import NotificationQueue
from alerting.state import AlertStateStore, Transition
from api.extension import ApiExtension
from tests.e2e.stack import EMAIL, PASSWORD, fill_registration, sign_in
from tests.support.api import client
from tests.support.browser import BrowserRun
from tests.support.net import serving

pytestmark = pytest.mark.e2e

SECRET = "signing-secret-0123456789"


class Receiver:
    """A webhook endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.headers.append(dict(request.headers))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.hook)
    async with serving(app) as origin:
        found.url = f"{origin}/hook"
        yield found


def rule_enabled(dsn: str, name: str) -> bool | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT enabled FROM appguard.alert_rules WHERE name = %s", [name]).fetchone()
    return None if row is None else bool(row[0])


async def test_create_a_channel_and_a_rule_toggle_test_and_open_it(
    api: ApiExtension, receiver: Receiver, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    base = f"http://127.0.0.1:{api.port}"
    page = browser_page.page

    # Register (the first account is the admin) and land on the alerts page, empty.
    await fill_registration(page, base, "/alerts")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Alerts", level=1)).to_be_visible()
    await expect(page.get_by_role("navigation", name="Sections").get_by_role("link", name="Alerts")).to_have_attribute(
        "aria-current", "page"
    )
    await expect(page.locator("#no-rules")).to_be_visible()
    await expect(page.locator("#no-dead-letters")).to_be_visible()
    await browser_page.screenshot("empty")

    # A webhook channel pointing at the receiver.
    await page.locator("#new-channel").click()
    form = page.locator("#channel-form")
    await form.locator("input[name=name]").fill("ops-hook")
    await form.locator("select[name=type]").select_option("webhook")
    await expect(form.locator("fieldset[data-type=email]")).to_be_hidden()
    webhook = form.locator("fieldset[data-type=webhook]")
    await webhook.locator("input[name=url]").fill(receiver.url)
    await webhook.locator("input[name=secret]").fill(SECRET)
    await webhook.locator("textarea[name=headers]").fill("X-Team: shop")
    await browser_page.screenshot("channel-form")
    await form.get_by_role("button", name="Create channel").click()
    await expect(page).to_have_url(f"{base}/alerts")
    channel_row = page.locator("#channel-table tbody tr", has_text="ops-hook")
    await expect(channel_row).to_contain_text(receiver.url)

    # A threshold rule through the form: a window the API refuses first, shown at its field.
    await page.locator("#new-rule").click()
    form = page.locator("#rule-form")
    await form.locator("input[name=name]").fill("Checkout errors")
    await form.locator("select[name=kind]").select_option("threshold")
    threshold = form.locator("fieldset[data-kind=threshold]")
    await expect(threshold).to_be_visible()
    await expect(form.locator("fieldset[data-kind=issue]")).to_be_hidden()
    await expect(form.locator("fieldset[data-kind=metric]")).to_be_hidden()
    await threshold.locator("input[name=window]").fill("-5m")
    await threshold.locator("input[name=warning]").fill("10")
    await threshold.locator("input[name=critical]").fill("50")
    await threshold.locator("input[name=per][value=environment]").uncheck()
    await form.locator("input[name='filters.service']").fill("checkout, cart")
    await form.get_by_role("checkbox", name="ops-hook").check()
    await form.get_by_role("button", name="Create rule").click()
    window_error = threshold.locator(".field-error[data-field=window]")
    await expect(window_error).to_contain_text("is not a duration")
    await expect(threshold.locator("input[name=window]")).to_have_attribute("aria-invalid", "true")
    await expect(form.locator(".form-error")).to_be_hidden()
    await browser_page.screenshot("rule-form-error")
    await threshold.locator("input[name=window]").fill("0s")
    await form.get_by_role("button", name="Create rule").click()
    await expect(window_error).to_have_text("must be longer than 0s")
    await threshold.locator("input[name=window]").fill("5m")
    await form.get_by_role("button", name="Create rule").click()

    # It is listed, enabled, with its condition and channel.
    await expect(page).to_have_url(f"{base}/alerts")
    row = page.locator("#rule-table tbody tr", has_text="Checkout errors")
    await expect(row).to_contain_text("error count over 5m ≥ 10 (warning), 50 (critical) per service")
    await expect(row).to_contain_text("service: checkout, cart")
    await expect(row).to_contain_text("ops-hook")
    switch = row.get_by_role("switch")
    await expect(switch).to_be_checked()
    assert rule_enabled(appguard_dsn, "Checkout errors") is True
    await browser_page.screenshot("rule-listed")

    # Off, and it stays off; on again.
    await switch.uncheck()
    await expect(row).to_have_attribute("data-enabled", "false")
    await expect(row.locator(".row-status")).to_have_text("disabled")
    assert rule_enabled(appguard_dsn, "Checkout errors") is False
    await page.reload()
    await expect(switch).not_to_be_checked()
    await browser_page.screenshot("rule-disabled")
    await switch.check()
    await expect(row).to_have_attribute("data-enabled", "true")
    assert rule_enabled(appguard_dsn, "Checkout errors") is True

    # A test send: the receiver gets it, the page says what the channel answered.
    await row.get_by_role("button", name="Test").click()
    result = row.locator(".test-results li")
    await expect(result).to_have_count(1)
    await expect(result).to_have_text("ops-hook ok")
    await expect(result).to_have_class("ok")
    assert len(receiver.received) == 1
    sent = receiver.received[0]
    assert sent["channel"] == "ops-hook" and sent["status"] == "firing"
    assert sent["alerts"][0]["rule"]["name"] == "Checkout errors"
    assert sent["alerts"][0]["labels"]["test"] == "true"
    assert receiver.headers[0]["X-Team"] == "shop" and receiver.headers[0]["X-AppGuard-Signature"].startswith("sha256=")
    await browser_page.screenshot("rule-tested")

    # The channel's own test send.
    await channel_row.get_by_role("button", name="Test").click()
    await expect(channel_row.locator(".test-results li")).to_have_text("ops-hook ok")
    assert len(receiver.received) == 2

    # Open the rule: its values in the form, and its history (empty so far).
    await row.locator("a.rule-name").click()
    await expect(page.get_by_role("heading", name="Checkout errors", level=1)).to_be_visible()
    form = page.locator("#rule-form")
    await expect(form.locator("select[name=kind]")).to_have_value("threshold")
    threshold = form.locator("fieldset[data-kind=threshold]")
    await expect(threshold.locator("input[name=window]")).to_have_value("5m")
    await expect(threshold.locator("input[name=warning]")).to_have_value("10")
    await expect(form.get_by_role("checkbox", name="ops-hook")).to_be_checked()
    await expect(page.locator("#history-status")).to_have_text("No state changes yet.")
    await expect(page.locator("#history-table")).to_be_hidden()
    await browser_page.screenshot("rule-open")

    # Once the rule has fired, its history lists the change.
    rule_id = int(await form.get_attribute("data-rule-id") or 0)
    assert api.services is not None
    await AlertStateStore(api.services.pool).save(
        [],
        [
            Transition(
                rule_id=rule_id, fingerprint="fp-checkout", at=datetime.now(UTC), from_state=AlertState.PENDING,
                to_state=AlertState.FIRING, severity=Severity.WARNING, value=12.0, labels={"service": "checkout"},
            )
        ],
    )  # fmt: skip
    await page.reload()
    history = page.locator("#history-table tbody tr")
    await expect(history).to_have_count(1)
    await expect(history.first).to_contain_text("pending → firing")
    await expect(history.first).to_contain_text("service=checkout")
    await browser_page.screenshot("rule-history")

    # Edit it: a critical level below warning is refused at its field; a good change is saved.
    await threshold.locator("input[name=critical]").fill("5")
    await form.get_by_role("button", name="Save").click()
    await expect(threshold.locator(".field-error[data-field=critical]")).to_have_text("must not be below warning")
    await threshold.locator("input[name=critical]").fill("80")
    await form.get_by_role("button", name="Save").click()
    await expect(page).to_have_url(f"{base}/alerts")
    await expect(row).to_contain_text("80 (critical)")

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    # The channel's form shows its secret as ********; saving it unchanged keeps the secret.
    await channel_row.locator("a.channel-name").click()
    form = page.locator("#channel-form")
    webhook = form.locator("fieldset[data-type=webhook]")
    await expect(form.locator("select[name=type]")).to_have_value("webhook")
    await expect(webhook.locator("textarea[name=headers]")).to_have_value("X-Team: shop")
    await expect(webhook.locator("input[name=secret]")).to_have_value("********")
    assert SECRET not in await page.content()
    await webhook.locator("textarea[name=headers]").fill("X-Team: shop\nX-Env: prod")
    await form.get_by_role("button", name="Save").click()
    await expect(page).to_have_url(f"{base}/alerts")
    with psycopg.connect(appguard_dsn) as conn:
        stored = conn.execute("SELECT spec FROM appguard.alert_channels WHERE name = 'ops-hook'").fetchone()
    assert stored is not None and stored[0]["secret"] == SECRET
    assert stored[0]["headers"] == {"X-Team": "shop", "X-Env": "prod"}

    # The channel cannot go while the rule sends to it; the page says why.
    await channel_row.locator("a.channel-name").click()
    page.once("dialog", accept)
    await page.get_by_role("button", name="Delete channel").click()
    await expect(form.locator(".form-error")).to_contain_text("send to 'ops-hook'")
    await browser_page.screenshot("channel-in-use")

    # Delete the rule, then the channel, after confirming.
    await page.get_by_role("link", name="Alerts").first.click()
    await row.locator("a.rule-name").click()
    page.once("dialog", accept)
    await page.get_by_role("button", name="Delete rule").click()
    await expect(page).to_have_url(f"{base}/alerts")
    await expect(page.locator("#no-rules")).to_be_visible()
    assert rule_enabled(appguard_dsn, "Checkout errors") is None
    await channel_row.locator("a.channel-name").click()
    page.once("dialog", accept)
    await page.get_by_role("button", name="Delete channel").click()
    await expect(page).to_have_url(f"{base}/alerts")
    await expect(page.locator("#no-channels")).to_be_visible()
    await browser_page.screenshot("deleted")

    # The API's refusals (the bad windows, the bad level, the channel in use) were the only
    # failed requests, and the console's only errors are the browser's notes of them.
    refused = [f"400 {base}/api/alert-rules"] * 2 + [f"400 {base}/api/alert-rules/{rule_id}"]
    assert browser_page.failed[:3] == refused, browser_page.failed
    assert len(browser_page.failed) == 4 and re.fullmatch(rf"409 {base}/api/alert-channels/\d+", browser_page.failed[3])
    note = "Failed to load resource: the server responded with a status of "
    assert browser_page.errors == [note + "400 (Bad Request)"] * 3 + [note + "409 (Conflict)"], browser_page.errors


async def dead_letters(redis_url: str, prefix: str, reasons: list[str]) -> None:
    """Notifications a worker gave up on, one per reason, in the API's queue."""
    queue = NotificationQueue.from_url(redis_url, prefix=prefix + "alerting:")
    try:
        await queue.ensure_group()
        now = datetime.now(UTC)
        for n, reason in enumerate(reasons):
            alert = Alert(
                rule_id=1, rule_name="Checkout errors", kind="threshold", fingerprint=f"f{n}", status="firing",
                severity=Severity.WARNING, labels={}, annotations={}, starts_at=now,
            )  # fmt: skip
            notification = Notification(
                id=f"n{n}", channel="ops-hook", group_key="g", group_labels={}, alerts=(alert,), created_at=now
            )
            await queue.enqueue(notification)
            [entry] = await queue.read("gone-worker", count=1, block=None)
            await queue.dead_letter(entry, reason=reason, attempts=5, notification=notification)
    finally:
        await queue.close()


async def test_dead_letters_are_retried_and_deleted_and_viewers_only_look(
    api: ApiExtension, receiver: Receiver, browser_page: BrowserRun, redis_url: str, redis_prefix: str
) -> None:
    base = f"http://127.0.0.1:{api.port}"
    async with client(api) as http:
        admin = (await http.register(EMAIL, PASSWORD)).body["access_token"]
        viewer = (await http.register("viewer@example.com", PASSWORD)).body["user"]["id"]
        assert (await http.call("PATCH", f"/api/users/{viewer}", json={"role": "viewer"}, token=admin)).status == 200
        channel = {"name": "ops-hook", "spec": {"type": "webhook", "url": receiver.url}}
        assert (await http.call("POST", "/api/alert-channels", json=channel, token=admin)).status == 201
        rule = {"kind": "issue", "name": "New issues", "when": "new_issue", "channels": ["ops-hook"]}
        assert (await http.call("POST", "/api/alert-rules", json=rule, token=admin)).status == 201
    await dead_letters(redis_url, redis_prefix, ["webhook answered 410 Gone", "webhook answered 404 Not Found"])
    page = browser_page.page

    async def sign_in_to_alerts(email: str) -> None:
        await page.goto(f"{base}/login?next=/alerts")
        await sign_in(page, email)
        await expect(page.get_by_role("heading", name="Alerts", level=1)).to_be_visible()

    # The admin retries one dead letter and deletes the other; the queue's sizes follow.
    await sign_in_to_alerts(EMAIL)
    letters = page.locator("#dead-letters tbody tr")
    await expect(letters).to_have_count(2)
    await expect(page.locator("#stat-dead")).to_have_text("2")
    await browser_page.screenshot("dead-letters")
    gone = letters.filter(has_text="410 Gone")
    await gone.get_by_role("button", name="Retry").click()
    await expect(letters).to_have_count(1)
    await expect(page.locator("#stat-dead")).to_have_text("1")
    await expect(page.locator("#stat-queued")).to_have_text("1")
    page.once("dialog", lambda dialog: dialog.accept())
    await letters.get_by_role("button", name="Delete").click()
    await expect(page.locator("#dead-letters")).to_be_hidden()
    await expect(page.locator("#stat-dead")).to_have_text("0")
    await browser_page.screenshot("dead-letters-handled")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login"))

    # A viewer sees the rule and the channel, with no control to change or send anything.
    await sign_in_to_alerts("viewer@example.com")
    row = page.locator("#rule-table tbody tr", has_text="New issues")
    await expect(row).to_contain_text("a new issue appears")
    await expect(row.locator(".enabled-on")).to_have_text("on")
    await expect(page.get_by_role("switch")).to_have_count(0)
    await expect(page.get_by_role("button", name="Test")).to_have_count(0)
    await expect(page.locator("#new-rule")).to_have_count(0)
    await browser_page.screenshot("viewer-alerts")
    await row.get_by_role("link", name="View").click()
    form = page.locator("#rule-form")
    await expect(form.locator("input[name=name]")).to_be_disabled()
    await expect(form.locator("select[name=when]")).to_have_value("new_issue")
    await expect(form.get_by_role("button")).to_have_count(0)
    await expect(page.locator("#history-status")).to_have_text("No state changes yet.")
    await browser_page.screenshot("viewer-rule")

    assert browser_page.failed == [] and browser_page.errors == [], (browser_page.failed, browser_page.errors)
