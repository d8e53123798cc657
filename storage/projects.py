"""Projects and their client keys (the DSNs Sentry SDKs are configured with).

A key belongs to a project and is either active or revoked; :meth:`ProjectStore.lookup_key`
is what the ingest endpoints ask on every request (by the ``sentry_key`` the SDK sent).
Project 1, ``default``, always exists: OpenTelemetry data, which names no project, is filed
under it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

DEFAULT_PROJECT = 1


class ProjectNameTaken(ValueError):
    """Another project has this name (names are compared case-insensitively)."""


@dataclass(frozen=True)
class Project:
    """A project: its id (in DSNs and the ``project`` filters), name and platform."""

    id: int
    name: str
    platform: str
    created_at: datetime


@dataclass(frozen=True)
class ProjectKey:
    """A client key of a project."""

    id: int
    project_id: int
    public_key: str
    label: str
    rate_limit: int | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether events sent with this key are accepted."""
        return self.revoked_at is None

    def dsn(self, base_url: str) -> str:
        """The DSN to paste into a Sentry SDK: ``<scheme>://<key>@<host>[/<path>]/<project>``."""
        scheme, _, rest = base_url.rstrip("/").partition("://")
        return f"{scheme}://{self.public_key}@{rest}/{self.project_id}"


_PROJECT_COLUMNS = "id, name, platform, created_at"
_KEY_COLUMNS = "id, project_id, public_key, label, rate_limit, created_at, revoked_at"


class ProjectStore:
    """Projects and keys over a connection pool (autocommit connections)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    # ---- projects

    async def list_projects(self) -> list[Project]:
        """Every project, by id."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Project))
            await cur.execute(f"SELECT {_PROJECT_COLUMNS} FROM appguard.projects ORDER BY id")
            return await cur.fetchall()

    async def get_project(self, project_id: int) -> Project | None:
        """The project, if it exists."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Project))
            await cur.execute(f"SELECT {_PROJECT_COLUMNS} FROM appguard.projects WHERE id = %s", [project_id])
            return await cur.fetchone()

    async def create_project(self, name: str, platform: str = "") -> Project:
        """A new project with one active key; :class:`ProjectNameTaken` when the name is used."""
        async with self.pool.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=class_row(Project))
            try:
                await cur.execute(
                    f"INSERT INTO appguard.projects (name, platform) VALUES (%s, %s) RETURNING {_PROJECT_COLUMNS}",
                    [name, platform],
                )
            except psycopg.errors.UniqueViolation:
                raise ProjectNameTaken(f"there is already a project called {name!r}") from None
            project = await cur.fetchone()
            assert project is not None
            await conn.execute(
                "INSERT INTO appguard.project_keys (project_id, public_key, label) VALUES (%s, %s, 'Default')",
                [project.id, new_public_key()],
            )
            return project

    async def rename_project(self, project_id: int, name: str, platform: str | None = None) -> Project | None:
        """Change a project's name (and platform); None when it does not exist."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Project))
            try:
                await cur.execute(
                    f"UPDATE appguard.projects SET name = %s, platform = coalesce(%s, platform) WHERE id = %s "
                    f"RETURNING {_PROJECT_COLUMNS}",
                    [name, platform, project_id],
                )
            except psycopg.errors.UniqueViolation:
                raise ProjectNameTaken(f"there is already a project called {name!r}") from None
            return await cur.fetchone()

    # ---- keys

    async def list_keys(self, project_id: int) -> list[ProjectKey]:
        """A project's keys, revoked ones included, by id."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ProjectKey))
            await cur.execute(
                f"SELECT {_KEY_COLUMNS} FROM appguard.project_keys WHERE project_id = %s ORDER BY id", [project_id]
            )
            return await cur.fetchall()

    async def list_all_keys(self) -> list[ProjectKey]:
        """Every key of every project, revoked ones included, by project and id (one query for
        pages that list all projects with their keys)."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ProjectKey))
            await cur.execute(f"SELECT {_KEY_COLUMNS} FROM appguard.project_keys ORDER BY project_id, id")
            return await cur.fetchall()

    async def create_key(self, project_id: int, label: str = "", rate_limit: int | None = None) -> ProjectKey:
        """A new active key of the project."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ProjectKey))
            await cur.execute(
                "INSERT INTO appguard.project_keys (project_id, public_key, label, rate_limit) "
                f"VALUES (%s, %s, %s, %s) RETURNING {_KEY_COLUMNS}",
                [project_id, new_public_key(), label, rate_limit],
            )
            key = await cur.fetchone()
            assert key is not None
            return key

    async def revoke_key(self, project_id: int, key_id: int) -> ProjectKey | None:
        """Revoke a key (events sent with it are refused from now on); None if no such key."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ProjectKey))
            await cur.execute(
                "UPDATE appguard.project_keys SET revoked_at = coalesce(revoked_at, now()) "
                f"WHERE project_id = %s AND id = %s RETURNING {_KEY_COLUMNS}",
                [project_id, key_id],
            )
            return await cur.fetchone()

    async def lookup_key(self, public_key: str) -> ProjectKey | None:
        """The key with this public part (active or revoked), if any."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ProjectKey))
            await cur.execute(f"SELECT {_KEY_COLUMNS} FROM appguard.project_keys WHERE public_key = %s", [public_key])
            return await cur.fetchone()


def new_public_key() -> str:
    """32 random lower-case hex characters."""
    return secrets.token_hex(16)
