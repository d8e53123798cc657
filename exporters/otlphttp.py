"""``otlphttp`` (also ``otlp_http``): sends traces, metrics and logs to an OTLP/HTTP backend.

Keys as the stock collector's OTLP HTTP exporter has them: a base ``endpoint`` to which
``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` are appended (or a full URL per signal),
``encoding`` ``proto`` or ``json``, ``compression``, the ``confighttp`` client settings and the
exporterhelper's ``retry_on_failure`` and ``sending_queue``. With protobuf encoding an
unchanged request's bytes are sent as they came. 429, 502, 503 and 504 are retried (after
``Retry-After`` when the server sends one); any other failure status is permanent.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
import zstandard
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from multidict import CIMultiDict
from pydantic import Field, field_validator, model_validator

from collector import otlpjson
from collector.auth import ClientAuthenticator, client_authenticator
from collector.component import CreateSettings, Factory, Host, Kind
from collector.configtypes import ClientAuthConfig, ComponentConfig, Duration, TLSClientConfig
from collector.confmap import ConfigError
from collector.exporterhelper import (
    ExporterBase,
    ExportError,
    ExporterSettings,
    http_status_retryable,
    parse_headers,
    parse_retry_after,
    user_agent,
)
from collector.pdata import RESPONSE_TYPES, InvalidData, Payload, Signal
from exporters.otlp import log_partial_success

_PROTO = "application/x-protobuf"
_JSON = "application/json"
# Like the stock exporter, read at most this much of a response body.
_MAX_RESPONSE_BYTES = 64 * 1024
# Bodies at least this large are compressed in a worker thread, off the event loop.
_THREAD_COMPRESS_BYTES = 128 * 1024
_TLS_VERSIONS = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class CompressionParams(ComponentConfig):
    """``compression_params``: the compression level (gzip/deflate -1..9, zstd 1..22)."""

    level: int | None = None


class CookiesConfig(ComponentConfig):
    """``cookies``: keep cookies the server sets and send them back."""

    enabled: bool = False


class OTLPHttpExporterConfig(ExporterSettings):
    """The ``otlphttp`` / ``otlp_http`` exporter's settings."""

    timeout: Duration = 30.0
    endpoint: str | None = None
    traces_endpoint: str | None = None
    metrics_endpoint: str | None = None
    logs_endpoint: str | None = None
    profiles_endpoint: str | None = None
    encoding: Literal["proto", "json"] = "proto"
    compression: Literal["gzip", "zstd", "deflate", "zlib", "none", ""] = "gzip"
    compression_params: CompressionParams = Field(default_factory=CompressionParams)
    headers: dict[str, str] = Field(default_factory=dict)
    tls: TLSClientConfig = Field(default_factory=lambda: TLSClientConfig.model_validate({}))
    auth: ClientAuthConfig | None = None
    proxy_url: str | None = None
    read_buffer_size: int = Field(default=0, ge=0)
    write_buffer_size: int = Field(default=512 * 1024, ge=0)
    max_idle_conns: int | None = None
    max_idle_conns_per_host: int | None = None
    max_conns_per_host: int | None = None
    idle_conn_timeout: Duration | None = None
    disable_keep_alives: bool = False
    force_attempt_http2: bool | None = None
    http2_read_idle_timeout: Duration | None = None
    http2_ping_timeout: Duration | None = None
    cookies: CookiesConfig = Field(default_factory=CookiesConfig)

    _headers = field_validator("headers", mode="before")(parse_headers)

    @field_validator("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint", "profiles_endpoint", "proxy_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("compression", mode="before")
    @classmethod
    def _compression(cls, value: Any) -> Any:
        if value in ("snappy", "x-snappy-framed", "lz4"):
            raise ValueError(f"compression {value!r} is not available here (use gzip, zstd, deflate or none)")
        return value

    @model_validator(mode="after")
    def _some_endpoint(self) -> OTLPHttpExporterConfig:
        if not (self.endpoint or self.traces_endpoint or self.metrics_endpoint or self.logs_endpoint or self.profiles_endpoint):
            raise ValueError("at least one endpoint must be specified")
        for key in ("min_version", "max_version"):
            version = getattr(self.tls, key)
            if version is not None and version not in _TLS_VERSIONS:
                raise ValueError(f"tls.{key} must be one of {', '.join(_TLS_VERSIONS)} (got {version!r})")
        return self

    def signal_url(self, signal: Signal) -> str | None:
        """Where ``signal`` is sent: its own endpoint, else the base endpoint + ``/v1/<signal>``."""
        own = getattr(self, f"{signal.value}_endpoint")
        if own:
            return str(own)
        if not self.endpoint:
            return None
        sep = "" if self.endpoint.endswith("/") else "/"
        return f"{self.endpoint}{sep}v1/{signal.value}"


def client_ssl_context(tls: TLSClientConfig) -> ssl.SSLContext:
    """An SSL context for https:// URLs from the ``tls`` settings."""
    ctx = ssl.create_default_context(cafile=tls.ca_file, cadata=tls.ca_pem)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.min_version:
        ctx.minimum_version = _TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    return ctx


class ConnectionSettings(Protocol):
    """The ``confighttp`` connection keys an HTTP exporter's config has."""

    max_conns_per_host: int | None
    idle_conn_timeout: float | None
    disable_keep_alives: bool


def client_session(cfg: ConnectionSettings, *, cookies: bool = False) -> aiohttp.ClientSession:
    """An HTTP client session with the connection settings of ``cfg``.

    It sets no overall timeout: the exporterhelper bounds each attempt with ``timeout``.
    """
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=cfg.max_conns_per_host or 0,
        keepalive_timeout=cfg.idle_conn_timeout if cfg.idle_conn_timeout is not None else 90.0,
        force_close=cfg.disable_keep_alives,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.CookieJar() if cookies else aiohttp.DummyCookieJar(),
    )


