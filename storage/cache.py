"""A Redis cache for the dashboard's frequent read queries, invalidated by generations.

Every cached answer belongs to a *scope*: a project (issue list, charts, the dashboard home)
or one issue (its detail, tags and chart). Each scope has a generation in Redis, and the
generation is part of every cache key of that scope. Whoever changes the data bumps the
generation of what they changed — the errors exporter after ``ErrorStore.write_events`` (the
project and the issues written to, see :func:`invalidate_after_write`), and the issue actions
of :mod:`storage.issue_queries` — so the next read misses and recomputes: a write is visible
to the next request, not after the TTL. The TTL (15 s by default) only bounds how long
answers that nobody invalidated stay, for example a "last 24 hours" window that slid on.

A generation is a random token rather than a counter: when its key is lost (evicted,
expired, a Redis restart) the next reader draws a new token, and no old entry can ever be
mistaken for a current one.

Correctness never depends on Redis being up: when a Redis call fails the query runs against
PostgreSQL and the failure is logged. A bump that fails leaves answers stale for at most
the TTL.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from pydantic import TypeAdapter
from redis.exceptions import RedisError

from storage.errors_store import ErrorEvent, WriteReport

logger = logging.getLogger(f"appguard.{__name__}")

T = TypeVar("T")

DEFAULT_TTL = 15.0
#: Generations outlive any entry by far; losing one only costs a miss.
GENERATION_TTL = 7 * 86400

_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class QueryCache:
    """Cached query answers in Redis, keyed by the generation of their project or issue.

    ``prefix`` starts every key (so several AppGuard installations or tests can share one
    Redis); ``ttl`` is the lifetime of an answer in seconds. ``hits`` and ``misses`` count
    lookups since creation (a Redis failure counts as a miss).
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "appguard:", ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ValueError("the cache TTL must be positive")
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.hits = 0
        self.misses = 0
        self._adapters: dict[Any, TypeAdapter[Any]] = {}

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "appguard:", ttl: float = DEFAULT_TTL) -> QueryCache:
        """A cache on a new client for ``url`` (``redis://host:port/db``); close it with :meth:`close`."""
        return cls(aioredis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0), prefix=prefix, ttl=ttl)

    async def close(self) -> None:
        """Close the Redis client."""
        await self.client.aclose()

    # ---- keys

    def project_generation_key(self, project_id: int) -> str:
        """The Redis key holding a project's generation."""
        return f"{self.prefix}gen:project:{project_id}"

    def issue_generation_key(self, issue_id: int) -> str:
        """The Redis key holding an issue's generation."""
        return f"{self.prefix}gen:issue:{issue_id}"

    # ---- reading

    async def get_or_compute(
        self,
        kind: str,
        *,
        type_: Any,
        compute: Callable[[], Awaitable[T]],
        params: Any,
        project_id: int | None = None,
        issue_id: int | None = None,
    ) -> T:
        """The cached answer of ``kind`` for ``params``, else ``compute()``'s, then cached.

        The entry belongs to the issue's scope when ``issue_id`` is given, else to the
        project's. ``params`` is anything orjson can encode that determines the answer;
        ``type_`` is the answer's type (a dataclass, a list of them...), used to rebuild it from
        its cached JSON.
        """
        adapter = self._adapter(type_)
        if issue_id is not None:
            scope, scope_key = f"issue:{issue_id}", self.issue_generation_key(issue_id)
        elif project_id is not None:
            scope, scope_key = f"project:{project_id}", self.project_generation_key(project_id)
        else:
            raise ValueError("a cached query needs a project or an issue scope")
        digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:32]
        try:
            generation = await self._generation(scope_key)
            key = f"{self.prefix}q:{kind}:{scope}:{generation}:{digest}"
            cached = await self.client.get(key)
        except _REDIS_ERRORS as exc:
            logger.warning("query cache unavailable, reading PostgreSQL: %s", exc)
            self.misses += 1
            return await compute()
        if cached is not None:
            try:
                value: T = adapter.validate_json(cached)
            except ValueError:
                # An entry written by another version of the types: recompute and overwrite.
                logger.info("ignoring an unreadable cache entry %s", key)
            else:
                self.hits += 1
                return value
        self.misses += 1
        result = await compute()
        try:
            await self.client.set(key, adapter.dump_json(result), px=self.ttl_ms)
        except _REDIS_ERRORS as exc:
            logger.warning("could not store a query answer in the cache: %s", exc)
        return result

    async def _generation(self, key: str) -> str:
        value = await self.client.get(key)
        if value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
        # First reader since the key was lost: propose a token; a concurrent reader or writer
        # may win, and then everyone uses theirs.
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(key, secrets.token_hex(8), nx=True, ex=GENERATION_TTL)
            pipe.get(key)
            _, value = await pipe.execute()
        return value.decode() if isinstance(value, bytes) else str(value)

    def _adapter(self, type_: Any) -> TypeAdapter[Any]:
        adapter = self._adapters.get(type_)
        if adapter is None:
            adapter = self._adapters[type_] = TypeAdapter(type_)
        return adapter

    # ---- invalidation

    async def bump_generation(self, project_id: int | Iterable[int], issue_ids: Iterable[int] = ()) -> bool:
        """Invalidate every cached answer of the project(s) and of the issues given.

        Call it after the change is committed. Returns False (and logs) when Redis could not
        be told; cached answers then stay at most the TTL.
        """
        projects = [project_id] if isinstance(project_id, int) else list(project_id)
        keys = [self.project_generation_key(p) for p in projects]
        keys += [self.issue_generation_key(i) for i in issue_ids]
        if not keys:
            return True
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, secrets.token_hex(8), ex=GENERATION_TTL)
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            logger.error("could not invalidate the query cache (answers may be stale for the TTL): %s", exc)
            return False
        return True


async def invalidate_after_write(cache: QueryCache, events: Sequence[ErrorEvent], report: WriteReport) -> bool:
    """Bump the generations a committed ``ErrorStore.write_events(events)`` call changed.

    For the errors exporter: the projects of the batch and every issue an event was stored
    in. A batch of duplicates only changed nothing, and invalidates nothing.
    """
    issue_ids = {o.issue_id for o in report.outcomes if o.issue_id is not None}
    if not issue_ids:
        return True
    return await cache.bump_generation({e.project_id for e in events}, issue_ids)
