"""The real CLI as the end-to-end tests run it, and what they do with it.

- :func:`stack_config` builds the collector's config as a dict: the ``otlp`` receiver on free
  loopback ports, ``batch``, the ``errors`` exporter (its DSN read from the environment, as a
  secret would be), the ``api`` extension on PostgreSQL and Redis, and what a test asks for
  besides (a ``file`` exporter, a ``prometheus`` exporter, the Sentry and browser ingest, any
  other override). :func:`running_stack` runs it and hands a :class:`Stack`: the process, its
  ports, its URLs.
- :func:`registered` signs a user up through the REST API (the first one is the admin) and
  gives a :class:`User` whose calls carry its token.
- :func:`until` polls for what the user would see, and fails naming what did not come.
- :func:`fill_registration` and :func:`sign_in` are the dashboard's forms in Playwright.
- The rest reads what arrived: rows of PostgreSQL, the project's ingest key, what a ``file``
  exporter wrote, a Prometheus scrape, the replay player's frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import psycopg
import yaml
from playwright.async_api import FrameLocator, Page, expect
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from storage.projects import ProjectKey, ProjectStore
from tests.support.api import PASSWORD, ApiClient, Reply, merge
from tests.support.browser import BrowserRun
from tests.support.net import free_port
from tests.support.process import CollectorProcess

#: The environment variable the config names for the errors exporter's and the API's database.
DSN_ENV = "APPGUARD_E2E_ERRORS_DSN"
EMAIL = "owner@example.com"
JWT_SECRET = "e2e-test-secret-0123456789abcdefghijklmn"
NOTHING: Mapping[str, Any] = MappingProxyType({})


# --------------------------------------------------------------------------- the collector


@dataclass(frozen=True)
class Ports:
    """Free loopback ports of one collector: OTLP/HTTP, OTLP/gRPC, the API, the Prometheus exporter."""

    http: int
    grpc: int
    api: int
    prometheus: int

    @classmethod
    def free(cls) -> Ports:
        """Four ports nothing listens on right now."""
        return cls(free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class StackConfig:
    """A collector's config (``tree``), the ports it names and the environment it reads."""

    tree: dict[str, Any]
    ports: Ports
    env: dict[str, str]
    file: Path | None = None

    def yaml(self) -> str:
        """The config as the CLI reads it."""
        return yaml.safe_dump(self.tree, sort_keys=False)


def stack_config(
    dsn: str,
    *,
    pipelines: Mapping[str, Sequence[str] | Mapping[str, Any]],
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    protocols: Sequence[str] = ("http",),
    batch: bool = True,
    errors: Mapping[str, Any] = NOTHING,
    file: Path | None = None,
    prometheus: bool = False,
    api: Mapping[str, Any] | None = NOTHING,
    sentry: bool = False,
    ingest: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] = NOTHING,
) -> StackConfig:
    """The config of one collector on free ports, against the database ``dsn``.

    - ``pipelines``: signal -> the exporters the ``otlp`` receiver's data goes to (through
      ``batch`` unless ``batch`` is false), or a whole pipeline as written in YAML;
    - ``protocols``: the OTLP protocols received (``http``, ``grpc``);
    - ``errors``: laid over the ``errors`` exporter's settings (``observers: [api]`` when the
      API runs);
    - ``file``: a ``file`` exporter writing OTLP JSON there; ``prometheus``: a ``prometheus``
      exporter on its own port;
    - ``api``: laid over the ``api`` extension's settings (open registration, this database,
      Redis at ``redis_url`` under ``redis_prefix``); ``None`` runs no API;
    - ``sentry``, ``ingest``: the API's Sentry and browser ingest, handing to this collector's
      OTLP/HTTP receiver (``ingest`` holds its other settings);
    - ``overrides``: laid over the whole config last.
    """
    ports = Ports.free()
    otlp_http = f"http://127.0.0.1:{ports.http}"
    exporters: dict[str, Any] = {
        "errors": merge({"endpoint": f"${{env:{DSN_ENV}}}", "observers": [] if api is None else ["api"]}, errors)
    }
    if file is not None:
        exporters["file"] = {"path": str(file), "flush_interval": "100ms"}
    if prometheus:
        exporters["prometheus"] = {"endpoint": f"127.0.0.1:{ports.prometheus}"}
    tree: dict[str, Any] = {
        "receivers": {
            "otlp": {"protocols": {name: {"endpoint": f"127.0.0.1:{getattr(ports, name)}"} for name in protocols}}
        },
        "processors": {"batch": {"timeout": "100ms"}} if batch else {},
        "exporters": exporters,
        "extensions": {},
        "service": {"pipelines": {signal: _pipeline(pipeline, batch) for signal, pipeline in pipelines.items()}},
    }
    if api is not None:
        assert redis_url is not None and redis_prefix is not None, "the api extension needs Redis"
        settings: dict[str, Any] = {
            "endpoint": f"127.0.0.1:{ports.api}",
            "postgres": {"dsn": f"${{env:{DSN_ENV}}}"},
            "redis": {"url": redis_url, "key_prefix": redis_prefix},
            "auth": {"jwt_secret": JWT_SECRET, "registration": "open"},
        }
        if sentry:
            settings["sentry"] = {"otlp_endpoint": otlp_http}
        if ingest is not None:
            settings["ingest"] = {"otlp_endpoint": otlp_http, **ingest}
        tree["extensions"]["api"] = merge(settings, api)
        tree["service"]["extensions"] = ["api"]
    tree = {key: value for key, value in merge(tree, overrides).items() if value != {}}
    return StackConfig(tree, ports, {DSN_ENV: dsn}, file)


