"""The bounded sending queue in front of an exporter, kept in memory.

A queue holds :class:`QueueEntry` objects and measures itself with a *sizer*: ``requests``
(one per payload), ``items`` (spans, data points, log records) or ``bytes`` (serialized size).
An entry's size stays charged to the queue until :meth:`BoundedQueue.done` is called for it, so
requests being exported (or retried) still count against the capacity, as in the stock
collector. :mod:`collector.persistent_queue` keeps the same interface on disk.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from collector.pdata import Payload

SizerName = Literal["requests", "items", "bytes"]
Sizer = Callable[[Payload], int]


def _request_size(_: Payload) -> int:
    return 1


def _items_size(payload: Payload) -> int:
    return payload.items if payload.items >= 0 else payload.refresh_count()


def _bytes_size(payload: Payload) -> int:
    return payload.byte_size()


SIZERS: dict[str, Sizer] = {"requests": _request_size, "items": _items_size, "bytes": _bytes_size}


def item_count(payload: Payload) -> int:
    """Items in ``payload``, counting them if nobody did yet."""
    return _items_size(payload)


class QueueFull(Exception):
    """No room for the entry and the queue does not block on overflow."""


class QueueClosed(Exception):
    """The queue is shutting down and takes nothing more."""


class EntryTooLarge(Exception):
    """The entry alone is larger than the queue's capacity: it can never be queued."""


@dataclass(eq=False)
class QueueEntry:
    """One accepted payload waiting in (or being exported from) a queue.

    ``payload`` is held by the memory queue; the persistent queue leaves it on disk until a
    worker loads it. ``result`` is set when the caller waits for the export's outcome.
    """

    size: int
    items: int
    payload: Payload | None = None
    key: str | None = None
    result: asyncio.Future[None] | None = field(default=None, repr=False)

    def resolve(self, error: BaseException | None) -> None:
        """Report the export's outcome to a caller waiting for it."""
        if self.result is not None and not self.result.done():
            if error is None:
                self.result.set_result(None)
            else:
                self.result.set_exception(error)


class BoundedQueue:
    """Capacity, waiting and ordering shared by the memory and the persistent queue."""

    def __init__(self, capacity: int, sizer: SizerName, *, block_on_overflow: bool = False) -> None:
        self.capacity = capacity
        self.sizer_name = sizer
        self.sizer = SIZERS[sizer]
        self.block_on_overflow = block_on_overflow
        self.size = 0
        # Entries and items accepted and not yet done (queued or in flight), whatever the sizer.
        self.outstanding = 0
        self.pending_items = 0
        self._entries: deque[QueueEntry] = deque()
        # Entries whose caller waits for the export's outcome (wait_for_result).
        self.waiting: set[QueueEntry] = set()
        self._closed = False
        self._drain = True
        self._not_empty = asyncio.Event()
        self._space = asyncio.Event()

    def __len__(self) -> int:
        """Entries waiting for a worker (not counting those in flight)."""
        return len(self._entries)

    @property
    def closed(self) -> bool:
        return self._closed

    async def _reserve(self, size: int) -> None:
        if size > self.capacity:
            raise EntryTooLarge(f"a request of size {size} ({self.sizer_name}) exceeds the queue capacity {self.capacity}")
        while self.size + size > self.capacity:
            if self._closed:
                raise QueueClosed("the sending queue is shutting down")
            if not self.block_on_overflow:
                raise QueueFull("sending queue is full")
            self._space.clear()
            await self._space.wait()
        if self._closed:
            raise QueueClosed("the sending queue is shutting down")
        self.size += size

    def _unreserve(self, size: int) -> None:
        self.size -= size
        self._space.set()

    def _append(self, entry: QueueEntry) -> None:
        self.outstanding += 1
        self.pending_items += entry.items
        self._entries.append(entry)
        self._not_empty.set()

    async def put(self, payload: Payload, *, wait_for_result: bool = False) -> QueueEntry:
        """Queue ``payload``; raises :class:`QueueFull`, :class:`QueueClosed` or :class:`EntryTooLarge`."""
        raise NotImplementedError

    async def get(self, timeout: float | None = None) -> QueueEntry | None:
        """The oldest waiting entry; ``None`` once closed (and drained, when draining).

        Raises ``TimeoutError`` when ``timeout`` seconds pass with nothing to take. Taking an
        entry has no await after the check, so a cancelled ``get`` never loses one.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed and not self._drain:
                return None
            if self._entries:
                return self._entries.popleft()
            if self._closed:
                return None
            self._not_empty.clear()
            if deadline is None:
                await self._not_empty.wait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await self._not_empty.wait()

    async def load(self, entry: QueueEntry) -> Payload:
        """The payload of an entry taken with :meth:`get`."""
        assert entry.payload is not None
        return entry.payload

    async def done(self, entry: QueueEntry, *, remove: bool = True) -> None:
        """The entry's export is over: free its room (and, on disk, delete it when ``remove``)."""
        self.outstanding -= 1
        self.pending_items -= entry.items
        self.waiting.discard(entry)
        self._unreserve(entry.size)

    def fail_waiting(self, error: BaseException) -> None:
        """Answer every caller still waiting for a result with ``error`` (at shutdown)."""
        for entry in self.waiting:
            entry.resolve(error)
        self.waiting.clear()

    def close(self, *, drain: bool) -> None:
        """Take nothing more; with ``drain`` workers still get what is queued."""
        self._closed = True
        self._drain = drain
        self._not_empty.set()
        self._space.set()

    async def release(self) -> None:
        """Free what the queue holds outside memory (files, locks)."""


class MemoryQueue(BoundedQueue):
    """The in-memory sending queue: entries hold a reference to the payload."""

    async def put(self, payload: Payload, *, wait_for_result: bool = False) -> QueueEntry:
        size = self.sizer(payload)
        await self._reserve(size)
        entry = QueueEntry(size, item_count(payload), payload)
        if wait_for_result:
            entry.result = asyncio.get_running_loop().create_future()
            self.waiting.add(entry)
        self._append(entry)
        return entry
