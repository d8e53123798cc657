"""``memory_limiter``: refuses data while the process uses too much memory, as the stock one.

A background task samples the process's resident memory (RSS) every ``check_interval``.
At or above the soft limit (``limit - spike``) every ``consume`` is refused with a retryable,
throttling error, so receivers answer RESOURCE_EXHAUSTED / 429 and clients keep the data;
above the hard limit a garbage collection is forced too (at most every
``min_gc_interval_when_hard_limited``; above the soft limit only, every
``min_gc_interval_when_soft_limited``). Data is accepted again once a sample is below the
soft limit.

Processors of the same id in several pipelines share one limiter, as in the stock collector:
one sampling task, one set of log lines.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
import weakref
from collections.abc import Callable

from pydantic import Field, model_validator

from collector.admission import MemoryPressure
from collector.component import Component, ComponentID, CreateSettings, Factory, Host, Kind, ProcessorBase
from collector.configtypes import ComponentConfig, Duration
from collector.consumer import Consumer, RetryableError
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry, process_rss_bytes

MIB = 1024 * 1024
# What cgroup v1 reports for "no limit" (and anything near it means the same).
_UNLIMITED = 1 << 62


class MemoryLimiterConfig(ComponentConfig):
    """The stock memory_limiter keys. ``check_interval`` and one of the limits are required."""

    check_interval: Duration
    limit_mib: int = Field(default=0, ge=0)
    spike_limit_mib: int = Field(default=0, ge=0)
    limit_percentage: int = Field(default=0, ge=0)
    spike_limit_percentage: int = Field(default=0, ge=0)
    min_gc_interval_when_soft_limited: Duration = 10.0
    min_gc_interval_when_hard_limited: Duration = 0.0

    @model_validator(mode="after")
    def _check(self) -> MemoryLimiterConfig:
        if self.check_interval <= 0:
            raise ValueError("'check_interval' must be greater than zero")
        if self.min_gc_interval_when_soft_limited < self.min_gc_interval_when_hard_limited:
            raise ValueError(
                "'min_gc_interval_when_soft_limited' should be larger than 'min_gc_interval_when_hard_limited'"
            )
        if self.limit_mib == 0 and self.limit_percentage == 0:
            raise ValueError("'limit_mib' or 'limit_percentage' must be greater than zero")
        if self.limit_percentage > 100 or self.spike_limit_percentage > 100:
            raise ValueError(
                "'limit_percentage' and 'spike_limit_percentage' must be greater than zero and less than or equal to hundred"
            )
        if self.limit_mib > 0 and self.limit_mib <= self.spike_limit_mib:
            raise ValueError("'spike_limit_mib' must be smaller than 'limit_mib'")
        if self.limit_percentage > 0 and self.limit_percentage <= self.spike_limit_percentage:
            raise ValueError("'spike_limit_percentage' must be smaller than 'limit_percentage'")
        return self


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _UNLIMITED else value


def _cgroup_limit(proc: str) -> int | None:
    """The smallest memory limit on this process's cgroup and its ancestors (v2, then v1)."""
    try:
        with open(os.path.join(proc, "self", "cgroup")) as f:
            memberships = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
        with open(os.path.join(proc, "self", "mountinfo")) as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    limits: list[int] = []
    for fields in mounts:
        if "-" not in fields:
            continue
        sep = fields.index("-")
        fstype, root, mountpoint = fields[sep + 1], fields[3], fields[4]
        options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        if fstype == "cgroup2":
            paths, filename = [p for h, c, p in memberships if h == "0" and c == ""], "memory.max"
        elif fstype == "cgroup" and "memory" in options:
            paths = [p for _, c, p in memberships if "memory" in c.split(",")]
            filename = "memory.limit_in_bytes"
        else:
            continue
        for path in paths:
            # The mount shows the hierarchy from `root` down: the process's place relative to it.
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            parts = [] if rel == "." else [p for p in rel.split("/") if p]
            for depth in range(len(parts), -1, -1):
                value = _read_int(os.path.join(mountpoint, *parts[:depth], filename))
                if value is not None:
                    limits.append(value)
    return min(limits) if limits else None


def total_memory_bytes(proc: str = "/proc") -> int:
    """Memory available to the process: its cgroup limit if any, else the machine's total.

    Raises ``RuntimeError`` when neither can be read.
    """
    limit = _cgroup_limit(proc)
    if limit is not None:
        return limit
    try:
        with open(os.path.join(proc, "meminfo")) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    raise RuntimeError("cannot read the total memory; use the fixed setting limit_mib")


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so that RSS reflects what a GC freed."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


