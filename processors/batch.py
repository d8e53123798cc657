"""``batch``: groups requests into larger ones by size and time, as the stock batch processor.

Unlike the stock processor, a failure downstream is not swallowed: ``consume`` returns only
once the batch holding the caller's data was accepted by the next consumer (for an exporter:
is in its sending queue), and raises that consumer's error otherwise. Every caller whose
data is in a batch waits on the batch's future, so what a receiver acknowledges has reached
an exporter.

A batch is one list of pending payloads per batcher (one batcher, or one per combination of
``metadata_keys`` values). It is sent when it holds ``send_batch_size`` items or
``timeout`` after its first payload arrived, whichever comes first, split into parts of at
most ``send_batch_max_size`` items when that is set.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator, model_validator

from collector.component import CreateSettings, Factory, Kind, ProcessorBase
from collector.configtypes import ComponentConfig, Duration
from collector.consumer import ConsumeError, Consumer, PermanentError, RetryableError
from collector.pdata import Payload, Signal
from collector.split import merge_payloads, split_request


class BatchConfig(ComponentConfig):
    """The stock batch processor's keys and defaults."""

    send_batch_size: int = Field(default=8192, ge=0)
    timeout: Duration = 0.2
    send_batch_max_size: int = Field(default=0, ge=0)
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: int = Field(default=1000, ge=0)

    @field_validator("metadata_keys")
    @classmethod
    def _unique_keys(cls, keys: list[str]) -> list[str]:
        seen: set[str] = set()
        for key in keys:
            lower = key.lower()
            if lower in seen:
                raise ValueError(f"duplicate entry in metadata_keys: {lower!r} (case-insensitive)")
            seen.add(lower)
        return keys

    @model_validator(mode="after")
    def _max_covers_size(self) -> BatchConfig:
        if 0 < self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater or equal to send_batch_size")
        return self


class Trigger(enum.Enum):
    """Why a batch was sent, for the ``*_trigger_send`` counters."""

    SIZE = "size"
    TIMEOUT = "timeout"


@dataclass(eq=False)
class _Batch:
    """Payloads waiting to be sent together, and the outcome their senders wait for."""

    future: asyncio.Future[ConsumeError | None]
    payloads: list[Payload] = field(default_factory=list)
    items: int = 0


@dataclass(eq=False)
class _Batcher:
    """The pending batch of one metadata combination (the only one without metadata_keys)."""

    metadata: dict[str, tuple[str, ...]]
    pending: _Batch | None = None
    timer: asyncio.TimerHandle | None = None


