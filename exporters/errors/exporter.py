"""``errors``: finds exceptions in traces and logs, groups them into issues, stores them in PostgreSQL.

For each request the exporter takes from its sending queue it

1. finds the errors (:mod:`.extract`: ``exception`` span events, log records with
   ``exception.*`` attributes, and optionally records above a severity or spans with status
   ERROR), which costs one substring search for a request without any;
2. maps the frames of minified JavaScript back to their sources with the source maps uploaded
   for the event's release (:mod:`.symbolicate`, ``docs/sourcemaps.md``), so that grouping
   sees the original file and function names; only errors with a release and JavaScript frames
   take this step, with one lookup in PostgreSQL per batch for the maps not already cached;
3. fingerprints each one with the :class:`~exporters.errors.grouping.Grouper` (in-app rules,
   fingerprint rules, ``appguard.fingerprint``) and makes an :class:`~storage.errors_store.ErrorEvent`
   whose id is derived from the data, so that a request sent again stores nothing twice;
4. hands the events to a group-commit writer: the events of requests exported at the same
   time are written together, in transactions of up to ``write_batch_size`` events, one per
   pooled connection at most, through :meth:`~storage.errors_store.ErrorStore.write_events`.

A failed write is retryable when the database could not be reached or was busy
(:func:`~storage.errors_store.is_retryable`) and permanent otherwise; the exporter helper's
``retry_on_failure`` and ``sending_queue`` then apply as for every exporter. With no
``endpoint`` configured the exporter runs the embedded PostgreSQL under the data directory.

After every write, the exporter's observers hear what happened (new issues, regressions): see
:class:`WrittenErrors` and :meth:`ErrorsExporter.add_observer`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool
from pydantic import Field, field_validator, model_validator

from collector.component import ComponentID, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration
from collector.exporterhelper import ExporterBase, ExportError, ExporterSettings
from collector.pdata import Payload, Signal
from exporters.errors.extract import (
    ENDUSER_ID,
    ENVIRONMENT,
    ENVIRONMENT_OLD,
    SESSION_ID,
    USER_AGENT,
    USER_EMAIL,
    USER_ID,
    Extractor,
    FoundError,
    LogsOptions,
    TracesOptions,
    clip,
    clip_stacktrace,
)
from exporters.errors.grouping import Grouper, GroupingConfig, GroupingResult
from exporters.errors.stacktrace import ParsedStacktrace, normalize_language, parse_stacktrace
from exporters.errors.symbolicate import PathKey, Symbolicator, wanted_paths
from storage.embedded import EmbeddedPostgres
from storage.errors_store import ErrorEvent, ErrorStore, EventOutcome, WriteReport, is_retryable
from storage.sourcemaps import SourceMapStore

_TYPE_MAX_CHARS = 512
# Ids, e-mails and user agents are indexed (sessions, distinct users): a B-tree entry must stay
# well under PostgreSQL's limit of about 2.7 kB whatever the characters.
_ID_MAX_CHARS = 256
_TEXT_KEYS = frozenset({SESSION_ID, USER_ID, ENDUSER_ID, USER_EMAIL, USER_AGENT, ENVIRONMENT, ENVIRONMENT_OLD})
# Frames as JSON-ready dicts, kept for the parsed stack traces the grouper's cache hands out
# again (the same text arriving many times). Entries hold the parsed object, so ids stay valid.
_FRAMES_MEMO_SIZE = 4096
# Events grouped between two chances for the other tasks of the event loop to run.
_YIELD_EVERY = 64
#: The event attribute listing why frames of minified JavaScript stayed minified.
SYMBOLICATION_ERRORS = "appguard.symbolication_errors"
# Reasons kept in that attribute per event.
_MAX_SYMBOLICATION_ERRORS = 8

# --------------------------------------------------------------------------- config


class RetentionConfig(ComponentConfig):
    """``retention``: how long events are kept, and how often old ones are removed."""

    #: Events older than this are deleted (whole day partitions dropped); 0 keeps them for ever.
    max_age: Duration = 90 * 24 * 3600.0
    #: How often the retention pass (and the creation of the next days' partitions) runs.
    interval: Duration = Field(default=3600.0, gt=0)


class SourceMapsOptions(ComponentConfig):
    """``sourcemaps``: mapping minified JavaScript frames with the uploaded source maps."""

    enabled: bool = True
    #: Parsed maps kept in memory (least recently used dropped first), and their total size.
    cache_size: int = Field(default=64, ge=1)
    cache_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)
    #: How long a map found stays cached before it is looked up again (a re-upload shows then).
    ttl: Duration = Field(default=300.0, gt=0)
    #: How long "no map for this file in this release" is remembered.
    negative_ttl: Duration = Field(default=30.0, gt=0)


class ErrorsExporterConfig(ExporterSettings):
    """The ``errors`` exporter's settings (plus ``timeout``, ``retry_on_failure``, ``sending_queue``)."""

    #: PostgreSQL DSN (``postgresql://user:pass@host:5432/db`` or ``key=value`` form). ``dsn``
    #: is accepted as another name for it. Unset: the embedded server under the data directory.
    endpoint: str | None = None
    dsn: str | None = None
    pool_size: int = Field(default=4, ge=1, le=100)
    connect_timeout: Duration = Field(default=30.0, gt=0)
    timeout: Duration = 30.0
    write_batch_size: int = Field(default=2000, ge=1)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    grouping: GroupingConfig = Field(default_factory=GroupingConfig)
    traces: TracesOptions = Field(default_factory=TracesOptions)
    logs: LogsOptions = Field(default_factory=LogsOptions)
    sourcemaps: SourceMapsOptions = Field(default_factory=SourceMapsOptions)
    #: Ids of extensions told about every write (they implement ``errors_written``).
    observers: list[str] = Field(default_factory=list)

    @field_validator("retention", "grouping", "traces", "logs", "sourcemaps", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        # ``retention:`` with no value in YAML means the defaults.
        return {} if value is None else value

    @field_validator("observers")
    @classmethod
    def _observer_ids(cls, value: list[str]) -> list[str]:
        for ident in value:
            ComponentID.parse(ident)
        return value

    @model_validator(mode="after")
    def _one_dsn(self) -> ErrorsExporterConfig:
        if self.endpoint and self.dsn and self.endpoint != self.dsn:
            raise ValueError("give the PostgreSQL DSN as endpoint or as dsn, not both")
        dsn = self.postgres_dsn
        if dsn is not None:
            try:
                conninfo_to_dict(dsn)
            except psycopg.ProgrammingError as exc:
                raise ValueError(f"endpoint is not a valid PostgreSQL DSN: {exc}") from None
        return self

    @property
    def postgres_dsn(self) -> str | None:
        """The configured DSN, or None to use the embedded server."""
        return (self.endpoint or self.dsn or "").strip() or None


# --------------------------------------------------------------------------- observers


@dataclass(frozen=True)
class WrittenErrors:
    """What one write stored: the events in the order written and their outcomes.

    ``report.outcomes[i]`` is the outcome of ``events[i]``; ``report.new_issues`` and
    ``report.regressed_issues`` are the issue ids to alert on. Events already stored before
    (a retried request) are there with the outcome ``duplicate``.
    """

    exporter: str
    events: Sequence[ErrorEvent]
    report: WriteReport


ErrorsObserver = Callable[[WrittenErrors], Awaitable[None]]


@runtime_checkable
class ErrorsObserverExtension(Protocol):
    """An extension named in ``observers``: told about every write, like an observer."""

    async def errors_written(self, written: WrittenErrors) -> None:
        """Take note of a write; return quickly (hand slow work to a task or a queue)."""
        ...


# --------------------------------------------------------------------------- group commit


@dataclass(eq=False)
class _Pending:
    events: list[ErrorEvent]
    future: asyncio.Future[list[EventOutcome]]


@dataclass(eq=False)
class _GroupWriter:
    """Writes the events of concurrent callers together, ``concurrency`` transactions at a time.

    A caller's events are never split between transactions unless they alone exceed
    ``batch_size``. When a transaction of several callers' events fails for a reason another
    attempt would repeat (bad data), each caller's events are tried alone, so one bad request
    does not take the others with it.
    """

    store: Callable[[], Awaitable[ErrorStore]]
    on_written: Callable[[list[ErrorEvent], WriteReport], Awaitable[None]]
    batch_size: int
    concurrency: int
    _pending: list[_Pending] = field(default_factory=list)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"errors-writer-{i}") for i in range(self.concurrency)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(ExportError("the errors exporter stopped", retryable=True))
        self._pending.clear()

    async def write(self, events: list[ErrorEvent]) -> list[EventOutcome]:
        future: asyncio.Future[list[EventOutcome]] = asyncio.get_running_loop().create_future()
        # A caller that timed out no longer reads the result; retrieve it so asyncio does not
        # complain about an exception nobody looked at.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append(_Pending(events, future))
        self._wakeup.set()
        # Shielded: a caller's timeout must not cancel a write other callers share.
        return await asyncio.shield(future)

    def _take(self) -> list[_Pending]:
        taken: list[_Pending] = []
        size = 0
        while self._pending:
            nxt = self._pending[0]
            if taken and size + len(nxt.events) > self.batch_size:
                break
            taken.append(self._pending.pop(0))
            size += len(nxt.events)
        if not self._pending:
            self._wakeup.clear()
        return taken

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            taken = self._take()
            if taken:
                await self._write(taken)

    async def _write(self, taken: list[_Pending]) -> None:
        events = [e for p in taken for e in p.events]
        try:
            outcomes = await self._write_events(events)
        except asyncio.CancelledError:
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(ExportError("the errors exporter stopped while writing", retryable=True))
            raise
        except Exception as exc:
            if len(taken) > 1 and not is_retryable(exc):
                for pending in taken:
                    await self._write([pending])
                return
            for pending in taken:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        start = 0
        for pending in taken:
            end = start + len(pending.events)
            if not pending.future.done():
                pending.future.set_result(outcomes[start:end])
            start = end

    async def _write_events(self, events: list[ErrorEvent]) -> list[EventOutcome]:
        store = await self.store()
        outcomes: list[EventOutcome] = []
        for start in range(0, len(events), self.batch_size):
            chunk = events[start : start + self.batch_size]
            report = await store.write_events(chunk)
            outcomes.extend(report.outcomes)
            await self.on_written(chunk, report)
        return outcomes


