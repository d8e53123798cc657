"""``file``: writes every export request to a file, as OTLP JSON lines or length-prefixed protobuf.

Keys as the stock contrib exporter has them: ``path``, ``append``, ``format`` (``json`` or
``proto``), ``compression`` (``zstd``), ``rotation`` (``max_megabytes``, ``max_days``,
``max_backups``, ``localtime``; on only when the key is present), ``flush_interval``,
``group_by`` (``enabled``, ``resource_attribute``, ``max_open_files``), ``create_directory``
and ``directory_permissions``.

One record per export request. JSON without compression is one OTLP JSON document per line;
otherwise each record is a 4-byte big-endian length followed by the bytes (the zstd frame when
compressed). ``consume`` only encodes and appends to an in-memory buffer; a task writes the
buffer out every ``flush_interval``, in a worker thread so a slow disk never stalls the event
loop. A buffer past :data:`FLUSH_AT_BYTES` is written at once and the caller waits for it,
which is the backpressure. Shutdown writes whatever is left.

Rotation follows lumberjack (which the stock exporter uses): once a record would take the file
past ``max_megabytes``, the file is renamed with a timestamp before its extension
(``data-2022-09-14T05-02-14.173.json``), a new file is started, and backups past
``max_backups`` or older than ``max_days`` are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Literal

import zstandard
from pydantic import Field, field_validator, model_validator

from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration
from collector.consumer import PermanentError
from collector.otlpjson import dumps as encode_json
from collector.pdata import REQUEST_TYPES, ExportRequest, Payload, Signal, count_items

MIB = 1024 * 1024
# Pending bytes past which consume() writes at once instead of waiting for the flush tick.
FLUSH_AT_BYTES = 4 * MIB
_BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"


class RotationConfig(ComponentConfig):
    """``rotation``: lumberjack's settings, with the stock defaults."""

    # The stock key is whole MiB; a fraction is accepted here (small files, tests).
    max_megabytes: float = Field(default=100, ge=0)
    max_days: int = Field(default=0, ge=0)
    max_backups: int = Field(default=100, ge=0)
    localtime: bool = False

    @property
    def max_bytes(self) -> int:
        """The size limit in bytes (0 means the 100 MiB default, as lumberjack reads it)."""
        return int((self.max_megabytes or 100) * MIB)


class GroupByConfig(ComponentConfig):
    """``group_by``: one file per value of a resource attribute."""

    enabled: bool = False
    resource_attribute: str = "fileexporter.path_segment"
    max_open_files: int = Field(default=100, gt=0)


class FileConfig(ComponentConfig):
    """The file exporter's settings, with the stock defaults."""

    path: str
    append: bool = False
    rotation: RotationConfig | None = None
    format: Literal["json", "proto"] = "json"
    encoding: str | None = None
    compression: Literal["", "zstd"] | None = None
    flush_interval: Duration = 1.0
    group_by: GroupByConfig = Field(default_factory=lambda: GroupByConfig())
    create_directory: bool = False
    directory_permissions: str | None = None

    @field_validator("rotation", mode="before")
    @classmethod
    def _empty_rotation(cls, value: Any) -> Any:
        # ``rotation:`` with no value turns rotation on with its defaults, as in the stock exporter.
        return {} if value is None else value

    @field_validator("flush_interval")
    @classmethod
    def _default_flush(cls, value: float) -> float:
        # The stock exporter reads 0 (or an absent key) as one second.
        return value or 1.0

    @model_validator(mode="after")
    def _check(self) -> FileConfig:
        if not self.path:
            raise ValueError("path must be non-empty")
        if self.encoding:
            raise ValueError("encoding extensions are not supported; use format: json or proto")
        if self.append and self.compression:
            raise ValueError("append and compression enabled at the same time is not supported")
        if self.append and self.rotation is not None:
            raise ValueError(
                "append and rotation enabled at the same time is not supported"
                " (with rotation an existing file is continued anyway: remove append)"
            )
        if self.group_by.enabled:
            parts = self.path.split("*")
            if len(parts) != 2:
                raise ValueError("path must contain exactly one * when group_by is enabled")
            if not parts[0]:
                raise ValueError("path must not start with * when group_by is enabled")
            if not self.group_by.resource_attribute:
                raise ValueError("resource_attribute must not be empty when group_by is enabled")
        if self.create_directory:
            self.dir_mode()
        elif self.directory_permissions:
            raise ValueError("directory_permissions requires create_directory to be true")
        return self

    def dir_mode(self) -> int:
        """The permissions for created directories (``0755`` unless set)."""
        text = self.directory_permissions or "0755"
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError("directory_permissions value must be a valid octal representation") from None
        if mode & 0o777 != mode:
            raise ValueError("directory_permissions contain invalid bits for file access")
        return mode


