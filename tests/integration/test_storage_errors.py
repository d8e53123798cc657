"""ErrorStore against the real PostgreSQL: grouping, exact counts, idempotency, concurrency,
regressions, partitions and retention."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage import partitions
from storage.errors_store import ErrorEvent, ErrorStore, Outcome, is_retryable

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(microsecond=0)


def event(fingerprint: str, *, seconds_ago: float = 0, at: datetime | None = None, **fields: Any) -> ErrorEvent:
    """An event of ``fingerprint`` at ``at``, else ``seconds_ago`` before the tests started."""
    fields.setdefault("type", "ValueError")
    fields.setdefault("message", f"bad value in {fingerprint}")
    timestamp = at if at is not None else NOW - timedelta(seconds=seconds_ago)
    return ErrorEvent(fingerprint=fingerprint, timestamp=timestamp, **fields)


def soon(seconds: float = 1) -> datetime:
    """A moment ``seconds`` from now: after anything the test did so far."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def rows(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """All rows of one query, on a connection of its own."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall()


async def issue_row(dsn: str, fingerprint: str) -> dict[str, Any]:
    """The issue a hash maps to, as a dict of its columns."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            "SELECT i.* FROM appguard.issues i JOIN appguard.issue_fingerprints f ON f.issue_id = i.id WHERE f.hash = %s",
            (fingerprint,),
        )
        found = await cur.fetchone()
        assert found is not None, f"no issue for {fingerprint}"
        return found


@pytest.fixture
async def store(appguard_dsn: str) -> AsyncIterator[ErrorStore]:
    opened = await ErrorStore.open(appguard_dsn)
    try:
        yield opened
    finally:
        await opened.close()


async def test_events_are_grouped_into_issues_with_exact_counts(store: ErrorStore, appguard_dsn: str) -> None:
    batch = [
        event("checkout-fp", seconds_ago=30, user_id="alice", service_version="1.0.0"),
        event("checkout-fp", seconds_ago=10, user_id="bob", service_version="1.0.1"),
        event("checkout-fp", seconds_ago=20, user_id="alice"),
        event("checkout-fp", seconds_ago=5, user_email="carol@example.com"),
        event("checkout-fp", seconds_ago=1),  # no user: not counted as one
        event("login-fp", seconds_ago=60, type="KeyError", message="'token'\nmore lines", culprit="auth.login"),
    ]

    report = await store.write_events(batch)

    assert [o.outcome for o in report.outcomes] == [Outcome.NEW] * 6
    assert report.inserted == 6 and report.duplicates == 0
    assert len(report.new_issues) == 2
    checkout = await issue_row(appguard_dsn, "checkout-fp")
    assert checkout["event_count"] == 5
    assert checkout["user_count"] == 3  # alice, bob, carol
    assert checkout["first_seen"] == NOW - timedelta(seconds=30)
    assert checkout["last_seen"] == NOW - timedelta(seconds=1)
    assert (checkout["status"], checkout["substatus"]) == ("unresolved", "new")
    assert checkout["first_release"] == "1.0.0"
    assert checkout["last_release"] == "1.0.1"  # the latest event that had a version
    login = await issue_row(appguard_dsn, "login-fp")
    assert login["title"] == "KeyError: 'token'"
    assert login["culprit"] == "auth.login"
    assert login["metadata"] == {"type": "KeyError", "value": "'token'"}
    assert (login["event_count"], login["user_count"]) == (1, 0)
    per_issue = await rows(appguard_dsn, "SELECT issue_id, count(*) FROM appguard.error_events GROUP BY 1 ORDER BY 1")
    assert per_issue == [(checkout["id"], 5), (login["id"], 1)]

    later = await store.write_events([event("checkout-fp", user_id="bob"), event("checkout-fp", user_id="dave")])

    assert [o.outcome for o in later.outcomes] == [Outcome.EXISTING, Outcome.EXISTING]
    assert {o.issue_id for o in later.outcomes} == {checkout["id"]}
    checkout = await issue_row(appguard_dsn, "checkout-fp")
    assert (checkout["event_count"], checkout["user_count"]) == (7, 4)
    assert checkout["last_seen"] == NOW


async def test_the_same_batch_written_twice_changes_nothing(store: ErrorStore, appguard_dsn: str) -> None:
    batch = [event(f"fp-{n % 4}", seconds_ago=n, user_id=f"user-{n % 3}", frames=[{"lineno": n}]) for n in range(40)]
    await store.write_events(batch)
    issues_before = await rows(appguard_dsn, "SELECT * FROM appguard.issues ORDER BY id")
    events_before = await rows(appguard_dsn, "SELECT id, event_id, issue_id FROM appguard.error_events ORDER BY id")

    again = await store.write_events(batch)

    assert [o.outcome for o in again.outcomes] == [Outcome.DUPLICATE] * 40
    assert again.inserted == 0
    assert await rows(appguard_dsn, "SELECT * FROM appguard.issues ORDER BY id") == issues_before
    assert (
        await rows(appguard_dsn, "SELECT id, event_id, issue_id FROM appguard.error_events ORDER BY id")
        == events_before
    )
    assert sum(r[-1] for r in await rows(appguard_dsn, "SELECT event_count FROM appguard.issues")) == 40


async def test_a_partly_stored_batch_counts_only_its_new_events(store: ErrorStore, appguard_dsn: str) -> None:
    first = [event("fp", seconds_ago=n, user_id="u1") for n in range(5)]
    await store.write_events(first[:3])
    repeated_id = event("fp", user_id="u2")

    report = await store.write_events([*first, repeated_id, repeated_id])

    assert [o.outcome for o in report.outcomes] == [Outcome.DUPLICATE] * 3 + [Outcome.EXISTING] * 3 + [
        Outcome.DUPLICATE
    ]
    issue = await issue_row(appguard_dsn, "fp")
    assert (issue["event_count"], issue["user_count"]) == (6, 2)


async def test_a_secondary_hash_finds_the_existing_issue(store: ErrorStore, appguard_dsn: str) -> None:
    # Issues grouped under the old algorithm's hash keep receiving events hashed by the new one.
    await store.write_events([event("old-hash")])
    report = await store.write_events([event("new-hash", secondary_fingerprint="old-hash")])

    assert report.outcomes[0].outcome is Outcome.EXISTING
    old = await issue_row(appguard_dsn, "old-hash")
    assert await issue_row(appguard_dsn, "new-hash") == old
    assert old["event_count"] == 2

    # From now on the new hash alone is enough.
    await store.write_events([event("new-hash")])
    assert (await issue_row(appguard_dsn, "old-hash"))["event_count"] == 3
    assert await rows(appguard_dsn, "SELECT count(*) FROM appguard.issues") == [(1,)]


async def test_secondary_hashes_of_a_new_issue_are_recorded(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("primary", secondary_fingerprint="legacy")])
    report = await store.write_events([event("other-primary", secondary_fingerprint="legacy")])

    assert report.outcomes[0].outcome is Outcome.EXISTING
    assert (await issue_row(appguard_dsn, "legacy"))["fingerprint"] == "primary"


async def test_two_writers_at_once_keep_exact_counts(appguard_dsn: str) -> None:
    # Both writers hammer the same issues, and a third of the events go through both of them
    # (a retry that raced the original): every event must be stored and counted once.
    fingerprints = [f"shared-{n}" for n in range(12)]
    shared = [event(fingerprints[n % 12], seconds_ago=n, user_id=f"u{n % 17}") for n in range(600)]
    only_a = [event(fingerprints[n % 12], seconds_ago=n, user_id=f"a{n % 5}") for n in range(600)]
    only_b = [event(fingerprints[(n * 7) % 12], seconds_ago=n, user_id=f"b{n % 5}") for n in range(600)]
    work_a = [b for i in range(0, 600, 50) for b in (only_a[i : i + 50], shared[i : i + 50])]
    work_b = [b for i in range(0, 600, 50) for b in (shared[::-1][i : i + 50], only_b[i : i + 50])]
    writer_a = await ErrorStore.open(appguard_dsn, max_size=2)
    writer_b = await ErrorStore.open(appguard_dsn, max_size=2)

    async def write(store: ErrorStore, work: list[list[ErrorEvent]]) -> int:
        return sum([(await store.write_events(batch)).inserted for batch in work])

    try:
        inserted = await asyncio.gather(write(writer_a, work_a), write(writer_b, work_b))
    finally:
        await writer_a.close()
        await writer_b.close()

    everything = shared + only_a + only_b
    assert sum(inserted) == len(everything)
    await _assert_counts_match(appguard_dsn, everything)


async def _assert_counts_match(dsn: str, events: list[ErrorEvent]) -> None:
    expected_events: dict[str, int] = {}
    expected_users: dict[str, set[str]] = {}
    for e in events:
        expected_events[e.fingerprint] = expected_events.get(e.fingerprint, 0) + 1
        expected_users.setdefault(e.fingerprint, set())
        if e.user_id is not None:
            expected_users[e.fingerprint].add(e.user_id)
    found = await rows(dsn, "SELECT fingerprint, event_count, user_count FROM appguard.issues ORDER BY fingerprint")
    assert found == sorted((fp, n, len(expected_users[fp])) for fp, n in expected_events.items())
    assert await rows(dsn, "SELECT count(*) FROM appguard.error_events") == [(len(events),)]
    stored = await rows(
        dsn,
        "SELECT i.fingerprint, count(*) FROM appguard.error_events e JOIN appguard.issues i ON i.id = e.issue_id GROUP BY 1 ORDER BY 1",
    )
    assert stored == sorted(expected_events.items())


_WRITER_SCRIPT = """
import asyncio, sys, uuid
from datetime import UTC, datetime, timedelta
from storage.errors_store import ErrorEvent, ErrorStore

