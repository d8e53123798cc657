"""Third-party components through the entry-point group, and JSON structured logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from collector.telemetry import JsonFormatter

PLUGIN = textwrap.dedent(
    '''
    from collector.component import Component, Factory, Kind
    from collector.configtypes import ComponentConfig
    from collector.pdata import Signal


    class ShoutConfig(ComponentConfig):
        loudness: int = 3


    class Shout(Component):
        mutates_data = False

        async def consume(self, payload):
            pass


    factory = Factory(
        type="shout",
        kind=Kind.EXPORTER,
        config_class=ShoutConfig,
        create=lambda *, settings, config, signals: Shout(),
        signals=frozenset(Signal),
        description="a third-party exporter",
    )
    '''
)


def test_a_package_adds_a_component_through_the_entry_point_group(tmp_path: Path) -> None:
    (tmp_path / "shout_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[appguard.components]\nshout = shout_plugin:factory\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n"
        "exporters:\n  shout:\n    loudness: 11\n"
        "service:\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [shout]\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    listed = subprocess.run([sys.executable, "-m", "collector.cli", "components"], capture_output=True, text=True, env=env, timeout=60)
    assert any(line.split()[:1] == ["shout"] for line in listed.stdout.splitlines()), listed.stdout + listed.stderr
    ok = subprocess.run([sys.executable, "-m", "collector.cli", "validate", "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    config.write_text(config.read_text().replace("loudness: 11", "loudness: loud"))
    bad = subprocess.run([sys.executable, "-m", "collector.cli", "validate", "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1 and "exporters.shout.loudness" in bad.stderr


def test_json_log_lines_carry_the_extra_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "appguard.exporter.otlp", "levelname": "WARNING", "levelno": 30, "msg": "dropped %d spans", "args": (7,), "rejected_items": 7}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["logger"] == "appguard.exporter.otlp"
    assert line["msg"] == "dropped 7 spans" and line["rejected_items"] == 7
    assert line["ts"].endswith("Z")
