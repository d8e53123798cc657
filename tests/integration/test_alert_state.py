"""AlertStateStore against the real PostgreSQL: instances and their history written together,
one notifier per action interval across connections, history pages, rule health, pruning and
forgetting a deleted rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from alerting.model import AlertState, Severity
from alerting.state import AlertInstance, AlertStateStore, Transition

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


async def open_pool(dsn: str, size: int = 4) -> AsyncConnectionPool[Any]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn, min_size=1, max_size=size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    return pool


@pytest.fixture
async def pool(appguard_dsn: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    opened = await open_pool(appguard_dsn)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def states(pool: AsyncConnectionPool[Any]) -> AlertStateStore:
    return AlertStateStore(pool)


async def rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall()


def instance(rule_id: int, fingerprint: str, state: AlertState = AlertState.FIRING, **fields: Any) -> AlertInstance:
    fields.setdefault("severity", Severity.WARNING)
    fields.setdefault("labels", {"alertname": "r", "rule": str(rule_id), "fp": fingerprint})
    fields.setdefault("last_evaluated_at", T0)
    return AlertInstance(rule_id=rule_id, fingerprint=fingerprint, state=state, **fields)


def claim(rule_id: int, fingerprint: str, at: datetime) -> AlertInstance:
    return instance(rule_id, fingerprint, fired_at=at, active_since=at, last_evaluated_at=at, last_notified_at=at)


async def test_states_and_transitions_round_trip(states: AlertStateStore) -> None:
    firing = instance(
        7, "aa", labels={"alertname": "High errors", "service": "checkout"}, annotations={"summary": "12 errors"},
        value=12.0, severity=Severity.CRITICAL, active_since=T0 - timedelta(minutes=2), fired_at=T0, last_notified_at=T0,
    )
    pending = instance(7, "bb", AlertState.PENDING, value=3.5, active_since=T0)
    other_rule = instance(8, "aa", AlertState.PENDING, active_since=T0)
    await states.save(
        [firing, pending, other_rule],
        [
            Transition(7, "aa", T0 - timedelta(minutes=2), AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING, 4.0),
            Transition(7, "aa", T0, AlertState.PENDING, AlertState.FIRING, Severity.CRITICAL, 12.0, {"service": "checkout"}),
        ],
    )

    assert await states.load(7) == {"aa": firing, "bb": pending}
    assert await states.get(8, "aa") == other_rule
    assert await states.get(8, "zz") is None
    history = await states.history(7)
    assert [(t.from_state, t.to_state, t.severity, t.value, t.labels) for t in history] == [
        (AlertState.PENDING, AlertState.FIRING, Severity.CRITICAL, 12.0, {"service": "checkout"}),
        (AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING, 4.0, {}),
    ]
    assert all(t.id is not None and t.rule_id == 7 for t in history)
    assert [(i.rule_id, i.fingerprint) for i in await states.active()] == [(7, "aa"), (7, "bb"), (8, "aa")]
    assert {(i.rule_id, i.state) for i in await states.active([8])} == {(8, AlertState.PENDING)}
    assert await states.active_rule_ids() == {7, 8}

    resolved = instance(7, "aa", AlertState.RESOLVED, resolved_at=T0 + timedelta(minutes=5))
    await states.save([resolved])
    assert (await states.load(7))["aa"] == resolved
    assert await states.active_rule_ids() == {7, 8}  # "bb" still pending


async def test_a_failed_save_writes_neither_states_nor_history(states: AlertStateStore, appguard_dsn: str) -> None:
    await states.save([instance(1, "aa", AlertState.PENDING, active_since=T0)])
    broken = Transition(1, "aa", None, AlertState.PENDING, AlertState.FIRING, Severity.WARNING)  # type: ignore[arg-type]

    with pytest.raises(psycopg.errors.NotNullViolation):
        await states.save([instance(1, "aa", fired_at=T0), instance(1, "bb")], [broken])

    assert (await states.load(1))["aa"].state is AlertState.PENDING
    assert "bb" not in await states.load(1)
    assert await rows(appguard_dsn, "SELECT count(*) FROM appguard.alert_history") == [(0,)]


async def test_save_on_a_given_connection_joins_its_transaction(states: AlertStateStore, appguard_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await states.save([instance(2, "aa")], [], conn=conn)
                raise RuntimeError("the caller gave up")
        assert await states.load(2) == {}
        async with conn.transaction():
            await states.save([instance(2, "aa")], [], conn=conn)
    assert set(await states.load(2)) == {"aa"}


async def test_notify_once_lets_one_of_many_racing_callers_through(appguard_dsn: str) -> None:
    pools = [await open_pool(appguard_dsn, size=1) for _ in range(4)]
    try:
        stores = [AlertStateStore(p) for p in pools]
        winners: list[int] = []

        async def attempt(index: int, when: datetime) -> None:
            async with stores[index].notify_once(claim(5, "issue-1", when), interval=600) as ours:
                if ours:
                    winners.append(index)
                    # Hold the claim open a while: the others must wait for it, then see it.
                    await asyncio.sleep(0.2)

        # No row yet: the callers race to insert it.
        await asyncio.gather(*(attempt(i, T0) for i in range(4)))
        assert len(winners) == 1

        store = stores[0]
        async with store.notify_once(claim(5, "issue-1", T0 + timedelta(seconds=599)), interval=600) as ours:
            assert not ours
        # The interval is over: the callers race to update the row.
        await asyncio.gather(*(attempt(i, T0 + timedelta(seconds=600)) for i in range(4)))
        assert len(winners) == 2
        async with store.notify_once(claim(5, "issue-2", T0 + timedelta(seconds=601)), interval=600) as ours:
            assert ours  # another instance of the same rule is not held back

        got = await store.get(5, "issue-1")
        assert got is not None and got.last_notified_at == T0 + timedelta(seconds=600)
        history = await store.history(5)
        assert [(t.fingerprint, t.from_state, t.to_state, t.at) for t in history] == [
            ("issue-2", AlertState.INACTIVE, AlertState.FIRING, T0 + timedelta(seconds=601)),
            ("issue-1", AlertState.FIRING, AlertState.FIRING, T0 + timedelta(seconds=600)),
            ("issue-1", AlertState.INACTIVE, AlertState.FIRING, T0),
        ]
        assert await store.recently_notified(5, ["issue-1", "issue-2", "issue-3"], since=T0 + timedelta(seconds=600)) == {
            "issue-2"
        }
    finally:
        for p in pools:
            await p.close()


async def test_a_claim_whose_notification_failed_is_rolled_back(states: AlertStateStore) -> None:
    with pytest.raises(ConnectionError):
        async with states.notify_once(claim(3, "x", T0), interval=3600) as ours:
            assert ours
            raise ConnectionError("the queue is down")

    assert await states.get(3, "x") is None
    assert await states.history(3) == []
    async with states.notify_once(claim(3, "x", T0 + timedelta(seconds=1)), interval=3600) as ours:
        assert ours


async def test_history_pages_newest_first(states: AlertStateStore) -> None:
    same_instant = T0 + timedelta(minutes=10)
    transitions = [
        Transition(4, "aa", T0 + timedelta(minutes=m), AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING, float(m))
        for m in range(10)
    ] + [
        Transition(4, "bb", same_instant, AlertState.PENDING, AlertState.FIRING, Severity.WARNING, 100.0 + n)
        for n in range(3)
    ] + [Transition(9, "aa", T0, AlertState.INACTIVE, AlertState.FIRING, Severity.INFO)]
    await states.save([], transitions)

    first = await states.history(4, limit=5)
    assert [t.at for t in first] == [same_instant] * 3 + [T0 + timedelta(minutes=9), T0 + timedelta(minutes=8)]
    assert [t.value for t in first[:3]] == [102.0, 101.0, 100.0]  # same instant: the later row first
    second = await states.history(4, limit=5, before=first[-1])
    assert [t.value for t in second] == [7.0, 6.0, 5.0, 4.0, 3.0]
    tied = await states.history(4, limit=2, before=first[1])
    assert [t.value for t in tied] == [100.0, 9.0]  # paging inside a run of equal times
    by_time = await states.history(4, before=T0 + timedelta(minutes=2))
    assert [t.value for t in by_time] == [1.0, 0.0]
    assert len(await states.history(4, limit=100)) == 13
    with pytest.raises(ValueError):
        await states.history(4, limit=0)


async def test_rule_health_keeps_the_last_outcome(states: AlertStateStore) -> None:
    assert await states.health(6) is None
    await states.record_evaluation(6, T0)
    await states.record_evaluation(6, T0 + timedelta(minutes=1), "Prometheus refused the query: parse error")

    health = await states.health(6)
    assert health is not None
    assert (health.evaluated_at, health.last_error, health.last_error_at, health.last_ok_at) == (
        T0 + timedelta(minutes=1), "Prometheus refused the query: parse error", T0 + timedelta(minutes=1), T0,
    )

    await states.record_evaluation(6, T0 + timedelta(minutes=2))
    health = await states.health(6)
    assert health is not None
    assert (health.last_error, health.last_error_at, health.last_ok_at) == (None, None, T0 + timedelta(minutes=2))


async def test_expire_and_prune(states: AlertStateStore) -> None:
    await states.save(
        [
            claim(1, "old", T0 - timedelta(hours=2)),
            claim(1, "recent", T0 - timedelta(minutes=5)),
            instance(2, "pending-long-ago", AlertState.PENDING, last_evaluated_at=T0 - timedelta(days=30)),
            instance(2, "inactive-old", AlertState.INACTIVE, last_evaluated_at=T0 - timedelta(days=2)),
            instance(2, "inactive-new", AlertState.INACTIVE, last_evaluated_at=T0 - timedelta(hours=1)),
        ],
        [
            Transition(2, "x", T0 - timedelta(days=100), AlertState.PENDING, AlertState.INACTIVE, Severity.WARNING),
            Transition(2, "x", T0 - timedelta(days=1), AlertState.INACTIVE, AlertState.PENDING, Severity.WARNING),
        ],
    )

    assert await states.expire_notified(1, before=T0 - timedelta(hours=1), at=T0) == 1
    expired = await states.get(1, "old")
    assert expired is not None and (expired.state, expired.resolved_at) == (AlertState.RESOLVED, T0)
    assert (await states.history(1))[0].to_state is AlertState.RESOLVED
    assert await states.expire_notified(1, before=T0 - timedelta(hours=1), at=T0) == 0

    deleted = await states.prune(ended_before=T0 - timedelta(days=1), history_before=T0 - timedelta(days=90))
    assert deleted == 1
    assert set(await states.load(2)) == {"pending-long-ago", "inactive-new"}
    assert [t.at for t in await states.history(2)] == [T0 - timedelta(days=1)]
    assert await states.prune(ended_before=T0) == 1  # inactive-new; "old" was resolved at T0
    assert await states.prune(ended_before=T0 + timedelta(seconds=1)) == 1
    assert set(await states.load(1)) == {"recent"}


async def test_forget_rule_removes_only_that_rule(states: AlertStateStore, appguard_dsn: str) -> None:
    for rule_id in (11, 12):
        await states.save(
            [instance(rule_id, "aa")],
            [Transition(rule_id, "aa", T0, AlertState.PENDING, AlertState.FIRING, Severity.WARNING)],
        )
        await states.record_evaluation(rule_id, T0)

    await states.forget_rule(11)

    assert await states.load(11) == {}
    assert await states.history(11) == []
    assert await states.health(11) is None
    assert set(await states.load(12)) == {"aa"}
    assert len(await states.history(12)) == 1
    assert await states.health(12) is not None
    assert await rows(appguard_dsn, "SELECT DISTINCT rule_id FROM appguard.alert_history") == [(12,)]
