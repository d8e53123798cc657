"""Shared pytest fixtures: free ports here, PostgreSQL and Redis from tests/support/services.py."""

from __future__ import annotations

import pytest

from tests.support.net import free_port

pytest_plugins = ["tests.support.services", "tests.support.browser", "tests.support.smtp", "tests.support.slack_server", "tests.support.alertmanager", "tests.support.prometheus"]


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the end-to-end tests last (in their own order), after the unit and integration tests.

    The integration datasets (tests/support/issue_data.py) are dated relative to the moment the
    tests are collected, and some searches are relative to the clock ("last seen in the past 30
    minutes"): they must run within minutes of collection, not after the slow browser and CLI tests.
    """
    items.sort(key=lambda item: "tests/e2e/" in item.nodeid.replace("\\", "/"))
