"""The alert activity endpoints over HTTP against real PostgreSQL and Redis: active alerts, a
rule's history, test sends through a real channel (a signed webhook to a recording server),
the dead letters of the notification queue, the queue's sizes; roles and bad input."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from alerting.model import AlertState, Severity
from alerting.queue import NotificationQueue
from alerting.state import AlertInstance, AlertStateStore, Transition
from tests.support.alert_data import dead_letter, make
from tests.support.api import ApiClient
from tests.support.net import free_port

SECRET = "webhook-signing-secret-0123"


class Receiver:
    """A webhook endpoint on loopback that records what it gets."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.bodies.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    try:
        yield r
    finally:
        assert r.runner is not None
        await r.runner.cleanup()


async def test_test_sends_go_through_the_channel_and_report_each_answer(
    http: ApiClient, tokens: dict[str, str], receiver: Receiver
) -> None:
    admin, viewer = tokens["admin"], tokens["viewer"]
    hook = await make(
        http, admin, "/api/alert-channels", {"name": "hook", "spec": {"type": "webhook", "url": receiver.url, "secret": SECRET}}
    )
    dead_port = free_port()
    await make(http, admin, "/api/alert-channels", {"name": "nowhere", "spec": {"type": "webhook", "url": f"http://127.0.0.1:{dead_port}/x", "timeout": "2s"}})  # fmt: skip
    rule = await make(
        http, admin, "/api/alert-rules", {"kind": "issue", "when": "new_issue", "name": "New", "channels": ["hook", "nowhere"]}
    )

    reply = await http.call("POST", f"/api/alert-rules/{rule['id']}/test", token=tokens["member"])
    assert reply.status == 200, reply.body
    results = {r["channel"]: r for r in reply.body["results"]}
    assert results["hook"] == {"channel": "hook", "ok": True, "error": None}
    assert results["nowhere"]["ok"] is False and results["nowhere"]["error"]
    [(headers, body)] = receiver.bodies
    expected = hmac.new(SECRET.encode(), f"{headers['X-AppGuard-Timestamp']}.".encode() + body, hashlib.sha256)
    assert headers["X-AppGuard-Signature"] == f"sha256={expected.hexdigest()}"
    assert b'"test":"true"' in body.replace(b" ", b"") and b"New" in body

    reply = await http.call("POST", f"/api/alert-channels/{hook['id']}/test", token=admin)
    assert reply.status == 200 and reply.body["results"][0]["ok"] is True
    assert len(receiver.bodies) == 2

    # Viewers may not send; unknown ids are 404; a rule sending nowhere says so.
    assert (await http.call("POST", f"/api/alert-rules/{rule['id']}/test", token=viewer)).status == 403
    assert (await http.call("POST", "/api/alert-rules/999999/test", token=admin)).status == 404
    assert (await http.call("POST", "/api/alert-channels/999999/test", token=admin)).status == 404
    silent = await make(http, admin, "/api/alert-rules", {"kind": "issue", "when": "regression", "name": "Quiet"})
    refused = await http.call("POST", f"/api/alert-rules/{silent['id']}/test", token=admin)
    assert refused.status == 400 and refused.body["error"]["field"] == "channels"
    assert len(receiver.bodies) == 2


