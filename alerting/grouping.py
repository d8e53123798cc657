"""Grouping of alerts into notifications, as Alertmanager's route does it, kept in Redis so
that every AppGuard replica shares it.

For each channel an alert is sent to, it joins the group of that channel, its rule and the
values of the rule's ``grouping.group_by`` labels. A group remembers its alerts by
fingerprint (the latest version of each), the state of each as last sent, when it was first
seen and last sent, and when it is next due:

- a new group is due ``group_wait`` after its first alert, so that alerts arriving together
  (a burst of new issues) go out as one notification;
- a group that was sent and then changed (an alert joined, resolved, fired again or changed
  severity) is due ``group_interval`` after the last send;
- a group that did not change is sent again ``repeat_interval`` after the last send while it
  has firing alerts;
- a resolved alert goes out once, in the next notification, and then leaves the group; a
  resolved alert that was never sent as firing leaves at once; a group without alerts is
  deleted.

Issue alerts (``kind == "issue"``: a new issue, a regression, a frequency reached) report an
event rather than a lasting condition: the evaluator emits them once per action interval and
never resolves them with a notification. They go out once, in the next notification of their
group, and then leave it, so they are neither repeated nor resolved; the same issue emitted
again later joins as a new alert.

A newer version of an alert that changes neither its status nor its severity (a higher count,
a new value) is kept for the next notification but does not make the group due.

:meth:`Dispatcher.flush_due` turns every due group into a :class:`~alerting.model.Notification`
and queues it in the same Redis transaction as it updates the group (``WATCH``/``MULTI`` on
the group), so replicas flushing at the same time queue each notification once, and a
replica dying half-way queues nothing and changes nothing. The notification id is
``<group_key>:<incarnation>:<sequence>``: the same for the same send, different for a group
created anew after it was deleted (so de-duplication in the queue never swallows it).

Keys, under the queue's prefix: ``group:<group_key>`` (a hash per group) and ``groups:due``
(group keys by due time).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.exceptions import RedisError, WatchError

from alerting.codec import CodecError, decode_alert, encode_alert
from alerting.model import Alert, Grouping, Notification, StoredRule
from alerting.queue import NotificationQueue

logger = logging.getLogger(f"appguard.{__name__}")

#: Groups read from the due index at once.
_PAGE = 500
#: Pages one flush_due call goes through at most (the rest waits for the next call).
_MAX_PAGES = 20
#: Attempts at a group's transaction when other writers keep changing it.
_WATCH_ATTEMPTS = 5

# Adds one alert to one group; returns 0 (nothing to do), 1 (stored, no change) or 2 (changed).
# Group hash fields: channel, rule_id, labels (JSON), incarnation, first_seen, last_sent, seq,
# due, count, wait, interval, repeat; per alert a:<fp> (JSON), s:<fp> (state: "resolved" or
# "firing:<severity>"), n:<fp> (the state last sent, while firing), o:<fp> (sent once only).
_SUBMIT = """
local h, index = KEYS[1], KEYS[2]
local key, now, fp, state = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local sfield, afield, nfield, ofield = 's:' .. fp, 'a:' .. fp, 'n:' .. fp, 'o:' .. fp
if redis.call('EXISTS', h) == 0 then
  if state == 'resolved' then return 0 end
  local due = now + tonumber(ARGV[9])
  redis.call('HSET', h, 'channel', ARGV[6], 'rule_id', ARGV[7], 'labels', ARGV[8], 'incarnation', ARGV[12],
    'first_seen', ARGV[2], 'last_sent', '0', 'seq', '0', 'count', '0', 'due', due)
  redis.call('ZADD', index, due, key)
end
redis.call('HSET', h, 'wait', ARGV[9], 'interval', ARGV[10], 'repeat', ARGV[11])
local prev = redis.call('HGET', h, sfield)
local notified = redis.call('HGET', h, nfield)
if state == 'resolved' and not notified then
  -- Never sent as firing: there is nothing to resolve.
  if prev then
    redis.call('HDEL', h, sfield, afield, ofield)
    if redis.call('HINCRBY', h, 'count', -1) <= 0 then
      redis.call('DEL', h)
      redis.call('ZREM', index, key)
    end
  end
  return 0
end
if not prev then redis.call('HINCRBY', h, 'count', 1) end
redis.call('HSET', h, afield, ARGV[5], sfield, state)
if ARGV[13] == '1' then redis.call('HSET', h, ofield, '1') end
if state == prev or state == notified then return 1 end
if tonumber(redis.call('HGET', h, 'seq')) > 0 then
  local soon = tonumber(redis.call('HGET', h, 'last_sent')) + tonumber(ARGV[10])
  if soon < tonumber(redis.call('HGET', h, 'due')) then
    redis.call('HSET', h, 'due', soon)
    redis.call('ZADD', index, soon, key)
  end
