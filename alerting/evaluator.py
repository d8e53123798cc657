"""Alert evaluation: turns the rules into firing and resolved :class:`~alerting.model.Alert`.

The :class:`Evaluator` hands every alert to an ``emit`` callback (the notification queue, in
the product); it knows nothing of channels or queues. It has two ways in:

- **Issue rules** react to writes: the evaluator is an errors observer
  (:meth:`Evaluator.errors_written`, see :mod:`exporters.errors.exporter`). ``new_issue`` and
  ``regression`` rules look at the issues a write created or reopened, ``frequency`` rules at
  the issues it added events to; an issue counts when one of the write's events of it matches
  the rule's filters. A frequency rule then counts the issue's events matching the filters in
  the last ``window`` (and their distinct users) with the ``(issue_id, timestamp)`` index, only
  for issues whose total counts could exceed the rule and that are not in their action
  interval. Who notifies is decided by :meth:`AlertStateStore.notify_once
  <alerting.state.AlertStateStore.notify_once>`: one caller per (rule, issue) per
  ``action_interval``, in every replica that observes writes and across restarts. An issue
  alert stays ``firing`` in ``alert_states`` until its action interval is over, then is
  marked ``resolved`` without a notification (issue alerts do not resolve by themselves).
- **Threshold and metric rules** are evaluated every ``interval`` by the replica holding the
  :class:`Lease` (:meth:`Evaluator.run`, or :meth:`Evaluator.evaluate_once` for one pass).
  Each instance (a ``per`` group of a threshold rule, a series a PromQL expression returned)
  moves ``inactive -> pending`` when its condition holds, ``pending -> firing`` once it has
  held for the rule's ``for`` (at once when ``for`` is 0), ``firing -> resolved`` when it no
  longer holds, and ``pending -> inactive`` when it stops holding before firing. Firing and
  resolving emit an alert, and so does a firing instance whose severity changes; nothing
  else does (re-sending firing alerts is the queue's ``repeat_interval``). States live in
  PostgreSQL, so a restarted evaluator keeps a pending instance's start and does not notify a
  firing one again.

Threshold values: ``count`` is the number of matching events in ``[now - window, now)``,
``rate`` that number per second of the window. ``percent_change`` compares the same measure
with the window before, ``(current - previous) / previous * 100``, with ``previous`` taken as
at least one event: a group that had no errors and now has some changes by ``current *
100`` percent (0 to 1 event is +100 %, 0 to 10 is +1000 %), so a burst from nothing still
alerts while one stray error against a zero baseline does not cross a large threshold. The
severity is ``critical`` when the value reaches ``critical``, else ``warning`` when it reaches
``warning``; below both the condition does not hold.

Metric rules query ``<prometheus_url>/api/v1/query`` at the evaluation time. A query that fails
(unreachable, refused expression, not an instant vector) is logged and recorded in
``appguard.alert_rule_health`` and changes no state: a Prometheus outage does not resolve
every alert and fire them all again afterwards.

**The lease** is a PostgreSQL session-level advisory lock (``pg_try_advisory_lock``) held on a
connection of its own: PostgreSQL, which every replica already shares, releases it the moment
that session ends, so a replica that dies or loses the database hands over within one
interval without a renewal protocol, and server-side TCP keepalives end the session of a
replica cut off by the network. The state of periodic rules is written on that very
connection, in a transaction that also emits the alerts: a replica that lost the lease fails
that write and emits nothing, and a replica that emitted has its new state committed before
another can take over. An ``emit`` that raises rolls the transition back, to be tried again
at the next evaluation, so alerts are emitted at least once; the only duplicate left is an
emit whose commit failed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

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
from alerting.state import AlertInstance, AlertStateStore, Transition
from storage.errors_store import ErrorEvent, Outcome

if TYPE_CHECKING:
    from exporters.errors.exporter import WrittenErrors

logger = logging.getLogger(f"appguard.{__name__}")

#: The advisory lock key of the evaluation lease ("apgalrt" in ASCII).
LEASE_KEY = 0x61_70_67_61_6C_72_74

#: Inactive and resolved instances are deleted once not evaluated for this long.
KEEP_ENDED = timedelta(days=1)
# How often (in evaluation time) the lease holder prunes states and history.
_PRUNE_EVERY = timedelta(minutes=10)

RulesSource = Callable[[], Awaitable[list[StoredRule]]]
Emit = Callable[[Alert, StoredRule], Awaitable[None]]


class LeaseLost(RuntimeError):
    """The evaluation lease is not held (never taken, or its connection was lost)."""


class EvaluationError(RuntimeError):
    """A rule could not be evaluated (the message says why); no state was changed."""


# --------------------------------------------------------------------------- lease


class Lease:
    """The right to evaluate the periodic rules: a PostgreSQL advisory lock on ``key``.

    :meth:`acquire` connects (a connection of the lease's own, not a pooled one), tries the
    lock and reports whether this replica holds it; called again while held it checks that the
    connection is still alive. :meth:`fenced` lends that connection to writes that must only
    happen while the lease is held. :meth:`release` closes the connection, which releases the
    lock. The server ends the session of a peer that stopped answering after about
    ``keepalive`` plus 30 seconds, freeing the lock for the others.
    """

    def __init__(self, dsn: str, *, key: int = LEASE_KEY, connect_timeout: float = 10.0, keepalive: float = 30.0) -> None:
        self._dsn = dsn
        self._key = key
        self._connect_timeout = connect_timeout
        self._keepalive = max(1, int(keepalive))
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._held = False
        self._lock = asyncio.Lock()

    @property
    def held(self) -> bool:
        """Whether the lease was held at the last check."""
        return self._held

    async def acquire(self) -> bool:
        """Hold the lease if nobody else does; True while this replica holds it."""
        async with self._lock:
            if self._conn is not None and self._held:
                try:
                    await self._conn.execute("SELECT 1")
                    return True
                except psycopg.Error as exc:
                    logger.warning("lost the alert evaluation lease: %s", exc)
                    await self._drop()
            try:
                if self._conn is None:
                    self._conn = await self._connect()
                cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                row = await cur.fetchone()
            except psycopg.Error as exc:
                logger.warning("cannot take the alert evaluation lease: %s", exc)
                await self._drop()
                return False
            self._held = bool(row and row[0])
            if self._held:
                logger.info("holding the alert evaluation lease: this replica evaluates the periodic alert rules")
            return self._held

    @contextlib.asynccontextmanager
    async def fenced(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The lease's connection, for work that must not happen without the lease.

        Raises :class:`LeaseLost` when the lease is not held. If the connection fails inside
        the block, the lease is marked lost (the server released the lock with the session).
        """
        async with self._lock:
            conn = self._conn
            if conn is None or not self._held:
                raise LeaseLost("the alert evaluation lease is not held")
            try:
                yield conn
            except psycopg.Error:
                if conn.broken or conn.closed:
                    logger.warning("lost the alert evaluation lease: its connection failed")
                    await self._drop()
                raise

    async def release(self) -> None:
        """Give the lease up (if held) and close its connection."""
        async with self._lock:
            if self._held and self._conn is not None:
                # Unlocked explicitly: closing alone frees the lock only once the server has
                # noticed, and a peer asking meanwhile would be refused.
                with contextlib.suppress(psycopg.Error):
                    await self._conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
                logger.info("released the alert evaluation lease")
            await self._drop()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # The server's keepalives end the session of a replica the network cut off, releasing
        # the lock for another; the client's notice a dead server the same way.
        options = conninfo_to_dict(self._dsn).get("options") or ""
        keepalive = (
            f"-c tcp_keepalives_idle={self._keepalive} -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
        )
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            keepalives=1,
            keepalives_idle=self._keepalive,
            keepalives_interval=10,
            keepalives_count=3,
            options=f"{options} {keepalive}".strip(),
            application_name="appguard-alert-lease",
        )

    async def _drop(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


# --------------------------------------------------------------------------- matching


def alert_fingerprint(rule_id: int, labels: Mapping[str, str]) -> str:
    """The fingerprint of a rule's instance: a hash of the rule id and the labels that
    identify the instance (``issue_id``; the ``per`` labels; a series' labels)."""
    digest = hashlib.sha256(str(rule_id).encode())
    for name in sorted(labels):
        # 0xff never occurs in UTF-8, so it separates names and values unambiguously.
        digest.update(b"\xff" + name.encode() + b"\xff" + labels[name].encode())
    return digest.hexdigest()[:32]


def tag_text(value: Any) -> str:
    """An attribute value as a tag filter compares it: strings as they are, other values as
    JSON (``true``, ``42``, ``1.5``), which is also what ``attributes ->> name`` gives."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def event_matches(filters: RuleFilters, event: ErrorEvent) -> bool:
    """Whether an event passes a rule's filters (see :class:`~alerting.model.RuleFilters`)."""
    if filters.service and event.service_name not in filters.service:
        return False
    if filters.environment and event.environment not in filters.environment:
        return False
    if filters.level and event.level not in filters.level:
        return False
    if filters.exception_type and event.type not in filters.exception_type:
        return False
    if filters.tags:
        attributes = event.attributes or {}
        for name, expected in filters.tags.items():
            if name not in attributes or tag_text(attributes[name]) != expected:
                return False
    return True


def filters_sql(filters: RuleFilters, alias: str = "e") -> tuple[sql.Composable, dict[str, Any]]:
    """The filters as a condition on ``appguard.error_events`` rows named ``alias``, with its
    named parameters (all prefixed ``f_``)."""
    table = sql.Identifier(alias)
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for name, column, values in (
        ("service", "service_name", filters.service),
        ("environment", "environment", filters.environment),
        ("level", "level", filters.level),
        ("type", "type", filters.exception_type),
    ):
        if values:
            parts.append(
                sql.SQL("{}.{} = ANY({})").format(table, sql.Identifier(column), sql.Placeholder(f"f_{name}"))
            )
            params[f"f_{name}"] = list(values)
    for index, (name, value) in enumerate(sorted(filters.tags.items())):
        parts.append(
            sql.SQL("{}.attributes ->> {} = {}").format(
                table, sql.Placeholder(f"f_tag{index}"), sql.Placeholder(f"f_tag{index}_value")
            )
        )
        params[f"f_tag{index}"] = name
        params[f"f_tag{index}_value"] = value
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


def threshold_severity(rule: ThresholdRule, value: float) -> Severity | None:
    """``critical`` if ``value`` reaches the critical level, else ``warning`` if it reaches the
    warning level, else None (the condition does not hold)."""
    if rule.critical is not None and value >= rule.critical:
        return Severity.CRITICAL
    if rule.warning is not None and value >= rule.warning:
        return Severity.WARNING
    return None


def threshold_value(rule: ThresholdRule, current: int, previous: int) -> float:
    """The value a threshold rule compares, from the counts of the current and previous
    windows (see the module docstring for ``percent_change`` against an empty window)."""
    if rule.compare == "percent_change":
        return (current - previous) / max(previous, 1) * 100.0
    return current / rule.window if rule.measure == "rate" else float(current)


# --------------------------------------------------------------------------- state machine


@dataclass(frozen=True)
class _Observation:
    """What one evaluation saw of an instance; ``severity`` None: the condition does not hold."""

    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    severity: Severity | None


@dataclass
class _Changes:
    states: list[AlertInstance] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    notify: list[AlertInstance] = field(default_factory=list)
    #: Notified versions whose severity changed: their labels (``severity``) no longer name
    #: the alert, so a receiver keyed by labels (Alertmanager) is told they ended.
    superseded: list[AlertInstance] = field(default_factory=list)

    def move(self, before: AlertState, after: AlertInstance, at: datetime, *, notify: bool = False) -> None:
        self.states.append(after)
        self.transitions.append(
            Transition(after.rule_id, after.fingerprint, at, before, after.state, after.severity, after.value, after.labels)
        )
        if notify:
            self.notify.append(after)


def _advance(
    rule_id: int,
    hold_for: float,
    states: Mapping[str, AlertInstance],
    observed: Mapping[str, _Observation],
    now: datetime,
    absent_value: float | None,
) -> _Changes:
    """One step of every instance's state machine (see the module docstring)."""
    changes = _Changes()
    for fp in sorted(observed.keys() | states.keys()):
        prev = states.get(fp)
        seen = observed.get(fp)
        before = prev.state if prev is not None else AlertState.INACTIVE
        if seen is None or seen.severity is None:
            if prev is None or before not in (AlertState.PENDING, AlertState.FIRING):
                continue
            value = seen.value if seen is not None else absent_value
            if before is AlertState.PENDING:
                ended = replace(prev, state=AlertState.INACTIVE, value=value, active_since=None, last_evaluated_at=now)
                changes.move(before, ended, now)
            else:
                ended = replace(
                    prev, state=AlertState.RESOLVED, value=value, resolved_at=now, last_evaluated_at=now, last_notified_at=now
                )
                changes.move(before, ended, now, notify=True)
            continue
        if prev is None or before not in (AlertState.PENDING, AlertState.FIRING):
            fresh = AlertInstance(
                rule_id=rule_id,
                fingerprint=fp,
                state=AlertState.PENDING,
                severity=seen.severity,
                labels=seen.labels,
                annotations=seen.annotations,
                value=seen.value,
                active_since=now,
                last_evaluated_at=now,
                last_notified_at=prev.last_notified_at if prev is not None else None,
            )
            if hold_for <= 0:
                fresh = replace(fresh, state=AlertState.FIRING, fired_at=now, last_notified_at=now)
            changes.move(before, fresh, now, notify=fresh.state is AlertState.FIRING)
            continue
        updated = replace(
            prev, severity=seen.severity, labels=seen.labels, annotations=seen.annotations, value=seen.value, last_evaluated_at=now
        )
        if before is AlertState.FIRING:
            if seen.severity != prev.severity:
                changes.move(before, replace(updated, last_notified_at=now), now, notify=True)
                changes.superseded.append(replace(prev, state=AlertState.RESOLVED, resolved_at=now))
            else:
                changes.states.append(updated)
            continue
        since = prev.active_since or now
        if now - since >= timedelta(seconds=hold_for):
            fired = replace(updated, state=AlertState.FIRING, active_since=since, fired_at=now, last_notified_at=now)
            changes.move(before, fired, now, notify=True)
        else:
            changes.states.append(replace(updated, active_since=since))
    return changes


# --------------------------------------------------------------------------- evaluator


class Evaluator:
    """Evaluates the alert rules and emits their alerts (see the module docstring).

    ``rules`` returns every rule (all kinds, enabled or not); it is called on every write
    observed and every evaluation, so it should be cheap (cached). ``emit`` receives each
    alert with its rule. ``prometheus_url`` is the Prometheus HTTP API metric rules query;
    ``dashboard_url`` prefixes the links in alerts. ``interval`` is the period of
    :meth:`run`; ``query_timeout`` bounds a Prometheus query; ``concurrency`` is how many rules
    are evaluated at once; history older than ``history_retention`` seconds is deleted.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        state: AlertStateStore,
        rules: RulesSource,
        emit: Emit,
        *,
        prometheus_url: str | None,
        dashboard_url: str | None,
        lease: Lease,
        interval: float,
        query_timeout: float = 10.0,
        concurrency: int = 4,
        history_retention: float = 90 * 86400.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._pool = pool
        self._state = state
        self._rules = rules
        self._emit = emit
        self._prometheus_url = prometheus_url.rstrip("/") if prometheus_url else None
        self._dashboard_url = dashboard_url.rstrip("/") if dashboard_url else None
        self._lease = lease
        self._interval = interval
        self._query_timeout = query_timeout
        self._concurrency = max(1, concurrency)
        self._history_retention = timedelta(seconds=history_retention)
        self._http: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._last_prune: datetime | None = None

    # ---- lifecycle

    async def run(self) -> None:
        """Evaluate every ``interval`` seconds (while holding the lease) until :meth:`stop`."""
        self._stopped.clear()
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping.is_set():
                started = loop.time()
                try:
                    await self.evaluate_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("alert evaluation failed")
                remaining = self._interval - (loop.time() - started)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), max(0.0, remaining))
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """End :meth:`run` after the evaluation in progress, give up the lease, close the
        HTTP client. Safe to call without :meth:`run`."""
        self._stopping.set()
        await self._stopped.wait()
        await self._lease.release()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ---- issue rules

    async def errors_written(self, written: WrittenErrors, now: datetime | None = None) -> None:
        """Evaluate the issue rules against one write of the errors exporter.

        ``now`` (default: the current time) is the notification time, the end of frequency
        windows and what action intervals are measured against. Errors are logged per rule.
        """
        at = _utc(now)
        try:
            rules = [r for r in await self._rules() if isinstance(r.spec, IssueRule) and r.spec.enabled]
        except Exception:
            logger.exception("loading the alert rules failed")
            return
        if not rules:
            return
        touched: dict[int, list[ErrorEvent]] = {}
        for event, outcome in zip(written.events, written.report.outcomes, strict=False):
            if outcome.issue_id is not None and outcome.outcome is not Outcome.DUPLICATE:
                touched.setdefault(outcome.issue_id, []).append(event)
        if not touched:
            return
        selected: list[tuple[StoredRule, IssueRule, list[int]]] = []
        for rule in rules:
            spec = rule.spec
            assert isinstance(spec, IssueRule)
            if spec.when == "new_issue":
                candidates: Iterable[int] = written.report.new_issues
            elif spec.when == "regression":
                candidates = written.report.regressed_issues
            else:
                candidates = touched.keys()
            ids = [
                issue_id
                for issue_id in sorted(candidates)
                if any(e.project_id == rule.project_id and event_matches(spec.filters, e) for e in touched.get(issue_id, ()))
            ]
            if ids:
                selected.append((rule, spec, ids))
        if not selected:
            return
        try:
            issues = await self._load_issues({i for _, _, ids in selected for i in ids})
        except Exception:
            logger.exception("loading issues for the alert rules failed")
            return
        for rule, spec, ids in selected:
            try:
                await self._issue_rule(rule, spec, [issues[i] for i in ids if i in issues], at)
            except Exception:
                logger.exception("alert rule %s (%s) failed on a write", rule.id, spec.name)

    async def _issue_rule(self, rule: StoredRule, spec: IssueRule, issues: list[dict[str, Any]], now: datetime) -> None:
        counted: dict[int, tuple[int | None, int | None]] = {}
        if spec.when == "frequency":
            # The totals bound what a window can hold: an issue with no more than N events in
            # all cannot have more than N in the last hour.
            issues = [
                i
                for i in issues
                if (spec.events is not None and i["count"] > spec.events)
                or (spec.users is not None and i["users"] > spec.users)
            ]
            quiet = await self._state.recently_notified(
                rule.id,
                [_issue_fingerprint(rule, i) for i in issues],
                since=now - timedelta(seconds=spec.action_interval),
            )
            issues = [i for i in issues if _issue_fingerprint(rule, i) not in quiet]
            counted = await self._window_counts(spec, [i["id"] for i in issues], now)
            issues = [i for i in issues if _exceeds(spec, *counted.get(i["id"], (None, None)))]
        for issue in issues:
            events, users = counted.get(issue["id"], (None, None))
            instance = self._issue_instance(rule, spec, issue, now, events, users)
            try:
                async with self._state.notify_once(instance, interval=spec.action_interval) as ours:
                    if ours:
                        await self._emit(self._alert(rule, instance, issue=issue), rule)
            except Exception:
                # The claim was rolled back: a later write about the issue tries again.
                logger.exception("alert rule %s (%s): notifying about issue %s failed", rule.id, spec.name, issue["id"])

    async def _load_issues(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT id, title, culprit, level, event_count, user_count, service_name, environment,
                       first_seen, last_seen
                FROM appguard.issues WHERE id = ANY(%s)
                """,
                (sorted(ids),),
            )
            rows = await cur.fetchall()
        return {
            row[0]: {
                "id": row[0],
                "title": row[1],
                "culprit": row[2],
                "level": row[3],
                "count": row[4],
                "users": row[5],
                "service": row[6],
                "environment": row[7],
                "first_seen": row[8].isoformat(),
                "last_seen": row[9].isoformat(),
            }
            for row in rows
        }

    async def _window_counts(
        self, spec: IssueRule, ids: list[int], now: datetime
    ) -> dict[int, tuple[int | None, int | None]]:
        """Events and distinct users of each issue in the rule's window (each only if the rule
        counts it), counting the events that pass the filters."""
        if not ids:
            return {}
        condition, params = filters_sql(spec.filters)
        events_expr: sql.Composable = sql.SQL("NULL::bigint")
        if spec.events is not None:
            events_expr = sql.SQL(
                """(SELECT count(*) FROM appguard.error_events e
                    WHERE e.issue_id = i.id AND e."timestamp" >= %(since)s AND {cond})"""
            ).format(cond=condition)
        users_expr: sql.Composable = sql.SQL("NULL::bigint")
        if spec.users is not None:
            users_expr = sql.SQL(
                """(SELECT count(DISTINCT CASE WHEN e.user_id IS NOT NULL THEN 'id:' || e.user_id
                                               WHEN e.user_email IS NOT NULL THEN 'email:' || e.user_email END)
                    FROM appguard.error_events e
                    WHERE e.issue_id = i.id AND e."timestamp" >= %(since)s AND {cond})"""
            ).format(cond=condition)
        query = sql.SQL("SELECT i.id, {events}, {users} FROM unnest(%(ids)s::bigint[]) AS i(id)").format(
            events=events_expr, users=users_expr
        )
        params.update(ids=ids, since=now - timedelta(seconds=spec.window))
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            return {
                row[0]: (None if row[1] is None else int(row[1]), None if row[2] is None else int(row[2]))
                for row in await cur.fetchall()
            }

    def _issue_instance(
        self, rule: StoredRule, spec: IssueRule, issue: dict[str, Any], now: datetime, events: int | None, users: int | None
    ) -> AlertInstance:
        labels = {
            **spec.labels,
            "alertname": spec.name,
            "rule": str(rule.id),
            "severity": spec.severity.value,
            "issue_id": str(issue["id"]),
            "service": issue["service"],
            "environment": issue["environment"],
        }
        title = issue["title"]
        if spec.when == "new_issue":
            summary = f"New issue: {title}"
        elif spec.when == "regression":
            summary = f"Regression: {title}"
        else:
            seen = [f"{events} events" if events is not None else "", f"{users} users" if users is not None else ""]
            summary = f"{title}: {' and '.join(s for s in seen if s)} in the last {duration_text(spec.window)}"
        scope = "/".join(s for s in (issue["service"], issue["environment"]) if s)
        description = spec.description or " ".join(
            s for s in (issue["culprit"] and f"in {issue['culprit']}", scope and f"({scope})") if s
        )
        value = events if events is not None else users
        return AlertInstance(
            rule_id=rule.id,
            fingerprint=_issue_fingerprint(rule, issue),
            state=AlertState.FIRING,
            severity=spec.severity,
            labels=labels,
            annotations={"summary": summary, "description": description},
            value=None if value is None else float(value),
            active_since=now,
            fired_at=now,
            last_evaluated_at=now,
            last_notified_at=now,
        )

    # ---- periodic rules

    async def evaluate_once(self, now: datetime | None = None) -> bool:
        """Evaluate the threshold and metric rules once at ``now`` (default: the current
        time), if this replica holds the lease; returns whether it did.

        Also ends issue alerts whose action interval is over and, every ten minutes, prunes
        ended instances and old history.
        """
        at = _utc(now)
        if not await self._lease.acquire():
            return False
        rules = await self._rules()
        active = await self._state.active_rule_ids()
        periodic = [
            r for r in rules if isinstance(r.spec, (ThresholdRule, MetricRule)) and (r.spec.enabled or r.id in active)
        ]
        semaphore = asyncio.Semaphore(self._concurrency)

        async def one(rule: StoredRule) -> None:
            async with semaphore:
                await self._evaluate_rule(rule, at)

        await asyncio.gather(*(one(r) for r in periodic))
        for rule in rules:
            if isinstance(rule.spec, IssueRule) and rule.id in active:
                before = at - timedelta(seconds=rule.spec.action_interval)
                await self._state.expire_notified(rule.id, before=before, at=at)
        if self._last_prune is None or at - self._last_prune >= _PRUNE_EVERY or at < self._last_prune:
            self._last_prune = at
            await self._state.prune(ended_before=at - KEEP_ENDED, history_before=at - self._history_retention)
        return True

    async def _evaluate_rule(self, rule: StoredRule, now: datetime) -> None:
        spec = rule.spec
        assert isinstance(spec, (ThresholdRule, MetricRule))
        try:
            if not spec.enabled:
                # A disabled rule holds for nothing: what fires resolves, what is pending ends.
                observed: dict[str, _Observation] = {}
            elif isinstance(spec, ThresholdRule):
                observed = await self._observe_threshold(rule, spec, now)
            else:
                observed = await self._observe_metric(rule, spec, now)
            states = await self._state.load(rule.id)
            changes = _advance(
                rule.id, spec.for_, states, observed, now, 0.0 if isinstance(spec, ThresholdRule) else None
            )
            if changes.states:
                async with self._lease.fenced() as conn, conn.transaction():
                    await self._state.save(changes.states, changes.transitions, conn=conn)
                    for instance in [*changes.superseded, *changes.notify]:
                        await self._emit(self._alert(rule, instance), rule)
        except asyncio.CancelledError:
            raise
        except LeaseLost as exc:
            logger.warning("alert rule %s (%s) not evaluated: %s", rule.id, spec.name, exc)
            return
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, EvaluationError) else str(exc)
            logger.warning("alert rule %s (%s) could not be evaluated: %s", rule.id, spec.name, message)
            await self._record(rule.id, now, message)
            return
        await self._record(rule.id, now, None)

    async def _record(self, rule_id: int, now: datetime, error: str | None) -> None:
        try:
            await self._state.record_evaluation(rule_id, now, error)
        except Exception as exc:
            logger.warning("recording the evaluation of alert rule %s failed: %s", rule_id, exc)

    async def _observe_threshold(self, rule: StoredRule, spec: ThresholdRule, now: datetime) -> dict[str, _Observation]:
        window = timedelta(seconds=spec.window)
        current_start = now - window
        since = current_start - window if spec.compare == "percent_change" else current_start
        per: list[str] = [p for p in ("service", "environment") if p in spec.per]
        columns = [sql.SQL({"service": "e.service_name", "environment": "e.environment"}[p]) for p in per]
        condition, params = filters_sql(spec.filters)
        query = sql.SQL(
            """
            SELECT {columns}
                   count(*) FILTER (WHERE e."timestamp" >= %(current)s),
                   count(*) FILTER (WHERE e."timestamp" < %(current)s)
            FROM appguard.error_events e
            WHERE e.project_id = %(project)s AND e."timestamp" >= %(since)s AND e."timestamp" < %(until)s
              AND {condition}
            {group_by}
            """
        ).format(
            columns=sql.SQL("").join(c + sql.SQL(", ") for c in columns),
            condition=condition,
            group_by=sql.SQL("GROUP BY ") + sql.SQL(", ").join(columns) if columns else sql.SQL(""),
        )
        params.update(current=current_start, project=rule.project_id, since=since, until=now)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        observed: dict[str, _Observation] = {}
        for row in rows:
            group = {name: str(row[index]) for index, name in enumerate(per)}
            current, previous = int(row[len(per)]), int(row[len(per) + 1])
            value = threshold_value(spec, current, previous)
            severity = threshold_severity(spec, value)
            labels = {
                **spec.labels,
                **group,
                "alertname": spec.name,
                "rule": str(rule.id),
                "severity": (severity or Severity.WARNING).value,
            }
            annotations = {
                "summary": _threshold_summary(spec, group, value, current, previous),
                "description": spec.description or _threshold_levels(spec),
            }
            observed[alert_fingerprint(rule.id, group)] = _Observation(labels, annotations, value, severity)
        return observed

    async def _observe_metric(self, rule: StoredRule, spec: MetricRule, now: datetime) -> dict[str, _Observation]:
        if self._prometheus_url is None:
            raise EvaluationError("no Prometheus URL is configured for metric rules")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._query_timeout))
        params = {"query": spec.expr, "time": f"{now.timestamp():.3f}"}
        try:
            async with self._http.get(f"{self._prometheus_url}/api/v1/query", params=params) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EvaluationError(f"querying Prometheus failed: {type(exc).__name__}: {exc}") from exc
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EvaluationError(f"Prometheus answered HTTP {status}: {body[:200]!r}") from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            kind = answer.get("errorType") if isinstance(answer, dict) else None
            raise EvaluationError(f"Prometheus refused the query (HTTP {status}, {kind}): {error}")
        data = answer.get("data") or {}
        if data.get("resultType") != "vector":
            raise EvaluationError(f"the expression gives a {data.get('resultType')}, not an instant vector")
        observed: dict[str, _Observation] = {}
        for sample in data.get("result") or []:
            series = {str(k): str(v) for k, v in (sample.get("metric") or {}).items() if k != "__name__"}
            value = float(sample["value"][1])
            labels = {**series, **spec.labels, "alertname": spec.name, "rule": str(rule.id), "severity": spec.severity.value}
            described = ", ".join(f"{k}={v!r}" for k, v in sorted(series.items()))
            annotations = {
                "summary": f"{spec.name}: {number_text(value)}" + (f" ({described})" if described else ""),
                "description": spec.description or f"{spec.expr} = {number_text(value)}",
            }
            annotations.update({k: expand_template(t, labels, value) for k, t in spec.annotations.items()})
            observed[alert_fingerprint(rule.id, series)] = _Observation(labels, annotations, value, spec.severity)
        return observed

    # ---- alerts

    def _alert(self, rule: StoredRule, instance: AlertInstance, *, issue: dict[str, Any] | None = None) -> Alert:
        spec = rule.spec
        resolved = instance.state is AlertState.RESOLVED
        url: str | None = None
        if isinstance(spec, IssueRule):
            if self._dashboard_url and "issue_id" in instance.labels:
                url = f"{self._dashboard_url}/issues/{instance.labels['issue_id']}"
        elif isinstance(spec, ThresholdRule):
            if self._dashboard_url:
                scope: dict[str, str] = {
                    k: instance.labels[k] for k in ("service", "environment") if k in spec.per and k in instance.labels
                }
                url = f"{self._dashboard_url}/issues" + (f"?{urlencode(scope)}" if scope else "")
        elif self._prometheus_url:
            url = f"{self._prometheus_url}/graph?{urlencode({'g0.expr': spec.expr, 'g0.tab': '1'})}"
        return Alert(
            rule_id=rule.id,
            rule_name=spec.name,
            kind=spec.kind,
            # Threshold and metric alerts change severity while they fire; the notified alert's
            # identity includes it, as its ``severity`` label does for Alertmanager.
            fingerprint=instance.fingerprint
            if isinstance(spec, IssueRule)
            else f"{instance.fingerprint}:{instance.severity.value}",
            status="resolved" if resolved else "firing",
            severity=instance.severity,
            labels=dict(instance.labels),
            annotations=dict(instance.annotations),
            starts_at=instance.active_since or instance.fired_at or instance.last_evaluated_at or datetime.now(UTC),
            ends_at=instance.resolved_at if resolved else None,
            value=instance.value,
            url=url,
            issue=issue,
        )


