"""Headless Chromium from Debian, driven by Playwright, for the dashboard's browser tests.

The ``browser_page`` fixture opens a fresh context (its own cookies) and a page, collects what
the page logs as an error (a script failing, a Content-Security-Policy refusal) and the
responses that failed, and hands a
:class:`BrowserRun` that saves screenshots under ``test-artifacts/<test name>/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright

CHROMIUM = os.environ.get("APPGUARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class BrowserRun:
    """A page of a fresh browser context, its console errors and a screenshot folder."""

    page: Page
    folder: Path
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    async def screenshot(self, name: str, of: Locator | None = None) -> Path:
        """Save the whole page, or only the element ``of``, as ``<folder>/<nn>-<name>.png``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        if of is None:
            await self.page.screenshot(path=str(path), full_page=True)
        else:
            await of.screenshot(path=str(path))
        self.shots.append(path)
        return path


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser_page(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[BrowserRun]:
    """A page in a new context, sized like a laptop screen."""
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    run = BrowserRun(page, folder)
    page.on("console", lambda msg: run.errors.append(msg.text) if msg.type == "error" else None)
    page.on("response", lambda resp: run.failed.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    page.on("pageerror", lambda exc: run.errors.append(str(exc)))
    try:
        yield run
    finally:
        await context.close()
