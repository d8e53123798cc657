"""Migrations of the appguard schema against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from storage.migrations import MigrationError, load_migrations, migrate, migrate_dsn

ROOT = Path(__file__).resolve().parents[2]


async def _rows(dsn: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(query.encode(), params)
        return await cur.fetchall()


async def test_migrate_creates_the_schema_once(pg_dsn: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions[:2] == [1, 2]

    assert await migrate_dsn(pg_dsn) == versions
    assert await migrate_dsn(pg_dsn) == []

    recorded = await _rows(pg_dsn, "SELECT version FROM appguard.schema_migrations ORDER BY version")
    assert [v for (v,) in recorded] == versions
    tables = await _rows(
        pg_dsn,
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'appguard' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
    )
    # the error store's tables; later migrations (auth, ...) add their own beside them
    assert {
        "error_events",
        "issue_fingerprints",
        "issue_users",
        "issues",
        "schema_migrations",
    } <= {t for (t,) in tables}
    kind = await _rows(pg_dsn, "SELECT relkind FROM pg_class WHERE oid = 'appguard.error_events'::regclass")
    assert kind == [("p",)]  # partitioned


async def test_concurrent_migrations_apply_each_version_once(pg_dsn: str) -> None:
    results = await asyncio.gather(*(migrate_dsn(pg_dsn) for _ in range(5)))

    expected = [m.version for m in load_migrations()]
    assert sorted(results, key=len) == [[], [], [], [], expected]
    recorded = await _rows(pg_dsn, "SELECT count(*) FROM appguard.schema_migrations")
    assert recorded == [(len(expected),)]


@pytest.mark.slow
def test_migrations_from_several_processes_at_once(pg_dsn: str) -> None:
    script = (
        "import asyncio, sys; from storage.migrations import migrate_dsn; print(asyncio.run(migrate_dsn(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, pg_dsn], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())

    expected = str([m.version for m in load_migrations()])
    assert sorted(outputs) == sorted(["[]", "[]", expected])


async def test_an_edited_applied_migration_is_refused(pg_dsn: str) -> None:
    migrations = load_migrations()
    await migrate_dsn(pg_dsn)
    edited = [dataclasses.replace(migrations[0], sql=migrations[0].sql + "\n-- edited\n"), *migrations[1:]]

    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(MigrationError, match="0001_init"):
            await migrate(conn, edited)


VERSION_CASES = [
    ("1.2.3", "1.2.3", 0),
    ("1.2.10", "1.2.9", 1),
    ("v2.0", "2.0.0", 0),
    ("10.0.0", "9.9.9", 1),
    ("1.0.0-rc.1", "1.0.0", -1),
    ("1.0.0-alpha", "1.0.0-alpha.1", -1),
    ("1.0.0-alpha.10", "1.0.0-alpha.9", 1),
    ("1.0.0-2", "1.0.0-beta", -1),
    ("1.0.0+build.5", "1.0.0+build.9", 0),
    ("backend@2.1.0", "backend@2.0.9", 1),
    ("backend@2.1.0", "frontend@2.0.9", -1),  # different packages: plain text order
    ("abc123", "abd000", -1),  # not versions: plain text order
    ("2024.05.01", "2024.4.30", 1),
]


async def test_version_comparison(appguard_dsn: str) -> None:
    for a, b, expected in VERSION_CASES:
        rows = await _rows(
            appguard_dsn, "SELECT appguard.version_cmp(%s, %s), appguard.version_cmp(%s, %s)", (a, b, b, a)
        )
        assert rows == [(expected, -expected)], (a, b)
