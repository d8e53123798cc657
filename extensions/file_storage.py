"""``file_storage``: a directory on the local disk where components keep state across restarts.

Keys as the contrib ``file_storage`` extension has them: ``directory``, ``timeout`` (how long
to wait for another process's lock), ``fsync``, ``create_directory``,
``directory_permissions`` and ``compaction``. Each component that asks for storage gets its
own sub-directory (``exporter_otlp_tempo_traces``), locked for the life of the client so two
collectors never share one queue. Blobs are written atomically: to a temporary file, then
renamed over the final name.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_")
_TMP_PREFIX = "."
_LOCK_NAME = ".lock"


class CompactionConfig(ComponentConfig):
    """``compaction``: accepted for compatibility (one file per entry needs no compaction).

    ``on_start`` and ``cleanup_on_start`` remove temporary files left by an interrupted write;
    that cleanup happens on every start anyway.
    """

    on_start: bool = False
    on_rebound: bool = False
    directory: str | None = None
    max_transaction_size: int = Field(default=65536, ge=0)
    rebound_needed_threshold_mib: int = Field(default=100, ge=0)
    rebound_trigger_threshold_mib: int = Field(default=10, ge=0)
    check_interval: Duration = 5.0
    cleanup_on_start: bool = False


class FileStorageConfig(ComponentConfig):
    """Where and how the extension stores its files."""

    directory: str | None = None
    timeout: Duration = 1.0
    fsync: bool = False
    create_directory: bool = False
    directory_permissions: str = "0750"
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)

    @field_validator("directory_permissions")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError("directory_permissions must be an octal number like 0750") from None
        if mode & 0o777 != mode:
            raise ValueError("directory_permissions has bits outside 0777")
        return value

    @model_validator(mode="after")
    def _directory_usable(self) -> FileStorageConfig:
        if self.directory and not self.create_directory:
            path = Path(self.directory)
            if not path.exists():
                raise ValueError(f"directory {self.directory!r} does not exist (create it, or set create_directory: true)")
            if not path.is_dir():
                raise ValueError(f"directory {self.directory!r} is not a directory")
        if self.compaction.on_rebound and self.compaction.check_interval <= 0:
            raise ValueError("compaction.check_interval must be positive when compaction.on_rebound is set")
        return self


def sanitize(name: str) -> str:
    """A component name made safe as a file name: unsafe characters become ``~`` + hex code."""
    return "".join(c if c in _SAFE else f"~{ord(c):04X}" for c in name)


class FileStorageClient:
    """One component's directory: atomic blob writes, reads, deletes and a listing.

    The methods do blocking file I/O; async callers run them in a thread.
    """

    def __init__(self, directory: Path, *, fsync: bool, lock_fd: int) -> None:
        self.directory = directory
        self.fsync = fsync
        self._lock_fd: int | None = lock_fd

    def write(self, name: str, data: bytes) -> None:
        tmp = self.directory / f"{_TMP_PREFIX}{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)
        if self.fsync:
            # The rename itself is durable only once the directory is synced.
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def delete(self, name: str) -> None:
        try:
            (self.directory / name).unlink()
        except FileNotFoundError:
            pass

    def names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if not n.startswith(_TMP_PREFIX))

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def _default_root(data_dir: str | None) -> Path:
    if data_dir is None:
        from collector.cli import default_data_dir

        data_dir = default_data_dir()
    return Path(data_dir) / "file_storage"


class FileStorage(Component):
    """Hands out :class:`FileStorageClient` objects under one root directory."""

    def __init__(self, settings: CreateSettings, config: FileStorageConfig) -> None:
        self.config = config
        self._explicit = config.directory is not None
        self.root = Path(config.directory) if config.directory else _default_root(settings.data_dir)
        self._mode = int(config.directory_permissions, 8)
        self._clients: list[FileStorageClient] = []

    async def start(self, host: Host) -> None:
        if not self.root.exists():
            # The default directory lives under AppGuard's own data directory: always created.
            if self._explicit and not self.config.create_directory:
                raise ValueError(f"file_storage: directory {str(self.root)!r} does not exist")
            self.root.mkdir(mode=self._mode, parents=True, exist_ok=True)
        if not self.root.is_dir() or not os.access(self.root, os.W_OK | os.X_OK):
            raise ValueError(f"file_storage: {str(self.root)!r} is not a writable directory")

    async def client(self, owner: str) -> FileStorageClient:
        """The locked sub-directory for ``owner``; waits ``timeout`` for another holder."""
        directory = self.root / sanitize(owner)
        directory.mkdir(mode=self._mode, parents=True, exist_ok=True)
        fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.config.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ValueError(
                        f"file_storage: {str(directory)!r} is locked by another process (waited {self.config.timeout}s)"
                    ) from None
                await asyncio.sleep(0.05)
        for leftover in directory.glob(f"{_TMP_PREFIX}*.tmp"):
            # A write interrupted by a crash: the request was never acknowledged.
            leftover.unlink(missing_ok=True)
        client = FileStorageClient(directory, fsync=self.config.fsync, lock_fd=fd)
        self._clients.append(client)
        return client

    async def shutdown(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


def _create(*, settings: CreateSettings, config: FileStorageConfig) -> FileStorage:
    return FileStorage(settings, config)


factory = Factory(
    type="file_storage",
    kind=Kind.EXTENSION,
    config_class=FileStorageConfig,
    create=_create,
    stability="beta",
    description="keeps component state (persistent sending queues) in a local directory",
)
