"""OTLP/gRPC: the Trace/Metrics/LogsService ``Export`` methods on a ``grpc.aio`` server.

The methods are registered with generic handlers and no deserializer, so a handler gets the
request's bytes: it parses them once with :func:`collector.pdata.parse_request` and the bytes
travel on with the payload. Only the services of signals the receiver has pipelines for are
registered; a call to another one is answered UNIMPLEMENTED by gRPC itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from collector.auth import AuthenticationError, ServerAuthenticator
from collector.consumer import ConsumeError
from collector.netconfig import grpc_server_credentials, split_host_port
from collector.pdata import InvalidData, Payload, Signal, parse_request
from receivers.otlp.config import GRPCServerConfig
from receivers.otlp.handoff import Handoff, bad_data_count, client_metadata, refusal
from receivers.otlp.handoff import rpc_status as rpc_status_of

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}

# Every Export*ServiceResponse without partial_success serializes to no bytes at all.
_SUCCESS = b""
# The OpenTelemetry Python SDK reads a retry delay from this trailer rather than from the
# status details, so a RetryInfo is sent in both places.
_PYTHON_SDK_RETRY_INFO_KEY = "google.rpc.retryinfo-bin"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def server_options(config: GRPCServerConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments for the config's limits and keepalive settings."""
    options = [
        ("grpc.max_receive_message_length", config.max_recv_msg_bytes),
        # Several worker processes may share the port (the stock collector's way to scale
        # is more replicas; AppGuard's is also more processes on one machine).
        ("grpc.so_reuseport", 1),
    ]
    if config.max_concurrent_streams:
        options.append(("grpc.max_concurrent_streams", config.max_concurrent_streams))
    params = config.keepalive.server_parameters
    for key, value in (
        ("grpc.max_connection_idle_ms", params.max_connection_idle),
        ("grpc.max_connection_age_ms", params.max_connection_age),
        ("grpc.max_connection_age_grace_ms", params.max_connection_age_grace),
        ("grpc.keepalive_time_ms", params.time),
        ("grpc.keepalive_timeout_ms", params.timeout),
        ("grpc.http2.min_ping_interval_without_data_ms", config.keepalive.enforcement_policy.min_time),
    ):
        if value:
            options.append((key, _ms(value)))
    if config.keepalive.enforcement_policy.permit_without_stream:
        options.append(("grpc.keepalive_permit_without_calls", 1))
    return options


def peer_host(peer: str | None) -> str | None:
    """The client's IP from gRPC's peer string (``ipv4:10.0.0.1:5000``, ``ipv6:[::1]:5000``)."""
    if not peer:
        return None
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host[1:-1] if host.startswith("[") else host
    return rest or kind


class GRPCServer:
    """The OTLP/gRPC server of one receiver."""

    def __init__(
        self,
        config: GRPCServerConfig,
        handoff: Handoff,
        authenticator: ServerAuthenticator | None,
        logger: logging.Logger,
    ) -> None:
        self.config = config
        self.handoff = handoff
        self.authenticator = authenticator
        self.logger = logger
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        """Bind and serve; ``port`` is the bound TCP port afterwards."""
        server = grpc.aio.server(options=server_options(self.config))
        for signal in self.handoff.consumers:
            handler = grpc.unary_unary_rpc_method_handler(self._export_handler(signal))
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICES[signal], {"Export": handler}),))
        address = self._address()
        try:
            if self.config.tls is not None:
                port = server.add_secure_port(address, grpc_server_credentials(self.config.tls))
            else:
                port = server.add_insecure_port(address)
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        self._server = server
        if self.config.transport == "tcp":
            self.port = port
            host = split_host_port(self.config.endpoint)[0]
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            shown = self.config.endpoint
        self.logger.info("Starting GRPC server on %s", shown, extra={"endpoint": shown})

    def _address(self) -> str:
        if self.config.transport == "unix":
            return f"unix:{self.config.endpoint}"
        host, port = split_host_port(self.config.endpoint)
        if not host:
            return f"[::]:{port}"
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def stop(self, grace: float) -> None:
        """Stop taking calls; calls in flight get ``grace`` seconds to finish."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)

    def _export_handler(self, signal: Signal) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        handoff = self.handoff
        authenticator = self.authenticator
        include_metadata = self.config.include_metadata
        metrics = handoff.metrics
        admission = handoff.admission

        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            md = context.invocation_metadata()
            if authenticator is not None:
                try:
                    authenticator.authenticate({k: v for k, v in md or () if isinstance(v, str)})
                except AuthenticationError as exc:
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            try:
                async with admission.acquire(len(request)):
                    try:
                        message = parse_request(signal, request)
                    except InvalidData as exc:
                        metrics.failed(signal, bad_data_count(signal, request))
                        await _abort(context, rpc_status_of(grpc.StatusCode.INVALID_ARGUMENT, str(exc), bad_data=True))
                    payload = Payload.from_message(
                        signal,
                        message,
                        raw=request,
                        metadata=client_metadata(md or ()) if include_metadata else None,
                        client_address=peer_host(context.peer()),
                    )
                    await handoff.push(payload)
            except ConsumeError as exc:
                await _abort(context, refusal(exc).status)
            return _SUCCESS

        return export


async def _abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> NoReturn:
    """End the call with ``status``, its details in the standard trailer."""
    st = rpc_status.to_status(status)
    trailers = list(st.trailing_metadata)
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            trailers.append((_PYTHON_SDK_RETRY_INFO_KEY, detail.value))
    await context.abort(st.code, st.details, tuple(trailers))
    raise AssertionError("ServicerContext.abort returned")  # it raises; grpc has no type hints to say so