end
return 2
"""

#: Alert kinds that are sent once and then leave their group (see the module docstring).
ONE_SHOT_KINDS = frozenset({"issue"})


def alert_state(alert: Alert) -> str:
    """What a change is measured on: the status, and the severity while firing."""
    return "resolved" if alert.status == "resolved" else f"firing:{alert.severity.value}"


def group_labels(alert: Alert, grouping: Grouping) -> dict[str, str]:
    """The values of ``grouping.group_by`` labels in ``alert`` (empty when it lacks one)."""
    return {name: alert.labels.get(name, "") for name in grouping.group_by}


def group_key(channel: str, rule_id: int, labels: dict[str, str]) -> str:
    """The key of the group of ``channel``, ``rule_id`` and grouping ``labels``."""
    digest = hashlib.sha256(orjson.dumps(sorted(labels.items()))).hexdigest()[:16]
    return f"{channel}:{rule_id}:{digest}"


@dataclass
class _Group:
    """A group's hash, read for a flush."""

    channel: str
    labels: dict[str, str]
    incarnation: str
    seq: int
    last_sent: float
    due: float
    repeat: float
    alerts: dict[str, bytes]
    state: dict[str, str]
    notified: dict[str, str]
    one_shot: set[str]

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> _Group:
        fields = {_text(k): v for k, v in raw.items()}
        alerts: dict[str, bytes] = {}
        state: dict[str, str] = {}
        notified: dict[str, str] = {}
        one_shot: set[str] = set()
        for name, value in fields.items():
            prefix, _, fp = name.partition(":")
            if not fp:
                continue
            if prefix == "a":
                alerts[fp] = value if isinstance(value, bytes) else str(value).encode()
            elif prefix == "s":
                state[fp] = _text(value)
            elif prefix == "n":
                notified[fp] = _text(value)
            elif prefix == "o":
                one_shot.add(fp)
        return cls(
            channel=_text(fields["channel"]),
            labels=orjson.loads(fields["labels"]),
            incarnation=_text(fields["incarnation"]),
            seq=int(_text(fields["seq"])),
            last_sent=float(_text(fields["last_sent"])),
            due=float(_text(fields["due"])),
            repeat=float(_text(fields["repeat"])),
            alerts=alerts,
            state=state,
            notified=notified,
            one_shot=one_shot,
        )

    def changed(self) -> bool:
        """Whether any alert's state differs from the one last sent."""
        return any(s != self.notified.get(fp) for fp, s in self.state.items())

    def firing(self) -> bool:
        return any(s != "resolved" for s in self.state.values())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Dispatcher:
    """Groups alerts in Redis and queues a notification per group when it is due.

    Several dispatchers (one per replica) may share one Redis: they see the same groups and
    each notification is queued once. ``queue`` is where notifications go and gives the Redis
    client and key prefix; ``clock`` returns the time in epoch seconds (tests pass their own);
    ``dashboard_url`` is put on every notification.
    """

    def __init__(
        self,
        queue: NotificationQueue,
        *,
        clock: Callable[[], float] = time.time,
        dashboard_url: str | None = None,
    ) -> None:
        self.queue = queue
        self.client = queue.client
        self.prefix = queue.prefix
        self.clock = clock
        self.dashboard_url = dashboard_url
        self.due_key = f"{self.prefix}groups:due"
        self._submit = self.client.register_script(_SUBMIT)
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        # Set by submit(): run() looks at the due groups at once rather than at its next tick,
        # so a group_wait shorter than the tick is kept (by this replica's own alerts).
        self._submitted = asyncio.Event()

    def group_hash_key(self, key: str) -> str:
        """The Redis hash holding the group ``key``."""
        return f"{self.prefix}group:{key}"

    async def submit(self, alert: Alert, *, channels: Sequence[str], grouping: Grouping) -> None:
        """Add ``alert`` (firing or resolved) to its group for each of ``channels``."""
        if not channels:
            return
        now = self.clock()
        labels = group_labels(alert, grouping)
        labels_json = orjson.dumps(labels)
        payload = encode_alert(alert)
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in dict.fromkeys(channels):
                key = group_key(channel, alert.rule_id, labels)
                await self._submit(
                    keys=[self.group_hash_key(key), self.due_key],
                    args=[
                        key,
                        repr(now),
                        alert.fingerprint,
                        alert_state(alert),
                        payload,
                        channel,
                        alert.rule_id,
                        labels_json,
                        repr(grouping.group_wait),
                        repr(grouping.group_interval),
                        repr(grouping.repeat_interval),
                        uuid.uuid4().hex[:12],
                        "1" if alert.kind in ONE_SHOT_KINDS else "0",
                    ],
                    client=pipe,
                )
            await pipe.execute()
        self._submitted.set()

    async def emit(self, alert: Alert, rule: StoredRule) -> None:
        """:meth:`submit` to the rule's channels with its grouping: the evaluator's ``emit``."""
        await self.submit(alert, channels=rule.spec.channels, grouping=rule.spec.grouping)

    async def flush_due(self, now: float | None = None) -> int:
        """Queue a notification for every group due at ``now`` (epoch seconds, default the
        clock's); returns how many this call queued."""
        now = self.clock() if now is None else now
        queued = 0
        for _ in range(_MAX_PAGES):
            keys = await self.client.zrangebyscore(self.due_key, "-inf", repr(now), start=0, num=_PAGE)
            for raw in keys:
                if await self._flush_group(_text(raw), now):
                    queued += 1
            if len(keys) < _PAGE:
                break
        return queued

    async def next_due(self) -> float | None:
        """When the next group is due (epoch seconds), or None when there is no group."""
        first = await self.client.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def _flush_group(self, key: str, now: float) -> bool:
        hkey = self.group_hash_key(key)
        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_ATTEMPTS):
                try:
                    await pipe.watch(hkey)
                    raw = await pipe.hgetall(hkey)
                    if not raw:
                        pipe.multi()
                        pipe.zrem(self.due_key, key)
                        await pipe.execute()
                        return False
                    group = _Group.parse(raw)
                    if group.due > now:
                        # Another dispatcher sent it, or it changed: the index follows the hash.
                        pipe.multi()
                        pipe.zadd(self.due_key, {key: group.due})
                        await pipe.execute()
                        return False
                    sending = group.changed() or (group.firing() and now >= group.last_sent + group.repeat)
                    pipe.multi()
                    if sending:
                        self._stage_send(pipe, key, group, now)
                    elif group.firing():
                        due = group.last_sent + group.repeat
                        pipe.hset(hkey, "due", repr(due))
                        pipe.zadd(self.due_key, {key: due})
                    else:
                        pipe.delete(hkey)
                        pipe.zrem(self.due_key, key)
                    await pipe.execute()
                    return sending
                except WatchError:
                    continue
        logger.info("alert group %s kept changing while being flushed; trying again on the next flush", key)
        return False

    def _stage_send(self, pipe: Any, key: str, group: _Group, now: float) -> None:
        hkey = self.group_hash_key(key)
        seq = group.seq + 1
        alerts = []
        for fp in group.state:
            try:
                alerts.append(decode_alert(group.alerts[fp]))
            except (KeyError, CodecError) as exc:
                # Written by another version, or damaged: leave it out rather than block the group.
                logger.error("alert group %s: alert %s cannot be read: %s", key, fp, exc)
        alerts.sort(key=lambda a: (a.status != "firing", a.starts_at.timestamp(), a.fingerprint))
        notification = Notification(
            id=f"{key}:{group.incarnation}:{seq}",
            channel=group.channel,
            group_key=key,
            group_labels=group.labels,
            alerts=tuple(alerts),
            created_at=datetime.fromtimestamp(now, UTC),
            dashboard_url=self.dashboard_url,
        )
        self.queue.stage_enqueue(pipe, notification)
        staying = {fp: s for fp, s in group.state.items() if s != "resolved" and fp not in group.one_shot}
        leaving = [fp for fp in group.state if fp not in staying]
        if not staying:
            pipe.delete(hkey)
            pipe.zrem(self.due_key, key)
            return
        due = now + group.repeat
        pipe.hset(
            hkey,
            mapping={
                "seq": seq,
                "last_sent": repr(now),
                "due": repr(due),
                "count": len(staying),
                **{f"n:{fp}": s for fp, s in staying.items()},
            },
        )
        if leaving:
            pipe.hdel(hkey, *[f"{p}:{fp}" for fp in leaving for p in ("a", "s", "n", "o")])
        pipe.zadd(self.due_key, {key: due})

    async def run(self, interval: float = 1.0) -> None:
        """Flush due groups until :meth:`stop`: at least every ``interval`` seconds, as soon as
        the next group is due when that is sooner, and right after an alert is submitted here."""
        self._stopping.clear()
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                wait = interval
                self._submitted.clear()
                try:
                    await self.flush_due()
                    next_due = await self.next_due()
                    if next_due is not None:
                        wait = min(interval, max(0.01, next_due - self.clock()))
                except (RedisError, OSError) as exc:
                    logger.error("alert grouping: Redis failed: %s", exc)
                except Exception:
                    logger.exception("alert grouping: flushing failed")
                woken = asyncio.ensure_future(self._submitted.wait())
                stopping = asyncio.ensure_future(self._stopping.wait())
                try:
                    await asyncio.wait({woken, stopping}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                    stopping.cancel()
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Ask :meth:`run` to return after its current flush; returns once it has."""
        self._stopping.set()
        await self._stopped.wait()
