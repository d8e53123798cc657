"""The ``otlp`` receiver component: one gRPC and/or one HTTP server feeding the pipelines."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping

from collector.admission import BytesAdmission
from collector.auth import ServerAuthenticator, server_authenticator
from collector.component import Component, CreateSettings, Host
from collector.configtypes import ServerAuthConfig
from collector.consumer import Consumer
from collector.pdata import Signal
from receivers.otlp.config import OTLPReceiverConfig
from receivers.otlp.grpc_server import GRPCServer
from receivers.otlp.handoff import Handoff
from receivers.otlp.http_server import HTTPServer

# How long requests in flight may take to finish once shutdown begins (the service bounds the
# whole shutdown with its own shutdown_timeout as well).
SHUTDOWN_GRACE = 10.0


class OTLPReceiver(Component):
    """Receives OTLP over gRPC and HTTP, for the signals it has pipelines for.

    After :meth:`start`, ``grpc_port`` and ``http_port`` hold the bound TCP ports (useful
    with port 0), or ``None`` for a protocol not enabled.
    """

    def __init__(self, settings: CreateSettings, config: OTLPReceiverConfig, consumers: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.consumers = dict(consumers)
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._grpc: GRPCServer | None = None
        self._http: HTTPServer | None = None

    def _authenticator(self, host: Host, auth: ServerAuthConfig | None, protocol: str) -> ServerAuthenticator | None:
        if auth is None:
            return None
        owner = f"receivers.{self.settings.id}.protocols.{protocol}"
        return server_authenticator(host, auth.authenticator, owner)

    async def start(self, host: Host) -> None:
        settings, protocols = self.settings, self.config.protocols
        receiver_id = str(settings.id)
        admission = BytesAdmission.from_config(self.config.admission, settings.memory)
        # Both authenticators are looked up before any port is bound, so a wrong id fails fast.
        grpc_auth = self._authenticator(host, protocols.grpc.auth, "grpc") if protocols.grpc else None
        http_auth = self._authenticator(host, protocols.http.auth, "http") if protocols.http else None
        if protocols.grpc is not None:
            handoff = Handoff(self.consumers, settings.telemetry.receiver(receiver_id, "grpc"), settings.logger, admission)
            self._grpc = GRPCServer(protocols.grpc, handoff, grpc_auth, settings.logger)
            await self._grpc.start()
            self.grpc_port = self._grpc.port
        if protocols.http is not None:
            handoff = Handoff(self.consumers, settings.telemetry.receiver(receiver_id, "http"), settings.logger, admission)
            self._http = HTTPServer(protocols.http, handoff, http_auth, settings.logger)
            try:
                await self._http.start(SHUTDOWN_GRACE)
            except BaseException:
                # The gRPC server may already serve: stop it so a failed start leaves nothing behind.
                self._http = None
                await self.shutdown()
                raise
            self.http_port = self._http.port

    async def shutdown(self) -> None:
        # Both servers stop taking requests at once; those in flight finish within the grace.
        stopping: list[Awaitable[None]] = []
        if self._http is not None:
            stopping.append(self._http.stop())
            self._http = None
        if self._grpc is not None:
            stopping.append(self._grpc.stop(SHUTDOWN_GRACE))
            self._grpc = None
        await asyncio.gather(*stopping)
