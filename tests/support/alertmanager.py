"""A real Prometheus Alertmanager for the integration tests (Debian's
``prometheus-alertmanager`` package).

Each :class:`AlertmanagerServer` runs its own process on a free loopback port with a temporary
config and storage directory and clustering off (``--cluster.listen-address=``). The config
routes everything to one receiver, which does nothing unless ``webhook_url`` is given (then
Alertmanager posts its notifications there, resolved ones included). With ``basic_auth`` the
HTTP API asks for that user and password (``--web.config.file``)::

    with AlertmanagerServer(binary, tmp_path) as am:
        ...post alerts to am.url...
        assert am.alerts()[0]["labels"]["alertname"] == "Checkout errors"

Fixtures: ``alertmanager_binary`` (session; ``APPGUARD_ALERTMANAGER``, else
``/usr/bin/prometheus-alertmanager``, else ``alertmanager`` on PATH; skips without one except
under CI, where that is an error), ``alertmanager_server`` and ``alertmanager_url`` (a started
server, or its base URL, stopped after the test).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon

DEBIAN_BINARY = "/usr/bin/prometheus-alertmanager"


def find_alertmanager() -> str | None:
    """The alertmanager binary: ``$APPGUARD_ALERTMANAGER``, Debian's, or one on PATH."""
    configured = os.environ.get("APPGUARD_ALERTMANAGER")
    if configured:
        return configured
    if os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of ``password`` (what ``basic_auth_users`` wants), from the C library."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the standard library's, deprecated; libxcrypt does bcrypt

    # 2**4 rounds: the cheapest bcrypt, so that every API call in a test stays quick.
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("this system's crypt() cannot make bcrypt hashes")
    return hashed


class AlertmanagerServer(Daemon):
    """One Alertmanager process with its own config, storage and port."""

    name = "alertmanager"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        basic_auth: tuple[str, str] | None = None,
        webhook_url: str | None = None,
        resolve_timeout: str = "5m",
    ) -> None:
        super().__init__(binary, workdir)
        self.config_path = self.root / "alertmanager.yml"
        self.basic_auth = basic_auth
        receiver: dict[str, Any] = {"name": "test"}
        if webhook_url is not None:
            receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
        config = {
            "global": {"resolve_timeout": resolve_timeout},
            "route": {
                "receiver": "test",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [receiver],
        }
        # JSON is YAML: no YAML writer needed.
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.web_config_path: Path | None = None
        if basic_auth is not None:
            self.web_config_path = self.root / "web.yml"
            self.web_config_path.write_text(
                json.dumps({"basic_auth_users": {basic_auth[0]: bcrypt_hash(basic_auth[1])}}) + "\n"
            )

    def arguments(self) -> list[str]:
        args = [
            f"--config.file={self.config_path}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]
        if self.web_config_path is not None:
            args.append(f"--web.config.file={self.web_config_path}")
        return args

    def ready_request(self) -> urllib.request.Request:
        return self._request("/-/ready")

    def _request(self, path: str) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path)
        if self.basic_auth is not None:
            token = base64.b64encode(f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        return request

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` with ``filters`` (``active="false"``, ``filter='alertname="x"'``...).

        Alertmanager lists only alerts that have not ended: a resolved alert is absent.
        """
        query = urllib.parse.urlencode(filters)
        try:
            with urllib.request.urlopen(
                self._request("/api/v2/alerts" + (f"?{query}" if query else "")), timeout=10
            ) as response:
                return list(json.load(response))
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GET /api/v2/alerts: HTTP {exc.code}: {exc.read()[:500]!r}") from None


@pytest.fixture(scope="session")
def alertmanager_binary() -> str:
    """Path of the alertmanager binary; skip without one, unless under CI (then fail)."""
    binary = find_alertmanager()
    if binary is None:
        message = "the alertmanager binary is not installed (apt-get install -y prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Alertmanager integration tests")
        pytest.skip(message)
    return binary


@pytest.fixture
def alertmanager_server(alertmanager_binary: str, tmp_path: Path) -> Iterator[AlertmanagerServer]:
    """A started Alertmanager (no auth, a receiver that does nothing), stopped after the test."""
    with AlertmanagerServer(alertmanager_binary, tmp_path) as server:
        yield server


@pytest.fixture
def alertmanager_url(alertmanager_server: AlertmanagerServer) -> str:
    """The base URL of a started Alertmanager (see ``alertmanager_server``)."""
    return alertmanager_server.url