class BatchProcessor(ProcessorBase):
    """Batches payloads of one signal and hands them to the next consumer."""

    # Merged batches are new payloads; a single payload is passed on unchanged only when the
    # next consumer does not mutate it (else it gets a copy). The input is never modified.
    mutates_data = False

    def __init__(self, settings: CreateSettings, config: BatchConfig, signal: Signal, next_consumer: Consumer) -> None:
        super().__init__(settings, signal, next_consumer)
        self.config = config
        self._log = settings.logger
        # Like the stock processor: no timer when either is zero, every payload goes at once.
        self._immediate = config.timeout == 0 or config.send_batch_size == 0
        self._keys = sorted({k.lower() for k in config.metadata_keys})
        self._single = _Batcher({})
        self._batchers: dict[tuple[tuple[str, ...], ...], _Batcher] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        name = str(settings.id)
        telemetry = settings.telemetry
        self._metrics = telemetry.processor(name, signal)
        self._send_size = telemetry.batch_send_size.labels(processor=name)
        self._triggers = {
            Trigger.SIZE: telemetry.batch_size_trigger.labels(processor=name),
            Trigger.TIMEOUT: telemetry.batch_timeout_trigger.labels(processor=name),
        }

    @property
    def metadata_cardinality(self) -> int:
        """Batchers in use: distinct metadata combinations seen (1 without metadata_keys)."""
        return len(self._batchers) if self._keys else 1

    async def consume(self, payload: Payload) -> None:
        """Add ``payload`` to its batch; return once that batch was accepted downstream."""
        self._metrics.incoming(payload.items)
        if self._closed:
            raise RetryableError("batch processor is shut down")
        if payload.items == 0:
            return  # nothing to send, as the stock processor drops empty data
        batcher = self._batcher(payload.metadata)
        if self._immediate:
            await self._send(batcher, [payload], Trigger.SIZE)
            return
        batch = batcher.pending
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = batcher.pending = _Batch(loop.create_future())
            batcher.timer = loop.call_later(self.config.timeout, self._on_timeout, batcher, batch)
        batch.payloads.append(payload)
        batch.items += payload.items
        if batch.items >= self.config.send_batch_size:
            self._flush(batcher, Trigger.SIZE)
        # shield: a caller that goes away must not cancel the others' batch.
        error = await asyncio.shield(batch.future)
        if error is not None:
            raise _fresh(error)

    async def shutdown(self) -> None:
        """Send every pending batch and wait for every send in progress."""
        self._closed = True
        for batcher in [self._single, *self._batchers.values()]:
            if batcher.pending is not None:
                self._flush(batcher, Trigger.TIMEOUT)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _batcher(self, metadata: Mapping[str, tuple[str, ...]]) -> _Batcher:
        if not self._keys:
            return self._single
        # An unset key and an empty value are different combinations, as in the stock processor.
        values = tuple(tuple(metadata.get(k, ())) for k in self._keys)
        batcher = self._batchers.get(values)
        if batcher is None:
            limit = self.config.metadata_cardinality_limit
            if limit and len(self._batchers) >= limit:
                raise PermanentError("too many batcher metadata-value combinations")
            batcher = self._batchers[values] = _Batcher({k: v for k, v in zip(self._keys, values, strict=True) if v})
        return batcher

    def _on_timeout(self, batcher: _Batcher, batch: _Batch) -> None:
        if batcher.pending is batch:
            self._flush(batcher, Trigger.TIMEOUT)

    def _flush(self, batcher: _Batcher, trigger: Trigger) -> None:
        """Detach the pending batch and send it in a task of its own."""
        batch = batcher.pending
        assert batch is not None
        if batcher.timer is not None:
            batcher.timer.cancel()
        batcher.pending = batcher.timer = None
        task = asyncio.get_running_loop().create_task(self._send_batch(batcher, batch, trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batcher: _Batcher, batch: _Batch, trigger: Trigger) -> None:
        error: ConsumeError | None = None
        try:
            await self._send(batcher, batch.payloads, trigger)
        except ConsumeError as exc:
            error = exc
            if not exc.retryable and len(batch.payloads) > 1:
                # Another caller's data may be what was refused: the rest may try again.
                error = RetryableError(
                    f"batch refused downstream: {exc}", throttled=exc.throttled, retry_after=exc.retry_after
                )
        except asyncio.CancelledError:
            batch.future.set_result(RetryableError("sending the batch was cancelled"))
            raise
        except Exception as exc:
            self._log.exception("sending a batch failed")
            error = RetryableError(f"batch processor failed to send: {exc!r}")
        if error is not None:
            self._log.debug("batch of %d %s refused downstream: %s", batch.items, self.signal.item_name, error)
        batch.future.set_result(error)

    async def _send(self, batcher: _Batcher, payloads: list[Payload], trigger: Trigger) -> None:
        """Merge, split to ``send_batch_max_size`` and hand on; raises the first refusal."""
        merged = payloads[0] if len(payloads) == 1 else merge_payloads(self.signal, payloads, metadata=batcher.metadata)
        limit = self.config.send_batch_max_size
        parts = [merged]
        if limit and merged.items > limit:
            messages = split_request(self.signal, merged.message, limit)
            if len(messages) > 1:
                parts = [
                    Payload.from_message(self.signal, m, metadata=merged.metadata, client_address=merged.client_address)
                    for m in messages
                ]
        if parts[0] is payloads[0] and self.next.mutates_data:
            parts = [payloads[0].copy()]  # the caller's payload is not ours to change
        for part in parts:
            await self.next.consume(part)
            self._metrics.outgoing(part.items)
            self._send_size.observe(part.items)
            self._triggers[trigger].inc()


def _fresh(error: ConsumeError) -> ConsumeError:
    """A new exception per waiting caller, so that tracebacks do not pile up on a shared one."""
    if error.retryable:
        return RetryableError(str(error), throttled=error.throttled, retry_after=error.retry_after)
    return PermanentError(str(error))


def _create(*, settings: CreateSettings, config: BatchConfig, signal: Signal, next_consumer: Consumer) -> Any:
    return BatchProcessor(settings, config, signal, next_consumer)


factory = Factory(
    type="batch",
    kind=Kind.PROCESSOR,
    config_class=BatchConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="beta",
    description="groups data into larger requests by size and time; callers wait for the hand-off downstream",
)
