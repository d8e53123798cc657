"""``bearertokenauth``: a static bearer token, checked on servers and sent by clients.

Keys as the stock contrib extension has them: ``scheme`` (``Bearer``), ``token`` or
``tokens`` (any of several), ``filename`` (the token read from a file, re-read on start),
``header`` (``Authorization``).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from pathlib import Path

from pydantic import model_validator

from collector.auth import AuthenticationError
from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig


class BearerTokenAuthConfig(ComponentConfig):
    scheme: str = "Bearer"
    token: str | None = None
    tokens: list[str] | None = None
    filename: str | None = None
    header: str = "Authorization"

    @model_validator(mode="after")
    def _one_source(self) -> BearerTokenAuthConfig:
        given = [k for k in ("token", "tokens", "filename") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"set only one of token, tokens and filename (got {', '.join(given)})")
        return self


class BearerTokenAuth(Component):
    """Checks ``<header>: <scheme> <token>`` on incoming requests; adds it to outgoing ones."""

    def __init__(self, config: BearerTokenAuthConfig) -> None:
        self.config = config
        self._tokens: list[str] = list(config.tokens or ([config.token] if config.token else []))

    async def start(self, host: Host) -> None:
        if self.config.filename:
            text = await asyncio.to_thread(Path(self.config.filename).read_text, encoding="utf-8")
            self._tokens = [text.strip()]
        if not self._tokens or not all(self._tokens):
            raise ValueError("bearertokenauth: no token configured (token, tokens or filename)")

    def _expected(self, token: str) -> str:
        return f"{self.config.scheme} {token}" if self.config.scheme else token

    def authenticate(self, headers: Mapping[str, str]) -> None:
        got = headers.get(self.config.header.lower())
        if got is None:
            raise AuthenticationError(f"missing {self.config.header} header")
        # compare_digest on each candidate so a wrong token takes the same time to refuse
        if not any(hmac.compare_digest(got.encode(), self._expected(t).encode()) for t in self._tokens):
            raise AuthenticationError("invalid bearer token")

    def request_headers(self) -> dict[str, str]:
        return {self.config.header: self._expected(self._tokens[0])}


def _create(*, settings: CreateSettings, config: BearerTokenAuthConfig) -> BearerTokenAuth:
    return BearerTokenAuth(config)


factory = Factory(
    type="bearertokenauth",
    kind=Kind.EXTENSION,
    config_class=BearerTokenAuthConfig,
    create=_create,
    stability="beta",
    description="static bearer token authentication for receivers and exporters",
)
