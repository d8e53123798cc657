"""``api``: the extension serving the dashboard and its REST API.

In the collector it runs beside the pipelines (list it in ``service.extensions``); alone, it
runs with ``appguard-collector api --config F`` (:func:`serve_standalone`), which reads only the
``api`` extensions of the config.

Without ``postgres`` or ``redis`` sections it starts the embedded servers under the data
directory (shared with anything else of AppGuard using the same directory). Without
``auth.jwt_secret`` it signs tokens with a secret generated once and kept in
``<data_dir>/api/jwt_secret``. The web stack is imported when the extension starts, so
loading the component registry stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from api.config import ApiConfig
from collector.component import Component, ComponentID, CreateSettings, Factory, Host, Kind
from collector.confmap import ConfigError
from collector.netconfig import bind_sockets, server_ssl_context, split_host_port
from storage.embedded import EmbeddedServers

if TYPE_CHECKING:
    from api.services import Services
    from exporters.errors.exporter import WrittenErrors
    from storage.cache import QueryCache

# Sessions over for longer than this are deleted; until then a reused token is still recognised.
_SESSION_RETENTION = 7 * 24 * 3600.0
_PURGE_INTERVAL = 3600.0
# How long a shutdown waits for a purge pass under way.
_STOP_TIMEOUT = 30.0


def load_jwt_secret(config: ApiConfig, data_dir: str | None) -> str:
    """``auth.jwt_secret``, else the one kept under the data directory (made on first use)."""
    if config.auth.jwt_secret is not None:
        return config.auth.jwt_secret
    if data_dir is None:
        raise ConfigError("api: auth.jwt_secret is required when there is no data directory to keep a generated one")
    path = Path(data_dir) / "api" / "jwt_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: of several processes starting together, one writes and the others read.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise ConfigError(f"api: {path} holds no usable secret; delete it to make a new one") from None
        return secret
    with os.fdopen(fd, "w") as handle:
        secret = secrets.token_urlsafe(48)
        handle.write(secret + "\n")
    return secret


class ApiExtension(Component):
    """The HTTP server of the dashboard and the REST API."""

    def __init__(self, settings: CreateSettings, config: ApiConfig) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self.services: Services | None = None
        self.port: int | None = None
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[socket.socket] = []
        self._embedded = EmbeddedServers(settings.data_dir, "api")
        self._purger: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._cache: QueryCache | None = None

    async def start(self, host: Host) -> None:
        from api.app import build_app
        from api.services import Services
        from storage.cache import QueryCache

        bind_host, bind_port = split_host_port(self.config.endpoint)
        context = server_ssl_context(self.config.tls) if self.config.tls is not None else None
        try:
            secret = load_jwt_secret(self.config, self.settings.data_dir)
            if self.config.postgres is not None:
                dsn = self.config.postgres.dsn
            else:
                dsn = await self._embedded.postgres()
            if self.config.redis is not None:
                redis_url = self.config.redis.url
            else:
                redis_url = await self._embedded.redis()
            self.services = await Services.open(self.config, dsn=dsn, redis_url=redis_url, jwt_secret=secret)
            self._cache = QueryCache(self.services.redis, prefix=self.services.key_prefix)
            try:
                self._sockets = bind_sockets(bind_host, bind_port)
            except OSError as exc:
                raise OSError(f"api: failed to bind to address {self.config.endpoint}: {exc}") from exc
            self.port = self._sockets[0].getsockname()[1]
            self.app = build_app(self.services)
            runner = web.AppRunner(self.app, access_log=None)
            await runner.setup()
            self._runner = runner
            for sock in self._sockets:
                await web.SockSite(runner, sock, ssl_context=context).start()
        except BaseException:
            await self.shutdown()
            raise
        self._stopping.clear()
        self._purger = asyncio.create_task(self._purge_sessions(), name="api session purge")
        scheme = "https" if context is not None else "http"
        shown = f"[{bind_host}]" if ":" in bind_host else bind_host
        self.logger.info("Starting api extension on %s://%s:%d", scheme, shown or "0.0.0.0", self.port)

    async def errors_written(self, written: WrittenErrors) -> None:
        """As an observer of an errors exporter (``observers: [api]``): make the cached answers
        that the write changed miss, so the next page shows the new events at once."""
        from storage.cache import invalidate_after_write

        if self._cache is not None:
            await invalidate_after_write(self._cache, written.events, written.report)

    async def _purge_sessions(self) -> None:
        # Stopped between passes, never cancelled inside one: a query cut off in its transaction
        # can leave the pooled connection busy and the shutdown waiting on it.
        while not self._stopping.is_set():
            assert self.services is not None
            try:
                removed = await self.services.users.purge_expired(_SESSION_RETENTION)
                if removed:
                    self.logger.info("removed %d expired login sessions", removed)
            except Exception as exc:  # the database may be briefly away; try again next time
                self.logger.warning("could not purge expired sessions: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), _PURGE_INTERVAL)

    async def shutdown(self) -> None:
        if self._purger is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._purger), _STOP_TIMEOUT)
            except TimeoutError:
                self._purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._purger
            self._purger = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.app = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        self._cache = None
        if self.services is not None:
            await self.services.close()
            self.services = None
        await self._embedded.stop()


def _create(*, settings: CreateSettings, config: ApiConfig) -> ApiExtension:
    return ApiExtension(settings, config)


factory = Factory(
    type="api",
    kind=Kind.EXTENSION,
    config_class=ApiConfig,
    create=_create,
    stability="alpha",
    description="the dashboard and its REST API (auth, users, issues) over HTTP",
)


def api_configs(raw: Mapping[str, Any]) -> dict[ComponentID, ApiConfig]:
    """The ``api`` extensions of a loaded config tree, validated; errors name their YAML path."""
    from collector.config import format_validation_error

    section = raw.get("extensions") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("invalid configuration:\n  extensions: must be a map")
    found: dict[ComponentID, ApiConfig] = {}
    problems: list[str] = []
    for key, body in section.items():
        try:
            ident = ComponentID.parse(str(key))
        except ValueError as exc:
            problems.append(f"extensions.{key}: {exc}")
            continue
        if ident.type != factory.type:
            continue
        try:
            found[ident] = ApiConfig.model_validate(body or {})
        except ValidationError as exc:
            problems.extend(
                f"{path}: {message}" for path, message in format_validation_error(f"extensions.{ident}", exc)
            )
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    if not found:
        raise ConfigError("the config has no api extension (add one under extensions:, e.g. `api:`)")
    return found


async def serve(
    configs: Mapping[ComponentID, ApiConfig],
    data_dir: str | None,
    *,
    until: Callable[[], Awaitable[object]],
    telemetry: Any = None,
) -> None:
    """Start the api extensions of ``configs``, wait for ``until()``, then shut them down."""
    from collector.telemetry import Telemetry

    tel = telemetry or Telemetry()
    started: list[ApiExtension] = []
    try:
        for ident, config in configs.items():
            settings = CreateSettings(
                ident, Kind.EXTENSION, tel, logging.getLogger(f"appguard.extension.{ident}"), data_dir
            )
            ext = _create(settings=settings, config=config)
            await ext.start(Host({ident: ext}))
            started.append(ext)
        await until()
    finally:
        for ext in reversed(started):
            await ext.shutdown()


def serve_standalone(raw: Mapping[str, Any], data_dir: str | None) -> None:
    """Run only the ``api`` extensions of a config tree until SIGINT or SIGTERM."""
    configs = api_configs(raw)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(configs, data_dir, until=stop.wait)

    asyncio.run(main())
