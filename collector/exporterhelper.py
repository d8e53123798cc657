"""What every exporter shares: sending queue, retries with backoff, timeouts, batching.

An exporter subclasses :class:`ExporterBase` and implements ``push``: send one payload, or
raise :class:`ExportError` saying whether trying again may help. The base turns that into the
stock collector's behaviour:

* ``consume`` puts the payload in a bounded queue (in memory, or on disk through a storage
  extension) and returns; ``num_consumers`` workers take from it and export. A full queue
  refuses with a throttling :class:`~collector.consumer.RetryableError`, so the receiver
  answers RESOURCE_EXHAUSTED / 429 and the client keeps the data; with ``block_on_overflow``
  the caller waits for room instead. With ``wait_for_result`` (or the queue disabled) the
  caller gets the export's own outcome.
* A retryable failure is tried again with exponential backoff (or after the server's
  Retry-After / RetryInfo when that is longer) until ``max_elapsed_time``; then, like a
  permanent failure, the data is counted in ``otelcol_exporter_send_failed_*`` and logged with
  its item count. Nothing is dropped silently.
* ``sending_queue.batch`` merges queued payloads up to ``min_size`` (or after
  ``flush_timeout``) and splits above ``max_size``. Merging joins the requests' bytes
  (concatenated protobuf messages merge their repeated fields), so unchanged data is never
  parsed or re-encoded; only splitting works on the parsed message, per resource and scope.
* ``shutdown`` stops taking data and drains the in-memory queue within the service's grace
  period; a persistent queue simply stops, leaving what is queued on disk for the next start.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from pydantic import Field, field_validator, model_validator

from collector import split
from collector.component import Component, ComponentID, CreateSettings, Host
from collector.configtypes import ComponentConfig, Duration, QueueConfig, RetryConfig
from collector.consumer import ConsumeError, PermanentError, RetryableError
from collector.pdata import Payload, Signal
from collector.persistent_queue import CorruptEntry, PersistentQueue, StorageExtension
from collector.queue import (
    SIZERS,
    BoundedQueue,
    EntryTooLarge,
    MemoryQueue,
    QueueClosed,
    QueueEntry,
    QueueFull,
    Sizer,
)

# --------------------------------------------------------------------------------------------
# Errors and their classification (OTLP specification, "Failures" / "Throttling")


class ExportError(Exception):
    """A failed attempt to send: ``retryable`` says whether the same data may succeed later.

    ``retry_after`` is the delay the server asked for (HTTP Retry-After, gRPC RetryInfo).
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


_RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})


def grpc_status_retryable(code: grpc.StatusCode, *, has_retry_info: bool = False) -> bool:
    """Whether an OTLP/gRPC export that failed with ``code`` may be retried.

    RESOURCE_EXHAUSTED is retryable only when the server sent RetryInfo: without it the
    server cannot recover (for example, the request is too large).
    """
    if code in _RETRYABLE_GRPC:
        return True
    return code is grpc.StatusCode.RESOURCE_EXHAUSTED and has_retry_info


def http_status_retryable(status: int) -> bool:
    """Whether an OTLP/HTTP export answered with ``status`` may be retried (429, 502, 503, 504)."""
    return status in RETRYABLE_HTTP_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def user_agent() -> str:
    """The User-Agent exporters send: ``AppGuard/<version> (<os>/<machine>)``."""
    try:
        version = importlib.metadata.version("appguard")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"AppGuard/{version} ({sys.platform}/{platform.machine().lower()})"


def consume_error(err: ExportError) -> ConsumeError:
    """The error a caller waiting for the export's result gets."""
    if err.retryable:
        return RetryableError(str(err), retry_after=err.retry_after)
    return PermanentError(str(err))


# --------------------------------------------------------------------------------------------
# Config mixins


def _none_is_empty(value: Any) -> Any:
    # ``sending_queue:`` with no value in YAML means the defaults.
    return {} if value is None else value


