"""The projects page in a real browser (Debian's Chromium through Playwright), against the
``api`` extension on the real PostgreSQL and Redis: an admin registers, creates a project (a
taken name first, shown at its field), sees and copies its DSN, adds a key, revokes it, and
goes to the project's issues. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re

import psycopg
import pytest
from playwright.async_api import Dialog, expect

from api.extension import ApiExtension
from tests.e2e.stack import fill_registration
from tests.support.browser import BrowserRun

pytestmark = pytest.mark.e2e


def stored_keys(dsn: str, project_id: int) -> list[tuple[str, str, bool]]:
    with psycopg.connect(dsn) as conn:
        return [
            (label, key, revoked)
            for label, key, revoked in conn.execute(
                "SELECT label, public_key, revoked_at IS NOT NULL FROM appguard.project_keys "
                "WHERE project_id = %s ORDER BY id",
                [project_id],
            ).fetchall()
        ]


async def test_an_admin_creates_a_project_copies_its_dsn_adds_a_key_and_revokes_it(
    api: ApiExtension, browser_page: BrowserRun, appguard_dsn: str
) -> None:
    base = f"http://127.0.0.1:{api.port}"
    page = browser_page.page
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    # Register (the first account is the admin) and land on the projects page.
    await fill_registration(page, base, "/projects")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("heading", name="Projects", level=1)).to_be_visible()
    await expect(page.locator("#project-1 .project-name")).to_have_text("default")
    await browser_page.screenshot("projects")

    # A taken name (whatever its case) is refused at the name field; a free one is created.
    form = page.locator("#project-form")
    await form.locator("input[name=name]").fill("DEFAULT")
    await form.get_by_role("button", name="Create project").click()
    await expect(form.locator(".field-error[data-field=name]")).to_have_text(
        "there is already a project called 'DEFAULT'"
    )
    await expect(form.locator("input[name=name]")).to_have_attribute("aria-invalid", "true")
    await form.locator("input[name=name]").fill("Checkout")
    await form.locator("input[name=platform]").fill("python")
    await form.get_by_role("button", name="Create project").click()
    # (The refused insert used up an id: ids have gaps, as PostgreSQL's identities do.)
    await expect(page).to_have_url(re.compile(r"/projects#project-\d+$"))
    project_id = int(page.url.rsplit("-", 1)[1])
    assert project_id > 1

    # Its DSN, with the key the project came with, at the address the browser used.
    project = page.locator(f"#project-{project_id}")
    await expect(project.locator(".project-name")).to_have_text("Checkout")
    await expect(project.locator(".platform")).to_have_text("python")
    [(label, public_key, revoked)] = stored_keys(appguard_dsn, project_id)
    assert (label, revoked) == ("Default", False)
    dsn = f"http://{public_key}@127.0.0.1:{api.port}/{project_id}"
    first = project.locator("tr[data-key-id]", has_text="Default")
    await expect(first.locator("code.dsn")).to_have_text(dsn)
    await first.get_by_role("button", name="Copy DSN").click()
    await expect(first.locator(".row-status")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == dsn
    await browser_page.screenshot("created")

    # A second key, labelled.
    await project.get_by_text("Add a key").click()
    key_form = project.locator("form.key-form")
    await key_form.locator("input[name=label]").fill("frontend")
    await key_form.get_by_role("button", name="Add key").click()
    added = project.locator("tr[data-key-id]", has_text="frontend")
    await expect(added).to_have_attribute("data-active", "true")
    await expect(project.locator("tr[data-key-id]")).to_have_count(2)
    [_, (label, new_key, revoked)] = stored_keys(appguard_dsn, project_id)
    assert (label, revoked) == ("frontend", False)
    await expect(added.locator("code.dsn")).to_have_text(f"http://{new_key}@127.0.0.1:{api.port}/{project_id}")

    # Revoke it, after confirming: flagged at once, in the database, and after a reload.
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.once("dialog", accept)
    await added.get_by_role("button", name="Revoke").click()
    await expect(added).to_have_attribute("data-active", "false")
    await expect(added.locator(".row-status")).to_have_text("Revoked")
    await expect(added.locator(".key-status")).to_have_text("revoked")
    await expect(added.get_by_role("button")).to_have_count(0)
    assert stored_keys(appguard_dsn, project_id) == [("Default", public_key, False), ("frontend", new_key, True)]
    await page.reload()
    await expect(added.locator(".key-status")).to_contain_text("revoked")
    await expect(added.get_by_role("button")).to_have_count(0)
    await expect(first.get_by_role("button", name="Revoke")).to_be_visible()
    await browser_page.screenshot("revoked")

    # Renamed in its settings.
    await project.get_by_text("Settings").click()
    settings = project.locator("form.settings-form")
    await settings.locator("input[name=name]").fill("Checkout API")
    await settings.get_by_role("button", name="Save").click()
    await expect(project.locator(".project-name")).to_have_text("Checkout API")
    with psycopg.connect(appguard_dsn) as conn:
        row = conn.execute("SELECT name, platform FROM appguard.projects WHERE id = %s", [project_id]).fetchone()
    assert row == ("Checkout API", "python")

    # The project's issues: the issue list with the project chosen.
    await project.get_by_role("link", name="Issues").click()
    await expect(page).to_have_url(f"{base}/issues?project={project_id}")
    await expect(page.locator("select[name=project]")).to_have_value(str(project_id))
    await expect(page.locator("#no-issues")).to_be_visible()

    # The taken name was the only failed request; the console's only error is the browser's note of it.
    assert browser_page.failed == [f"409 {base}/api/projects"], browser_page.failed
    note = "Failed to load resource: the server responded with a status of 409 (Conflict)"
    assert browser_page.errors == [note], browser_page.errors
