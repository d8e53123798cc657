"""The alerting pages over HTTP, on rules, channels, alert states and dead letters written
through the real stores (PostgreSQL, Redis): what /alerts and the rule and channel forms
render for an admin and for a viewer, rules from the rules file read-only, secrets never on a
page, hostile names escaped, unknown ids 404."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from alerting.channels.specs import WebhookSpec
from alerting.model import AlertState, Severity, ThresholdRule
from alerting.queue import NotificationQueue
from alerting.state import AlertInstance, AlertStateStore, Transition
from alerting.store import RuleStore
from api.alert_pages import condition, duration
from api.extension import ApiExtension
from collector.configtypes import parse_duration
from tests.support.alert_data import dead_letter, make
from tests.support.api import ApiClient

SLACK_URL = "https://hooks.slack.com/services/T000/B000/very-secret-token"
WEBHOOK_SECRET = "signing-secret-0123456789"
SCRIPT = "<script>alert(1)</script>"


async def browser_of(api: ApiExtension, email: str, *, register: bool = False) -> ApiClient:
    """A client signed in with session cookies, as the dashboard is."""
    browser = ApiClient(f"http://127.0.0.1:{api.port}")
    reply = await (browser.register(email, cookies=True) if register else browser.login(email, cookies=True))
    assert reply.status in (200, 201), reply.body
    return browser


def threshold_rule(name: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "threshold", "name": name, "warning": 10, "critical": 50, **fields}


async def test_the_alerts_page_shows_alerts_rules_channels_and_dead_letters(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str], pool: AsyncConnectionPool[Any], queue: NotificationQueue
) -> None:
    admin = tokens["admin"]
    await make(http, admin, "/api/alert-channels", {"name": "ops-hook", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    await make(http, admin, "/api/alert-channels", {"name": "team-slack", "spec": {"type": "slack", "webhook_url": SLACK_URL, "channel": "#ops"}})
    errors = await make(http, admin, "/api/alert-rules", threshold_rule(
        "Checkout errors", window="5m", per=["service"], channels=["ops-hook"], filters={"service": ["checkout"]}
    ))  # fmt: skip
    quiet = await make(http, admin, "/api/alert-rules", {"kind": "issue", "name": "New issues", "when": "new_issue", "enabled": False})
    # A rule and a channel from the rules file.
    store = RuleStore(pool)
    await store.apply_file(
        {"file-hook": WebhookSpec(url="http://127.0.0.1:9/file")},
        [ThresholdRule(name="From the file", warning=1, channels=["file-hook"])],
    )
    # One firing alert of the threshold rule, and a dead letter.
    now = datetime.now(UTC)
    await AlertStateStore(pool).save([
        AlertInstance(
            rule_id=errors["id"], fingerprint="fp-checkout", state=AlertState.FIRING, severity=Severity.CRITICAL,
            labels={"alertname": "Checkout errors", "rule": str(errors["id"]), "severity": "critical", "service": "checkout"},
            annotations={"summary": "checkout: 72 errors in the last 5m"}, value=72.0,
            active_since=now - timedelta(minutes=7), fired_at=now - timedelta(minutes=2),
        )
    ])  # fmt: skip
    letter = await dead_letter(queue, "Checkout errors", "webhook answered 410 Gone")

    browser = await browser_of(api, "admin@example.com")
    try:
        page = await browser.call("GET", "/alerts")
    finally:
        await browser.close()
    assert page.status == 200, page.body
    body = page.body
    assert 'href="/alerts" aria-current="page">Alerts<' in body

    # The firing alert, with its rule, severity, labels and value.
    active = body[body.index('id="active-alerts"') : body.index("</table>", body.index('id="active-alerts"'))]
    assert f'data-rule-id="{errors["id"]}" data-state="firing"' in active
    assert ">Checkout errors</a>" in active and "checkout: 72 errors in the last 5m" in active
    assert "service=checkout" in active and "alertname=" not in active and ">72<" in active

    # The rules: condition, channels, source, and the controls of API rules only.
    rows = dict(re.findall(r'<tr data-rule-id="(\d+)"(.*?)</tr>', body, re.S))
    assert set(rows) >= {str(errors["id"]), str(quiet["id"])}
    checkout = rows[str(errors["id"])]
    assert "error count over 5m ≥ 10 (warning), 50 (critical) per service" in checkout
    assert "service: checkout" in checkout and "ops-hook" in checkout
    assert 'data-action="toggle" checked' in checkout and 'data-action="test"' in checkout
    assert 'data-action="toggle">' in rows[str(quiet["id"])]  # disabled: not checked
    assert "a new issue appears" in rows[str(quiet["id"])]
    [file_rule] = [row for row in rows.values() if "From the file" in row]
    assert 'data-source="file"' in file_rule or 'source-file' in file_rule
    assert 'data-action="toggle"' not in file_rule and ">View</a>" in file_rule
    assert 'data-action="test"' in file_rule  # a test send changes nothing

    # The channels, the Slack webhook's URL (a secret) nowhere.
    channels = body[body.index('id="channel-table"') : body.index("</table>", body.index('id="channel-table"'))]
    assert "ops-hook" in channels and "http://127.0.0.1:9/hook" in channels and "#ops" in channels
    assert "file-hook" in channels
    assert SLACK_URL not in body and "very-secret-token" not in body

    # The queue's sizes and the dead letter with its actions.
    assert 'id="stat-dead">1<' in body and 'id="stat-queued">0<' in body
    dead = body[body.index('id="dead-letters"') : body.index("</table>", body.index('id="dead-letters"'))]
    assert f'data-dead-letter-id="{letter}"' in dead
    assert "webhook answered 410 Gone" in dead and "ops-hook" in dead and "Checkout errors" in dead
    assert 'data-action="retry"' in dead and 'data-action="delete"' in dead
    assert 'id="new-rule"' in body and 'id="new-channel"' in body
    assert '<script type="module" src="/static/js/alerts.js"></script>' in body


async def test_viewers_see_everything_without_the_controls(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str], queue: NotificationQueue
) -> None:
    admin = tokens["admin"]
    await make(http, admin, "/api/alert-channels", {"name": "ops-hook", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    rule = await make(http, admin, "/api/alert-rules", threshold_rule("Checkout errors", channels=["ops-hook"]))
    channel_id = (await http.call("GET", "/api/alert-channels", token=admin)).body["channels"][0]["id"]
    await dead_letter(queue, "Checkout errors", "refused")

    viewer = await browser_of(api, "viewer@example.com")
    try:
        overview = await viewer.call("GET", "/alerts")
        rule_page = await viewer.call("GET", f"/alerts/rules/{rule['id']}")
        channel_page = await viewer.call("GET", f"/alerts/channels/{channel_id}")
        new_rule = await viewer.call("GET", "/alerts/rules/new")
        new_channel = await viewer.call("GET", "/alerts/channels/new")
    finally:
        await viewer.close()
    assert overview.status == 200
    body = overview.body
    assert "Checkout errors" in body and "ops-hook" in body and "refused" in body
    for control in ('data-action="toggle"', 'data-action="test"', 'data-action="retry"', 'data-action="delete"',
                    'id="new-rule"', 'id="new-channel"'):  # fmt: skip
        assert control not in body, control
    assert ">View</a>" in body and ">Edit</a>" not in body

    # The forms are shown, disabled, without Save, Test or Delete; the history is there.
    assert rule_page.status == 200
    assert 'id="rule-fields" disabled' in rule_page.body
    assert 'type="submit"' not in rule_page.body
    assert 'id="test-rule"' not in rule_page.body and 'id="delete-rule"' not in rule_page.body
    assert 'id="history-table"' in rule_page.body
    assert channel_page.status == 200 and 'id="channel-fields" disabled' in channel_page.body
    assert 'type="submit"' not in channel_page.body and 'id="test-channel"' not in channel_page.body
    # Creating is for members.
    assert new_rule.status == 403 and new_channel.status == 403


async def test_the_rule_form_shows_the_rule_as_durations_lists_and_lines(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str], appguard_dsn: str, pool: AsyncConnectionPool[Any]
) -> None:
    admin = tokens["admin"]
    await make(http, admin, "/api/alert-channels", {"name": "ops-hook", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}})
    await make(http, admin, "/api/alert-channels", {"name": "other", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/other"}})
    rule = await make(http, admin, "/api/alert-rules", threshold_rule(
        "Checkout errors", description="Too many errors", window="15m", measure="rate", compare="percent_change",
        per=["environment"], channels=["ops-hook"], labels={"team": "shop"}, **{"for": "1m30s"},
        filters={"service": ["checkout", "cart"], "level": ["error"], "tags": {"http.route": "/pay"}},
        grouping={"group_by": ["rule", "service"], "group_wait": "10s", "group_interval": "2m", "repeat_interval": "6h"},
    ))  # fmt: skip
    frequent = await make(http, admin, "/api/alert-rules", {
        "kind": "issue", "name": "Busy issue", "when": "frequency", "events": 100, "users": 7, "window": "2h",
    })  # fmt: skip
    # A metric rule, written as the store keeps it (creating one needs a Prometheus to check it).
    with psycopg.connect(appguard_dsn) as conn:
        spec = {"kind": "metric", "name": "Slow", "expr": 'histogram_quantile(0.99, rate(x[5m])) > 2 and "q"',
                "for": 300.0, "severity": "critical", "annotations": {"runbook": "https://wiki/slow"}}  # fmt: skip
        metric_id = conn.execute(
            "INSERT INTO appguard.alert_rules (name, kind, spec) VALUES ('Slow', 'metric', %s) RETURNING id",
            (Jsonb(spec),),
        ).fetchone()[0]  # type: ignore[index]
    await AlertStateStore(pool).save([], [
        Transition(rule_id=rule["id"], fingerprint="fp", at=datetime.now(UTC), from_state=AlertState.PENDING,
                   to_state=AlertState.FIRING, severity=Severity.WARNING, value=12.0)
    ])  # fmt: skip

    browser = await browser_of(api, "admin@example.com")
    try:
        page = (await browser.call("GET", f"/alerts/rules/{rule['id']}")).body
        issue_page = (await browser.call("GET", f"/alerts/rules/{frequent['id']}")).body
        metric_page = (await browser.call("GET", f"/alerts/rules/{metric_id}")).body
        new_page = await browser.call("GET", "/alerts/rules/new")
        history = await browser.call("GET", f"/api/alert-rules/{rule['id']}/history")
    finally:
        await browser.close()

    threshold = page[page.index('data-kind="threshold"') : page.index('data-kind="metric"')]
    assert '<option value="threshold" selected>' in page
    assert 'name="window" value="15m"' in threshold and 'name="for" value="1m30s"' in threshold
    assert '<option value="rate" selected>' in threshold and '<option value="percent_change" selected>' in threshold
    assert 'name="per" value="environment" checked' in threshold and 'value="service" checked' not in threshold
    assert 'name="warning" min="0" step="any" value="10"' in threshold
    assert 'name="filters.service" value="checkout, cart"' in page
    assert ">http.route=/pay</textarea>" in page and ">team=shop</textarea>" in page
    assert 'name="channels" value="ops-hook" checked' in page and 'name="channels" value="other">' in page
    assert 'name="grouping.group_by" value="rule, service"' in page
    assert 'value="10s"' in page and 'value="2m"' in page and 'value="6h"' in page
    assert ">Too many errors</textarea>" in page and 'name="enabled" checked' in page
    assert 'id="test-rule"' in page and 'id="delete-rule"' in page and 'id="history-table"' in page
    # The history the page loads is the API's.
    assert [h["to_state"] for h in history.body["history"]] == ["firing"]

    issue = issue_page[issue_page.index('data-kind="issue"') : issue_page.index('data-kind="threshold"')]
    assert '<option value="frequency" selected>' in issue
    assert 'name="events" min="1" step="1" value="100"' in issue and 'value="7"' in issue
    assert 'name="window" value="2h"' in issue and 'name="action_interval" value="30m"' in issue

    metric = metric_page[metric_page.index('data-kind="metric"') : metric_page.index('id="filters"')]
    assert "histogram_quantile(0.99, rate(x[5m])) &gt; 2 and &#34;q&#34;</textarea>" in metric
    assert 'name="for" value="5m"' in metric and '<option value="critical" selected>' in metric
    assert ">runbook=https://wiki/slow</textarea>" in metric

    # A new rule starts as an issue rule with the models' defaults.
    assert new_page.status == 200
    new = new_page.body
    assert '<option value="issue" selected>' in new and 'data-rule-id=""' in new
    assert 'name="window" value="5m"' in new and 'name="grouping.repeat_interval" value="4h"' in new
    assert 'id="history-table"' not in new and ">Create rule<" in new


async def test_channel_forms_never_show_secrets(api: ApiExtension, http: ApiClient, tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    slack = await make(http, admin, "/api/alert-channels", {"name": "team-slack", "spec": {"type": "slack", "webhook_url": SLACK_URL, "username": "guard"}})
    hook = await make(http, admin, "/api/alert-channels", {"name": "signed", "spec": {
        "type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": WEBHOOK_SECRET, "headers": {"X-Team": "shop"}}})  # fmt: skip
    mail = await make(http, admin, "/api/alert-channels", {"name": "mail", "spec": {
        "type": "email", "to": ["a@example.com", "b@example.com"], "from": "guard@example.com", "host": "127.0.0.1",
        "port": 2525, "security": "starttls", "username": "guard", "password": "smtp-password-xyz"}})  # fmt: skip

    browser = await browser_of(api, "admin@example.com")
    try:
        pages = {c["name"]: (await browser.call("GET", f"/alerts/channels/{c['id']}")).body for c in (slack, hook, mail)}
        new_page = await browser.call("GET", "/alerts/channels/new")
    finally:
        await browser.close()
    for body in pages.values():
        for secret in (SLACK_URL, "very-secret-token", WEBHOOK_SECRET, "smtp-password-xyz"):
            assert secret not in body
    assert '<option value="slack" selected>' in pages["team-slack"]
    assert 'name="webhook_url" value="********"' in pages["team-slack"] and 'value="guard"' in pages["team-slack"]
    assert 'name="secret" value="********"' in pages["signed"] and ">X-Team: shop</textarea>" in pages["signed"]
    email = pages["mail"]
    assert 'name="to" value="a@example.com, b@example.com"' in email
    assert 'name="from" value="guard@example.com"' in email and 'name="port" value="2525"' in email
    assert '<option value="starttls" selected>' in email and 'name="password" value="********"' in email
    assert 'name="timeout" value="10s"' in email and 'id="test-channel"' in email
    assert new_page.status == 200 and '<option value="email" selected>' in new_page.body
    assert 'data-channel-id=""' in new_page.body and ">Create channel<" in new_page.body


async def test_hostile_names_are_escaped(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str], queue: NotificationQueue
) -> None:
    admin = tokens["admin"]
    channel = await make(http, admin, "/api/alert-channels", {"name": f"hook{SCRIPT}", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/a"}})
    rule = await make(http, admin, "/api/alert-rules", threshold_rule(
        f"rule{SCRIPT}", description=SCRIPT, channels=[f"hook{SCRIPT}"], labels={"x": SCRIPT},
        filters={"service": [SCRIPT], "tags": {"k": SCRIPT}},
    ))  # fmt: skip
    await dead_letter(queue, SCRIPT, SCRIPT)
    browser = await browser_of(api, "admin@example.com")
    try:
        pages = [
            (await browser.call("GET", path)).body
            for path in ("/alerts", f"/alerts/rules/{rule['id']}", f"/alerts/channels/{channel['id']}")
        ]
    finally:
        await browser.close()
    for body in pages:
        assert SCRIPT not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


async def test_unknown_ids_are_404_and_pages_need_a_session(api: ApiExtension, tokens: dict[str, str]) -> None:
    browser = await browser_of(api, "admin@example.com")
    anonymous = ApiClient(f"http://127.0.0.1:{api.port}")
    try:
        missing_rule = await browser.call("GET", "/alerts/rules/999999")
        missing_channel = await browser.call("GET", "/alerts/channels/999999")
        bad = await browser.call("GET", "/alerts/rules/abc")
        away = await anonymous.call("GET", "/alerts/rules/1", allow_redirects=False)
    finally:
        await browser.close()
        await anonymous.close()
    assert missing_rule.status == 404 and "there is no alert rule 999999" in missing_rule.body
    assert missing_channel.status == 404 and "there is no alert channel 999999" in missing_channel.body
    assert "text/html" in missing_rule.headers["Content-Type"]
    assert bad.status == 400
    assert away.status == 303 and away.headers["Location"] == "/login?next=/alerts/rules/1"


def test_durations_read_back_as_they_are_shown() -> None:
    for seconds in (0.0, 0.2, 1.0, 59.0, 90.0, 300.0, 3600.0, 5400.0, 14400.0, 86400.0, 3725.5):
        assert parse_duration(duration(seconds)) == pytest.approx(seconds)
    assert [duration(s) for s in (0.0, 0.2, 90.0, 300.0, 86400.0)] == ["0s", "200ms", "1m30s", "5m", "24h"]


def test_conditions_in_words() -> None:
    rule = ThresholdRule.model_validate({"name": "r", "warning": 10, "per": [], "window": "10m", "for": "2m"})
    assert condition(rule) == "error count over 10m ≥ 10 (warning) for 2m"
    change = ThresholdRule(name="r", compare="percent_change", critical=50, measure="rate")
    assert condition(change) == "errors/s over 5m up on the window before by 50% (critical) per service, environment"