async def main(dsn, seed):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    store = await ErrorStore.open(dsn, max_size=1, run_migrations=False)
    inserted = 0
    try:
        for b in range(20):
            batch = []
            for n in range(50):
                k = b * 50 + n
                # Events 0..499 are written by both processes, the rest by one only.
                ident = uuid.UUID(int=k) if k < 500 else uuid.UUID(int=(seed + 1) * 10**6 + k)
                batch.append(ErrorEvent(fingerprint=f"proc-fp-{k % 9}", timestamp=base + timedelta(seconds=k),
                                        type="E", message="m", event_id=ident, user_id=f"u{k % 13}"))
            inserted += (await store.write_events(batch)).inserted
    finally:
        await store.close()
    print(inserted)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


@pytest.mark.slow
async def test_two_writer_processes_keep_exact_counts(appguard_dsn: str) -> None:
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WRITER_SCRIPT,
            appguard_dsn,
            str(seed),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for seed in (0, 1)
    ]
    outputs = [await asyncio.wait_for(p.communicate(), 180) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()

    inserted = sum(int(out) for out, _ in outputs)
    assert inserted == 500 + 2 * 500
    found = await rows(appguard_dsn, "SELECT sum(event_count), count(*) FROM appguard.issues")
    assert found == [(1500, 9)]
    users = await rows(appguard_dsn, "SELECT fingerprint, user_count FROM appguard.issues ORDER BY 1")
    # fingerprint k % 9 and user k % 13 over 1000 distinct k: every pairing occurs.
    assert users == [(f"proc-fp-{n}", 13) for n in range(9)]


async def test_an_event_after_resolution_reopens_the_issue(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("fp", seconds_ago=100, service_version="1.0.0")])
    issue = await issue_row(appguard_dsn, "fp")
    assert await store.set_issue_status(issue["id"], "resolved")
    resolved = await issue_row(appguard_dsn, "fp")
    assert (resolved["status"], resolved["substatus"]) == ("resolved", None)

    # An event that happened before the resolution, delivered late, is no regression.
    late = await store.write_events([event("fp", seconds_ago=50)])
    assert late.outcomes[0].outcome is Outcome.EXISTING
    assert (await issue_row(appguard_dsn, "fp"))["status"] == "resolved"

    report = await store.write_events([event("fp", at=soon(), service_version="1.0.0")])

    assert report.outcomes[0].outcome is Outcome.REGRESSION
    assert report.regressed_issues == {issue["id"]}
    reopened = await issue_row(appguard_dsn, "fp")
    assert (reopened["status"], reopened["substatus"]) == ("unresolved", "regressed")
    assert reopened["resolved_at"] is None
    assert reopened["event_count"] == 3

    # Already reopened: the next event is an ordinary one.
    again = await store.write_events([event("fp", at=soon(2))])
    assert again.outcomes[0].outcome is Outcome.EXISTING


