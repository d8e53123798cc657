"""``prometheusremotewrite``: sends metrics to a Prometheus remote write 1.0 receiver.

Prometheus itself (``--web.enable-remote-write-receiver``), Mimir, Cortex, Thanos and
VictoriaMetrics take it. Each payload is translated with the same rules as the ``prometheus``
exporter (``exporters._promtranslate``) into ``prometheus.WriteRequest`` messages: one time
series per label set, labels sorted with ``__name__``, samples in time order, at most
``max_batch_size_bytes`` per request, compressed with block snappy and POSTed with the
headers the specification requires.

What cannot be written is dropped and counted (``appguard_dropped_items``): delta sums and
histograms (remote write carries cumulative values only), non-monotonic delta sums, points
of unspecified temporality. Exponential histograms are written as classic ``_bucket``
histograms. A point flagged "no recorded value" is written as the stale marker.

Delivery: payloads go through the exporterhelper queue one at a time (so samples of a series
stay in order); the requests of one payload go out ``remote_write_queue.num_consumers`` at
a time. 5xx and 429 answers are retried with backoff (after ``Retry-After`` when given), and
only the requests that failed are sent again; any other 4xx is permanent.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import ssl
import struct
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from multidict import CIMultiDict
from pydantic import Field, field_validator, model_validator

from collector.auth import ClientAuthenticator, client_authenticator
from collector.component import CreateSettings, Factory, Host, Kind
from collector.configtypes import ClientAuthConfig, ComponentConfig, Duration, TLSClientConfig
from collector.exporterhelper import (
    ExporterBase,
    ExportError,
    ExporterSettings,
    RetryOnFailureConfig,
    parse_headers,
    parse_retry_after,
    user_agent,
)
from collector.ottl.values import format_float_f
from collector.pdata import Payload, Signal
from exporters import _promtranslate as pt
from exporters._promtranslate import ExponentialState, InvalidName, Naming, Translator
from exporters.otlphttp import client_session, client_ssl_context

# --------------------------------------------------------------------------------------------
# prometheus.WriteRequest (remote write 1.0), described here rather than generated


def _prompb_file() -> descriptor_pb2.FileDescriptorProto:
    """The remote write 1.0 messages (prompb ``remote.proto`` / ``types.proto``, v1 subset)."""
    f = descriptor_pb2.FileDescriptorProto(name="appguard/prompb/remote_v1.proto", package="prometheus", syntax="proto3")
    fd = descriptor_pb2.FieldDescriptorProto
    rep, opt = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field_proto = m.field.add(name=fname, number=number, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                field_proto.type_name = type_name
        return m

    message("Label", ("name", 1, fd.TYPE_STRING, opt, ""), ("value", 2, fd.TYPE_STRING, opt, ""))
    message("Sample", ("value", 1, fd.TYPE_DOUBLE, opt, ""), ("timestamp", 2, fd.TYPE_INT64, opt, ""))
    message(
        "Exemplar",
        ("labels", 1, fd.TYPE_MESSAGE, rep, ".prometheus.Label"),
        ("value", 2, fd.TYPE_DOUBLE, opt, ""),
        ("timestamp", 3, fd.TYPE_INT64, opt, ""),
    )
    message(
        "TimeSeries",
        ("labels", 1, fd.TYPE_MESSAGE, rep, ".prometheus.Label"),
        ("samples", 2, fd.TYPE_MESSAGE, rep, ".prometheus.Sample"),
        ("exemplars", 3, fd.TYPE_MESSAGE, rep, ".prometheus.Exemplar"),
    )
    meta = message(
        "MetricMetadata",
        ("type", 1, fd.TYPE_ENUM, opt, ".prometheus.MetricMetadata.MetricType"),
        ("metric_family_name", 2, fd.TYPE_STRING, opt, ""),
        ("help", 4, fd.TYPE_STRING, opt, ""),
        ("unit", 5, fd.TYPE_STRING, opt, ""),
    )
    kinds = meta.enum_type.add(name="MetricType")
    for number, name in enumerate(("UNKNOWN", "COUNTER", "GAUGE", "HISTOGRAM", "GAUGEHISTOGRAM", "SUMMARY", "INFO", "STATESET")):
        kinds.value.add(name=name, number=number)
    request = message(
        "WriteRequest",
        ("timeseries", 1, fd.TYPE_MESSAGE, rep, ".prometheus.TimeSeries"),
        ("metadata", 3, fd.TYPE_MESSAGE, rep, ".prometheus.MetricMetadata"),
    )
    # Field 2 is reserved by the specification (Cortex's source).
    request.reserved_range.add(start=2, end=3)
    return f


# A pool of our own, so that no other ``prometheus`` package in the default pool collides.
_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_prompb_file())
# The message class, for reading requests back (tests, tools); the exporter encodes below.
WriteRequest: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("prometheus.WriteRequest"))

# The stale marker of the specification: a NaN with this exact bit pattern.
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
REMOTE_WRITE_VERSION = "0.1.0"
_RESERVED_HEADERS = ("Content-Encoding", "Content-Type", "X-Prometheus-Remote-Write-Version", "User-Agent")
_MAX_ERROR_BODY = 256
_METADATA_TYPES = {
    pt.Kind.COUNTER: 1,
    pt.Kind.GAUGE: 2,
    pt.Kind.UPDOWN: 2,
    pt.Kind.HISTOGRAM: 3,
    pt.Kind.EXPONENTIAL: 3,
    pt.Kind.SUMMARY: 5,
    pt.Kind.UNKNOWN: 0,
}


# --------------------------------------------------------------------------------------------
# Config


class RemoteWriteQueueConfig(ComponentConfig):
    """``remote_write_queue``: the stock exporter's queue keys (mapped onto the sending queue)."""

    enabled: bool = True
    queue_size: int = 10000
    num_consumers: int = 5


