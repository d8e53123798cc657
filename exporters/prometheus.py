"""``prometheus``: serves the metrics it receives on ``/metrics`` for a Prometheus server to scrape.

Like the stock collector's Prometheus exporter, it keeps the latest value of every series
(the accumulator) and renders them at each scrape:

* gauges, cumulative sums, histograms and summaries replace the series' previous point
  (an older point than the one kept is ignored);
* monotonic delta sums and delta (exponential) histograms are added up into cumulative
  series, as long as each point starts where the previous one ended;
* non-monotonic delta sums and points of unspecified temporality are dropped;
* exponential histograms are exposed as classic ``_bucket`` histograms;
* a point flagged "no recorded value" removes its series; a series not updated for
  ``metric_expiration`` disappears.

Names, labels, ``job`` / ``instance`` and ``target_info`` follow ``exporters._promtranslate``.
The exposition is the Prometheus text format, or OpenMetrics (with exemplars carrying the
trace and span ids) when ``enable_open_metrics`` is set and the scraper asks for it. Each
metric family's text is cached until one of its series changes, so a scrape renders only
what changed since the last one.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client import exposition
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString
from pydantic import Field, field_validator

from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration, TLSServerConfig
from collector.netconfig import bind_sockets, server_ssl_context, split_host_port
from collector.pdata import Payload, Signal
from exporters import _promtranslate as pt
from exporters._promtranslate import ExponentialState, InvalidName, Naming, Translator

_METRICS_PATH = "/metrics"
_OPENMETRICS = "application/openmetrics-text"
# A scrape that renders more samples than this does it in a worker thread, so that the
# event loop keeps receiving data meanwhile.
_THREAD_RENDER_SAMPLES = 20_000
# Likewise for gzipping a body (of cached texts) larger than this.
_THREAD_COMPRESS_BYTES = 1 << 20
_IDLE_TIMEOUT = 75.0


# --------------------------------------------------------------------------------------------
# Config


class ResourceToTelemetryConfig(ComponentConfig):
    """``resource_to_telemetry_conversion``: every resource attribute as a label of every series."""

    enabled: bool = False
    exclude_service_attributes: bool = False


def _label_map(value: Any) -> Any:
    # YAML turns `version: 2` into a number; a label value is text.
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return value


class PrometheusExporterConfig(ComponentConfig):
    """The ``prometheus`` exporter's settings (the stock exporter's keys)."""

    endpoint: str = "localhost:8889"
    tls: TLSServerConfig | None = None
    namespace: str = ""
    const_labels: dict[str, str] = Field(default_factory=dict)
    send_timestamps: bool = False
    metric_expiration: Duration = 300.0
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(default_factory=ResourceToTelemetryConfig)
    enable_open_metrics: bool = False
    without_scope_info: bool = False
    add_metric_suffixes: bool = True
    translation_strategy: Literal[
        "UnderscoreEscapingWithSuffixes",
        "UnderscoreEscapingWithoutSuffixes",
        "NoUTF8EscapingWithSuffixes",
        "NoTranslation",
    ] | None = None

    _labels = field_validator("const_labels", mode="before")(_label_map)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expecting a non-blank address to run the Prometheus metrics handler")
        split_host_port(value.strip())
        return value.strip()

    @field_validator("resource_to_telemetry_conversion", mode="before")
    @classmethod
    def _r2t_none(cls, value: Any) -> Any:
        return {} if value is None else value

    def naming(self) -> Naming:
        """How metric and label names are translated."""
        return Naming.from_config(self.namespace, self.add_metric_suffixes, self.translation_strategy)


# --------------------------------------------------------------------------------------------
# The accumulator


@dataclass(eq=False)
class _FamilyState:
    """One metric family as exposed: its series and its cached renderings."""

    name: str
    type: str  # the exposition TYPE
    expo_name: str  # the family name prometheus_client wants (a counter's without ``_total``)
    help: str
    unit: str
    series: dict[tuple[Any, ...], _Series] = field(default_factory=dict)
    version: int = 0
    rendered: dict[str, bytes] = field(default_factory=dict)

    def changed(self) -> None:
        self.version += 1
        self.rendered.clear()

    def metric(self) -> Any:
        """The family as a prometheus_client metric, with every series' samples."""
        metric = _Metric(self.expo_name, self.help, self.type, self.unit)
        metric.samples = [s for series in self.series.values() for s in series.samples]
        return metric