async def test_resolved_in_release_ignores_older_versions(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("fp", seconds_ago=100, service_version="1.9.0")])
    issue_id = (await issue_row(appguard_dsn, "fp"))["id"]
    await store.set_issue_status(issue_id, "resolved", resolved_in_release="2.0.0")

    older = await store.write_events(
        [
            event("fp", at=soon(), service_version="1.9.0"),
            event("fp", at=soon(), service_version="2.0.0-rc.1"),
            event("fp", at=soon(), service_version="1.10.5"),
        ]
    )
    assert [o.outcome for o in older.outcomes] == [Outcome.EXISTING] * 3
    assert (await issue_row(appguard_dsn, "fp"))["status"] == "resolved"

    fixed_release = await store.write_events(
        [event("fp", at=soon(), service_version="1.9.1"), event("fp", at=soon(), service_version="2.0.0")]
    )
    assert [o.outcome for o in fixed_release.outcomes] == [Outcome.EXISTING, Outcome.REGRESSION]
    reopened = await issue_row(appguard_dsn, "fp")
    assert (reopened["status"], reopened["substatus"], reopened["resolved_in_release"]) == (
        "unresolved",
        "regressed",
        None,
    )
    assert reopened["event_count"] == 6


async def test_newer_major_version_regresses(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("fp", seconds_ago=100)])
    issue_id = (await issue_row(appguard_dsn, "fp"))["id"]
    await store.set_issue_status(issue_id, "resolved", resolved_in_release="9.2.0")

    report = await store.write_events([event("fp", at=soon(), service_version="10.0.0")])

    assert report.outcomes[0].outcome is Outcome.REGRESSION


