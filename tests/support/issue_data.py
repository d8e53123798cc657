"""Issues for the errors endpoints' and pages' tests: a small dataset written through
:class:`ErrorStore` as the errors exporter writes it (store, then invalidate the API's cache), and
the fixtures that run the API against it with an admin, a member and a viewer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.extension import ApiExtension
from exporters.errors.stacktrace import parse_stacktrace
from storage.cache import QueryCache, invalidate_after_write
from storage.errors_store import ErrorEvent, ErrorStore
from tests.support.api import ApiClient, client, running_api

PUBLIC = "https://guard.example.com"
LINKS = {"grafana_url": "https://grafana.example.com", "tempo_datasource": "tempo-1", "loki_datasource": "loki-1"}
NOW = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
JS_STACK = (
    "TypeError: Cannot read properties of undefined (reading 'total')\n"
    "    at computeTotal (/srv/shop/src/cart.js:42:17)\n"
    "    at Layer.handle (/srv/shop/node_modules/express/lib/router/layer.js:95:5)\n"
    "    at checkout (/srv/shop/src/routes/checkout.js:12:3)"
)


def ev(fingerprint: str, minutes_ago: float, **fields: Any) -> ErrorEvent:
    base: dict[str, Any] = {"type": "TypeError", "message": f"boom {fingerprint}", "service_name": "checkout"}
    base.update(fields)
    return ErrorEvent(fingerprint=fingerprint, timestamp=NOW - timedelta(minutes=minutes_ago), **base)


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    # Plain-HTTP cookies although the public URL is https: the tests' browsers talk to loopback.
    async with running_api(
        tmp_path, appguard_dsn, redis_url, redis_prefix, public_url=PUBLIC, links=LINKS, auth={"cookie_secure": False}
    ) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


@pytest.fixture
async def store(appguard_dsn: str) -> AsyncIterator[ErrorStore]:
    s = await ErrorStore.open(appguard_dsn, run_migrations=False)
    try:
        yield s
    finally:
        await s.close()


class Seeder:
    """Writes events as the errors exporter does: store, then invalidate the API's cache."""

    def __init__(self, store: ErrorStore, cache: QueryCache) -> None:
        self.store = store
        self.cache = cache

    async def __call__(self, events: Sequence[ErrorEvent]) -> dict[str, int]:
        report = await self.store.write_events(events)
        await invalidate_after_write(self.cache, events, report)
        return {e.fingerprint: o.issue_id for e, o in zip(events, report.outcomes, strict=True) if o.issue_id}


@pytest.fixture
async def seed(store: ErrorStore, redis_url: str, redis_prefix: str) -> AsyncIterator[Seeder]:
    cache = QueryCache.from_url(redis_url, prefix=redis_prefix)
    try:
        yield Seeder(store, cache)
    finally:
        await cache.close()


@pytest.fixture
async def tokens(http: ApiClient) -> dict[str, str]:
    """Access tokens of an admin, a member and a viewer."""
    admin = (await http.register("admin@example.com")).body["access_token"]
    member = (await http.register("member@example.com")).body["access_token"]
    viewer = await http.register("viewer@example.com")
    changed = await http.call("PATCH", f"/api/users/{viewer.body['user']['id']}", json={"role": "viewer"}, token=admin)
    assert changed.status == 200, changed.body
    return {"admin": admin, "member": member, "viewer": viewer.body["access_token"]}


def dataset() -> list[ErrorEvent]:
    frames = [e.to_dict() for e in parse_stacktrace(JS_STACK, language="nodejs").exceptions]
    return [
        ev("cart", 5, stacktrace=JS_STACK, frames=frames, trace_id=TRACE, session_id="sess-42",
           user_id="u1", environment="production", service_version="1.0.0", attributes={"http.route": "/cart"}),
        ev("cart", 30, user_id="u2", environment="production", service_version="1.0.0"),
        ev("cart", 90, user_id="u1", environment="production", service_version="1.0.0"),
        ev("pool", 10, type="ValueError", message="connection reset by peer", environment="staging"),
        ev("login", 20, type="KeyError", message="'token'", service_name="login", level="warning",
           environment="production"),
        ev("old", 60 * 24 * 3, type="OSError", message="disk full", service_name="batch", environment="production"),
    ]  # fmt: skip
