"""End to end: errors sent by the real OpenTelemetry SDK to the real CLI trigger every kind of
alert rule, and the notifications reach real peers.

The collector runs the OTLP receiver, the errors exporter (observed by the ``alerting``
extension), the ``errormetrics`` connector into a ``prometheus`` exporter that a real Prometheus
scrapes, and the ``alerting`` extension with its rules file. The peers: a real SMTP server
(aiosmtpd), a Slack test server that checks the Block Kit messages, and Debian's Alertmanager.

- a new issue -> one email and one Slack message (grouped);
- the same issue getting more than 3 events -> a Slack message (frequency rule);
- errors per service over a window above a threshold -> an alert in Alertmanager, resolved
  there (``endsAt``) once the window has no errors;
- ``appguard_errors_total`` in Prometheus above 0 -> a metric rule's alert in Alertmanager;
- a resolved issue seen again -> a regression email.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.alerting_support import (
    alertmanager_channel,
    charge,
    collector_config,
    email_channel,
    fail,
    named,
    slack_channel,
    total_of_empty_cart,
    until,
    write_rules,
)
from tests.support.alertmanager import AlertmanagerServer
from tests.support.net import free_port
from tests.support.process import CollectorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.slack_server import SlackServer
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.e2e

RULES: list[dict[str, Any]] = [
    {
        "name": "New shop issue",
        "kind": "issue",
        "when": "new_issue",
        "filters": {"service": ["shop"]},
        "channels": ["mail", "slack"],
    },
    {
        "name": "Billing issue",
        "kind": "issue",
        "when": "new_issue",
        "filters": {"service": ["billing"], "environment": ["staging"]},
        "channels": ["mail"],
    },
    {"name": "Busy issue", "kind": "issue", "when": "frequency", "events": 3, "window": "1h", "channels": ["slack"]},
    {"name": "Regression", "kind": "issue", "when": "regression", "severity": "critical", "channels": ["mail"]},
    {
        "name": "Error burst",
        "kind": "threshold",
        "measure": "count",
        "window": "6s",
        "per": ["service"],
        "warning": 2,
        "critical": 4,
        "channels": ["am"],
    },
    {
        "name": "Errors in Prometheus",
        "kind": "metric",
        "expr": "sum by (service_name) (appguard_errors_total) > 0",
        "severity": "info",
        "channels": ["am"],
    },
]


@pytest.fixture
def stack(
    tmp_path: Path,
    appguard_dsn: str,
    redis_url: str,
    redis_prefix: str,
    smtp_server: SmtpServer,
    slack_server: SlackServer,
    alertmanager_server: AlertmanagerServer,
    prometheus_binary: str,
) -> Iterator[dict[str, Any]]:
    grpc_port, metrics_port = free_port(), free_port()
    prometheus = PrometheusServer(prometheus_binary, tmp_path, targets=[f"127.0.0.1:{metrics_port}"]).start()
    channels = {
        "mail": email_channel(smtp_server),
        "slack": slack_channel(slack_server),
        "am": alertmanager_channel(alertmanager_server),
    }
    rules_file = write_rules(tmp_path / "alert-rules.yaml", channels, RULES)
    config = collector_config(
        grpc_port=grpc_port,
        dsn=appguard_dsn,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        rules_file=rules_file,
        metrics_port=metrics_port,
        prometheus_url=prometheus.url,
    )
    try:
        with CollectorProcess(config, tmp_path).running() as proc:
            yield {"proc": proc, "grpc_port": grpc_port, "prometheus": prometheus}
    finally:
        prometheus.stop()


async def test_each_rule_kind_notifies_through_its_channel(
    stack: dict[str, Any],
    smtp_server: SmtpServer,
    slack_server: SlackServer,
    alertmanager_server: AlertmanagerServer,
    appguard_dsn: str,
) -> None:
    grpc_port = stack["grpc_port"]

    # A new issue in the shop: one email, one Slack message.
    await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart)
    mails = await smtp_server.wait_for_messages_async(1)
    assert "New shop issue" in mails[0].message["Subject"] and "FIRING" in mails[0].message["Subject"]
    body = mails[0].message.get_body(("plain",))
    assert body is not None and "ZeroDivisionError" in body.get_content()
    assert mails[0].rcpt_tos == ["oncall@example.com"]
    posted = await slack_server.wait_for_messages(1)
    assert "ZeroDivisionError" in str(posted[0].payload["blocks"])

    # Three more of the same: more than 3 events -> the frequency rule's Slack message. The
    # count also passes the burst threshold (4 in 6 s: critical) -> Alertmanager.
    await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart, 3)
    posted = await slack_server.wait_for_messages(2)
    assert "Busy issue" in str(posted[1].payload)
    burst = await until(
        lambda: named(alertmanager_server, "Error burst"), what="the burst alert in Alertmanager"
    )
    assert burst[0]["labels"]["service"] == "shop"
    assert burst[0]["labels"]["severity"] in ("warning", "critical")

    # Prometheus scraped appguard_errors_total: the metric rule fires too.
    metric = await until(
        lambda: named(alertmanager_server, "Errors in Prometheus"),
        timeout=30,
        what="the metric rule's alert in Alertmanager",
    )
    assert metric[0]["labels"].get("service_name") == "shop", metric[0]["labels"]

    # A billing error in production does not match the billing rule's environment filter.
    await asyncio.to_thread(fail, "billing", "production", grpc_port, lambda: charge("ten"))
    # The burst window passes without errors: the alert is resolved in Alertmanager.
    await until(
        lambda: not any(a["labels"].get("service") == "shop" for a in named(alertmanager_server, "Error burst")),
        timeout=30,
        what="the burst alert to be resolved",
    )
    assert len(smtp_server.received()) == 1, [m.message["Subject"] for m in smtp_server.received()]

    # Resolve the shop issue, then it happens again: a regression email.
    with psycopg.connect(appguard_dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE appguard.issues SET status = 'resolved', substatus = NULL, resolved_at = now() "
            "WHERE service_name = 'shop'"
        )
    await asyncio.to_thread(fail, "shop", "production", grpc_port, total_of_empty_cart)
    mails = await smtp_server.wait_for_messages_async(2)
    assert "Regression" in mails[1].message["Subject"]

    # Each notification went out once.
    await asyncio.sleep(1.5)
    assert len(smtp_server.received()) == 2
    assert len(slack_server.messages) == 2