async def test_ignored_issues_stay_ignored(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("fp", seconds_ago=100)])
    issue_id = (await issue_row(appguard_dsn, "fp"))["id"]
    await store.set_issue_status(issue_id, "ignored")

    report = await store.write_events([event("fp", at=soon())])

    assert report.outcomes[0].outcome is Outcome.EXISTING
    issue = await issue_row(appguard_dsn, "fp")
    assert (issue["status"], issue["substatus"], issue["event_count"]) == ("ignored", None, 2)


async def test_new_issues_become_ongoing_after_a_week(store: ErrorStore, appguard_dsn: str) -> None:
    await store.write_events([event("fp")])
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        await conn.execute("UPDATE appguard.issues SET status_changed_at = now() - interval '8 days'")

    await store.write_events([event("fp", seconds_ago=-1)])

    assert (await issue_row(appguard_dsn, "fp"))["substatus"] == "ongoing"


async def test_set_issue_status_validates(store: ErrorStore) -> None:
    with pytest.raises(ValueError, match="status must be"):
        await store.set_issue_status(1, "closed")
    with pytest.raises(ValueError, match="resolved_in_release"):
        await store.set_issue_status(1, "ignored", resolved_in_release="1.0")
    assert await store.set_issue_status(123456, "resolved") is False


async def _partition_of(dsn: str, event_id: uuid.UUID) -> str:
    found = await rows(
        dsn, "SELECT tableoid::regclass::text FROM appguard.error_events WHERE event_id = %s", (event_id,)
    )
    assert len(found) == 1
    return str(found[0][0])


async def test_day_partitions_are_created_for_old_and_new_timestamps(store: ErrorStore, appguard_dsn: str) -> None:
    today = NOW.date()
    existing = await _partition_days(appguard_dsn)
    assert {today, today + timedelta(days=1), today + timedelta(days=2)} <= existing  # made at open

    old = event("fp", seconds_ago=40 * 86400)
    ahead = event("fp", seconds_ago=-5 * 86400)
    ancient = event("fp", seconds_ago=3650 * 86400)
    far_future = event("fp", seconds_ago=-400 * 86400)
    await store.write_events([old, ahead, ancient, far_future])

    assert await _partition_of(appguard_dsn, old.event_id) == "appguard." + partitions.partition_name(
        old.timestamp.date()
    )
    assert await _partition_of(appguard_dsn, ahead.event_id) == "appguard." + partitions.partition_name(
        ahead.timestamp.date()
    )
    # Outside the on-demand window: kept, in the default partition.
    assert await _partition_of(appguard_dsn, ancient.event_id) == "appguard.error_events_default"
    assert await _partition_of(appguard_dsn, far_future.event_id) == "appguard.error_events_default"

    # Creating the day later moves its rows out of the default partition.
    await store.ensure_partitions([ancient.timestamp.date()])
    assert await _partition_of(appguard_dsn, ancient.event_id) == "appguard." + partitions.partition_name(
        ancient.timestamp.date()
    )
    assert (await issue_row(appguard_dsn, "fp"))["event_count"] == 4


async def _partition_days(dsn: str) -> set[date]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return set(await partitions.list_partitions(conn))


async def test_partitions_created_by_another_writer_are_picked_up(appguard_dsn: str) -> None:
    first = await ErrorStore.open(appguard_dsn)
    second = await ErrorStore.open(appguard_dsn)
    try:
        day_old = event("fp", seconds_ago=20 * 86400)
        await first.write_events([day_old])
        # The second store's cache does not know the day; creating it again must be harmless.
        await second.write_events([event("fp", seconds_ago=20 * 86400 + 1)])
    finally:
        await first.close()
        await second.close()
    assert await rows(appguard_dsn, "SELECT count(*) FROM appguard.error_events") == [(2,)]
    assert await _partition_of(appguard_dsn, day_old.event_id) != "appguard.error_events_default"


