"""``appguard-collector api --config F``: the api extension alone, run as a user runs it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from api.config import ApiConfig
from api.extension import factory
from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.telemetry import Telemetry
from storage.embedded import EmbeddedRedis
from tests.support.api import client
from tests.support.net import free_port


def _cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_api_subcommand_serves_the_api_from_a_config(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    port = free_port()
    config = tmp_path / "api.yaml"
    config.write_text(
        "extensions:\n"
        "  api:\n"
        f"    endpoint: 127.0.0.1:{port}\n"
        f"    postgres:\n      dsn: {appguard_dsn}\n"
        f"    redis:\n      url: {redis_url}\n      key_prefix: '{redis_prefix}'\n"
        "    auth:\n      registration: open\n"
    )
    env = {**os.environ, "APPGUARD_DATA_DIR": str(tmp_path / "data")}
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "api", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/openapi.json", timeout=1) as resp:
                    assert json.loads(resp.read())["openapi"] == "3.1.0"
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "api.log").read_text()
                time.sleep(0.1)
        status, body = _post(
            f"http://127.0.0.1:{port}/api/auth/register", {"email": "a@example.com", "password": "p" * 12}
        )
        assert status == 201 and body["user"]["role"] == "admin"
        # No jwt_secret configured: one was generated and kept, readable by its owner only.
        secret = tmp_path / "data" / "api" / "jwt_secret"
        assert secret.exists() and secret.stat().st_mode & 0o777 == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "api.log").read_text()
    assert "Starting api extension on http://127.0.0.1:" in (tmp_path / "api.log").read_text()


def test_api_subcommand_reports_config_errors_with_their_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "extensions:\n"
        "  api/dash:\n"
        "    endpoint: nowhere\n"
        "    auth:\n      jwt_secret: short\n      registration: sometimes\n"
    )
    out = _cli("api", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 1
    assert "extensions.api/dash.endpoint: endpoint 'nowhere' must be host:port" in out.stderr
    assert "extensions.api/dash.auth.jwt_secret: jwt_secret must be at least 32 bytes long" in out.stderr
    assert "extensions.api/dash.auth.registration:" in out.stderr

    none = tmp_path / "none.yaml"
    none.write_text("extensions:\n  health_check:\n")
    out = _cli("api", "--config", str(none), cwd=tmp_path)
    assert out.returncode == 1 and "no api extension" in out.stderr


def test_validate_knows_the_api_extension(tmp_path: Path) -> None:
    config = tmp_path / "full.yaml"
    config.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:0\n"
        "exporters:\n  nop:\n"
        "extensions:\n  api:\n    endpoint: 127.0.0.1:0\n    rate_limits:\n      window: 5m\n"
        "service:\n  extensions: [api]\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [nop]\n"
    )
    out = _cli("validate", "--config", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "api" in _cli("components", cwd=tmp_path).stdout


@pytest.mark.slow
async def test_without_postgres_and_redis_the_extension_runs_embedded_servers() -> None:
    # Not pytest's tmp_path: under root the embedded PostgreSQL runs as another user, who must
    # be able to traverse the path, and pytest's base directory is private.
    data_dir = Path(tempfile.mkdtemp(prefix="appguard-api-embedded-"))
    try:
        await _embedded_round_trip(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _embedded_round_trip(data_dir: Path) -> None:
    settings = CreateSettings(
        ComponentID("api"), Kind.EXTENSION, Telemetry(), logging.getLogger("test.api"), str(data_dir)
    )
    config = ApiConfig.model_validate({"endpoint": "127.0.0.1:0"})
    ext = factory.create(settings=settings, config=config)
    await ext.start(Host({ComponentID("api"): ext}))
    try:
        async with client(ext) as http:
            reply = await http.register("a@example.com")
            assert reply.status == 201 and reply.body["user"]["role"] == "admin"
            assert (await http.login("a@example.com")).status == 200
        assert (data_dir / "postgres" / "data" / "PG_VERSION").exists()
        assert (data_dir / "redis" / "redis.conf").exists()
    finally:
        await ext.shutdown()
    # The last holder stopped both servers.
    assert not (data_dir / "postgres" / "data" / "postmaster.pid").exists()
    assert not EmbeddedRedis(data_dir)._running_port()
