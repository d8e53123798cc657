"""Source maps per project and release, and how a stack frame finds its map.

A row is named like Sentry's release files: the **minified file's** URL
(``https://shop.example/static/app.min.js``) or its path under any host, written with a tilde
(``~/static/app.min.js``). It holds that file's source map and, optionally, the minified file
itself (which lets the symbolicator name functions by their position in it). Both are stored
compressed with zstd; ``map_size`` and ``sha256`` describe the map as uploaded.

A frame's ``abs_path`` (a URL, or a path for code not loaded from a web server) finds its map in
its release by, in order:

1. the exact name (with, then without the query string and fragment);
2. ``~`` followed by the URL's path, the scheme and host dropped (``~/static/app.min.js``);
3. the file name alone (``app.min.js``), but only when exactly one map of the release has it.

:meth:`SourceMapStore.resolve` does this for many paths of one release in one query.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import zstandard
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

#: Longest artifact name and release accepted (longer ones are refused by the API).
MAX_NAME_CHARS = 1024
MAX_RELEASE_CHARS = 200


@dataclass(frozen=True)
class SourceMapInfo:
    """A stored source map, without its bytes."""

    id: int
    project_id: int
    release: str
    name: str
    map_size: int
    sha256: str
    source_size: int | None
    created_at: datetime

    @property
    def has_source(self) -> bool:
        """Whether the minified file was stored with its map."""
        return self.source_size is not None


@dataclass(frozen=True)
class SourceMapFiles:
    """A stored source map with its bytes (and the minified file's, when stored)."""

    info: SourceMapInfo
    map_bytes: bytes
    source_bytes: bytes | None


@dataclass(frozen=True)
class Candidates:
    """The names a frame's path may be stored under, best first (see the module docstring)."""

    exact: tuple[str, ...]
    tilde: str | None
    basename: str | None


def _strip_query(location: str) -> str:
    for marker in ("?", "#"):
        cut = location.find(marker)
        if cut >= 0:
            location = location[:cut]
    return location


def candidates(abs_path: str) -> Candidates:
    """The names under which the map of the file at ``abs_path`` may be stored."""
    bare = _strip_query(abs_path)
    exact = (abs_path,) if bare == abs_path else (abs_path, bare)
    scheme_end = bare.find("://")
    path: str | None
    if scheme_end > 0:
        slash = bare.find("/", scheme_end + 3)
        path = bare[slash:] if slash >= 0 else None
    else:
        path = bare if bare.startswith("/") else None
    tilde = f"~{path}" if path and path != "/" else None
    return Candidates(exact=exact, tilde=tilde, basename=basename(bare) or None)


def basename(name: str) -> str:
    """What follows the last ``/`` of a name (the ``basename`` column holds the same)."""
    return name.rsplit("/", 1)[-1]


def choose(found: Iterable[SourceMapInfo], wanted: Candidates) -> SourceMapInfo | None:
    """Pick the map for ``wanted`` among the release's rows that share a name or basename with it."""
    rows = list(found)
    by_name = {row.name: row for row in rows}
    for name in wanted.exact:
        if name in by_name:
            return by_name[name]
    if wanted.tilde is not None and wanted.tilde in by_name:
        return by_name[wanted.tilde]
    if wanted.basename is not None:
        same = [row for row in rows if basename(row.name) == wanted.basename]
        if len(same) == 1:
            return same[0]
    return None


def artifact_name(name: str) -> str:
    """The name a map is filed under: the minified file's, so ``~/app.min.js.map`` -> ``~/app.min.js``."""
    return name[:-4] if name.endswith(".map") else name


_INFO_COLUMNS = "id, project_id, release, name, map_size, sha256, source_size, created_at"


def _compress(data: bytes) -> bytes:
    # A compressor per call: they are not safe to share between threads.
    return zstandard.ZstdCompressor(level=6).compress(data)


def _decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


class SourceMapStore:
    """The ``appguard.source_maps`` table over a pool of autocommit connections."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def put(
        self, project_id: int, release: str, name: str, map_bytes: bytes, source: bytes | None = None
    ) -> SourceMapInfo:
        """Store (or replace) the map of the minified file ``name`` in ``release``."""
        digest = hashlib.sha256(map_bytes).hexdigest()
        # Several megabytes take a noticeable time to compress: not on the event loop.
        map_zstd = await asyncio.to_thread(_compress, map_bytes)
        source_zstd = await asyncio.to_thread(_compress, source) if source is not None else None
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(SourceMapInfo))
            await cur.execute(
                "INSERT INTO appguard.source_maps "
                "(project_id, release, name, map_zstd, map_size, sha256, source_zstd, source_size) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (project_id, release, name) DO UPDATE SET map_zstd = excluded.map_zstd, "
                "map_size = excluded.map_size, sha256 = excluded.sha256, source_zstd = excluded.source_zstd, "
                "source_size = excluded.source_size, created_at = now() "
                f"RETURNING {_INFO_COLUMNS}",
                [
                    project_id,
                    release,
                    name,
                    map_zstd,
                    len(map_bytes),
                    digest,
                    source_zstd,
                    len(source) if source is not None else None,
                ],
            )
            info = await cur.fetchone()
            assert info is not None
            return info

    async def list_maps(self, project_id: int, release: str) -> list[SourceMapInfo]:
        """The maps of a release, by name."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(SourceMapInfo))
            await cur.execute(
                f"SELECT {_INFO_COLUMNS} FROM appguard.source_maps WHERE project_id = %s AND release = %s ORDER BY name",
                [project_id, release],
            )
            return await cur.fetchall()

    async def delete(self, project_id: int, release: str, map_id: int) -> bool:
        """Delete one map; False when the release has no map with this id."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM appguard.source_maps WHERE project_id = %s AND release = %s AND id = %s",
                [project_id, release, map_id],
            )
            return cur.rowcount > 0

    async def get(self, map_id: int) -> SourceMapFiles | None:
        """One map with its bytes, if it exists."""
        return (await self.get_many([map_id])).get(map_id)

    async def get_many(self, ids: Iterable[int]) -> dict[int, SourceMapFiles]:
        """The maps with these ids, with their bytes (ids that do not exist are left out)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_INFO_COLUMNS}, map_zstd, source_zstd FROM appguard.source_maps WHERE id = ANY(%s)",
                [wanted],
            )
            rows = await cur.fetchall()
        out: dict[int, SourceMapFiles] = {}
        for row in rows:
            info = SourceMapInfo(*row[:8])
            map_bytes = await asyncio.to_thread(_decompress, row[8])
            source = await asyncio.to_thread(_decompress, row[9]) if row[9] is not None else None
            out[info.id] = SourceMapFiles(info, map_bytes, source)
        return out

    async def resolve(self, project_id: int, release: str, abs_paths: Iterable[str]) -> dict[str, SourceMapInfo | None]:
        """The map each of ``abs_paths`` finds in the release (None: none), in one query."""
        wanted = {path: candidates(path) for path in set(abs_paths)}
        if not wanted:
            return {}
        names = sorted({n for c in wanted.values() for n in (*c.exact, c.tilde) if n is not None})
        basenames = sorted({c.basename for c in wanted.values() if c.basename is not None})
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(SourceMapInfo))
            await cur.execute(
                f"SELECT {_INFO_COLUMNS} FROM appguard.source_maps WHERE project_id = %s AND release = %s "
                "AND (name = ANY(%s) OR basename = ANY(%s))",
                [project_id, release, names, basenames],
            )
            rows = await cur.fetchall()
        return {path: choose(rows, wanted_names) for path, wanted_names in wanted.items()}
