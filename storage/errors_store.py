"""The error store: writes error events into PostgreSQL, grouped into issues.

:meth:`ErrorStore.write_events` takes a batch of :class:`ErrorEvent`, COPYs it into a staging
table of the session and calls ``appguard.ingest_staged()`` (``migrations/0002_ingest.sql``),
which in the same transaction

- finds each event's issue through any of its hashes (primary or secondary) or creates it,
- inserts the events whose ``(event_id, timestamp)`` is not stored yet,
- adds to each issue's ``event_count`` and ``user_count`` what was really inserted, widens
  ``first_seen``/``last_seen`` and reopens resolved issues that regressed.

A batch written twice therefore changes nothing the second time, and writers in several
processes keep exact counts. Deadlocks are ruled out by the lock order of the SQL; a deadlock or
serialization failure reported anyway is retried, which is safe because the write is idempotent.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import psycopg
import psycopg.errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from storage import partitions
from storage.migrations import migrate

logger = logging.getLogger(f"appguard.{__name__}")

ISSUE_STATUSES = ("unresolved", "resolved", "ignored")

# The staging table's columns, in the order ErrorEvent rows are written (0002_ingest.sql).
_STAGE_COLUMNS = (
    "event_id",
    '"timestamp"',
    "project_id",
    "fingerprint",
    "secondary_fingerprint",
    "title",
    "culprit",
    "level",
    "type",
    "message",
    "trace_id",
    "span_id",
    "session_id",
    "service_name",
    "service_version",
    "environment",
    "user_id",
    "user_email",
    "user_agent",
    "stacktrace",
    "frames",
    "attributes",
)
_COPY_SQL = f"COPY pg_temp.appguard_stage ({', '.join(_STAGE_COLUMNS)}) FROM STDIN".encode()
# Fixed types spare psycopg a dumper lookup per value. The jsonb columns travel as text that
# the server parses: the rows carry them already encoded.
_COPY_TYPES = ["uuid", "timestamptz", "int8", *["text"] * (len(_STAGE_COLUMNS) - 3)]

_TITLE_MAX = 200

_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


@dataclass(slots=True)
class ErrorEvent:
    """One error occurrence, already fingerprinted.

    ``event_id`` makes writes idempotent: an exporter retrying a batch must send the same ids
    (derive them from the source data, e.g. a hash of trace id, span id and exception, rather
    than drawing new ones). Naive timestamps are taken as UTC. ``service_version`` is the
    release that regression checks compare with an issue's ``resolved_in_release``. Users are
    counted by ``user_id``, else by ``user_email``.
    """

    fingerprint: str
    timestamp: datetime
    type: str
    message: str
    secondary_fingerprint: str | None = None
    title: str = ""
    culprit: str = ""
    level: str = "error"
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    project_id: int = 1
    trace_id: str | None = None
    span_id: str | None = None
    session_id: str | None = None
    service_name: str = ""
    service_version: str | None = None
    environment: str = ""
    stacktrace: str | None = None
    frames: list[dict[str, Any]] | None = None
    attributes: dict[str, Any] | None = None
    user_id: str | None = None
    user_email: str | None = None
    user_agent: str | None = None


class Outcome(enum.StrEnum):
    """What writing one event did."""

    NEW = "new"  # its issue was created by this write
    REGRESSION = "regression"  # it reopened a resolved issue
    EXISTING = "existing"  # stored in an issue that already existed
    DUPLICATE = "duplicate"  # an event with this id and timestamp was already stored


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """The outcome of one event of a batch; ``issue_id`` is None for duplicates."""

    event_id: uuid.UUID
    issue_id: int | None
    outcome: Outcome


@dataclass(frozen=True)
class WriteReport:
    """Per-event outcomes of :meth:`ErrorStore.write_events`, in the batch's order."""

    outcomes: list[EventOutcome]

    @property
    def inserted(self) -> int:
        """How many events were stored by this write."""
        return sum(1 for o in self.outcomes if o.outcome is not Outcome.DUPLICATE)

    @property
    def duplicates(self) -> int:
        """How many events were already stored."""
        return sum(1 for o in self.outcomes if o.outcome is Outcome.DUPLICATE)

    @property
    def new_issues(self) -> set[int]:
        """Ids of the issues this write created."""
        return {o.issue_id for o in self.outcomes if o.outcome is Outcome.NEW and o.issue_id is not None}

    @property
    def regressed_issues(self) -> set[int]:
        """Ids of the resolved issues this write reopened."""
        return {o.issue_id for o in self.outcomes if o.outcome is Outcome.REGRESSION and o.issue_id is not None}