def _pipeline(pipeline: Sequence[str] | Mapping[str, Any], batch: bool) -> dict[str, Any]:
    """A pipeline as written, or from the ``otlp`` receiver (through ``batch``) to ``pipeline``'s exporters."""
    if isinstance(pipeline, Mapping):
        return dict(pipeline)
    return {"receivers": ["otlp"], **({"processors": ["batch"]} if batch else {}), "exporters": list(pipeline)}


@dataclass(frozen=True)
class Stack:
    """A running collector: the process and the config it runs."""

    proc: CollectorProcess
    config: StackConfig

    @property
    def ports(self) -> Ports:
        return self.config.ports

    @property
    def api(self) -> str:
        """The API's origin (and the dashboard's)."""
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def file(self) -> Path:
        """Where the ``file`` exporter writes."""
        assert self.config.file is not None, "the stack has no file exporter"
        return self.config.file

    def output(self) -> str:
        """What the collector logged so far."""
        return self.proc.output()


#: The ``start_stack`` fixture: ``start_stack(**options)`` runs :func:`stack_config` of the
#: options (on the test's database and Redis) until the test ends.
StartStack = Callable[..., Stack]


@contextlib.contextmanager
def running_stack(config: StackConfig, workdir: Path) -> Iterator[Stack]:
    """The CLI running ``config`` in ``workdir`` until the block ends; its exit must be clean."""
    with CollectorProcess(config.yaml(), workdir, env=config.env).running() as proc:
        yield Stack(proc, config)


# --------------------------------------------------------------------------- the REST API


@dataclass(frozen=True)
class User:
    """A signed-up user of the REST API: its client, its bearer token and what registration said."""

    client: ApiClient
    token: str
    registration: dict[str, Any]

    async def call(self, method: str, path: str, **options: Any) -> Reply:
        """A request with the user's token (options as :meth:`ApiClient.call`)."""
        return await self.client.call(method, path, token=self.token, **options)

    async def get(self, path: str) -> Any:
        """GET ``path``; it must answer 200. The body."""
        reply = await self.call("GET", path)
        assert reply.status == 200, f"GET {path}: {reply.status} {reply.body}"
        return reply.body

    async def found(self, path: str) -> Any:
        """As :meth:`get`, or None while the answer is 404."""
        reply = await self.call("GET", path)
        if reply.status == 404:
            return None
        assert reply.status == 200, f"GET {path}: {reply.status} {reply.body}"
        return reply.body


@contextlib.asynccontextmanager
async def registered(base: str, email: str = EMAIL, password: str = PASSWORD, **extra: Any) -> AsyncIterator[User]:
    """Register ``email`` at the API at ``base`` (the first user is its admin); it must answer 201."""
    client = ApiClient(base)
    try:
        reply = await client.register(email, password, **extra)
        assert reply.status == 201, reply.body
        yield User(client, reply.body["access_token"], reply.body)
    finally:
        await client.close()