async def test_retention_drops_old_partitions_and_keeps_issue_counts(store: ErrorStore, appguard_dsn: str) -> None:
    old = [event("fp", seconds_ago=40 * 86400 + n) for n in range(3)]
    boundary_old = event("fp", seconds_ago=20 * 86400 + 3600)
    boundary_new = event("fp", seconds_ago=20 * 86400 - 3600)
    recent = [event("fp", seconds_ago=n) for n in range(2)]
    ancient = event("fp", seconds_ago=3650 * 86400)  # in the default partition
    await store.write_events([*old, boundary_old, boundary_new, *recent, ancient])
    old_partition = partitions.partition_name(old[0].timestamp.date())
    assert old[0].timestamp.date() in await _partition_days(appguard_dsn)

    report = await store.delete_events_older_than(timedelta(days=20))

    assert old_partition in report.dropped_partitions
    assert old[0].timestamp.date() not in await _partition_days(appguard_dsn)
    assert report.deleted_events >= 1  # the ancient one, and boundary_old unless its day was dropped whole
    remaining = {r[0] for r in await rows(appguard_dsn, "SELECT event_id FROM appguard.error_events")}
    assert remaining == {boundary_new.event_id, *(e.event_id for e in recent)}
    issue = await issue_row(appguard_dsn, "fp")
    assert issue["event_count"] == 8
    assert issue["first_seen"] == ancient.timestamp

    # The dropped day is recreated on demand if an event for it arrives afterwards.
    late = event("fp", seconds_ago=40 * 86400 + 10)
    await store.write_events([late])
    assert await _partition_of(appguard_dsn, late.event_id) == "appguard." + old_partition


async def test_reads_return_issues_and_events(store: ErrorStore) -> None:
    batch = [
        event(
            "fp",
            seconds_ago=n,
            trace_id=f"{n:032x}",
            frames=[{"function": "f", "lineno": n}],
            attributes={"n": n},
            stacktrace="Traceback...\x00nul",
            user_agent="UA",
        )
        for n in range(5)
    ]
    report = await store.write_events(batch)
    issue_id = report.outcomes[0].issue_id
    assert issue_id is not None

    issue = await store.get_issue(issue_id)
    assert issue is not None and issue.event_count == 5
    assert await store.find_issue("fp") == issue
    assert await store.get_issue(issue_id + 1000) is None
    assert await store.find_issue("unknown") is None

    events = await store.list_issue_events(issue_id, limit=3)
    assert [e.event_id for e in events] == [e.event_id for e in batch[:3]]
    assert events[1].frames == [{"function": "f", "lineno": 1}]
    assert events[1].attributes == {"n": 1}
    assert events[1].trace_id == f"{1:032x}"
    assert events[1].stacktrace == "Traceback...\ufffdnul"
    page_two = await store.list_issue_events(issue_id, limit=3, after=events[-1])
    assert [e.event_id for e in page_two] == [e.event_id for e in batch[3:]]


async def test_paging_does_not_skip_events_with_equal_timestamps(store: ErrorStore) -> None:
    batch = [event("fp", seconds_ago=7) for _ in range(5)]
    await store.write_events(batch)
    issue = await store.find_issue("fp")
    assert issue is not None

    seen: list[uuid.UUID] = []
    page = await store.list_issue_events(issue.id, limit=2)
    while page:
        seen.extend(e.event_id for e in page)
        page = await store.list_issue_events(issue.id, limit=2, after=page[-1])

    assert sorted(seen) == sorted(e.event_id for e in batch)


async def test_retention_refuses_a_non_positive_age(store: ErrorStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.delete_events_older_than(timedelta(0))


async def test_failures_are_classified_for_the_exporter(appguard_dsn: str) -> None:
    # Nothing listens on port 1: connecting fails, and that is worth retrying.
    with pytest.raises(psycopg.OperationalError) as unreachable:
        await ErrorStore.open("postgresql://postgres@127.0.0.1:1/none", timeout=2)
    assert is_retryable(unreachable.value)

    store = await ErrorStore.open(appguard_dsn)
    try:
        # An event without a fingerprint breaks a NOT NULL constraint: retrying cannot help.
        bad = event("fp")
        bad.fingerprint = None  # type: ignore[assignment]
        with pytest.raises(psycopg.Error) as refused:
            await store.write_events([bad])
        assert not is_retryable(refused.value)
        # The failed batch left nothing behind, and the store still works.
        report = await store.write_events([event("fp")])
        assert report.inserted == 1
    finally:
        await store.close()


async def test_an_empty_batch_does_nothing(store: ErrorStore) -> None:
    report = await store.write_events([])
    assert report.outcomes == [] and report.inserted == 0