@dataclass(frozen=True)
class RetentionReport:
    """What :meth:`ErrorStore.delete_events_older_than` removed."""

    cutoff: datetime
    dropped_partitions: list[str]
    deleted_events: int


@dataclass(frozen=True)
class Issue:
    """A row of ``appguard.issues``."""

    id: int
    project_id: int
    fingerprint: str
    title: str
    type: str
    culprit: str
    level: str
    service_name: str
    environment: str
    status: str
    substatus: str | None
    status_changed_at: datetime
    resolved_at: datetime | None
    resolved_in_release: str | None
    first_seen: datetime
    last_seen: datetime
    first_release: str | None
    last_release: str | None
    event_count: int
    user_count: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredEvent:
    """A row of ``appguard.error_events``."""

    id: int
    event_id: uuid.UUID
    timestamp: datetime
    received_at: datetime
    project_id: int
    issue_id: int
    fingerprint: str
    level: str
    type: str
    message: str
    culprit: str
    trace_id: str | None
    span_id: str | None
    session_id: str | None
    service_name: str
    service_version: str | None
    environment: str
    user_id: str | None
    user_email: str | None
    user_agent: str | None
    stacktrace: str | None
    frames: list[dict[str, Any]] | None
    attributes: dict[str, Any] | None


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed write is worth trying again later.

    True when the server could not be reached, is shutting down or short of resources, or no
    pooled connection came free in time: the batch is intact and writing it again is safe.
    False for errors in the data or the schema, which another attempt would only repeat.
    """
    return isinstance(exc, (psycopg.OperationalError, PoolTimeout, *_RETRYABLE))


def default_title(type_: str, message: str) -> str:
    """``Type: first line of the message``, cut to 200 characters, as issue lists show it."""
    first_line = message.split("\n", 1)[0]
    text = f"{type_}: {first_line}" if type_ and first_line else (type_ or first_line or "<unknown>")
    return text if len(text) <= _TITLE_MAX else text[: _TITLE_MAX - 1] + "…"


class ErrorStore:
    """Writes and reads error events and issues in the ``appguard`` schema.

    Build it with :meth:`open` (which migrates the schema) or around a pool you own. The pool's
    connections must run :func:`configure_connection` when they are created, as :meth:`open`
    arranges; a transaction-pooling proxy (PgBouncer in transaction mode) cannot be used because
    the staging tables are per session.

    Day partitions are created on demand for timestamps from ``partition_days_back`` days ago
    to ``partition_days_ahead`` days ahead; events outside that window go to the default
    partition. :meth:`maintain_partitions` creates the next ``precreate_days`` days in advance
    so that writes around midnight find their partition ready. A batch that meets a deadlock or
    serialization failure is tried up to ``max_attempts`` times.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        partition_days_back: int = 90,
        partition_days_ahead: int = 7,
        precreate_days: int = 2,
        max_attempts: int = 5,
    ) -> None:
        self._pool = pool
        self._days_back = partition_days_back
        self._days_ahead = partition_days_ahead
        self._precreate = precreate_days
        self._max_attempts = max_attempts
        self._partitions: set[date] | None = None
        self._partition_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        run_migrations: bool = True,
        timeout: float = 30.0,
        partition_days_back: int = 90,
        partition_days_ahead: int = 7,
        precreate_days: int = 2,
        max_attempts: int = 5,
    ) -> ErrorStore:
        """Migrate the schema (unless told not to), open a pool on ``dsn`` and prepare partitions.

        ``min_size``/``max_size`` bound the pool; ``timeout`` bounds connecting and opening it.
        The other keywords are the constructor's.
        """
        if run_migrations:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=int(timeout)
            ) as conn:
                await migrate(conn)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=configure_connection,
            open=False,
            name="appguard-errors",
        )
        await pool.open(wait=True, timeout=timeout)
        store = cls(
            pool,
            partition_days_back=partition_days_back,
            partition_days_ahead=partition_days_ahead,
            precreate_days=precreate_days,
            max_attempts=max_attempts,
        )
        try:
            await store.maintain_partitions()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def __aenter__(self) -> ErrorStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write_events(self, events: Sequence[ErrorEvent]) -> WriteReport:
        """Store a batch of events in one transaction; see the module docstring.

        Returns the outcome of every event in the batch's order. An event id repeated within
        the batch is stored once; its later copies are reported as duplicates.
        """
        if not events:
            return WriteReport([])
        rows, days = _copy_rows(events)
        await self._ensure_days(days)
        results: dict[uuid.UUID, tuple[int, str]] = {}
        for attempt in range(1, self._max_attempts + 1):
            try:
                results = await self._write_rows(rows)
                break
            except _RETRYABLE as exc:
                if attempt == self._max_attempts:
                    raise
                logger.info("retrying a batch of %d events after %s", len(rows), type(exc).__name__)
                await asyncio.sleep(0.01 * 2**attempt)
        outcomes: list[EventOutcome] = []
        for event in events:
            found = results.pop(event.event_id, None)
            if found is None:
                outcomes.append(EventOutcome(event.event_id, None, Outcome.DUPLICATE))
            else:
                outcomes.append(EventOutcome(event.event_id, found[0], Outcome(found[1])))
        return WriteReport(outcomes)

    async def _write_rows(self, rows: list[tuple[Any, ...]]) -> dict[uuid.UUID, tuple[int, str]]:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            async with cur.copy(_COPY_SQL) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    await copy.write_row(row)
            await cur.execute("SELECT event_id, issue_id, outcome FROM appguard.ingest_staged()")
            return {event_id: (issue_id, outcome) for event_id, issue_id, outcome in await cur.fetchall()}

    async def maintain_partitions(self) -> None:
        """Create the partitions of today and the next ``precreate_days`` days if missing.

        Call it now and then (daily is enough); writes create missing partitions anyway, this
        only keeps the DDL off the write path.
        """
        today = datetime.now(UTC).date()
        await self._ensure_days({today + timedelta(days=n) for n in range(self._precreate + 1)}, refresh=True)

    async def _ensure_days(self, days: Iterable[date], *, refresh: bool = False) -> None:
        known = self._partitions
        if known is not None and not refresh:
            missing = [d for d in days if d not in known]
            if not missing:
                return
        today = datetime.now(UTC).date()
        lowest, highest = today - timedelta(days=self._days_back), today + timedelta(days=self._days_ahead)
        async with self._partition_lock, self._pool.connection() as conn:
            if self._partitions is None or refresh:
                self._partitions = set(await partitions.list_partitions(conn))
            for day in sorted(days):
                if day in self._partitions or not lowest <= day <= highest:
                    continue
                await partitions.create_partition(conn, day)
                self._partitions.add(day)

    async def ensure_partitions(self, days: Iterable[date]) -> None:
        """Create the partitions of ``days`` that are missing, whatever the on-demand window."""
        async with self._partition_lock, self._pool.connection() as conn:
            if self._partitions is None:
                self._partitions = set(await partitions.list_partitions(conn))
            for day in sorted(set(days)):
                if day not in self._partitions:
                    await partitions.create_partition(conn, day)
                    self._partitions.add(day)

    async def delete_events_older_than(self, age: timedelta, *, lock_timeout: float = 10.0) -> RetentionReport:
        """Delete the events older than ``age``; issues keep their counts.

        Whole day partitions before the cutoff are dropped; the rows before the cutoff in the
        partition it falls in, and in the default partition, are deleted.
        """
        if age <= timedelta(0):
            raise ValueError(f"the retention age must be positive, not {age}")
        cutoff = datetime.now(UTC) - age
        dropped: list[str] = []
        async with self._partition_lock, self._pool.connection() as conn:
            existing = await partitions.list_partitions(conn)
            for day, name in sorted(existing.items()):
                if partitions.day_start(day + timedelta(days=1)) <= cutoff:
                    await partitions.drop_partition(conn, name, lock_timeout=lock_timeout)
                    dropped.append(name)
                    if self._partitions is not None:
                        self._partitions.discard(day)
            cur = await conn.execute('DELETE FROM appguard.error_events WHERE "timestamp" < %s', (cutoff,))
            deleted = cur.rowcount
        return RetentionReport(cutoff=cutoff, dropped_partitions=dropped, deleted_events=deleted)

    async def set_issue_status(self, issue_id: int, status: str, *, resolved_in_release: str | None = None) -> bool:
        """Set an issue's status; False if there is no such issue.

        ``resolved_in_release`` only applies to ``resolved``: events of older versions will not
        reopen the issue. Unresolving makes the issue ``ongoing``.
        """
        if status not in ISSUE_STATUSES:
            raise ValueError(f"status must be one of {ISSUE_STATUSES}, not {status!r}")
        if resolved_in_release is not None and status != "resolved":
            raise ValueError("resolved_in_release only applies to status 'resolved'")
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                UPDATE appguard.issues
                SET status = %(status)s,
                    substatus = CASE WHEN %(status)s = 'unresolved' THEN 'ongoing' END,
                    status_changed_at = now(),
                    resolved_at = CASE WHEN %(status)s = 'resolved' THEN now() END,
                    resolved_in_release = %(release)s
                WHERE id = %(id)s
                """,
                {"status": status, "release": resolved_in_release, "id": issue_id},
            )
            return cur.rowcount == 1

    async def get_issue(self, issue_id: int) -> Issue | None:
        """The issue with this id, or None."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(Issue)) as cur:
            await cur.execute(f"SELECT {_ISSUE_COLUMNS} FROM appguard.issues WHERE id = %s".encode(), (issue_id,))
            return await cur.fetchone()

    async def find_issue(self, fingerprint: str, *, project_id: int = 1) -> Issue | None:
        """The issue that a primary or secondary hash maps to, or None."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(Issue)) as cur:
            await cur.execute(
                f"""
                SELECT {_ISSUE_COLUMNS} FROM appguard.issues
                WHERE id = (SELECT issue_id FROM appguard.issue_fingerprints WHERE project_id = %s AND hash = %s)
                """.encode(),
                (project_id, fingerprint),
            )
            return await cur.fetchone()

    async def list_issue_events(
        self, issue_id: int, *, limit: int = 50, after: StoredEvent | None = None
    ) -> list[StoredEvent]:
        """An issue's events, newest first; pass the last event of a page as ``after`` for the next."""
        position = (datetime.max.replace(tzinfo=UTC), 0) if after is None else (after.timestamp, after.id)
        async with self._pool.connection() as conn, conn.cursor(row_factory=class_row(StoredEvent)) as cur:
            await cur.execute(
                f"""
                SELECT {_EVENT_COLUMNS} FROM appguard.error_events
                WHERE issue_id = %s AND ("timestamp", id) < (%s, %s)
                ORDER BY "timestamp" DESC, id DESC
                LIMIT %s
                """.encode(),
                (issue_id, *position, limit),
            )
            return await cur.fetchall()


