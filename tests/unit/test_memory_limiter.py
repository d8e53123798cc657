"""The memory_limiter processor: stock config and validation, refusing above the soft limit on
the real RSS, forced GCs, recovery, and the total memory from cgroups or /proc/meminfo."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.config import parse_config
from collector.confmap import ConfigError, load_sources
from collector.consumer import RetryableError
from collector.graph import build_graph
from collector.pdata import Payload, Signal
from collector.registry import Registry
from collector.telemetry import Telemetry, process_rss_bytes
from processors.memory_limiter import (
    MIB,
    MemoryLimiter,
    MemoryLimiterConfig,
    MemoryLimiterProcessor,
    total_memory_bytes,
)
from processors.memory_limiter import factory as ml_factory
from tests.support.components import Sink, factories
from tests.unit.test_split import trace_request

TESTDATA = Path(__file__).parent / "testdata"
LOG = logging.getLogger("appguard.processor.memory_limiter")


def registry() -> Registry:
    return Registry([*factories(), ml_factory])


def payload() -> Payload:
    return Payload.from_bytes(Signal.TRACES, trace_request({"svc": {"s": 3}}).SerializeToString())


class Usage:
    """A settable memory reading, given to the limiter in place of the process RSS."""

    def __init__(self, mib: float) -> None:
        self.mib = mib

    def __call__(self) -> float:
        return self.mib * MIB


class GCCounter:
    def __init__(self, usage: Usage | None = None, after_mib: float | None = None) -> None:
        self.calls = 0
        self.usage, self.after_mib = usage, after_mib

    def __call__(self) -> int:
        self.calls += 1
        if self.usage is not None and self.after_mib is not None:
            self.usage.mib = self.after_mib  # what the collection freed
        return 0


def processor(
    config: MemoryLimiterConfig, limiter: MemoryLimiter | None = None, telemetry: Telemetry | None = None
) -> tuple[MemoryLimiterProcessor, Sink]:
    sink = Sink()
    settings = CreateSettings(ComponentID("memory_limiter"), Kind.PROCESSOR, telemetry or Telemetry(), LOG)
    return MemoryLimiterProcessor(settings, config, Signal.TRACES, sink, limiter), sink


def counted(p: MemoryLimiterProcessor, name: str) -> float:
    labels = {"processor": "memory_limiter", "otel_signal": "traces"}
    return p.settings.telemetry.registry.get_sample_value(name, labels) or 0.0


def test_config_from_yaml() -> None:
    cfg = parse_config(load_sources([str(TESTDATA / "memory_limiter_config.yaml")]), registry())
    p = {str(k): v for k, v in cfg.processors.items()}
    assert p["memory_limiter"] == MemoryLimiterConfig(check_interval=5, limit_mib=4000, spike_limit_mib=500)
    assert p["memory_limiter"].min_gc_interval_when_soft_limited == 10.0  # stock defaults
    assert p["memory_limiter"].min_gc_interval_when_hard_limited == 0.0
    assert p["memory_limiter/percentage"] == MemoryLimiterConfig(
        check_interval=1, limit_percentage=80, spike_limit_percentage=15
    )
    gc_cfg = p["memory_limiter/gc"]
    assert isinstance(gc_cfg, MemoryLimiterConfig)
    assert gc_cfg.check_interval == pytest.approx(0.1)
    assert (gc_cfg.min_gc_interval_when_soft_limited, gc_cfg.min_gc_interval_when_hard_limited) == (20.0, 5.0)


def test_invalid_config_names_each_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(load_sources([str(TESTDATA / "memory_limiter_invalid.yaml")]), registry())
    msg = str(info.value)
    for line in (
        "processors.memory_limiter/empty.check_interval: required key is missing",
        "processors.memory_limiter/zero_interval: 'check_interval' must be greater than zero",
        "processors.memory_limiter/no_limit: 'limit_mib' or 'limit_percentage' must be greater than zero",
        "processors.memory_limiter/spike_not_below_limit: 'spike_limit_mib' must be smaller than 'limit_mib'",
        "processors.memory_limiter/percentage_over_100: 'limit_percentage' and 'spike_limit_percentage' must be",
        "processors.memory_limiter/spike_percentage_not_below: 'spike_limit_percentage' must be smaller",
        "processors.memory_limiter/gc_intervals: 'min_gc_interval_when_soft_limited' should be larger",
        "processors.memory_limiter/negative.limit_mib:",
        "processors.memory_limiter/ballast.ballast_size_mib: unknown key",
    ):
        assert line in msg


def test_limits_from_mib_and_percentages() -> None:
    fixed = MemoryLimiter(MemoryLimiterConfig(check_interval=1, limit_mib=4000, spike_limit_mib=500), LOG)
    assert (fixed.hard_limit, fixed.soft_limit) == (4000 * MIB, 3500 * MIB)
    default_spike = MemoryLimiter(MemoryLimiterConfig(check_interval=1, limit_mib=4000), LOG)
    assert default_spike.soft_limit == 3200 * MIB  # spike defaults to 20% of the limit
    cfg = MemoryLimiterConfig(check_interval=1, limit_percentage=80, spike_limit_percentage=15)
    pct = MemoryLimiter(cfg, LOG, total_memory=lambda: 1000 * MIB)
    assert (pct.hard_limit, pct.soft_limit) == (800 * MIB, 650 * MIB)
    both = MemoryLimiter(
        MemoryLimiterConfig(check_interval=1, limit_mib=100, limit_percentage=50), LOG, total_memory=lambda: 10**12
    )
    assert both.hard_limit == 100 * MIB  # limit_mib takes precedence


async def test_refuses_when_the_process_is_above_the_limit() -> None:
    assert process_rss_bytes() > 2 * MIB  # a Python process always is above 2 MiB
    p, sink = processor(MemoryLimiterConfig(check_interval=0.05, limit_mib=2))
    await p.start(Host())
    try:
        assert p.limiter.must_refuse
        data = payload()
        with pytest.raises(RetryableError) as info:
            await p.consume(data)
        assert info.value.throttled and info.value.retry_after == 1.0
        assert "high memory usage" in str(info.value)
        assert not sink.got
        assert counted(p, "otelcol_processor_incoming_items_total") == 3
        assert counted(p, "otelcol_processor_outgoing_items_total") == 0
    finally:
        await p.shutdown()


async def test_accepts_below_the_limit() -> None:
    p, sink = processor(MemoryLimiterConfig(check_interval=1, limit_mib=1_000_000))
    await p.start(Host())
    try:
        data = payload()
        await p.consume(data)
        assert sink.got == [data] and sink.got[0] is data
        assert counted(p, "otelcol_processor_outgoing_items_total") == 3
    finally:
        await p.shutdown()


async def test_recovers_by_itself_when_usage_drops(caplog: pytest.LogCaptureFixture) -> None:
    usage = Usage(50)
    cfg = MemoryLimiterConfig(check_interval=0.01, limit_mib=100, spike_limit_mib=20)
    limiter = MemoryLimiter(cfg, LOG, read_usage=usage, run_gc=GCCounter())
    p, sink = processor(cfg, limiter)
    caplog.set_level(logging.INFO, logger=LOG.name)
    await p.start(Host())
    try:
        await p.consume(payload())
        usage.mib = 85  # above the soft limit (80)
        await wait_for(lambda: limiter.must_refuse)
        with pytest.raises(RetryableError):
            await p.consume(payload())
        assert "Refusing data" in caplog.text
        usage.mib = 60
        await wait_for(lambda: not limiter.must_refuse)
        await p.consume(payload())
        assert "Resuming normal operation" in caplog.text
        assert len(sink.got) == 2
    finally:
        await p.shutdown()
    assert limiter._task is None


async def wait_for(condition: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def test_gc_above_hard_limit_and_rate_limited_above_soft_limit() -> None:
    now = [1000.0]
    usage = Usage(120)
    run_gc = GCCounter()
    cfg = MemoryLimiterConfig(
        check_interval=1,
        limit_mib=100,
        spike_limit_mib=20,
        min_gc_interval_when_soft_limited=10,
        min_gc_interval_when_hard_limited=2,
    )
    limiter = MemoryLimiter(cfg, LOG, read_usage=usage, run_gc=run_gc, clock=lambda: now[0])
    limiter.check()
    assert run_gc.calls == 0  # the last GC counts from creation, as in the stock collector
    now[0] += 3
    limiter.check()
    assert run_gc.calls == 1 and limiter.must_refuse
    now[0] += 1
    limiter.check()
    assert run_gc.calls == 1  # not again within min_gc_interval_when_hard_limited
    usage.mib = 90  # soft limited only: GCs at most every 10s
    now[0] += 5
    limiter.check()
    assert run_gc.calls == 1 and limiter.must_refuse
    now[0] += 6
    limiter.check()
    assert run_gc.calls == 2


def test_a_gc_that_frees_enough_ends_the_refusal_at_once() -> None:
    usage = Usage(150)
    run_gc = GCCounter(usage, after_mib=40)
    cfg = MemoryLimiterConfig(check_interval=1, limit_mib=100, min_gc_interval_when_soft_limited=0)
    limiter = MemoryLimiter(cfg, LOG, read_usage=usage, run_gc=run_gc)
    limiter.check()
    assert run_gc.calls == 1 and not limiter.must_refuse


async def test_pipelines_share_one_limiter_per_id() -> None:
    cfg = parse_config(
        {
            "receivers": {"testrecv": None},
            "processors": {"memory_limiter": {"check_interval": "1s", "limit_mib": 1_000_000}},
            "exporters": {"testsink": None, "testsink/2": None},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["testrecv"], "processors": ["memory_limiter"], "exporters": ["testsink"]},
                    "logs": {"receivers": ["testrecv"], "processors": ["memory_limiter"], "exporters": ["testsink/2"]},
                }
            },
        },
        registry(),
    )
    graph = build_graph(cfg, Telemetry(), registry())
    procs = [c for _, _, c in graph.processors]
    assert len(procs) == 2
    assert isinstance(procs[0], MemoryLimiterProcessor) and isinstance(procs[1], MemoryLimiterProcessor)
    assert procs[0].limiter is procs[1].limiter
    for proc in procs:
        await proc.start(Host())
    await procs[0].shutdown()
    assert procs[1].limiter._task is not None  # still sampling for the other pipeline
    await procs[1].shutdown()
    assert procs[1].limiter._task is None
    other = build_graph(cfg, Telemetry(), registry())  # another service: its own limiter
    assert other.processors[0][2].limiter is not procs[0].limiter  # type: ignore[attr-defined]


def test_mutates_what_the_next_consumer_mutates() -> None:
    cfg = MemoryLimiterConfig(check_interval=1, limit_mib=100)
    p, _ = processor(cfg)
    assert p.mutates_data is False

    class Mutating(Sink):
        mutates_data = True

    settings = CreateSettings(ComponentID("memory_limiter"), Kind.PROCESSOR, Telemetry(), LOG)
    assert MemoryLimiterProcessor(settings, cfg, Signal.TRACES, Mutating()).mutates_data is True


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_total_memory_from_cgroup_v2(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    _write(proc / "self" / "cgroup", "0::/kubepods/pod1/ctr\n")
    _write(proc / "self" / "mountinfo", f"30 22 0:26 / {cg} rw,nosuid - cgroup2 cgroup2 rw\n")
    _write(proc / "meminfo", "MemTotal:       16384000 kB\n")
    _write(cg / "kubepods" / "pod1" / "ctr" / "memory.max", "max\n")
    _write(cg / "kubepods" / "pod1" / "memory.max", f"{512 * MIB}\n")
    assert total_memory_bytes(str(proc)) == 512 * MIB  # the pod's limit applies to the container


def test_total_memory_from_cgroup_v1(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "memory"
    _write(proc / "self" / "cgroup", "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    _write(proc / "self" / "mountinfo", f"35 31 0:32 /docker/abc {cg} rw,relatime - cgroup cgroup rw,memory\n")
    _write(proc / "meminfo", "MemTotal:       16384000 kB\n")
    _write(cg / "memory.limit_in_bytes", f"{256 * MIB}\n")
    assert total_memory_bytes(str(proc)) == 256 * MIB


def test_total_memory_without_a_cgroup_limit_is_meminfo(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "memory"
    _write(proc / "self" / "cgroup", "4:memory:/elsewhere\n")
    _write(proc / "self" / "mountinfo", f"35 31 0:32 / {cg} rw,relatime - cgroup cgroup rw,memory\n")
    _write(cg / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "unlimited"
    _write(proc / "meminfo", "MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    assert total_memory_bytes(str(proc)) == 16384000 * 1024
    with pytest.raises(RuntimeError, match="limit_mib"):
        total_memory_bytes(str(tmp_path / "nothing"))


def test_total_memory_of_this_machine() -> None:
    assert total_memory_bytes() > 64 * MIB
