"""Alert grouping against real Redis: group_wait, group_interval and repeat_interval, resolved
alerts sent once, grouping by labels and channels, a burst of new issues as one notification,
and dispatchers on several replicas flushing at the same time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
import redis.asyncio as aioredis

from alerting.codec import decode_notification
from alerting.grouping import Dispatcher
from alerting.model import Alert, Grouping, IssueRule, Notification, Severity, StoredRule
from alerting.queue import NotificationQueue, QueueConfig, Worker
from tests.integration.test_alert_queue import FAST, RecordingChannel, eventually, running

T0 = 1_700_000_000.0
TIMINGS = Grouping(group_wait=0.2, group_interval=0.5, repeat_interval=2.0)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def alert(
    fp: str,
    status: Literal["firing", "resolved"] = "firing",
    *,
    rule_id: int = 1,
    value: float | None = None,
    kind: Literal["issue", "threshold", "metric"] = "threshold",
    severity: Severity = Severity.WARNING,
    **labels: str,
) -> Alert:
    name = f"rule {rule_id}"
    return Alert(
        rule_id=rule_id,
        rule_name=name,
        kind=kind,
        fingerprint=fp,
        status=status,
        severity=severity,
        labels={"alertname": name, "rule": str(rule_id), "severity": severity.value, **labels},
        annotations={"summary": f"issue {fp}"},
        starts_at=datetime(2024, 5, 1, tzinfo=UTC),
        ends_at=datetime(2024, 5, 2, tzinfo=UTC) if status == "resolved" else None,
        value=value,
    )


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis_client = aioredis.Redis.from_url(redis_url)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


@pytest.fixture
def queue(client: aioredis.Redis, redis_prefix: str) -> NotificationQueue:
    return NotificationQueue(client, prefix=redis_prefix, config=QueueConfig.model_validate(FAST))


async def queued(queue: NotificationQueue) -> list[Notification]:
    """Every notification in the queue's stream, oldest first."""
    entries: Any = await queue.client.xrange(queue.stream_key)
    return [decode_notification(fields[b"n"]) for _, fields in entries]


def summary(notification: Notification) -> list[tuple[str, str]]:
    return [(a.fingerprint, a.status) for a in notification.alerts]


async def group_keys(client: aioredis.Redis, prefix: str) -> list[bytes]:
    return [k async for k in client.scan_iter(match=prefix + "group*")]


async def test_wait_interval_repeat_and_resolved_alerts(
    queue: NotificationQueue, client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock, dashboard_url="http://127.0.0.1:8080/alerts")

    async def submit(at: float, a: Alert) -> None:
        clock.now = T0 + at
        await dispatcher.submit(a, channels=["ops"], grouping=TIMINGS)

    async def flush(at: float) -> int:
        return await dispatcher.flush_due(T0 + at)

    await submit(0.0, alert("a1"))
    assert await flush(0.1) == 0
    assert await flush(0.2) == 1  # group_wait after the first alert
    await submit(0.3, alert("a2"))
    assert await flush(0.6) == 0
    assert await flush(0.7) == 1  # group_interval after the last send
    await submit(0.8, alert("a1", value=5.0))  # a newer version, still firing: no change
    assert await flush(1.2) == 0
    assert await flush(2.69) == 0
    assert await flush(2.7) == 1  # repeat_interval after the last send
    await submit(3.0, alert("a1", "resolved"))
    assert await flush(3.1) == 0
    assert await flush(3.2) == 1  # the change waits for group_interval
    assert await flush(5.19) == 0
    assert await flush(5.2) == 1  # repeated without the resolved alert
    await submit(5.5, alert("a2", "resolved"))
    assert await flush(5.7) == 1
    assert await flush(1000) == 0

    sent = await queued(queue)
    assert [summary(n) for n in sent] == [
        [("a1", "firing")],
        [("a1", "firing"), ("a2", "firing")],
        [("a1", "firing"), ("a2", "firing")],
        [("a2", "firing"), ("a1", "resolved")],
        [("a2", "firing")],
        [("a2", "resolved")],
    ]
    assert sent[2].alerts[0].value == 5.0  # the latest version of a1
    assert [n.created_at.timestamp() for n in sent] == [T0 + s for s in (0.2, 0.7, 2.7, 3.2, 5.2, 5.7)]
    assert len({n.id for n in sent}) == 6
    assert [n.id.rsplit(":", 1)[1] for n in sent] == ["1", "2", "3", "4", "5", "6"]
    assert {n.group_key for n in sent} == {sent[0].group_key}
    assert all(n.id.startswith(n.group_key + ":") for n in sent)
    assert {(n.channel, n.dashboard_url) for n in sent} == {("ops", "http://127.0.0.1:8080/alerts")}
    assert sent[0].group_labels == {"rule": "1"}
    # Nothing left: the group was deleted with its last alert.
    assert await group_keys(client, redis_prefix) == []


