"""``errormetrics``: counts the errors found in traces and logs into a metric, like ``spanmetrics``.

Exporter of traces and logs pipelines, receiver of metrics pipelines. Every error the
``errors`` exporter would store (:mod:`exporters.errors.extract` finds them, with the same
``traces`` and ``logs`` options) adds one to a monotonic sum named ``appguard.errors`` (unit
``{error}``), by ``service.name``, ``deployment.environment.name`` and ``exception.type`` plus
any configured ``dimensions``, under the resource the error came from. Every
``metrics_flush_interval`` the sums go to the metrics pipelines, cumulative by default; the
Prometheus translation makes the series ``appguard_errors_total``.

Memory is bounded: at most ``resource_metrics_cache_size`` resources (the least recently
updated is forgotten first) and ``aggregation_cardinality_limit`` series per resource, beyond
which errors are counted in one overflow series carrying ``otel.metric.overflow=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from pydantic import Field, field_validator, model_validator

from collector.component import Component, CreateSettings, Factory, Host, Kind
from collector.configtypes import ComponentConfig, Duration
from collector.consumer import ConsumeError, Consumer
from collector.pdata import Payload, Signal
from exporters.errors.extract import (
    ENVIRONMENT,
    EXCEPTION_TYPE,
    SERVICE_NAME,
    Extractor,
    FoundError,
    LogsOptions,
    TracesOptions,
    clip,
)

METRIC_NAME = "appguard.errors"
METRIC_UNIT = "{error}"
METRIC_DESCRIPTION = "Errors (exceptions, and error logs or spans where configured) found in traces and logs."
SCOPE_NAME = "appguard.connector.errormetrics"
OVERFLOW_KEY = "otel.metric.overflow"
_FIXED_DIMENSIONS = (SERVICE_NAME, ENVIRONMENT, EXCEPTION_TYPE)
# Dimension values longer than this are cut: a label is not the place for a whole message.
_MAX_DIMENSION_CHARS = 256

Temporality = Literal["AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"]
_CUMULATIVE: Temporality = "AGGREGATION_TEMPORALITY_CUMULATIVE"
_DELTA: Temporality = "AGGREGATION_TEMPORALITY_DELTA"


class Dimension(ComponentConfig):
    """An extra dimension: an attribute of the event, span, log record or resource."""

    name: str = Field(min_length=1)
    #: Used when the attribute is missing; without one the dimension is left out of that series.
    default: str | None = None


class ErrorMetricsConfig(ComponentConfig):
    """The ``errormetrics`` connector's settings."""

    metrics_flush_interval: Duration = Field(default=15.0, gt=0)
    aggregation_temporality: Temporality = _CUMULATIVE
    dimensions: list[Dimension] = Field(default_factory=list)
    aggregation_cardinality_limit: int = Field(default=1000, ge=0)
    resource_metrics_key_attributes: list[str] = Field(default_factory=list)
    resource_metrics_cache_size: int = Field(default=1000, ge=1)
    metrics_expiration: Duration = 0.0
    traces: TracesOptions = Field(default_factory=TracesOptions)
    logs: LogsOptions = Field(default_factory=LogsOptions)

    @field_validator("traces", "logs", mode="before")
    @classmethod
    def _none_is_default(cls, value: object) -> object:
        return {} if value is None else value

    @model_validator(mode="after")
    def _unique_dimensions(self) -> ErrorMetricsConfig:
        seen = set(_FIXED_DIMENSIONS)
        for dim in self.dimensions:
            if dim.name in seen:
                raise ValueError(f"duplicate dimension name {dim.name}")
            seen.add(dim.name)
        return self


@dataclass(slots=True)
class _Series:
    attributes: tuple[tuple[str, str], ...]
    start_ns: int
    count: int = 0
    reported: int = 0  # what the last delta flush covered
    updated_ns: int = 0


@dataclass(slots=True)
class _ResourceSeries:
    resource: Resource
    series: dict[tuple[str | None, ...], _Series] = field(default_factory=dict)
    overflow: _Series | None = None


