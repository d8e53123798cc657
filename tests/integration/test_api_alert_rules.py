"""Alert rules and channels over HTTP, against the real PostgreSQL (and a real Prometheus for
metric rules): CRUD, roles, validation naming the field, secrets never shown, rules from a
file read-only, and the Prometheus export."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
import yaml
from aiohttp.test_utils import TestServer
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from alerting.rulefile import RuleFileError, sync
from alerting.store import NO_PROMETHEUS, RuleStore, parse_rule
from api.alerts import PROMETHEUS_URL
from api.app import build_app
from api.extension import ApiExtension
from api.services import Services
from tests.support.api import JWT_SECRET, ApiClient, api_config, client, running_api
from tests.support.prometheus import PrometheusServer, prometheus_binary

__all__ = ["prometheus_binary"]

SLACK_URL = "https://hooks.slack.com/services/T000/B000/very-secret-token"


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


async def sign_up(http: ApiClient) -> dict[str, str]:
    """Tokens of an admin, a member and a viewer."""
    admin = (await http.register("admin@example.com")).body
    member = (await http.register("member@example.com")).body
    viewer = (await http.register("viewer@example.com")).body
    changed = await http.call(
        "PATCH", f"/api/users/{viewer['user']['id']}", json={"role": "viewer"}, token=admin["access_token"]
    )
    assert changed.status == 200
    return {
        "admin": admin["access_token"],
        "member": member["access_token"],
        "viewer": viewer["access_token"],
        "member_id": str(member["user"]["id"]),
    }


@pytest.fixture
async def people(http: ApiClient) -> dict[str, str]:
    return await sign_up(http)


@pytest.fixture
async def rule_store(appguard_dsn: str) -> AsyncIterator[RuleStore]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(appguard_dsn, kwargs={"autocommit": True}, open=False)
    await pool.open(wait=True)
    try:
        yield RuleStore(pool)
    finally:
        await pool.close()


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


def threshold(name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "threshold", "name": name, "warning": 10, **extra}


def slack_channel(name: str = "team-slack", **spec: Any) -> dict[str, Any]:
    return {"name": name, "spec": {"type": "slack", "webhook_url": SLACK_URL, **spec}}


def error(reply: Any) -> tuple[int, str | None, str | None]:
    return reply.status, reply.error_code, reply.body["error"].get("field")


# --------------------------------------------------------------------------- rules


async def test_rules_are_created_read_changed_and_deleted(
    http: ApiClient, people: dict[str, str], appguard_dsn: str
) -> None:
    member, viewer = people["member"], people["viewer"]
    assert (await http.call("POST", "/api/alert-channels", json=slack_channel(), token=member)).status == 201
    spec = threshold(
        "Checkout errors",
        measure="rate",
        window="10m",
        critical=50,
        channels=["team-slack"],
        filters={"service": ["checkout"]},
        **{"for": "2m"},
    )
    made = await http.call("POST", "/api/alert-rules", json=spec, token=member)
    assert made.status == 201, made.body
    rule = made.body
    assert (rule["name"], rule["kind"], rule["enabled"], rule["source"], rule["version"]) == (
        "Checkout errors", "threshold", True, "api", 1,
    )  # fmt: skip
    assert rule["created_by"] == int(people["member_id"])
    assert (rule["spec"]["window"], rule["spec"]["for"], rule["spec"]["channels"]) == (600.0, 120.0, ["team-slack"])
    issue = await http.call(
        "POST", "/api/alert-rules", json={"kind": "issue", "name": "New", "when": "new_issue"}, token=member
    )
    assert issue.status == 201

    # Viewers read; the list filters by kind and enabled state.
    got = await http.call("GET", f"/api/alert-rules/{rule['id']}", token=viewer)
    assert got.status == 200 and got.body == rule
    listed = await http.call("GET", "/api/alert-rules", token=viewer)
    assert [r["name"] for r in listed.body["rules"]] == ["Checkout errors", "New"]
    only = await http.call("GET", "/api/alert-rules?kind=issue", token=viewer)
    assert [r["name"] for r in only.body["rules"]] == ["New"]
    assert [r["name"] for r in (await http.call("GET", "/api/alert-rules?limit=1", token=viewer)).body["rules"]] == [
        "Checkout errors"
    ]
    refused = await http.call("POST", "/api/alert-rules", json=threshold("viewer's"), token=viewer)
    assert (refused.status, refused.error_code) == (403, "forbidden")

    # PUT replaces the definition (renaming too) and counts the version up.
    changed = await http.call(
        "PUT", f"/api/alert-rules/{rule['id']}", json={**spec, "name": "Checkout", "warning": 20}, token=member
    )
    assert changed.status == 200, changed.body
    assert (changed.body["name"], changed.body["spec"]["warning"], changed.body["version"]) == ("Checkout", 20.0, 2)
    # PATCH enables and disables; the same state again is no change.
    off = await http.call("PATCH", f"/api/alert-rules/{rule['id']}", json={"enabled": False}, token=member)
    assert (off.status, off.body["enabled"], off.body["spec"]["enabled"], off.body["version"]) == (200, False, False, 3)
    again = await http.call("PATCH", f"/api/alert-rules/{rule['id']}", json={"enabled": False}, token=member)
    assert again.body["version"] == 3
    disabled = await http.call("GET", "/api/alert-rules?enabled=false", token=viewer)
    assert [r["name"] for r in disabled.body["rules"]] == ["Checkout"]
    assert rows(appguard_dsn, "SELECT name, kind, enabled, source, version FROM appguard.alert_rules ORDER BY id") == [
        ("Checkout", "threshold", False, "api", 3),
        ("New", "issue", True, "api", 1),
    ]

    assert (await http.call("DELETE", f"/api/alert-rules/{rule['id']}", token=member)).status == 204
    for method, body in (("GET", None), ("PUT", spec), ("PATCH", {"enabled": True}), ("DELETE", None)):
        gone = await http.call(method, f"/api/alert-rules/{rule['id']}", json=body, token=member)
        assert (gone.status, gone.error_code) == (404, "alert_rule_not_found"), method
    bad_id = await http.call("GET", "/api/alert-rules/abc", token=viewer)
    assert error(bad_id) == (400, "invalid_parameter", "id")
    assert rows(appguard_dsn, "SELECT name FROM appguard.alert_rules") == [("New",)]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (threshold("x", window="-5m"), "window", "not a duration"),
        (threshold("x", window=-300), "window", "greater than or equal to 0"),
        (threshold("x", window="0s"), "window", "longer than 0s"),
        ({"kind": "banana", "name": "x"}, "kind", "must be one of 'issue', 'threshold', 'metric'"),
        ({"name": "x", "warning": 1}, "kind", "required"),
        ({"kind": "issue", "name": "x", "when": "frequency"}, "events", "needs events or users"),
        ({"kind": "issue", "name": "x", "when": "sometimes"}, "when", "'new_issue', 'regression' or 'frequency'"),
        ({"kind": "threshold", "name": "x"}, "warning", "give warning or critical"),
        (threshold("x", critical=5), "critical", "must not be below warning"),
        (threshold("x", colour="red"), "colour", "unknown field"),
        (threshold("x", filters={"service": "checkout"}), "filters.service", "valid list"),
        (threshold("x", per=["service", "host"]), "per[1]", "'service' or 'environment'"),
        (threshold(""), "name", "at least 1 character"),
        (threshold("x", channels=["nowhere", "team-slack"]), "channels", "no channel named 'nowhere'"),
        ({"kind": "metric", "name": "x", "expr": "up == 0"}, "expr", NO_PROMETHEUS),
    ],
)
async def test_invalid_rules_are_refused_naming_the_field(
    http: ApiClient, people: dict[str, str], appguard_dsn: str, spec: dict[str, Any], field: str, words: str
) -> None:
    assert (await http.call("POST", "/api/alert-channels", json=slack_channel(), token=people["member"])).status == 201
    reply = await http.call("POST", "/api/alert-rules", json=spec, token=people["member"])
    assert error(reply) == (400, "invalid_request", field), reply.body
    message = reply.body["error"]["message"]
    assert message.startswith(f"{field}: ") and words in message, message
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.alert_rules") == [(0,)]


async def test_names_are_unique_and_bodies_must_be_objects(http: ApiClient, people: dict[str, str]) -> None:
    member = people["member"]
    first = await http.call("POST", "/api/alert-rules", json=threshold("Same"), token=member)
    second = await http.call("POST", "/api/alert-rules", json=threshold("Other"), token=member)
    assert (first.status, second.status) == (201, 201)
    dup = await http.call("POST", "/api/alert-rules", json=threshold("Same"), token=member)
    assert error(dup) == (409, "name_taken", "name")
    renamed = await http.call("PUT", f"/api/alert-rules/{second.body['id']}", json=threshold("Same"), token=member)
    assert error(renamed) == (409, "name_taken", "name")
    for raw in (b"[1, 2]", b"not json", b""):
        reply = await http.call(
            "POST", "/api/alert-rules", data=raw, token=member, headers={"Content-Type": "application/json"}
        )
        assert (reply.status, reply.error_code) == (400, "malformed_json"), raw
    several = await http.call("POST", "/api/alert-rules", json={"kind": "threshold", "window": "x"}, token=member)
    assert several.body["error"]["message"] == "name: required (and 1 more problem)"
    # Created together, one wins the name.
    racing = await asyncio.gather(
        *(http.call("POST", "/api/alert-rules", json=threshold("Raced", warning=n + 1), token=member) for n in range(5))
    )
    assert sorted(r.status for r in racing) == [201, 409, 409, 409, 409]
    patch = await http.call("PATCH", f"/api/alert-rules/{first.body['id']}", json={"enabled": "maybe"}, token=member)
    assert error(patch) == (400, "invalid_request", "enabled")


# --------------------------------------------------------------------------- channels


async def test_channel_secrets_are_never_returned_and_kept_on_put(
    http: ApiClient, people: dict[str, str], appguard_dsn: str
) -> None:
    member, viewer = people["member"], people["viewer"]
    made = await http.call("POST", "/api/alert-channels", json=slack_channel(channel="#ops"), token=member)
    assert made.status == 201, made.body
    assert made.body["spec"] == {
        "type": "slack",
        "webhook_url": "********",
        "channel": "#ops",
        "username": None,
        "timeout": 10.0,
    }
    assert (made.body["name"], made.body["type"], made.body["source"]) == ("team-slack", "slack", "api")
    hook = await http.call(
        "POST",
        "/api/alert-channels",
        json={"name": "hook", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s" * 20}},
        token=member,
    )
    assert hook.status == 201 and hook.body["spec"]["secret"] == "********"
    for reply in (
        await http.call("GET", "/api/alert-channels", token=viewer),
        await http.call("GET", f"/api/alert-channels/{made.body['id']}", token=viewer),
    ):
        assert reply.status == 200
        assert "very-secret-token" not in str(reply.body) and "s" * 20 not in str(reply.body)
    listed = (await http.call("GET", "/api/alert-channels", token=viewer)).body["channels"]
    assert [c["name"] for c in listed] == ["hook", "team-slack"]

    def stored(name: str) -> dict[str, Any]:
        return dict(rows(appguard_dsn, f"SELECT spec FROM appguard.alert_channels WHERE name = '{name}'")[0][0])

    assert stored("team-slack")["webhook_url"] == SLACK_URL
    path = f"/api/alert-channels/{made.body['id']}"
    # ******** keeps the stored secret, and so does leaving it out.
    kept = await http.call("PUT", path, json=slack_channel(webhook_url="********", channel="#alerts"), token=member)
    assert kept.status == 200 and kept.body["spec"]["channel"] == "#alerts"
    assert stored("team-slack")["webhook_url"] == SLACK_URL
    omitted = await http.call("PUT", path, json={"name": "team-slack", "spec": {"type": "slack"}}, token=member)
    assert omitted.status == 200 and stored("team-slack")["webhook_url"] == SLACK_URL
    replaced = await http.call("PUT", path, json=slack_channel(webhook_url="https://hooks.slack.com/new"), token=member)
    assert replaced.status == 200 and stored("team-slack")["webhook_url"] == "https://hooks.slack.com/new"
    # null removes an optional secret.
    hook_path = f"/api/alert-channels/{hook.body['id']}"
    cleared = await http.call(
        "PUT",
        hook_path,
        json={"name": "hook", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/x", "secret": None}},
        token=member,
    )
    assert cleared.status == 200 and cleared.body["spec"]["secret"] is None and stored("hook")["secret"] is None

    # The placeholder is never stored as a secret, and a new type keeps nothing.
    placeholder = await http.call(
        "POST", "/api/alert-channels", json=slack_channel("new", webhook_url="********"), token=member
    )
    assert error(placeholder) == (400, "invalid_request", "spec.webhook_url")
    retyped = await http.call(
        "PUT",
        path,
        json={"name": "team-slack", "spec": {"type": "webhook", "url": "http://127.0.0.1:9/", "secret": "********"}},
        token=member,
    )
    assert error(retyped) == (400, "invalid_request", "spec.secret")
    bad_url = await http.call(
        "POST", "/api/alert-channels", json=slack_channel("new", webhook_url="ftp://x"), token=member
    )
    assert error(bad_url) == (400, "invalid_request", "spec.webhook_url")
    bad_type = await http.call(
        "POST", "/api/alert-channels", json={"name": "new", "spec": {"type": "pigeon"}}, token=member
    )
    assert error(bad_type) == (400, "invalid_request", "spec.type")
    nameless = await http.call(
        "POST", "/api/alert-channels", json={"name": "", "spec": {"type": "slack"}}, token=member
    )
    assert error(nameless) == (400, "invalid_request", "name")
    dup = await http.call("POST", "/api/alert-channels", json=slack_channel("hook"), token=member)
    assert error(dup) == (409, "name_taken", "name")
    by_viewer = await http.call("POST", "/api/alert-channels", json=slack_channel("v"), token=viewer)
    assert by_viewer.status == 403


async def test_a_channel_rules_send_to_keeps_its_name_and_stays(
    http: ApiClient, people: dict[str, str], appguard_dsn: str
) -> None:
    member = people["member"]
    channel = (await http.call("POST", "/api/alert-channels", json=slack_channel(), token=member)).body
    rule = await http.call("POST", "/api/alert-rules", json=threshold("Uses it", channels=["team-slack"]), token=member)
    assert rule.status == 201
    path = f"/api/alert-channels/{channel['id']}"
    renamed = await http.call("PUT", path, json=slack_channel("renamed"), token=member)
    assert error(renamed) == (409, "channel_in_use", "name") and "'Uses it'" in renamed.body["error"]["message"]
    deleted = await http.call("DELETE", path, token=member)
    assert (deleted.status, deleted.error_code) == (409, "channel_in_use")
    # Once no rule sends to it, it can go.
    assert (
        await http.call("PUT", f"/api/alert-rules/{rule.body['id']}", json=threshold("Uses it"), token=member)
    ).status == 200
    assert (await http.call("PUT", path, json=slack_channel("renamed"), token=member)).status == 200
    assert (await http.call("DELETE", path, token=member)).status == 204
    missing = await http.call("GET", path, token=member)
    assert (missing.status, missing.error_code) == (404, "alert_channel_not_found")
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.alert_channels") == [(0,)]


# --------------------------------------------------------------------------- the rules file


RULES_FILE = """
channels:
  file-hook:
    type: webhook
    url: http://127.0.0.1:9/hook
    secret: ${env:APPGUARD_TEST_HOOK_SECRET}
