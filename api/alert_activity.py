"""What alerting did and does: active alerts, a rule's history, test notifications, and the
notification queue's dead letters.

- ``GET /api/alerts``: the pending and firing alerts (the state the ``alerting`` extension
  keeps in PostgreSQL).
- ``GET /api/alert-rules/{id}/history``: a rule's state changes, newest first.
- ``POST /api/alert-rules/{id}/test`` and ``POST /api/alert-channels/{id}/test``: send a test
  notification now, through the channel itself (not the queue), and say what each channel
  answered, so a wrong address or webhook shows at once.
- ``GET /api/notifications/dead-letters`` (and ``.../{id}/retry``, ``DELETE .../{id}``), and
  ``GET /api/notifications/stats``: the Redis queue the ``alerting`` extension's workers
  consume, under the same key prefix as the API's (``<redis.key_prefix>alerting:``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from alerting.channels import build_channel
from alerting.channels.specs import AlertmanagerSpec, EmailSpec, SlackSpec, WebhookSpec
from alerting.model import Alert, Notification, SendError, Severity
from alerting.queue import NotificationQueue
from alerting.render import Renderer
from alerting.state import AlertStateStore
from api.alerts import IdParams, rule_store
from api.errors import ApiError
from api.issues import base_url
from api.routing import ROUTES, RouteTable, json_response, params, query
from api.services import SERVICES, services
from storage.users_store import Role

_STATE = web.AppKey("appguard_alert_state", AlertStateStore)
_QUEUE = web.AppKey("appguard_notification_queue", NotificationQueue)
_PROJECT = 1


class AlertOut(BaseModel):
    """A pending or firing alert."""

    rule_id: int
    fingerprint: str
    state: Literal["pending", "firing"]
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    active_since: datetime | None
    fired_at: datetime | None


class AlertList(BaseModel):
    """Pending and firing alerts, firing first."""

    alerts: list[AlertOut]


class HistoryQuery(BaseModel):
    """A page of history."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=500)
    before: datetime | None = Field(default=None, description="only changes before this time")


class TransitionOut(BaseModel):
    """One state change of an alert."""

    fingerprint: str
    at: datetime
    from_state: str
    to_state: str
    severity: str
    value: float | None
    labels: dict[str, str]


class History(BaseModel):
    """State changes, newest first."""

    history: list[TransitionOut]


class SendResult(BaseModel):
    """What one channel answered a test notification."""

    channel: str
    ok: bool
    error: str | None = None


class TestResults(BaseModel):
    """Each channel's answer."""

    results: list[SendResult]