async def test_alerts_resolved_before_being_sent_are_not_sent(
    queue: NotificationQueue, client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    await dispatcher.submit(alert("x1"), channels=["ops"], grouping=TIMINGS)
    await dispatcher.submit(alert("x2"), channels=["ops"], grouping=TIMINGS)
    await dispatcher.submit(alert("x1", "resolved"), channels=["ops"], grouping=TIMINGS)
    # A resolved alert nobody heard of makes no group.
    await dispatcher.submit(alert("y1", "resolved", rule_id=2), channels=["ops"], grouping=TIMINGS)
    # A group whose only alert resolved before its first send disappears.
    await dispatcher.submit(alert("z1", rule_id=3), channels=["ops"], grouping=TIMINGS)
    await dispatcher.submit(alert("z1", "resolved", rule_id=3), channels=["ops"], grouping=TIMINGS)
    assert len(await group_keys(client, redis_prefix)) == 2  # rule 1's group and the due index
    assert await dispatcher.flush_due(T0 + 1) == 1
    assert [summary(n) for n in await queued(queue)] == [[("x2", "firing")]]


async def test_a_status_that_flaps_back_is_no_change(queue: NotificationQueue) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    await dispatcher.submit(alert("a1"), channels=["ops"], grouping=TIMINGS)
    assert await dispatcher.flush_due(T0 + 0.2) == 1
    clock.now = T0 + 0.3
    await dispatcher.submit(alert("a1", "resolved"), channels=["ops"], grouping=TIMINGS)
    await dispatcher.submit(alert("a1"), channels=["ops"], grouping=TIMINGS)
    assert await dispatcher.flush_due(T0 + 0.7) == 0  # as last sent: firing
    assert await dispatcher.flush_due(T0 + 2.19) == 0
    assert await dispatcher.flush_due(T0 + 2.2) == 1
    assert [summary(n) for n in await queued(queue)] == [[("a1", "firing")]] * 2


async def test_a_severity_change_is_a_change(queue: NotificationQueue) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    await dispatcher.submit(alert("a1"), channels=["ops"], grouping=TIMINGS)
    assert await dispatcher.flush_due(T0 + 0.2) == 1
    clock.now = T0 + 0.3
    await dispatcher.submit(alert("a1", severity=Severity.CRITICAL), channels=["ops"], grouping=TIMINGS)
    assert await dispatcher.flush_due(T0 + 0.69) == 0
    assert await dispatcher.flush_due(T0 + 0.7) == 1
    assert [n.alerts[0].severity for n in await queued(queue)] == [Severity.WARNING, Severity.CRITICAL]


async def test_issue_alerts_go_out_once_and_leave_their_group(
    queue: NotificationQueue, client: aioredis.Redis, redis_prefix: str
) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    rule = StoredRule(
        id=1,
        project_id=1,
        spec=IssueRule(name="rule 1", when="new_issue", channels=["ops", "chat"], grouping=TIMINGS),
    )
    await dispatcher.emit(alert("i1", kind="issue", issue_id="1"), rule)
    await dispatcher.emit(alert("i2", kind="issue", issue_id="2"), rule)
    assert await dispatcher.flush_due(T0 + 0.2) == 2
    assert await group_keys(client, redis_prefix) == []
    assert await dispatcher.flush_due(T0 + 1000) == 0
    # The evaluator's silent resolve after the action interval changes nothing.
    clock.now = T0 + 1800
    await dispatcher.emit(alert("i1", "resolved", kind="issue", issue_id="1"), rule)
    assert await group_keys(client, redis_prefix) == []
    # The same issue emitted again is news again.
    clock.now = T0 + 3600
    await dispatcher.emit(alert("i1", kind="issue", issue_id="1"), rule)
    assert await dispatcher.flush_due(T0 + 3600.2) == 2
    sent = await queued(queue)
    assert sorted((n.channel, tuple(summary(n))) for n in sent) == [
        ("chat", (("i1", "firing"),)),
        ("chat", (("i1", "firing"), ("i2", "firing"))),
        ("ops", (("i1", "firing"),)),
        ("ops", (("i1", "firing"), ("i2", "firing"))),
    ]
    assert len({n.id for n in sent}) == 4


async def test_groups_by_channel_rule_and_labels(queue: NotificationQueue) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    by_service = Grouping(group_by=["service"], group_wait=0.2, group_interval=1, repeat_interval=10)
    for fp, service, rule_id in [("a1", "api", 1), ("a2", "api", 1), ("b1", "web", 1), ("c1", "api", 2)]:
        await dispatcher.submit(
            alert(fp, rule_id=rule_id, service=service), channels=["mail", "chat", "mail"], grouping=by_service
        )
    assert await dispatcher.flush_due(T0 + 0.2) == 6
    found = sorted(
        (n.channel, n.alerts[0].rule_id, n.group_labels["service"], len(n.alerts)) for n in await queued(queue)
    )
    assert found == [
        ("chat", 1, "api", 2),
        ("chat", 1, "web", 1),
        ("chat", 2, "api", 1),
        ("mail", 1, "api", 2),
        ("mail", 1, "web", 1),
        ("mail", 2, "api", 1),
    ]


async def test_a_group_created_again_gets_new_notification_ids(queue: NotificationQueue) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    channel = RecordingChannel()
    worker = Worker(queue, {"ops": channel}, "w1")
    for step in range(2):
        clock.now = T0 + 10 * step
        await dispatcher.submit(alert("a1"), channels=["ops"], grouping=TIMINGS)
        assert await dispatcher.flush_due(clock.now + 0.2) == 1
        clock.now += 1
        await dispatcher.submit(alert("a1", "resolved"), channels=["ops"], grouping=TIMINGS)
        assert await dispatcher.flush_due(clock.now) == 1
    async with running(worker):
        await eventually(lambda: len(channel.received) == 4)
    assert [summary(n) for n in channel.received] == [[("a1", "firing")], [("a1", "resolved")]] * 2
    assert len({n.id for n in channel.received}) == 4
    assert len({n.group_key for n in channel.received}) == 1
    assert worker.duplicates == 0


async def test_a_burst_of_200_new_issues_is_one_notification(queue: NotificationQueue) -> None:
    clock = Clock()
    dispatcher = Dispatcher(queue, clock=clock)
    grouping = Grouping(group_wait=0.2, group_interval=1, repeat_interval=60)
    for i in range(200):
        clock.now = T0 + i * 0.001  # the burst spans 0.2 s minus a little
        await dispatcher.submit(alert(f"issue{i}", kind="issue", issue_id=str(i)), channels=["ops"], grouping=grouping)
        assert await dispatcher.flush_due() == 0
    assert await dispatcher.flush_due(T0 + 0.2) == 1
    assert await dispatcher.flush_due(T0 + 0.9) == 0
    assert await dispatcher.flush_due(T0 + 1000) == 0  # issue alerts are not repeated
    (notification,) = await queued(queue)
    assert sorted(a.fingerprint for a in notification.alerts) == sorted(f"issue{i}" for i in range(200))


async def test_a_burst_reaches_the_channel_as_one_notification(queue: NotificationQueue) -> None:
    dispatcher = Dispatcher(queue)
    channel = RecordingChannel()
    grouping = Grouping(group_wait=0.3, group_interval=60, repeat_interval=600)
    for start in range(0, 200, 20):
        await asyncio.gather(
            *(
                dispatcher.submit(
                    alert(f"issue{i}", kind="issue", issue_id=str(i)), channels=["ops"], grouping=grouping
                )
                for i in range(start, start + 20)
            )
        )
    worker = Worker(queue, {"ops": channel}, "w1")
    flusher = asyncio.create_task(dispatcher.run(0.05))
    try:
        async with running(worker):
            await eventually(lambda: channel.received)
            await asyncio.sleep(0.3)  # room for a wrong second notification to show up
    finally:
        await dispatcher.stop()
        await flusher
    (notification,) = channel.received
    assert len(notification.alerts) == 200


async def test_the_run_loop_follows_the_timings(queue: NotificationQueue) -> None:
    dispatcher = Dispatcher(queue)
    channel = RecordingChannel()
    grouping = Grouping(group_wait=0.2, group_interval=0.4, repeat_interval=60)
    worker = Worker(queue, {"ops": channel}, "w1")
    flusher = asyncio.create_task(dispatcher.run(0.05))
    try:
        async with running(worker):
            await dispatcher.submit(alert("a1"), channels=["ops"], grouping=grouping)
            await eventually(lambda: len(channel.received) == 1)
            await dispatcher.submit(alert("a2"), channels=["ops"], grouping=grouping)
            await eventually(lambda: len(channel.received) == 2)
            await dispatcher.submit(alert("a1", "resolved"), channels=["ops"], grouping=grouping)
            await dispatcher.submit(alert("a2", "resolved"), channels=["ops"], grouping=grouping)
            await eventually(lambda: len(channel.received) == 3)
    finally:
        await dispatcher.stop()
        await flusher
    assert [summary(n) for n in channel.received] == [
        [("a1", "firing")],
        [("a1", "firing"), ("a2", "firing")],
        [("a1", "resolved"), ("a2", "resolved")],
    ]
    assert await dispatcher.next_due() is None


async def test_replicas_flushing_at_once_queue_each_notification_once(
    queue: NotificationQueue, redis_url: str, redis_prefix: str
) -> None:
    clock = Clock()
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
    try:
        replicas = [Dispatcher(NotificationQueue(c, prefix=redis_prefix), clock=clock) for c in clients]
        groups = 40
        grouping = Grouping(group_wait=0.2, group_interval=0.5, repeat_interval=2)

        async def submit_all(fp: str, status: Literal["firing", "resolved"] = "firing") -> None:
            await asyncio.gather(
                *(
                    replicas[r % len(replicas)].submit(
                        alert(fp, status, rule_id=r), channels=["ops"], grouping=grouping
                    )
                    for r in range(groups)
                )
            )

        async def flush_all(at: float) -> int:
            counts = await asyncio.gather(*(d.flush_due(T0 + at) for d in replicas for _ in range(2)))
            return sum(counts)

        await submit_all("a1")
        assert await flush_all(0.2) == groups
        clock.now = T0 + 0.3
        await submit_all("a2")
        assert await flush_all(0.7) == groups
        # Submissions racing with flushes: whatever a flush missed, the next one carries.
        clock.now = T0 + 1.0
        racing: list[Any] = [submit_all("a3"), flush_all(1.2), submit_all("a1", "resolved"), flush_all(1.2)]
        await asyncio.gather(*racing)
        for at in (1.2, 1.7, 100):
            await flush_all(at)
    finally:
        for c in clients:
            await c.aclose()

    sent = await queued(queue)
    assert len({n.id for n in sent}) == len(sent)
    by_group: dict[str, list[Notification]] = {}
    for n in sent:
        by_group.setdefault(n.group_key, []).append(n)
    assert len(by_group) == groups
    for notifications in by_group.values():
        seqs = [int(n.id.rsplit(":", 1)[1]) for n in notifications]
        assert seqs == list(range(1, len(seqs) + 1))
        assert summary(notifications[0]) == [("a1", "firing")]
        assert summary(notifications[1]) == [("a1", "firing"), ("a2", "firing")]
        # Every group ends with a2 and a3 firing and a1 told resolved exactly once.
        final = notifications[-1]
        assert {fp for fp, s in summary(final) if s == "firing"} == {"a2", "a3"}
        resolved = Counter(fp for n in notifications for fp, s in summary(n) if s == "resolved")
        assert resolved == {"a1": 1}
    assert Counter(len(v) for v in by_group.values()).total() == groups
