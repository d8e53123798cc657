"""Admission control by bytes in flight, decided before a request is decoded.

A receiver asks :meth:`BytesAdmission.acquire` for the request's size (uncompressed, when
known) before parsing it and holds the admission until the pipeline has answered. Requests
that fit under ``request_limit_mib`` go in at once; the others wait, up to
``waiting_limit_mib`` bytes of them, and beyond that are refused at once with a retryable,
throttling error, so the client backs off and keeps its data. This is the stock collector's
``admission`` block (the otelarrow receiver and the admission limiter extension), including
its order: when room frees up, the most recent waiter goes first (LIFO), so under overload
fresh requests are served rather than ones whose clients may already have given up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from pydantic import Field

from collector.configtypes import ComponentConfig
from collector.consumer import PermanentError, RetryableError

MIB = 1024 * 1024


class AdmissionConfig(ComponentConfig):
    """``admission``: ``request_limit_mib`` 0 turns admission control off."""

    request_limit_mib: int = Field(default=128, ge=0)
    waiting_limit_mib: int = Field(default=32, ge=0)


class MemoryPressure:
    """The service-wide "memory is over the limit" signal, set by ``memory_limiter`` processors.

    Receivers consult it before decoding a request, so that while a memory limiter refuses
    data the refused requests cost no parsing (and none of the memory that parsing takes).
    """

    def __init__(self) -> None:
        self._refusing: dict[str, float] = {}

    def set(self, owner: str, refusing: bool, retry_after: float) -> None:
        """Record whether limiter ``owner`` refuses now, and the delay it asks of clients."""
        if refusing:
            self._refusing[owner] = retry_after
        else:
            self._refusing.pop(owner, None)

    @property
    def refusing(self) -> bool:
        return bool(self._refusing)

    def check(self) -> None:
        """Raise the throttling refusal while any limiter refuses."""
        if self._refusing:
            raise RetryableError(
                "data refused due to high memory usage", throttled=True, retry_after=max(self._refusing.values())
            )


class _Waiter:
    __slots__ = ("admitted", "future", "n")

    def __init__(self, n: int, future: asyncio.Future[None]) -> None:
        self.n = n
        self.future = future
        self.admitted = False


class BytesAdmission:
    """A semaphore counted in bytes, with a bounded number of bytes allowed to wait."""

    def __init__(
        self, request_limit_mib: float, waiting_limit_mib: float, pressure: MemoryPressure | None = None
    ) -> None:
        self.pressure = pressure
        self.request_limit = int(request_limit_mib * MIB)
        self.waiting_limit = int(waiting_limit_mib * MIB)
        self.in_flight_bytes = 0
        self.waiting_bytes = 0
        self._waiters: deque[_Waiter] = deque()

    @classmethod
    def from_config(cls, config: AdmissionConfig, pressure: MemoryPressure | None = None) -> BytesAdmission:
        """The admission controller a receiver's ``admission`` block describes."""
        return cls(config.request_limit_mib, config.waiting_limit_mib, pressure)

    @property
    def enabled(self) -> bool:
        """False when ``request_limit_mib`` is 0: everything is admitted at once."""
        return self.request_limit > 0

    def acquire(self, n_bytes: int) -> _Admission:
        """``async with admission.acquire(n):`` holds ``n`` bytes of the limit for the block.

        Entering waits while the bytes in flight plus ``n`` exceed the request limit; it raises
        :class:`RetryableError` (throttled) when the waiting bytes would exceed the waiting
        limit, and :class:`PermanentError` when ``n`` alone exceeds the request limit.
        """
        return _Admission(self, max(0, n_bytes))

    async def _acquire(self, n: int) -> None:
        if self.pressure is not None:
            self.pressure.check()
        if not self.enabled:
            return
        if n > self.request_limit:
            raise PermanentError(f"rejecting request, request is too large ({n} bytes)")
        if self.in_flight_bytes + n <= self.request_limit:
            self.in_flight_bytes += n
            return
        if self.waiting_bytes + n > self.waiting_limit:
            raise RetryableError("rejecting request, too much pending data", throttled=True)
        waiter = _Waiter(n, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self.waiting_bytes += n
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.admitted:
                self._release(n)  # admitted as it was cancelled: nobody else will release it
            else:
                self._waiters.remove(waiter)
                self.waiting_bytes -= n
                self._admit_waiters()  # a smaller waiter behind it may fit now
            raise

    def _release(self, n: int) -> None:
        if not self.enabled:
            return
        self.in_flight_bytes -= n
        self._admit_waiters()

    def _admit_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters[-1]  # newest first
            if self.in_flight_bytes + waiter.n > self.request_limit:
                return
            self._waiters.pop()
            self.waiting_bytes -= waiter.n
            self.in_flight_bytes += waiter.n
            waiter.admitted = True
            waiter.future.set_result(None)


class _Admission:
    """The async context manager :meth:`BytesAdmission.acquire` returns."""

    __slots__ = ("_admission", "_n")

    def __init__(self, admission: BytesAdmission, n: int) -> None:
        self._admission = admission
        self._n = n

    async def __aenter__(self) -> None:
        await self._admission._acquire(self._n)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._admission._release(self._n)
