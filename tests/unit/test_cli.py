"""The CLI's validate and components commands, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GOOD = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  nop:
connectors:
  forward:
service:
  pipelines:
    traces/in:
      receivers: [otlp]
      exporters: [forward]
    traces/out:
      receivers: [forward]
      exporters: [nop]
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_validate_accepts_a_good_config(tmp_path: Path) -> None:
    cfg = tmp_path / "good.yaml"
    cfg.write_text(GOOD)
    out = _cli("validate", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "configuration is valid: 2 pipelines" in out.stdout


def test_validate_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        GOOD.replace("exporters:\n  nop:\n", "exporters:\n  nop:\n    verbose: true\n").replace(
            "exporters: [nop]", "exporters: [nop, otlp/tempo]"
        )
    )
    out = _cli("validate", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 1
    assert "exporters.nop.verbose: unknown key" in out.stderr
    assert "service.pipelines.traces/out.exporters[1]: references exporter or connector 'otlp/tempo' which is not configured" in out.stderr


def test_validate_refuses_bad_yaml_and_missing_files(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("receivers: [\n")
    out = _cli("validate", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 1 and "not valid YAML" in out.stderr
    out = _cli("validate", "--config", str(tmp_path / "absent.yaml"), cwd=tmp_path)
    assert out.returncode == 1 and "config file not found" in out.stderr


def test_validate_merges_files_and_set(tmp_path: Path) -> None:
    cfg = tmp_path / "good.yaml"
    cfg.write_text(GOOD)
    extra = tmp_path / "extra.yaml"
    extra.write_text("exporters:\n  nop/second:\n")
    out = _cli(
        "validate", "--config", str(cfg), "--config", str(extra),
        "--set", "service::pipelines::traces/out::exporters=[nop, nop/second]",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    out = _cli("validate", "--config", str(cfg), "--set", "exporters::nop::bogus=1", cwd=tmp_path)
    assert out.returncode == 1 and "exporters.nop.bogus: unknown key" in out.stderr


def test_components_lists_builtins(tmp_path: Path) -> None:
    out = _cli("components", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    sections = {line.rstrip(":") for line in out.stdout.splitlines() if not line.startswith(" ")}
    assert sections == {"receivers", "processors", "exporters", "connectors", "extensions"}
    assert any(line.split()[0] == "forward" and "traces->traces" in line for line in out.stdout.splitlines() if line.startswith("  "))
    assert any(line.split()[0] == "bearertokenauth" for line in out.stdout.splitlines() if line.startswith("  "))


def test_default_config_is_valid(tmp_path: Path) -> None:
    out = _cli("validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
