"""Where alert instances keep their state between evaluations: ``appguard.alert_states``.

An *instance* is one alert of a rule, named by a fingerprint of its identifying labels (an
issue; a service and environment; a Prometheus series). Its row holds the state of the
machine in :mod:`alerting.evaluator` (``inactive``, ``pending``, ``firing``, ``resolved``),
when the condition started to hold (so that a restarted evaluator does not start a ``for``
duration again) and when it was last notified about (so that nothing is notified twice).

Every state change is appended to ``appguard.alert_history`` in the transaction that made it
(:meth:`AlertStateStore.save`), so the history never disagrees with the states. Issue rules
decide who notifies with :meth:`AlertStateStore.notify_once`, a conditional update that lets
one caller through per action interval however many replicas try at the same moment.
``appguard.alert_rule_health`` keeps each rule's last evaluation and the error it met.

Rows carry the rule's id without a foreign key; :meth:`AlertStateStore.forget_rule` removes a
deleted rule's rows (``storage/migrations/0006_alert_state.sql``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from alerting.model import AlertState, Severity


@dataclass(frozen=True)
class AlertInstance:
    """One row of ``appguard.alert_states``: an alert instance and what evaluation knows of it.

    ``labels`` and ``annotations`` are the alert's as last evaluated (``severity`` included in
    the labels). ``active_since`` is when the condition started to hold, ``fired_at`` when it
    last started firing, ``resolved_at`` when it last stopped, ``last_notified_at`` when an
    alert about it was last emitted.
    """

    rule_id: int
    fingerprint: str
    state: AlertState
    severity: Severity
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    active_since: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_evaluated_at: datetime | None = None
    last_notified_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """One row of ``appguard.alert_history``: an instance went from ``from_state`` to
    ``to_state`` at ``at`` (equal states: a firing instance changed severity, or an issue
    rule notified again). ``id`` is set on rows read back, None on rows to write."""

    rule_id: int
    fingerprint: str
    at: datetime
    from_state: AlertState
    to_state: AlertState
    severity: Severity
    value: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class RuleHealth:
    """A rule's last evaluation: when, its error if it failed (else None), the last success."""

    rule_id: int
    evaluated_at: datetime
    last_error: str | None
    last_error_at: datetime | None
    last_ok_at: datetime | None


