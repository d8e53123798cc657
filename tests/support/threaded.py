"""A base for the test servers: ``async with`` in async tests, or a thread of their own
(with its own event loop) for synchronous tests that drive the collector as a subprocess."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self


class ThreadedServer:
    """Subclasses implement ``start()`` and ``stop()``; this runs them here or in a thread."""

    thread_name = "test-server"
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _in_thread(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start_in_thread(self) -> None:
        """Serve from a background thread with its own event loop (for synchronous tests)."""
        if self._thread is None:
            ready = threading.Event()

            def run() -> None:
                self._loop = asyncio.new_event_loop()
                self._loop.call_soon(ready.set)
                self._loop.run_forever()
                self._loop.close()

            self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
            self._thread.start()
            ready.wait(10)
        self._in_thread(self.start())

    def stop_in_thread(self, *, keep_thread: bool = False) -> None:
        """Stop serving; ``keep_thread`` to :meth:`start_in_thread` again later (an outage)."""
        if self._thread is None:
            return
        self._in_thread(self.stop())
        if not keep_thread:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
            self._loop = None
