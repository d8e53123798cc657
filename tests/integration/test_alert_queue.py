"""The notification queue against real Redis: retries with backoff and ``retry_after``, dead
letters and putting them back, de-duplication (twice queued, crash after sending, two workers
at once), entries of a killed worker taken over, exactly-once sends with two workers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from alerting.model import Alert, Notification, PermanentSendError, RetryableSendError, SendError, Severity
from alerting.queue import NotificationQueue, QueueConfig, Worker
from collector.exporterhelper import retry_delay

FAST: dict[str, Any] = {
    "retry": {
        "initial_interval": 0.05,
        "multiplier": 2.0,
        "randomization_factor": 0.0,
        "max_interval": 0.2,
        "max_elapsed_time": 30.0,
    },
    "poll_interval": 0.05,
    "claim_idle": 0.3,
    "send_timeout": 0.5,
}


class RecordingChannel:
    """A channel that keeps what it was given; ``failures`` are raised by the next sends, in
    order; while ``gate`` is set and not open, sends wait for it; ``delay`` slows every send."""

    def __init__(self, name: str = "ops") -> None:
        self.name = name
        self.received: list[Notification] = []
        self.attempts: list[tuple[str, float]] = []
        self.failures: list[SendError] = []
        self.gate: asyncio.Event | None = None
        self.delay = 0.0

    async def send(self, notification: Notification) -> None:
        self.attempts.append((notification.id, time.monotonic()))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            raise self.failures.pop(0)
        self.received.append(notification)

    async def close(self) -> None:
        return None

    def attempt_times(self, notification_id: str) -> list[float]:
        return [t for i, t in self.attempts if i == notification_id]


def note(n: int = 1, channel: str = "ops") -> Notification:
    now = datetime.now(UTC)
    firing = Alert(
        rule_id=3,
        rule_name="Errors in checkout",
        kind="threshold",
        fingerprint=f"fp{n}",
        status="firing",
        severity=Severity.WARNING,
        labels={"alertname": "Errors in checkout", "rule": "3", "severity": "warning"},
        annotations={"summary": f"{n} errors"},
        starts_at=now,
        value=float(n),
    )
    return Notification(
        id=f"{channel}:3:g:x:{n}",
        channel=channel,
        group_key=f"{channel}:3:g",
        group_labels={},
        alerts=(firing,),
        created_at=now,
    )


async def eventually(check: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 15.0) -> None:
    """Wait until ``check()`` is true; fail after ``timeout`` (a bound on failing, not a speed test)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis_client = aioredis.Redis.from_url(redis_url)
    try:
        yield redis_client
    finally:
        await redis_client.aclose()


def make_queue(client: aioredis.Redis, prefix: str, **overrides: Any) -> NotificationQueue:
    raw = {**FAST, **overrides}
    raw["retry"] = {**FAST["retry"], **overrides.get("retry", {})}
    return NotificationQueue(client, prefix=prefix, config=QueueConfig.model_validate(raw))


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield tasks
    finally:
        for worker, task in zip(workers, tasks, strict=True):
            if not task.done():
                await asyncio.wait_for(worker.stop(), 10)
            await asyncio.gather(task, return_exceptions=True)


async def settled(queue: NotificationQueue) -> bool:
    stats = await queue.stats()
    return stats.stream_length == 0 and stats.pending == 0 and stats.delayed == 0