_STATE_COLUMNS = (
    "rule_id, fingerprint, state, severity, labels, annotations, value, active_since, fired_at, "
    "resolved_at, last_evaluated_at, last_notified_at"
)
_UPSERT_STATE = f"""
    INSERT INTO appguard.alert_states ({_STATE_COLUMNS})
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (rule_id, fingerprint) DO UPDATE SET
        state = excluded.state,
        severity = excluded.severity,
        labels = excluded.labels,
        annotations = excluded.annotations,
        value = excluded.value,
        active_since = excluded.active_since,
        fired_at = excluded.fired_at,
        resolved_at = excluded.resolved_at,
        last_evaluated_at = excluded.last_evaluated_at,
        last_notified_at = excluded.last_notified_at
"""
_INSERT_HISTORY = """
    INSERT INTO appguard.alert_history (rule_id, fingerprint, at, from_state, to_state, severity, value, labels)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""
_HISTORY_COLUMNS = "id, rule_id, fingerprint, at, from_state, to_state, severity, value, labels"


class AlertStateStore:
    """Reads and writes alert instances, their history and rule health in PostgreSQL.

    Works over any pool of connections to a database migrated by :mod:`storage.migrations`
    (autocommit or not: every write runs in a transaction of its own).
    """

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    # ---- instances

    async def load(self, rule_id: int) -> dict[str, AlertInstance]:
        """Every instance of a rule, by fingerprint."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM appguard.alert_states WHERE rule_id = %s".encode(), (rule_id,)
            )
            return {row[1]: _instance(row) for row in await cur.fetchall()}

    async def get(self, rule_id: int, fingerprint: str) -> AlertInstance | None:
        """One instance, or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_STATE_COLUMNS} FROM appguard.alert_states WHERE rule_id = %s AND fingerprint = %s".encode(),
                (rule_id, fingerprint),
            )
            row = await cur.fetchone()
            return None if row is None else _instance(row)

    async def active(self, rule_ids: Sequence[int] | None = None) -> list[AlertInstance]:
        """The pending and firing instances (of ``rule_ids``, else of every rule), firing first."""
        query = f"SELECT {_STATE_COLUMNS} FROM appguard.alert_states WHERE state IN ('pending', 'firing')"
        params: tuple[Any, ...] = ()
        if rule_ids is not None:
            query += " AND rule_id = ANY(%s)"
            params = (list(rule_ids),)
        query += " ORDER BY state = 'pending', rule_id, fingerprint"
        async with self._pool.connection() as conn:
            cur = await conn.execute(query.encode(), params)
            return [_instance(row) for row in await cur.fetchall()]

    async def active_rule_ids(self) -> set[int]:
        """Ids of the rules that have a pending or firing instance."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT rule_id FROM appguard.alert_states WHERE state IN ('pending', 'firing')"
            )
            return {row[0] for row in await cur.fetchall()}

    async def save(
        self,
        states: Sequence[AlertInstance],
        transitions: Sequence[Transition] = (),
        *,
        conn: psycopg.AsyncConnection[Any] | None = None,
    ) -> None:
        """Write ``states`` (insert or replace) and append ``transitions``, all or nothing.

        With ``conn`` the write runs on that connection (in a transaction, or a savepoint of
        the caller's): the evaluator passes the connection holding its lease, so a replica that
        lost the lease cannot write.
        """
        if not states and not transitions:
            return
        if conn is not None:
            await _save(conn, states, transitions)
            return
        async with self._pool.connection() as pooled:
            await _save(pooled, states, transitions)

    @asynccontextmanager
    async def notify_once(self, instance: AlertInstance, *, interval: float) -> AsyncIterator[bool]:
        """Claim the right to notify about ``instance``; yields True to one caller per ``interval``.

        ``instance`` is the row as it should be after notifying (firing, ``last_notified_at``
        set to the time of the claim). The claim succeeds when the instance has no row yet or
        was last notified at least ``interval`` seconds before ``instance.last_notified_at``;
        then the row is written and a transition appended. Callers racing for the same
        instance, in any process, queue on its row lock, and only the first gets True.

        The claim commits when the block ends and rolls back if it raises, so notify inside
        the block: a notification that failed leaves the instance free for the next caller.
        """
        now = instance.last_notified_at
        if now is None:
            raise ValueError("notify_once needs the instance's last_notified_at (the time of the claim)")
        async with self._pool.connection() as conn, conn.transaction():
            previous = await _lock_row(conn, instance.rule_id, instance.fingerprint)
            if previous is None:
                cur = await conn.execute(
                    f"""
                    INSERT INTO appguard.alert_states ({_STATE_COLUMNS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (rule_id, fingerprint) DO NOTHING
                    RETURNING 1
                    """.encode(),
                    _state_row(instance),
                )
                if await cur.fetchone() is None:
                    # Another caller inserted it first; its commit is what this waited for.
                    previous = await _lock_row(conn, instance.rule_id, instance.fingerprint)
                    assert previous is not None
            if previous is not None:
                last_notified = previous[1]
                if last_notified is not None and last_notified > now - timedelta(seconds=interval):
                    yield False
                    return
                await conn.execute(_UPSERT_STATE.encode(), _state_row(instance))
            from_state = AlertState.INACTIVE if previous is None else AlertState(previous[0])
            await conn.execute(
                _INSERT_HISTORY.encode(),
                _history_row(
                    Transition(
                        instance.rule_id, instance.fingerprint, now, from_state, instance.state,
                        instance.severity, instance.value, instance.labels,
                    )
                ),
            )
            yield True

    async def recently_notified(self, rule_id: int, fingerprints: Sequence[str], *, since: datetime) -> set[str]:
        """Which of ``fingerprints`` were notified about after ``since`` (a cheap pre-check:
        :meth:`notify_once` is what decides)."""
        if not fingerprints:
            return set()
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT fingerprint FROM appguard.alert_states "
                "WHERE rule_id = %s AND fingerprint = ANY(%s) AND last_notified_at > %s",
                (rule_id, list(fingerprints), since),
            )
            return {row[0] for row in await cur.fetchall()}

    async def expire_notified(self, rule_id: int, *, before: datetime, at: datetime) -> int:
        """Resolve the firing instances of ``rule_id`` last notified before ``before`` (at
        ``at``, with a transition each); returns how many. Issue rules' instances end so once
        their action interval is over."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                WITH done AS (
                    UPDATE appguard.alert_states
                    SET state = 'resolved', resolved_at = %(at)s, last_evaluated_at = %(at)s
                    WHERE rule_id = %(rule)s AND state = 'firing' AND last_notified_at <= %(before)s
                    RETURNING rule_id, fingerprint, severity, value, labels
                )
                INSERT INTO appguard.alert_history (rule_id, fingerprint, at, from_state, to_state, severity, value, labels)
                SELECT rule_id, fingerprint, %(at)s, 'firing', 'resolved', severity, value, labels FROM done
                """,
                {"rule": rule_id, "before": before, "at": at},
            )
            return cur.rowcount

    async def prune(self, *, ended_before: datetime, history_before: datetime | None = None) -> int:
        """Delete inactive and resolved instances not evaluated since ``ended_before`` (and,
        with ``history_before``, history older than that); returns the instances deleted.
        Pending and firing instances are never pruned."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """
                DELETE FROM appguard.alert_states
                WHERE state IN ('inactive', 'resolved')
                  AND coalesce(last_evaluated_at, resolved_at, last_notified_at) < %s
                """,
                (ended_before,),
            )
            deleted = cur.rowcount
            if history_before is not None:
                await conn.execute("DELETE FROM appguard.alert_history WHERE at < %s", (history_before,))
            return deleted

    # ---- history

    async def history(
        self, rule_id: int, *, limit: int = 50, before: datetime | Transition | None = None
    ) -> list[Transition]:
        """A rule's transitions, newest first, at most ``limit``.

        ``before`` pages on: a time (transitions strictly earlier) or the last transition of
        the previous page (the ones after it in this order, even at the same instant).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        params: tuple[Any, ...]
        if isinstance(before, Transition):
            if before.id is None:
                raise ValueError("before: a transition read from the history (with its id)")
            where, params = "rule_id = %s AND (at, id) < (%s, %s)", (rule_id, before.at, before.id)
        elif before is not None:
            where, params = "rule_id = %s AND at < %s", (rule_id, before)
        else:
            where, params = "rule_id = %s", (rule_id,)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_HISTORY_COLUMNS} FROM appguard.alert_history WHERE {where} ORDER BY at DESC, id DESC LIMIT %s".encode(),
                (*params, limit),
            )
            return [_transition(row) for row in await cur.fetchall()]

    # ---- rule health

    async def record_evaluation(self, rule_id: int, at: datetime, error: str | None = None) -> None:
        """Note that ``rule_id`` was evaluated at ``at``, and the error if it failed."""
        async with self._pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO appguard.alert_rule_health AS h (rule_id, evaluated_at, last_error, last_error_at, last_ok_at)
                VALUES (%(rule)s, %(at)s, %(error)s,
                        CASE WHEN %(error)s::text IS NOT NULL THEN %(at)s END,
                        CASE WHEN %(error)s::text IS NULL THEN %(at)s END)
                ON CONFLICT (rule_id) DO UPDATE SET
                    evaluated_at = excluded.evaluated_at,
                    last_error = excluded.last_error,
                    last_error_at = excluded.last_error_at,
                    last_ok_at = coalesce(excluded.last_ok_at, h.last_ok_at)
                """,
                {"rule": rule_id, "at": at, "error": error},
            )

    async def health(self, rule_id: int) -> RuleHealth | None:
        """A rule's last evaluation, or None if it was never evaluated."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT rule_id, evaluated_at, last_error, last_error_at, last_ok_at "
                "FROM appguard.alert_rule_health WHERE rule_id = %s",
                (rule_id,),
            )
            row = await cur.fetchone()
            return None if row is None else RuleHealth(*row)

    # ---- deleted rules

    async def forget_rule(self, rule_id: int) -> None:
        """Delete a rule's instances, history and health (call it when the rule is deleted)."""
        async with self._pool.connection() as conn, conn.transaction():
            for table in ("alert_states", "alert_history", "alert_rule_health"):
                await conn.execute(f"DELETE FROM appguard.{table} WHERE rule_id = %s".encode(), (rule_id,))