class Compressor:
    """Compresses request bodies with the configured algorithm and level."""

    def __init__(self, name: str, level: int | None) -> None:
        self.name = "" if name in ("none", "") else "deflate" if name == "zlib" else name
        self.level = level
        self._zstd = zstandard.ZstdCompressor(level=level or 3) if self.name == "zstd" else None

    def compress(self, body: bytes) -> bytes:
        level = -1 if self.level is None else self.level
        if self.name == "gzip":
            c = zlib.compressobj(level, zlib.DEFLATED, 31)
            return c.compress(body) + c.flush()
        if self.name == "deflate":
            return zlib.compress(body, level)
        if self._zstd is not None:
            return self._zstd.compress(body)
        return body

    async def compress_async(self, body: bytes) -> bytes:
        if not self.name:
            return body
        if len(body) >= _THREAD_COMPRESS_BYTES:
            # zlib and zstd release the GIL: large bodies are compressed beside the loop.
            return await asyncio.to_thread(self.compress, body)
        return self.compress(body)


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    out = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        out += chunk
        if len(out) >= _MAX_RESPONSE_BYTES:
            break
    return bytes(out[:_MAX_RESPONSE_BYTES])


def _status_message(body: bytes, content_type: str) -> str:
    """The message of the google.rpc.Status an OTLP server puts in a failure's body."""
    if not body:
        return ""
    try:
        if content_type == _PROTO:
            return str(status_pb2.Status.FromString(body).message)
        if content_type == _JSON:
            return str(otlpjson.parse(body, status_pb2.Status).message)
    except (DecodeError, InvalidData):
        pass
    return body[:256].decode("utf-8", "replace")