async def test_sends_acknowledges_and_reports_latency(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    latencies: list[tuple[str, float]] = []
    worker = Worker(queue, {"ops": channel}, "w1", on_sent=lambda n, s: latencies.append((n.id, s)))
    sent = [note(i) for i in range(3)]
    async with running(worker):
        for n in sent:
            await queue.enqueue(n)
        await eventually(lambda: len(channel.received) == 3)
        await eventually(lambda: settled(queue))
    assert channel.received == sent
    assert [i for i, _ in latencies] == [n.id for n in sent]
    assert all(s >= 0 for _, s in latencies)
    assert worker.sent == 3
    assert await queue.stats() == type(await queue.stats())(stream_length=0, pending=0, delayed=0, dead_letters=0)
    # A clean stop leaves no consumer behind in the group.
    assert await client.xinfo_consumers(queue.stream_key, "workers") == []


async def test_retryable_failures_are_retried_with_backoff_then_sent(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    channel.failures = [RetryableSendError("503"), RetryableSendError("503")]
    worker = Worker(queue, {"ops": channel}, "w1")
    n = note()
    async with running(worker):
        await queue.enqueue(n)
        await eventually(lambda: channel.received)
        await eventually(lambda: settled(queue))
    times = channel.attempt_times(n.id)
    assert len(times) == 3
    # Backoff 0.05 s then 0.1 s (no jitter): each wait at least as long as planned.
    assert times[1] - times[0] >= 0.05
    assert times[2] - times[1] >= 0.1
    assert channel.received == [n]
    assert (worker.retried, worker.sent, worker.dead_lettered) == (2, 1, 0)


async def test_retry_after_is_honoured(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    channel.failures = [RetryableSendError("429", retry_after=0.6)]
    worker = Worker(queue, {"ops": channel}, "w1")
    n = note()
    async with running(worker):
        await queue.enqueue(n)
        await eventually(lambda: channel.attempts)
        await eventually(lambda: channel.received)
    first, second = channel.attempt_times(n.id)
    # The backoff alone would have retried after 0.05 s.
    assert second - first >= 0.55
    assert channel.received == [n]


async def test_permanent_failure_is_dead_lettered_and_can_be_put_back(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    channel.failures = [PermanentSendError("550 no such user")]
    worker = Worker(queue, {"ops": channel}, "w1")
    n = note()
    async with running(worker):
        await queue.enqueue(n)
        await eventually(lambda: worker.dead_lettered == 1)
        assert len(channel.attempts) == 1
        assert channel.received == []
        stats = await queue.stats()
        assert (stats.dead_letters, stats.stream_length, stats.pending, stats.delayed) == (1, 0, 0, 0)
        (letter,) = await queue.dead_letters()
        assert letter.notification == n
        assert (letter.notification_id, letter.channel, letter.attempts) == (n.id, "ops", 1)
        assert "550 no such user" in letter.reason
        assert abs((datetime.now(UTC) - letter.failed_at).total_seconds()) < 60

        assert await queue.retry_dead_letter(letter.id)
        await eventually(lambda: channel.received == [n])
    assert await queue.dead_letters() == []
    assert (await queue.stats()).dead_letters == 0
    assert not await queue.retry_dead_letter(letter.id)


@pytest.mark.parametrize(
    ("retry", "expected_attempts"),
    [({"max_attempts": 3}, 3), ({"max_elapsed_time": 0.12, "max_interval": 0.05}, None)],
    ids=["max-attempts", "max-elapsed-time"],
)
async def test_retries_run_out_into_the_dead_letters(
    client: aioredis.Redis, redis_prefix: str, retry: dict[str, Any], expected_attempts: int | None
) -> None:
    queue = make_queue(client, redis_prefix, retry=retry)
    channel = RecordingChannel()
    channel.failures = [RetryableSendError("connection refused") for _ in range(100)]
    worker = Worker(queue, {"ops": channel}, "w1")
    n = note()
    async with running(worker):
        await queue.enqueue(n)
        await eventually(lambda: worker.dead_lettered == 1)
    (letter,) = await queue.dead_letters()
    assert letter.reason.startswith(f"retries exhausted after {letter.attempts} attempts: connection refused")
    assert letter.attempts == len(channel.attempts) >= 2
    if expected_attempts is not None:
        assert letter.attempts == expected_attempts
    assert channel.received == []
    assert await settled(queue)


async def test_unknown_channels_and_garbage_are_dead_lettered(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    worker = Worker(queue, {"ops": channel}, "w1")
    lost = note(1, channel="nowhere")
    async with running(worker):
        await queue.enqueue(lost)
        await client.xadd(queue.stream_key, {"n": b"\x00garbage", "a": 0, "f": 0})
        await queue.enqueue(note(2))
        await eventually(lambda: worker.dead_lettered == 2 and len(channel.received) == 1)
    garbage, unknown = await queue.dead_letters()
    assert unknown.reason == "unknown channel 'nowhere'"
    assert (unknown.notification, unknown.channel, unknown.attempts) == (lost, "nowhere", 0)
    assert garbage.notification is None and garbage.payload == b"\x00garbage"
    assert garbage.reason.startswith("undecodable: ")
    assert await queue.delete_dead_letter(garbage.id)
    assert not await queue.delete_dead_letter(garbage.id)
    assert not await queue.delete_dead_letter("not-an-id")
    assert [d.id for d in await queue.dead_letters()] == [unknown.id]


async def test_dead_letters_page_newest_first(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    worker = Worker(queue, {}, "w1")
    async with running(worker):
        for i in range(5):
            await queue.enqueue(note(i, channel="gone"))
        await eventually(lambda: worker.dead_lettered == 5)
    pages = [await queue.dead_letters(limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [d.notification_id for p in pages for d in p] == [note(i, channel="gone").id for i in reversed(range(5))]


async def test_the_same_notification_queued_twice_is_sent_once(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    channel = RecordingChannel()
    worker = Worker(queue, {"ops": channel}, "w1")
    n = note()
    await queue.enqueue(n)
    await queue.enqueue(n)
    async with running(worker):
        await eventually(lambda: worker.duplicates == 1)
        await eventually(lambda: settled(queue))
    assert channel.received == [n]
    assert await client.exists(queue.sent_key(n.id))
    assert 0 < await client.ttl(queue.sent_key(n.id)) <= 7 * 86400


async def test_copies_in_flight_at_two_workers_are_sent_once(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix, batch_size=1, send_timeout=2.0)
    channel = RecordingChannel()
    channel.delay = 0.3
    workers = [Worker(queue, {"ops": channel}, f"w{i}") for i in (1, 2)]
    n = note()
    async with running(*workers):
        await asyncio.sleep(0.1)  # both blocked on the stream
        await queue.enqueue(n)
        await queue.enqueue(n)
        await eventually(lambda: sum(w.duplicates for w in workers) == 1)
        await eventually(lambda: settled(queue))
    assert channel.received == [n]


async def test_a_crash_after_sending_before_acknowledging_does_not_send_again(
    client: aioredis.Redis, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = make_queue(client, redis_prefix)

    async def hang(entry_id: str) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(crashing, "ack", hang)
    channel = RecordingChannel()
    first = Worker(crashing, {"ops": channel}, "doomed")
    n = note()
    task = asyncio.create_task(first.run())
    await crashing.enqueue(n)
    await eventually(lambda: channel.received)
    await asyncio.sleep(0.05)  # now hanging in ack
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    queue = make_queue(client, redis_prefix)
    assert (await queue.stats()).pending == 1

    second = Worker(queue, {"ops": channel}, "survivor")
    async with running(second):
        await eventually(lambda: settled(queue))
    assert channel.received == [n]
    assert second.duplicates == 1 and second.sent == 0


async def test_entries_of_a_killed_worker_are_taken_over(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix)
    stuck = RecordingChannel()
    stuck.gate = asyncio.Event()  # never opened: the worker hangs in its first send
    first = Worker(queue, {"ops": stuck}, "killed")
    sent = [note(i) for i in range(5)]
    for n in sent:
        await queue.enqueue(n)
    task = asyncio.create_task(first.run())
    await eventually(lambda: stuck.attempts)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert (await queue.stats()).pending == 5

    healthy = RecordingChannel()
    second = Worker(queue, {"ops": healthy}, "survivor")
    async with running(second):
        await eventually(lambda: len(healthy.received) == 5)
        await eventually(lambda: settled(queue))
    assert sorted(n.id for n in healthy.received) == sorted(n.id for n in sent)
    assert second.sent == 5


async def test_a_worker_restarted_under_its_name_finishes_what_it_had_read(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    queue = make_queue(client, redis_prefix, claim_idle=3600)
    stuck = RecordingChannel()
    stuck.gate = asyncio.Event()
    sent = [note(i) for i in range(3)]
    for n in sent:
        await queue.enqueue(n)
    task = asyncio.create_task(Worker(queue, {"ops": stuck}, "w1").run())
    await eventually(lambda: stuck.attempts)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    healthy = RecordingChannel()
    async with running(Worker(queue, {"ops": healthy}, "w1")):
        await eventually(lambda: len(healthy.received) == 3)
    assert sorted(n.id for n in healthy.received) == sorted(n.id for n in sent)


async def test_two_workers_send_each_notification_exactly_once(client: aioredis.Redis, redis_prefix: str) -> None:
    queue = make_queue(client, redis_prefix, batch_size=1)
    channel = RecordingChannel()
    channel.delay = 0.01
    sent = [note(i) for i in range(60)]
    for n in sent:
        await queue.enqueue(n)
    workers = [Worker(queue, {"ops": channel}, f"w{i}") for i in (1, 2)]
    async with running(*workers):
        await eventually(lambda: len(channel.received) >= 60)
        await eventually(lambda: settled(queue))
    counts = Counter(n.id for n in channel.received)
    assert set(counts) == {n.id for n in sent}
    assert set(counts.values()) == {1}
    assert all(w.sent > 0 for w in workers), [w.sent for w in workers]


def test_retry_delay_grows_caps_and_spreads() -> None:
    cfg = QueueConfig.model_validate(
        {"retry": {"initial_interval": 1, "multiplier": 3, "max_interval": 20, "randomization_factor": 0.5}}
    ).retry
    assert [retry_delay(cfg, k, lambda: 0.5) for k in (1, 2, 3, 4, 50, 5000)] == [1, 3, 9, 20, 20, 20]
    assert retry_delay(cfg, 2, lambda: 0.0) == 1.5
    assert retry_delay(cfg, 2, lambda: 1.0) == 4.5