async def _save(conn: psycopg.AsyncConnection[Any], states: Sequence[AlertInstance], transitions: Sequence[Transition]) -> None:
    async with conn.transaction(), conn.cursor() as cur:
        if states:
            await cur.executemany(_UPSERT_STATE.encode(), [_state_row(s) for s in states])
        if transitions:
            await cur.executemany(_INSERT_HISTORY.encode(), [_history_row(t) for t in transitions])


async def _lock_row(conn: psycopg.AsyncConnection[Any], rule_id: int, fingerprint: str) -> tuple[str, datetime | None] | None:
    cur = await conn.execute(
        "SELECT state, last_notified_at FROM appguard.alert_states WHERE rule_id = %s AND fingerprint = %s FOR UPDATE",
        (rule_id, fingerprint),
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1])


def _state_row(s: AlertInstance) -> tuple[Any, ...]:
    return (
        s.rule_id, s.fingerprint, s.state.value, s.severity.value, Jsonb(s.labels), Jsonb(s.annotations), s.value,
        s.active_since, s.fired_at, s.resolved_at, s.last_evaluated_at, s.last_notified_at,
    )


def _history_row(t: Transition) -> tuple[Any, ...]:
    return (t.rule_id, t.fingerprint, t.at, t.from_state.value, t.to_state.value, t.severity.value, t.value, Jsonb(t.labels))


def _instance(row: Sequence[Any]) -> AlertInstance:
    return AlertInstance(
        rule_id=row[0],
        fingerprint=row[1],
        state=AlertState(row[2]),
        severity=Severity(row[3]),
        labels=dict(row[4] or {}),
        annotations=dict(row[5] or {}),
        value=row[6],
        active_since=row[7],
        fired_at=row[8],
        resolved_at=row[9],
        last_evaluated_at=row[10],
        last_notified_at=row[11],
    )


def _transition(row: Sequence[Any]) -> Transition:
    return Transition(
        id=row[0],
        rule_id=row[1],
        fingerprint=row[2],
        at=row[3],
        from_state=AlertState(row[4]),
        to_state=AlertState(row[5]),
        severity=Severity(row[6]),
        value=row[7],
        labels=dict(row[8] or {}),
    )
