"""``otlp`` (also ``otlp_grpc``): sends traces, metrics and logs to an OTLP/gRPC backend.

Keys as the stock collector's OTLP gRPC exporter has them (``configgrpc`` client settings
plus the exporterhelper's ``timeout``, ``retry_on_failure`` and ``sending_queue``). The
request's bytes are sent as they are (an identity serializer on a raw unary call): data no
stage changed goes out exactly as it came in, never re-encoded. Failures are classified by
the OTLP specification's table of gRPC codes, honouring the server's RetryInfo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import grpc
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, field_validator, model_validator

from collector.auth import ClientAuthenticator, client_authenticator
from collector.component import CreateSettings, Factory, Host, Kind
from collector.configtypes import ClientAuthConfig, ComponentConfig, Duration, TLSClientConfig
from collector.exporterhelper import (
    ExporterBase,
    ExportError,
    ExporterSettings,
    grpc_status_retryable,
    parse_headers,
    user_agent,
)
from collector.pdata import RESPONSE_TYPES, ExportResponse, Payload, Signal

_METHODS = {
    Signal.TRACES: "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    Signal.METRICS: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    Signal.LOGS: "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class KeepaliveClientConfig(ComponentConfig):
    """``keepalive``: HTTP/2 pings on an idle connection."""

    time: Duration = 10.0
    timeout: Duration = 10.0
    permit_without_stream: bool = False


class OTLPGrpcExporterConfig(ExporterSettings):
    """The ``otlp`` / ``otlp_grpc`` exporter's settings."""

    endpoint: str
    compression: Literal["gzip", "none", ""] = "gzip"
    tls: TLSClientConfig = Field(default_factory=lambda: TLSClientConfig.model_validate({}))
    headers: dict[str, str] = Field(default_factory=dict)
    keepalive: KeepaliveClientConfig | None = None
    read_buffer_size: int = Field(default=0, ge=0)
    write_buffer_size: int = Field(default=512 * 1024, ge=0)
    wait_for_ready: bool = False
    balancer_name: Literal["round_robin", "pick_first"] = "round_robin"
    authority: str | None = None
    user_agent: str | None = None
    auth: ClientAuthConfig | None = None

    _headers = field_validator("headers", mode="before")(parse_headers)

    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: Any) -> Any:
        if value in ("zstd", "snappy", "deflate", "zlib", "lz4"):
            raise ValueError(f"compression {value!r} is not available for gRPC here (use gzip or none)")
        return value

    @model_validator(mode="after")
    def _endpoint(self) -> OTLPGrpcExporterConfig:
        if not target(self.endpoint):
            raise ValueError('requires a non-empty "endpoint"')
        if self.tls.insecure_skip_verify:
            raise ValueError("tls.insecure_skip_verify is not supported by the gRPC client (set tls.ca_file instead)")
        return self


