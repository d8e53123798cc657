"""The health_check extension over real HTTP: before and after ready, paths, bodies, TLS, the service."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from collector.component import Component, ComponentID, CreateSettings, Factory, Host, Kind
from collector.config import parse_config
from collector.configtypes import ComponentConfig
from collector.pdata import Signal
from collector.registry import Registry
from collector.service import Service
from collector.telemetry import Telemetry
from exporters import debug
from extensions import health_check
from extensions.health_check import ExporterFailures, HealthCheck, HealthCheckConfig, go_duration

_UPTIME = re.compile(r"^(\d+h)?(\d+m)?\d+(\.\d+)?(s|ms|µs|ns)$")


def make(telemetry: Telemetry | None = None, **config: Any) -> HealthCheck:
    config.setdefault("endpoint", "127.0.0.1:0")
    settings = CreateSettings(
        ComponentID("health_check"), Kind.EXTENSION, telemetry or Telemetry(), logging.getLogger("test.healthcheck")
    )
    ext = health_check.factory.create(settings=settings, config=HealthCheckConfig.model_validate(config))
    assert isinstance(ext, HealthCheck)
    return ext


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str, str]:
    async with http.get(url, **kwargs) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def test_config_defaults_and_validation() -> None:
    cfg = health_check.factory.default_config()
    assert (cfg.endpoint, cfg.path, cfg.tls, cfg.response_body) == ("localhost:13133", "/", None, None)
    pipeline = cfg.check_collector_pipeline
    assert (pipeline.enabled, pipeline.interval, pipeline.exporter_failure_threshold) == (False, 300.0, 5)
    for raw, message in [
        ({"path": "health"}, "path must start with /"),
        ({"endpoint": ""}, "endpoint must be specified"),
        ({"endpoint": "localhost"}, "must be host:port"),
        ({"endpoint": "localhost:http"}, "invalid port"),
        ({"check_collector_pipeline": {"exporter_failure_threshold": 0}}, "greater than 0"),
        ({"check_collector_pipeline": {"interval": "often"}}, "not a duration"),
        ({"tls": {"cert_file": "c.pem"}}, "key_file"),
    ]:
        with pytest.raises(ValidationError, match=message):
            HealthCheckConfig.model_validate(raw)


async def test_503_until_ready_then_200_then_503_again(http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.healthcheck")
    ext = make()
    await ext.start(Host())
    try:
        assert ext.port and ext.port > 0
        url = f"http://127.0.0.1:{ext.port}/"
        status, ctype, body = await get(http, url)
        assert status == 503 and ctype == "application/json"
        assert json.loads(body) == {"status": "Server not available", "upSince": "0001-01-01T00:00:00Z", "uptime": ""}

        before = time.time()
        ext.ready()
        await asyncio.sleep(0.01)
        status, ctype, body = await get(http, url)
        doc = json.loads(body)
        assert status == 200 and ctype == "application/json"
        assert doc["status"] == "Server available"
        up_since = datetime.fromisoformat(doc["upSince"].replace("Z", "+00:00"))
        assert abs(up_since.timestamp() - before) < 5
        assert _UPTIME.match(doc["uptime"]), doc["uptime"]

        ext.not_ready()
        status, _, body = await get(http, url)
        assert status == 503 and json.loads(body)["status"] == "Server not available"
    finally:
        await ext.shutdown()
    starts = [r.getMessage() for r in caplog.records if "Starting health_check" in r.getMessage()]
    assert starts == [f"Starting health_check extension on http://127.0.0.1:{ext.port}/"]
    # the port is released on shutdown
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, f"http://127.0.0.1:{ext.port}/")


async def test_paths_match_like_go_servemux(http: aiohttp.ClientSession) -> None:
    exact = make(path="/health/status")
    subtree = make(path="/health/")
    await exact.start(Host())
    await subtree.start(Host())
    try:
        exact.ready()
        subtree.ready()
        base = f"http://127.0.0.1:{exact.port}"
        assert (await get(http, base + "/health/status"))[0] == 200
        assert (await get(http, base + "/health/status?verbose=1"))[0] == 200
        for other in ("/", "/health", "/health/status/x", "/metrics"):
            assert (await get(http, base + other))[0] == 404, other
        base = f"http://127.0.0.1:{subtree.port}"
        assert (await get(http, base + "/health/"))[0] == 200
        assert (await get(http, base + "/health/anything"))[0] == 200
        assert (await get(http, base + "/healthz"))[0] == 404
    finally:
        await exact.shutdown()
        await subtree.shutdown()


async def test_response_body_replaces_the_json(http: aiohttp.ClientSession) -> None:
    ext = make(response_body={"healthy": "I'm OK", "unhealthy": "I'm not well"})
    await ext.start(Host())
    try:
        url = f"http://127.0.0.1:{ext.port}/"
        status, _, body = await get(http, url)
        assert (status, body) == (503, "I'm not well")
        ext.ready()
        status, _, body = await get(http, url)
        assert (status, body) == (200, "I'm OK")
    finally:
        await ext.shutdown()


async def test_a_port_in_use_fails_the_start() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        ext = make(endpoint=f"127.0.0.1:{taken.getsockname()[1]}")
        with pytest.raises(OSError, match="failed to bind"):
            await ext.start(Host())
        await ext.shutdown()
    finally:
        taken.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
async def test_tls(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
               "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)
    ext = make(tls={"cert_file": str(cert), "key_file": str(key)})
    await ext.start(Host())
    try:
        ext.ready()
        client = ssl.create_default_context(cafile=str(cert))
        status, _, body = await get(http, f"https://127.0.0.1:{ext.port}/", ssl=client)
        assert status == 200 and json.loads(body)["status"] == "Server available"
        with pytest.raises(aiohttp.ClientError):
            await get(http, f"http://127.0.0.1:{ext.port}/")
    finally:
        await ext.shutdown()


async def test_check_collector_pipeline_turns_500_after_too_many_exporter_failures(http: aiohttp.ClientSession) -> None:
    telemetry = Telemetry()
    ext = make(telemetry, check_collector_pipeline={"enabled": True, "interval": "1m", "exporter_failure_threshold": 1},
               response_body={"healthy": "ok", "unhealthy": "exporters failing"})
    await ext.start(Host())
    try:
        ext.ready()
        url = f"http://127.0.0.1:{ext.port}/"
        assert await get(http, url) == (200, "text/plain; charset=utf-8", "ok")
        failing = telemetry.exporter("otlp/tempo")
        failures = ext.failures
        assert isinstance(failures, ExporterFailures)
        for _ in range(2):
            failing.send_failed(Signal.TRACES, 10)
            failures.sample(time.monotonic())
        assert failures.count() == 2
        assert await get(http, url) == (500, "text/plain; charset=utf-8", "exporters failing")
    finally:
        await ext.shutdown()


def test_exporter_failures_slide_out_of_the_window() -> None:
    telemetry = Telemetry()
    failures = ExporterFailures(telemetry, window=10.0)
    exporter = telemetry.exporter("otlp")
    exporter.send_failed(Signal.LOGS, 1)
    failures.sample(100.0)
    failures.sample(101.0)  # no new failure
    exporter.send_failed(Signal.METRICS, 5)
    failures.sample(105.0)
    assert failures.count() == 2
    failures.sample(110.5)
    assert failures.count() == 1
    failures.sample(115.5)
    assert failures.count() == 0


def test_go_duration() -> None:
    cases = {0: "0s", 999: "999ns", 1_500: "1.5µs", 250_000_000: "250ms", 2_000_000_000: "2s",
             61_500_000_000: "1m1.5s", 3_600_000_000_000: "1h0m0s", 3_723_004_000_000: "1h2m3.004s"}
    assert {n: go_duration(n) for n in cases} == cases


# --- through the real service: the service calls ready() and not_ready() ---------------------


class _GateConfig(ComponentConfig):
    pass


class _Gate(Component):
    """A receiver whose start, and an exporter whose shutdown, wait until the test opens them."""

    mutates_data = False
    start_gate = asyncio.Event()
    stop_gate = asyncio.Event()

    def __init__(self, role: str) -> None:
        self.role = role

    async def start(self, host: Host) -> None:
        if self.role == "receiver":
            await self.start_gate.wait()

    async def shutdown(self) -> None:
        if self.role == "exporter":
            await self.stop_gate.wait()

    async def consume(self, payload: object) -> None:
        pass


async def _poll(http: aiohttp.ClientSession, url: str, want: int) -> int:
    status = -1
    for _ in range(250):
        try:
            status = (await get(http, url))[0]
        except aiohttp.ClientConnectionError:
            status = -1
        if status == want:
            break
        await asyncio.sleep(0.02)
    return status


async def test_the_service_reports_ready_and_stopping(http: aiohttp.ClientSession) -> None:
    _Gate.start_gate, _Gate.stop_gate = asyncio.Event(), asyncio.Event()
    every = frozenset(Signal)
    registry = Registry(
        [
            health_check.factory,
            debug.factory,
            Factory("gate", Kind.RECEIVER, _GateConfig, lambda *, settings, config, consumers: _Gate("receiver"), every),
            Factory("gated", Kind.EXPORTER, _GateConfig, lambda *, settings, config, signals: _Gate("exporter"), every),
        ]
    )
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg = parse_config(
        {
            "receivers": {"gate": None},
            "exporters": {"debug": None, "gated": None},
            "extensions": {"health_check": {"endpoint": f"127.0.0.1:{port}", "path": "/health"}},
            "service": {
                "extensions": ["health_check"],
                "telemetry": {"metrics": {"level": "none"}},
                "pipelines": {"traces": {"receivers": ["gate"], "exporters": ["debug", "gated"]}},
            },
        },
        registry,
    )
    service = Service(cfg, registry=registry)
    run = asyncio.create_task(service.run())
    url = f"http://127.0.0.1:{port}/health"
    try:
        # the extension serves while the receiver is still starting: not ready yet
        assert await _poll(http, url, 503) == 503
        _Gate.start_gate.set()
        assert await _poll(http, url, 200) == 200
        service.stop()
        # shutting down (the exporter is still draining): not ready any more
        assert await _poll(http, url, 503) == 503
        _Gate.stop_gate.set()
        await asyncio.wait_for(run, 10)
        assert await _poll(http, url, -1) == -1  # the server is gone
    finally:
        _Gate.start_gate.set()
        _Gate.stop_gate.set()
        if not run.done():
            service.stop()
            await asyncio.wait_for(run, 10)
