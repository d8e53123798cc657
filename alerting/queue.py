"""The notification queue: a Redis stream read by workers of a consumer group, with retries,
dead letters and de-duplication, shared by every AppGuard replica.

Delivery is at least once, and de-duplicated by :attr:`Notification.id`:

- :meth:`NotificationQueue.enqueue` adds the encoded notification to the stream.
- A :class:`Worker` reads it (``XREADGROUP``), sends it through the channel named by
  ``notification.channel``, then records ``<prefix>sent:<id>`` (kept ``sent_ttl``) and
  acknowledges and deletes the entry. A notification whose ``sent:`` key exists is
  acknowledged without being sent again: a duplicate enqueue, or an entry that was sent by
  a worker which died before acknowledging it, goes out once. While a worker sends, it holds
  a short lease (``<prefix>sending:<id>``) so that two copies of one notification read at the
  same time by two workers are not sent twice either; the copy that finds the lease taken is
  put back for later.
- :class:`~alerting.model.RetryableSendError` (and a send that takes longer than
  ``send_timeout``, or fails in an unexpected way) schedules another attempt after an
  exponential backoff, or after the ``retry_after`` the receiver asked for if that is longer:
  the entry moves to a delayed sorted set and back into the stream when due. Entry, retry and
  acknowledgement change together in one transaction.
- :class:`~alerting.model.PermanentSendError`, an unknown channel, an entry that cannot be
  decoded and a notification whose retries are used up (``retry.max_attempts`` attempts, or
  more than ``retry.max_elapsed_time`` since it was first queued) go to the dead letters: a
  stream holding the notification, the reason, the attempts and the time, which the API lists
  (:meth:`~NotificationQueue.dead_letters`), puts back (:meth:`~NotificationQueue.retry_dead_letter`)
  or deletes.
- Entries a worker read and never acknowledged (the process died) are claimed by a live
  worker once they have been idle ``claim_idle`` (``XAUTOCLAIM``).

What at-least-once leaves open: a worker that dies after the channel accepted a notification
and before it recorded ``sent:`` causes that notification to be sent again.

Keys, all under ``prefix``: ``queue`` (stream, consumer group ``workers``), ``queue:delayed``
(sorted set of retries by due time) and ``queue:delayed:data`` (their payloads),
``queue:dead`` (stream), ``sent:<id>``, ``sending:<id>``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from alerting.codec import CodecError, decode_notification, encode_notification
from alerting.model import Channel, Notification, PermanentSendError, RetryableSendError
from collector.configtypes import Duration, RetryConfig
from collector.exporterhelper import retry_delay

logger = logging.getLogger(f"appguard.{__name__}")

DEFAULT_PREFIX = "appguard:alerting:"
CONSUMER_GROUP = "workers"

#: A copy that found another worker sending the same notification looks again after at most this.
_BUSY_RECHECK = 1.0
#: How long a worker waits before carrying on after Redis failed.
_REDIS_PAUSE = 1.0
#: Extra lease beyond ``send_timeout``, for the bookkeeping after a send.
_LEASE_MARGIN = 1.0
_REDIS_ERRORS = (RedisError, OSError)
_STREAM_ID = re.compile(r"^\d+-\d+$")


class NotificationRetryConfig(RetryConfig):
    """Backoff between attempts to send a notification: the exporters' ``retry_on_failure``
    keys with longer defaults, plus ``max_attempts`` (``None``: only ``max_elapsed_time``
    limits them; ``max_elapsed_time: 0``: only ``max_attempts`` does). With ``enabled: false``
    the first retryable failure is final."""

    initial_interval: Duration = 5.0
    randomization_factor: float = Field(default=0.2, ge=0, le=1)
    multiplier: float = Field(default=2.0, ge=1)
    max_interval: Duration = 300.0
    max_elapsed_time: Duration = 3600.0
    max_attempts: int | None = Field(default=None, ge=1)


class QueueConfig(BaseModel):
    """How the notification queue and its workers behave.

    ``sent_ttl``: how long a sent notification's id is remembered for de-duplication.
    ``claim_idle``: how long an entry read by a worker may stay unacknowledged before another
    worker takes it over (keep it above ``send_timeout``). ``send_timeout``: the longest a
    channel may take to send, after which the attempt counts as a retryable failure.
    ``poll_interval``: the longest a worker blocks on the stream before it looks at retries and
    stale entries (and notices :meth:`Worker.stop`). ``batch_size``: entries read at once.
    ``max_dead_letters``: the dead-letter stream is trimmed (approximately) to this length.
    """

    model_config = ConfigDict(extra="forbid")

    retry: NotificationRetryConfig = Field(default_factory=lambda: NotificationRetryConfig.model_validate({}))
    sent_ttl: Duration = Field(default=7 * 86400.0, gt=0)
    claim_idle: Duration = Field(default=60.0, gt=0)
    send_timeout: Duration = Field(default=30.0, gt=0)
    poll_interval: Duration = Field(default=1.0, gt=0)
    batch_size: int = Field(default=16, ge=1, le=1000)
    max_dead_letters: int = Field(default=10_000, ge=1)


@dataclass(frozen=True)
class QueuedEntry:
    """One stream entry as a worker reads it: the encoded notification, the attempts already
    made and when it was first queued (epoch seconds)."""

    entry_id: str
    payload: bytes
    attempts: int
    first_queued: float


@dataclass(frozen=True)
class DeadLetter:
    """A notification given up on. ``notification`` is None when the entry could not be
    decoded (``payload`` then holds what was queued)."""

    id: str
    notification_id: str
    channel: str
    reason: str
    attempts: int
    failed_at: datetime
    notification: Notification | None
    payload: bytes


@dataclass(frozen=True)
class QueueStats:
    """Sizes of the queue: ``stream_length`` (entries waiting or being sent), ``pending`` (read
    by a worker and not yet acknowledged), ``delayed`` (waiting for a retry) and ``dead_letters``."""

    stream_length: int
    pending: int
    delayed: int
    dead_letters: int


# Moves due retries back into the stream; returns {moved, due time of the next one or false}.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local payload = redis.call('HGET', KEYS[2], member)
  if payload then
    local attempts, first = string.match(member, '^(%d+)|([^|]+)|')
    redis.call('XADD', KEYS[3], '*', 'n', payload, 'a', attempts, 'f', first)
  end
  redis.call('ZREM', KEYS[1], member)
  redis.call('HDEL', KEYS[2], member)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}
"""

