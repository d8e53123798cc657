"""The alert evaluator against the real PostgreSQL (events written by ErrorStore) and a real
Prometheus scraping a gauge the test controls: every rule kind fires, filters exclude,
action intervals and restarts do not notify twice, ``for`` makes alerts pend, resolution is
emitted, and two replicas (the lease for periodic rules, the conditional claim for issue
rules) emit once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from psycopg_pool import AsyncConnectionPool

from alerting.evaluator import LEASE_KEY, Evaluator, Lease, alert_fingerprint
from alerting.model import (
    Alert,
    AlertState,
    IssueRule,
    MetricRule,
    RuleFilters,
    Severity,
    StoredRule,
    ThresholdRule,
)
from alerting.state import AlertStateStore
from exporters.errors.exporter import WrittenErrors
from storage.errors_store import ErrorEvent, ErrorStore
from tests.support.net import free_port
from tests.support.prometheus import PrometheusServer, prometheus_binary

__all__ = ["prometheus_binary"]

# Whole seconds, a minute back: events "now" are stored in today's partition and every window
# the tests evaluate is computed from this one instant.
NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
DASHBOARD = "https://guard.example.com"


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def event(fingerprint: str, seconds: float = 0, **fields: Any) -> ErrorEvent:
    """An event of ``fingerprint`` at ``NOW + seconds``."""
    fields.setdefault("type", "ValueError")
    fields.setdefault("message", f"bad value in {fingerprint}")
    fields.setdefault("service_name", "checkout")
    fields.setdefault("environment", "production")
    fields.setdefault("culprit", "shop.cart.total")
    return ErrorEvent(fingerprint=fingerprint, timestamp=at(seconds), event_id=uuid.uuid4(), **fields)


@dataclass
class Sink:
    """What an evaluator emitted; ``delay`` holds each emission open, ``fail`` refuses some."""

    alerts: list[Alert] = field(default_factory=list)
    delay: float = 0.0
    fail: int = 0

    async def emit(self, alert: Alert, rule: StoredRule) -> None:
        assert alert.rule_id == rule.id
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the notification queue is down")
        if self.delay:
            await asyncio.sleep(self.delay)
        self.alerts.append(alert)

    def take(self) -> list[Alert]:
        taken, self.alerts = self.alerts, []
        return taken


@dataclass
class Rules:
    """The rules the evaluators see; tests edit the list between evaluations."""

    items: list[StoredRule] = field(default_factory=list)

    def add(self, rule_id: int, spec: IssueRule | ThresholdRule | MetricRule) -> StoredRule:
        stored = StoredRule(id=rule_id, project_id=1, spec=spec)
        self.items.append(stored)
        return stored

    def replace(self, rule_id: int, spec: IssueRule | ThresholdRule | MetricRule) -> None:
        self.items = [StoredRule(r.id, r.project_id, spec) if r.id == rule_id else r for r in self.items]

    async def __call__(self) -> list[StoredRule]:
        return list(self.items)


async def open_pool(dsn: str, size: int = 4) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    return pool


@pytest.fixture
async def errors(appguard_dsn: str) -> AsyncIterator[ErrorStore]:
    opened = await ErrorStore.open(appguard_dsn, run_migrations=False)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def rules() -> Rules:
    return Rules()


Factory = Callable[..., Awaitable[Evaluator]]


@pytest.fixture
async def make(appguard_dsn: str, rules: Rules) -> AsyncIterator[Factory]:
    """``await make(sink, prometheus_url=None)``: an evaluator with a pool and a lease of its own,
    as a replica would have; all are stopped at the end."""
    made: list[tuple[Evaluator, AsyncConnectionPool[Any]]] = []

    async def build(sink: Sink, *, prometheus_url: str | None = None) -> Evaluator:
        pool = await open_pool(appguard_dsn)
        evaluator = Evaluator(
            pool,
            AlertStateStore(pool),
            rules,
            sink.emit,
            prometheus_url=prometheus_url,
            dashboard_url=DASHBOARD,
            lease=Lease(appguard_dsn),
            interval=0.2,
        )
        made.append((evaluator, pool))
        return evaluator

    yield build
    for evaluator, pool in made:
        await evaluator.stop()
        await pool.close()


@pytest.fixture
async def states(appguard_dsn: str) -> AsyncIterator[AlertStateStore]:
    pool = await open_pool(appguard_dsn, size=2)
    try:
        yield AlertStateStore(pool)
    finally:
        await pool.close()


async def write(errors: ErrorStore, *events: ErrorEvent) -> WrittenErrors:
    report = await errors.write_events(list(events))
    return WrittenErrors("errors", list(events), report)


async def issue_id(errors: ErrorStore, fingerprint: str) -> int:
    found = await errors.find_issue(fingerprint)
    assert found is not None
    return found.id


# --------------------------------------------------------------------------- issue rules


async def test_new_issue_rule_fires_for_issues_matching_its_filters(errors: ErrorStore, rules: Rules, make: Factory) -> None:
    rule = rules.add(
        1,
        IssueRule(
            name="New checkout errors",
            when="new_issue",
            filters=RuleFilters(service=["checkout"], environment=["production"], tags={"region": "eu", "beta": "true"}),
            labels={"team": "payments"},
            severity=Severity.CRITICAL,
        ),
    )
    rules.add(2, IssueRule(name="Fatal KeyErrors", when="new_issue", filters=RuleFilters(level=["fatal"], exception_type=["KeyError"])))
    sink = Sink()
    evaluator = await make(sink)
    eu = {"region": "eu", "beta": True}
    written = await write(
        errors,
        event("match", -30, attributes=eu, user_id="alice"),
        event("match", -20, attributes=eu, user_id="bob"),
        event("other-service", attributes=eu, service_name="search"),
        event("other-env", attributes=eu, environment="staging"),
        event("other-region", attributes={"region": "us", "beta": True}),
        event("no-beta", attributes={"region": "eu"}),
        event("fatal-key", type="KeyError", level="fatal"),
        event("error-key", type="KeyError", level="error"),
        event("fatal-value", type="ValueError", level="fatal"),
    )

    await evaluator.errors_written(written, now=NOW)

    by_rule = {a.rule_id: a for a in sink.alerts}
    assert len(sink.alerts) == 2 and set(by_rule) == {1, 2}
    match_id = await issue_id(errors, "match")
    alert = by_rule[1]
    issue = await errors.get_issue(match_id)
    assert issue is not None
    assert alert.labels == {
        "alertname": "New checkout errors",
        "rule": "1",
        "severity": "critical",
        "issue_id": str(match_id),
        "service": "checkout",
        "environment": "production",
        "team": "payments",
    }
    assert (alert.status, alert.kind, alert.severity, alert.rule_name) == ("firing", "issue", Severity.CRITICAL, rule.spec.name)
    assert alert.annotations["summary"] == f"New issue: {issue.title}"
    assert alert.fingerprint == alert_fingerprint(1, {"issue_id": str(match_id)})
    assert alert.url == f"{DASHBOARD}/issues/{match_id}"
    assert alert.starts_at == NOW and alert.ends_at is None
    assert alert.issue == {
        "id": match_id,
        "title": issue.title,
        "culprit": "shop.cart.total",
        "level": "error",
        "count": 2,
        "users": 2,
        "service": "checkout",
        "environment": "production",
        "first_seen": at(-30).isoformat(),
        "last_seen": at(-20).isoformat(),
    }
    assert by_rule[2].labels["issue_id"] == str(await issue_id(errors, "fatal-key"))

    # More events of an existing issue are not a new issue.
    await evaluator.errors_written(await write(errors, event("match", 5, attributes=eu)), now=at(10))
    assert len(sink.alerts) == 2


async def test_regression_rule_fires_when_a_resolved_issue_comes_back(errors: ErrorStore, rules: Rules, make: Factory) -> None:
    rules.add(1, IssueRule(name="Regressions", when="regression", action_interval=600))
    rules.add(2, IssueRule(name="New", when="new_issue", filters=RuleFilters(service=["nowhere"])))
    sink = Sink()
    evaluator = await make(sink)
    await evaluator.errors_written(await write(errors, event("flaky", -60)), now=NOW)
    assert sink.alerts == []

    # Regressions need events after the resolution, which happens now, in real time (the
    # module's NOW may be minutes old in a long run): an event a minute from now.
    flaky = await issue_id(errors, "flaky")
    assert await errors.set_issue_status(flaky, "resolved")
    later = (datetime.now(UTC) - NOW).total_seconds() + 60
    await evaluator.errors_written(await write(errors, event("flaky", later)), now=at(later + 1))

    [alert] = sink.take()
    assert alert.rule_id == 1 and alert.labels["issue_id"] == str(flaky)
    assert alert.annotations["summary"].startswith("Regression: ")

    # Resolved and regressed again within the action interval: quiet; after it: notified.
    assert await errors.set_issue_status(flaky, "resolved")
    await evaluator.errors_written(await write(errors, event("flaky", later + 10)), now=at(later + 11))
    assert sink.take() == []
    assert await errors.set_issue_status(flaky, "resolved")
    await evaluator.errors_written(await write(errors, event("flaky", later + 20)), now=at(later + 602))
    assert [a.labels["issue_id"] for a in sink.take()] == [str(flaky)]


async def test_frequency_rule_counts_the_window_and_keeps_quiet_for_the_action_interval(
    errors: ErrorStore, rules: Rules, make: Factory, states: AlertStateStore
) -> None:
    rules.add(
        1,
        IssueRule(
            name="Busy issue", when="frequency", events=3, window=600, action_interval=1800,
            filters=RuleFilters(level=["error"]),
        ),
    )
    rules.add(2, IssueRule(name="Many users", when="frequency", users=2, window=600))
    sink = Sink()
    evaluator = await make(sink)

    # Five events an hour ago (out of the window) and three warnings (filtered out) do not count.
    await evaluator.errors_written(
        await write(errors, *(event("busy", -3600 - n) for n in range(5)), *(event("busy", -5 - n, level="warning") for n in range(3))),
        now=NOW,
    )
    await evaluator.errors_written(await write(errors, *(event("busy", -100 + n) for n in range(3))), now=NOW)
    assert sink.alerts == []

    await evaluator.errors_written(await write(errors, event("busy", -1)), now=NOW)
    [alert] = sink.take()
    busy = await issue_id(errors, "busy")
    assert alert.labels["issue_id"] == str(busy) and alert.rule_id == 1
    assert alert.value == 4.0
    assert alert.annotations["summary"].endswith("4 events in the last 10m")
    assert alert.issue is not None and alert.issue["count"] == 12

    # Still busy a minute later: within the action interval, nothing; nor after a restart.
    await evaluator.errors_written(await write(errors, event("busy", 50), event("busy", 55)), now=at(60))
    restarted = await make(sink)
    await restarted.errors_written(await write(errors, event("busy", 100)), now=at(120))
    assert sink.take() == []

    # After the interval, only events in the window count: two are not enough, four are.
    await restarted.errors_written(await write(errors, *(event("busy", 1790 + n) for n in range(2))), now=at(1801))
    assert sink.take() == []
    await restarted.errors_written(await write(errors, *(event("busy", 1795 + n) for n in range(2))), now=at(1801))
    [again] = sink.take()
    assert again.value == 4.0 and again.starts_at == at(1801)
    got = await states.get(1, alert.fingerprint)
    assert got is not None and got.last_notified_at == at(1801)

    # Distinct users (by id, else by email): the same user many times is one.
    await restarted.errors_written(await write(errors, *(event("one-user", n, user_id="alice") for n in range(3))), now=at(10))
    assert sink.take() == []
    await restarted.errors_written(
        await write(errors, event("three-users", 1, user_id="alice"), event("three-users", 2, user_id="bob"),
                    event("three-users", 3, user_email="carol@example.com")),
        now=at(10),
    )
    [users] = sink.take()
    assert users.rule_id == 2 and users.value == 3.0
    assert users.labels["issue_id"] == str(await issue_id(errors, "three-users"))
    assert "3 users" in users.annotations["summary"]


async def test_two_observers_of_the_same_issue_notify_once(errors: ErrorStore, rules: Rules, make: Factory) -> None:
    rules.add(1, IssueRule(name="Busy issue", when="frequency", events=2, window=600))
    rules.add(2, IssueRule(name="New", when="new_issue"))
    # Each emission is held open, so the other replica's claim really waits on it.
    sink = Sink(delay=0.3)
    first, second = await make(sink), await make(sink)
    seed = await write(errors, event("shared", -10))
    # Both replicas hear of the same write (as observers of a shared exporter would)...
    await asyncio.gather(first.errors_written(seed, now=NOW), second.errors_written(seed, now=NOW))
    assert [a.rule_id for a in sink.take()] == [2]

    # ...and of writes of their own, both pushing the issue over the threshold.
    mine, theirs = await write(errors, event("shared", -5), event("shared", -4)), await write(errors, event("shared", -3))
    await asyncio.gather(first.errors_written(mine, now=NOW), second.errors_written(theirs, now=NOW))

    [alert] = sink.take()
    assert alert.rule_id == 1 and alert.value == 4.0


# --------------------------------------------------------------------------- threshold rules


def threshold(**fields: Any) -> ThresholdRule:
    fields.setdefault("name", "Error count")
    return ThresholdRule(**fields)


async def test_threshold_rule_pends_fires_escalates_and_resolves(
    errors: ErrorStore, rules: Rules, make: Factory, states: AlertStateStore
) -> None:
    rule = rules.add(
        1,
        threshold(
            window=300, warning=3, critical=6, **{"for": 60}, filters=RuleFilters(level=["error"]), labels={"team": "shop"}
        ),
    )
    sink = Sink()
    evaluator = await make(sink)
    await errors.write_events(
        [
            *(event("a", -100 + 20 * n) for n in range(4)),
            *(event("w", -50 + n, level="warning") for n in range(5)),  # filtered out
            event("b", -10, service_name="search"),
        ]
    )

    assert await evaluator.evaluate_once(NOW)
    assert sink.alerts == []
    group = {"service": "checkout", "environment": "production"}
    fingerprint = alert_fingerprint(1, group)
    pending = await states.get(1, fingerprint)
    assert pending is not None
    assert (pending.state, pending.severity, pending.value, pending.active_since) == (
        AlertState.PENDING, Severity.WARNING, 4.0, NOW,
    )
    assert set(await states.load(1)) == {fingerprint}  # search has 1 error: below both levels

    await evaluator.evaluate_once(at(30))
    assert sink.alerts == []

    await evaluator.evaluate_once(at(61))
    [fired] = sink.take()
    assert (fired.status, fired.severity, fired.value, fired.kind) == ("firing", Severity.WARNING, 4.0, "threshold")
    assert fired.labels == {**group, "alertname": "Error count", "rule": "1", "severity": "warning", "team": "shop"}
    assert fired.starts_at == NOW and fired.fingerprint == f"{fingerprint}:warning"
    assert fired.url == f"{DASHBOARD}/issues?service=checkout&environment=production"
    assert fired.annotations["summary"] == "checkout/production: 4 errors in the last 5m"

    await errors.write_events([event("a", 50 + n) for n in range(3)])
    await evaluator.evaluate_once(at(90))
    # The warning version ends (its labels no longer name the alert) and the critical one fires.
    [ended, escalated] = sink.take()
    assert (ended.status, ended.severity, ended.fingerprint) == ("resolved", Severity.WARNING, f"{fingerprint}:warning")
    assert ended.labels["severity"] == "warning"
    assert (escalated.status, escalated.severity, escalated.value) == ("firing", Severity.CRITICAL, 7.0)
    assert escalated.labels["severity"] == "critical" and escalated.fingerprint == f"{fingerprint}:critical"
    await evaluator.evaluate_once(at(100))
    assert sink.alerts == []

    # Every event has left the window.
    await evaluator.evaluate_once(at(500))
    [resolved] = sink.take()
    assert (resolved.status, resolved.severity, resolved.ends_at, resolved.value) == ("resolved", Severity.CRITICAL, at(500), 0.0)
    assert resolved.fingerprint == f"{fingerprint}:critical" and resolved.starts_at == NOW
    await evaluator.evaluate_once(at(510))
    assert sink.alerts == []

    history = await states.history(rule.id)
    assert [(t.from_state, t.to_state, t.severity, t.at) for t in reversed(history)] == [
        (AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING, NOW),
        (AlertState.PENDING, AlertState.FIRING, Severity.WARNING, at(61)),
        (AlertState.FIRING, AlertState.FIRING, Severity.CRITICAL, at(90)),
        (AlertState.FIRING, AlertState.RESOLVED, Severity.CRITICAL, at(500)),
    ]
    health = await states.health(1)
    assert health is not None and health.last_error is None and health.last_ok_at == at(510)


async def test_a_condition_that_stops_before_for_does_not_fire(errors: ErrorStore, rules: Rules, make: Factory, states: AlertStateStore) -> None:
    rules.add(1, threshold(window=60, warning=2, per=["service"], **{"for": 120}))
    sink = Sink()
    evaluator = await make(sink)
    await errors.write_events([event("a", -30), event("a", -20)])

    await evaluator.evaluate_once(NOW)
    await evaluator.evaluate_once(at(100))  # the events left the one-minute window

    assert sink.alerts == []
    [instance] = (await states.load(1)).values()
    assert (instance.state, instance.active_since, instance.labels["service"]) == (AlertState.INACTIVE, None, "checkout")


async def test_percent_change_and_rate(errors: ErrorStore, rules: Rules, make: Factory) -> None:
    rules.add(1, threshold(name="Spike", compare="percent_change", window=300, warning=150, critical=400, per=["service"]))
    rules.add(2, threshold(name="Rate", measure="rate", window=60, warning=0.2, per=[]))
    sink = Sink()
    evaluator = await make(sink)
    await errors.write_events(
        [
            # a: 2 events in the previous five minutes, 6 in the last: +200 %
            event("a", -400, service_name="a"), event("a", -350, service_name="a"),
            *(event("a", -200 + 10 * n, service_name="a") for n in range(6)),
            # b: none before, one now: +100 % (the previous window counts as one event)
            event("b", -100, service_name="b"),
            # c: none before, 5 now: +500 %
            *(event("c", -250 + n, service_name="c") for n in range(5)),
            # d: 10 before, 10 now: no change
            *(event("d", -500 + n, service_name="d") for n in range(10)),
            *(event("d", -150 + n, service_name="d") for n in range(10)),
            # e: none before, 15 in the last minute: +1500 %, and all services' rate is 15/60
            *(event("e", -30 + 2 * n, service_name="e") for n in range(15)),
        ]
    )

    await evaluator.evaluate_once(NOW)

    spikes = {a.labels["service"]: a for a in sink.alerts if a.rule_id == 1}
    assert {s: (a.severity, a.value) for s, a in spikes.items()} == {
        "a": (Severity.WARNING, 200.0),
        "c": (Severity.CRITICAL, 500.0),
        "e": (Severity.CRITICAL, 1500.0),
    }
    assert spikes["a"].annotations["summary"] == "a: errors +200% (6 in the last 5m against 2 in the 5m before)"
    assert spikes["a"].url == f"{DASHBOARD}/issues?service=a"
    [rate] = [a for a in sink.alerts if a.rule_id == 2]
    assert (rate.severity, rate.value) == (Severity.WARNING, pytest.approx(15 / 60))
    assert rate.annotations["summary"] == "all services: 0.25 errors/s over the last 1m"
    assert "service" not in rate.labels and "environment" not in rate.labels
    assert rate.url == f"{DASHBOARD}/issues"


async def test_a_failed_emit_is_tried_again_and_a_disabled_rule_resolves(
    errors: ErrorStore, rules: Rules, make: Factory, states: AlertStateStore
) -> None:
    spec = threshold(window=600, warning=1, per=["service"])
    rules.add(1, spec)
    sink = Sink(fail=1)
    evaluator = await make(sink)
    await errors.write_events([event("a", -10)])

    await evaluator.evaluate_once(NOW)
    assert sink.alerts == []
    assert await states.load(1) == {} and await states.history(1) == []  # rolled back
    health = await states.health(1)
    assert health is not None and "notification queue is down" in (health.last_error or "")

    await evaluator.evaluate_once(at(10))
    [fired] = sink.take()
    assert fired.status == "firing" and fired.starts_at == at(10)

    rules.replace(1, spec.model_copy(update={"enabled": False}))
    await evaluator.evaluate_once(at(20))
    [resolved] = sink.take()
    assert (resolved.status, resolved.ends_at) == ("resolved", at(20))
    await evaluator.evaluate_once(at(30))
    assert sink.alerts == []


async def test_a_restarted_evaluator_continues_where_the_last_one_stopped(
    errors: ErrorStore, rules: Rules, make: Factory
) -> None:
    rules.add(1, threshold(window=600, warning=1, per=["service"], **{"for": 60}))
    rules.add(2, threshold(name="Immediate", window=600, warning=1, per=["environment"]))
    sink = Sink()
    await errors.write_events([event("a", -10)])
    first = await make(sink)
    await first.evaluate_once(NOW)
    assert [a.rule_id for a in sink.take()] == [2]
    await first.stop()

    second = await make(sink)
    await second.evaluate_once(at(61))
    # Rule 1 was pending since NOW, so it fires now; rule 2 was firing already: not again.
    [fired] = sink.take()
    assert fired.rule_id == 1 and fired.starts_at == NOW
    await second.stop()

    third = await make(sink)
    await third.evaluate_once(at(70))
    assert sink.alerts == []


# --------------------------------------------------------------------------- the lease


async def lease_holder(dsn: str) -> int | None:
    """The backend pid holding the evaluation lease's advisory lock, if any."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid::bigint = %s AND objid::bigint = %s",
            (LEASE_KEY >> 32, LEASE_KEY & 0xFFFFFFFF),
        )
        row = await cur.fetchone()
        return None if row is None else int(row[0])