class ErrorMetricsConnector(Component):
    """Counts errors per resource and dimensions; flushes the counts as an OTLP sum."""

    mutates_data = False

    def __init__(self, settings: CreateSettings, config: ErrorMetricsConfig, consumers: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.logger: logging.Logger = settings.logger
        self._next = consumers.get(Signal.METRICS)
        self.extractor = Extractor(config.traces, config.logs)
        self._delta = config.aggregation_temporality == _DELTA
        self._resources: OrderedDict[bytes, _ResourceSeries] = OrderedDict()
        self._last_flush_ns = time.time_ns()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    # ---- lifecycle

    async def start(self, host: Host) -> None:
        self._last_flush_ns = time.time_ns()
        self._task = asyncio.create_task(self._flush_loop(), name=f"{self.settings.id}-flush")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The counts since the last flush are not lost at a clean stop.
        await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metrics_flush_interval)
            await self.flush()

    # ---- counting

    async def consume(self, payload: Payload) -> None:
        found = self.extractor.extract(payload)
        if found:
            self.record(found, time.time_ns())

    def record(self, found: list[FoundError], now_ns: int) -> None:
        """Add the errors of one request to the counts."""
        dims = self.config.dimensions
        limit = self.config.aggregation_cardinality_limit
        for error in found:
            resources = self._resource_series(error)
            values: tuple[str | None, ...] = (
                error.resource.service_name,
                error.resource.environment,
                error.type_name,
                *(_dimension(error, d.name, d.default) for d in dims),
            )
            series = resources.series.get(values)
            if series is None:
                if limit and len(resources.series) >= limit:
                    if resources.overflow is None:
                        resources.overflow = _Series(((OVERFLOW_KEY, "true"),), now_ns)
                    series = resources.overflow
                else:
                    names = (*_FIXED_DIMENSIONS, *(d.name for d in dims))
                    attributes = tuple((k, v) for k, v in zip(names, values, strict=True) if v is not None)
                    series = resources.series[values] = _Series(attributes, now_ns)
            series.count += 1
            series.updated_ns = now_ns

    def _resource_series(self, error: FoundError) -> _ResourceSeries:
        resource = error.resource.resource
        keys = self.config.resource_metrics_key_attributes
        if keys:
            attrs = error.resource.attributes
            key = repr(tuple(attrs.get(k) for k in keys)).encode()
        else:
            key = resource.SerializeToString()
        entry = self._resources.get(key)
        if entry is None:
            copy = Resource()
            copy.CopyFrom(resource)
            entry = self._resources[key] = _ResourceSeries(copy)
            if len(self._resources) > self.config.resource_metrics_cache_size:
                self._resources.popitem(last=False)
        else:
            self._resources.move_to_end(key)
        return entry

    # ---- flushing

    def collect(self, now_ns: int) -> ExportMetricsServiceRequest | None:
        """The metrics request of this moment (None when there is nothing to report).

        Cumulative: every live series with its total since it appeared. Delta: the series that
        changed since the last flush, with what changed.
        """
        expiration = self.config.metrics_expiration
        request = ExportMetricsServiceRequest()
        temporality = AGGREGATION_TEMPORALITY_DELTA if self._delta else AGGREGATION_TEMPORALITY_CUMULATIVE
        for key, entry in list(self._resources.items()):
            if expiration > 0:
                stale_before = now_ns - int(expiration * 1e9)
                entry.series = {k: s for k, s in entry.series.items() if s.updated_ns >= stale_before}
                if entry.overflow is not None and entry.overflow.updated_ns < stale_before:
                    entry.overflow = None
                if not entry.series and entry.overflow is None:
                    del self._resources[key]
                    continue
            points = list(entry.series.values())
            if entry.overflow is not None:
                points.append(entry.overflow)
            if self._delta:
                points = [s for s in points if s.count > s.reported]
            if not points:
                continue
            rm = request.resource_metrics.add()
            rm.resource.CopyFrom(entry.resource)
            sm = rm.scope_metrics.add()
            sm.scope.name = SCOPE_NAME
            metric = sm.metrics.add()
            metric.name = METRIC_NAME
            metric.unit = METRIC_UNIT
            metric.description = METRIC_DESCRIPTION
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = temporality
            for series in points:
                dp = metric.sum.data_points.add()
                for name, value in series.attributes:
                    kv = dp.attributes.add()
                    kv.key = name
                    kv.value.string_value = value
                if self._delta:
                    dp.start_time_unix_nano = max(series.start_ns, self._last_flush_ns)
                    dp.as_int = series.count - series.reported
                    series.reported = series.count
                else:
                    dp.start_time_unix_nano = series.start_ns
                    dp.as_int = series.count
                dp.time_unix_nano = now_ns
        self._last_flush_ns = now_ns
        return request if len(request.resource_metrics) else None

    async def flush(self) -> None:
        """Send the current counts to the metrics pipelines."""
        async with self._flush_lock:
            request = self.collect(time.time_ns())
            if request is None or self._next is None:
                return
            payload = Payload.from_message(Signal.METRICS, request)
            try:
                await self._next.consume(payload)
            except ConsumeError as exc:
                # Cumulative sums are sent again in full at the next flush; deltas are lost.
                self.logger.warning(
                    "the metrics pipeline refused %d error-count points: %s", payload.items, exc,
                    extra={"dropped_items": payload.items if self._delta else 0},
                )


def _dimension(error: FoundError, name: str, default: str | None) -> str | None:
    text = error.text(name)
    return clip(text, _MAX_DIMENSION_CHARS) if text is not None else default


def _create(*, settings: CreateSettings, config: ErrorMetricsConfig, consumers: Mapping[Signal, Consumer]) -> ErrorMetricsConnector:
    return ErrorMetricsConnector(settings, config, consumers)


factory = Factory(
    type="errormetrics",
    kind=Kind.CONNECTOR,
    config_class=ErrorMetricsConfig,
    create=_create,
    connects=frozenset({(Signal.TRACES, Signal.METRICS), (Signal.LOGS, Signal.METRICS)}),
    stability="alpha",
    description="counts the errors found in traces and logs as the metric appguard.errors (appguard_errors_total)",
)
