"""Pytest fixtures for the real PostgreSQL and Redis the integration tests run against.

The servers are the ones named by ``APPGUARD_TEST_POSTGRES_DSN`` and ``APPGUARD_TEST_REDIS_URL``
(defaults: ``postgresql://postgres@127.0.0.1:5432/test`` and ``redis://127.0.0.1:6379/0``).
Where nothing answers there, the session starts the same embedded servers the product uses by
default (``storage.embedded``), in a temporary directory, and stops them at the end.

Fixtures:

- ``postgres_dsn`` (session): the server's DSN, as given or embedded.
- ``pg_dsn`` (function): DSN of a fresh empty database, dropped after the test.
- ``appguard_dsn`` (function): DSN of a fresh database with the AppGuard migrations applied,
  cloned from a template migrated once per session; dropped after the test.
- ``redis_url`` (session): the Redis server's URL, as given or embedded.
- ``redis_prefix`` (function): a key prefix unique to the test; keys under it are deleted
  afterwards. Redis is shared with whatever else runs, so tests keep to their prefix rather
  than flushing a database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from storage.embedded import EmbeddedPostgres, EmbeddedRedis
from storage.migrations import migrate

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Databases made by these fixtures carry this prefix, so a leftover from a killed run is
# recognisable.
DATABASE_PREFIX = "appguard_t_"


def postgres_answers(dsn: str) -> bool:
    """True if a PostgreSQL server accepts a connection on ``dsn`` within two seconds."""
    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def redis_answers(url: str) -> bool:
    """True if a Redis server answers PING at ``url`` within two seconds."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def database_dsn(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database of the same server."""
    return make_conninfo(dsn, dbname=dbname)


def create_database(dsn: str, *, template: str | None = None) -> str:
    """Create a uniquely named database on ``dsn``'s server; return its name."""
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(query)
    return name


def drop_database(dsn: str, name: str) -> None:
    """Drop a database, disconnecting whoever is still connected to it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The test PostgreSQL server: the configured one, else an embedded one for the session."""
    dsn = os.environ.get("APPGUARD_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    if postgres_answers(dsn):
        yield dsn
        return
    data_dir = tempfile.mkdtemp(prefix="appguard-test-pg-")
    server = EmbeddedPostgres(data_dir, database="test")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = create_database(postgres_dsn)
    try:
        yield database_dsn(postgres_dsn, name)
    finally:
        drop_database(postgres_dsn, name)


@pytest.fixture(scope="session")
def _appguard_template(postgres_dsn: str) -> Iterator[str]:
    name = create_database(postgres_dsn)

    async def _migrate() -> None:
        async with await psycopg.AsyncConnection.connect(database_dsn(postgres_dsn, name), autocommit=True) as conn:
            await migrate(conn)

    try:
        asyncio.run(_migrate())
        yield name
    finally:
        drop_database(postgres_dsn, name)


@pytest.fixture
def appguard_dsn(postgres_dsn: str, _appguard_template: str) -> Iterator[str]:
    """A fresh database with the AppGuard schema migrated, for one test."""
    name = create_database(postgres_dsn, template=_appguard_template)
    try:
        yield database_dsn(postgres_dsn, name)
    finally:
        drop_database(postgres_dsn, name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The test Redis server: the configured one, else an embedded one for the session."""
    url = os.environ.get("APPGUARD_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    if redis_answers(url):
        yield url
        return
    data_dir = tempfile.mkdtemp(prefix="appguard-test-redis-")
    server = EmbeddedRedis(data_dir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"appguard-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