_ISSUE_COLUMNS = ", ".join(Issue.__dataclass_fields__)
_EVENT_COLUMNS = ", ".join(f'"{name}"' for name in StoredEvent.__dataclass_fields__)


async def configure_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create the session's staging tables; run once per new pooled connection."""
    await conn.execute("SELECT appguard.ingest_prepare()")
    if not conn.autocommit:
        await conn.commit()


def _copy_rows(events: Sequence[ErrorEvent]) -> tuple[list[tuple[Any, ...]], set[date]]:
    """The staging rows of a batch and the UTC days its timestamps fall on."""
    rows: list[tuple[Any, ...]] = []
    days: set[date] = set()
    for e in events:
        ts = e.timestamp
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        elif ts.tzinfo is not UTC:
            ts = ts.astimezone(UTC)
        days.add(ts.date())
        rows.append(
            (
                e.event_id,
                ts,
                e.project_id,
                e.fingerprint,
                e.secondary_fingerprint,
                _text(e.title or default_title(e.type, e.message)),
                _text(e.culprit),
                e.level,
                _text(e.type),
                _text(e.message),
                e.trace_id,
                e.span_id,
                e.session_id,
                e.service_name,
                e.service_version,
                e.environment,
                e.user_id,
                e.user_email,
                e.user_agent,
                None if e.stacktrace is None else _text(e.stacktrace),
                None if e.frames is None else _json(e.frames),
                None if e.attributes is None else _json(e.attributes),
            )
        )
    return rows, days


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and one NUL in a message would fail the whole batch.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _json(value: Any) -> str:
    # orjson is several times faster than json, and frames are most of the encoding work.
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        text = json.dumps(value, default=str)  # e.g. integers beyond 64 bits
    # jsonb refuses the escaped NUL as well.
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text