class DeadLetterQuery(BaseModel):
    """A page of dead letters."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class DeadLetterOut(BaseModel):
    """A notification given up on, and why."""

    id: str
    notification_id: str
    channel: str
    reason: str
    attempts: int
    failed_at: datetime
    alerts: int
    rules: list[str]


class DeadLetters(BaseModel):
    """Dead letters, newest first."""

    dead_letters: list[DeadLetterOut]


class DeadLetterParams(BaseModel):
    """A dead letter's id (a Redis stream entry id)."""

    id: str = Field(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")


class QueueStatsOut(BaseModel):
    """The queue's sizes."""

    queued: int
    pending: int
    delayed: int
    dead_letters: int


# --------------------------------------------------------------------------- handlers


async def list_alerts(request: web.Request) -> web.StreamResponse:
    """Pending and firing alerts."""
    found = await request.app[_STATE].active()
    out = [
        AlertOut(
            rule_id=a.rule_id,
            fingerprint=a.fingerprint,
            state=a.state.value,  # type: ignore[arg-type]
            severity=a.severity.value,
            labels=a.labels,
            annotations=a.annotations,
            value=a.value,
            active_since=a.active_since,
            fired_at=a.fired_at,
        )
        for a in found
    ]
    return json_response(AlertList(alerts=out))


async def rule_history(request: web.Request) -> web.StreamResponse:
    """A rule's state changes."""
    target = params(request, IdParams)
    q = query(request, HistoryQuery)
    if await rule_store(request).get_rule(target.id, project_id=_PROJECT) is None:
        raise ApiError(404, "alert_rule_not_found", f"there is no alert rule {target.id}")
    found = await request.app[_STATE].history(target.id, limit=q.limit, before=q.before)
    out = [
        TransitionOut(
            fingerprint=t.fingerprint,
            at=t.at,
            from_state=t.from_state.value,
            to_state=t.to_state.value,
            severity=t.severity.value,
            value=t.value,
            labels=t.labels,
        )
        for t in found
    ]
    return json_response(History(history=out))


def _test_alert(request: web.Request, rule_id: int, name: str, kind: str, severity: Severity) -> Alert:
    now = datetime.now(UTC)
    return Alert(
        rule_id=rule_id,
        rule_name=name,
        kind=kind,  # type: ignore[arg-type]
        fingerprint=f"test-{uuid.uuid4().hex}",
        status="firing",
        severity=severity,
        labels={"alertname": name, "rule": str(rule_id), "severity": severity.value, "test": "true"},
        annotations={
            "summary": f"Test notification of {name}",
            "description": "Sent from AppGuard to check this channel; no alert is firing.",
        },
        starts_at=now,
        url=f"{base_url(request)}/alerts",
    )


async def _send(
    request: web.Request, name: str, spec: EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec, alert: Alert
) -> SendResult:
    svc = services(request)
    channel = build_channel(name, spec, renderer=Renderer(public_url=svc.config.public_url))
    notification = Notification(
        id=f"test:{uuid.uuid4().hex}",
        channel=name,
        group_key=f"test:{name}",
        group_labels={"alertname": alert.rule_name},
        alerts=(alert,),
        created_at=alert.starts_at,
        dashboard_url=base_url(request),
    )
    try:
        await channel.send(notification)
    except SendError as exc:
        return SendResult(channel=name, ok=False, error=str(exc))
    finally:
        await channel.close()
    return SendResult(channel=name, ok=True)


async def send_rule_test(request: web.Request) -> web.StreamResponse:
    """Send a test notification to each of a rule's channels."""
    target = params(request, IdParams)
    store = rule_store(request)
    record = await store.get_rule(target.id, project_id=_PROJECT)
    if record is None:
        raise ApiError(404, "alert_rule_not_found", f"there is no alert rule {target.id}")
    spec = record.rule.spec
    if not spec.channels:
        raise ApiError(400, "no_channels", "the rule sends to no channel", field="channels")
    severity = getattr(spec, "severity", Severity.WARNING)
    alert = _test_alert(request, record.rule.id, spec.name, spec.kind, severity)
    specs = await store.channel_specs(project_id=_PROJECT)
    results = []
    for name in spec.channels:
        channel_spec = specs.get(name)
        if channel_spec is None:
            results.append(SendResult(channel=name, ok=False, error="there is no such channel"))
        else:
            results.append(await _send(request, name, channel_spec, alert))
    return json_response(TestResults(results=results))


async def send_channel_test(request: web.Request) -> web.StreamResponse:
    """Send a test notification through one channel."""
    target = params(request, IdParams)
    record = await rule_store(request).get_channel(target.id, project_id=_PROJECT)
    if record is None:
        raise ApiError(404, "alert_channel_not_found", f"there is no alert channel {target.id}")
    alert = _test_alert(request, 0, f"Channel test: {record.name}", "issue", Severity.INFO)
    return json_response(TestResults(results=[await _send(request, record.name, record.spec, alert)]))


async def list_dead_letters(request: web.Request) -> web.StreamResponse:
    """Notifications given up on."""
    q = query(request, DeadLetterQuery)
    found = await request.app[_QUEUE].dead_letters(limit=q.limit, offset=q.offset)
    out = []
    for d in found:
        alerts = d.notification.alerts if d.notification is not None else ()
        out.append(
            DeadLetterOut(
                id=d.id,
                notification_id=d.notification_id,
                channel=d.channel,
                reason=d.reason,
                attempts=d.attempts,
                failed_at=d.failed_at,
                alerts=len(alerts),
                rules=sorted({a.rule_name for a in alerts}),
            )
        )
    return json_response(DeadLetters(dead_letters=out))


async def retry_dead_letter(request: web.Request) -> web.StreamResponse:
    """Put a dead letter back in the queue."""
    target = params(request, DeadLetterParams)
    if not await request.app[_QUEUE].retry_dead_letter(target.id):
        raise ApiError(404, "dead_letter_not_found", f"there is no dead letter {target.id}")
    return web.Response(status=204)


async def delete_dead_letter(request: web.Request) -> web.StreamResponse:
    """Forget a dead letter."""
    target = params(request, DeadLetterParams)
    if not await request.app[_QUEUE].delete_dead_letter(target.id):
        raise ApiError(404, "dead_letter_not_found", f"there is no dead letter {target.id}")
    return web.Response(status=204)


async def queue_stats(request: web.Request) -> web.StreamResponse:
    """The notification queue's sizes."""
    stats = await request.app[_QUEUE].stats()
    return json_response(
        QueueStatsOut(
            queued=stats.stream_length, pending=stats.pending, delayed=stats.delayed, dead_letters=stats.dead_letters
        )
    )


# --------------------------------------------------------------------------- registration


def _declare(routes: RouteTable) -> None:
    tags = ["alerts"]
    routes.add(
        "GET", "/api/alerts", list_alerts, role=Role.VIEWER, summary="Pending and firing alerts",
        responses={200: AlertList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/alert-rules/{id}/history", rule_history, role=Role.VIEWER, summary="An alert rule's history",
        params=IdParams, query=HistoryQuery, responses={200: History}, errors={404: "no such rule"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/alert-rules/{id}/test", send_rule_test, role=Role.MEMBER,
        summary="Send a test notification to a rule's channels",
        description="Sent at once through each channel, not through the queue; each channel's answer is "
        "in the results.",
        params=IdParams, responses={200: TestResults}, errors={404: "no such rule"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/alert-channels/{id}/test", send_channel_test, role=Role.MEMBER,
        summary="Send a test notification through a channel",
        params=IdParams, responses={200: TestResults}, errors={404: "no such channel"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/notifications/dead-letters", list_dead_letters, role=Role.VIEWER,
        summary="Notifications given up on", query=DeadLetterQuery, responses={200: DeadLetters}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/notifications/dead-letters/{id}/retry", retry_dead_letter, role=Role.MEMBER,
        summary="Queue a dead letter again", params=DeadLetterParams, responses={204: None},
        errors={404: "no such dead letter"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/notifications/dead-letters/{id}", delete_dead_letter, role=Role.MEMBER,
        summary="Forget a dead letter", params=DeadLetterParams, responses={204: None},
        errors={404: "no such dead letter"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/notifications/stats", queue_stats, role=Role.VIEWER, summary="The notification queue's sizes",
        responses={200: QueueStatsOut}, tags=tags,
    )  # fmt: skip


async def _open(app: web.Application) -> None:
    svc = app[SERVICES]
    app[_STATE] = AlertStateStore(svc.pool)
    app[_QUEUE] = NotificationQueue(svc.redis, prefix=svc.key_prefix + "alerting:")


def state_store(request: web.Request) -> AlertStateStore:
    """The application's alert state store."""
    return request.app[_STATE]


def notification_queue(request: web.Request) -> NotificationQueue:
    """The notification queue the ``alerting`` extension's workers consume."""
    return request.app[_QUEUE]


def register(app: web.Application) -> None:
    """Declare the endpoints."""
    app.on_startup.append(_open)
    _declare(app[ROUTES])

