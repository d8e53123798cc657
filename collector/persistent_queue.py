"""The sending queue kept on disk, through a storage extension (``sending_queue.storage``).

Every accepted payload is written as one file (header + protobuf bytes) before ``put``
returns, so a request the receiver acknowledged survives the process being killed. A file is
deleted when its export is over (delivered, or given up on and counted); on start the queue
reloads what is left, oldest first, and exports it. Files are written atomically by the
storage client (temporary file, then rename), so a crash leaves either the whole request or
nothing.

A file is named ``<sequence>.<items>.<bytes>.req`` so the queue rebuilds its index and its
size from a directory listing alone, without reading the payloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zlib
from typing import Protocol, runtime_checkable

from collector.pdata import Payload, Signal
from collector.queue import BoundedQueue, QueueEntry, SizerName, item_count

_MAGIC = b"AGQ1"
_HEADER_LEN = struct.Struct(">I")
_SUFFIX = ".req"


@runtime_checkable
class StorageClient(Protocol):
    """A directory of named blobs owned by one component (one exporter and signal)."""

    def write(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically (all or nothing after a crash)."""
        ...

    def read(self, name: str) -> bytes:
        """The bytes stored under ``name``."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name`` (no error when it is already gone)."""
        ...

    def names(self) -> list[str]:
        """Every stored name."""
        ...

    def close(self) -> None:
        """Release the client (its lock on the directory)."""
        ...


@runtime_checkable
class StorageExtension(Protocol):
    """An extension that hands out storage clients, like ``file_storage``."""

    async def client(self, owner: str) -> StorageClient:
        """The client for ``owner`` (for example ``exporter_otlp_tempo_traces``)."""
        ...


class CorruptEntry(Exception):
    """A queued file that cannot be read back as a request."""


def encode_entry(payload: Payload) -> bytes:
    """Header (signal, item count, checksum, client metadata) and the protobuf bytes."""
    body = payload.to_bytes()
    header = json.dumps(
        {
            "signal": payload.signal.value,
            "items": item_count(payload),
            "crc32": zlib.crc32(body),
            "metadata": {k: list(v) for k, v in payload.metadata.items()},
        },
        separators=(",", ":"),
    ).encode()
    return b"".join((_MAGIC, _HEADER_LEN.pack(len(header)), header, body))


def decode_entry(data: bytes) -> Payload:
    """The payload written by :func:`encode_entry`; :class:`CorruptEntry` when damaged."""
    if data[:4] != _MAGIC or len(data) < 8:
        raise CorruptEntry("not a queued request (bad magic)")
    (length,) = _HEADER_LEN.unpack_from(data, 4)
    try:
        header = json.loads(data[8 : 8 + length])
        signal = Signal(header["signal"])
        items = int(header["items"])
        crc = int(header["crc32"])
        metadata = {str(k): tuple(v) for k, v in header.get("metadata", {}).items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"unreadable header: {exc}") from None
    body = data[8 + length :]
    if zlib.crc32(body) != crc:
        raise CorruptEntry("checksum mismatch")
    # The bytes were validated when first received; they travel on unparsed.
    return Payload(signal, None, body, items, metadata)


def _parse_name(name: str) -> tuple[int, int, int] | None:
    if not name.endswith(_SUFFIX):
        return None
    parts = name[: -len(_SUFFIX)].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    seq, items, nbytes = (int(p) for p in parts)
    return seq, items, nbytes


class PersistentQueue(BoundedQueue):
    """A :class:`~collector.queue.BoundedQueue` whose entries live in a storage client."""

    def __init__(
        self,
        capacity: int,
        sizer: SizerName,
        *,
        block_on_overflow: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(capacity, sizer, block_on_overflow=block_on_overflow)
        self._client: StorageClient | None = None
        self._next_seq = 0
        self._log = logger or logging.getLogger("appguard.persistent_queue")

    def _entry_size(self, items: int, nbytes: int) -> int:
        if self.sizer_name == "items":
            return items
        if self.sizer_name == "bytes":
            return nbytes
        return 1

    async def open(self, client: StorageClient) -> int:
        """Attach the storage and reload what a previous run left; returns the entry count."""
        self._client = client
        found = []
        for name in await asyncio.to_thread(client.names):
            parsed = _parse_name(name)
            if parsed is not None:
                found.append((parsed, name))
        found.sort()
        for (seq, items, nbytes), name in found:
            size = self._entry_size(items, nbytes)
            # What is on disk was accepted already: it is loaded even beyond the capacity.
            self.size += size
            self._append(QueueEntry(size, items, key=name))
            self._next_seq = seq + 1
        return len(found)

    async def put(self, payload: Payload, *, wait_for_result: bool = False) -> QueueEntry:
        if wait_for_result:
            raise ValueError("wait_for_result is not supported with a persistent queue")
        assert self._client is not None, "persistent queue used before open()"
        items = item_count(payload)
        data = encode_entry(payload)
        nbytes = payload.byte_size()
        size = self._entry_size(items, nbytes)
        await self._reserve(size)
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        name = f"{seq:020d}.{items}.{nbytes}{_SUFFIX}"
        entry = QueueEntry(size, items, key=name)
        write = asyncio.ensure_future(asyncio.to_thread(self._client.write, name, data))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # The caller went away, but the thread writes the file regardless: once it is on
            # disk it is queued (and exported), so memory and disk agree.
            if not write.cancelled() and await asyncio.wait([write]) and write.exception() is None:
                self._append(entry)
            else:
                self._unreserve(size)
            raise
        except BaseException:
            self._unreserve(size)
            raise
        self._append(entry)
        return entry

    async def load(self, entry: QueueEntry) -> Payload:
        assert self._client is not None and entry.key is not None
        try:
            data = await asyncio.to_thread(self._client.read, entry.key)
        except OSError as exc:
            raise CorruptEntry(f"cannot read {entry.key}: {exc}") from None
        return decode_entry(data)

    async def done(self, entry: QueueEntry, *, remove: bool = True) -> None:
        if remove and self._client is not None and entry.key is not None:
            try:
                await asyncio.to_thread(self._client.delete, entry.key)
            except OSError as exc:
                self._log.error("cannot delete exported request %s from the persistent queue: %s", entry.key, exc)
        await super().done(entry)

    async def release(self) -> None:
        if self._client is not None:
            left = self.outstanding
            if left:
                self._log.info("%d requests stay in the persistent queue; they are sent after the next start", left)
            await asyncio.to_thread(self._client.close)
            self._client = None
