"""The embedded PostgreSQL and Redis: start, answer, share between processes, stop."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
import redis.asyncio

from storage.embedded import EmbeddedPostgres, EmbeddedRedis
from storage.errors_store import ErrorEvent, ErrorStore
from tests.support.services import postgres_answers, redis_answers

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: under root the embedded PostgreSQL runs as another user, who must
    # be able to traverse the path, and pytest's base directory is private.
    path = Path(tempfile.mkdtemp(prefix="appguard-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_postgres_serves_the_error_store(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    dsn = server.start()
    try:
        assert dsn.startswith("postgresql://postgres@127.0.0.1:") and dsn.endswith("/appguard")
        assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()
        store = await ErrorStore.open(dsn)
        try:
            report = await store.write_events(
                [ErrorEvent(fingerprint="fp", timestamp=datetime.now(UTC), type="E", message="m") for _ in range(3)]
            )
            issue = await store.get_issue(report.outcomes[0].issue_id or 0)
            assert issue is not None and issue.event_count == 3
        finally:
            await store.close()
    finally:
        server.stop()
    assert not postgres_answers(dsn)


def test_embedded_postgres_is_shared_and_stopped_by_the_last_holder(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    second = EmbeddedPostgres(data_dir)
    dsn = first.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        assert second.start() == dsn  # attached, not a second server

        first.stop()
        assert postgres_answers(dsn)  # still held by the second
    finally:
        first.stop()
        second.stop()
    assert not postgres_answers(dsn)

    # Started again on the same directory: same port, same data.
    with EmbeddedPostgres(data_dir) as again:
        assert again == dsn
        with psycopg.connect(again) as conn:
            assert conn.execute("SELECT n FROM kept").fetchall() == [(42,)]


_HOLDER_SCRIPT = """
import sys
from storage.embedded import EmbeddedPostgres, EmbeddedRedis
servers = [EmbeddedPostgres(sys.argv[1]), EmbeddedRedis(sys.argv[1])]
print(" ".join(s.start() for s in servers), flush=True)
sys.stdin.readline()
for s in servers:
    s.stop()
"""


def test_two_processes_starting_at_once_share_one_server_each(data_dir: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOLDER_SCRIPT, str(data_dir)],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        lines = [p.stdout.readline().split() for p in procs if p.stdout is not None]
        assert len(lines) == 2 and len(lines[0]) == 2
        assert lines[0] == lines[1]
        pg_dsn, redis_url = lines[0]
        assert postgres_answers(pg_dsn)
        assert redis_answers(redis_url)
    finally:
        for p in procs:
            p.communicate("stop\n", timeout=120)
    assert [p.returncode for p in procs] == [0, 0]
    assert not postgres_answers(pg_dsn)
    assert not redis_answers(redis_url)


def test_a_holder_that_died_does_not_keep_the_server(data_dir: Path) -> None:
    # A process attaches and is killed; the next holder's stop still stops the server.
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_SCRIPT, str(data_dir)],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    pg_dsn, redis_url = proc.stdout.readline().split()
    survivor = EmbeddedPostgres(data_dir)
    assert survivor.start() == pg_dsn
    proc.kill()
    proc.communicate(timeout=30)

    survivor.stop()
    assert not postgres_answers(pg_dsn)
    # The killed process's Redis is left behind: a later start attaches to it, and stops it.
    assert redis_answers(redis_url)
    with EmbeddedRedis(data_dir) as url:
        assert url == redis_url
    assert not redis_answers(redis_url)


async def test_embedded_redis_answers_and_keeps_its_data(data_dir: Path) -> None:
    server = EmbeddedRedis(data_dir)
    url = server.start()
    try:
        client = redis.asyncio.Redis.from_url(url)
        assert await client.ping()
        await client.set("appguard:key", "value")
        await client.aclose()
    finally:
        server.stop()
    assert not redis_answers(url)

    with EmbeddedRedis(data_dir) as again:
        assert again == url
        sync_client = redis.Redis.from_url(again)
        assert sync_client.get("appguard:key") == b"value"
        sync_client.close()


async def test_redis_fixture_gives_a_private_prefix(redis_url: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set(redis_prefix + "k", "v")
        assert await client.get(redis_prefix + "k") == b"v"
    finally:
        await client.aclose()