def target(endpoint: str) -> str:
    """The gRPC target for ``endpoint``: an ``http(s)://`` prefix is not a resolver scheme."""
    for prefix in ("http://", "https://"):
        if endpoint.startswith(prefix):
            return endpoint[len(prefix) :].rstrip("/")
    return endpoint.strip()


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def channel_credentials(config: OTLPGrpcExporterConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials, or ``None`` for plaintext (``tls.insecure`` without an https:// endpoint)."""
    tls = config.tls
    if tls.insecure and not config.endpoint.startswith("https://"):
        return None
    roots = tls.ca_pem.encode() if tls.ca_pem else _read(tls.ca_file)
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=_read(tls.key_file), certificate_chain=_read(tls.cert_file)
    )


def channel_options(config: OTLPGrpcExporterConfig) -> list[tuple[str, Any]]:
    """The grpc channel arguments for the config's connection settings."""
    options: list[tuple[str, Any]] = [
        ("grpc.lb_policy_name", config.balancer_name),
        ("grpc.primary_user_agent", config.user_agent or user_agent()),
        # gRPC waits up to 2 minutes between reconnection attempts; calls fail at once in the
        # meantime. Reconnecting at least as often as the exporter retries means a backend
        # back from an outage is used at the next retry.
        ("grpc.max_reconnect_backoff_ms", max(1000, int(config.retry_on_failure.max_interval * 1000))),
    ]
    if config.write_buffer_size:
        options.append(("grpc.http2.write_buffer_size", config.write_buffer_size))
    if config.keepalive is not None:
        options += [
            ("grpc.keepalive_time_ms", int(config.keepalive.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(config.keepalive.timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", int(config.keepalive.permit_without_stream)),
        ]
    if config.authority:
        options.append(("grpc.default_authority", config.authority))
    if config.tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name_override))
    return options


def retry_delay(metadata: Any) -> float | None:
    """The RetryInfo delay in the error's status details, if the server sent one."""
    for key, value in metadata or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


def export_error(exc: grpc.aio.AioRpcError) -> ExportError:
    """An export error for a failed call, retryable per the OTLP specification."""
    code = exc.code()
    delay = retry_delay(exc.trailing_metadata())
    retryable = grpc_status_retryable(code, has_retry_info=delay is not None)
    return ExportError(
        f"rpc error: code = {code.name} desc = {exc.details()}",
        retryable=retryable,
        retry_after=delay if delay else None,
    )


class OTLPGrpcExporter(ExporterBase):
    """Sends each payload's bytes with one unary Export call."""

    config: OTLPGrpcExporterConfig
    sends_bytes_only = True

    def __init__(self, settings: CreateSettings, config: OTLPGrpcExporterConfig, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config, signals)
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[Signal, Any] = {}
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._auth: ClientAuthenticator | None = None

    async def open(self, host: Host) -> None:
        cfg = self.config
        if cfg.auth is not None:
            self._auth = client_authenticator(host, cfg.auth.authenticator, f"exporters.{self.settings.id}")
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        credentials = channel_credentials(cfg)
        options = channel_options(cfg)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target(cfg.endpoint), options=options, compression=compression)
        else:
            self._channel = grpc.aio.secure_channel(target(cfg.endpoint), credentials, options=options, compression=compression)
        for signal in self.signals:
            # No request serializer: the payload's bytes go on the wire as they are.
            self._calls[signal] = self._channel.unary_unary(
                _METHODS[signal], request_serializer=None, response_deserializer=RESPONSE_TYPES[signal].FromString
            )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _request_metadata(self) -> tuple[tuple[str, str], ...]:
        if self._auth is None:
            return self._metadata
        return self._metadata + tuple((k.lower(), v) for k, v in self._auth.request_headers().items())

    async def push(self, payload: Payload) -> None:
        call = self._calls.get(payload.signal)
        if call is None:
            raise ExportError(f"the exporter is not started for {payload.signal}", retryable=True)
        try:
            response = await call(
                payload.to_bytes(),
                metadata=self._request_metadata(),
                timeout=self.config.timeout or None,
                wait_for_ready=self.config.wait_for_ready,
            )
        except grpc.aio.AioRpcError as exc:
            raise export_error(exc) from None
        log_partial_success(self.logger, payload.signal, response)


def log_partial_success(logger: Any, signal: Signal, response: ExportResponse) -> None:
    """Warn when the backend accepted the request but rejected part of it."""
    if not response.HasField("partial_success"):
        return
    partial = response.partial_success
    if signal is Signal.TRACES:
        rejected = partial.rejected_spans  # type: ignore[union-attr]
    elif signal is Signal.METRICS:
        rejected = partial.rejected_data_points  # type: ignore[union-attr]
    else:
        rejected = partial.rejected_log_records  # type: ignore[union-attr]
    if rejected or partial.error_message:
        logger.warning(
            "Partial success response: %s (%d %s rejected)", partial.error_message, rejected, signal.item_name,
            extra={"rejected_items": rejected, "error": partial.error_message},
        )


def _create(*, settings: CreateSettings, config: OTLPGrpcExporterConfig, signals: frozenset[Signal]) -> OTLPGrpcExporter:
    return OTLPGrpcExporter(settings, config, signals)


def _factory(type_: str, description: str) -> Factory[OTLPGrpcExporterConfig]:
    return Factory(
        type=type_,
        kind=Kind.EXPORTER,
        config_class=OTLPGrpcExporterConfig,
        create=_create,
        signals=frozenset(Signal),
        stability="beta",
        description=description,
    )


factories = [
    _factory("otlp", "sends OTLP over gRPC (Tempo, another collector, any OTLP backend)"),
    _factory("otlp_grpc", "the otlp exporter under the stock collector's newer type name"),
]