async def test_active_alerts_and_history_come_from_the_state_store(
    http: ApiClient, tokens: dict[str, str], pool: AsyncConnectionPool[Any]
) -> None:
    admin, viewer = tokens["admin"], tokens["viewer"]
    rule = await make(http, admin, "/api/alert-rules", {"kind": "threshold", "name": "Burst", "warning": 5})
    states = AlertStateStore(pool)
    now = datetime.now(UTC).replace(microsecond=0)
    firing = AlertInstance(
        rule["id"], "fp-1", AlertState.FIRING, Severity.WARNING, {"service": "shop"}, {"summary": "7 errors"},
        7.0, now - timedelta(minutes=3), now - timedelta(minutes=2),
    )  # fmt: skip
    moves = [
        Transition(rule["id"], "fp-1", now - timedelta(minutes=3), AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING, 6.0),
        Transition(rule["id"], "fp-1", now - timedelta(minutes=2), AlertState.PENDING, AlertState.FIRING, Severity.WARNING, 7.0),
    ]  # fmt: skip
    await states.save([firing], moves)

    active = await http.call("GET", "/api/alerts", token=viewer)
    assert active.status == 200
    [alert] = active.body["alerts"]
    assert (alert["rule_id"], alert["state"], alert["severity"], alert["value"]) == (rule["id"], "firing", "warning", 7.0)
    assert alert["labels"] == {"service": "shop"}

    history = await http.call("GET", f"/api/alert-rules/{rule['id']}/history", token=viewer)
    assert [(h["from_state"], h["to_state"]) for h in history.body["history"]] == [("pending", "firing"), ("inactive", "pending")]
    older = await http.call(
        "GET", f"/api/alert-rules/{rule['id']}/history?limit=1&before={history.body['history'][0]['at'].replace('+', '%2B')}", token=viewer
    )
    assert [(h["from_state"], h["to_state"]) for h in older.body["history"]] == [("inactive", "pending")]
    assert (await http.call("GET", "/api/alert-rules/999999/history", token=viewer)).status == 404
    bad = await http.call("GET", f"/api/alert-rules/{rule['id']}/history?limit=0", token=viewer)
    assert bad.status == 400 and bad.body["error"]["field"] == "limit"

    # Deleting the rule forgets its alerts and history.
    assert (await http.call("DELETE", f"/api/alert-rules/{rule['id']}", token=admin)).status == 204
    assert (await http.call("GET", "/api/alerts", token=viewer)).body["alerts"] == []
    assert await states.history(rule["id"]) == []


async def test_dead_letters_can_be_listed_retried_and_deleted(
    http: ApiClient, tokens: dict[str, str], queue: NotificationQueue
) -> None:
    admin, viewer = tokens["admin"], tokens["viewer"]
    first = await dead_letter(queue, "Checkout errors", "webhook answered 410 Gone")
    listed = await http.call("GET", "/api/notifications/dead-letters", token=viewer)
    assert listed.status == 200
    [letter] = listed.body["dead_letters"]
    assert (letter["id"], letter["channel"], letter["reason"], letter["attempts"]) == (first, "ops-hook", "webhook answered 410 Gone", 5)
    assert letter["rules"] == ["Checkout errors"] and letter["alerts"] == 1
    stats = (await http.call("GET", "/api/notifications/stats", token=viewer)).body
    assert stats == {"queued": 0, "pending": 0, "delayed": 0, "dead_letters": 1}

    assert (await http.call("POST", f"/api/notifications/dead-letters/{first}/retry", token=viewer)).status == 403
    assert (await http.call("POST", f"/api/notifications/dead-letters/{first}/retry", token=admin)).status == 204
    stats = (await http.call("GET", "/api/notifications/stats", token=viewer)).body
    assert stats["dead_letters"] == 0 and stats["queued"] + stats["delayed"] == 1
    assert (await http.call("POST", f"/api/notifications/dead-letters/{first}/retry", token=admin)).status == 404

    second = await dead_letter(queue, "Login errors", "permanent: 404")
    assert (await http.call("DELETE", f"/api/notifications/dead-letters/{second}", token=admin)).status == 204
    assert (await http.call("DELETE", f"/api/notifications/dead-letters/{second}", token=admin)).status == 404
    bad = await http.call("DELETE", "/api/notifications/dead-letters/1;DROP", token=admin)
    assert bad.status == 400 and bad.body["error"]["field"] == "id"
    assert (await http.call("GET", "/api/notifications/dead-letters?limit=9999", token=viewer)).status == 400
