"""Fixtures of the end-to-end tests: the CLI started with :mod:`tests.e2e.stack`, and the ``api``
extension alone for the dashboard's tests that need no pipeline."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from api.extension import ApiExtension
from tests.e2e.stack import Stack, StartStack, running_stack, stack_config
from tests.support.api import running_api


@pytest.fixture
def start_stack(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> Iterator[StartStack]:
    """Start the CLI on the test's database and Redis prefix, in its temporary folder, with the
    config :func:`~tests.e2e.stack.stack_config` builds of the options; it runs until the test
    ends, and its exit must be clean."""
    with contextlib.ExitStack() as running:

        def start(**options: Any) -> Stack:
            config = stack_config(appguard_dsn, redis_url=redis_url, redis_prefix=redis_prefix, **options)
            return running.enter_context(running_stack(config, tmp_path))

        yield start


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    """The ``api`` extension in this process, on a free loopback port, on the test's database and Redis prefix."""
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix) as ext:
        yield ext
