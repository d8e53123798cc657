"""``debug``: writes what reaches it to the log (or stdout), for looking at pipelines.

Keys as the stock exporter has them: ``verbosity`` (``basic``, ``normal``, ``detailed``),
``sampling_initial`` and ``sampling_thereafter`` (log sampling per second, as zap's sampler
does it) and ``use_internal_logger``. ``basic`` writes one summary line per batch, ``normal``
about one line per item, ``detailed`` everything in the stock collector's text layout
(``ResourceSpans #0`` ... ``Span #0`` ... ``-> key: Str(value)``).

Sampling decides per batch and per signal: a batch is written whole or not at all, and a
batch sampled out is never formatted.
"""

from __future__ import annotations

import base64
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import Field, field_validator

from collector.component import Component, CreateSettings, Factory, Kind
from collector.configtypes import ComponentConfig
from collector.pdata import Payload, Signal

Verbosity = Literal["basic", "normal", "detailed"]


class DebugConfig(ComponentConfig):
    """The debug exporter's settings, with the stock defaults."""

    verbosity: Verbosity = "basic"
    sampling_initial: int = Field(default=2, ge=0)
    sampling_thereafter: int = Field(default=1, ge=0)
    use_internal_logger: bool = True

    @field_validator("verbosity", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        # The stock collector reads telemetry levels case-insensitively and refuses "none".
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in ("basic", "normal", "detailed"):
                raise ValueError(f"verbosity level {value!r} is not supported (basic, normal or detailed)")
        return value


class Sampler:
    """zap's sampler: per key and per ``tick`` seconds, the first ``initial`` entries pass,
    then every ``thereafter``-th one (none when ``thereafter`` is 0)."""

    def __init__(self, initial: int, thereafter: int, tick: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial = initial
        self.thereafter = thereafter
        self.tick = tick
        self.clock = clock
        self._windows: dict[object, list[float]] = {}  # key -> [window end, count]

    def allow(self, key: object) -> bool:
        """Count one entry for ``key`` and tell whether it is to be written."""
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now >= window[0]:
            window = [now + self.tick, 0]
            self._windows[key] = window
        window[1] += 1
        n = int(window[1])
        if n <= self.initial:
            return True
        return self.thereafter > 0 and (n - self.initial) % self.thereafter == 0


# --- value formatting, as the stock collector's pdata prints values ---------------------------


def go_time(unix_nano: int) -> str:
    """A timestamp the way Go prints a ``time.Time`` in UTC: ``2020-02-11 20:26:12.000000321 +0000 UTC``."""
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + " +0000 UTC"


def hex_id(raw: bytes) -> str:
    """A trace or span id in lower-case hex; empty for an absent (all-zero) id."""
    return raw.hex() if any(raw) else ""


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-tripping decimal digits of ``abs(value)`` and the exponent of the first digit."""
    parts = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, parts.digits)).lstrip("0") or "0"
    stripped = text.rstrip("0") or "0"
    exponent = int(parts.exponent) + len(text) - len(stripped)
    return stripped, exponent + len(stripped) - 1


def json_number(value: float) -> str:
    """A double as pdata turns it into a string (the ES6/JSON rule: exponent below 1e-6 or from 1e21)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    digits, exp10 = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    if -7 < exp10 < 21:
        return sign + _plain(digits, exp10)
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp10 > 0 else '-'}{abs(exp10)}"


def go_float(value: float) -> str:
    """A double as Go's ``%v`` prints it (shortest digits, exponent form below 1e-4 or from 1e6)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    digits, exp10 = _shortest_digits(value)
    sign = "-" if value < 0 else ""
    # Go's %v switches to the exponent form outside [1e-4, 1e6) for the shortest digits
    if -4 <= exp10 < 6:
        return sign + _plain(digits, exp10)
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exp10 > 0 else '-'}{abs(exp10):02d}"


def go_fixed(value: float) -> str:
    """A double as Go's ``%f`` prints it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:f}"


def _plain(digits: str, exp10: int) -> str:
    if exp10 < 0:
        return "0." + "0" * (-exp10 - 1) + digits
    if len(digits) <= exp10 + 1:
        return digits + "0" * (exp10 + 1 - len(digits))
    return digits[: exp10 + 1] + "." + digits[exp10 + 1 :]


_VALUE_TYPES = {
    "string_value": "Str",
    "bool_value": "Bool",
    "int_value": "Int",
    "double_value": "Double",
    "array_value": "Slice",
    "kvlist_value": "Map",
    "bytes_value": "Bytes",
}


def _raw(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _to_json(raw: Any) -> str:
    """JSON as Go's encoder writes pdata's raw values: sorted keys, no spaces, ES6 numbers."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return json_number(raw)
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, list):
        return "[" + ",".join(_to_json(v) for v in raw) + "]"
    items = sorted(raw.items())
    return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_to_json(v)}" for k, v in items) + "}"


def value_string(value: AnyValue) -> str:
    """A value as text (pdata's ``AsString``): strings as they are, maps and slices as JSON."""
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return json_number(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return _to_json(_raw(value))


def typed_value(value: AnyValue) -> str:
    """``Str(text)``, ``Int(3)``, ``Map({...})``: a value with its type, as the detailed output shows it."""
    kind = value.WhichOneof("value")
    return f"{_VALUE_TYPES.get(kind or '', 'Empty')}({value_string(value)})"


def _enum_name(name: str, prefix: str) -> str:
    # SPAN_KIND_SERVER -> Server, AGGREGATION_TEMPORALITY_DELTA -> Delta
    return "".join(part.capitalize() for part in name.removeprefix(prefix).split("_"))


def _enum_text(enum: Any, number: int, prefix: str) -> str:
    try:
        return _enum_name(enum.Name(number), prefix)
    except ValueError:
        return str(number)


_DATA_TYPES = {
    "gauge": "Gauge",
    "sum": "Sum",
    "histogram": "Histogram",
    "exponential_histogram": "ExponentialHistogram",
    "summary": "Summary",
}


# --- detailed: the stock text marshaler's layout -------------------------------------------------


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def field(self, name: str, value: str) -> None:
        self.lines.append(f"    {name:<15}: {value}")

    def attributes(self, header: str, attrs: Iterable[KeyValue]) -> None:
        attrs = list(attrs)
        if not attrs:
            return
        self.lines.append(f"{header}:")
        prefix = "     ->"
        if "->" in header:
            # nested headers (``     -> Attributes``) indent their entries one level deeper
            prefix = header.split("->")[0] + prefix
        for kv in attrs:
            self.lines.append(f"{prefix} {kv.key}: {typed_value(kv.value)}")

    def scope(self, scope: InstrumentationScope) -> None:
        self.lines.append(f"InstrumentationScope {scope.name} {scope.version}")
        self.attributes("InstrumentationScope attributes", scope.attributes)

    def text(self) -> str:
        return "\n".join(self.lines)


def detailed_traces(message: Any) -> str:
    """Every span with its attributes, events and links."""
    out = _Text()
    for i, rs in enumerate(message.resource_spans):
        out.add(f"ResourceSpans #{i}")
        out.add(f"Resource SchemaURL: {rs.schema_url}")
        out.attributes("Resource attributes", rs.resource.attributes)
        for j, ss in enumerate(rs.scope_spans):
            out.add(f"ScopeSpans #{j}")
            out.add(f"ScopeSpans SchemaURL: {ss.schema_url}")
            out.scope(ss.scope)
            for k, span in enumerate(ss.spans):
                out.add(f"Span #{k}")
                out.field("Trace ID", hex_id(span.trace_id))
                out.field("Parent ID", hex_id(span.parent_span_id))
                out.field("ID", hex_id(span.span_id))
                out.field("Name", span.name)
                out.field("Kind", _enum_text(Span.SpanKind, span.kind, "SPAN_KIND_"))
                if span.trace_state:
                    out.field("TraceState", span.trace_state)
                out.field("Start time", go_time(span.start_time_unix_nano))
                out.field("End time", go_time(span.end_time_unix_nano))
                out.field("Status code", _enum_text(Status.StatusCode, span.status.code, "STATUS_CODE_"))
                out.field("Status message", span.status.message)
                out.field("DroppedAttributesCount", str(span.dropped_attributes_count))
                out.field("DroppedEventsCount", str(span.dropped_events_count))
                out.field("DroppedLinksCount", str(span.dropped_links_count))
                out.attributes("Attributes", span.attributes)
                if span.events:
                    out.add("Events:")
                    for n, event in enumerate(span.events):
                        out.add(f"SpanEvent #{n}")
                        out.add(f"     -> Name: {event.name}")
                        out.add(f"     -> Timestamp: {go_time(event.time_unix_nano)}")
                        out.add(f"     -> DroppedAttributesCount: {event.dropped_attributes_count}")
                        out.attributes("     -> Attributes:", event.attributes)
                if span.links:
                    out.add("Links:")
                    for n, link in enumerate(span.links):
                        out.add(f"SpanLink #{n}")
                        out.add(f"     -> Trace ID: {hex_id(link.trace_id)}")
                        out.add(f"     -> ID: {hex_id(link.span_id)}")
                        out.add(f"     -> TraceState: {link.trace_state}")
                        out.add(f"     -> DroppedAttributesCount: {link.dropped_attributes_count}")
                        out.attributes("     -> Attributes:", link.attributes)
    return out.text()


def _exemplars(out: _Text, exemplars: Iterable[Any]) -> None:
    exemplars = list(exemplars)
    if not exemplars:
        return
    out.add("Exemplars:")
    for n, ex in enumerate(exemplars):
        out.add(f"Exemplar #{n}")
        out.add(f"     -> Trace ID: {hex_id(ex.trace_id)}")
        out.add(f"     -> Span ID: {hex_id(ex.span_id)}")
        out.add(f"     -> Timestamp: {go_time(ex.time_unix_nano)}")
        kind = ex.WhichOneof("value")
        if kind == "as_int":
            out.add(f"     -> Value: {ex.as_int}")
        elif kind == "as_double":
            out.add(f"     -> Value: {go_fixed(ex.as_double)}")
        out.attributes("     -> FilteredAttributes", ex.filtered_attributes)


def _point_head(out: _Text, title: str, n: int, point: Any) -> None:
    out.add(f"{title} #{n}")
    out.attributes("Data point attributes", point.attributes)
    out.add(f"StartTimestamp: {go_time(point.start_time_unix_nano)}")
    out.add(f"Timestamp: {go_time(point.time_unix_nano)}")


def _optional_stats(out: _Text, point: Any) -> None:
    for name, label in (("sum", "Sum"), ("min", "Min"), ("max", "Max")):
        if point.HasField(name):
            out.add(f"{label}: {go_fixed(getattr(point, name))}")


def _exp_bound(index: float, factor: float) -> float:
    try:
        return math.exp(index * factor)
    except OverflowError:
        return math.inf


def _metric_points(out: _Text, metric: Metric) -> None:
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        data = getattr(metric, kind)
        if kind == "sum":
            out.add(f"     -> IsMonotonic: {'true' if data.is_monotonic else 'false'}")
            out.add(f"     -> AggregationTemporality: {_temporality(data.aggregation_temporality)}")
        for n, p in enumerate(data.data_points):
            _point_head(out, "NumberDataPoints", n, p)
            value = p.WhichOneof("value")
            if value == "as_int":
                out.add(f"Value: {p.as_int}")
            elif value == "as_double":
                out.add(f"Value: {go_fixed(p.as_double)}")
            _exemplars(out, p.exemplars)
    elif kind == "histogram":
        out.add(f"     -> AggregationTemporality: {_temporality(metric.histogram.aggregation_temporality)}")
        for n, p in enumerate(metric.histogram.data_points):
            _point_head(out, "HistogramDataPoints", n, p)
            out.add(f"Count: {p.count}")
            _optional_stats(out, p)
            for b, bound in enumerate(p.explicit_bounds):
                out.add(f"ExplicitBounds #{b}: {go_fixed(bound)}")
            for b, count in enumerate(p.bucket_counts):
                out.add(f"Buckets #{b}, Count: {count}")
            _exemplars(out, p.exemplars)
    elif kind == "exponential_histogram":
        out.add(f"     -> AggregationTemporality: {_temporality(metric.exponential_histogram.aggregation_temporality)}")
        for n, p in enumerate(metric.exponential_histogram.data_points):
            _point_head(out, "ExponentialHistogramDataPoints", n, p)
            out.add(f"Count: {p.count}")
            _optional_stats(out, p)
            factor = math.ldexp(math.log(2), -p.scale)
            negative = list(p.negative.bucket_counts)
            for pos in range(len(negative) - 1, -1, -1):
                index = float(p.negative.offset + pos)
                lower, upper = _exp_bound(index, factor), _exp_bound(index + 1, factor)
                out.add(f"Bucket [{go_fixed(-upper)}, {go_fixed(-lower)}), Count: {negative[pos]}")
            if p.zero_count:
                out.add(f"Bucket [0, 0], Count: {p.zero_count}")
            for pos, count in enumerate(p.positive.bucket_counts):
                index = float(p.positive.offset + pos)
                lower, upper = _exp_bound(index, factor), _exp_bound(index + 1, factor)
                out.add(f"Bucket ({go_fixed(lower)}, {go_fixed(upper)}], Count: {count}")
            _exemplars(out, p.exemplars)
    elif kind == "summary":
        for n, p in enumerate(metric.summary.data_points):
            _point_head(out, "SummaryDataPoints", n, p)
            out.add(f"Count: {p.count}")
            out.add(f"Sum: {go_fixed(p.sum)}")
            for q, qv in enumerate(p.quantile_values):
                out.add(f"QuantileValue #{q}: Quantile {go_fixed(qv.quantile)}, Value {go_fixed(qv.value)}")


def _temporality(value: int) -> str:
    return _enum_text(AggregationTemporality, value, "AGGREGATION_TEMPORALITY_")


def detailed_metrics(message: Any) -> str:
    """Every metric with its descriptor and every data point."""
    out = _Text()
    for i, rm in enumerate(message.resource_metrics):
        out.add(f"ResourceMetrics #{i}")
        out.add(f"Resource SchemaURL: {rm.schema_url}")
        out.attributes("Resource attributes", rm.resource.attributes)
        for j, sm in enumerate(rm.scope_metrics):
            out.add(f"ScopeMetrics #{j}")
            out.add(f"ScopeMetrics SchemaURL: {sm.schema_url}")
            out.scope(sm.scope)
            for k, metric in enumerate(sm.metrics):
                out.add(f"Metric #{k}")
                out.add("Descriptor:")
                out.add(f"     -> Name: {metric.name}")
                out.add(f"     -> Description: {metric.description}")
                out.add(f"     -> Unit: {metric.unit}")
                out.add(f"     -> DataType: {_DATA_TYPES.get(metric.WhichOneof('data') or '', 'Empty')}")
                out.attributes("     -> Metadata", metric.metadata)
                _metric_points(out, metric)
    return out.text()


def _severity(number: int) -> str:
    return f"{_enum_text(SeverityNumber, number, 'SEVERITY_NUMBER_')}({number})"


def detailed_logs(message: Any) -> str:
    """Every log record with its body and attributes."""
    out = _Text()
    for i, rl in enumerate(message.resource_logs):
        out.add(f"ResourceLog #{i}")
        out.add(f"Resource SchemaURL: {rl.schema_url}")
        out.attributes("Resource attributes", rl.resource.attributes)
        for j, sl in enumerate(rl.scope_logs):
            out.add(f"ScopeLogs #{j}")
            out.add(f"ScopeLogs SchemaURL: {sl.schema_url}")
            out.scope(sl.scope)
            for k, rec in enumerate(sl.log_records):
                out.add(f"LogRecord #{k}")
                out.add(f"ObservedTimestamp: {go_time(rec.observed_time_unix_nano)}")
                out.add(f"Timestamp: {go_time(rec.time_unix_nano)}")
                out.add(f"SeverityText: {rec.severity_text}")
                out.add(f"SeverityNumber: {_severity(rec.severity_number)}")
                if rec.event_name:
                    out.add(f"EventName: {rec.event_name}")
                out.add(f"Body: {typed_value(rec.body)}")
                out.attributes("Attributes", rec.attributes)
                out.add(f"Trace ID: {hex_id(rec.trace_id)}")
                out.add(f"Span ID: {hex_id(rec.span_id)}")
                out.add(f"Flags: {rec.flags}")
    return out.text()


# --- normal: about one line per item ------------------------------------------------------------


def _pairs(attrs: Iterable[KeyValue]) -> list[str]:
    return [f"{kv.key}={value_string(kv.value)}" for kv in attrs]


def _suffix(attrs: Iterable[KeyValue]) -> str:
    pairs = _pairs(attrs)
    return " " + " ".join(pairs) if pairs else ""


def _resource_line(title: str, n: int, schema_url: str, attrs: Iterable[KeyValue]) -> str:
    schema = f" [{schema_url}]" if schema_url else ""
    return f"{title} #{n}{schema}{_suffix(attrs)}"


def _scope_line(title: str, n: int, scope: InstrumentationScope, schema_url: str) -> str:
    details = scope.name + (f"@{scope.version}" if scope.version else "")
    if schema_url:
        details += (" " if details else "") + f"[{schema_url}]"
    return f"{title} #{n}{' ' + details if details else ''}{_suffix(scope.attributes)}"


def normal_traces(message: Any) -> str:
    """Per span: name, trace id, span id and its attributes as ``key=value``."""
    lines: list[str] = []
    for i, rs in enumerate(message.resource_spans):
        lines.append(_resource_line("ResourceTraces", i, rs.schema_url, rs.resource.attributes))
        for j, ss in enumerate(rs.scope_spans):
            lines.append(_scope_line("ScopeTraces", j, ss.scope, ss.schema_url))
            for span in ss.spans:
                lines.append(f"{span.name} {hex_id(span.trace_id)} {hex_id(span.span_id)}{_suffix(span.attributes)}")
    return "\n".join(lines)


def _normal_points(metric: Metric) -> Iterable[str]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return
    for p in getattr(metric, kind).data_points:
        labels = ",".join(_pairs(p.attributes))
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            value = str(p.as_int) if which == "as_int" else go_float(p.as_double) if which == "as_double" else ""
        elif kind == "summary":
            value = f"count={p.count} sum={go_fixed(p.sum)}"
            value += "".join(f" q{go_float(q.quantile)}={go_float(q.value)}" for q in p.quantile_values)
        else:
            value = f"count={p.count}"
            for name in ("sum", "min", "max"):
                if p.HasField(name):
                    value += f" {name}={go_float(getattr(p, name))}"
            if kind == "histogram":
                bounds = list(p.explicit_bounds)
                for b, count in enumerate(p.bucket_counts):
                    le = f"le{go_float(bounds[b])}=" if b < len(bounds) else ""
                    value += f" {le}{count}"
            else:
                base = 2.0 ** (2.0 ** -p.scale)
                for buckets in (p.negative, p.positive):
                    for b, count in enumerate(buckets.bucket_counts):
                        try:
                            lower = base ** (buckets.offset + b)
                        except OverflowError:
                            lower = math.inf
                        value += f" le{go_float(lower)}={count}"
                if p.zero_count:
                    value += f" zero_count{go_float(p.zero_threshold)}={p.zero_count}"
        yield f"{metric.name}{{{labels}}} {value}"


def normal_metrics(message: Any) -> str:
    """Per data point: ``name{key=value,...} value``."""
    lines: list[str] = []
    for i, rm in enumerate(message.resource_metrics):
        lines.append(_resource_line("ResourceMetrics", i, rm.schema_url, rm.resource.attributes))
        for j, sm in enumerate(rm.scope_metrics):
            lines.append(_scope_line("ScopeMetrics", j, sm.scope, sm.schema_url))
            for metric in sm.metrics:
                lines.extend(_normal_points(metric))
    return "\n".join(lines)


def normal_logs(message: Any) -> str:
    """Per log record: its body and its attributes as ``key=value``."""
    lines: list[str] = []
    for i, rl in enumerate(message.resource_logs):
        lines.append(_resource_line("ResourceLog", i, rl.schema_url, rl.resource.attributes))
        for j, sl in enumerate(rl.scope_logs):
            lines.append(_scope_line("ScopeLog", j, sl.scope, sl.schema_url))
            for rec in sl.log_records:
                lines.append(f"{value_string(rec.body)}{_suffix(rec.attributes)}")
    return "\n".join(lines)


_FORMATTERS: dict[tuple[str, Signal], Callable[[Any], str]] = {
    ("normal", Signal.TRACES): normal_traces,
    ("normal", Signal.METRICS): normal_metrics,
    ("normal", Signal.LOGS): normal_logs,
    ("detailed", Signal.TRACES): detailed_traces,
    ("detailed", Signal.METRICS): detailed_metrics,
    ("detailed", Signal.LOGS): detailed_logs,
}


def summary(payload: Payload) -> str:
    """The one-line summary of a batch: ``Traces {"resource spans": 1, "spans": 2}``.

    Counts per resource and scope; data points come from the payload's item count.
    """
    message: Any = payload.message
    items = payload.items if payload.items >= 0 else payload.refresh_count()
    fields: dict[str, int]
    if payload.signal is Signal.TRACES:
        fields = {"resource spans": len(message.resource_spans), "spans": items}
        title = "Traces"
    elif payload.signal is Signal.METRICS:
        metrics = sum(len(sm.metrics) for rm in message.resource_metrics for sm in rm.scope_metrics)
        fields = {"resource metrics": len(message.resource_metrics), "metrics": metrics, "data points": items}
        title = "Metrics"
    else:
        fields = {"resource logs": len(message.resource_logs), "log records": items}
        title = "Logs"
    return f"{title} {json.dumps(fields)}"


def render(payload: Payload, verbosity: Verbosity) -> tuple[str, str]:
    """The summary line and, above ``basic``, the body text of a batch."""
    head = summary(payload)
    if verbosity == "basic":
        return head, ""
    return head, _FORMATTERS[(verbosity, payload.signal)](payload.message)


class DebugExporter(Component):
    """Formats each batch and writes it to the component's logger or to stdout."""

    mutates_data = False

    def __init__(
        self,
        settings: CreateSettings,
        config: DebugConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.config = config
        self.logger = settings.logger
        self.sampler = Sampler(config.sampling_initial, config.sampling_thereafter, clock=clock)
        self.metrics = settings.telemetry.exporter(str(settings.id))

    async def consume(self, payload: Payload) -> None:
        """Write the batch (unless sampled out); never refuses data."""
        if self.sampler.allow(payload.signal):
            head, body = render(payload, self.config.verbosity)
            self._emit(head)
            if body:
                self._emit(body)
        self.metrics.sent(payload.signal, payload.items)

    def _emit(self, text: str) -> None:
        if self.config.use_internal_logger:
            self.logger.info(text)
        else:
            # looked up at write time so a redirected stdout (tests, daemons) is honoured
            sys.stdout.write(text + "\n")

    async def shutdown(self) -> None:
        if not self.config.use_internal_logger:
            sys.stdout.flush()


def _create(*, settings: CreateSettings, config: DebugConfig, signals: frozenset[Signal]) -> DebugExporter:
    return DebugExporter(settings, config)


factory = Factory(
    type="debug",
    kind=Kind.EXPORTER,
    config_class=DebugConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="development",
    description="writes pipeline data to the log or stdout, for debugging",
)
