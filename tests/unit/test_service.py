"""Service lifecycle: start order, reverse shutdown, the grace period, own metrics."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from collector.component import Component, Factory, Kind
from collector.config import parse_config
from collector.configtypes import ComponentConfig
from collector.pdata import Signal
from collector.registry import Registry
from collector.service import Service
from tests.support.net import free_port


class _Cfg(ComponentConfig):
    slow_shutdown: float = 0.0


def _registry(events: list[str]) -> Registry:
    class Rec(Component):
        mutates_data = False

        def __init__(self, label: str, cfg: _Cfg) -> None:
            self.label, self.cfg = label, cfg

        async def start(self, host: object) -> None:
            events.append(f"start {self.label}")

        async def shutdown(self) -> None:
            await asyncio.sleep(self.cfg.slow_shutdown)
            events.append(f"stop {self.label}")

        async def consume(self, payload: object) -> None:
            pass

    every = frozenset(Signal)
    return Registry(
        [
            Factory("r", Kind.RECEIVER, _Cfg, lambda *, settings, config, consumers: Rec(f"receiver {settings.id}", config), every),
            Factory("p", Kind.PROCESSOR, _Cfg, lambda *, settings, config, signal, next_consumer: Rec(f"processor {settings.id}", config), every),
            Factory("e", Kind.EXPORTER, _Cfg, lambda *, settings, config, signals: Rec(f"exporter {settings.id}", config), every),
            Factory("x", Kind.EXTENSION, _Cfg, lambda *, settings, config: Rec(f"extension {settings.id}", config)),
        ]
    )


def _config(registry: Registry, metrics_port: int, slow: float = 0.0, timeout: str = "30s"):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "receivers": {"r": None},
            "processors": {"p/1": None, "p/2": None},
            "exporters": {"e": {"slow_shutdown": slow}},
            "extensions": {"x": None},
            "service": {
                "extensions": ["x"],
                "shutdown_timeout": timeout,
                "pipelines": {"logs": {"receivers": ["r"], "processors": ["p/1", "p/2"], "exporters": ["e"]}},
                "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
            },
        },
        registry,
    )


async def test_start_and_stop_order() -> None:
    events: list[str] = []
    reg = _registry(events)
    port = free_port()
    svc = Service(_config(reg, port), registry=reg)
    run = asyncio.create_task(svc.run())
    for _ in range(100):
        if svc.ready:
            break
        await asyncio.sleep(0.02)
    assert svc.ready
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    assert "otelcol_process_uptime" in body
    svc.stop()
    await run
    assert events == [
        "start extension x",
        "start exporter e",
        "start processor p/2",
        "start processor p/1",
        "start receiver r",
        "stop receiver r",
        "stop processor p/1",
        "stop processor p/2",
        "stop exporter e",
        "stop extension x",
    ]


async def test_shutdown_is_bounded_by_the_grace_period(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    reg = _registry(events)
    svc = Service(_config(reg, free_port(), slow=30.0, timeout="200ms"), registry=reg)
    await svc.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await svc.shutdown()
    assert loop.time() - t0 < 10  # bounded (generous: only that it did not wait 30 s)
    assert "stop exporter e" not in events
    assert any("did not finish within" in r.getMessage() for r in caplog.records)
