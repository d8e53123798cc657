"""``loki``: sends logs to Grafana Loki's push API (protobuf in a snappy block).

Keys as the stock contrib Loki exporter has them (``endpoint``, the ``confighttp`` client
settings, ``default_labels_enabled``, the exporterhelper's ``timeout``, ``retry_on_failure``
and ``sending_queue``), the ``loki.*`` attribute hints, and AppGuard's own ``labels`` mapping
(the shape of the old stock exporter's), ``format``, ``tenant`` and ``structured_metadata``.

The conversion (:mod:`.convert`, :mod:`.lines`) makes one push per tenant; the pushes are
encoded by hand (:mod:`.wire`) and sent with ``X-Scope-OrgID``. 429 and 5xx answers are
retried (after ``Retry-After`` when given); any other failure, a 400 with Loki's validation
message above all, is permanent. When a request holds several tenants, a retry sends only the
pushes that did not get through yet.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from pydantic import Field, field_validator, model_validator

from collector.auth import ClientAuthenticator, client_authenticator
from collector.component import CreateSettings, Factory, Host, Kind
from collector.configtypes import ClientAuthConfig, ComponentConfig, Duration, TLSClientConfig
from collector.exporterhelper import (
    ExporterBase,
    ExportError,
    ExporterSettings,
    parse_headers,
    parse_retry_after,
    user_agent,
)
from collector.pdata import Payload, Signal
from exporters.loki import convert, wire
from exporters.otlphttp import Compressor, client_session, client_ssl_context

_PROTO = "application/x-protobuf"
# Loki's validation messages can be long (one line per refused entry): keep the start.
_MAX_RESPONSE_BYTES = 1024
# Bodies at least this large are snappy-compressed in a worker thread, off the event loop.
_THREAD_COMPRESS_BYTES = 128 * 1024
_TENANT_HEADER = "X-Scope-OrgID"


class DefaultLabelsConfig(ComponentConfig):
    """``default_labels_enabled``: the labels added unless turned off."""

    exporter: bool = True
    job: bool = True
    instance: bool = True
    level: bool = True


def _label_targets(section: str, mapping: dict[str, str]) -> dict[str, str]:
    for source, target in mapping.items():
        if target and not convert.valid_label_name(target):
            raise ValueError(
                f"the label `{target}` in \"labels.{section}\" is not a valid label name. "
                "Label names must match ^[a-zA-Z_][a-zA-Z0-9_]*$"
            )
        if not source:
            raise ValueError(f'"labels.{section}" has an empty attribute name')
    return mapping


class LabelsConfig(ComponentConfig):
    """``labels``: attributes and record fields made stream labels (``source: label_name``).

    An empty label name means the source's name, sanitized (``k8s.pod.name`` -> ``k8s_pod_name``).
    """

    resource: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, str] = Field(default_factory=dict)
    record: dict[Literal["traceID", "spanID", "severity", "severityN"], str] = Field(default_factory=dict)

    @field_validator("resource", "attributes", "record", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: "" if v is None else v for k, v in value.items()}
        return {} if value is None else value

    @model_validator(mode="after")
    def _valid_names(self) -> LabelsConfig:
        _label_targets("resource", self.resource)
        _label_targets("attributes", self.attributes)
        _label_targets("record", {str(k): v for k, v in self.record.items()})
        return self


class StructuredMetadataConfig(ComponentConfig):
    """``structured_metadata``: what each entry carries besides its line (Loki 3)."""

    enabled: bool = True
    trace_context: bool = True
    attributes: bool = True
    resource: bool = False
    max_entries: int = Field(default=convert.MAX_METADATA_ENTRIES, ge=0)
    max_size: int = Field(default=convert.MAX_METADATA_SIZE, ge=0)


class LokiExporterConfig(ExporterSettings):
    """The ``loki`` exporter's settings."""

    timeout: Duration = 30.0
    endpoint: str
    headers: dict[str, str] = Field(default_factory=dict)
    tls: TLSClientConfig = Field(default_factory=lambda: TLSClientConfig.model_validate({}))
    auth: ClientAuthConfig | None = None
    compression: Literal["", "none", "gzip", "deflate", "zlib"] = ""
    proxy_url: str | None = None
    read_buffer_size: int = Field(default=0, ge=0)
    write_buffer_size: int = Field(default=512 * 1024, ge=0)
    max_conns_per_host: int | None = Field(default=None, ge=0)
    idle_conn_timeout: Duration | None = None
    disable_keep_alives: bool = False
    default_labels_enabled: DefaultLabelsConfig = Field(default_factory=DefaultLabelsConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    format: Literal["json", "logfmt", "raw"] = "json"
    tenant: str | None = None
    structured_metadata: StructuredMetadataConfig = Field(default_factory=StructuredMetadataConfig)
    max_label_names_per_series: int = Field(default=convert.MAX_LABEL_NAMES_PER_SERIES, ge=1)

    _headers = field_validator("headers", mode="before")(parse_headers)

    @field_validator("endpoint", "proxy_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f'"endpoint" must be a valid URL: {value!r} is not an http:// or https:// URL')
        return value

    @field_validator("default_labels_enabled", "labels", "structured_metadata", mode="before")
    @classmethod
    def _section_none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


def retryable_status(status: int) -> bool:
    """Whether a push answered with ``status`` may succeed later: 429 and every 5xx."""
    return status == 429 or 500 <= status < 600


class LokiExporter(ExporterBase):
    """Converts each logs payload into pushes, one per tenant, and POSTs them to Loki."""

    config: LokiExporterConfig

    def __init__(self, settings: CreateSettings, config: LokiExporterConfig, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config, signals)
        self.converter = convert.Converter(convert.rules_from(config), self.logger)
        self._compressor = Compressor(config.compression, None)
        self._headers = CIMultiDict({"Content-Type": _PROTO, "User-Agent": user_agent()})
        if self._compressor.name:
            self._headers["Content-Encoding"] = self._compressor.name
        self._headers.update(config.headers)
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._ssl: ssl.SSLContext | None = None
        # The pushes of a payload not delivered yet: a retry sends only those.
        self._pending: weakref.WeakKeyDictionary[Payload, _Delivery] = weakref.WeakKeyDictionary()

    async def open(self, host: Host) -> None:
        cfg = self.config
        if cfg.auth is not None:
            self._auth = client_authenticator(host, cfg.auth.authenticator, f"exporters.{self.settings.id}")
        if cfg.endpoint.startswith("https://"):
            self._ssl = client_ssl_context(cfg.tls)
        self._session = client_session(cfg)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def encode(self, payload: Payload) -> list[EncodedPush]:
        """The payload as serialized PushRequests, one per tenant (snappy comes at the first send)."""
        conversion = self.converter.convert(payload.message)  # type: ignore[arg-type]
        if conversion.dropped:
            self._dropped.labels(component=f"exporter/{self.settings.id}", otel_signal=Signal.LOGS.value, reason="no_labels").inc(
                conversion.dropped
            )
        return [EncodedPush(p.tenant, p.encode()) for p in conversion.pushes]

    async def push(self, payload: Payload) -> None:
        if self._session is None:
            raise ExportError("the exporter is not started", retryable=True)
        delivery = self._pending.get(payload)
        if delivery is None:
            delivery = self._pending[payload] = _Delivery(self.encode(payload))
        while delivery.pushes:
            try:
                await self._send(delivery.pushes[0])
            except ExportError as exc:
                if exc.retryable:
                    raise
                delivery.refused.append(str(exc))
            delivery.pushes.pop(0)
        del self._pending[payload]
        if delivery.refused:
            raise ExportError("; ".join(delivery.refused), retryable=False)

    async def _send(self, item: EncodedPush) -> None:
        assert self._session is not None
        url = self.config.endpoint
        body = item.body
        if not item.compressed:
            if len(body) >= _THREAD_COMPRESS_BYTES:
                body = await asyncio.to_thread(wire.snappy_block, body)
            else:
                body = wire.snappy_block(body)
            body = await self._compressor.compress_async(body)
            item.body, item.compressed = body, True
        headers = self._headers
        if item.tenant or self._auth is not None:
            headers = headers.copy()
            if item.tenant:
                headers[_TENANT_HEADER] = item.tenant
            if self._auth is not None:
                headers.update(self._auth.request_headers())
        extra: dict[str, Any] = {}
        if self.config.proxy_url:
            extra["proxy"] = self.config.proxy_url
        if url.startswith("https://"):
            extra["ssl"] = self._ssl
            if self.config.tls.server_name_override:
                extra["server_hostname"] = self.config.tls.server_name_override
        try:
            async with self._session.post(url, data=body, headers=headers, **extra) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.content.read(_MAX_RESPONSE_BYTES)).decode("utf-8", "replace").strip()
                retryable = retryable_status(response.status)
                tenant = f" (tenant {item.tenant})" if item.tenant else ""
                raise ExportError(
                    f"HTTP {response.status} {response.reason!r}{tenant}: {text}",
                    retryable=retryable,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
                )
        except aiohttp.ClientError as exc:
            raise ExportError(f"failed to make an HTTP request to {url}: {exc}", retryable=True) from None


class EncodedPush:
    """One tenant's push: protobuf bytes, snappy-compressed on its first attempt."""

    __slots__ = ("body", "compressed", "tenant")

    def __init__(self, tenant: str | None, body: bytes) -> None:
        self.tenant = tenant
        self.body = body
        self.compressed = False


class _Delivery:
    """The pushes of one payload still to send, and the permanent refusals met so far."""

    __slots__ = ("pushes", "refused")

    def __init__(self, pushes: list[EncodedPush]) -> None:
        self.pushes = pushes
        self.refused: list[str] = []


def _create(*, settings: CreateSettings, config: LokiExporterConfig, signals: frozenset[Signal]) -> LokiExporter:
    return LokiExporter(settings, config, signals)


factory = Factory(
    type="loki",
    kind=Kind.EXPORTER,
    config_class=LokiExporterConfig,
    create=_create,
    signals=frozenset({Signal.LOGS}),
    stability="beta",
    description="sends logs to Grafana Loki's push API (labels, structured metadata, tenants)",
)

