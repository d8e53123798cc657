"""The ``otlp`` receiver's config, with the stock otlpreceiver's keys and defaults.

A protocol is enabled by naming it under ``protocols``; ``grpc:`` with no value enables it with
every default, as in the stock collector. The gRPC keys are those of the stock ``configgrpc``
server settings, the HTTP keys those of ``confighttp`` plus the per-signal URL paths.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from collector.admission import AdmissionConfig
from collector.configtypes import ComponentConfig, Duration, ServerAuthConfig, TLSServerConfig
from collector.netconfig import split_host_port

MIB = 1024 * 1024
DEFAULT_GRPC_ENDPOINT = "localhost:4317"
DEFAULT_HTTP_ENDPOINT = "localhost:4318"
DEFAULT_MAX_RECV_MSG_SIZE_MIB = 4
DEFAULT_MAX_REQUEST_BODY_SIZE = 20 * MIB

# Content-Encoding values the stock confighttp server knows; "" is an uncompressed body.
KNOWN_COMPRESSION = ("", "gzip", "zstd", "zlib", "deflate", "snappy", "x-snappy-framed", "lz4")
# What AppGuard decodes. The stock default also lists snappy and lz4, which need libraries
# AppGuard does not ship; a body in them is refused with 400 like any unsupported encoding.
SUPPORTED_COMPRESSION = ("", "gzip", "zstd", "zlib", "deflate")


def _empty_is_default(value: Any) -> Any:
    # A key written with no value in YAML (``keepalive:``) means "with its defaults".
    return {} if value is None else value


class KeepaliveServerParameters(ComponentConfig):
    """``keepalive.server_parameters``: gRPC's keepalive.ServerParameters; unset keeps gRPC's default."""

    max_connection_idle: Duration | None = None
    max_connection_age: Duration | None = None
    max_connection_age_grace: Duration | None = None
    time: Duration | None = None
    timeout: Duration | None = None


class KeepaliveEnforcementPolicy(ComponentConfig):
    """``keepalive.enforcement_policy``: how often clients may ping."""

    min_time: Duration | None = None
    permit_without_stream: bool = False


class KeepaliveServerConfig(ComponentConfig):
    """``keepalive`` of a gRPC server."""

    server_parameters: KeepaliveServerParameters = Field(default_factory=KeepaliveServerParameters)
    enforcement_policy: KeepaliveEnforcementPolicy = Field(default_factory=KeepaliveEnforcementPolicy)

    _defaults = field_validator("server_parameters", "enforcement_policy", mode="before")(_empty_is_default)


class GRPCServerConfig(ComponentConfig):
    """``protocols.grpc``: the OTLP/gRPC server (stock ``configgrpc.ServerConfig``)."""

    # transport comes first so that the endpoint's check knows it
    transport: Literal["tcp", "unix"] = "tcp"
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    tls: TLSServerConfig | None = None
    max_recv_msg_size_mib: int = Field(default=DEFAULT_MAX_RECV_MSG_SIZE_MIB, ge=0)
    max_concurrent_streams: int = Field(default=0, ge=0)
    read_buffer_size: int = Field(default=512 * 1024, ge=0)
    write_buffer_size: int = Field(default=0, ge=0)
    keepalive: KeepaliveServerConfig = Field(default_factory=KeepaliveServerConfig)
    auth: ServerAuthConfig | None = None
    include_metadata: bool = False

    _defaults = field_validator("keepalive", mode="before")(_empty_is_default)

    @field_validator("endpoint", mode="after")
    @classmethod
    def _check_endpoint(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("transport", "tcp") == "tcp":
            split_host_port(value)
        elif not value:
            raise ValueError("a unix socket endpoint needs a path")
        return value

    @property
    def max_recv_msg_bytes(self) -> int:
        """The message size limit in bytes (0 in YAML means gRPC's default, 4 MiB)."""
        return (self.max_recv_msg_size_mib or DEFAULT_MAX_RECV_MSG_SIZE_MIB) * MIB


class CORSConfig(ComponentConfig):
    """``cors``: which browser origins may send, and what they may send."""

    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(default=0, ge=0)


def _url_path(value: Any) -> Any:
    # Like the stock SanitizedURLPath: the path part of a URL, made absolute.
    if not isinstance(value, str):
        return value
    if value.startswith(":"):
        raise ValueError(f"invalid HTTP URL path set for signal: {value!r} (missing protocol scheme)")
    path = urlsplit(value).path
    return path if path.startswith("/") else "/" + path


class HTTPServerConfig(ComponentConfig):
    """``protocols.http``: the OTLP/HTTP server (stock ``confighttp.ServerConfig`` plus URL paths)."""

    endpoint: str = DEFAULT_HTTP_ENDPOINT
    tls: TLSServerConfig | None = None
    cors: CORSConfig | None = None
    auth: ServerAuthConfig | None = None
    max_request_body_size: int = DEFAULT_MAX_REQUEST_BODY_SIZE
    include_metadata: bool = False
    response_headers: dict[str, str] = Field(default_factory=dict)
    compression_algorithms: list[str] = Field(default_factory=lambda: list(SUPPORTED_COMPRESSION))
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"
    # Accepted so stock configs load. idle_timeout bounds idle keep-alive connections; the
    # other timeouts are not enforced (the body read is bounded by max_request_body_size).
    read_timeout: Duration = 0.0
    read_header_timeout: Duration = 0.0
    write_timeout: Duration = 0.0
    idle_timeout: Duration = 0.0
    keep_alives_enabled: bool = True

    _defaults = field_validator("cors", mode="before")(_empty_is_default)
    _paths = field_validator("traces_url_path", "metrics_url_path", "logs_url_path", mode="before")(_url_path)

    @field_validator("max_request_body_size", mode="after")
    @classmethod
    def _body_size(cls, value: int) -> int:
        # As in the stock confighttp: zero or less means the default of 20 MiB.
        return value if value > 0 else DEFAULT_MAX_REQUEST_BODY_SIZE

    @field_validator("compression_algorithms", mode="after")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in KNOWN_COMPRESSION]
        if unknown:
            raise ValueError(f"unknown compression algorithm {unknown[0]!r} (known: {', '.join(repr(k) for k in KNOWN_COMPRESSION)})")
        return value

    @field_validator("endpoint", mode="after")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        split_host_port(value)
        return value

    @model_validator(mode="after")
    def _distinct_paths(self) -> HTTPServerConfig:
        paths = [self.traces_url_path, self.metrics_url_path, self.logs_url_path]
        if len(set(paths)) != len(paths):
            raise ValueError("traces_url_path, metrics_url_path and logs_url_path must differ")
        return self


class Protocols(ComponentConfig):
    """``protocols``: a protocol named here is served; one left out is not."""

    grpc: GRPCServerConfig | None = None
    http: HTTPServerConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _named_means_enabled(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = {k: ({} if v is None and k in ("grpc", "http") else v) for k, v in data.items()}
        return data


class OTLPReceiverConfig(ComponentConfig):
    """The ``otlp`` receiver: OTLP over gRPC (default port 4317) and HTTP (default port 4318)."""

    protocols: Protocols = Field(default_factory=Protocols)
    # Admission control by bytes in flight, shared by both transports (the stock otelarrow
    # receiver's ``admission`` block); ``request_limit_mib: 0`` turns it off.
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)

    _defaults = field_validator("protocols", "admission", mode="before")(_empty_is_default)

    @model_validator(mode="after")
    def _one_protocol(self) -> OTLPReceiverConfig:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise ValueError("must specify at least one protocol when using the OTLP receiver")
        return self