def _expo_identity(family: pt.Family) -> tuple[str, str, str]:
    """(exposition type, family name, unit) for prometheus_client."""
    kind_type = family.type
    if kind_type == "counter":
        if family.name.endswith("_total"):
            return "counter", family.name[: -len("_total")], family.unit
        # OpenMetrics counters are named *_total; without suffixes the type is not stated.
        return "unknown", family.name, ""
    return kind_type, family.name, family.unit


class _Metric:
    """A metric family for the prometheus_client encoders (its ``Metric`` minus the name checks,
    which the translation has done already)."""

    __slots__ = ("documentation", "name", "samples", "type", "unit")

    def __init__(self, name: str, documentation: str, typ: str, unit: str) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.unit = unit
        self.samples: list[Sample] = []


@dataclass(eq=False)
class _Series:
    """The value kept for one series, and the samples it is exposed as."""

    family: _FamilyState
    start: int
    time: int
    state: Any
    samples: list[Sample]
    updated: float


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int]
    count: int
    sum: float | None


class _One(Collector):
    """A registry of one family, to render it alone."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Any]:
        return [self._metric]


class Accumulator:
    """The latest value of every series, by family, ready to render."""

    def __init__(self, config: PrometheusExporterConfig, logger: Any) -> None:
        self.config = config
        self.logger = logger
        naming = config.naming()
        self.translator = Translator(
            naming,
            copy_resource=config.resource_to_telemetry_conversion.enabled,
            exclude_service=config.resource_to_telemetry_conversion.exclude_service_attributes,
            scope_labels=not config.without_scope_info,
            keep_deltas=True,
        )
        self.const_labels: dict[str, str] = {}
        for key, value in config.const_labels.items():
            try:
                self.const_labels[naming.label_name(key)] = value
            except InvalidName:
                logger.warning("const_labels: %r is not a usable label name; ignored", key)
        self.families: dict[str, _FamilyState] = {}
        self.series: OrderedDict[tuple[Any, ...], _Series] = OrderedDict()
        self._reported: set[tuple[str, str]] = set()
        self._timestamps = config.send_timestamps
        self._updaters = {
            "gauge": self._number,
            "sum": self._number,
            "histogram": self._histogram,
            "exponential_histogram": self._exponential,
            "summary": self._summary,
        }

    # ---- consuming

    def accumulate(self, message: Any, now: float) -> int:
        """Take every point of an export request; how many could not be exposed."""
        dropped = 0
        tr = self.translator
        for rm in message.resource_metrics:
            resource = tr.resource(rm.resource)
            identity = resource.identity()
            if resource.target_labels:
                self._target_info(resource, identity, now)
            for sm in rm.scope_metrics:
                fixed = {**tr.scope(sm.scope, sm.schema_url), **identity, **self.const_labels}
                for metric in sm.metrics:
                    family = self._family(metric)
                    if family is None:
                        dropped += _point_count(metric)
                        continue
                    self._metric(metric, family, resource, fixed, now)
        return dropped

    def _family(self, metric: Any) -> _FamilyState | None:
        try:
            info = self.translator.family(metric)
        except InvalidName as exc:
            self._report(metric.name, "invalid", "dropping metric %s: %s", metric.name, exc)
            return None
        if info is None:
            self._report(metric.name, "unsupported", "dropping metric %s: a %s metric of this temporality cannot be exposed", metric.name, metric.WhichOneof("data"))
            return None
        expo_type, expo_name, unit = _expo_identity(info)
        state = self.families.get(info.name)
        if state is None:
            state = _FamilyState(info.name, expo_type, expo_name, info.help, unit)
            self.families[info.name] = state
            return state
        if state.type != expo_type:
            self._report(info.name, "type:" + expo_type, "dropping metric %s: its type %s conflicts with the type %s already exposed under that name", metric.name, expo_type, state.type)
            return None
        if state.help != info.help:
            self._report(info.name, "help", "metric %s has another description than the one exposed under that name; keeping the first", metric.name, level="info")
        return state

    def _report(self, name: str, what: str, message: str, *args: Any, level: str = "warning") -> None:
        # Once per metric and problem: a steady stream of such data must not flood the log.
        if (name, what) in self._reported:
            return
        if len(self._reported) > 10_000:
            self._reported.clear()
        self._reported.add((name, what))
        getattr(self.logger, level)(message, *args)

    def _metric(self, metric: Any, family: _FamilyState, resource: pt.ResourceInfo, fixed: dict[str, str], now: float) -> None:
        data = metric.WhichOneof("data")
        body = getattr(metric, data)
        delta = data != "gauge" and data != "summary" and body.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        update = self._updaters[data]
        point_labels = self.translator.point_labels
        all_series = self.series
        name = family.name
        changed = False
        for p in body.data_points:
            labels = point_labels(p.attributes, resource)
            labels.update(fixed)
            labels.pop("__name__", None)
            key = (name, tuple(sorted(labels.items())))
            if p.flags & pt.NO_RECORDED_VALUE:
                self._remove(key)
                continue
            old = all_series.get(key)
            series = update(family, p, labels, old, delta)
            if series is None:
                continue
            series.updated = now
            all_series[key] = series
            if old is not None:
                all_series.move_to_end(key)
            family.series[key] = series
            changed = True
        if changed:
            family.changed()

    def _timestamp(self, nanos: int) -> float | None:
        return nanos / 1e9 if self._timestamps and nanos else None

    def _number(self, family: _FamilyState, p: Any, labels: dict[str, str], old: _Series | None, delta: bool) -> _Series | None:
        value = pt.number_value(p)
        start = p.start_time_unix_nano
        if old is not None:
            if p.time_unix_nano < old.time:
                return None
            if delta and start == old.time:
                value += old.state
                start = old.start
        exemplar = None
        if family.type == "counter":
            if p.exemplars:
                e = p.exemplars[len(p.exemplars) - 1]
                exemplar = Exemplar(pt.exemplar_labels(e), pt.exemplar_value(e), e.time_unix_nano / 1e9 if e.time_unix_nano else None)
            elif old is not None:
                # The last exemplar stays valid for a counter that went on counting.
                exemplar = old.samples[0].exemplar
        sample = Sample(family.name, labels, value, self._timestamp(p.time_unix_nano), exemplar)
        return _Series(family, start, p.time_unix_nano, value, [sample], 0.0)

    def _aligned(self, p: Any, old: _Series | None, delta: bool, name: str) -> str:
        """For a delta point: ``add`` to the kept value, ``reset`` to this point, or ``drop``."""
        if old is None or not delta:
            return "reset"
        if p.start_time_unix_nano == old.time:
            return "add"
        if p.start_time_unix_nano > old.time:
            return "reset"
        self._report(name, "misaligned", "dropping delta points of %s that overlap the ones already accumulated", name)
        return "drop"

    def _histogram(self, family: _FamilyState, p: Any, labels: dict[str, str], old: _Series | None, delta: bool) -> _Series | None:
        if old is not None and not delta and p.time_unix_nano < old.time:
            return None
        state = _Histogram(tuple(p.explicit_bounds), list(p.bucket_counts), p.count, p.sum if p.HasField("sum") else None)
        start = p.start_time_unix_nano
        how = self._aligned(p, old, delta, family.name)
        if how == "drop":
            return None
        if how == "add":
            assert old is not None
            prev: _Histogram = old.state
            start = old.start
            if prev.bounds == state.bounds and len(prev.counts) == len(state.counts):
                state.counts = [a + b for a, b in zip(prev.counts, state.counts, strict=True)]
                state.count += prev.count
                if prev.sum is not None or state.sum is not None:
                    state.sum = (prev.sum or 0.0) + (state.sum or 0.0)
        buckets = pt.cumulative_buckets(state.bounds, state.counts, state.count)
        samples = self._histogram_samples(family, labels, buckets, state.count, state.sum, p)
        return _Series(family, start, p.time_unix_nano, state, samples, 0.0)

    def _exponential(self, family: _FamilyState, p: Any, labels: dict[str, str], old: _Series | None, delta: bool) -> _Series | None:
        if old is not None and not delta and p.time_unix_nano < old.time:
            return None
        state = ExponentialState.of(p)
        start = p.start_time_unix_nano
        how = self._aligned(p, old, delta, family.name)
        if how == "drop":
            return None
        if how == "add":
            assert old is not None
            state = old.state.merged(state)
            start = old.start
        samples = self._histogram_samples(family, labels, state.buckets(), state.count, state.sum, p)
        return _Series(family, start, p.time_unix_nano, state, samples, 0.0)

    def _histogram_samples(
        self, family: _FamilyState, labels: dict[str, str], buckets: Sequence[tuple[float, int]], count: int, total: float | None, p: Any
    ) -> list[Sample]:
        ts = self._timestamp(p.time_unix_nano)
        exemplars = _bucket_exemplars(p.exemplars, buckets) if p.exemplars else {}
        bucket_name = family.name + "_bucket"
        samples = [
            Sample(bucket_name, {**labels, "le": _number_text(le)}, float(n), ts, exemplars.get(i))
            for i, (le, n) in enumerate(buckets)
        ]
        samples.append(Sample(family.name + "_count", labels, float(count), ts))
        if total is not None:
            samples.append(Sample(family.name + "_sum", labels, total, ts))
        return samples

    def _summary(self, family: _FamilyState, p: Any, labels: dict[str, str], old: _Series | None, delta: bool) -> _Series | None:
        if old is not None and p.time_unix_nano < old.time:
            return None
        ts = self._timestamp(p.time_unix_nano)
        samples = [
            Sample(family.name, {**labels, "quantile": _number_text(q.quantile)}, q.value, ts)
            for q in sorted(p.quantile_values, key=lambda q: q.quantile)
        ]
        samples.append(Sample(family.name + "_count", labels, float(p.count), ts))
        samples.append(Sample(family.name + "_sum", labels, p.sum, ts))
        return _Series(family, p.start_time_unix_nano, p.time_unix_nano, None, samples, 0.0)

    def _target_info(self, resource: pt.ResourceInfo, identity: dict[str, str], now: float) -> None:
        name = self.translator.target_info_name
        family = self.families.get(name)
        if family is None:
            family = _FamilyState(name, "gauge", name, pt.TARGET_INFO_HELP, "")
            self.families[name] = family
        elif family.type != "gauge":
            return
        # At most one target_info per job and instance.
        key = (name, tuple(sorted(identity.items())))
        labels = {**resource.target_labels, **identity}
        old = self.series.get(key)
        if old is not None and old.samples[0].labels == labels:
            old.updated = now
            self.series.move_to_end(key)
            return
        series = _Series(family, 0, 0, None, [Sample(name, labels, 1.0)], now)
        self.series[key] = series
        self.series.move_to_end(key)
        family.series[key] = series
        family.changed()

    def _remove(self, key: tuple[Any, ...]) -> None:
        series = self.series.pop(key, None)
        if series is None:
            return
        family = series.family
        family.series.pop(key, None)
        family.changed()

    def expire(self, now: float) -> int:
        """Forget the series not updated within ``metric_expiration``; how many went."""
        limit = now - self.config.metric_expiration
        n = 0
        while self.series:
            key, series = next(iter(self.series.items()))
            if series.updated >= limit:
                break
            self._remove(key)
            n += 1
        if n:
            # A family goes with its last series (and may come back with another type).
            for name in [name for name, family in self.families.items() if not family.series]:
                del self.families[name]
        return n

    # ---- rendering

    def snapshot(self, format_key: str) -> list[tuple[_FamilyState, int, bytes | Any]]:
        """Per family: its version and either its cached text or the metric to render."""
        out: list[tuple[_FamilyState, int, bytes | Any]] = []
        for family in self.families.values():
            if not family.series:
                continue
            cached = family.rendered.get(format_key)
            out.append((family, family.version, cached if cached is not None else family.metric()))
        return out


_NUMBERS: dict[float, str] = {}


def _number_text(value: float) -> str:
    """An ``le`` or ``quantile`` value as prometheus_client writes floats (remembered: bounds recur)."""
    text = _NUMBERS.get(value)
    if text is None:
        text = floatToGoString(value)
        if len(_NUMBERS) >= 100_000:
            _NUMBERS.clear()
        _NUMBERS[value] = text
    return text


def _point_count(metric: Any) -> int:
    data = metric.WhichOneof("data")
    return len(getattr(metric, data).data_points) if data else 0


def _bucket_exemplars(exemplars: Sequence[Any], buckets: Sequence[tuple[float, int]]) -> dict[int, Exemplar]:
    """The exemplar of each bucket: the largest one whose value falls in it."""
    best: dict[int, tuple[float, Any]] = {}
    bounds = [le for le, _ in buckets]
    for e in exemplars:
        value = pt.exemplar_value(e)
        for i, le in enumerate(bounds):
            if value <= le or math.isnan(value):
                if i not in best or value > best[i][0]:
                    best[i] = (value, e)
                break
    return {
        i: Exemplar(pt.exemplar_labels(e), value, e.time_unix_nano / 1e9 if e.time_unix_nano else None)
        for i, (value, e) in best.items()
    }


# --------------------------------------------------------------------------------------------
# Exposition


@dataclass(frozen=True)
class _Format:
    key: str
    content_type: str
    openmetrics: bool
    encode: Any


def negotiate(accept: str | None, *, allow_openmetrics: bool) -> _Format:
    """The exposition format for a scraper's Accept header (prometheus_client's negotiation)."""
    parts = [p for p in (accept or "").split(",") if allow_openmetrics or p.split(";")[0].strip() != _OPENMETRICS]
    encode, content_type = exposition.choose_encoder(",".join(parts))
    openmetrics = content_type.startswith(_OPENMETRICS)
    return _Format(content_type, content_type, openmetrics, encode)


def render(snapshot: Sequence[tuple[_FamilyState, int, bytes | Any]], fmt: _Format, compress: bool) -> tuple[bytes, dict[int, bytes]]:
    """The exposition of a snapshot and the newly rendered family texts (by snapshot index).

    Works on the snapshot only, so it may run in a worker thread.
    """
    chunks: list[bytes] = []
    fresh: dict[int, bytes] = {}
    for i, (_, _, item) in enumerate(snapshot):
        if isinstance(item, bytes):
            chunks.append(item)
            continue
        text = fmt.encode(_One(item))
        if fmt.openmetrics:
            text = text.removesuffix(b"# EOF\n")
        fresh[i] = text
        chunks.append(text)
    if fmt.openmetrics:
        chunks.append(b"# EOF\n")
    body = b"".join(chunks)
    if compress:
        body = gzip.compress(body, compresslevel=1)
    return body, fresh


def _gzip_accepted(header: str | None) -> bool:
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() == "gzip" and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


# --------------------------------------------------------------------------------------------
# The exporter


class PrometheusExporter(Component):
    """Accumulates metrics on consume and serves them on ``endpoint``/metrics."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: PrometheusExporterConfig) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self.metrics = settings.telemetry.exporter(str(settings.id))
        self._dropped = settings.telemetry.dropped
        self.accumulator = Accumulator(config, self.logger)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: Host) -> None:
        cfg = self.config
        ssl_context = server_ssl_context(cfg.tls) if cfg.tls is not None else None
        bind_host, bind_port = split_host_port(cfg.endpoint)
        sockets = bind_sockets(bind_host, bind_port)
        app = web.Application()
        app.router.add_get(_METRICS_PATH, self._scrape)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=_IDLE_TIMEOUT)
        try:
            await runner.setup()
            for sock in sockets:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        except BaseException:
            await runner.cleanup()
            for sock in sockets:
                sock.close()
            raise
        self._runner = runner
        self.port = sockets[0].getsockname()[1]
        shown = f"[{bind_host}]:{self.port}" if ":" in bind_host else f"{bind_host}:{self.port}"
        self.logger.info("Serving Prometheus metrics on %s%s", shown, _METRICS_PATH, extra={"endpoint": shown})

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def consume(self, payload: Payload) -> None:
        """Fold the payload's points into the accumulator (never refuses data)."""
        dropped = self.accumulator.accumulate(payload.message, time.monotonic())
        if dropped:
            self._dropped.labels(component=f"exporter/{self.settings.id}", otel_signal=Signal.METRICS.value, reason="not_exposable").inc(dropped)
        self.metrics.sent(Signal.METRICS, payload.items - dropped)

    async def scrape(self, accept: str | None = None, *, compress: bool = False) -> tuple[bytes, str]:
        """The exposition body and its content type, as a scrape with ``accept`` gets it."""
        acc = self.accumulator
        acc.expire(time.monotonic())
        fmt = negotiate(accept, allow_openmetrics=self.config.enable_open_metrics)
        snapshot = acc.snapshot(fmt.key)
        pending = sum(len(item.samples) for _, _, item in snapshot if not isinstance(item, bytes))
        cached = sum(len(item) for _, _, item in snapshot if isinstance(item, bytes))
        heavy = pending > _THREAD_RENDER_SAMPLES or (compress and (pending > _THREAD_RENDER_SAMPLES // 4 or cached > _THREAD_COMPRESS_BYTES))
        if heavy:
            body, fresh = await asyncio.to_thread(render, snapshot, fmt, compress)
        else:
            body, fresh = render(snapshot, fmt, compress)
        for i, text in fresh.items():
            family, version, _ = snapshot[i]
            # Keep the text only if the family did not change while it was rendered.
            if family.version == version:
                family.rendered[fmt.key] = text
        return body, fmt.content_type

    async def _scrape(self, request: web.Request) -> web.Response:
        compress = _gzip_accepted(request.headers.get("Accept-Encoding"))
        try:
            body, content_type = await self.scrape(request.headers.get("Accept"), compress=compress)
        except Exception:
            self.logger.exception("rendering the Prometheus exposition failed")
            return web.Response(status=500, text="error rendering metrics\n")
        headers = {"Content-Type": content_type}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)

    def series_count(self) -> int:
        """How many series are kept (target_info included)."""
        return len(self.accumulator.series)

    def families(self) -> Iterator[str]:
        """The names of the families exposed."""
        return iter(self.accumulator.families)


def _create(*, settings: CreateSettings, config: PrometheusExporterConfig, signals: frozenset[Signal]) -> PrometheusExporter:
    return PrometheusExporter(settings, config)


factory = Factory(
    type="prometheus",
    kind=Kind.EXPORTER,
    config_class=PrometheusExporterConfig,
    create=_create,
    signals=frozenset({Signal.METRICS}),
    stability="beta",
    description="serves metrics for a Prometheus server to scrape (text format or OpenMetrics)",
)
