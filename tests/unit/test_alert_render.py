"""What notifications look like: email subject and bodies, Slack blocks, Alertmanager alerts;
template overrides and their errors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from alerting.channels.alertmanager import alertmanager_alerts
from alerting.channels.email import EmailChannel, message_id
from alerting.channels.specs import EmailSpec
from alerting.model import Alert, Notification, Severity
from alerting.render import SLACK_MAX_ALERTS, Renderer, TemplateConfigError, rfc3339
from tests.support.slack_server import validate_blocks

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def issue_alert(n: int = 1, *, status: str = "firing", service: str = "shop", title: str | None = None, url: str | None = "/issues/1") -> Alert:
    return Alert(
        rule_id=3,
        rule_name="New checkout issues",
        kind="issue",
        fingerprint=f"fp{n}",
        status=status,  # type: ignore[arg-type]
        severity=Severity.WARNING,
        labels={"alertname": "New checkout issues", "rule": "3", "severity": "warning", "service": service, "environment": "prod"},
        annotations={"summary": "A new issue"},
        starts_at=NOW - timedelta(minutes=5),
        ends_at=NOW if status == "resolved" else None,
        url=url,
        issue={
            "id": n,
            "title": title if title is not None else f"KeyError: 'sku' <{n}>",
            "culprit": "shop.cart in add_item",
            "level": "error",
            "count": 17,
            "users": 4,
        },
    )


def threshold_alert() -> Alert:
    return Alert(
        rule_id=4,
        rule_name="Error rate",
        kind="threshold",
        fingerprint="thr",
        status="firing",
        severity=Severity.CRITICAL,
        labels={"alertname": "Error rate", "rule": "4", "severity": "critical", "service": "api", "environment": "prod"},
        annotations={"summary": "Error count 250 over 5m", "description": "critical above 200"},
        starts_at=NOW,
        value=250.0,
    )


def notification(*alerts: Alert, group_labels: dict[str, str] | None = None, dashboard_url: str | None = None) -> Notification:
    return Notification(
        id="n1",
        channel="c",
        group_key="k",
        group_labels=group_labels or {},
        alerts=alerts,
        created_at=NOW,
        dashboard_url=dashboard_url,
    )


# --------------------------------------------------------------------------------------------
# subjects and email bodies


def test_subject_counts_firing_alerts_and_names_the_shared_scope() -> None:
    email = Renderer().email(notification(issue_alert(1), issue_alert(2), issue_alert(3, status="resolved")))
    assert email.subject == "[FIRING:2] New checkout issues (shop prod)"


def test_subject_when_everything_resolved() -> None:
    email = Renderer().email(notification(issue_alert(1, status="resolved")))
    assert email.subject == "[RESOLVED] New checkout issues (shop prod)"


def test_subject_leaves_out_a_service_the_alerts_do_not_share() -> None:
    email = Renderer().email(notification(issue_alert(1, service="shop"), issue_alert(2, service="api")))
    assert email.subject == "[FIRING:2] New checkout issues (prod)"


def test_text_body_lists_each_alert_with_an_absolute_link() -> None:
    email = Renderer(public_url="https://ag.example.com/base/").email(
        notification(issue_alert(1), issue_alert(2, status="resolved", url="/issues/2"), dashboard_url="/alerts")
    )
    text = email.text
    assert text.index("Firing (1):") < text.index("KeyError: 'sku' <1>") < text.index("Resolved (1):") < text.index("KeyError: 'sku' <2>")
    assert "Culprit:     shop.cart in add_item" in text
    assert "Events:      17" in text and "Users:       4" in text
    assert "Level:       error" in text and "Severity:    warning" in text
    assert "Open:        https://ag.example.com/base/issues/1" in text
    assert "Resolved:    2024-05-01 12:00:00 UTC" in text
    assert "Dashboard: https://ag.example.com/base/alerts" in text


def test_relative_links_are_left_out_without_a_public_url() -> None:
    email = Renderer().email(notification(issue_alert(1, url="/issues/1")))
    assert "Open:" not in email.text and "href" not in email.html
    email = Renderer().email(notification(issue_alert(1, url="https://elsewhere.example.com/i/1")))
    assert "Open:        https://elsewhere.example.com/i/1" in email.text


def test_html_body_is_escaped_and_text_body_is_not() -> None:
    email = Renderer().email(notification(issue_alert(1, title="<script>alert(1)</script> & more")))
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in email.html
    assert "<script>alert(1)</script> & more" in email.text


def test_threshold_alert_shows_summary_and_value() -> None:
    email = Renderer().email(notification(threshold_alert()))
    assert email.subject == "[FIRING:1] Error rate (api prod)"
    assert "- Error count 250 over 5m" in email.text
    assert "Value:       250.0" in email.text
    assert "Details:     critical above 200" in email.text
    assert "Events:" not in email.text


def test_subject_is_one_line_whatever_the_rule_name() -> None:
    alert = dataclasses.replace(issue_alert(1), rule_name="Bad\r\nBcc: victim@example.com")
    email = Renderer().email(notification(alert))
    assert "\n" not in email.subject and "\r" not in email.subject
    assert email.subject.startswith("[FIRING:1] Bad Bcc: victim@example.com")


def test_email_message_id_comes_from_the_notification_id() -> None:
    spec = EmailSpec.model_validate({"to": ["a@example.com"], "from": "ag@alerts.example.org", "host": "localhost"})
    channel = EmailChannel("mail", spec, renderer=Renderer())
    first = channel.message(notification(issue_alert(1)))
    again = channel.message(notification(issue_alert(1)))
    assert first["Message-ID"] == again["Message-ID"] == "<appguard.n1@alerts.example.org>"
    odd = message_id("group <x>@y", "ag@alerts.example.org")
    assert odd == message_id("group <x>@y", "ag@alerts.example.org")
    assert odd.startswith("<appguard.") and odd.count("@") == 1 and "<x>" not in odd


# --------------------------------------------------------------------------------------------
# Slack


def test_slack_blocks_header_sections_and_count_of_the_rest() -> None:
    alerts = [issue_alert(n, url=f"/issues/{n}") for n in range(1, SLACK_MAX_ALERTS + 4)]
    message = Renderer(public_url="https://ag.example.com").slack(notification(*alerts, dashboard_url="/alerts?rule=3&x=1"))
    blocks = message["blocks"]
    validate_blocks(blocks)
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == f"[FIRING:{len(alerts)}] New checkout issues (shop prod)"
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) == SLACK_MAX_ALERTS
    assert sections[0]["text"]["type"] == "mrkdwn"
    assert "<https://ag.example.com/issues/1|KeyError: 'sku' &lt;1&gt;>" in sections[0]["text"]["text"]
    assert "Events: *17*" in sections[0]["text"]["text"]
    assert sections[0]["accessory"]["url"] == "https://ag.example.com/issues/1"
    assert blocks[-1] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "<https://ag.example.com/alerts?rule=3&amp;x=1|and 3 more>"}]}
    assert message["text"] == "[FIRING:13] New checkout issues (shop prod): KeyError: 'sku' &lt;1&gt; and 12 more"


def test_slack_keeps_within_block_kit_limits() -> None:
    alert = dataclasses.replace(issue_alert(1, title="x" * 5000, url=None), rule_name="R" * 300)
    message = Renderer().slack(notification(alert))
    validate_blocks(message["blocks"])
    header, section = message["blocks"]
    assert len(header["text"]["text"]) == 150 and header["text"]["text"].endswith("…")
    assert len(section["text"]["text"]) <= 3000
    assert "accessory" not in section


def test_slack_resolved_alert_is_marked() -> None:
    message = Renderer().slack(notification(issue_alert(1, status="resolved")))
    assert message["blocks"][0]["text"]["text"].startswith("[RESOLVED]")
    assert message["blocks"][1]["text"]["text"].startswith(":white_check_mark:")
    assert "Resolved at 2024-05-01 12:00:00 UTC" in message["blocks"][1]["text"]["text"]


# --------------------------------------------------------------------------------------------
# overrides


def test_override_dir_comes_first_and_the_rest_is_packaged(tmp_path: Path) -> None:
    (tmp_path / "title.txt").write_text("{{ status|upper }} / {{ rule_name }} / {{ items|length }}")
    renderer = Renderer(override_dir=tmp_path)
    ntf = notification(issue_alert(1))
    assert renderer.email(ntf).subject == "FIRING / New checkout issues / 1"
    assert renderer.slack(ntf)["blocks"][0]["text"]["text"] == "FIRING / New checkout issues / 1"
    assert "Culprit:     shop.cart in add_item" in renderer.email(ntf).text


def test_override_html_is_escaped_and_slack_values_are_escaped_for_mrkdwn(tmp_path: Path) -> None:
    (tmp_path / "email.html").write_text("<p>{% for item in items %}<b>{{ item.title }}</b>{% endfor %}</p>")
    (tmp_path / "slack_alert.md").write_text("*{{ item.title }}* <https://x.example.com|open>")
    renderer = Renderer(override_dir=tmp_path)
    ntf = notification(issue_alert(1, title="a <b> & c"))
    assert renderer.email(ntf).html == "<p><b>a &lt;b&gt; &amp; c</b></p>"
    assert renderer.slack(ntf)["blocks"][1]["text"]["text"] == "*a &lt;b&gt; &amp; c* <https://x.example.com|open>"


def test_broken_override_is_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "email.txt").write_text("line one\n{% for item in items %}\n{{ item.title }\n")
    with pytest.raises(TemplateConfigError, match=r"email\.txt:3: "):
        Renderer(override_dir=tmp_path)


def test_override_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TemplateConfigError, match="not a directory"):
        Renderer(override_dir=tmp_path / "missing")


def test_unknown_names_in_an_override_render_as_nothing(tmp_path: Path) -> None:
    (tmp_path / "title.txt").write_text("{{ rule_name }}{{ no_such_thing }}{{ item.issue.nope }}")
    assert Renderer(override_dir=tmp_path).email(notification(issue_alert(1))).subject == "New checkout issues"


# --------------------------------------------------------------------------------------------
# Alertmanager alerts and times


def _by_fingerprint(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"]["fp"]: a for a in alerts}


def test_alertmanager_alerts_follow_its_api() -> None:
    firing = dataclasses.replace(issue_alert(1), labels={**issue_alert(1).labels, "fp": "a", "empty": ""})
    resolved = dataclasses.replace(issue_alert(2, status="resolved"), labels={"fp": "b"})
    # Resolved "before" it started (clock skew between evaluators): Alertmanager would refuse it.
    skewed = dataclasses.replace(issue_alert(3, status="resolved"), labels={"fp": "c"}, ends_at=NOW - timedelta(hours=1))
    alerts = _by_fingerprint(alertmanager_alerts(notification(firing, resolved, skewed), Renderer(public_url="http://ag.test")))
    assert "endsAt" not in alerts["a"]
    assert "empty" not in alerts["a"]["labels"]
    assert alerts["a"]["startsAt"] == "2024-05-01T11:55:00.000Z"
    assert alerts["a"]["generatorURL"] == "http://ag.test/issues/1"
    assert alerts["a"]["annotations"] == {"summary": "A new issue"}
    assert alerts["b"]["labels"] == {"fp": "b", "alertname": "New checkout issues", "severity": "warning"}
    assert alerts["b"]["endsAt"] == "2024-05-01T12:00:00.000Z"
    assert alerts["c"]["endsAt"] == alerts["c"]["startsAt"]


def test_rfc3339() -> None:
    assert rfc3339(datetime(2024, 5, 1, 12, 0, 0, 123456)) == "2024-05-01T12:00:00.123Z"
    assert rfc3339(datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == "2024-05-01T12:00:00.000Z"
