"""Running the ``api`` extension for tests, and a small HTTP client to talk to it.

:func:`running_api` starts the real extension through its factory on 127.0.0.1 with an
ephemeral port, against the test PostgreSQL database and Redis prefix of the test, and stops it
afterwards. :class:`ApiClient` sends JSON and returns status, headers and decoded body; each
client has its own cookie jar, like one browser.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from api.config import ApiConfig
from api.extension import ApiExtension, factory
from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.telemetry import Telemetry

JWT_SECRET = "test-secret-of-the-api-tests-0123456789abcdef"
PASSWORD = "correct horse battery staple"


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it: mappings are merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def api_config(dsn: str, redis_url: str, prefix: str, **overrides: Any) -> ApiConfig:
    """A config for tests: loopback, port 0, the given database and Redis prefix."""
    raw: dict[str, Any] = {
        "endpoint": "127.0.0.1:0",
        "postgres": {"dsn": dsn, "pool_max_size": 4},
        "redis": {"url": redis_url, "key_prefix": prefix},
        "auth": {"jwt_secret": JWT_SECRET, "registration": "open"},
    }
    return ApiConfig.model_validate(merge(raw, overrides))


@contextlib.asynccontextmanager
async def running_api(
    data_dir: Path, dsn: str, redis_url: str, prefix: str, **overrides: Any
) -> AsyncIterator[ApiExtension]:
    """The extension, started through its factory; shut down on exit."""
    settings = CreateSettings(
        ComponentID("api"), Kind.EXTENSION, Telemetry(), logging.getLogger("test.api"), str(data_dir)
    )
    ext = factory.create(settings=settings, config=api_config(dsn, redis_url, prefix, **overrides))
    assert isinstance(ext, ApiExtension)
    await ext.start(Host({ComponentID("api"): ext}))
    try:
        yield ext
    finally:
        await ext.shutdown()


@dataclass
class Reply:
    """One response: status, headers and the body (decoded JSON, else text)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: Any

    @property
    def error_code(self) -> str | None:
        """``error.code`` of an error body."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


class ApiClient:
    """An HTTP client of one running API, with its own cookies."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        """Close the session."""
        await self.session.close()

    def cookie(self, name: str) -> str | None:
        """The value of a cookie the server set, if the jar holds it."""
        for morsel in self.session.cookie_jar:
            if morsel.key == name:
                return morsel.value
        return None

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        allow_redirects: bool = True,
    ) -> Reply:
        """Send a request; ``json`` is encoded as the body, ``token`` as a bearer token."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        body: bytes | str | None = data
        if json is not None:
            body = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base + path, data=body, headers=sent, allow_redirects=allow_redirects
        ) as resp:
            raw = await resp.read()
            decoded: Any = raw.decode(errors="replace")
            if resp.content_type == "application/json" and raw:
                decoded = orjson.loads(raw)
            return Reply(resp.status, resp.headers, decoded)

    async def register(self, email: str, password: str = PASSWORD, **extra: Any) -> Reply:
        """POST /api/auth/register."""
        return await self.call("POST", "/api/auth/register", json={"email": email, "password": password, **extra})

    async def login(self, email: str, password: str = PASSWORD, **extra: Any) -> Reply:
        """POST /api/auth/login."""
        return await self.call("POST", "/api/auth/login", json={"email": email, "password": password, **extra})


@contextlib.asynccontextmanager
async def client(ext: ApiExtension) -> AsyncIterator[ApiClient]:
    """A client of a running extension."""
    c = ApiClient(f"http://127.0.0.1:{ext.port}")
    try:
        yield c
    finally:
        await c.close()