# Before sending: {1, 0} if already sent; {0, 0} if the lease was taken; {2, ms left} if
# someone else holds it.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, 0} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 0} end
return {2, redis.call('PTTL', KEYS[2])}
"""

# Releases a lease if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Moves a dead letter back into the stream as a fresh entry.
_REVIVE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
for i = 1, #fields, 2 do
  if fields[i] == 'n' then
    redis.call('XADD', KEYS[2], '*', 'n', fields[i + 1], 'a', '0', 'f', ARGV[2])
  end
end
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class NotificationQueue:
    """The queue's Redis side: enqueueing, reading, acknowledging, retries, dead letters.

    ``client`` may be shared with other users of the same Redis; ``prefix`` starts every key.
    Workers (:class:`Worker`) do the sending; several may run in one process or across
    replicas.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        config: QueueConfig | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.config = config if config is not None else QueueConfig()
        self.stream_key = f"{prefix}queue"
        self.delayed_key = f"{prefix}queue:delayed"
        self.delayed_data_key = f"{prefix}queue:delayed:data"
        self.dead_key = f"{prefix}queue:dead"
        self._promote = client.register_script(_PROMOTE)
        self._begin = client.register_script(_BEGIN)
        self._release = client.register_script(_RELEASE)
        self._revive = client.register_script(_REVIVE)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = DEFAULT_PREFIX, config: QueueConfig | None = None
    ) -> NotificationQueue:
        """A queue on a new client for ``url``; close it with :meth:`close`."""
        return cls(aioredis.Redis.from_url(url, socket_connect_timeout=2.0), prefix=prefix, config=config)

    async def close(self) -> None:
        """Close the Redis client."""
        await self.client.aclose()

    def sent_key(self, notification_id: str) -> str:
        """The key recording that a notification was sent."""
        return f"{self.prefix}sent:{notification_id}"

    def lease_key(self, notification_id: str) -> str:
        """The key a worker holds while it sends a notification."""
        return f"{self.prefix}sending:{notification_id}"

    # ---- producing

    async def enqueue(self, notification: Notification) -> str:
        """Queue ``notification`` for sending; returns the stream entry id."""
        entry_id = await self.client.xadd(self.stream_key, self._fields(notification))
        return _text(entry_id)

    def stage_enqueue(self, pipe: aioredis.client.Pipeline, notification: Notification) -> None:
        """Add the enqueueing of ``notification`` to ``pipe``, so that it happens in the same
        transaction as the caller's other commands (the pipeline must be on this queue's Redis)."""
        pipe.xadd(self.stream_key, self._fields(notification))

    @staticmethod
    def _fields(notification: Notification) -> dict[FieldT, EncodableT]:
        return {"n": encode_notification(notification), "a": 0, "f": repr(time.time())}

    # ---- consuming

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist. The group starts at
        the beginning, so entries queued before it existed are delivered too."""
        try:
            await self.client.xgroup_create(self.stream_key, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, *, count: int, block: float | None, pending: bool = False) -> list[QueuedEntry]:
        """Entries for ``consumer``: new ones (waiting up to ``block`` seconds for one), or with
        ``pending`` the ones already delivered to it and not acknowledged."""
        reply: Any = await self.client.xreadgroup(
            CONSUMER_GROUP,
            consumer,
            {self.stream_key: "0" if pending else ">"},
            count=count,
            block=None if block is None else max(1, int(block * 1000)),
        )
        entries: list[QueuedEntry] = []
        for _stream, items in reply or []:
            entries.extend(await self._entries(items))
        return entries

    async def claim_stale(self, consumer: str, *, start: str = "0-0", count: int) -> tuple[str, list[QueuedEntry]]:
        """Take over entries idle longer than ``claim_idle`` in any consumer, from ``start``;
        returns the id to continue from (``0-0`` after a full pass) and the entries."""
        reply: Any = await self.client.xautoclaim(
            self.stream_key,
            CONSUMER_GROUP,
            consumer,
            min_idle_time=max(1, int(self.config.claim_idle * 1000)),
            start_id=start,
            count=count,
        )
        return _text(reply[0]), await self._entries(reply[1])

    async def _entries(self, items: list[Any]) -> list[QueuedEntry]:
        entries = []
        for raw_id, fields in items:
            if raw_id is None:
                continue
            entry_id = _text(raw_id)
            if not fields:
                # Deleted from the stream while still pending: nothing left to send.
                await self.ack(entry_id)
                continue
            values = {_text(k): v for k, v in fields.items()}
            try:
                attempts = int(_text(values.get("a", b"0")))
                first = float(_text(values.get("f", b"0"))) or time.time()
            except ValueError:
                attempts, first = 0, time.time()
            entries.append(QueuedEntry(entry_id, _bytes(values.get("n", b"")), attempts, first))
        return entries

    async def ack(self, entry_id: str) -> None:
        """Acknowledge an entry and remove it from the stream."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream_key, CONSUMER_GROUP, entry_id)
            pipe.xdel(self.stream_key, entry_id)
            await pipe.execute()

    async def begin_send(self, notification_id: str, token: str) -> tuple[str, float]:
        """Before sending: ``("sent", 0)`` if the notification was already sent, ``("go", 0)``
        once this caller holds the lease under ``token``, or ``("busy", seconds)`` while another
        holds it for that long still."""
        lease_ms = int((self.config.send_timeout + _LEASE_MARGIN) * 1000)
        code, left = await self._begin(
            keys=[self.sent_key(notification_id), self.lease_key(notification_id)], args=[token, lease_ms]
        )
        state = {0: "go", 1: "sent"}.get(int(code), "busy")
        return state, max(0, int(left)) / 1000

    async def mark_sent(self, notification_id: str, token: str) -> None:
        """Remember that the notification was sent (for ``sent_ttl``) and release the lease."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.sent_key(notification_id), b"1", px=int(self.config.sent_ttl * 1000))
            await self._release(keys=[self.lease_key(notification_id)], args=[token], client=pipe)
            await pipe.execute()

    async def schedule(
        self, entry: QueuedEntry, *, delay: float, attempts: int, lease: tuple[str, str] | None = None
    ) -> None:
        """Acknowledge ``entry`` and queue its notification again in ``delay`` seconds, as having
        had ``attempts`` attempts; release ``lease`` (notification id, token) if given."""
        member = f"{attempts}|{entry.first_queued!r}|{uuid.uuid4().hex}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(self.delayed_key, {member: time.time() + delay})
            pipe.hset(self.delayed_data_key, member, entry.payload)
            pipe.xack(self.stream_key, CONSUMER_GROUP, entry.entry_id)
            pipe.xdel(self.stream_key, entry.entry_id)
            if lease is not None:
                await self._release(keys=[self.lease_key(lease[0])], args=[lease[1]], client=pipe)
            await pipe.execute()

    async def dead_letter(
        self,
        entry: QueuedEntry,
        *,
        reason: str,
        attempts: int,
        notification: Notification | None,
        lease: tuple[str, str] | None = None,
    ) -> None:
        """Acknowledge ``entry`` and keep it as a dead letter."""
        fields: dict[FieldT, EncodableT] = {
            "n": entry.payload,
            "reason": reason,
            "attempts": attempts,
            "at": repr(time.time()),
            "id": notification.id if notification else "",
            "channel": notification.channel if notification else "",
        }
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_key, fields, maxlen=self.config.max_dead_letters, approximate=True)
            pipe.xack(self.stream_key, CONSUMER_GROUP, entry.entry_id)
            pipe.xdel(self.stream_key, entry.entry_id)
            if lease is not None:
                await self._release(keys=[self.lease_key(lease[0])], args=[lease[1]], client=pipe)
            await pipe.execute()

    async def promote_due(self, *, limit: int = 1000) -> float | None:
        """Move retries that are due back into the stream; returns when the next one is due
        (epoch seconds), or None when none waits."""
        _moved, next_due = await self._promote(
            keys=[self.delayed_key, self.delayed_data_key, self.stream_key], args=[repr(time.time()), limit]
        )
        return None if next_due is None else float(_text(next_due))

    async def forget_consumer(self, consumer: str) -> None:
        """Remove ``consumer`` from the group if it has nothing pending (a clean shutdown)."""
        pending = await self.client.xpending_range(self.stream_key, CONSUMER_GROUP, "-", "+", 1, consumername=consumer)
        if not pending:
            await self.client.xgroup_delconsumer(self.stream_key, CONSUMER_GROUP, consumer)

    # ---- dead letters and sizes

    async def dead_letters(self, limit: int = 50, offset: int = 0) -> list[DeadLetter]:
        """Dead letters, newest first."""
        if limit <= 0 or offset < 0:
            return []
        reply: Any = await self.client.xrevrange(self.dead_key, count=offset + limit)
        letters = []
        for raw_id, fields in reply[offset:]:
            values = {_text(k): v for k, v in fields.items()}
            payload = _bytes(values.get("n", b""))
            try:
                notification: Notification | None = decode_notification(payload)
            except CodecError:
                notification = None
            letters.append(
                DeadLetter(
                    id=_text(raw_id),
                    notification_id=_text(values.get("id", b"")),
                    channel=_text(values.get("channel", b"")),
                    reason=_text(values.get("reason", b"")),
                    attempts=int(_text(values.get("attempts", b"0"))),
                    failed_at=datetime.fromtimestamp(float(_text(values.get("at", b"0"))), UTC),
                    notification=notification,
                    payload=payload,
                )
            )
        return letters

    async def retry_dead_letter(self, dead_letter_id: str) -> bool:
        """Put a dead letter back into the queue, with its attempts counted afresh; False if
        there is no such dead letter."""
        if not _STREAM_ID.match(dead_letter_id):
            return False
        revived = await self._revive(keys=[self.dead_key, self.stream_key], args=[dead_letter_id, repr(time.time())])
        return bool(revived)

    async def delete_dead_letter(self, dead_letter_id: str) -> bool:
        """Delete a dead letter; False if there is no such dead letter."""
        if not _STREAM_ID.match(dead_letter_id):
            return False
        return bool(await self.client.xdel(self.dead_key, dead_letter_id))

    async def stats(self) -> QueueStats:
        """The queue's sizes now."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream_key)
            pipe.zcard(self.delayed_key)
            pipe.xlen(self.dead_key)
            length, delayed, dead = await pipe.execute()
        try:
            pending = int((await self.client.xpending(self.stream_key, CONSUMER_GROUP))["pending"])
        except ResponseError:
            pending = 0  # no group yet
        return QueueStats(stream_length=int(length), pending=pending, delayed=int(delayed), dead_letters=int(dead))


