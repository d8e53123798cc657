"""Consumers: whatever takes a :class:`~collector.pdata.Payload` next, and their errors.

A consumer's ``consume`` returns once the data is safely handed on (in an exporter's queue, or
exported when the queue waits for the result). It raises :class:`ConsumeError` to refuse the
data: retryable refusals travel back to the client as the OTLP retryable codes, permanent
ones as "bad data".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from collector.pdata import Payload


class ConsumeError(Exception):
    """The data was not accepted.

    ``retryable``: the client may send the same data again later.
    ``throttled``: the refusal is about load (memory, full queue): OTLP answers
    RESOURCE_EXHAUSTED / 429 rather than UNAVAILABLE / 503.
    ``retry_after``: seconds the client should wait, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        throttled: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.throttled = throttled
        self.retry_after = retry_after


class RetryableError(ConsumeError):
    """A transient refusal: send again later."""

    def __init__(self, message: str, *, throttled: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message, retryable=True, throttled=throttled, retry_after=retry_after)


class PermanentError(ConsumeError):
    """The data can never be accepted as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@runtime_checkable
class Consumer(Protocol):
    """Takes payloads. ``mutates_data`` tells fan-out whether it needs its own copy."""

    mutates_data: bool

    async def consume(self, payload: Payload) -> None:
        """Accept ``payload`` or raise :class:`ConsumeError`."""
        ...


class Fanout:
    """Hands one payload to several consumers, copying only for those that mutate it.

    Read-only consumers may keep a reference (an exporter's queue does), so a mutating
    consumer gets the original only when every consumer mutates and it is the last one.
    """

    def __init__(self, consumers: Sequence[Consumer]) -> None:
        if not consumers:
            raise ValueError("fan-out needs at least one consumer")
        self.consumers = list(consumers)
        self._readonly = [c for c in self.consumers if not c.mutates_data]
        self._mutating = [c for c in self.consumers if c.mutates_data]
        # When every consumer mutates, the last one works on the original.
        self.mutates_data = not self._readonly

    async def consume(self, payload: Payload) -> None:
        errors: list[ConsumeError] = []
        last_gets_original = not self._readonly
        for consumer in self._readonly:
            try:
                await consumer.consume(payload)
            except ConsumeError as exc:
                errors.append(exc)
        for i, consumer in enumerate(self._mutating):
            own = payload if last_gets_original and i == len(self._mutating) - 1 else payload.copy()
            try:
                await consumer.consume(own)
            except ConsumeError as exc:
                errors.append(exc)
        if errors:
            raise combine_errors(errors)


def combine_errors(errors: Sequence[ConsumeError]) -> ConsumeError:
    """One error for several: retryable when any part is, so the client keeps the data."""
    if len(errors) == 1:
        return errors[0]
    retryable = any(e.retryable for e in errors)
    throttled = any(e.throttled for e in errors)
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    message = "; ".join(str(e) for e in errors)
    return ConsumeError(message, retryable=retryable, throttled=throttled, retry_after=max(waits) if waits else None)


def fanout(consumers: Sequence[Consumer]) -> Consumer:
    """The consumer for a list: the single one itself, or a :class:`Fanout`."""
    return consumers[0] if len(consumers) == 1 else Fanout(consumers)