class OTLPHttpExporter(ExporterBase):
    """POSTs each payload to its signal's URL with an aiohttp session."""

    config: OTLPHttpExporterConfig

    def __init__(self, settings: CreateSettings, config: OTLPHttpExporterConfig, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config, signals)
        self._urls: dict[Signal, str] = {}
        for signal in signals:
            url = config.signal_url(signal)
            if url is None:
                raise ConfigError(f"exporters.{settings.id}: either endpoint or {signal.value}_endpoint must be specified")
            self._urls[signal] = url
        self._compressor = Compressor(config.compression, config.compression_params.level)
        self._content_type = _JSON if config.encoding == "json" else _PROTO
        self.sends_bytes_only = config.encoding == "proto"
        # Case-insensitive, so that a configured `user-agent` replaces the default one.
        self._headers = CIMultiDict({"Content-Type": self._content_type, "User-Agent": user_agent()})
        if self._compressor.name:
            self._headers["Content-Encoding"] = self._compressor.name
        self._headers.update(config.headers)
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._ssl: ssl.SSLContext | None = None

    async def open(self, host: Host) -> None:
        cfg = self.config
        if cfg.auth is not None:
            self._auth = client_authenticator(host, cfg.auth.authenticator, f"exporters.{self.settings.id}")
        if any(url.startswith("https://") for url in self._urls.values()):
            self._ssl = client_ssl_context(cfg.tls)
        self._session = client_session(cfg, cookies=cfg.cookies.enabled)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def push(self, payload: Payload) -> None:
        if self._session is None:
            raise ExportError("the exporter is not started", retryable=True)
        url = self._urls[payload.signal]
        body = payload.to_bytes() if self._content_type == _PROTO else otlpjson.dumps(payload.message)
        data = await self._compressor.compress_async(body)
        headers = self._headers
        if self._auth is not None:
            headers = headers.copy()
            headers.update(self._auth.request_headers())
        extra: dict[str, Any] = {}
        if self.config.proxy_url:
            extra["proxy"] = self.config.proxy_url
        if url.startswith("https://"):
            extra["ssl"] = self._ssl
            if self.config.tls.server_name_override:
                extra["server_hostname"] = self.config.tls.server_name_override
        try:
            async with self._session.post(url, data=data, headers=headers, **extra) as response:
                content = await _read_limited(response)
                content_type = response.content_type
                if 200 <= response.status < 300:
                    self._partial_success(payload.signal, content, content_type)
                    return
                message = _status_message(content, content_type)
                retryable = http_status_retryable(response.status)
                raise ExportError(
                    f"error exporting items, request to {url} responded with HTTP Status Code {response.status}"
                    + (f", Message={message}" if message else ""),
                    retryable=retryable,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
                )
        except aiohttp.ClientError as exc:
            raise ExportError(f"failed to make an HTTP request to {url}: {exc}", retryable=True) from None

    def _partial_success(self, signal: Signal, content: bytes, content_type: str) -> None:
        if not content:
            return
        try:
            if content_type == _PROTO:
                response = RESPONSE_TYPES[signal].FromString(content)
            elif content_type == _JSON:
                response = otlpjson.parse(content, RESPONSE_TYPES[signal])
            else:
                return
        except (DecodeError, InvalidData) as exc:
            # The data was delivered; only the response is unreadable. Stock treats this as a
            # permanent error, which would drop data the server has: a warning is enough.
            self.logger.warning("cannot parse the export response from %s: %s", self._urls[signal], exc)
            return
        log_partial_success(self.logger, signal, response)


def _create(*, settings: CreateSettings, config: OTLPHttpExporterConfig, signals: frozenset[Signal]) -> OTLPHttpExporter:
    return OTLPHttpExporter(settings, config, signals)


def _factory(type_: str, description: str) -> Factory[OTLPHttpExporterConfig]:
    return Factory(
        type=type_,
        kind=Kind.EXPORTER,
        config_class=OTLPHttpExporterConfig,
        create=_create,
        signals=frozenset(Signal),
        stability="beta",
        description=description,
    )


factories = [
    _factory("otlphttp", "sends OTLP over HTTP (protobuf or JSON) to any OTLP backend"),
    _factory("otlp_http", "the otlphttp exporter under the stock collector's newer type name"),
]
