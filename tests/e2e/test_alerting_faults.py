"""End to end, with faults: notifications reach their peers once, whatever fails on the way.

Each test runs the real CLI (one or two ``appguard-collector`` processes), sends errors with the
real OpenTelemetry SDK, and counts what the peers received:

- the SMTP server is down while two new issues come, then back: both emails arrive, once each;
- Slack answers 429 (``Retry-After``) and then 500: one message in the end, not before the
  time Slack asked for;
- the collector is killed (SIGKILL) while a notification waits for a retry, or in the middle
  of sending it, and started again: the email arrives once;
- two replicas share PostgreSQL, Redis and the rules, and take the same bug's events at the
  same time: one email per issue rule, one Slack message for the threshold rule that both
  replicas could evaluate.

What is left in the queue is read from Redis with the product's own
:meth:`~alerting.queue.NotificationQueue.stats`, as the API shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerting.queue import NotificationQueue, QueueStats
from tests.e2e.alerting_support import (
    collector,
    collector_config,
    collectors,
    email_channel,
    fail,
    find_coupon,
    notification_queue,
    slack_channel,
    total_of_empty_cart,
    until,
    write_rules,
)
from tests.support.net import free_port
from tests.support.process import CollectorProcess
from tests.support.slack_server import SlackServer
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.e2e

#: Quick retries; a notification read by a worker that died is taken over after 1 s; a send
#: may take 2 s (the SMTP timeout is longer, so a silent server costs exactly that).
FAULT_QUEUE: dict[str, Any] = {
    "poll_interval": "100ms",
    "claim_idle": "1s",
    "send_timeout": "2s",
    "retry": {"initial_interval": "200ms", "max_interval": "1s"},
}
#: Longer than two of the longest retry intervals: time for a duplicate to show up.
SETTLE = 2.5

NEW_ISSUE_BY_MAIL: dict[str, Any] = {"name": "New issue", "kind": "issue", "when": "new_issue", "channels": ["mail"]}
NEW_ISSUE_IN_SLACK: dict[str, Any] = {"name": "New issue", "kind": "issue", "when": "new_issue", "channels": ["slack"]}


def _config(rules_file: Path, grpc_port: int, dsn: str, redis_url: str, redis_prefix: str) -> str:
    return collector_config(
        grpc_port=grpc_port,
        dsn=dsn,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        rules_file=rules_file,
        queue=FAULT_QUEUE,
    )


async def _queued(queue: NotificationQueue) -> int:
    """Notifications still in the queue: in the stream (waiting or being sent) or waiting for
    a retry."""
    stats = await queue.stats()
    return stats.stream_length + stats.delayed


async def _assert_drained(queue: NotificationQueue) -> None:
    stats = await queue.stats()
    assert stats == QueueStats(stream_length=0, pending=0, delayed=0, dead_letters=0), (
        stats,
        await queue.dead_letters(),
    )


def _accepted_spans(proc: CollectorProcess) -> float:
    found = re.search(
        r'^otelcol_receiver_accepted_spans_total\{receiver="otlp",transport="grpc"\} (\S+)$',
        proc.metrics_text(),
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


class SilentServer:
    """Accepts connections on a port and never says a word: an SMTP server that hangs."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)

    async def close(self) -> None:
        """Stop listening and drop the connections (again: nothing)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in self._writers:
            writer.close()
        await server.wait_closed()


async def test_smtp_down_then_back_sends_every_email_once(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, smtp_server: SmtpServer
) -> None:
    rules_file = write_rules(tmp_path / "alert-rules.yaml", {"mail": email_channel(smtp_server)}, [NEW_ISSUE_BY_MAIL])
    grpc_port = free_port()
    config = _config(rules_file, grpc_port, appguard_dsn, redis_url, redis_prefix)
    async with collector(config, tmp_path), notification_queue(redis_url, redis_prefix) as queue:
        await asyncio.to_thread(smtp_server.stop)

        # A new issue while the SMTP server is down: its email fails and waits for a retry.
        await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart)
        await until(lambda: _retrying(queue, 1), what="the first email to wait for a retry")
        # A second new issue, in a notification of its own.
        await asyncio.to_thread(fail, "shop", "production", grpc_port, lambda: find_coupon("SPRING"))
        await until(lambda: _retrying(queue, 2), what="the second email to be queued")

        # Retried for a while (several attempts each) without giving up.
        await asyncio.sleep(SETTLE)
        stats = await queue.stats()
        assert (stats.stream_length + stats.delayed, stats.dead_letters) == (2, 0), stats
        assert smtp_server.received() == []

        await asyncio.to_thread(smtp_server.start)
        await smtp_server.wait_for_messages_async(2, timeout=15)
        await asyncio.sleep(SETTLE)
        mails = smtp_server.received()
        assert len(mails) == 2, [m.message["Subject"] for m in mails]
        # One email per issue. Each waited for its own retry, so they may come in either order.
        bodies = [str(m.message.get_body(("plain",)).get_content()) for m in mails]  # type: ignore[union-attr]
        found = sorted(("ZeroDivisionError" in body, "KeyError" in body) for body in bodies)
        assert found == [(False, True), (True, False)], bodies
        assert all("New issue" in m.message["Subject"] for m in mails)
        assert len({m.message["Message-ID"] for m in mails}) == 2
        await _assert_drained(queue)


async def _retrying(queue: NotificationQueue, notifications: int) -> bool:
    stats = await queue.stats()
    return stats.delayed >= 1 and stats.stream_length + stats.delayed == notifications


async def test_slack_429_then_500_delivers_once_after_retry_after(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, slack_server: SlackServer
) -> None:
    rules_file = write_rules(tmp_path / "alert-rules.yaml", {"slack": slack_channel(slack_server)}, [NEW_ISSUE_IN_SLACK])
    grpc_port = free_port()
    config = _config(rules_file, grpc_port, appguard_dsn, redis_url, redis_prefix)
    # Longer than the channel's own pace (one message a second) and the first retry interval:
    # only a sender that read Retry-After waits this long.
    retry_after = 2
    slack_server.fail_next(1, status=429, body="rate_limited", retry_after=retry_after)
    slack_server.fail_next(1, status=500, body="rollup_error")
    async with collector(config, tmp_path), notification_queue(redis_url, redis_prefix) as queue:
        await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart)
        await slack_server.wait_for_messages(1, timeout=20)
        await asyncio.sleep(SETTLE)

        posted = slack_server.messages
        arrivals = slack_server.arrivals
        assert len(posted) == 1 and "ZeroDivisionError" in str(posted[0].payload["blocks"])
        # Refused with 429, refused with 500, accepted: three requests and no more.
        assert len(arrivals) == 3, arrivals
        assert posted[0].received_at == arrivals[2]
        # The second request waited at least what the 429 asked (clocks differ by a hair).
        assert arrivals[1] - arrivals[0] >= retry_after - 0.01, arrivals
        await _assert_drained(queue)


@pytest.mark.parametrize("outage", ["refused", "silent"])
async def test_killed_with_a_queued_email_sends_it_once_after_restart(
    outage: str, tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, smtp_server: SmtpServer
) -> None:
    """``refused``: nothing listens, the email waits for a retry when the collector is killed.
    ``silent``: the SMTP server accepts and never answers, the collector is killed in the
    middle of the send, leaving the entry read and never acknowledged."""
    rules_file = write_rules(tmp_path / "alert-rules.yaml", {"mail": email_channel(smtp_server)}, [NEW_ISSUE_BY_MAIL])
    grpc_port = free_port()
    config = _config(rules_file, grpc_port, appguard_dsn, redis_url, redis_prefix)
    await asyncio.to_thread(smtp_server.stop)
    silent = SilentServer()
    if outage == "silent":
        await silent.start(smtp_server.port)
    async with notification_queue(redis_url, redis_prefix) as queue, contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(silent.close)
        async with collector(config, tmp_path / "first") as first:
            await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart)
            if outage == "silent":
                await until(lambda: silent.connections, what="the email's SMTP connection")
            else:
                await until(lambda: _retrying(queue, 1), what="the email to wait for a retry")
            await asyncio.to_thread(first.kill)

        stats = await queue.stats()
        if outage == "silent":
            # Read by a worker that is gone, never acknowledged.
            assert (stats.stream_length, stats.pending, stats.delayed) == (1, 1, 0), stats
            await silent.close()
        else:
            assert stats.stream_length + stats.delayed == 1, stats
        await asyncio.to_thread(smtp_server.start)

        async with collector(config, tmp_path / "second"):
            await smtp_server.wait_for_messages_async(1, timeout=20)
            await asyncio.sleep(SETTLE)
            mails = smtp_server.received()
            assert len(mails) == 1, [m.message["Subject"] for m in mails]
            assert "New issue" in mails[0].message["Subject"]
            await _assert_drained(queue)


async def test_two_replicas_notify_once(
    tmp_path: Path,
    appguard_dsn: str,
    redis_url: str,
    redis_prefix: str,
    smtp_server: SmtpServer,
    slack_server: SlackServer,
) -> None:
    rules = [
        NEW_ISSUE_BY_MAIL,
        {"name": "Busy issue", "kind": "issue", "when": "frequency", "events": 3, "window": "1h", "channels": ["mail"]},
        {
            "name": "Error burst",
            "kind": "threshold",
            "measure": "count",
            "window": "1h",
            "per": ["service"],
            "warning": 4,
            "channels": ["slack"],
        },
    ]
    channels = {"mail": email_channel(smtp_server), "slack": slack_channel(slack_server)}
    rules_file = write_rules(tmp_path / "alert-rules.yaml", channels, rules)
    ports = [free_port(), free_port()]
    configs = [_config(rules_file, port, appguard_dsn, redis_url, redis_prefix) for port in ports]
    async with collectors(configs, tmp_path) as replicas, notification_queue(redis_url, redis_prefix) as queue:
        # The same bug, three requests to each replica at the same time.
        await asyncio.gather(
            *(asyncio.to_thread(fail, "shop", "production", port, total_of_empty_cart, 3) for port in ports)
        )
        await smtp_server.wait_for_messages_async(2, timeout=20)
        await slack_server.wait_for_messages(1, timeout=20)
        # Several evaluations and group intervals later: nothing more.
        await asyncio.sleep(SETTLE)

        for replica in replicas:
            assert await asyncio.to_thread(_accepted_spans, replica) == 3
        with psycopg.connect(appguard_dsn) as conn:
            issues = conn.execute("SELECT event_count FROM appguard.issues").fetchall()
            # Each rule's history (GET /api/alert-rules/{id}/history) shows it fired once.
            fired = conn.execute(
                "SELECT r.name, count(*) FROM appguard.alert_history h JOIN appguard.alert_rules r ON r.id = h.rule_id"
                " WHERE h.to_state = 'firing' GROUP BY r.name"
            ).fetchall()
        assert issues == [(6,)]
        assert dict(fired) == {"New issue": 1, "Busy issue": 1, "Error burst": 1}

        subjects = sorted(str(m.message["Subject"]) for m in smtp_server.received())
        assert len(subjects) == 2, subjects
        assert "Busy issue" in subjects[0] and "New issue" in subjects[1], subjects
        posted = slack_server.messages
        assert len(posted) == 1, [m.payload.get("text") for m in posted]
        assert "Error burst" in str(posted[0].payload)
        await _assert_drained(queue)