rules:
  - name: From the file
    kind: threshold
    warning: 5
    channels: [file-hook, api-slack]
  - name: Also from the file
    kind: issue
    when: regression
"""


async def test_rules_from_a_file_are_synchronised_and_read_only(
    http: ApiClient,
    people: dict[str, str],
    rule_store: RuleStore,
    appguard_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    member = people["member"]
    monkeypatch.setenv("APPGUARD_TEST_HOOK_SECRET", "a-signing-secret-of-the-file")
    assert (await http.call("POST", "/api/alert-channels", json=slack_channel("api-slack"), token=member)).status == 201
    api_rule = (await http.call("POST", "/api/alert-rules", json=threshold("Made in the API"), token=member)).body
    path = tmp_path / "rules.yaml"
    path.write_text(RULES_FILE)

    report = await sync(rule_store, path)
    assert (report.rules_created, report.channels_created) == (["From the file", "Also from the file"], ["file-hook"])
    again = await sync(rule_store, path)
    assert again.rules_created == again.rules_updated == again.rules_deleted == []

    listed = (await http.call("GET", "/api/alert-rules", token=people["viewer"])).body["rules"]
    assert [(r["name"], r["source"]) for r in listed] == [
        ("Made in the API", "api"), ("From the file", "file"), ("Also from the file", "file"),
    ]  # fmt: skip
    file_rule = listed[1]
    rule_path = f"/api/alert-rules/{file_rule['id']}"
    for method, body in (("PUT", threshold("From the file")), ("PATCH", {"enabled": False}), ("DELETE", None)):
        refused = await http.call(method, rule_path, json=body, token=member)
        assert (refused.status, refused.error_code) == (409, "defined_in_file"), method
        assert "comes from the rules file" in refused.body["error"]["message"]
    channels = (await http.call("GET", "/api/alert-channels", token=member)).body["channels"]
    file_channel = next(c for c in channels if c["name"] == "file-hook")
    assert file_channel["source"] == "file" and file_channel["spec"]["secret"] == "********"
    refused = await http.call("DELETE", f"/api/alert-channels/{file_channel['id']}", token=member)
    assert (refused.status, refused.error_code) == (409, "defined_in_file")

    # Changed in the file: updated (its version counts up), the rule no longer there deleted.
    path.write_text(RULES_FILE.replace("warning: 5", "warning: 7").split("  - name: Also")[0])
    report = await sync(rule_store, path)
    assert (report.rules_updated, report.rules_deleted) == (["From the file"], ["Also from the file"])
    now = (await http.call("GET", rule_path, token=member)).body
    assert (now["spec"]["warning"], now["version"]) == (7.0, 2)

    # A file that clashes with the API changes nothing, and says where.
    before = rows(appguard_dsn, "SELECT id, name, spec, version FROM appguard.alert_rules ORDER BY id")
    path.write_text(
        RULES_FILE + "  - name: Made in the API\n    kind: issue\n    when: new_issue\n    channels: [nowhere]\n"
    )
    with pytest.raises(RuleFileError) as caught:
        await sync(rule_store, path)
    assert ("rules[2].name", "a rule made through the API has this name; rename one") in caught.value.problems
    assert ("rules[2].channels", "no channel named 'nowhere'") in caught.value.problems
    # A file channel an API rule sends to stays while the rule does.
    sends = threshold("Sends to the file", channels=["file-hook"])
    assert (await http.call("PUT", f"/api/alert-rules/{api_rule['id']}", json=sends, token=member)).status == 200
    path.write_text("rules: []\n")
    with pytest.raises(RuleFileError, match="'file-hook' is no longer in the file but rules 'Sends to the file'"):
        await sync(rule_store, path)
    renamed = rows(appguard_dsn, "SELECT id, name, spec, version FROM appguard.alert_rules ORDER BY id")
    assert [r[1] for r in renamed] == ["Sends to the file", "From the file"]
    assert renamed[1] == before[1]


async def test_a_stored_rule_this_version_cannot_read_is_not_evaluated(
    rule_store: RuleStore, appguard_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    made = await rule_store.create_rule(parse_rule(threshold("Readable")))
    with psycopg.connect(appguard_dsn) as conn:
        conn.execute(
            "INSERT INTO appguard.alert_rules (name, kind, spec) VALUES ('Old', 'threshold', %s)",
            (Jsonb({**threshold("Old"), "retired_option": True}),),
        )
    with caplog.at_level(logging.ERROR, logger="appguard.alerting"):
        enabled = await rule_store.enabled_rules()
    assert [(r.id, r.spec.name) for r in enabled] == [(made.rule.id, "Readable")]
    assert "cannot be evaluated" in caplog.text and "retired_option" in caplog.text


# --------------------------------------------------------------------------- Prometheus


def promtool() -> str | None:
    return os.environ.get("APPGUARD_PROMTOOL") or shutil.which("promtool")


async def test_the_prometheus_export(http: ApiClient, people: dict[str, str], tmp_path: Path) -> None:
    member = people["member"]
    for spec in (
        threshold("Checkout", filters={"service": ["checkout"]}, critical=20),
        threshold("Quiet", enabled=False),
        {"kind": "issue", "name": "New", "when": "new_issue"},
    ):
        assert (await http.call("POST", "/api/alert-rules", json=spec, token=member)).status == 201
    reply = await http.call("GET", "/api/alert-rules/prometheus.yml", token=people["viewer"])
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/yaml")
    doc = yaml.safe_load(reply.body)
    rules = doc["groups"][0]["rules"]
    assert [(r["alert"], r["labels"]["severity"]) for r in rules] == [("Checkout", "warning"), ("Checkout", "critical")]
    assert 'appguard_errors_total{service_name="checkout"}[5m]' in rules[0]["expr"]
    assert (await http.call("GET", "/api/alert-rules/prometheus.yml")).status == 401
    binary = promtool()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed; CI must check the export")
        return
    (tmp_path / "exported.yml").write_text(reply.body)
    args = [binary, "check", "rules", str(tmp_path / "exported.yml")]
    checked = await asyncio.to_thread(subprocess.run, args, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0 and "SUCCESS: 2 rules found" in checked.stdout, checked.stdout + checked.stderr


@contextlib.asynccontextmanager
async def api_with_prometheus(url: str, dsn: str, redis_url: str, prefix: str) -> AsyncIterator[ApiClient]:
    """The application with PROMETHEUS_URL set, served on a loopback port."""
    svc = await Services.open(api_config(dsn, redis_url, prefix), dsn=dsn, redis_url=redis_url, jwt_secret=JWT_SECRET)
    app = build_app(svc)
    app[PROMETHEUS_URL] = url
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    c = ApiClient(f"http://127.0.0.1:{server.port}")
    try:
        yield c
    finally:
        await c.close()
        await server.close()
        await svc.close()


async def test_metric_rules_are_checked_by_prometheus(
    prometheus_binary: str, tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    prom = PrometheusServer(prometheus_binary, tmp_path)
    await asyncio.to_thread(prom.start)
    try:
        async with api_with_prometheus(prom.url, appguard_dsn, redis_url, redis_prefix) as http:
            token = (await http.register("admin@example.com")).body["access_token"]
            metric = {"kind": "metric", "name": "Down", "expr": "up{job='x'} == 0", "for": "1m"}
            made = await http.call("POST", "/api/alert-rules", json=metric, token=token)
            assert made.status == 201, made.body
            assert made.body["spec"]["expr"] == "up{job='x'} == 0"
            bad = await http.call(
                "PUT",
                f"/api/alert-rules/{made.body['id']}",
                json={**metric, "expr": "sum(rate(up[5m]) by"},
                token=token,
            )
            assert error(bad) == (400, "invalid_request", "expr")
            assert bad.body["error"]["message"].startswith("expr: Prometheus cannot parse it: ")
            assert "parse error" in bad.body["error"]["message"]
            still = await http.call("GET", f"/api/alert-rules/{made.body['id']}", token=token)
            assert (still.body["version"], still.body["spec"]["expr"]) == (1, "up{job='x'} == 0")
            # Prometheus gone: the rule can be neither accepted nor refused.
            await asyncio.to_thread(prom.stop)
            away = await http.call("POST", "/api/alert-rules", json={**metric, "name": "Later"}, token=token)
            assert error(away) == (503, "prometheus_unavailable", "expr")
            assert away.headers["Retry-After"] == "5"
    finally:
        await asyncio.to_thread(prom.stop)


# --------------------------------------------------------------------------- OpenAPI


def check(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    content = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    jsonschema.Draft202012Validator({**content["schema"], "components": document["components"]}).validate(body)


async def test_answers_match_the_openapi_document(http: ApiClient, people: dict[str, str]) -> None:
    document = (await http.call("GET", "/api/openapi.json")).body
    member = people["member"]
    channel = await http.call("POST", "/api/alert-channels", json=slack_channel(), token=member)
    check(document, "/api/alert-channels", "post", 201, channel.body)
    check(
        document, "/api/alert-channels", "get", 200, (await http.call("GET", "/api/alert-channels", token=member)).body
    )
    for spec in (
        threshold("T", channels=["team-slack"], **{"for": "1m"}),
        {"kind": "issue", "name": "I", "when": "frequency", "events": 10},
    ):
        made = await http.call("POST", "/api/alert-rules", json=spec, token=member)
        check(document, "/api/alert-rules", "post", 201, made.body)
    check(document, "/api/alert-rules", "get", 200, (await http.call("GET", "/api/alert-rules", token=member)).body)
    bad = await http.call("POST", "/api/alert-rules", json=threshold("x", window="-1s"), token=member)
    check(document, "/api/alert-rules", "post", 400, bad.body)
    # The request schemas are the models' own: a rule needs its kind, a channel its type.
    rule_schema = document["paths"]["/api/alert-rules"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    resolved = document["components"]["schemas"][rule_schema["$ref"].rsplit("/", 1)[1]]
    assert resolved["discriminator"]["propertyName"] == "kind"
    with pytest.raises(jsonschema.ValidationError):
        check(document, "/api/alert-rules/{id}", "get", 200, {**made.body, "spec": {"kind": "threshold"}})
