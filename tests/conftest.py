"""Shared pytest fixtures: free ports here, PostgreSQL and Redis from tests/support/services.py."""

from __future__ import annotations

import pytest

from tests.support.net import free_port

pytest_plugins = ["tests.support.services", "tests.support.browser", "tests.support.smtp", "tests.support.slack_server", "tests.support.alertmanager", "tests.support.prometheus"]


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()
