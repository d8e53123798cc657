"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.support.net import free_port


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()
