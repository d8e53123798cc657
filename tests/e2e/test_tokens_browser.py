"""The API tokens page in a real browser (Debian's Chromium through Playwright), against the
``api`` extension on the real PostgreSQL and Redis: a user registers, creates a token capped at
a role (a blank name first, refused at its field), sees and copies the secret once, uses it from
outside the browser, and revokes it. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import hashlib
import re

import aiohttp
import psycopg
import pytest
from playwright.async_api import Dialog, expect

from api.extension import ApiExtension
from tests.e2e.stack import EMAIL, fill_registration
from tests.support.browser import BrowserRun

pytestmark = pytest.mark.e2e


async def whoami(base: str, token: str) -> tuple[int, str | None]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        body = await resp.json()
        return resp.status, body.get("email") if resp.status == 200 else body["error"]["code"]


async def test_a_user_creates_copies_uses_and_revokes_a_token(
    api: ApiExtension, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    base = f"http://127.0.0.1:{api.port}"
    page = browser_page.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    await fill_registration(page, base, "/settings/tokens")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="API tokens", level=1)).to_be_visible()
    await expect(page.locator("#no-tokens")).to_be_visible()

    form = page.locator("#token-form")
    await form.locator("input[name=name]").fill("   ")
    await form.get_by_role("button", name="Create token").click()
    await expect(form.locator(".field-error[data-field=name]")).to_contain_text("at least 1 character")
    await form.locator("input[name=name]").fill("ci source maps")
    await form.locator("select[name=role]").select_option("member")
    await form.locator("input[name=expires_in_days]").fill("30")
    await form.get_by_role("button", name="Create token").click()

    secret_box = page.locator("#token-secret")
    await expect(secret_box).to_have_text(re.compile(r"^agt_[A-Za-z0-9_-]{43}$"))
    secret = await secret_box.text_content()
    assert secret is not None
    row = page.locator("#token-table tr[data-token-id]", has_text="ci source maps")
    await expect(row).to_contain_text(secret[:12])
    await expect(row).to_contain_text("member")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await browser_page.screenshot("created")
    with psycopg.connect(appguard_dsn) as conn:
        [(stored, role)] = conn.execute("SELECT token_hash, role FROM appguard.api_tokens").fetchall()
    assert (bytes(stored), role) == (hashlib.sha256(secret.encode()).digest(), "member")
    assert await whoami(base, secret) == (200, EMAIL)

    # After a reload the secret is gone; the row stays.
    await page.reload()
    await expect(page.locator("#token-created")).to_be_hidden()
    assert secret not in await page.content()
    await expect(row).to_contain_text(secret[:12])

    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)
    await row.get_by_role("button", name="Revoke").click()
    await expect(row).to_have_count(0)
    await expect(page.locator("#no-tokens")).to_be_visible()
    assert await whoami(base, secret) == (401, "api_token_revoked")
    await browser_page.screenshot("revoked")

    assert browser_page.failed == [f"400 {base}/api/tokens"], browser_page.failed
    note = "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    assert browser_page.errors == [note], browser_page.errors