OnSent = Callable[[Notification, float], "Awaitable[None] | None"]


class Worker:
    """Sends queued notifications through ``channels`` (by name) until :meth:`stop`.

    ``consumer_name`` identifies the worker in the consumer group; a worker restarted under the
    same name first finishes the entries it had read. ``on_sent(notification, seconds)`` is
    called after each successful send with the time from ``notification.created_at`` to then
    (for latency figures). ``sent``, ``duplicates``, ``retried`` and ``dead_lettered`` count what
    the worker did. Entries are sent one after another; run several workers for parallel sends.
    """

    def __init__(
        self,
        queue: NotificationQueue,
        channels: Mapping[str, Channel],
        consumer_name: str | None = None,
        *,
        on_sent: OnSent | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.queue = queue
        self.channels = channels
        self.consumer_name = consumer_name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.on_sent = on_sent
        self.sent = 0
        self.duplicates = 0
        self.retried = 0
        self.dead_lettered = 0
        self._rand = rand
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._own_pending = True

    async def run(self) -> None:
        """Read and send until :meth:`stop` is called."""
        self._stopping.clear()
        self._stopped.clear()
        # What this consumer read before a restart comes first.
        self._own_pending = True
        try:
            await self._until_ready()
            while not self._stopping.is_set():
                try:
                    await self._round()
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        # The stream was deleted (a flush): start again with a new group.
                        await self._until_ready()
                    else:
                        logger.error("notification worker %s: %s", self.consumer_name, exc)
                        await self._pause()
                except _REDIS_ERRORS as exc:
                    logger.error("notification worker %s: Redis failed: %s", self.consumer_name, exc)
                    await self._pause()
                except Exception:
                    # A worker must outlive a bug in one entry's handling; the entry stays
                    # pending and is taken over after claim_idle.
                    logger.exception("notification worker %s failed", self.consumer_name)
                    await self._pause()
            try:
                await self.queue.forget_consumer(self.consumer_name)
            except _REDIS_ERRORS:
                pass
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to finish after the entry in hand; returns once it has."""
        self._stopping.set()
        await self._stopped.wait()

    async def _until_ready(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.queue.ensure_group()
                return
            except _REDIS_ERRORS as exc:
                logger.error("notification worker %s: cannot create the consumer group: %s", self.consumer_name, exc)
                await self._pause()

    async def _pause(self) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), _REDIS_PAUSE)
        except TimeoutError:
            pass

    async def _round(self) -> None:
        cfg = self.queue.config
        if self._own_pending:
            entries = await self.queue.read(self.consumer_name, count=cfg.batch_size, block=None, pending=True)
            await self._handle_all(entries)
            self._own_pending = bool(entries)
            return
        next_due = await self.queue.promote_due()
        now = time.time()
        if now >= self._next_claim:
            self._claim_cursor, claimed = await self.queue.claim_stale(
                self.consumer_name, start=self._claim_cursor, count=cfg.batch_size
            )
            if claimed:
                logger.info("notification worker %s took over %d stale entries", self.consumer_name, len(claimed))
                await self._handle_all(claimed)
            if self._claim_cursor == "0-0":
                self._next_claim = now + cfg.claim_idle / 2
        block = cfg.poll_interval
        if next_due is not None:
            block = min(block, max(0.001, next_due - time.time()))
        if self._claim_cursor != "0-0":
            block = 0.001
        entries = await self.queue.read(self.consumer_name, count=cfg.batch_size, block=block)
        await self._handle_all(entries)

    async def _handle_all(self, entries: list[QueuedEntry]) -> None:
        for entry in entries:
            await self._handle(entry)

    async def _handle(self, entry: QueuedEntry) -> None:
        queue = self.queue
        try:
            notification = decode_notification(entry.payload)
        except CodecError as exc:
            logger.error("notification entry %s cannot be decoded: %s", entry.entry_id, exc)
            await queue.dead_letter(entry, reason=f"undecodable: {exc}", attempts=entry.attempts, notification=None)
            self.dead_lettered += 1
            return
        token = uuid.uuid4().hex
        state, busy_for = await queue.begin_send(notification.id, token)
        if state == "sent":
            self.duplicates += 1
            await queue.ack(entry.entry_id)
            return
        if state == "busy":
            # Another worker is sending this very notification; look again once it is done.
            await queue.schedule(entry, delay=min(max(busy_for, 0.05), _BUSY_RECHECK), attempts=entry.attempts)
            return
        lease = (notification.id, token)
        channel = self.channels.get(notification.channel)
        if channel is None:
            await self._give_up(entry, notification, f"unknown channel {notification.channel!r}", entry.attempts, lease)
            return
        attempts = entry.attempts + 1
        try:
            await asyncio.wait_for(channel.send(notification), queue.config.send_timeout)
        except PermanentSendError as exc:
            await self._give_up(entry, notification, f"permanent: {exc}", attempts, lease)
        except RetryableSendError as exc:
            await self._retry(entry, notification, str(exc), attempts, lease, exc.retry_after)
        except TimeoutError:
            await self._retry(entry, notification, f"timed out after {queue.config.send_timeout}s", attempts, lease)
        except Exception as exc:
            # A failure the channel did not classify: retried, so that a passing fault heals,
            # and given up on like any other once the retries are used up.
            logger.exception("channel %s failed unexpectedly", notification.channel)
            await self._retry(entry, notification, f"{type(exc).__name__}: {exc}", attempts, lease)
        else:
            await queue.mark_sent(notification.id, token)
            await queue.ack(entry.entry_id)
            self.sent += 1
            await self._report_sent(notification)

    async def _retry(
        self,
        entry: QueuedEntry,
        notification: Notification,
        reason: str,
        attempts: int,
        lease: tuple[str, str],
        retry_after: float | None = None,
    ) -> None:
        policy = self.queue.config.retry
        delay = retry_delay(policy, attempts, self._rand)
        if retry_after is not None and math.isfinite(retry_after):
            delay = max(delay, retry_after)
        out_of_time = policy.max_elapsed_time > 0 and time.time() + delay > entry.first_queued + policy.max_elapsed_time
        out_of_attempts = policy.max_attempts is not None and attempts >= policy.max_attempts
        if not policy.enabled or out_of_time or out_of_attempts:
            await self._give_up(
                entry, notification, f"retries exhausted after {attempts} attempts: {reason}", attempts, lease
            )
            return
        logger.warning(
            "notification %s to %s failed (attempt %d), retrying in %.1fs: %s",
            notification.id,
            notification.channel,
            attempts,
            delay,
            reason,
        )
        await self.queue.schedule(entry, delay=delay, attempts=attempts, lease=lease)
        self.retried += 1

    async def _give_up(
        self, entry: QueuedEntry, notification: Notification, reason: str, attempts: int, lease: tuple[str, str]
    ) -> None:
        logger.error("notification %s to %s given up: %s", notification.id, notification.channel, reason)
        await self.queue.dead_letter(entry, reason=reason, attempts=attempts, notification=notification, lease=lease)
        self.dead_lettered += 1

    async def _report_sent(self, notification: Notification) -> None:
        if self.on_sent is None:
            return
        created = notification.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        seconds = (datetime.now(UTC) - created).total_seconds()
        try:
            result = self.on_sent(notification, seconds)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("the on_sent hook failed")