def parse_headers(value: Any) -> Any:
    """``headers`` as a map, or as the stock collector's list of ``{name, value}`` pairs."""
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, dict) or set(item) != {"name", "value"}:
                raise ValueError("a headers list holds {name: ..., value: ...} entries")
            out[str(item["name"])] = item["value"]
        value = out
    if isinstance(value, dict):
        # YAML turns `header1: 234` into a number; a header value is text.
        return {str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return value


class RetryOnFailureConfig(RetryConfig):
    """``retry_on_failure`` with the stock collector's consistency checks."""

    @model_validator(mode="after")
    def _elapsed_covers_intervals(self) -> RetryOnFailureConfig:
        if self.max_elapsed_time > 0:
            if self.max_elapsed_time < self.initial_interval:
                raise ValueError("max_elapsed_time must not be less than initial_interval")
            if self.max_elapsed_time < self.max_interval:
                raise ValueError("max_elapsed_time must not be less than max_interval")
        return self


def batch_sizer(queue: QueueConfig) -> str:
    """The sizer batching uses: its own, else the queue's when set explicitly, else ``items``."""
    if queue.batch is not None and queue.batch.sizer is not None:
        return queue.batch.sizer
    if "sizer" in queue.model_fields_set:
        return queue.sizer
    return "items"


class SendingQueueConfig(QueueConfig):
    """``sending_queue`` with the stock collector's consistency checks."""

    @field_validator("storage")
    @classmethod
    def _storage_id(cls, value: str | None) -> str | None:
        if value is not None:
            ComponentID.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SendingQueueConfig:
        if self.storage is not None and self.wait_for_result:
            raise ValueError("wait_for_result is not supported with a persistent queue (storage)")
        if self.batch is not None:
            sizer = batch_sizer(self)
            if sizer not in ("items", "bytes"):
                raise ValueError(f"batch supports only the items or bytes sizer, found {sizer!r}")
            if self.batch.flush_timeout <= 0:
                raise ValueError("batch.flush_timeout must be positive")
            if self.batch.max_size and self.batch.max_size < self.batch.min_size:
                raise ValueError(f"batch.max_size ({self.batch.max_size}) must be greater or equal to batch.min_size ({self.batch.min_size})")
            if sizer == self.sizer and self.batch.min_size > self.queue_size:
                raise ValueError("batch.min_size must be less than or equal to queue_size")
        return self


class TimeoutSettings(ComponentConfig):
    """``timeout``: the limit on one attempt to send (0: none)."""

    timeout: Duration = 5.0


class RetrySettings(ComponentConfig):
    """``retry_on_failure``."""

    retry_on_failure: RetryOnFailureConfig = Field(default_factory=lambda: RetryOnFailureConfig.model_validate({}))

    _retry_none = field_validator("retry_on_failure", mode="before")(_none_is_empty)


class QueueSettings(ComponentConfig):
    """``sending_queue``."""

    sending_queue: SendingQueueConfig = Field(default_factory=lambda: SendingQueueConfig.model_validate({}))

    _queue_none = field_validator("sending_queue", mode="before")(_none_is_empty)


class ExporterSettings(TimeoutSettings, RetrySettings, QueueSettings):
    """The three exporterhelper sections; an exporter's config extends it with its own keys."""


# --------------------------------------------------------------------------------------------
# Backoff


def retry_delay(config: RetryConfig, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1 for the first):
    ``initial_interval * multiplier**(failures-1)``, capped at ``max_interval``, then spread by
    ``randomization_factor`` either way, as the stock collector's retry sender computes it."""
    exponent = max(0, failures - 1)
    try:
        interval = min(config.initial_interval * config.multiplier**exponent, config.max_interval)
    except OverflowError:
        interval = config.max_interval
    delta = config.randomization_factor * interval
    return interval - delta + rand() * 2 * delta


class Backoff:
    """The delays of one request's retries, one :func:`retry_delay` after another."""

    def __init__(self, config: RetryConfig, rand: Callable[[], float] = random.random) -> None:
        self._cfg = config
        self._failures = 0
        self._rand = rand

    def next(self) -> float:
        """The delay after the next failure."""
        self._failures += 1
        return retry_delay(self._cfg, self._failures, self._rand)


# --------------------------------------------------------------------------------------------
# Merging and splitting requests (exporter-side batching), on collector.split


def merge_payloads(payloads: Sequence[Payload]) -> Payload:
    """One payload with the data of ``payloads`` in order, built by joining their bytes.

    The client metadata is kept when every part has the same, as it then still describes the
    whole; otherwise it is dropped.
    """
    if len(payloads) == 1:
        return payloads[0]
    first = payloads[0]
    same = all(p.metadata == first.metadata for p in payloads)
    return split.merge_payloads(first.signal, payloads, metadata=first.metadata if same else None)


def split_payload(payload: Payload, max_size: int, sizer: str) -> list[Payload]:
    """``payload`` cut into requests of at most ``max_size`` (``items`` or ``bytes``).

    Sizing by bytes converts ``max_size`` into a number of items from the request's average
    item size: the parts are about ``max_size`` bytes, not exactly.
    """
    size = SIZERS[sizer](payload)
    if max_size <= 0 or size <= max_size:
        return [payload]
    max_items = max_size
    if sizer == "bytes":
        max_items = max(1, payload.items * max_size // size)
    parts = split.split_request(payload.signal, payload.message, max_items)
    if len(parts) == 1:
        return [payload]
    return [Payload.from_message(payload.signal, part, metadata=payload.metadata) for part in parts]


# --------------------------------------------------------------------------------------------
# The exporter base


@dataclass(eq=False)
class _Tracker:
    """Follows one queue entry through the batches it ended up in."""

    entry: QueueEntry
    queue: BoundedQueue
    outstanding: int = 1
    error: ExportError | None = None

    async def finish(self, error: ExportError | None) -> None:
        self.outstanding -= 1
        if error is not None and self.error is None:
            self.error = error
        if self.outstanding == 0:
            await self.queue.done(self.entry)
            self.entry.resolve(consume_error(self.error) if self.error else None)


@dataclass(eq=False)
class _Part:
    """Data waiting in the batcher and the entries it came from."""

    payload: Payload
    owners: list[_Tracker]


@dataclass(eq=False)
class _SignalQueue:
    signal: Signal
    queue: BoundedQueue
    slots: asyncio.Semaphore
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    batches: set[asyncio.Task[None]] = field(default_factory=set)


class ExporterBase(Component):
    """Base of every queued, retrying exporter; subclasses implement :meth:`push`.

    ``open`` and ``close`` are the subclass's hooks to create and release its client: ``open``
    runs before the queue starts exporting (a persistent queue may resend at once), ``close``
    after it stopped.
    """

    mutates_data = False
    # An exporter that only sends ``payload.to_bytes()`` sets this: while its payloads wait in
    # the queue they keep their bytes but not the parsed message (which takes several times
    # the memory); a stage that still reads the message parses it again.
    sends_bytes_only = False

    def __init__(self, settings: CreateSettings, config: ExporterSettings, signals: frozenset[Signal]) -> None:
        self.settings = settings
        self.config = config
        self.signals = frozenset(signals)
        self.logger = settings.logger
        self.metrics = settings.telemetry.exporter(str(settings.id))
        self._dropped = settings.telemetry.dropped
        self._queues: dict[Signal, _SignalQueue] = {}
        self._running = False
        self._persistent = config.sending_queue.enabled and config.sending_queue.storage is not None
        self._wait = config.sending_queue.wait_for_result

    # ---- subclass interface

    async def push(self, payload: Payload) -> None:
        """Send one payload; raise :class:`ExportError` when it did not get through."""
        raise NotImplementedError

    async def open(self, host: Host) -> None:
        """Create the client (connections, sessions, authenticators)."""

    async def close(self) -> None:
        """Release the client."""

    # ---- lifecycle

    async def start(self, host: Host) -> None:
        await self.open(host)
        qcfg = self.config.sending_queue
        try:
            if qcfg.enabled:
                for signal in sorted(self.signals, key=lambda s: s.value):
                    await self._start_queue(host, signal)
        except BaseException:
            # The service will not call shutdown on a component that failed to start.
            await self.shutdown()
            raise
        self._running = True

    async def _start_queue(self, host: Host, signal: Signal) -> None:
        qcfg = self.config.sending_queue
        queue: BoundedQueue
        if qcfg.storage is not None:
            pqueue = PersistentQueue(qcfg.queue_size, qcfg.sizer, block_on_overflow=qcfg.block_on_overflow, logger=self.logger)
            ext = self._storage(host, qcfg.storage)
            client = await ext.client(f"exporter_{self.settings.id.type}_{self.settings.id.name}_{signal.value}")
            reloaded = await pqueue.open(client)
            if reloaded:
                self.logger.info("resuming %d %s requests found in the persistent queue", reloaded, signal.value)
            queue = pqueue
        else:
            queue = MemoryQueue(qcfg.queue_size, qcfg.sizer, block_on_overflow=qcfg.block_on_overflow)
        self.metrics.queue_gauges(signal, lambda: float(queue.size), float(queue.capacity))
        sq = _SignalQueue(signal, queue, asyncio.Semaphore(qcfg.num_consumers))
        if qcfg.batch is not None:
            sq.workers.append(asyncio.create_task(self._batch_loop(sq), name=f"{self.settings.id}-{signal}-batcher"))
        else:
            sq.workers.extend(
                asyncio.create_task(self._worker(sq), name=f"{self.settings.id}-{signal}-{i}") for i in range(qcfg.num_consumers)
            )
        self._queues[signal] = sq

    def _storage(self, host: Host, ident: str) -> StorageExtension:
        try:
            ext = host.extension(ident)
        except KeyError:
            raise ValueError(f"{self.settings.id}: sending_queue.storage {ident!r} is not an enabled extension") from None
        if not isinstance(ext, StorageExtension):
            raise ValueError(f"{self.settings.id}: extension {ident!r} is not a storage extension")
        return ext

    async def shutdown(self) -> None:
        self._running = False
        queues = list(self._queues.values())
        for sq in queues:
            sq.queue.close(drain=not self._persistent)
        tasks = [t for sq in queues for t in (*sq.workers, *sq.batches)]
        try:
            if self._persistent:
                # What is not exported yet stays on disk for the next start.
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            else:
                await asyncio.gather(*(w for sq in queues for w in sq.workers))
        except asyncio.CancelledError:
            # The service's grace period is over: what is still queued is lost, and said so.
            for sq in queues:
                lost = sq.queue.pending_items
                if lost:
                    self._count_failed(sq.signal, lost, "shutdown", dropping=not self._wait)
                    self.logger.error(
                        "Shutdown before the sending queue drained: %d %s dropped", lost, sq.signal.item_name,
                        extra={"dropped_items": lost},
                    )
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sq in queues:
                sq.queue.fail_waiting(RetryableError(f"exporter {self.settings.id} shut down before exporting"))
            raise
        finally:
            for sq in queues:
                await sq.queue.release()
            self._queues.clear()
            await self.close()

    # ---- consuming

    async def consume(self, payload: Payload) -> None:
        if not self._running:
            raise RetryableError(f"exporter {self.settings.id} is not running")
        if payload.items == 0 and payload.is_empty():
            return
        sq = self._queues.get(payload.signal)
        if sq is None:
            error = await self._export(payload, dropping=False)
            if error is not None:
                raise consume_error(error)
            return
        if self.sends_bytes_only:
            payload.drop_parsed()
        try:
            entry = await sq.queue.put(payload, wait_for_result=self._wait)
        except QueueFull:
            self.metrics.enqueue_failed(payload.signal, payload.items)
            raise RetryableError(f"sending queue of exporter {self.settings.id} is full", throttled=True) from None
        except QueueClosed:
            self.metrics.enqueue_failed(payload.signal, payload.items)
            raise RetryableError(f"exporter {self.settings.id} is shutting down") from None
        except EntryTooLarge as exc:
            self.metrics.enqueue_failed(payload.signal, payload.items)
            raise PermanentError(f"exporter {self.settings.id}: {exc}") from None
        except OSError as exc:
            self.metrics.enqueue_failed(payload.signal, payload.items)
            raise RetryableError(f"exporter {self.settings.id} cannot persist the request: {exc}") from None
        if entry.result is not None:
            await entry.result

    # ---- exporting

    async def _attempt(self, payload: Payload) -> None:
        timeout = self.config.timeout or None
        try:
            async with asyncio.timeout(timeout):
                await self.push(payload)
        except ExportError:
            raise
        except TimeoutError:
            raise ExportError(f"export attempt timed out after {timeout}s", retryable=True) from None
        except OSError as exc:
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        except Exception as exc:
            # A bug rather than a transport problem: retrying would only repeat it.
            self.logger.exception("unexpected error while exporting")
            raise ExportError(f"{type(exc).__name__}: {exc}", retryable=False) from None

    async def send(self, payload: Payload) -> None:
        """Export with retries; raise the last :class:`ExportError` when giving up."""
        retry = self.config.retry_on_failure
        backoff = Backoff(retry)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry.max_elapsed_time if retry.max_elapsed_time > 0 else None
        while True:
            try:
                await self._attempt(payload)
                return
            except ExportError as exc:
                error = exc
            if not error.retryable:
                raise ExportError(f"not retryable error: {error}", retryable=False)
            if not retry.enabled:
                raise error
            delay = backoff.next()
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if deadline is not None and loop.time() + delay > deadline:
                raise ExportError(f"no more retries left: {error}", retryable=True, retry_after=error.retry_after)
            self.logger.info(
                "Exporting failed. Will retry the request after interval: %s (interval %.3fs)", error, delay,
                extra={"error": str(error), "interval": delay},
            )
            await asyncio.sleep(delay)

    async def _export(self, payload: Payload, *, dropping: bool) -> ExportError | None:
        """Send with retries and count the outcome; the error when given up on."""
        try:
            await self.send(payload)
        except ExportError as error:
            n = payload.items
            self._count_failed(payload.signal, n, "retries_exhausted" if error.retryable else "permanent_error", dropping=dropping)
            what = "Dropping data" if dropping else "Rejecting data"
            self.logger.error(
                "Exporting failed. %s: %d %s: %s", what, n, payload.signal.item_name, error,
                extra={"error": str(error), "dropped_items": n},
            )
            return error
        self.metrics.sent(payload.signal, payload.items)
        return None

    def _count_failed(self, signal: Signal, n: int, reason: str, *, dropping: bool) -> None:
        self.metrics.send_failed(signal, n)
        if dropping:
            # The client was told the data was accepted: it is lost here, and counted as such.
            self._dropped.labels(component=f"exporter/{self.settings.id}", otel_signal=signal.value, reason=reason).inc(n)

    async def _worker(self, sq: _SignalQueue) -> None:
        while (entry := await sq.queue.get()) is not None:
            payload = await self._load(sq, entry)
            if payload is None:
                continue
            error = await self._export(payload, dropping=not self._wait)
            await sq.queue.done(entry)
            entry.resolve(consume_error(error) if error else None)

    async def _load(self, sq: _SignalQueue, entry: QueueEntry) -> Payload | None:
        try:
            return await sq.queue.load(entry)
        except CorruptEntry as exc:
            self._count_failed(sq.signal, entry.items, "corrupt_queue_entry", dropping=True)
            self.logger.error(
                "Dropping a damaged request from the persistent queue: %d %s: %s", entry.items, sq.signal.item_name, exc,
                extra={"dropped_items": entry.items},
            )
            await sq.queue.done(entry)
            return None

    async def _batch_loop(self, sq: _SignalQueue) -> None:
        batch = self.config.sending_queue.batch
        assert batch is not None
        sizer_name = batch_sizer(self.config.sending_queue)
        sizer = SIZERS[sizer_name]
        loop = asyncio.get_running_loop()
        pending: list[_Part] = []
        pending_size = 0
        deadline: float | None = None
        while True:
            try:
                entry = await sq.queue.get(None if deadline is None else max(0.0, deadline - loop.time()))
            except TimeoutError:
                await self._flush(sq, pending, sizer, sizer_name, final=True)
                pending, pending_size, deadline = [], 0, None
                continue
            if entry is None:
                break
            payload = await self._load(sq, entry)
            if payload is None:
                continue
            pending.append(_Part(payload, [_Tracker(entry, sq.queue)]))
            pending_size += sizer(payload)
            if deadline is None:
                deadline = loop.time() + batch.flush_timeout
            if pending_size >= batch.min_size:
                carry = await self._flush(sq, pending, sizer, sizer_name, final=False)
                pending = [carry] if carry else []
                pending_size = sizer(carry.payload) if carry else 0
                deadline = loop.time() + batch.flush_timeout if carry else None
            elif loop.time() >= deadline:
                # Requests kept coming, so get() never timed out: the batch is due all the same.
                await self._flush(sq, pending, sizer, sizer_name, final=True)
                pending, pending_size, deadline = [], 0, None
        if pending:
            await self._flush(sq, pending, sizer, sizer_name, final=True)
        while sq.batches:
            await asyncio.gather(*list(sq.batches))

    async def _flush(self, sq: _SignalQueue, parts: list[_Part], sizer: Sizer, sizer_name: str, *, final: bool) -> _Part | None:
        """Merge ``parts``, split at max_size and send; a small tail may wait for more data."""
        batch = self.config.sending_queue.batch
        assert batch is not None
        merged = merge_payloads([p.payload for p in parts])
        chunks = split_payload(merged, batch.max_size, sizer_name)
        carry: Payload | None = None
        if not final and len(chunks) > 1 and sizer(chunks[-1]) < batch.min_size:
            carry = chunks.pop()
        owned: dict[int, tuple[_Tracker, int]] = {}
        for part in parts:
            for tracker in part.owners:
                _, count = owned.get(id(tracker), (tracker, 0))
                owned[id(tracker)] = (tracker, count + 1)
        # Which entry landed in which chunk is not tracked: each entry waits for every chunk
        # made from the data it was merged with (never done too early, at worst a bit late).
        produced = len(chunks) + (1 if carry is not None else 0)
        owners = []
        for tracker, count in owned.values():
            tracker.outstanding += produced - count
            owners.append(tracker)
        for chunk in chunks:
            await sq.slots.acquire()
            task = asyncio.create_task(self._export_batch(sq, chunk, owners))
            sq.batches.add(task)
            task.add_done_callback(sq.batches.discard)
        return _Part(carry, owners) if carry is not None else None

    async def _export_batch(self, sq: _SignalQueue, payload: Payload, owners: list[_Tracker]) -> None:
        try:
            error = await self._export(payload, dropping=not self._wait)
            for tracker in owners:
                await tracker.finish(error)
        finally:
            sq.slots.release()