# --- rotation: lumberjack's naming and pruning ------------------------------------------------


def _split_name(path: str) -> tuple[str, str, str]:
    directory, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    return directory or ".", stem, ext


def backup_name(path: str, when: datetime) -> str:
    """``dir/stem-2006-01-02T15-04-05.000.ext`` for ``path`` rotated at ``when``."""
    directory, stem, ext = _split_name(path)
    stamp = when.strftime(_BACKUP_TIME_FORMAT) + f".{when.microsecond // 1000:03d}"
    return os.path.join(directory, f"{stem}-{stamp}{ext}")


def list_backups(path: str) -> list[tuple[datetime, str]]:
    """The rotated copies of ``path`` with the time in their names, newest first."""
    directory, stem, ext = _split_name(path)
    prefix = stem + "-"
    found: list[tuple[datetime, str]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if not name.startswith(prefix) or not name.endswith(ext):
            continue
        stamp = name[len(prefix) : len(name) - len(ext)] if ext else name[len(prefix) :]
        try:
            when = datetime.strptime(stamp, _BACKUP_TIME_FORMAT + ".%f")
        except ValueError:
            continue
        found.append((when, os.path.join(directory, name)))
    found.sort(reverse=True)
    return found


def _now(localtime: bool) -> datetime:
    # naive times in the zone the backup names use, so names and cutoffs compare directly
    return datetime.now() if localtime else datetime.now(UTC).replace(tzinfo=None)


@dataclass
class _Record:
    data: bytes
    signal: Signal
    items: int


class WriteError(OSError):
    """Writing failed; ``records`` were not (or not wholly) written."""

    def __init__(self, path: str, cause: OSError, records: list[_Record]) -> None:
        super().__init__(f"cannot write to {path}: {cause}")
        self.records = records


class FileWriter:
    """One output file: the pending records, the open handle and, if set, rotation.

    ``add`` runs on the event loop; writing runs in a worker thread, one flush at a time.
    ``dir_mode``, when set, creates the file's directory on opening.
    """

    def __init__(
        self, path: str, *, append: bool, rotation: RotationConfig | None, dir_mode: int | None = None
    ) -> None:
        self.path = path
        self.append = append
        self.rotation = rotation
        self.dir_mode = dir_mode
        self.pending: list[_Record] = []
        self.pending_bytes = 0
        self._file: BinaryIO | None = None
        self._size = 0
        self._lock = asyncio.Lock()

    def add(self, record: _Record) -> None:
        self.pending.append(record)
        self.pending_bytes += len(record.data)

    async def flush(self) -> list[_Record]:
        """Write what is pending; returns the records written, raises :class:`WriteError`."""
        async with self._lock:
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            if batch:
                write = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
                try:
                    await asyncio.shield(write)
                except asyncio.CancelledError:
                    # A thread cannot be stopped: keep the lock until it is done, so that two
                    # writes to the file never overlap.
                    await asyncio.wait([write])
                    raise
                except OSError as exc:
                    raise WriteError(self.path, exc, batch) from exc
            return batch

    async def open(self) -> None:
        """Open (or create) the file now rather than at the first write."""
        async with self._lock:
            if self._file is None:
                await asyncio.to_thread(self._open)

    async def close(self) -> list[_Record]:
        """Write what is pending and close the file."""
        try:
            return await self.flush()
        finally:
            async with self._lock:
                await asyncio.to_thread(self._discard)

    # -- the rest runs in the worker thread --

    def _open(self) -> None:
        if self.dir_mode is not None:
            os.makedirs(os.path.dirname(self.path) or ".", self.dir_mode, exist_ok=True)
        if self.rotation is not None:
            # lumberjack carries on with an existing file and prunes old backups first
            self._prune()
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across flushes
        else:
            self._file = open(self.path, "ab" if self.append else "wb")  # noqa: SIM115
        self._size = self._file.tell()

    def _write(self, batch: list[_Record]) -> None:
        try:
            self._write_records(batch)
        except OSError:
            # Drop the handle and whatever its buffer kept: those records are reported lost,
            # and must not turn up later. The next write reopens the file, appending.
            self._discard()
            raise

    def _discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self.append = True

    def _write_records(self, batch: list[_Record]) -> None:
        if self._file is None:
            self._open()
        assert self._file is not None
        limit = self.rotation.max_bytes if self.rotation is not None else 0
        chunk: list[bytes] = []
        for record in batch:
            size = len(record.data)
            # A record is never split; one larger than the limit gets a file of its own.
            if limit and self._size > 0 and self._size + size > limit:
                self._file.write(b"".join(chunk))
                chunk = []
                self._rotate()
            chunk.append(record.data)
            self._size += size
        self._file.write(b"".join(chunk))
        self._file.flush()

    def _rotate(self) -> None:
        assert self._file is not None and self.rotation is not None
        self._file.close()
        self._file = None  # reopened by the next write should anything below fail
        when = _now(self.rotation.localtime)
        target = backup_name(self.path, when)
        while os.path.exists(target):
            # two rotations in one millisecond must not overwrite each other's backup
            when += timedelta(milliseconds=1)
            target = backup_name(self.path, when)
        try:
            os.replace(self.path, target)
        finally:
            # whether or not the rename worked, there is an open file to write to next time
            self._file = open(self.path, "wb" if not os.path.exists(self.path) else "ab")  # noqa: SIM115
        self._size = self._file.tell()
        self._prune()

    def _prune(self) -> None:
        assert self.rotation is not None
        backups = list_backups(self.path)
        doomed: list[str] = []
        if self.rotation.max_backups > 0:
            doomed += [p for _, p in backups[self.rotation.max_backups :]]
            backups = backups[: self.rotation.max_backups]
        if self.rotation.max_days > 0:
            cutoff = _now(self.rotation.localtime) - timedelta(days=self.rotation.max_days)
            doomed += [p for when, p in backups if when < cutoff]
        for p in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


class FileExporter(Component):
    """Encodes each request into one record and hands it to the file it belongs in."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: FileConfig) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self.metrics = settings.telemetry.exporter(str(settings.id))
        self._compressor = zstandard.ZstdCompressor() if config.compression == "zstd" else None
        # JSON without compression is line-delimited; everything else is length-prefixed.
        self._lines = config.format == "json" and not config.compression
        self._grouped = config.group_by.enabled
        self._prefix, _, self._suffix = config.path.partition("*") if self._grouped else (config.path, "", "")
        self._writers: OrderedDict[str, FileWriter] = OrderedDict()
        self._writers_lock = asyncio.Lock()
        self._opened: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._closing = False

    async def start(self, host: Host) -> None:
        if self.config.create_directory:
            directory = os.path.dirname(self._prefix if self._grouped else self.config.path)
            if directory:
                await asyncio.to_thread(os.makedirs, directory, self.config.dir_mode(), True)
        if self._grouped:
            if self.config.rotation is not None:
                self.logger.warning("rotation is not applied to the files group_by writes")
        else:
            # open now, so a bad path fails the start rather than the first flush
            await (await self._writer(self.config.path)).open()
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"file exporter {self.settings.id} flush")

    async def _writer(self, path: str) -> FileWriter:
        writer = self._writers.get(path)
        if writer is not None:
            self._writers.move_to_end(path)
            return writer
        async with self._writers_lock:
            # Under the lock: another consumer must not reopen a file whose evicted writer is
            # still writing its last records.
            return await self._new_writer(path)

    async def _new_writer(self, path: str) -> FileWriter:
        writer = self._writers.get(path)
        if writer is not None:
            return writer
        if self._grouped and len(self._writers) >= self.config.group_by.max_open_files:
            _, evicted = self._writers.popitem(last=False)
            await self._close_writer(evicted)
        # A file reopened after eviction is appended to: truncating it would lose what this
        # run wrote before. ``append`` decides only the first opening.
        append = self.config.append or path in self._opened
        if self._grouped:
            writer = FileWriter(path, append=append, rotation=None, dir_mode=0o755)
        else:
            writer = FileWriter(path, append=append, rotation=self.config.rotation)
        self._writers[path] = writer
        self._opened.add(path)
        return writer

    def _encode(self, message: ExportRequest, raw: bytes | None) -> bytes:
        if self.config.format == "json":
            data = encode_json(message)
        else:
            data = raw if raw is not None else message.SerializeToString()
        if self._compressor is not None:
            data = self._compressor.compress(data)
        if self._lines:
            return data + b"\n"
        return struct.pack(">I", len(data)) + data

    async def consume(self, payload: Payload) -> None:
        """Encode the request and queue it for writing; waits only when the buffer is large."""
        if self._closing:
            raise PermanentError(f"file exporter {self.settings.id} is shut down")
        if self._grouped:
            targets = self._split(payload)
        else:
            # proto: the bytes as received, when no stage changed the request
            raw = payload.to_bytes() if self.config.format == "proto" else None
            targets = [(self.config.path, payload.message, raw, payload.items)]
        for path, message, raw, items in targets:
            writer = await self._writer(path)
            writer.add(_Record(self._encode(message, raw), payload.signal, items))
            if writer.pending_bytes >= FLUSH_AT_BYTES:
                try:
                    self._count(await writer.flush())
                except WriteError as exc:
                    self._failed(exc)
                    raise PermanentError(str(exc)) from None

    def _split(self, payload: Payload) -> list[tuple[str, ExportRequest, bytes | None, int]]:
        """One request per value of the grouping attribute; resources without it are dropped."""
        signal = payload.signal
        attribute = self.config.group_by.resource_attribute
        field = _RESOURCE_FIELDS[signal]
        groups: dict[str, ExportRequest] = {}
        dropped = 0
        for resource in getattr(payload.message, field):
            segment = None
            for kv in resource.resource.attributes:
                if kv.key == attribute and kv.value.WhichOneof("value") == "string_value":
                    segment = kv.value.string_value
                    break
            if segment is None:
                dropped += 1
                continue
            request = groups.get(segment)
            if request is None:
                request = groups[segment] = REQUEST_TYPES[signal]()
            getattr(request, field).add().CopyFrom(resource)
        if dropped:
            self.logger.debug("dropped %d resource(s) without the string attribute %s", dropped, attribute)
        return [(self.group_path(seg), req, None, count_items(signal, req)) for seg, req in groups.items()]

    def group_path(self, segment: str) -> str:
        """The file for one value of the grouping attribute (kept inside the path's prefix)."""
        if segment.startswith("./"):
            segment = segment[1:]
        elif segment.startswith("../"):
            segment = segment[2:]
        full = os.path.normpath(self._prefix + segment + self._suffix)
        prefix = os.path.normpath(self._prefix) + ("/" if self._prefix.endswith("/") else "")
        if full.startswith(prefix):
            return full
        # a segment like "../../etc/x" must not climb out of the prefix's directory
        return os.path.join(self._prefix, os.path.normpath("/" + segment + self._suffix).lstrip("/"))

    def _count(self, records: list[_Record]) -> None:
        for record in records:
            self.metrics.sent(record.signal, record.items)

    def _failed(self, exc: WriteError) -> None:
        # The records are lost: said once per failed write, counted per signal.
        self.logger.error("%s (%d request(s) lost)", exc, len(exc.records))
        for record in exc.records:
            self.metrics.send_failed(record.signal, record.items)

    async def _close_writer(self, writer: FileWriter) -> None:
        try:
            self._count(await writer.close())
        except WriteError as exc:
            self._failed(exc)

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.flush_interval)
            if self._stop.is_set():
                return  # shutdown writes the rest
            for writer in list(self._writers.values()):
                try:
                    self._count(await writer.flush())
                except WriteError as exc:
                    self._failed(exc)

    async def shutdown(self) -> None:
        """Stop the flush timer, write what is pending and close every file."""
        self._closing = True
        self._stop.set()
        if self._flusher is not None:
            # not cancelled: a flush under way finishes, then the loop ends
            await self._flusher
            self._flusher = None
        writers, self._writers = list(self._writers.values()), OrderedDict()
        for writer in writers:
            await self._close_writer(writer)


_RESOURCE_FIELDS = {Signal.TRACES: "resource_spans", Signal.METRICS: "resource_metrics", Signal.LOGS: "resource_logs"}


def _create(*, settings: CreateSettings, config: FileConfig, signals: frozenset[Signal]) -> FileExporter:
    return FileExporter(settings, config)


factory = Factory(
    type="file",
    kind=Kind.EXPORTER,
    config_class=FileConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="alpha",
    description="writes pipeline data to a file as OTLP JSON lines or length-prefixed protobuf",
)
