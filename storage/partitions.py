"""Day partitions of ``appguard.error_events``.

Events are range-partitioned by their timestamp into one table per UTC day, named
``error_events_pYYYYMMDD``, plus the default partition ``error_events_default`` for timestamps
no day partition covers. Partitions are created on demand ahead of the writes that need them,
and retention drops whole days.

A new day is created by building a standalone table, moving into it whatever the default
partition holds for that day, and attaching it. Attaching only takes a SHARE UPDATE EXCLUSIVE
lock on the parent, so writers keep inserting meanwhile (``CREATE TABLE ... PARTITION OF`` would
lock them out), and rows that landed in the default partition earlier are never in the way.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

logger = logging.getLogger(f"appguard.{__name__}")

SCHEMA = "appguard"
PARENT = "error_events"
DEFAULT_PARTITION = "error_events_default"

# Serialises partition DDL between AppGuard processes ("apgpart" in ASCII).
PARTITION_LOCK_KEY = 0x61_70_67_70_61_72_74

_NAME_RE = re.compile(r"^error_events_p(\d{8})$")


def partition_name(day: date) -> str:
    """The name of the partition holding the UTC day ``day``."""
    return f"{PARENT}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of ``day``: the partition's inclusive lower bound."""
    return datetime.combine(day, time(0), tzinfo=UTC)


async def list_partitions(conn: psycopg.AsyncConnection[Any]) -> dict[date, str]:
    """The day partitions that exist now, by day."""
    cur = await conn.execute(
        """
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'appguard.error_events'::regclass
        """
    )
    days: dict[date, str] = {}
    for (name,) in await cur.fetchall():
        match = _NAME_RE.match(name)
        if match:
            days[date.fromisoformat(match.group(1))] = name
    return days


async def create_partition(conn: psycopg.AsyncConnection[Any], day: date) -> bool:
    """Create the partition of ``day`` unless it exists; True if this call created it.

    ``conn`` must not be inside a transaction.
    """
    name = partition_name(day)
    lower = day_start(day).isoformat()
    upper = day_start(day + timedelta(days=1)).isoformat()
    # Identifiers and bounds come from a date, never from input text, so formatting is safe;
    # DDL takes no bind parameters.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK_KEY,))
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{name}",))
        row = await cur.fetchone()
        if row is not None and row[0] is not None:
            return False
        # Taken first so that no writer can put rows of this day into the default partition
        # between the move and the attach; writers routed elsewhere do not touch it.
        await conn.execute(f"LOCK TABLE {SCHEMA}.{DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE".encode())
        await conn.execute(
            f"CREATE TABLE {SCHEMA}.{name} (LIKE {SCHEMA}.{PARENT} "
            "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION)".encode()
        )
        cur = await conn.execute(
            f"""
            WITH moved AS (
                DELETE FROM {SCHEMA}.{DEFAULT_PARTITION}
                WHERE "timestamp" >= '{lower}' AND "timestamp" < '{upper}'
                RETURNING *
            )
            INSERT INTO {SCHEMA}.{name} SELECT * FROM moved
            """.encode()
        )
        if cur.rowcount:
            logger.info("moved %d events from the default partition into %s", cur.rowcount, name)
        await conn.execute(
            f"ALTER TABLE {SCHEMA}.{PARENT} ATTACH PARTITION {SCHEMA}.{name} "
            f"FOR VALUES FROM ('{lower}') TO ('{upper}')".encode()
        )
    logger.debug("created partition %s", name)
    return True


async def drop_partition(conn: psycopg.AsyncConnection[Any], name: str, *, lock_timeout: float = 10.0) -> None:
    """Drop one day partition; ``conn`` must not be inside a transaction.

    Dropping needs an ACCESS EXCLUSIVE lock on the parent, which waits for the writes in
    flight and holds new ones back; the lock timeout bounds that stall.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"not a day partition: {name!r}")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK_KEY,))
        await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'".encode())
        await conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{name}".encode())
    logger.info("dropped partition %s", name)
