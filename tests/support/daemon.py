"""A server binary the tests start as a real peer (Prometheus, Alertmanager): its own folder,
port and log, started and waited for until its ``/-/ready`` answers, stopped with SIGTERM."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from tests.support.net import free_port

START_TIMEOUT = 30.0


class Daemon:
    """One process of ``binary`` in ``<workdir>/<name>-<port>``; subclasses give its arguments."""

    name = "daemon"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.root = workdir / f"{self.name}-{self.port}"
        self.root.mkdir(parents=True)
        self.log_path = self.root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def arguments(self) -> list[str]:
        """The command line after the binary."""
        raise NotImplementedError

    def ready_request(self) -> urllib.request.Request:
        """The request that answers 200 once the server is ready."""
        return urllib.request.Request(f"{self.url}/-/ready")

    def start(self) -> Self:
        """Start the process and wait until it is ready."""
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, *self.arguments()], stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.ready_request(), timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} was not ready within {START_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if hasattr(self, "_log"):
            self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""
