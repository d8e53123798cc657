"""Running the real ``appguard-collector`` CLI as a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.support.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class CollectorProcess:
    """``appguard-collector --config FILE`` in a subprocess, with its output kept in a file.

    ``env`` is added to the process's environment (what a config's ``${env:NAME}`` reads).

    The config gets a ``health_check`` extension on a free port (unless the test's config
    has one) so :meth:`wait_ready` knows when pipelines are running.
    """

    def __init__(
        self,
        config_text: str,
        workdir: Path,
        *,
        extra_args: list[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.env = dict(env or {})
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.config_path = workdir / f"collector-{self.health_port}.yaml"
        self.config_path.write_text(config_text)
        overlay = workdir / f"overlay-{self.health_port}.yaml"
        overlay.write_text(
            "extensions:\n"
            f"  health_check/test:\n    endpoint: 127.0.0.1:{self.health_port}\n"
            "service:\n"
            "  telemetry:\n"
            f"    metrics:\n      address: 127.0.0.1:{self.metrics_port}\n"
        )
        self.overlay_path = overlay
        self.extra_args = extra_args or []
        self.log_path = workdir / f"collector-{self.health_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> CollectorProcess:
        """Start the process (data dir inside the work dir)."""
        env = {**os.environ, **self.env}
        env.setdefault("APPGUARD_DATA_DIR", str(self.workdir / "data"))
        # The code under test, whichever checkout the installed package points at.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        # The overlay's extension must be listed in service.extensions: a third, tiny source.
        enable = f"yaml:service::extensions: [{self._extensions()}]"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "collector.cli",
                "--config",
                str(self.config_path),
                "--config",
                str(self.overlay_path),
                "--config",
                enable,
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
        )
        return self

    @contextlib.contextmanager
    def running(self) -> Iterator[CollectorProcess]:
        """Start, wait until ready, and on leaving stop; the exit must be clean (code 0)."""
        self.start()
        try:
            self.wait_ready()
            yield self
        finally:
            code = self.stop()
            assert code == 0, self.output()

    def _extensions(self) -> str:
        import yaml

        cfg = yaml.safe_load(self.config_path.read_text()) or {}
        listed = list((cfg.get("service") or {}).get("extensions") or [])
        return ", ".join([*listed, "health_check/test"])

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the health check says the service is available."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"collector not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def metrics_text(self) -> str:
        """The self-telemetry exposition."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def output(self) -> str:
        """Everything the process logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a clean exit, return the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as ``kill -9`` would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log.close()
