"""Versioned SQL migrations of the ``appguard`` schema.

Each file ``NNNN_name.sql`` beside this module is one migration, applied once, in version
order, and recorded in ``appguard.schema_migrations`` with a checksum of its text. All pending
migrations run in one transaction that first takes a transaction-scoped advisory lock, so
collectors starting together apply them exactly once: the others wait, then find nothing to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

logger = logging.getLogger(f"appguard.{__name__}")

# Any constant shared by every AppGuard process works; this one spells "apgmigr" in ASCII.
MIGRATION_LOCK_KEY = 0x61_70_67_6D_69_67_72

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP_SQL = """
CREATE SCHEMA IF NOT EXISTS appguard;
CREATE TABLE IF NOT EXISTS appguard.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the migration files."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, SQL text and the SHA-256 of that text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Hex SHA-256 of the SQL, recorded when applied and compared on every later start."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The migration files shipped with this package, in version order."""
    found: list[Migration] = []
    for entry in resources.files(__package__).iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def migrate(conn: psycopg.AsyncConnection[Any], migrations: list[Migration] | None = None) -> list[int]:
    """Apply the pending migrations on ``conn`` and return the versions applied.

    ``conn`` must not be inside a transaction. Raises :class:`MigrationError` when an applied
    migration's file has changed since; versions the database has and these files do not
    (a newer AppGuard migrated it) are left alone.
    """
    todo = load_migrations() if migrations is None else migrations
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(_BOOTSTRAP_SQL)
        cur = await conn.execute("SELECT version, checksum FROM appguard.schema_migrations")
        applied: dict[int, str] = {row[0]: row[1] for row in await cur.fetchall()}
        for migration in todo:
            recorded = applied.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql was changed after it was "
                        "applied; add a new migration instead of editing an applied one"
                    )
                continue
            logger.info("applying migration %04d_%s", migration.version, migration.name)
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO appguard.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied_now.append(migration.version)
        newer = sorted(set(applied) - {m.version for m in todo})
        if newer:
            logger.info("database has migrations this version does not know: %s", newer)
    return applied_now


async def migrate_dsn(dsn: str) -> list[int]:
    """Connect to ``dsn``, apply the pending migrations and return the versions applied."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await migrate(conn)
