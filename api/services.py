"""What the API's handlers share: the database pool, Redis, the stores and the token codec.

:class:`Services` is opened once when the ``api`` extension starts and stored on the aiohttp
application; handlers reach it with :func:`services`. A feature module that needs more (the
issue queries, their Redis cache) builds it from ``pool``, ``redis`` and ``key_prefix`` here,
so every part of the API uses the same connections and the same key namespace.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import psycopg
import redis.asyncio
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

from api.config import ApiConfig
from api.passwords import Passwords
from api.ratelimit import LoginLimiter
from api.tokens import TokenCodec
from storage.migrations import migrate
from storage.users_store import UsersStore

_log = logging.getLogger("appguard.api")

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
#: Where ``npm ci`` left the front-end packages (``node_modules``) and the built snippet
#: (``sdk/browser/dist``): the repository's root, or ``$APPGUARD_WEB_ROOT`` for an installed
#: package (the container image puts them in /opt/appguard-web).
WEB_ROOT = Path(os.environ.get("APPGUARD_WEB_ROOT") or Path(__file__).resolve().parent.parent)


@dataclass
class Services:
    """Everything a request handler may use, opened and closed with the extension."""

    config: ApiConfig
    pool: AsyncConnectionPool[Any]
    redis: redis.asyncio.Redis
    key_prefix: str
    users: UsersStore
    tokens: TokenCodec
    passwords: Passwords
    limiter: LoginLimiter
    templates: jinja2.Environment

    @classmethod
    async def open(cls, config: ApiConfig, *, dsn: str, redis_url: str, jwt_secret: str) -> Services:
        """Migrate the schema, open the pool and the Redis client; check that Redis answers."""
        pg = config.postgres
        timeout = pg.connect_timeout if pg is not None else 30.0
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=int(timeout)) as conn:
            await migrate(conn)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=pg.pool_min_size if pg is not None else 1,
            max_size=pg.pool_max_size if pg is not None else 10,
            kwargs={"autocommit": True},
            open=False,
            name="appguard-api",
        )
        await pool.open(wait=True, timeout=timeout)
        client = redis.asyncio.Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            await pool.close()
            raise
        prefix = config.redis.key_prefix if config.redis is not None else "appguard:"
        limits = config.rate_limits
        return cls(
            config=config,
            pool=pool,
            redis=client,
            key_prefix=prefix,
            users=UsersStore(pool),
            tokens=TokenCodec(jwt_secret, config.auth.access_token_ttl),
            passwords=Passwords(),
            limiter=LoginLimiter(
                client,
                prefix,
                per_account=limits.login_per_account,
                per_address=limits.login_per_address,
                window=limits.window,
            ),
            templates=jinja2.Environment(
                loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
                autoescape=True,
                undefined=jinja2.StrictUndefined,
            ),
        )

    async def close(self) -> None:
        """Close Redis and the pool."""
        await self.redis.aclose()
        await self.pool.close()


SERVICES = web.AppKey("appguard_services", Services)


def services(request: web.Request) -> Services:
    """The services of the application serving ``request``."""
    return request.app[SERVICES]