# --------------------------------------------------------------------------- exporter


class ErrorsExporter(ExporterBase):
    """Finds errors in traces and logs and writes them, grouped into issues, to PostgreSQL."""

    config: ErrorsExporterConfig

    def __init__(self, settings: CreateSettings, config: ErrorsExporterConfig, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config, signals)
        self.grouper = Grouper(config.grouping)
        self.extractor = Extractor(config.traces, config.logs)
        self._observers: list[ErrorsObserver] = []
        self._store: ErrorStore | None = None
        self._store_lock: asyncio.Lock | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._dsn: str | None = config.postgres_dsn
        self._writer: _GroupWriter | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._frames_memo: dict[int, tuple[ParsedStacktrace, list[dict[str, Any]] | None]] = {}
        self._symbolicator: Symbolicator | None = None
        self._maps_pool: AsyncConnectionPool[Any] | None = None

    # ---- observers

    def add_observer(self, observer: ErrorsObserver) -> None:
        """Call ``await observer(written)`` after every successful write (see :class:`WrittenErrors`).

        Observers run in the write path, one after the other: they should only note or enqueue
        what they need. An observer that raises is logged and does not fail the write.
        """
        self._observers.append(observer)

    def remove_observer(self, observer: ErrorsObserver) -> None:
        """Stop calling ``observer``."""
        self._observers.remove(observer)

    async def _notify(self, events: list[ErrorEvent], report: WriteReport) -> None:
        if not self._observers:
            return
        written = WrittenErrors(str(self.settings.id), events, report)
        for observer in list(self._observers):
            try:
                await observer(written)
            except Exception:
                self.logger.exception("an errors observer failed")

    # ---- lifecycle

    async def open(self, host: Host) -> None:
        for ident in self.config.observers:
            try:
                ext = host.extension(ident)
            except KeyError:
                raise ValueError(f"{self.settings.id}: observers: {ident!r} is not an enabled extension") from None
            if not isinstance(ext, ErrorsObserverExtension):
                raise ValueError(f"{self.settings.id}: observers: extension {ident!r} has no errors_written method")
            self.add_observer(ext.errors_written)
        self._store_lock = asyncio.Lock()
        self._closing = asyncio.Event()
        if self._dsn is None:
            self._dsn = await self._start_embedded()
        try:
            await self._open_store()
        except Exception as exc:
            if not is_retryable(exc):
                await self._stop_embedded()
                raise
            # Like any exporter whose backend is down at start: keep the data queued and retry.
            self.logger.warning("PostgreSQL is not reachable yet (%s); writes will retry", exc)
        self._writer = _GroupWriter(
            store=self._open_store,
            on_written=self._notify,
            batch_size=self.config.write_batch_size,
            concurrency=self.config.pool_size,
        )
        self._writer.start()
        self._maintenance = asyncio.create_task(self._maintain(), name=f"{self.settings.id}-retention")

    async def close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._maintenance is not None:
            # psycopg may turn the cancellation of a running query into a QueryCanceled error,
            # which the loop logs and survives: the event above ends it all the same.
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._maps_pool is not None:
            await self._maps_pool.close()
            self._maps_pool = None
            self._symbolicator = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        await self._stop_embedded()

    async def _start_embedded(self) -> str:
        data_dir = self.settings.data_dir
        if not data_dir:
            raise ValueError(f"{self.settings.id}: no endpoint is configured and there is no data directory for the embedded PostgreSQL")
        server = EmbeddedPostgres(data_dir)
        # initdb and the server's start-up block for seconds: off the event loop.
        dsn = await asyncio.to_thread(server.start)
        self._embedded = server
        self.logger.info("using the embedded PostgreSQL in %s", server.home)
        return dsn

    async def _stop_embedded(self) -> None:
        if self._embedded is not None:
            server, self._embedded = self._embedded, None
            self._dsn = self.config.postgres_dsn
            await asyncio.to_thread(server.stop)

    async def _open_store(self) -> ErrorStore:
        """The store, opened (migrations applied) at the first call that can reach the server."""
        if self._store is not None:
            return self._store
        assert self._store_lock is not None and self._dsn is not None
        async with self._store_lock:
            if self._store is None:
                self._store = await ErrorStore.open(
                    self._dsn, min_size=1, max_size=self.config.pool_size, timeout=self.config.connect_timeout
                )
                self.logger.info("writing error events to PostgreSQL (pool of %d)", self.config.pool_size)
            return self._store

    async def _maintain(self) -> None:
        """Retention and partition upkeep: now, then every ``retention.interval``."""
        retention = self.config.retention
        assert self._closing is not None
        while not self._closing.is_set():
            try:
                store = await self._open_store()
                if retention.max_age > 0:
                    report = await store.delete_events_older_than(timedelta(seconds=retention.max_age))
                    if report.dropped_partitions or report.deleted_events:
                        self.logger.info(
                            "retention: dropped %d day partitions and deleted %d events older than %s",
                            len(report.dropped_partitions), report.deleted_events, report.cutoff.isoformat(),
                        )
                await store.maintain_partitions()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing.is_set():
                    return
                self.logger.warning("retention pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), retention.interval)

    # ---- exporting

    def to_event(self, found: FoundError, symbolicated: _Symbolicated | None = None) -> ErrorEvent:
        """Group one found error and make the event the store writes.

        ``symbolicated`` is the error already grouped after its frames were mapped to their
        sources (see :meth:`symbolicate`).
        """
        resource = found.resource
        structured = found.structured_exceptions() if symbolicated is None else None
        if symbolicated is not None:
            result = symbolicated.result
        elif structured is not None:
            # Frames that came structured (a Sentry event) are grouped as given.
            result = self.grouper.group_parsed(
                structured, fingerprint=found.fingerprint, service=resource.service_name or None
            )
        else:
            result = self.grouper.group(
                exc_type=found.exc_type,
                message=found.message,
                stacktrace=found.stacktrace,
                language=resource.language,
                fingerprint=found.fingerprint,
                service=resource.service_name or None,
            )
        parsed = result.stacktrace
        primary = parsed.primary
        attributes, texts = found.collect(_TEXT_KEYS)
        if symbolicated is not None and symbolicated.errors:
            attributes[SYMBOLICATION_ERRORS] = list(symbolicated.errors[:_MAX_SYMBOLICATION_ERRORS])
        exc_type = (primary.type if primary is not None else None) or found.exc_type or ""
        message = found.message
        if message is None:
            message = (primary.value if primary is not None else None) or ""
        return ErrorEvent(
            fingerprint=result.primary_hash,
            secondary_fingerprint=result.secondary_hash,
            timestamp=found.timestamp,
            type=clip(exc_type, _TYPE_MAX_CHARS),
            message=message,
            title=result.title,
            culprit=result.culprit or "",
            level=found.level,
            event_id=found.event_id,
            project_id=found.project_id,
            trace_id=found.trace_id_hex,
            span_id=found.span_id_hex,
            session_id=_short(texts.get(SESSION_ID)),
            service_name=resource.service_name,
            service_version=resource.service_version,
            environment=resource.environment or texts.get(ENVIRONMENT) or texts.get(ENVIRONMENT_OLD) or "",
            stacktrace=clip_stacktrace(found.stacktrace) if found.stacktrace else None,
            frames=self._frames(parsed) if symbolicated is None else _frame_dicts(parsed),
            attributes=attributes,
            user_id=_short(texts.get(USER_ID) or texts.get(ENDUSER_ID)),
            user_email=_short(texts.get(USER_EMAIL)),
            user_agent=_short(texts.get(USER_AGENT)),
        )

    def _frames(self, parsed: ParsedStacktrace) -> list[dict[str, Any]] | None:
        """The exceptions and frames to store, built once per parsed stack trace."""
        memo = self._frames_memo
        hit = memo.get(id(parsed))
        if hit is not None and hit[0] is parsed:
            return hit[1]
        frames = _frame_dicts(parsed)
        if len(memo) >= _FRAMES_MEMO_SIZE:
            del memo[next(iter(memo))]
        memo[id(parsed)] = (parsed, frames)
        return frames

    async def consume(self, payload: Payload) -> None:
        """Queue only what holds errors: the spans or log records that carry one.

        Most requests have none and cost one substring search; the others are cut down to
        their failing spans or records, so the sending queue (in memory or on disk) holds a
        small request rather than the whole batch.
        """
        if self._running:
            trimmed = self.extractor.trim(payload)
            if trimmed is None:
                return
            payload = trimmed
        await super().consume(payload)

    # ---- source maps

    def _symbolication_candidate(self, found: FoundError) -> _Candidate | None:
        """The error's exceptions, freshly parsed, when it may have minified JavaScript frames.

        Errors without a release, of another language, or whose text names no ``.js`` file are
        turned down by attribute and substring tests, before any parsing.
        """
        resource = found.resource
        release = resource.service_version
        if not release:
            return None
        hint = normalize_language(resource.language)
        if hint not in (None, "javascript"):
            return None
        text = found.values_json if found.values_json is not None else found.stacktrace
        if not text or (hint is None and ".js" not in text):
            return None
        parsed = found.structured_exceptions()
        if parsed is None:
            # Parsed afresh rather than taken from the grouper's cache: the frames are rewritten.
            parsed = parse_stacktrace(
                found.stacktrace,
                language=resource.language,
                exc_type=found.exc_type,
                exc_message=found.message,
                in_app=self.grouper.in_app,
            )
        paths = wanted_paths(parsed)
        if not paths:
            return None
        return _Candidate(found, parsed, found.project_id, release, paths)

    def _map_store(self) -> Symbolicator:
        if self._symbolicator is None:
            assert self._dsn is not None
            options = self.config.sourcemaps
            # A pool of its own, opened on first use: deployments without browser errors never
            # open it, and the writer's connections stay free for writes.
            self._maps_pool = AsyncConnectionPool(
                self._dsn, min_size=0, max_size=2, kwargs={"autocommit": True}, open=False, name="appguard-sourcemaps"
            )
            self._symbolicator = Symbolicator(
                SourceMapStore(self._maps_pool),
                in_app=self.grouper.in_app,
                max_maps=options.cache_size,
                max_bytes=options.cache_max_bytes,
                ttl=options.ttl,
                negative_ttl=options.negative_ttl,
            )
        return self._symbolicator

    async def symbolicate(self, found: Sequence[FoundError]) -> dict[int, _Symbolicated]:
        """Map the minified JavaScript frames of a batch's errors and group those errors.

        Answers, by position in ``found``, the errors that had frames to map; the others are
        grouped by :meth:`to_event` as usual. Maps are looked up once for the whole batch.
        """
        if not self.config.sourcemaps.enabled:
            return {}
        candidates = {i: c for i, error in enumerate(found) if (c := self._symbolication_candidate(error)) is not None}
        if not candidates:
            return {}
        symbolicator = self._map_store()
        assert self._maps_pool is not None
        wanted: set[PathKey] = {(c.project_id, c.release, p) for c in candidates.values() for p in c.paths}
        failure: str | None = None
        try:
            await self._open_store()  # the schema, source_maps included, is migrated by then
            if self._maps_pool.closed:
                await self._maps_pool.open(wait=False)
            await symbolicator.prepare(wanted)
        except Exception as exc:
            if is_retryable(exc):
                raise ExportError(f"looking up source maps failed: {type(exc).__name__}: {exc}", retryable=True) from None
            # A permanent failure must not cost the events: they are stored minified, saying why.
            failure = f"source maps could not be read: {type(exc).__name__}: {exc}"
            self.logger.warning("%s", failure)
        out: dict[int, _Symbolicated] = {}
        for index, candidate in candidates.items():
            if failure is None:
                errors = symbolicator.symbolicate(candidate.parsed, candidate.project_id, candidate.release).errors
            else:
                errors = (failure,)
            result = self.grouper.group_parsed(
                candidate.parsed, fingerprint=candidate.found.fingerprint, service=candidate.found.resource.service_name or None
            )
            out[index] = _Symbolicated(result, errors)
        return out

    async def push(self, payload: Payload) -> None:
        found = self.extractor.extract(payload)
        if not found:
            return
        symbolicated = await self.symbolicate(found)
        events: list[ErrorEvent] = []
        for index, error in enumerate(found, 1):
            events.append(self.to_event(error, symbolicated.get(index - 1)))
            if index % _YIELD_EVERY == 0:
                # Grouping is CPU work: let receivers and other exporters run in between.
                await asyncio.sleep(0)
        if self._writer is None:
            raise ExportError("the errors exporter is not started", retryable=True)
        try:
            await self._writer.write(events)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"writing {len(events)} error events failed: {type(exc).__name__}: {exc}", retryable=is_retryable(exc)) from None


@dataclass(slots=True)
class _Candidate:
    """An error whose frames may be mapped: its parsed exceptions and where to look."""

    found: FoundError
    parsed: ParsedStacktrace
    project_id: int
    release: str
    paths: set[str]


@dataclass(frozen=True, slots=True)
class _Symbolicated:
    """An error grouped after symbolication, and why some of its frames stayed minified."""

    result: GroupingResult
    errors: tuple[str, ...]


def _frame_dicts(parsed: ParsedStacktrace) -> list[dict[str, Any]] | None:
    return [exc.to_dict() for exc in parsed.exceptions] or None


def _short(text: str | None) -> str | None:
    return clip(text, _ID_MAX_CHARS) if text else None


def _create(*, settings: CreateSettings, config: ErrorsExporterConfig, signals: frozenset[Signal]) -> ErrorsExporter:
    return ErrorsExporter(settings, config, signals)


factory = Factory(
    type="errors",
    kind=Kind.EXPORTER,
    config_class=ErrorsExporterConfig,
    create=_create,
    signals=frozenset({Signal.TRACES, Signal.LOGS}),
    stability="alpha",
    description="finds exceptions in traces and logs, groups them into issues, stores them in PostgreSQL",
)