async def test_two_evaluators_with_the_lease_emit_once(
    errors: ErrorStore, rules: Rules, make: Factory, appguard_dsn: str
) -> None:
    rules.add(1, threshold(window=600, warning=1, per=["service"]))
    sink = Sink(delay=0.1)
    evaluators = [await make(sink), await make(sink)]
    await errors.write_events([event("a", -10)])

    ran = await asyncio.gather(*(e.evaluate_once(NOW) for e in evaluators))

    assert sorted(ran) == [False, True]
    assert [a.status for a in sink.take()] == ["firing"]
    holder, other = (evaluators[0], evaluators[1]) if ran[0] else (evaluators[1], evaluators[0])
    assert not await other.evaluate_once(at(5))

    # The holder stops: the other takes over without notifying again.
    await holder.stop()
    assert await other.evaluate_once(at(10))
    assert sink.take() == []

    # The new holder's session dies (a crash, a network cut): the lock goes with it.
    pid = await lease_holder(appguard_dsn)
    assert pid is not None
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    await errors.write_events([event("a", 600)])  # still firing a while later

    assert await holder.evaluate_once(at(650))
    assert not await other.evaluate_once(at(655))
    assert sink.take() == []
    assert await holder.evaluate_once(at(1400))  # every event has left the window
    assert [(a.status, a.ends_at) for a in sink.take()] == [("resolved", at(1400))]