class MemoryLimiter:
    """Samples memory usage and decides whether data must be refused.

    ``read_usage`` (bytes in use; the process RSS by default), ``total_memory``, ``run_gc``
    and ``clock`` may be given other functions, for a test or another measure of usage.
    """

    def __init__(
        self,
        config: MemoryLimiterConfig,
        logger: logging.Logger,
        *,
        read_usage: Callable[[], float] = process_rss_bytes,
        total_memory: Callable[[], int] = total_memory_bytes,
        run_gc: Callable[[], object] = gc.collect,
        clock: Callable[[], float] = time.monotonic,
        pressure: MemoryPressure | None = None,
        owner: str = "memory_limiter",
    ) -> None:
        self.config = config
        self._pressure = pressure
        self._owner = owner
        self._log = logger
        self._read_usage = read_usage
        self._run_gc = run_gc
        self._clock = clock
        if config.limit_mib:
            limit, spike = config.limit_mib * MIB, config.spike_limit_mib * MIB
        else:
            total = total_memory()
            limit = config.limit_percentage * total // 100
            spike = config.spike_limit_percentage * total // 100
            logger.info(
                "Using percentage memory limiter: total_memory_mib=%d limit_percentage=%d spike_limit_percentage=%d",
                total // MIB,
                config.limit_percentage,
                config.spike_limit_percentage,
            )
        self.hard_limit = limit
        # Without a spike limit, 20% of the limit, as the stock collector.
        self.soft_limit = limit - (spike or limit // 5)
        logger.info(
            "Memory limiter configured: limit_mib=%d spike_limit_mib=%d check_interval=%ss",
            self.hard_limit // MIB,
            (self.hard_limit - self.soft_limit) // MIB,
            config.check_interval,
        )
        self.must_refuse = False
        self._last_gc = clock()
        self._task: asyncio.Task[None] | None = None
        self._users = 0

    async def start(self) -> None:
        """Take a first sample and start sampling (once, however many processors share it)."""
        self._users += 1
        if self._users == 1:
            self.check()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def shutdown(self) -> None:
        """Stop sampling when the last processor sharing this limiter shuts down."""
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            try:
                self.check()
            except Exception:
                self._log.exception("memory check failed")

    def _gc(self) -> float:
        self._run_gc()
        _release_free_memory()
        self._last_gc = self._clock()
        usage = self._read_usage()
        self._log.info("Memory usage after GC: cur_mem_mib=%d", usage // MIB)
        return usage

    def check(self) -> None:
        """Sample usage once and update :attr:`must_refuse`, forcing a GC when over a limit."""
        usage = self._read_usage()
        if usage < self.soft_limit:
            if self.must_refuse:
                self._log.info(
                    "Memory usage back within limits. Resuming normal operation: cur_mem_mib=%d", usage // MIB
                )
            self._set(False)
            return
        since_gc = self._clock() - self._last_gc
        if usage >= self.hard_limit:
            if since_gc > self.config.min_gc_interval_when_hard_limited:
                self._log.warning("Memory usage is above hard limit. Forcing a GC: cur_mem_mib=%d", usage // MIB)
                usage = self._gc()
        elif since_gc > self.config.min_gc_interval_when_soft_limited:
            self._log.info("Memory usage is above soft limit. Forcing a GC: cur_mem_mib=%d", usage // MIB)
            usage = self._gc()
        above = usage >= self.soft_limit
        if above and not self.must_refuse:
            self._log.warning("Memory usage is above soft limit. Refusing data: cur_mem_mib=%d", usage // MIB)
        elif not above and self.must_refuse:
            self._log.info("Memory usage back within limits. Resuming normal operation: cur_mem_mib=%d", usage // MIB)
        self._set(above)

    def _set(self, refusing: bool) -> None:
        self.must_refuse = refusing
        if self._pressure is not None:
            # Receivers refuse before decoding while this is set.
            self._pressure.set(self._owner, refusing, max(self.config.check_interval, 1.0))


# One limiter per processor id and service (keyed by the service's Telemetry).
_shared: weakref.WeakKeyDictionary[Telemetry, dict[ComponentID, MemoryLimiter]] = weakref.WeakKeyDictionary()


class MemoryLimiterProcessor(ProcessorBase):
    """Passes data on unchanged while memory allows, refuses it (retryable) otherwise."""

    def __init__(
        self,
        settings: CreateSettings,
        config: MemoryLimiterConfig,
        signal: Signal,
        next_consumer: Consumer,
        limiter: MemoryLimiter | None = None,
    ) -> None:
        super().__init__(settings, signal, next_consumer)
        self.limiter = limiter or MemoryLimiter(config, settings.logger)
        self._metrics = settings.telemetry.processor(str(settings.id), signal)
        self._retry_after = max(config.check_interval, 1.0)
        # It hands the payload itself on: it mutates whatever the next consumer mutates.
        self.mutates_data = next_consumer.mutates_data

    async def start(self, host: Host) -> None:
        await self.limiter.start()

    async def shutdown(self) -> None:
        await self.limiter.shutdown()

    async def consume(self, payload: Payload) -> None:
        """Refuse ``payload`` while memory is over the soft limit, else hand it on."""
        self._metrics.incoming(payload.items)
        if self.limiter.must_refuse:
            raise RetryableError("data refused due to high memory usage", throttled=True, retry_after=self._retry_after)
        self._metrics.outgoing(payload.items)
        await self.next.consume(payload)


def _create(
    *, settings: CreateSettings, config: MemoryLimiterConfig, signal: Signal, next_consumer: Consumer
) -> Component:
    by_id = _shared.setdefault(settings.telemetry, {})
    limiter = by_id.get(settings.id)
    if limiter is None:
        limiter = by_id[settings.id] = MemoryLimiter(
            config, settings.logger, pressure=settings.memory, owner=str(settings.id)
        )
    return MemoryLimiterProcessor(settings, config, signal, next_consumer, limiter)


factory = Factory(
    type="memory_limiter",
    kind=Kind.PROCESSOR,
    config_class=MemoryLimiterConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="beta",
    description="refuses data (retryable) while the process's memory is above its limits",
)
