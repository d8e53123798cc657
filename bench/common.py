"""Shared pieces of the benchmark scripts: starting the collector pinned to a core, reading
its self-metrics, peak RSS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cmd: list[str], core: int) -> list[str]:
    """Prefix ``cmd`` with taskset so it runs on one core (when taskset exists)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *cmd]
    return cmd


class Collector:
    """The collector CLI running a config, on core 0, with self-metrics on a free port."""

    def __init__(self, config: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="appguard-bench-"))
        self.metrics_port = free_port()
        path = self.dir / "config.yaml"
        path.write_text(config + f"\n  telemetry:\n    metrics:\n      address: 127.0.0.1:{self.metrics_port}\n")
        env = dict(os.environ, APPGUARD_DATA_DIR=str(self.dir / "data"))
        self.proc = subprocess.Popen(
            pinned([sys.executable, "-m", "collector.cli", "--config", str(path)], 0),
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),  # noqa: SIM115
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.metrics()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.dir / "log").read_text()) from None
                time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        """Sum of every sample by name (labels folded together)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[s.name] = out.get(s.name, 0.0) + s.value
        return out

    def cpu_seconds(self) -> float:
        """User plus system CPU time the collector process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        """The collector's peak resident set size so far (VmHWM)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def loadgen(target: str, signal_name: str, items: int, concurrency: int, duration: float) -> dict[str, float]:
    """Run the load generator on core 1 and return its JSON summary."""
    cmd = pinned(
        [sys.executable, "-m", "bench.loadgen", "--target", target, "--signal", signal_name,
         "--items", str(items), "--concurrency", str(concurrency), "--duration", str(duration)],
        1,
    )
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
