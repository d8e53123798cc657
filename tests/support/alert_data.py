"""Alerting data for the API and page tests: a pool on the test database, the notification
queue under the API's key prefix, and helpers that create rules and dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from alerting.model import Alert, Notification, Severity
from alerting.queue import NotificationQueue
from tests.support.api import ApiClient


@pytest.fixture
async def pool(appguard_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    p: AsyncConnectionPool[Any] = AsyncConnectionPool(appguard_dsn, kwargs={"autocommit": True}, open=False)
    await p.open(wait=True)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def queue(redis_url: str, redis_prefix: str) -> AsyncIterator[NotificationQueue]:
    # The queue of the API's dead-letter endpoints: the API's key prefix + "alerting:".
    q = NotificationQueue.from_url(redis_url, prefix=redis_prefix + "alerting:")
    try:
        yield q
    finally:
        await q.close()


async def make(http: ApiClient, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await http.call("POST", path, json=body, token=token)
    assert reply.status == 201, reply.body
    result: dict[str, Any] = reply.body
    return result


async def dead_letter(queue: NotificationQueue, rule_name: str, reason: str) -> str:
    """A notification of ``rule_name`` given up on, as a worker leaves it."""
    now = datetime.now(UTC)
    alert = Alert(
        rule_id=1, rule_name=rule_name, kind="threshold", fingerprint="f1", status="firing",
        severity=Severity.CRITICAL, labels={"alertname": rule_name}, annotations={}, starts_at=now,
    )  # fmt: skip
    notification = Notification(
        id="n-1", channel="ops-hook", group_key="g", group_labels={}, alerts=(alert,), created_at=now
    )
    await queue.ensure_group()
    await queue.enqueue(notification)
    [entry] = await queue.read("test-worker", count=1, block=None)
    await queue.dead_letter(entry, reason=reason, attempts=5, notification=notification)
    [letter] = await queue.dead_letters()
    return letter.id