# --------------------------------------------------------------------------- waiting


async def _value(call: Callable[[], Any]) -> Any:
    """``call()`` in a thread (it may block), awaited if it gave an awaitable."""
    found = await asyncio.to_thread(call)
    return await found if inspect.isawaitable(found) else found


async def until(
    check: Callable[[], Any],
    ready: Callable[[Any], object] = bool,
    *,
    timeout: float = 30.0,
    what: str | Callable[[], Any] = "",
) -> Any:
    """Call ``check`` every 0.2 s until ``ready`` holds for what it gives (by default: until it
    gives something true), and return that. ``check`` is a blocking function (run in a thread)
    or gives an awaitable (``lambda: user.get(path)``), which is awaited. After ``timeout``:
    AssertionError naming ``what`` (a callable is asked only then, for what to look at) and the
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        found = await _value(check)
        if ready(found):
            return found
        if time.monotonic() > deadline:
            said = what if isinstance(what, str) else await _value(what)
            raise AssertionError(f"timed out waiting for {said}; last seen: {found!r}")
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- the dashboard


async def fill_registration(
    page: Page, base: str, path: str, *, email: str = EMAIL, password: str = PASSWORD, name: str | None = None
) -> None:
    """Open ``path`` signed out: the browser is sent to the sign-in page, follows "Create one"
    and fills the registration form. The test submits it."""
    await page.goto(f"{base}{path}")
    await expect(page).to_have_url(re.compile(rf"/login\?next={re.escape(path)}$"))
    await page.get_by_role("link", name="Create one").click()
    if name is not None:
        await page.locator("input[name=name]").fill(name)
    await page.locator("input[name=email]").fill(email)
    await page.locator("input[name=password]").fill(password)


async def sign_in(page: Page, email: str = EMAIL, password: str = PASSWORD) -> None:
    """Fill the sign-in form the page shows and submit it."""
    await page.locator("input[name=email]").fill(email)
    await page.locator("input[name=password]").fill(password)
    await page.get_by_role("button", name="Sign in").click()


def replay_frame(page: Page) -> FrameLocator:
    """What the replay player's iframe shows: the rebuilt page."""
    return page.frame_locator("#player .replayer-wrapper iframe")


async def replay_shot(run: BrowserRun, name: str) -> bytes:
    """A screenshot of the replay player alone, kept with the test's others; its bytes."""
    path = await run.screenshot(name, of=run.page.locator("#player .replayer-wrapper"))
    return path.read_bytes()


# --------------------------------------------------------------------------- what arrived


async def rows(dsn: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    """The rows of a query, as dicts."""
    async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
        cur = await conn.execute(sql.encode(), params or None)
        return await cur.fetchall()


async def project_key(dsn: str) -> ProjectKey:
    """The default project's first active key: the one its DSN shows."""
    async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
        keys = [key for key in await ProjectStore(pool).list_keys(1) if key.active]
    assert keys, "the default project has no active key"
    return keys[0]


def _otlp_json(path: Path, *keys: str) -> list[dict[str, Any]]:
    """The items a ``file`` exporter wrote (one OTLP JSON request a line), under ``keys``:
    e.g. ``resourceLogs``, ``scopeLogs``, ``logRecords``."""
    found: list[dict[str, Any]] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for key in keys:
        found = [item for parent in found for item in parent.get(key, [])]
    return found


def log_records(path: Path) -> list[dict[str, Any]]:
    """The log records a ``file`` exporter wrote to ``path``."""
    return _otlp_json(path, "resourceLogs", "scopeLogs", "logRecords")


def spans(path: Path) -> list[dict[str, Any]]:
    """The spans a ``file`` exporter wrote to ``path``."""
    return _otlp_json(path, "resourceSpans", "scopeSpans", "spans")


def attribute(item: dict[str, Any], key: str) -> Any:
    """The value of an OTLP JSON item's attribute, or None."""
    for kv in item.get("attributes", []):
        if kv["key"] == key:
            return next(iter(kv["value"].values()))
    return None


async def scrape(port: int) -> str:
    """The exposition of a ``prometheus`` exporter."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as reply:
        return await reply.text()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The sum of a series' samples over the label sets that include ``labels``; None if none does."""
    found = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    return sum(found) if found else None
