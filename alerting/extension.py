"""``alerting``: the extension that evaluates alert rules and sends their notifications.

It runs, in the collector:

- the **evaluator** (:class:`alerting.evaluator.Evaluator`): issue rules react to the errors
  the ``errors`` exporter writes (list this extension in the exporter's ``observers``);
  threshold and metric rules are evaluated every ``evaluation_interval`` by whichever replica
  holds the lease;
- the **dispatcher** (:class:`alerting.grouping.Dispatcher`): alerts join their groups in Redis
  and become notifications after ``group_wait`` / ``group_interval`` / ``repeat_interval``;
- the **workers** (:class:`alerting.queue.Worker`): they send the queued notifications through
  the channels stored in PostgreSQL (managed in the API or the rules file), with retries, a
  dead-letter list and de-duplication.

Rules and channels from ``rules_file`` are synchronised into PostgreSQL at start. Without
``postgres`` or ``redis`` sections the embedded servers under the data directory are used, the
same ones the ``api`` extension and the ``errors`` exporter use.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from alerting.queue import QueueConfig
from api.config import PostgresConfig, RedisConfig
from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration
from storage.embedded import EmbeddedServers

if TYPE_CHECKING:
    import redis.asyncio
    from psycopg_pool import AsyncConnectionPool

    from alerting.evaluator import Evaluator
    from alerting.grouping import Dispatcher
    from alerting.model import Alert, Channel, Notification, StoredRule
    from alerting.queue import NotificationQueue, Worker
    from alerting.render import Renderer
    from alerting.store import RuleStore
    from exporters.errors.exporter import WrittenErrors


#: Seconds between re-sends of a firing group to an Alertmanager channel.
ALERTMANAGER_RESEND = 60.0


class PrometheusConfig(ComponentConfig):
    """``prometheus``: the Prometheus HTTP API that metric rules query."""

    endpoint: str
    timeout: Duration = 10.0

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class AlertingConfig(ComponentConfig):
    """The ``alerting`` extension's settings."""

    postgres: PostgresConfig | None = None
    redis: RedisConfig | None = None
    prometheus: PrometheusConfig | None = None
    #: A YAML file of channels and rules kept in git (see config/alert-rules.example.yaml).
    rules_file: str | None = None
    #: A folder of templates that replace the packaged ones by name.
    templates_dir: str | None = None
    #: The dashboard's address as users reach it, for the links in notifications.
    dashboard_url: str | None = None
    evaluation_interval: Duration = 30.0
    #: How often due notification groups are looked for.
    group_check_interval: Duration = 1.0
    workers: int = Field(default=2, ge=1, le=64)
    queue: QueueConfig = Field(default_factory=QueueConfig)

    @field_validator("evaluation_interval", "group_check_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _dashboard(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value


# --------------------------------------------------------------------------- channels


class ChannelDirectory(Mapping[str, "Channel"]):
    """The channels by name, as stored in PostgreSQL, for the workers.

    Every name maps to a proxy that looks the channel up when it sends (the store is read at
    most every ``ttl`` seconds), so a channel created or changed in the API is used at once
    without a restart; a channel object is rebuilt only when its settings change, so state it
    keeps (Slack's one message per second) carries on. A name with no channel fails the send
    permanently (the notification goes to the dead letters).
    """

    def __init__(self, store: RuleStore, renderer: Renderer, *, ttl: float = 5.0) -> None:
        self.store = store
        self.renderer = renderer
        self.ttl = ttl
        self._built: dict[str, tuple[str, Channel]] = {}
        self._loaded_at = float("-inf")
        self._specs: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    def __getitem__(self, name: str) -> Channel:
        return _ChannelByName(name, self)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    async def resolve(self, name: str) -> Channel:
        """The channel called ``name`` now; :class:`PermanentSendError` when there is none."""
        from alerting.channels import build_channel
        from alerting.model import PermanentSendError

        async with self._lock:
            await self._load(force=name not in self._specs)
            spec = self._specs.get(name)
            if spec is None:
                raise PermanentSendError(f"there is no notification channel {name!r}")
            key = spec.model_dump_json()
            built = self._built.get(name)
            if built is None or built[0] != key:
                if built is not None:
                    await built[1].close()
                built = (key, build_channel(name, spec, renderer=self.renderer))
                self._built[name] = built
            return built[1]

    async def types(self) -> dict[str, str]:
        """Each channel's type by name (read from the store at most every ``ttl`` seconds)."""
        async with self._lock:
            await self._load(force=False)
            return {name: spec.type for name, spec in self._specs.items()}

    async def _load(self, *, force: bool) -> None:
        if force or time.monotonic() - self._loaded_at > self.ttl:
            self._specs = dict(await self.store.channel_specs())
            self._loaded_at = time.monotonic()

    async def close(self) -> None:
        """Close every channel built."""
        for _, channel in self._built.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._built.clear()


class _ChannelByName:
    def __init__(self, name: str, directory: ChannelDirectory) -> None:
        self.name = name
        self.directory = directory

    async def send(self, notification: Notification) -> None:
        channel = await self.directory.resolve(self.name)
        await channel.send(notification)

    async def close(self) -> None:
        """The directory closes the real channels."""


# --------------------------------------------------------------------------- the extension


class AlertingExtension(Component):
    """Evaluates the rules and sends the notifications."""

    def __init__(self, settings: CreateSettings, config: AlertingConfig) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self._embedded = EmbeddedServers(settings.data_dir, "alerting")
        self.pool: AsyncConnectionPool[Any] | None = None
        self.redis: redis.asyncio.Redis | None = None
        self.store: RuleStore | None = None
        self.queue: NotificationQueue | None = None
        self.dispatcher: Dispatcher | None = None
        self.evaluator: Evaluator | None = None
        self.channels: ChannelDirectory | None = None
        self.workers: list[Worker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._rules_cache: tuple[float, list[StoredRule]] = (float("-inf"), [])

    async def _rules(self) -> list[StoredRule]:
        # The write path asks on every write: read the rules at most once a second.
        loaded_at, rules = self._rules_cache
        if time.monotonic() - loaded_at > 1.0:
            assert self.store is not None
            rules = await self.store.enabled_rules()
            self._rules_cache = (time.monotonic(), rules)
        return rules

    async def start(self, host: Host) -> None:
        import psycopg
        import redis.asyncio
        from psycopg_pool import AsyncConnectionPool

        from alerting import rulefile
        from alerting.evaluator import Evaluator, Lease
        from alerting.grouping import Dispatcher
        from alerting.queue import NotificationQueue, Worker
        from alerting.render import Renderer
        from alerting.state import AlertStateStore
        from alerting.store import RuleStore
        from storage.migrations import migrate

        cfg = self.config
        try:
            dsn = cfg.postgres.dsn if cfg.postgres is not None else await self._embedded.postgres()
            redis_url = cfg.redis.url if cfg.redis is not None else await self._embedded.redis()
            prefix = (cfg.redis.key_prefix if cfg.redis is not None else "appguard:") + "alerting:"
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await migrate(conn)
            pool_size = cfg.postgres.pool_max_size if cfg.postgres is not None else 4
            self.pool = AsyncConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs={"autocommit": True}, open=False)
            await self.pool.open()
            prometheus = cfg.prometheus.endpoint if cfg.prometheus is not None else None
            self.store = RuleStore(self.pool, prometheus_url=prometheus)
            if cfg.rules_file is not None:
                report = await rulefile.sync(self.store, Path(cfg.rules_file))
                self.logger.info("alert rules file %s: %s", cfg.rules_file, report)
            self.redis = redis.asyncio.Redis.from_url(redis_url)
            self.queue = NotificationQueue(self.redis, prefix=prefix, config=cfg.queue)
            self.dispatcher = Dispatcher(self.queue, dashboard_url=cfg.dashboard_url)
            renderer = Renderer(Path(cfg.templates_dir) if cfg.templates_dir else None, public_url=cfg.dashboard_url)
            self.channels = ChannelDirectory(self.store, renderer)
            self.evaluator = Evaluator(
                self.pool,
                AlertStateStore(self.pool),
                self._rules,
                self._emit,
                prometheus_url=prometheus,
                dashboard_url=cfg.dashboard_url,
                lease=Lease(dsn),
                interval=cfg.evaluation_interval,
                query_timeout=cfg.prometheus.timeout if cfg.prometheus is not None else 10.0,
            )
            name = f"{self.settings.id}-{id(self):x}"
            self.workers = [
                Worker(self.queue, self.channels, f"{name}-{n}") for n in range(cfg.workers)
            ]
        except BaseException:
            await self.shutdown()
            raise
        self._tasks = [
            asyncio.create_task(self.evaluator.run(), name="alerting evaluator"),
            asyncio.create_task(self.dispatcher.run(cfg.group_check_interval), name="alerting dispatcher"),
            *(asyncio.create_task(w.run(), name=f"alerting worker {n}") for n, w in enumerate(self.workers)),
        ]
        self.logger.info(
            "Starting alerting extension: %d workers, evaluation every %ss", cfg.workers, cfg.evaluation_interval
        )

    async def _emit(self, alert: Alert, rule: StoredRule) -> None:
        """Hand an alert to the dispatcher for each of its rule's channels.

        Alertmanager resolves an alert it has not heard of for its ``resolve_timeout`` (5
        minutes by default), so its channels get a firing group again every
        :data:`ALERTMANAGER_RESEND` (as Prometheus re-sends every minute) whatever the rule's
        ``repeat_interval``.
        """
        assert self.dispatcher is not None and self.channels is not None
        grouping = rule.spec.grouping
        kinds = await self.channels.types()
        plain = [name for name in rule.spec.channels if kinds.get(name) != "alertmanager"]
        if plain:
            await self.dispatcher.submit(alert, channels=plain, grouping=grouping)
        resend = grouping.model_copy(
            update={
                "repeat_interval": min(grouping.repeat_interval, ALERTMANAGER_RESEND),
                "group_interval": min(grouping.group_interval, ALERTMANAGER_RESEND),
            }
        )
        managers = [name for name in rule.spec.channels if kinds.get(name) == "alertmanager"]
        if managers:
            await self.dispatcher.submit(alert, channels=managers, grouping=resend)

    async def errors_written(self, written: WrittenErrors) -> None:
        """As an observer of an errors exporter (``observers: [alerting]``): issue rules."""
        if self.evaluator is not None:
            await self.evaluator.errors_written(written)

    async def shutdown(self) -> None:
        for worker in self.workers:
            await worker.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self.evaluator is not None:
            await self.evaluator.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.workers = []
        if self.channels is not None:
            await self.channels.close()
            self.channels = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None
        await self._embedded.stop()


def _create(*, settings: CreateSettings, config: AlertingConfig) -> AlertingExtension:
    return AlertingExtension(settings, config)


factory = Factory(
    type="alerting",
    kind=Kind.EXTENSION,
    config_class=AlertingConfig,
    create=_create,
    stability="alpha",
    description="alert rules evaluated against the errors and Prometheus; notifications by email, Slack, "
    "webhook and Alertmanager through a Redis queue",
)
