"""The notification channels against real receivers: aiosmtpd for email, the real
Alertmanager binary, a Slack webhook test server speaking Slack's protocol, and a recording
HTTP endpoint for the generic webhook."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from alerting.channels import build_channel
from alerting.channels.specs import CHANNEL_SPEC
from alerting.model import Alert, Channel, Notification, PermanentSendError, RetryableSendError, Severity
from alerting.render import Renderer
from tests.support.alertmanager import AlertmanagerServer
from tests.support.slack_server import SlackServer
from tests.support.smtp import Certificate, SmtpServer

PUBLIC_URL = "https://appguard.example.com"
NOW = datetime.now(UTC).replace(microsecond=0)


def issue_alert(n: int, *, status: str = "firing", service: str = "shop", environment: str = "production") -> Alert:
    """An issue-rule alert about issue ``n``."""
    return Alert(
        rule_id=7,
        rule_name="Checkout errors",
        kind="issue",
        fingerprint=f"fp-{n}",
        status=status,  # type: ignore[arg-type]
        severity=Severity.CRITICAL,
        labels={
            "alertname": "Checkout errors",
            "rule": "7",
            "severity": "critical",
            "service": service,
            "environment": environment,
            "issue_id": str(n),
        },
        annotations={"summary": f"New issue {n}", "description": "A new issue in checkout"},
        starts_at=NOW - timedelta(minutes=10),
        ends_at=NOW if status == "resolved" else None,
        url=f"/issues/{n}",
        issue={
            "id": n,
            "title": f"ValueError: cart <{n}> & co",
            "culprit": f"shop.cart in add_item_{n}",
            "level": "error",
            "count": 40 + n,
            "users": 3 + n,
            "service": service,
            "environment": environment,
            "first_seen": NOW - timedelta(hours=1),
            "last_seen": NOW,
        },
    )


def notification(*alerts: Alert, id: str = "ntf-0001", channel: str = "test") -> Notification:
    return Notification(
        id=id,
        channel=channel,
        group_key='{}:{rule="7"}',
        group_labels={"rule": "7"},
        alerts=alerts,
        created_at=NOW,
        dashboard_url="/alerts/7",
    )


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(public_url=PUBLIC_URL)


@pytest.fixture
async def channels(renderer: Renderer) -> AsyncIterator[Callable[..., Channel]]:
    """``make(**spec)``: a channel built from spec data; every one is closed after the test."""
    made: list[Channel] = []

    def make(**spec: Any) -> Channel:
        channel = build_channel("test", CHANNEL_SPEC.validate_python(spec), renderer=renderer)
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


# --------------------------------------------------------------------------------------------
# email


def email_spec(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "to": ["oncall@example.com"],
        "from": "appguard@example.org",
        "host": server.host,
        "port": server.port,
        "timeout": 5,
        **extra,
    }


async def test_email_arrives_with_subject_and_both_bodies(smtp_server: SmtpServer, channels: Callable[..., Channel]) -> None:
    channel = channels(**email_spec(smtp_server))
    await channel.send(notification(issue_alert(1), issue_alert(2)))

    [received] = await smtp_server.wait_for_messages_async(1)
    msg = received.message
    assert received.mail_from == "appguard@example.org"
    assert received.rcpt_tos == ["oncall@example.com"]
    assert not received.tls and received.login is None
    assert msg["Subject"] == "[FIRING:2] Checkout errors (shop production)"
    assert msg["To"] == "oncall@example.com"
    assert msg["Message-ID"] == "<appguard.ntf-0001@example.org>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert text_part is not None and html_part is not None
    text = text_part.get_content()
    html = html_part.get_content()
    for n in (1, 2):
        assert f"ValueError: cart <{n}> & co" in text
        assert f"shop.cart in add_item_{n}" in text
        assert f"Events:      {40 + n}" in text
        assert f"Users:       {3 + n}" in text
        assert f"{PUBLIC_URL}/issues/{n}" in text
        # The HTML body escapes what the text body shows as is.
        assert f"ValueError: cart &lt;{n}&gt; &amp; co" in html
        assert f'href="{PUBLIC_URL}/issues/{n}"' in html
    assert "Service:     shop" in text and "Environment: production" in text and "Level:       error" in text
    assert "<script" not in html


async def test_email_over_starttls_with_login(smtp_server_factory: Callable[..., SmtpServer], channels: Callable[..., Channel]) -> None:
    server = smtp_server_factory(security="starttls", users={"alerts": "s3cret-pass"})
    channel = channels(**email_spec(server, security="starttls", username="alerts", password="s3cret-pass", insecure_skip_verify=True))
    await channel.send(notification(issue_alert(1, status="resolved")))

    [received] = await server.wait_for_messages_async(1)
    assert received.tls
    assert received.login == "alerts"
    assert received.message["Subject"] == "[RESOLVED] Checkout errors (shop production)"


async def test_email_over_tls_from_the_start(smtp_server_factory: Callable[..., SmtpServer], channels: Callable[..., Channel]) -> None:
    server = smtp_server_factory(security="tls")
    await channels(**email_spec(server, security="tls", insecure_skip_verify=True)).send(notification(issue_alert(1)))
    [received] = await server.wait_for_messages_async(1)
    assert received.tls


async def test_email_self_signed_certificate_is_refused_unless_told(
    smtp_server_factory: Callable[..., SmtpServer], channels: Callable[..., Channel]
) -> None:
    server = smtp_server_factory(security="starttls")
    with pytest.raises(PermanentSendError, match="certificate"):
        await channels(**email_spec(server, security="starttls")).send(notification(issue_alert(1)))
    assert server.received() == []


async def test_email_wrong_password_is_permanent(smtp_server_factory: Callable[..., SmtpServer], channels: Callable[..., Channel]) -> None:
    server = smtp_server_factory(security="starttls", users={"alerts": "s3cret-pass"})
    spec = email_spec(server, security="starttls", username="alerts", password="wrong", insecure_skip_verify=True)
    with pytest.raises(PermanentSendError, match="535"):
        await channels(**spec).send(notification(issue_alert(1)))
    # aiosmtplib tries each mechanism the server offers (PLAIN, LOGIN) before giving up.
    assert server.failed_logins and set(server.failed_logins) == {"alerts"}
    assert server.received() == []


async def test_email_server_down_is_retryable_and_the_retry_keeps_the_message_id(
    smtp_server: SmtpServer, channels: Callable[..., Channel]
) -> None:
    channel = channels(**email_spec(smtp_server))
    ntf = notification(issue_alert(1), id="retry-me")
    smtp_server.stop()
    with pytest.raises(RetryableSendError):
        await channel.send(ntf)
    smtp_server.start()
    await channel.send(ntf)
    [received] = await smtp_server.wait_for_messages_async(1)
    assert received.message["Message-ID"] == "<appguard.retry-me@example.org>"


@pytest.mark.parametrize(
    ("code", "message", "error"),
    [(550, "5.1.1 No such user here", PermanentSendError), (450, "4.2.1 Mailbox busy, try later", RetryableSendError)],
)
async def test_email_refused_recipient(
    smtp_server: SmtpServer, channels: Callable[..., Channel], code: int, message: str, error: type[Exception]
) -> None:
    smtp_server.refuse("oncall@example.com", code, message)
    with pytest.raises(error, match=str(code)):
        await channels(**email_spec(smtp_server)).send(notification(issue_alert(1)))
    assert smtp_server.received() == []


async def test_email_to_the_recipients_not_refused(
    smtp_server: SmtpServer, channels: Callable[..., Channel], caplog: pytest.LogCaptureFixture
) -> None:
    smtp_server.refuse("gone@example.com", 550, "5.1.1 No such user here")
    channel = channels(**email_spec(smtp_server, to=["gone@example.com", "oncall@example.com"]))
    with caplog.at_level(logging.WARNING, logger="appguard.alerting"):
        await channel.send(notification(issue_alert(1)))
    [received] = await smtp_server.wait_for_messages_async(1)
    assert received.rcpt_tos == ["oncall@example.com"]
    assert "gone@example.com: 550" in caplog.text


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never says anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_email_silent_server_times_out_as_retryable(silent_port: int, channels: Callable[..., Channel]) -> None:
    spec = {"type": "email", "to": ["a@example.com"], "from": "b@example.com", "host": "127.0.0.1", "port": silent_port, "timeout": 0.5}
    with pytest.raises(RetryableSendError):
        await channels(**spec).send(notification(issue_alert(1)))


# --------------------------------------------------------------------------------------------
# Slack


async def test_slack_message_passes_block_kit_checks(slack_server: SlackServer, channels: Callable[..., Channel]) -> None:
    channel = channels(type="slack", webhook_url=slack_server.webhook_url, channel="#alerts")
    alerts = [issue_alert(n) for n in range(1, 13)]
    await channel.send(notification(*alerts))

    [message] = await slack_server.wait_for_messages(1)
    assert slack_server.refused == []
    payload = message.payload
    assert payload["channel"] == "#alerts"
    assert payload["text"].startswith("[FIRING:12] Checkout errors (shop production)")
    blocks = payload["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "[FIRING:12] Checkout errors (shop production)", "emoji": True}}
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == 10
    first = sections[0]
    # Slack's mrkdwn escaping: & < > only.
    assert "ValueError: cart &lt;1&gt; &amp; co" in first["text"]["text"]
    assert "Events: *41*" in first["text"]["text"]
    assert "Service: `shop`" in first["text"]["text"] and "Environment: `production`" in first["text"]["text"]
    assert "Severity: *critical*" in first["text"]["text"]
    assert first["accessory"]["url"] == f"{PUBLIC_URL}/issues/1"
    assert blocks[-1]["type"] == "context"
    assert blocks[-1]["elements"][0]["text"] == f"<{PUBLIC_URL}/alerts/7|and 2 more>"


async def test_slack_sends_at_most_one_message_a_second(channels: Callable[..., Channel]) -> None:
    # This server answers 429 to a message less than a second after the previous one.
    async with SlackServer(rate_limit=1.0) as slack:
        channel = channels(type="slack", webhook_url=slack.webhook_url)
        await asyncio.gather(*(channel.send(notification(issue_alert(n), id=f"n{n}")) for n in range(3)))
        messages = await slack.wait_for_messages(3)
    assert slack.throttled == 0
    assert slack.refused == []
    arrivals = [m.received_at for m in messages]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.99 for gap in gaps), gaps


async def test_slack_429_is_retryable_after_retry_after(slack_server: SlackServer, channels: Callable[..., Channel]) -> None:
    channel = channels(type="slack", webhook_url=slack_server.webhook_url, timeout=2)
    slack_server.fail_next(1, status=429, body="rate_limited", retry_after=30)
    with pytest.raises(RetryableSendError) as caught:
        await channel.send(notification(issue_alert(1)))
    assert caught.value.retry_after == 30.0
    # The webhook said to wait: the next message does not go out before, and says how long.
    with pytest.raises(RetryableSendError) as again:
        await channel.send(notification(issue_alert(2)))
    assert again.value.retry_after is not None and 20 < again.value.retry_after <= 30
    assert len(slack_server.arrivals) == 1


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, "rollup_error", RetryableSendError),
        (503, "service_unavailable", RetryableSendError),
        (404, "channel_not_found", PermanentSendError),
        (400, "invalid_payload", PermanentSendError),
        (403, "invalid_token", PermanentSendError),
        (410, "channel_is_archived", PermanentSendError),
    ],
)
async def test_slack_failures(
    slack_server: SlackServer, channels: Callable[..., Channel], status: int, body: str, error: type[Exception]
) -> None:
    slack_server.fail_next(1, status=status, body=body)
    with pytest.raises(error, match=body):
        await channels(type="slack", webhook_url=slack_server.webhook_url).send(notification(issue_alert(1)))
    assert slack_server.messages == []


async def test_slack_unknown_webhook_path_is_permanent(slack_server: SlackServer, channels: Callable[..., Channel]) -> None:
    url = slack_server.webhook_url.rsplit("/", 1)[0] + "/not-the-token"
    with pytest.raises(PermanentSendError, match="404: no_service"):
        await channels(type="slack", webhook_url=url).send(notification(issue_alert(1)))


async def test_slack_down_is_retryable(slack_server: SlackServer, channels: Callable[..., Channel]) -> None:
    channel = channels(type="slack", webhook_url=slack_server.webhook_url)
    await slack_server.stop()
    with pytest.raises(RetryableSendError):
        await channel.send(notification(issue_alert(1)))


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]}, "invalid_blocks"),
        ({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "*x*"}}]}, "invalid_blocks"),
        ({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]}, "invalid_blocks"),
        ({"blocks": [{"type": "section", "text": {"type": "markdown", "text": "x"}}]}, "invalid_blocks"),
        ({"blocks": [{"type": "banner"}]}, "invalid_blocks"),
        ({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "accessory": {"type": "button", "text": {"type": "plain_text", "text": "go"}, "url": "/relative"}}]}, "invalid_blocks"),
        ({"blocks": {"type": "divider"}}, "invalid_blocks"),
        ({"username": "appguard"}, "no_text"),
        ([1, 2], "invalid_payload"),
    ],
)
async def test_slack_server_refuses_what_slack_refuses(slack_server: SlackServer, payload: Any, error: str) -> None:
    # The checks the Slack tests rely on, shown to refuse.
    async with aiohttp.ClientSession() as session, session.post(slack_server.webhook_url, json=payload) as response:
        assert (response.status, await response.text()) == (400, error)
    assert len(slack_server.refused) == 1 and slack_server.messages == []


# --------------------------------------------------------------------------------------------
# webhook


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A recording HTTP endpoint; ``answers`` are used first, then 200."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    answers: list[web.Response] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Recorded({k.lower(): v for k, v in request.headers.items()}, await request.read()))
        if self.answers:
            return self.answers.pop(0)
        return web.Response(text="thanks")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks/appguard"
    yield rec
    await runner.cleanup()


async def test_webhook_payload_and_signature(receiver: Receiver, channels: Callable[..., Channel]) -> None:
    secret = "a-very-long-signing-secret"
    channel = channels(
        type="webhook",
        url=receiver.url,
        secret=secret,
        headers={"X-Team": "payments", "X-AppGuard-Signature": "forged"},
    )
    await channel.send(notification(issue_alert(1), issue_alert(2, status="resolved"), id="ntf-42"))

    [request] = receiver.requests
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-appguard-notification-id"] == "ntf-42"
    assert headers["x-team"] == "payments"
    timestamp = headers["x-appguard-timestamp"]
    assert abs(int(timestamp) - time.time()) < 300
    expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-appguard-signature"], expected)

    doc = request.json()
    assert doc["version"] == "1"
    assert doc["id"] == "ntf-42"
    assert doc["status"] == "firing"
    assert doc["title"] == "[FIRING:1] Checkout errors (shop production)"
    assert doc["groupLabels"] == {"rule": "7"}
    assert doc["dashboardUrl"] == f"{PUBLIC_URL}/alerts/7"
    firing, resolved = doc["alerts"]
    assert firing["status"] == "firing" and firing["endsAt"] is None
    assert firing["labels"]["alertname"] == "Checkout errors"
    assert firing["annotations"]["summary"] == "New issue 1"
    assert firing["rule"] == {"id": 7, "name": "Checkout errors", "kind": "issue"}
    assert firing["url"] == f"{PUBLIC_URL}/issues/1"
    assert firing["issue"]["title"] == "ValueError: cart <1> & co"
    assert firing["issue"]["first_seen"] == (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert firing["startsAt"] == (NOW - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_webhook_without_secret_is_not_signed(receiver: Receiver, channels: Callable[..., Channel]) -> None:
    await channels(type="webhook", url=receiver.url).send(notification(issue_alert(1)))
    [request] = receiver.requests
    assert "x-appguard-signature" not in request.headers
    assert "x-appguard-timestamp" not in request.headers
    assert request.json()["alerts"][0]["fingerprint"] == "fp-1"


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (408, {}, RetryableSendError, None),
        (429, {"Retry-After": "12"}, RetryableSendError, 12.0),
        (503, {"Retry-After": "3"}, RetryableSendError, 3.0),
        (500, {}, RetryableSendError, None),
        (400, {}, PermanentSendError, None),
        (404, {}, PermanentSendError, None),
        (410, {}, PermanentSendError, None),
        (302, {"Location": "https://elsewhere.example.com/"}, PermanentSendError, None),
    ],
)
async def test_webhook_answers(
    receiver: Receiver,
    channels: Callable[..., Channel],
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    receiver.answers.append(web.Response(status=status, text="the reason", headers=headers))
    with pytest.raises(error, match=f"HTTP {status}: the reason") as caught:
        await channels(type="webhook", url=receiver.url).send(notification(issue_alert(1)))
    if isinstance(caught.value, RetryableSendError):
        assert caught.value.retry_after == retry_after
    assert len(receiver.requests) == 1


async def test_webhook_nothing_listening_is_retryable(channels: Callable[..., Channel], port: int) -> None:
    with pytest.raises(RetryableSendError):
        await channels(type="webhook", url=f"http://127.0.0.1:{port}/hook").send(notification(issue_alert(1)))


async def test_webhook_silent_server_times_out_as_retryable(silent_port: int, channels: Callable[..., Channel]) -> None:
    with pytest.raises(RetryableSendError, match=r"no answer within 0\.5s"):
        await channels(type="webhook", url=f"http://127.0.0.1:{silent_port}/hook", timeout=0.5).send(notification(issue_alert(1)))


async def test_webhook_untrusted_certificate_is_permanent(smtp_certificate: Certificate, channels: Callable[..., Channel]) -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=smtp_certificate.server_context()).start()
    try:
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/hook"
        with pytest.raises(PermanentSendError, match="certificate"):
            await channels(type="webhook", url=url).send(notification(issue_alert(1)))
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------
# Alertmanager


async def test_alertmanager_lists_the_alert_then_drops_it_when_resolved(
    alertmanager_binary: str, tmp_path: Path, receiver: Receiver, channels: Callable[..., Channel]
) -> None:
    # Alertmanager's own notifications go to the recording receiver: they show what it made
    # of the alerts (firing, then resolved).
    with AlertmanagerServer(alertmanager_binary, tmp_path, webhook_url=receiver.url) as am:
        channel = channels(type="alertmanager", url=am.url)
        await channel.send(notification(issue_alert(1), issue_alert(2)))

        listed = {a["labels"]["issue_id"]: a for a in am.alerts()}
        assert set(listed) == {"1", "2"}
        first = listed["1"]
        assert first["labels"] == {
            "alertname": "Checkout errors",
            "rule": "7",
            "severity": "critical",
            "service": "shop",
            "environment": "production",
            "issue_id": "1",
        }
        assert first["annotations"] == {"summary": "New issue 1", "description": "A new issue in checkout"}
        assert first["generatorURL"] == f"{PUBLIC_URL}/issues/1"
        assert first["status"]["state"] == "active"
        assert datetime.fromisoformat(first["startsAt"]) == NOW - timedelta(minutes=10)
        # No endsAt was sent: Alertmanager gives it resolve_timeout from now.
        assert datetime.fromisoformat(first["endsAt"]) > datetime.now(UTC)

        await channel.send(notification(issue_alert(1, status="resolved"), id="ntf-0002"))
        assert [a["labels"]["issue_id"] for a in am.alerts()] == ["2"]

        resolved = await wait_for_am_notification(receiver, lambda a: a["status"] == "resolved")
        assert resolved["labels"]["issue_id"] == "1"
        assert datetime.fromisoformat(resolved["endsAt"]) == NOW


async def wait_for_am_notification(receiver: Receiver, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
    """The first alert in Alertmanager's webhook notifications that ``match`` accepts."""
    deadline = time.monotonic() + timeout
    while True:
        for request in receiver.requests:
            for alert in request.json()["alerts"]:
                if match(alert):
                    return dict(alert)
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching alert in Alertmanager's notifications: {[r.json() for r in receiver.requests]}")
        await asyncio.sleep(0.1)


