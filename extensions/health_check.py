"""``health_check``: an HTTP endpoint that answers 200 once the service is ready, 503 otherwise.

Keys as the stock contrib extension has them: ``endpoint`` (``localhost:13133``), ``tls``,
``path`` (``/``), ``response_body`` (``healthy`` / ``unhealthy``, replacing the JSON status)
and the deprecated ``check_collector_pipeline`` (``enabled``, ``interval``,
``exporter_failure_threshold``).

The service calls :meth:`HealthCheck.ready` when every component has started and
:meth:`HealthCheck.not_ready` when it begins to shut down. The body is the stock one:
``{"status":"Server available","upSince":"<RFC 3339>","uptime":"<Go duration>"}``.
Paths are matched as Go's ``ServeMux`` matches them: a path ending in ``/`` serves its whole
subtree (so the default ``/`` answers on every path), any other path only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import deque
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field, field_validator

from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration, TLSServerConfig
from collector.netconfig import bind_sockets, server_ssl_context, split_host_port
from collector.pdata import Signal
from collector.telemetry import Telemetry


class ResponseBodyConfig(ComponentConfig):
    """``response_body``: fixed bodies instead of the JSON status."""

    healthy: str = ""
    unhealthy: str = ""


class CheckCollectorPipelineConfig(ComponentConfig):
    """``check_collector_pipeline`` (deprecated in the stock extension)."""

    enabled: bool = False
    interval: Duration = 300.0
    exporter_failure_threshold: int = Field(default=5, gt=0)


class HealthCheckConfig(ComponentConfig):
    """The health check extension's settings, with the stock defaults."""

    endpoint: str = "localhost:13133"
    tls: TLSServerConfig | None = None
    path: str = "/"
    response_body: ResponseBodyConfig | None = None
    check_collector_pipeline: CheckCollectorPipelineConfig = Field(
        default_factory=lambda: CheckCollectorPipelineConfig()
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value:
            raise ValueError("endpoint must be specified")
        split_host_port(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must start with /")
        return value


def go_duration(nanos: int) -> str:
    """A duration the way Go's ``time.Duration.String`` writes it: ``1h2m3.5s``, ``250ms``, ``0s``."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    u = abs(nanos)
    if u < 1_000_000_000:
        for unit, scale in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if u >= scale:
                return sign + _fraction(u, scale) + unit
    seconds, frac = divmod(u, 1_000_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = _fraction(secs * 1_000_000_000 + frac, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, scale: int) -> str:
    whole, frac = divmod(value, scale)
    if not frac:
        return str(whole)
    digits = len(str(scale)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")


def rfc3339(unix_nanos: int) -> str:
    """A wall-clock time in RFC 3339 with nanoseconds, in local time, as Go's JSON writes it."""
    seconds, nanos = divmod(unix_nanos, 1_000_000_000)
    local = datetime.fromtimestamp(seconds, UTC).astimezone()
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    offset = local.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class ExporterFailures:
    """Seconds with exporter send failures within a sliding window, for ``check_collector_pipeline``.

    Samples the ``otelcol_exporter_send_failed_*`` counters once per ``tick``; a second in
    which they grew counts as one failure.
    """

    def __init__(self, telemetry: Telemetry, window: float, tick: float = 1.0) -> None:
        self.telemetry = telemetry
        self.window = window
        self.tick = tick
        self._last = self._total()
        self.failures: deque[float] = deque()

    def _total(self) -> float:
        total = 0.0
        for signal in Signal:
            for family in self.telemetry.exporter_send_failed[signal].collect():
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        return total

    def sample(self, now: float) -> None:
        """Record whether exporters failed since the previous sample."""
        total = self._total()
        if total > self._last:
            self.failures.append(now)
        self._last = total
        while self.failures and self.failures[0] <= now - self.window:
            self.failures.popleft()

    def count(self) -> int:
        """Failures within the window, as of the last sample."""
        return len(self.failures)

    async def run(self) -> None:
        """Sample every ``tick`` until cancelled."""
        while True:
            await asyncio.sleep(self.tick)
            self.sample(time.monotonic())


class HealthCheck(Component):
    """The HTTP server and the ready/not-ready state it reports."""

    def __init__(self, settings: CreateSettings, config: HealthCheckConfig) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self._up_since_ns: int | None = None  # wall clock, for upSince
        self._up_since_mono: int = 0  # monotonic, for uptime
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []
        self.failures: ExporterFailures | None = None  # with check_collector_pipeline
        self._sampler: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def is_ready(self) -> bool:
        """Whether the service has reported itself ready (and not since stopping)."""
        return self._up_since_ns is not None

    def ready(self) -> None:
        """Called by the service once every component has started."""
        if self._up_since_ns is None:
            self._up_since_ns = time.time_ns()
            self._up_since_mono = time.monotonic_ns()
            self.logger.info("Health Check state change: ready")

    def not_ready(self) -> None:
        """Called by the service when it begins to shut down."""
        if self._up_since_ns is not None:
            self._up_since_ns = None
            self.logger.info("Health Check state change: unavailable")

    def _matches(self, path: str) -> bool:
        # Go's ServeMux: a pattern ending in "/" is a subtree, any other pattern is exact.
        pattern = self.config.path
        return path.startswith(pattern) if pattern.endswith("/") else path == pattern

    def _healthy(self) -> bool:
        if not self.is_ready:
            return False
        if self.failures is None:
            return True
        return self.failures.count() <= self.config.check_collector_pipeline.exporter_failure_threshold

    async def _handle(self, request: web.Request) -> web.Response:
        if not self._matches(request.path):
            return web.Response(status=404, text="404 page not found\n")
        healthy = self._healthy()
        body = self.config.response_body
        if self.failures is not None:
            # the stock pipeline check answers 500, with a body only when one is configured
            text = (body.healthy if healthy else body.unhealthy) if body is not None else ""
            return web.Response(status=200 if healthy else 500, text=text)
        if body is not None:
            return web.Response(status=200 if healthy else 503, text=body.healthy if healthy else body.unhealthy)
        return web.Response(
            status=200 if healthy else 503,
            body=json.dumps(self.status(), separators=(",", ":")).encode(),
            content_type="application/json",
        )

    def status(self) -> dict[str, str]:
        """The JSON status document, as the stock extension writes it."""
        if self._up_since_ns is None:
            return {"status": "Server not available", "upSince": "0001-01-01T00:00:00Z", "uptime": ""}
        return {
            "status": "Server available",
            "upSince": rfc3339(self._up_since_ns),
            "uptime": go_duration(time.monotonic_ns() - self._up_since_mono),
        }

    async def start(self, host: Host) -> None:
        bind_host, bind_port = split_host_port(self.config.endpoint)
        context = server_ssl_context(self.config.tls) if self.config.tls is not None else None
        try:
            sockets = bind_sockets(bind_host, bind_port)
        except OSError as exc:
            raise OSError(f"health_check: failed to bind to address {self.config.endpoint}: {exc}") from exc
        self._sockets = sockets
        self.port = sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            for sock in sockets:
                await web.SockSite(runner, sock, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        pipeline = self.config.check_collector_pipeline
        if pipeline.enabled:
            self.failures = ExporterFailures(self.settings.telemetry, pipeline.interval)
            self._sampler = asyncio.create_task(self.failures.run(), name="health_check exporter failures")
        scheme = "https" if context is not None else "http"
        shown = f"[{bind_host}]" if ":" in bind_host else bind_host
        self.logger.info(
            "Starting health_check extension on %s://%s:%d%s", scheme, shown or "0.0.0.0", self.port, self.config.path
        )

    async def shutdown(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []


def _create(*, settings: CreateSettings, config: HealthCheckConfig) -> HealthCheck:
    return HealthCheck(settings, config)


factory = Factory(
    type="health_check",
    kind=Kind.EXTENSION,
    config_class=HealthCheckConfig,
    create=_create,
    stability="beta",
    description="HTTP endpoint answering 200 once the collector is ready, 503 otherwise",
)