# --------------------------------------------------------------------------- text


_TEMPLATE = re.compile(r"\{\{\s*\$(?:labels\.([A-Za-z_][A-Za-z0-9_]*)|(value))\s*\}\}")


def expand_template(text: str, labels: Mapping[str, str], value: float | None) -> str:
    """Fill ``{{ $labels.name }}`` and ``{{ $value }}`` in a metric rule's annotation, as
    Prometheus alerting rules write them; a missing label is empty."""

    def fill(match: re.Match[str]) -> str:
        if match.group(2):
            return number_text(value)
        return labels.get(match.group(1), "")

    return _TEMPLATE.sub(fill, text)


def number_text(value: float | None) -> str:
    """A value for people: integers without decimals, others with four significant digits."""
    if value is None:
        return ""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:.4g}"


def duration_text(seconds: float) -> str:
    """``90`` -> ``90s``, ``300`` -> ``5m``, ``7200`` -> ``2h``, ``86400`` -> ``1d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{number_text(seconds)}s"


def _threshold_summary(spec: ThresholdRule, group: Mapping[str, str], value: float, current: int, previous: int) -> str:
    scope = "/".join(v for v in group.values() if v) or "all services"
    window = duration_text(spec.window)
    if spec.compare == "percent_change":
        return f"{scope}: errors {value:+.0f}% ({current} in the last {window} against {previous} in the {window} before)"
    if spec.measure == "rate":
        return f"{scope}: {number_text(value)} errors/s over the last {window}"
    return f"{scope}: {current} errors in the last {window}"


def _threshold_levels(spec: ThresholdRule) -> str:
    unit = "%" if spec.compare == "percent_change" else (" errors/s" if spec.measure == "rate" else " errors")
    levels = [f"{name} at {number_text(level)}{unit}" for name, level in (("warning", spec.warning), ("critical", spec.critical)) if level is not None]
    return f"{spec.name}: " + ", ".join(levels)


def _issue_fingerprint(rule: StoredRule, issue: Mapping[str, Any]) -> str:
    return alert_fingerprint(rule.id, {"issue_id": str(issue["id"])})


def _exceeds(spec: IssueRule, events: int | None, users: int | None) -> bool:
    return (spec.events is not None and events is not None and events > spec.events) or (
        spec.users is not None and users is not None and users > spec.users
    )


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