class EnabledConfig(ComponentConfig):
    """A section with just ``enabled``."""

    enabled: bool = True


class ResourceToTelemetryConfig(ComponentConfig):
    """``resource_to_telemetry_conversion``."""

    enabled: bool = False
    exclude_service_attributes: bool = False


def _default_retry() -> RetryOnFailureConfig:
    # The stock exporter starts retrying sooner than other exporters.
    return RetryOnFailureConfig.model_validate({"initial_interval": "50ms"})


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


class PrometheusRemoteWriteConfig(ComponentConfig):
    """The ``prometheusremotewrite`` exporter's settings (the stock exporter's keys)."""

    endpoint: str
    timeout: Duration = 5.0
    retry_on_failure: RetryOnFailureConfig = Field(default_factory=_default_retry)
    remote_write_queue: RemoteWriteQueueConfig = Field(default_factory=RemoteWriteQueueConfig)
    namespace: str = ""
    external_labels: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    tls: TLSClientConfig = Field(default_factory=lambda: TLSClientConfig.model_validate({}))
    auth: ClientAuthConfig | None = None
    proxy_url: str | None = None
    compression: str = ""
    read_buffer_size: int = Field(default=0, ge=0)
    write_buffer_size: int = Field(default=512 * 1024, ge=0)
    max_idle_conns: int | None = None
    max_idle_conns_per_host: int | None = None
    max_conns_per_host: int | None = None
    idle_conn_timeout: Duration | None = None
    disable_keep_alives: bool = False
    force_attempt_http2: bool | None = None
    max_batch_size_bytes: int = 3_000_000
    max_batch_request_parallelism: int | None = None
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(default_factory=ResourceToTelemetryConfig)
    target_info: EnabledConfig = Field(default_factory=EnabledConfig)
    disable_scope_info: bool = False
    add_metric_suffixes: bool = True
    translation_strategy: Literal[
        "UnderscoreEscapingWithSuffixes",
        "UnderscoreEscapingWithoutSuffixes",
        "NoUTF8EscapingWithSuffixes",
        "NoTranslation",
    ] | None = None
    send_metadata: bool = False
    protobuf_message: Literal["prometheus.WriteRequest", "io.prometheus.write.v2.Request"] = "prometheus.WriteRequest"

    _headers = field_validator("headers", mode="before")(parse_headers)
    _external = field_validator("external_labels", mode="before")(parse_headers)
    _sections = field_validator(
        "retry_on_failure", "remote_write_queue", "resource_to_telemetry_conversion", "target_info", mode="before"
    )(_none_is_empty)

    @field_validator("endpoint", "proxy_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PrometheusRemoteWriteConfig:
        queue = self.remote_write_queue
        if queue.queue_size < 0:
            raise ValueError("remote write queue size can't be negative")
        if queue.enabled and queue.queue_size == 0:
            raise ValueError("a 0 size queue will drop all the data")
        if queue.num_consumers < 0:
            raise ValueError("remote write consumer number can't be negative")
        if self.max_batch_size_bytes < 0:
            raise ValueError("max_batch_size_bytes must be greater than 0")
        if self.max_batch_request_parallelism is not None and self.max_batch_request_parallelism < 1:
            raise ValueError("max_batch_request_parallelism can't be set to below 1")
        if self.compression not in ("", "snappy"):
            raise ValueError("compression type must be snappy")
        for key, value in self.external_labels.items():
            if not key or not value:
                raise ValueError("external labels configuration contains an empty key or value")
        if self.protobuf_message != "prometheus.WriteRequest":
            raise ValueError("only remote write 1.0 (protobuf_message: prometheus.WriteRequest) is supported")
        if self.translation_strategy in (pt.NO_UTF8_ESCAPING_WITH_SUFFIXES, pt.NO_TRANSLATION):
            raise ValueError(f"translation strategy {self.translation_strategy} requires Prometheus Remote Write 2.0 (UTF-8 support)")
        return self

    def batch_size(self) -> int:
        """``max_batch_size_bytes``, 0 meaning the default of 3000000."""
        return self.max_batch_size_bytes or 3_000_000

    def parallelism(self) -> int:
        """How many requests of one payload may be in flight at once."""
        if self.max_batch_request_parallelism is not None:
            return self.max_batch_request_parallelism
        return max(1, self.remote_write_queue.num_consumers)

    def helper_settings(self) -> ExporterSettings:
        """The exporterhelper settings: ``remote_write_queue`` as a one-consumer sending queue."""
        queue = self.remote_write_queue
        return ExporterSettings.model_validate(
            {
                "timeout": self.timeout,
                "retry_on_failure": self.retry_on_failure.model_dump(),
                # One consumer: payloads leave in the order they came, as remote write needs
                # for the samples of a series.
                "sending_queue": {"enabled": queue.enabled, "queue_size": max(1, queue.queue_size), "num_consumers": 1},
            }
        )


# --------------------------------------------------------------------------------------------
# Translation into write requests


# Protobuf encoding. The messages are small and few-shaped, and the same labels recur in
# every series of a request, so series are encoded here from cached label bytes rather than
# built as messages field by field; the bytes are what the message classes above serialize
# (canonical proto3: fields in number order, default values left out), which the tests check.

_CACHE_LIMIT = 200_000
_DOUBLE = struct.Struct("<d")


@functools.lru_cache(maxsize=8192)
def _varint(n: int) -> bytes:
    # Remembered: lengths and the timestamps of a request recur.
    if n < 0:
        n += 1 << 64  # int64 as protobuf writes a negative value: ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited field (``tag`` is the whole tag byte)."""
    return bytes((tag,)) + _varint(len(data)) + data


_LABELS: dict[tuple[str, str], bytes] = {}


def label_bytes(name: str, value: str) -> bytes:
    """A Label as field 1 of a TimeSeries or an Exemplar."""
    key = (name, value)
    cached = _LABELS.get(key)
    if cached is None:
        body = (_field(0x0A, name.encode()) if name else b"") + (_field(0x12, value.encode()) if value else b"")
        cached = _field(0x0A, body)
        if len(_LABELS) >= _CACHE_LIMIT:
            _LABELS.clear()
        _LABELS[key] = cached
    return cached


def _value_and_time(value_tag: bytes, time_tag: bytes, value: float, timestamp: int) -> bytes:
    # proto3 leaves out zero values (but not -0.0, whose bits are not zero).
    body = value_tag + _DOUBLE.pack(value) if value != 0.0 or math.copysign(1.0, value) < 0 else b""
    if timestamp:
        body += time_tag + _varint(timestamp)
    return body


def sample_bytes(value: float, timestamp: int) -> bytes:
    """A Sample (value = 1, timestamp = 2) as field 2 of a TimeSeries."""
    return _field(0x12, _value_and_time(b"\x09", b"\x10", value, timestamp))


def exemplar_bytes(labels: dict[str, str], value: float, timestamp: int) -> bytes:
    """An Exemplar (labels = 1, value = 2, timestamp = 3) as field 3 of a TimeSeries."""
    body = b"".join(label_bytes(n, v) for n, v in sorted(labels.items()))
    return _field(0x1A, body + _value_and_time(b"\x11", b"\x18", value, timestamp))


def metadata_bytes(kind: int, name: str, help_text: str, unit: str) -> bytes:
    """A MetricMetadata as field 3 of a WriteRequest."""
    body = (b"\x08" + _varint(kind) if kind else b"") + (_field(0x12, name.encode()) if name else b"")
    body += (_field(0x22, help_text.encode()) if help_text else b"") + (_field(0x2A, unit.encode()) if unit else b"")
    return _field(0x1A, body)


_NUMBERS: dict[float, str] = {}


def number_text(value: float) -> str:
    """An ``le`` or ``quantile`` label value as the stock exporter writes it (Go's shortest form)."""
    text = _NUMBERS.get(value)
    if text is None:
        text = "+Inf" if value == math.inf else format_float_f(value)
        if len(_NUMBERS) >= _CACHE_LIMIT:
            _NUMBERS.clear()
        _NUMBERS[value] = text
    return text


# --------------------------------------------------------------------------------------------
# Translation into write requests


@dataclass
class _SeriesData:
    samples: list[tuple[int, float]] = field(default_factory=list)
    exemplars: list[bytes] = field(default_factory=list)


@dataclass
class Translated:
    """One payload as remote write sees it: series by their encoded (sorted) labels, and metadata."""

    series: dict[bytes, _SeriesData] = field(default_factory=dict)
    metadata: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    dropped: int = 0
    dropped_metrics: list[str] = field(default_factory=list)


class _PointLabels:
    """A point's sorted labels, encoded, split where ``__name__`` and ``le``/``quantile`` go."""

    __slots__ = ("head", "middle", "tail")

    def __init__(self, labels: dict[str, str], extra: str) -> None:
        items = sorted(labels.items())
        names = [n for n, _ in items]
        # "__name__" sorts before "le" and "quantile": the three parts are in order.
        at_name = bisect.bisect_left(names, "__name__")
        at_extra = bisect.bisect_left(names, extra)
        encoded = [label_bytes(n, v) for n, v in items]
        self.head = b"".join(encoded[:at_name])
        self.middle = b"".join(encoded[at_name:at_extra])
        self.tail = b"".join(encoded[at_extra:])

    def key(self, name: str, extra: bytes = b"") -> bytes:
        """The encoded labels of one series of the point: with its ``__name__`` and extra label."""
        return self.head + label_bytes("__name__", name) + self.middle + extra + self.tail


class RemoteWriteTranslator:
    """OTLP export requests into time series, with the exporter's settings."""

    def __init__(self, config: PrometheusRemoteWriteConfig) -> None:
        naming = Naming.from_config(config.namespace, config.add_metric_suffixes, config.translation_strategy)
        self.naming = naming
        self.translator = Translator(
            naming,
            copy_resource=config.resource_to_telemetry_conversion.enabled,
            exclude_service=config.resource_to_telemetry_conversion.exclude_service_attributes,
            scope_labels=not config.disable_scope_info,
            keep_deltas=False,
        )
        self.external = {naming.label_name(k): v for k, v in config.external_labels.items()}
        self.target_info = config.target_info.enabled
        self.send_metadata = config.send_metadata

    def translate(self, message: Any) -> Translated:
        """Every point of an export request as samples of series."""
        out = Translated()
        tr = self.translator
        for rm in message.resource_metrics:
            resource = tr.resource(rm.resource)
            identity = resource.identity()
            latest = 0
            for sm in rm.scope_metrics:
                fixed = {**tr.scope(sm.scope, sm.schema_url), **identity}
                for metric in sm.metrics:
                    try:
                        family = tr.family(metric)
                    except InvalidName:
                        family = None
                    if family is None:
                        data = metric.WhichOneof("data")
                        out.dropped += len(getattr(metric, data).data_points) if data else 0
                        out.dropped_metrics.append(metric.name)
                        continue
                    if self.send_metadata and family.name not in out.metadata:
                        out.metadata[family.name] = (_METADATA_TYPES[family.kind], family.help, pt.unit_name(metric.unit))
                    latest = max(latest, self._metric(out, metric, family, resource, fixed))
            if self.target_info and resource.target_labels and latest:
                labels = {**resource.target_labels, **identity}
                for key, value in self.external.items():
                    labels.setdefault(key, value)
                self._add(out, _PointLabels(labels, "").key(tr.target_info_name), 1.0, latest // 1_000_000)
        return out

    def _metric(self, out: Translated, metric: Any, family: pt.Family, resource: pt.ResourceInfo, fixed: dict[str, str]) -> int:
        """Add a metric's points; the latest point time (ns)."""
        data = metric.WhichOneof("data")
        points = getattr(metric, data).data_points
        extra = "le" if data in ("histogram", "exponential_histogram") else "quantile"
        latest = 0
        name = family.name
        add = self._add
        for p in points:
            labels = self.translator.point_labels(p.attributes, resource)
            labels.update(fixed)
            for label, text in self.external.items():
                labels.setdefault(label, text)
            # Names the series' own labels take: an attribute must not give them a second time.
            labels.pop("__name__", None)
            labels.pop(extra, None)
            parts = _PointLabels(labels, extra)
            ts = p.time_unix_nano // 1_000_000
            latest = max(latest, p.time_unix_nano)
            stale = bool(p.flags & pt.NO_RECORDED_VALUE)
            if data == "gauge" or data == "sum":
                series = add(out, parts.key(name), STALE_NAN if stale else pt.number_value(p), ts)
                if family.kind == pt.Kind.COUNTER and not stale:
                    series.exemplars.extend(_exemplar(e) for e in p.exemplars)
            elif data == "summary":
                for q in p.quantile_values:
                    add(out, parts.key(name, label_bytes("quantile", number_text(q.quantile))), STALE_NAN if stale else q.value, ts)
                add(out, parts.key(name + "_sum"), STALE_NAN if stale else p.sum, ts)
                add(out, parts.key(name + "_count"), STALE_NAN if stale else float(p.count), ts)
            else:
                if data == "histogram":
                    buckets = pt.cumulative_buckets(p.explicit_bounds, p.bucket_counts, p.count)
                else:
                    buckets = ExponentialState.of(p).buckets()
                self._histogram(out, name, parts, p, buckets, ts, stale)
        return latest

    def _histogram(self, out: Translated, name: str, parts: _PointLabels, p: Any, buckets: Sequence[tuple[float, int]], ts: int, stale: bool) -> None:
        if p.HasField("sum"):
            self._add(out, parts.key(name + "_sum"), STALE_NAN if stale else p.sum, ts)
        self._add(out, parts.key(name + "_count"), STALE_NAN if stale else float(p.count), ts)
        bucket_name = name + "_bucket"
        bucket_series = [
            self._add(out, parts.key(bucket_name, label_bytes("le", number_text(le))), STALE_NAN if stale else float(n), ts)
            for le, n in buckets
        ]
        if stale or not p.exemplars:
            return
        bounds = [le for le, _ in buckets]
        for e in p.exemplars:
            # The first bucket whose bound is at least the exemplar's value.
            i = bisect.bisect_left(bounds, pt.exemplar_value(e))
            bucket_series[min(i, len(bucket_series) - 1)].exemplars.append(_exemplar(e))

    @staticmethod
    def _add(out: Translated, key: bytes, value: float, ts: int) -> _SeriesData:
        series = out.series.get(key)
        if series is None:
            series = out.series[key] = _SeriesData()
        series.samples.append((ts, value))
        return series


def _exemplar(e: Any) -> bytes:
    return exemplar_bytes(pt.exemplar_labels(e), pt.exemplar_value(e), e.time_unix_nano // 1_000_000)


def build_requests(translated: Translated, max_bytes: int) -> list[bytes]:
    """The series (and metadata) as serialized WriteRequests of at most ``max_bytes`` each.

    A series larger than ``max_bytes`` on its own goes alone in a request.
    """
    requests: list[bytes] = []
    chunks: list[bytes] = []
    size = 0

    def put(chunk: bytes) -> None:
        nonlocal chunks, size
        if chunks and size + len(chunk) > max_bytes:
            requests.append(b"".join(chunks))
            chunks, size = [], 0
        chunks.append(chunk)
        size += len(chunk)

    for key, data in translated.series.items():
        samples = data.samples
        if len(samples) > 1:
            samples.sort(key=lambda s: s[0])
        body = key + b"".join(sample_bytes(v, t) for t, v in samples) + b"".join(data.exemplars)
        put(_field(0x0A, body))
    for name, (kind, help_text, unit) in translated.metadata.items():
        put(metadata_bytes(kind, name, help_text, unit))
    if chunks:
        requests.append(b"".join(chunks))
    return requests


def compress(body: bytes) -> bytes:
    """A serialized WriteRequest as the HTTP body: block snappy."""
    return bytes(cramjam.snappy.compress_raw(body))


# --------------------------------------------------------------------------------------------
# The exporter


@dataclass(eq=False)
class _Prepared:
    """A payload's compressed requests, and which of them got through (kept across retries)."""

    bodies: list[bytes]
    done: set[int] = field(default_factory=set)
    permanent: list[str] = field(default_factory=list)


class PrometheusRemoteWriteExporter(ExporterBase):
    """Translates each payload and POSTs it as remote write requests."""

    def __init__(self, settings: CreateSettings, config: PrometheusRemoteWriteConfig, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config.helper_settings(), signals)
        self.prw = config
        self.translator = RemoteWriteTranslator(config)
        self._headers = CIMultiDict(config.headers)
        for name, value in zip(
            _RESERVED_HEADERS, ("snappy", "application/x-protobuf", REMOTE_WRITE_VERSION, user_agent()), strict=True
        ):
            # The specification forbids letting users change these.
            self._headers[name] = value
        self._prepared: weakref.WeakKeyDictionary[Payload, _Prepared] = weakref.WeakKeyDictionary()
        self._reported: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        self._ssl: ssl.SSLContext | None = None

    async def open(self, host: Host) -> None:
        cfg = self.prw
        if cfg.auth is not None:
            self._auth = client_authenticator(host, cfg.auth.authenticator, f"exporters.{self.settings.id}")
        if cfg.endpoint.startswith("https://"):
            self._ssl = client_ssl_context(cfg.tls)
        self._session = client_session(cfg)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def prepare(self, payload: Payload) -> _Prepared:
        """Translate, split and compress a payload (once; retries reuse the result)."""
        prepared = self._prepared.get(payload)
        if prepared is not None:
            return prepared
        translated = self.translator.translate(payload.message)
        if translated.dropped:
            self._dropped.labels(component=f"exporter/{self.settings.id}", otel_signal=Signal.METRICS.value, reason="not_writable").inc(translated.dropped)
            for name in translated.dropped_metrics:
                if name not in self._reported and len(self._reported) < 10_000:
                    self._reported.add(name)
                    self.logger.warning("dropping metric %s: remote write takes cumulative gauges, sums, histograms and summaries", name)
        requests = build_requests(translated, self.prw.batch_size())
        prepared = _Prepared([compress(r) for r in requests])
        self._prepared[payload] = prepared
        return prepared

    async def push(self, payload: Payload) -> None:
        if self._session is None:
            raise ExportError("the exporter is not started", retryable=True)
        prepared = self.prepare(payload)
        pending = [i for i in range(len(prepared.bodies)) if i not in prepared.done]
        slots = asyncio.Semaphore(self.prw.parallelism())

        async def send(i: int) -> None:
            async with slots:
                await self._post(prepared.bodies[i])
            prepared.done.add(i)

        results = await asyncio.gather(*(send(i) for i in pending), return_exceptions=True)
        retryable: list[ExportError] = []
        for i, result in zip(pending, results, strict=True):
            if isinstance(result, ExportError):
                if result.retryable:
                    retryable.append(result)
                else:
                    # Sending it again cannot help: it is given up on, the others retried.
                    prepared.done.add(i)
                    prepared.permanent.append(str(result))
            elif isinstance(result, BaseException):
                raise result
        if retryable:
            waits = [e.retry_after for e in retryable if e.retry_after is not None]
            raise ExportError(str(retryable[0]), retryable=True, retry_after=max(waits) if waits else None)
        self._prepared.pop(payload, None)
        if prepared.permanent:
            raise ExportError("; ".join(prepared.permanent), retryable=False)

    async def _post(self, body: bytes) -> None:
        assert self._session is not None
        url = self.prw.endpoint
        headers = self._headers
        if self._auth is not None:
            headers = headers.copy()
            for name, value in self._auth.request_headers().items():
                if name.lower() not in (h.lower() for h in _RESERVED_HEADERS):
                    headers[name] = value
        extra: dict[str, Any] = {}
        if self.prw.proxy_url:
            extra["proxy"] = self.prw.proxy_url
        if url.startswith("https://"):
            extra["ssl"] = self._ssl
            if self.prw.tls.server_name_override:
                extra["server_hostname"] = self.prw.tls.server_name_override
        try:
            async with self._session.post(url, data=body, headers=headers, **extra) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.content.read(_MAX_ERROR_BODY)).decode("utf-8", "replace").strip()
                retryable = response.status == 429 or 500 <= response.status < 600
                raise ExportError(
                    f"remote write returned HTTP status {response.status} {response.reason or ''}".rstrip() + (f": {text}" if text else ""),
                    retryable=retryable,
                    retry_after=parse_retry_after(response.headers.get("Retry-After")) if retryable else None,
                )
        except aiohttp.ClientError as exc:
            raise ExportError(f"failed to send the remote write request to {url}: {exc}", retryable=True) from None


def _create(*, settings: CreateSettings, config: PrometheusRemoteWriteConfig, signals: frozenset[Signal]) -> PrometheusRemoteWriteExporter:
    return PrometheusRemoteWriteExporter(settings, config, signals)


def _factory(type_: str, description: str) -> Factory[PrometheusRemoteWriteConfig]:
    return Factory(
        type=type_,
        kind=Kind.EXPORTER,
        config_class=PrometheusRemoteWriteConfig,
        create=_create,
        signals=frozenset({Signal.METRICS}),
        stability="beta",
        description=description,
    )


factories = [
    _factory("prometheusremotewrite", "sends metrics to a Prometheus remote write 1.0 receiver (Prometheus, Mimir, Thanos...)"),
    _factory("prometheus_remote_write", "the prometheusremotewrite exporter under the stock collector's newer type name"),
]