async def test_alertmanager_basic_auth(alertmanager_binary: str, tmp_path: Path, channels: Callable[..., Channel]) -> None:
    with AlertmanagerServer(alertmanager_binary, tmp_path, basic_auth=("appguard", "am-pass")) as am:
        with pytest.raises(PermanentSendError, match="HTTP 401"):
            await channels(type="alertmanager", url=am.url, username="appguard", password="nope").send(notification(issue_alert(1)))
        assert am.alerts() == []
        await channels(type="alertmanager", url=am.url + "/", username="appguard", password="am-pass").send(notification(issue_alert(1)))
        assert [a["labels"]["issue_id"] for a in am.alerts()] == ["1"]


async def test_alertmanager_refusal_is_permanent_with_its_reason(alertmanager_url: str, channels: Callable[..., Channel]) -> None:
    good = issue_alert(1)
    bad = dataclasses.replace(good, labels={**good.labels, "bad-name": "x"})
    with pytest.raises(PermanentSendError, match=r"HTTP 400: .*invalid.*bad-name"):
        await channels(type="alertmanager", url=alertmanager_url).send(notification(bad))


async def test_alertmanager_down_is_retryable(alertmanager_server: AlertmanagerServer, channels: Callable[..., Channel]) -> None:
    url = alertmanager_server.url
    alertmanager_server.stop()
    with pytest.raises(RetryableSendError):
        await channels(type="alertmanager", url=url).send(notification(issue_alert(1)))
