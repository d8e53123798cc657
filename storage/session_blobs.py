"""Where the bodies of session replay segments are kept: PostgreSQL or a directory.

A body is the zstd of one segment's rrweb events (a JSON array). :class:`SessionStore`
(:mod:`storage.sessions`) decides *whether* a segment is stored, under the lock of its session
row; a backend only keeps and returns bytes:

- :class:`PostgresBlobs` writes into ``appguard.session_segment_bodies`` on the connection of
  the ingest transaction, so a body is committed together with its segment row, or not at all;
- :class:`DirectoryBlobs` writes ``<root>/<id[:2]>/<id>/<sequence>.zst``: to a temporary file
  first, flushed to disk, then renamed into place, so a reader sees a whole body or none. The
  file is written before the segment row commits and removed again when the commit fails; a
  process killed between the two leaves a file with no row, which the same segment sent again
  overwrites.

Session ids come from browsers: :func:`check_session_id` admits only ``[A-Za-z0-9_-]{8,64}``, and
the directory backend also checks that every path it builds stays under its root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# Bodies read from PostgreSQL per query while streaming a recording.
_READ_BATCH = 16
# A temporary file this old belongs to a write that died.
_STALE_AFTER = 3600.0


class UnsafeSessionId(ValueError):
    """A session id that may not become part of a path or a key."""


def check_session_id(session_id: str) -> str:
    """``session_id`` if it is 8 to 64 letters, digits, ``_`` or ``-``; :class:`UnsafeSessionId` otherwise."""
    if not SESSION_ID.match(session_id):
        raise UnsafeSessionId(f"session id {session_id!r} is not 8-64 characters of A-Z a-z 0-9 _ -")
    return session_id


class SegmentBlobs(Protocol):
    """A store of segment bodies, addressed by session id and sequence number."""

    kind: str

    async def put(self, conn: psycopg.AsyncConnection[Any], session_id: str, sequence: int, body: bytes) -> None:
        """Keep ``body``; called inside the transaction that inserts the segment row on ``conn``."""

    async def discard(self, session_id: str, sequence: int) -> None:
        """Undo a :meth:`put` whose transaction did not commit."""

    async def read(self, session_id: str, sequences: Sequence[int]) -> dict[int, bytes]:
        """The bodies of these segments that are found, by sequence."""

    async def remove(self, segments: Iterable[tuple[str, int]]) -> None:
        """Forget the bodies of these segments, whose rows are already deleted."""


class PostgresBlobs:
    """Bodies in ``appguard.session_segment_bodies``; deleting a segment row deletes its body."""

    kind = "postgres"

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def put(self, conn: psycopg.AsyncConnection[Any], session_id: str, sequence: int, body: bytes) -> None:
        """Insert the body in the ingest transaction."""
        await conn.execute(
            "INSERT INTO appguard.session_segment_bodies (session_id, sequence, body) VALUES (%s, %s, %s)",
            [check_session_id(session_id), sequence, body],
        )

    async def discard(self, session_id: str, sequence: int) -> None:
        """Nothing to do: the rolled-back transaction took the body with it."""

    async def read(self, session_id: str, sequences: Sequence[int]) -> dict[int, bytes]:
        """The bodies, in batches of a few per query."""
        found: dict[int, bytes] = {}
        async with self.pool.connection() as conn:
            for start in range(0, len(sequences), _READ_BATCH):
                cur = await conn.execute(
                    "SELECT sequence, body FROM appguard.session_segment_bodies WHERE session_id = %s AND sequence = ANY(%s)",
                    [session_id, list(sequences[start : start + _READ_BATCH])],
                )
                for sequence, body in await cur.fetchall():
                    found[sequence] = bytes(body)
        return found

    async def remove(self, segments: Iterable[tuple[str, int]]) -> None:
        """Nothing to do: the foreign key's cascade deleted the bodies with the rows."""


class DirectoryBlobs:
    """Bodies as files under ``root``, one folder per session."""

    kind = "directory"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def session_dir(self, session_id: str) -> Path:
        """The folder of a session's segments (checked to be under the root)."""
        check_session_id(session_id)
        folder = (self.root / session_id[:2] / session_id).resolve()
        if folder.parent.parent != self.root:
            raise UnsafeSessionId(f"session id {session_id!r} leads out of {self.root}")
        return folder

    def path(self, session_id: str, sequence: int) -> Path:
        """The file of one segment."""
        if sequence < 0:
            raise ValueError(f"a sequence number is not negative: {sequence}")
        return self.session_dir(session_id) / f"{sequence:010d}.zst"

    async def put(self, conn: psycopg.AsyncConnection[Any], session_id: str, sequence: int, body: bytes) -> None:
        """Write the file atomically (temporary file, fsync, rename, fsync of the folder)."""
        await asyncio.to_thread(self._write, self.path(session_id, sequence), body)

    async def discard(self, session_id: str, sequence: int) -> None:
        """Remove the file written for a segment whose row was not committed."""
        target = self.path(session_id, sequence)
        await asyncio.to_thread(target.unlink, missing_ok=True)

    async def read(self, session_id: str, sequences: Sequence[int]) -> dict[int, bytes]:
        """The files found, by sequence."""
        paths = {sequence: self.path(session_id, sequence) for sequence in sequences}
        return await asyncio.to_thread(self._read_all, paths)

    async def remove(self, segments: Iterable[tuple[str, int]]) -> None:
        """Remove the segments' files, then their session folders once empty (a segment that
        arrived for the session meanwhile keeps its folder)."""
        paths = [self.path(session_id, sequence) for session_id, sequence in segments]
        await asyncio.to_thread(self._remove_all, paths)

    @staticmethod
    def _write(target: Path, body: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    @staticmethod
    def _read_all(paths: dict[int, Path]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for sequence, path in paths.items():
            with contextlib.suppress(FileNotFoundError):
                found[sequence] = path.read_bytes()
        return found

    @staticmethod
    def _remove_all(paths: list[Path]) -> None:
        folders: set[Path] = set()
        for path in paths:
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:
            # Temporary files of writes that never finished go with their session (recent
            # ones may belong to a write still under way).
            for stale in folder.glob(".*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - stale.stat().st_mtime > _STALE_AFTER:
                        stale.unlink()
            with contextlib.suppress(FileNotFoundError, OSError):
                folder.rmdir()
            with contextlib.suppress(FileNotFoundError, OSError):
                folder.parent.rmdir()