async def test_run_evaluates_periodically_until_stopped(errors: ErrorStore, rules: Rules, make: Factory) -> None:
    rules.add(1, threshold(window=3600, warning=1, per=["service"]))
    sink = Sink()
    await errors.write_events([event("a", 0)])
    evaluator = await make(sink)

    task = asyncio.create_task(evaluator.run())
    for _ in range(100):
        if sink.alerts:
            break
        await asyncio.sleep(0.05)
    await evaluator.stop()
    await asyncio.wait_for(task, 5)

    assert [a.status for a in sink.alerts] == ["firing"]


# --------------------------------------------------------------------------- metric rules


@pytest.fixture
def gauge() -> Iterator[tuple[Gauge, str]]:
    """A gauge on a prometheus_client HTTP server of the test's own; (gauge, target)."""
    registry = CollectorRegistry()
    depth = Gauge("appguard_test_queue_depth", "Messages waiting", ["queue"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield depth, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_metric_rules_against_prometheus(
    prometheus_binary: str,
    tmp_path: Path,
    gauge: tuple[Gauge, str],
    rules: Rules,
    make: Factory,
    states: AlertStateStore,
) -> None:
    depth, target = gauge
    depth.labels(queue="emails").set(12)
    depth.labels(queue="sms").set(1)
    spec = MetricRule.model_validate(
        {
            "name": "Queue backlog",
            "expr": "appguard_test_queue_depth > 5",
            "for": "30s",
            "severity": "critical",
            "labels": {"team": "ops"},
            "annotations": {"summary": "queue {{ $labels.queue }} is {{ $value }} deep", "runbook": "https://wiki/queues"},
        }
    )
    rules.add(1, spec)
    rules.add(2, MetricRule(name="Never", expr="vector(0) > 1"))
    sink = Sink()
    with PrometheusServer(prometheus_binary, tmp_path, targets=[target]) as prom:
        prom.wait_for_value('appguard_test_queue_depth{queue="emails"}', 12)
        evaluator = await make(sink, prometheus_url=prom.url + "/")
        start = datetime.now(UTC)

        await evaluator.evaluate_once(start)
        assert sink.alerts == []
        series = {"instance": target, "job": "appguard", "queue": "emails"}
        fingerprint = alert_fingerprint(1, series)
        pending = await states.get(1, fingerprint)
        assert pending is not None and (pending.state, pending.value) == (AlertState.PENDING, 12.0)
        assert set(await states.load(1)) == {fingerprint}
        assert await states.load(2) == {}

        await evaluator.evaluate_once(start + timedelta(seconds=31))
        [fired] = sink.take()
        assert (fired.status, fired.kind, fired.severity, fired.value) == ("firing", "metric", Severity.CRITICAL, 12.0)
        assert fired.labels == {**series, "team": "ops", "alertname": "Queue backlog", "rule": "1", "severity": "critical"}
        assert fired.annotations["summary"] == "queue emails is 12 deep"
        assert fired.annotations["runbook"] == "https://wiki/queues"
        assert fired.url is not None and fired.url.startswith(f"{prom.url}/graph?g0.expr=appguard_test_queue_depth")
        assert fired.starts_at == start

        # A query Prometheus refuses changes nothing and is recorded.
        rules.replace(1, spec.model_copy(update={"expr": "appguard_test_queue_depth >"}))
        await evaluator.evaluate_once(start + timedelta(seconds=40))
        assert sink.alerts == []
        still = await states.get(1, fingerprint)
        assert still is not None and still.state is AlertState.FIRING
        health = await states.health(1)
        assert health is not None and "bad_data" in (health.last_error or "")
        assert health.last_ok_at == start + timedelta(seconds=31)

        rules.replace(1, spec)
        depth.labels(queue="emails").set(0)
        prom.wait_for_value('appguard_test_queue_depth{queue="emails"}', 0)
        later = max(datetime.now(UTC), start + timedelta(seconds=41))
        await evaluator.evaluate_once(later)
        [resolved] = sink.take()
        assert (resolved.status, resolved.fingerprint, resolved.ends_at) == ("resolved", f"{fingerprint}:critical", later)
        health = await states.health(1)
        assert health is not None and health.last_error is None


async def test_metric_rules_without_prometheus_are_recorded_as_failing(rules: Rules, make: Factory, states: AlertStateStore) -> None:
    rules.add(1, MetricRule(name="Up", expr="up"))
    evaluator = await make(Sink(), prometheus_url=None)
    await evaluator.evaluate_once(NOW)
    health = await states.health(1)
    assert health is not None and "no Prometheus URL" in (health.last_error or "")
    assert await states.load(1) == {}

