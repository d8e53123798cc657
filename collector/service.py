"""The running service: start order, the self-telemetry endpoint, signals and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal as os_signal
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from collector.component import Component, Host, Kind
from collector.config import Config
from collector.graph import Graph, build_graph
from collector.registry import Registry
from collector.telemetry import Telemetry

_log = logging.getLogger("appguard.service")


class Service:
    """Builds the graph from a config and runs it until told to stop."""

    def __init__(self, cfg: Config, registry: Registry | None = None, data_dir: str | None = None) -> None:
        self.cfg = cfg
        self.telemetry = Telemetry()
        self.graph: Graph = build_graph(cfg, self.telemetry, registry, data_dir)
        self.host = Host(self.graph.extensions)
        self._started: list[tuple[Kind, str, Component]] = []
        self._metrics_runner: web.AppRunner | None = None
        self._stop = asyncio.Event()
        self.ready = False

    async def _serve_metrics(self) -> None:
        endpoint = self.cfg.service.telemetry.metrics.endpoint()
        if endpoint is None:
            return

        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.telemetry.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = endpoint
        await web.TCPSite(runner, host, port).start()
        self._metrics_runner = runner
        _log.info("Serving own metrics on http://%s:%d/metrics", host, port)

    async def start(self) -> None:
        """Start extensions, then exporters, connectors, processors and receivers."""
        await self._serve_metrics()
        order: list[tuple[Kind, str, Component]] = [
            (Kind.EXTENSION, str(i), c) for i, c in self.graph.extensions.items()
        ]
        order += self.graph.start_order()
        for kind, label, comp in order:
            try:
                await comp.start(self.host)
            except Exception as exc:
                _log.error("cannot start %s %s: %s", kind.value, label, exc)
                await self.shutdown()
                raise
            self._started.append((kind, label, comp))
        self.ready = True
        for comp in self.graph.extensions.values():
            notify = getattr(comp, "ready", None)
            if callable(notify):
                notify()
        _log.info("Everything is ready. Begin running and processing data.")

    async def shutdown(self) -> None:
        """Stop in reverse start order; the whole drain is bounded by ``shutdown_timeout``."""
        self.ready = False
        for comp in self.graph.extensions.values():
            notify = getattr(comp, "not_ready", None)
            if callable(notify):
                notify()
        started, self._started = self._started, []
        try:
            async with asyncio.timeout(self.cfg.service.shutdown_timeout):
                for kind, label, comp in reversed(started):
                    try:
                        await comp.shutdown()
                    except Exception:
                        _log.exception("error shutting down %s %s", kind.value, label)
        except TimeoutError:
            _log.error("shutdown did not finish within %.1fs; stopping anyway", self.cfg.service.shutdown_timeout)
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        _log.info("Shutdown complete.")

    def stop(self, *_: Any) -> None:
        """Ask :meth:`run` to shut down (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Start, wait for SIGTERM/SIGINT (or :meth:`stop`), then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGTERM, os_signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self.start()
        try:
            await self._stop.wait()
        finally:
            _log.info("Received stop request, shutting down...")
            await self.shutdown()
