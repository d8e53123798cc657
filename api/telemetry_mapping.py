"""What browsers send to ``/api/telemetry/...``: the JSON bodies, and the OTLP they become.

The bodies are pydantic models (:class:`ErrorReport`, :class:`PageView`, :class:`CustomEvent`,
:class:`PerformanceReport`), validated strictly: a wrong type, a string too long, too many
attributes, a timestamp outside ``[now - 7 days, now + 1 hour]`` or an unknown web vital is
refused naming the field. Fields the models do not know are ignored, so that a newer snippet
can send to an older collector.

The conversions are pure functions:

- :func:`error_to_logs`: one log record of severity ERROR with the ``exception.*`` attributes
  the errors exporter groups (the stack text is parsed as JavaScript: the resource says
  ``telemetry.sdk.language = webjs``), ``appguard.event_id``, the session, page, user and user
  agent; ``appguard.project_id`` of the ingest key on the resource;
- :func:`page_view_to_logs` and :func:`custom_event_to_logs`: one log record of severity INFO
  each, named by ``event_name`` (and the ``event.name`` attribute) ``browser.page_view`` or
  ``browser.custom_event``;
- :class:`VitalsAccumulator`: web vitals as cumulative OTLP histograms
  (``browser.web_vital.<name>``), added up in the API process (see its docstring for why).
"""

from __future__ import annotations

import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, HistogramDataPoint, Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictStr,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from exporters.errors.extract import (
    ENVIRONMENT,
    EVENT_ID,
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    PROJECT_ID,
    SDK_LANGUAGE,
    SERVICE_NAME,
    SERVICE_VERSION,
    SESSION_ID,
    USER_AGENT,
    USER_EMAIL,
    USER_ID,
)

# --------------------------------------------------------------------------- bounds

#: The service a body without ``service`` is filed under.
DEFAULT_SERVICE = "web"
#: Entries of ``attributes`` (and of an event's ``properties``).
MAX_ATTRIBUTES = 64
#: Characters of an attribute's (or property's) key and of a text value.
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
#: Characters of an error's message and stack text.
MAX_MESSAGE_CHARS = 8192
MAX_STACKTRACE_CHARS = 64 * 1024
#: Characters of a URL (the page, the referrer).
MAX_URL_CHARS = 8192
#: Web vitals in one performance body.
MAX_METRICS = 50
#: How far from the server's clock a ``timestamp`` may be.
MAX_PAST = timedelta(days=7)
MAX_FUTURE = timedelta(hours=1)
#: Series of web vitals the API process keeps adding up (least recently updated forgotten).
MAX_VITAL_SERIES = 10_000

SESSION_PREVIOUS_ID = "session.previous_id"
USER_NAME = "user.name"
URL_FULL = "url.full"
URL_PATH = "url.path"
EVENT_NAME = "event.name"
PAGE_VIEW_EVENT = "browser.page_view"
CUSTOM_EVENT = "browser.custom_event"
SDK_NAME = "appguard.browser"
SCOPE_NAME = "appguard.telemetry"
WEBJS = "webjs"
_RESERVED_PREFIXES = ("exception.", "appguard.", "event.")

# --------------------------------------------------------------------------- models

_MODEL_CONFIG = ConfigDict(extra="ignore", str_strip_whitespace=False)


def _iso_timestamp(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date and time text, such as 2026-01-02T03:04:05.678Z")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an ISO 8601 date and time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _recent(when: datetime) -> datetime:
    now = datetime.now(UTC)
    if when < now - MAX_PAST or when > now + MAX_FUTURE:
        raise ValueError("must be within the last 7 days and at most 1 hour ahead of the server's clock")
    return when


ShortText = Annotated[StrictStr, StringConstraints(max_length=200)]
NameText = Annotated[StrictStr, StringConstraints(max_length=256)]
KeyText = Annotated[StrictStr, StringConstraints(max_length=MAX_KEY_CHARS)]
ValueText = Annotated[StrictStr, StringConstraints(max_length=MAX_VALUE_CHARS)]
UrlText = Annotated[StrictStr, StringConstraints(max_length=MAX_URL_CHARS)]
MessageText = Annotated[StrictStr, StringConstraints(max_length=MAX_MESSAGE_CHARS)]
StackText = Annotated[StrictStr, StringConstraints(max_length=MAX_STACKTRACE_CHARS)]
EventId = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9a-fA-F]{32}$")]
Timestamp = Annotated[datetime, BeforeValidator(_iso_timestamp), AfterValidator(_recent)]
SessionText = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


def _scalar(value: Any) -> str | bool | int | float:
    if isinstance(value, (str, bool, int, float)):
        return value
    raise ValueError("must be a text, a number or a boolean")


Scalar = Annotated[
    str | bool | int | float,
    PlainValidator(_scalar),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]


def _bounded_scalars(values: dict[str, Any]) -> dict[str, Any]:
    if len(values) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} entries (got {len(values)})")
    for key, value in values.items():
        if not key or len(key) > MAX_KEY_CHARS:
            raise ValueError(f"key {key[:MAX_KEY_CHARS]!r}: keys are 1 to {MAX_KEY_CHARS} characters")
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            raise ValueError(f"{key}: at most {MAX_VALUE_CHARS} characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key}: must be a finite number")
    return values


ScalarMap = Annotated[dict[str, Scalar], AfterValidator(_bounded_scalars)]


class User(BaseModel):
    """The signed-in user of the page, as the application names them."""

    model_config = _MODEL_CONFIG

    id: NameText | None = None
    email: NameText | None = None
    username: NameText | None = None


class TelemetryBody(BaseModel):
    """The fields every telemetry body may carry."""

    model_config = _MODEL_CONFIG

    timestamp: Timestamp | None = Field(
        default=None, description="when it happened (ISO 8601); the time of arrival when absent"
    )
    session_id: SessionText = Field(description="the browser session: 8 to 64 of A-Z a-z 0-9 _ -")
    previous_session_id: SessionText | None = Field(default=None, description="the session this one followed")
    service: Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)] = Field(
        default=DEFAULT_SERVICE, description="service.name of the web application"
    )
    environment: ShortText | None = Field(default=None, description="deployment.environment.name")
    release: ShortText | None = Field(default=None, description="service.version")
    url: UrlText | None = Field(default=None, description="the page's URL")
    user_agent: ValueText | None = Field(
        default=None, description="the browser's user agent; the request's User-Agent header when absent"
    )
    user: User | None = None
    attributes: ScalarMap | None = Field(
        default=None, description=f"up to {MAX_ATTRIBUTES} more attributes: text, number or boolean values"
    )


class ErrorReport(TelemetryBody):
    """``POST /api/telemetry/error``: an exception the page raised."""

    event_id: EventId | None = Field(default=None, description="32 hex digits; made up when absent")
    type: Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)] = Field(
        description="the error's name (TypeError...)"
    )
    message: MessageText | None = None
    stacktrace: StackText | None = Field(
        default=None, description="error.stack as the browser wrote it (V8, Firefox or Safari)"
    )
    mechanism: Annotated[StrictStr, StringConstraints(max_length=64)] | None = Field(
        default=None, description="how it was caught: onerror, onunhandledrejection, manual..."
    )
    handled: StrictBool | None = None


class PageView(TelemetryBody):
    """``POST /api/telemetry/pageview``: the page was shown."""

    referrer: UrlText | None = None
    title: ValueText | None = None
    navigation: Literal["load", "push", "replace", "pop", "hash"] | None = None


class CustomEvent(TelemetryBody):
    """``POST /api/telemetry/event``: something the application chose to record."""

    name: Annotated[StrictStr, StringConstraints(min_length=1, max_length=MAX_KEY_CHARS)] = Field(
        description="the event's name"
    )
    properties: ScalarMap | None = Field(default=None, description=f"up to {MAX_ATTRIBUTES} properties")


VitalName = Literal["LCP", "INP", "CLS", "TTFB", "FCP"]


@dataclass(frozen=True)
class Vital:
    """How one web vital is recorded: its metric, unit, largest credible value and buckets."""

    metric: str
    unit: str
    description: str
    limit: float
    bounds: tuple[float, ...]


# Bucket bounds around each vital's "good" and "poor" thresholds (web.dev), so that the share
# of good page loads is a bucket's count.
VITALS: dict[str, Vital] = {
    "LCP": Vital(
        "browser.web_vital.lcp", "ms", "Largest Contentful Paint", 3_600_000.0,
        (500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 20000),
    ),
    "FCP": Vital(
        "browser.web_vital.fcp", "ms", "First Contentful Paint", 3_600_000.0,
        (250, 500, 1000, 1500, 1800, 2500, 3000, 4000, 6000, 10000),
    ),
    "INP": Vital(
        "browser.web_vital.inp", "ms", "Interaction to Next Paint", 3_600_000.0,
        (25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 2000, 5000),
    ),
    "TTFB": Vital(
        "browser.web_vital.ttfb", "ms", "Time to First Byte", 3_600_000.0,
        (50, 100, 200, 400, 600, 800, 1000, 1400, 1800, 2500, 5000),
    ),
    "CLS": Vital(
        "browser.web_vital.cls", "1", "Cumulative Layout Shift", 1000.0,
        (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0),
    ),
}  # fmt: skip


class WebVital(BaseModel):
    """One measurement of a web vital (the web-vitals library's metric)."""

    model_config = _MODEL_CONFIG

    name: VitalName
    value: StrictFloat = Field(ge=0, description="milliseconds; CLS is unitless")
    rating: Literal["good", "needs-improvement", "poor"] | None = None
    id: KeyText | None = None
    navigation_type: Annotated[StrictStr, StringConstraints(max_length=64)] | None = None

    @field_validator("value")
    @classmethod
    def _credible(cls, value: float, info: ValidationInfo) -> float:
        name = info.data.get("name")
        vital = VITALS.get(name) if isinstance(name, str) else None
        limit = vital.limit if vital is not None else 3_600_000.0
        if not math.isfinite(value) or value > limit:
            raise ValueError(
                f"{name or 'a vital'} must be at most {limit:g}"
                + (f" {vital.unit}" if vital and vital.unit != "1" else "")
            )
        return value


class PerformanceReport(TelemetryBody):
    """``POST /api/telemetry/performance``: web vitals measured on the page."""

    metrics: list[WebVital] = Field(min_length=1, max_length=MAX_METRICS, description="the measurements")


class Accepted(BaseModel):
    """What was taken: the number of records or measurements, and an error's event id."""

    accepted: int
    event_id: str | None = None


# --------------------------------------------------------------------------- attributes


class _Attrs:
    """Attributes of one record or resource being built: the first value of a key wins."""

    def __init__(self) -> None:
        self.values: dict[str, KeyValue] = {}

    def add(self, key: str, value: str | bool | int | float | None) -> None:
        if value is None or key in self.values or value == "":
            return
        kv = KeyValue(key=key)
        _set(kv.value, value)
        self.values[key] = kv

    def extend(self, pairs: Mapping[str, str | bool | int | float] | None, prefix: str = "") -> None:
        """Add the entries of ``pairs`` (``prefix`` before their keys); bare keys under the
        prefixes AppGuard reads itself are left out."""
        for key, value in (pairs or {}).items():
            if prefix or not key.startswith(_RESERVED_PREFIXES):
                self.add(prefix + key, value)

    def into(self, target: Any) -> None:
        target.extend(self.values.values())


def _set(out: AnyValue, value: str | bool | int | float) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            out.int_value = value
        else:
            out.string_value = str(value)
    elif isinstance(value, float):
        out.double_value = value
    else:
        out.string_value = value


def url_path(url: str | None) -> str | None:
    """The path of a URL (no query, no fragment), or None when there is no URL."""
    if not url:
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return path or "/"


def _resource(body: TelemetryBody, project_id: int, extra: Mapping[str, str] | None = None) -> Resource:
    attrs = _Attrs()
    attrs.add(SERVICE_NAME, body.service)
    attrs.add(SERVICE_VERSION, body.release)
    attrs.add(ENVIRONMENT, body.environment)
    attrs.add(SDK_LANGUAGE, WEBJS)
    attrs.add("telemetry.sdk.name", SDK_NAME)
    attrs.extend(extra)
    attrs.add(PROJECT_ID, project_id)
    resource = Resource()
    attrs.into(resource.attributes)
    return resource


def _common(attrs: _Attrs, body: TelemetryBody, user_agent: str | None) -> None:
    attrs.add(SESSION_ID, body.session_id)
    attrs.add(SESSION_PREVIOUS_ID, body.previous_session_id)
    attrs.add(URL_FULL, body.url)
    attrs.add(URL_PATH, url_path(body.url))
    attrs.add(USER_AGENT, body.user_agent or user_agent)
    if body.user is not None:
        attrs.add(USER_ID, body.user.id)
        attrs.add(USER_EMAIL, body.user.email)
        attrs.add(USER_NAME, body.user.username)


def _time_ns(when: datetime | None, received_ns: int) -> int:
    if when is None:
        return received_ns
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _logs(body: TelemetryBody, project_id: int, record: LogRecord) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(_resource(body, project_id))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.CopyFrom(InstrumentationScope(name=SCOPE_NAME))
    scope_logs.log_records.append(record)
    return request


def _record(body: TelemetryBody, received_ns: int, severity: int, text: str) -> LogRecord:
    record = LogRecord()
    record.observed_time_unix_nano = received_ns
    record.time_unix_nano = _time_ns(body.timestamp, received_ns)
    record.severity_number = severity  # type: ignore[assignment]
    record.severity_text = "ERROR" if severity == SeverityNumber.SEVERITY_NUMBER_ERROR else "INFO"
    record.body.string_value = text
    return record


# --------------------------------------------------------------------------- logs


def new_event_id() -> str:
    """A fresh event id: 32 hex digits."""
    return uuid.uuid4().hex


def error_to_logs(
    report: ErrorReport,
    *,
    project_id: int,
    event_id: str,
    user_agent: str | None = None,
    received_ns: int | None = None,
) -> ExportLogsServiceRequest:
    """The OTLP logs request of an error report (see the module docstring)."""
    now = received_ns or time.time_ns()
    title = f"{report.type}: {report.message}" if report.message else report.type
    record = _record(report, now, SeverityNumber.SEVERITY_NUMBER_ERROR, title)
    attrs = _Attrs()
    attrs.add(EXCEPTION_TYPE, report.type)
    attrs.add(EXCEPTION_MESSAGE, report.message)
    attrs.add(EXCEPTION_STACKTRACE, report.stacktrace)
    if report.handled is not None:
        attrs.add(EXCEPTION_ESCAPED, not report.handled)
        attrs.add("handled", "yes" if report.handled else "no")
    attrs.add("mechanism", report.mechanism)
    attrs.add(EVENT_ID, event_id.lower())
    _common(attrs, report, user_agent)
    attrs.extend(report.attributes)
    attrs.into(record.attributes)
    return _logs(report, project_id, record)


def page_view_to_logs(
    view: PageView, *, project_id: int, user_agent: str | None = None, received_ns: int | None = None
) -> ExportLogsServiceRequest:
    """The OTLP logs request of a page view: one INFO record named ``browser.page_view``."""
    now = received_ns or time.time_ns()
    record = _record(view, now, SeverityNumber.SEVERITY_NUMBER_INFO, f"page view {url_path(view.url) or ''}".rstrip())
    record.event_name = PAGE_VIEW_EVENT
    attrs = _Attrs()
    attrs.add(EVENT_NAME, PAGE_VIEW_EVENT)
    attrs.add("browser.referrer", view.referrer)
    attrs.add("browser.page.title", view.title)
    attrs.add("browser.navigation.type", view.navigation)
    _common(attrs, view, user_agent)
    attrs.extend(view.attributes)
    attrs.into(record.attributes)
    return _logs(view, project_id, record)


def custom_event_to_logs(
    event: CustomEvent, *, project_id: int, user_agent: str | None = None, received_ns: int | None = None
) -> ExportLogsServiceRequest:
    """The OTLP logs request of a custom event: one INFO record named ``browser.custom_event``,
    its name in ``appguard.event.name`` and its properties as ``appguard.event.property.<key>``."""
    now = received_ns or time.time_ns()
    record = _record(event, now, SeverityNumber.SEVERITY_NUMBER_INFO, event.name)
    record.event_name = CUSTOM_EVENT
    attrs = _Attrs()
    attrs.add(EVENT_NAME, CUSTOM_EVENT)
    attrs.add("appguard.event.name", event.name)
    attrs.extend(event.properties, prefix="appguard.event.property.")
    _common(attrs, event, user_agent)
    attrs.extend(event.attributes)
    attrs.into(record.attributes)
    return _logs(event, project_id, record)


# --------------------------------------------------------------------------- web vitals


@dataclass
class _Series:
    start_ns: int
    counts: list[int]
    count: int = 0
    total: float = 0.0


@dataclass
class Added:
    """What one report added to the accumulator: the request to deliver, and how to take it back."""

    request: ExportMetricsServiceRequest
    undo: Callable[[], None] = field(repr=False)


_SeriesKey = tuple[int, str, str, str, str, str, str, str]


def bucket_index(bounds: Sequence[float], value: float) -> int:
    """The index of the histogram bucket ``value`` falls in (a bound is the upper end, inclusive)."""
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)


class VitalsAccumulator:
    """Web vitals added up per series, sent as cumulative histograms.

    Each browser reports a handful of measurements once; a Prometheus histogram needs their
    running counts. Delta points from separate requests do not line up (each would start
    where the last one of its series ended), so the API process keeps the counts itself and
    every report sends the series it touched with their totals since the series started:
    reports that arrive out of order are then harmless (the older total is ignored).

    A series is the vital, its rating and navigation type, the page's path (never its query,
    to bound the number of series) and the resource (project, service, release, environment).
    Each API process is its own producer, named by ``service.instance.id`` on the resource, so
    that processes behind one collector do not overwrite each other's totals; Prometheus adds
    them up across ``instance``. At most ``max_series`` are kept, the least recently updated
    forgotten first (it starts again from zero, which Prometheus reads as a counter reset).
    """

    def __init__(self, instance_id: str | None = None, max_series: int = MAX_VITAL_SERIES) -> None:
        self.instance_id = instance_id or uuid.uuid4().hex
        self.max_series = max_series
        self._series: OrderedDict[_SeriesKey, _Series] = OrderedDict()

    def __len__(self) -> int:
        return len(self._series)

    def add(self, report: PerformanceReport, *, project_id: int, now_ns: int | None = None) -> Added:
        """Count the report's measurements; the request carrying the touched series' totals."""
        now = now_ns or time.time_ns()
        path = url_path(report.url) or ""
        resource_key = (project_id, report.service, report.release or "", report.environment or "")
        added: list[tuple[_SeriesKey, _Series, int, float]] = []
        touched: dict[_SeriesKey, _Series] = {}
        for vital in report.metrics:
            key: _SeriesKey = (*resource_key, vital.name, vital.rating or "", vital.navigation_type or "", path)
            series = self._series.get(key)
            if series is None:
                series = _Series(start_ns=now, counts=[0] * (len(VITALS[vital.name].bounds) + 1))
                self._series[key] = series
            else:
                self._series.move_to_end(key)
            index = bucket_index(VITALS[vital.name].bounds, float(vital.value))
            series.counts[index] += 1
            series.count += 1
            series.total += float(vital.value)
            added.append((key, series, index, float(vital.value)))
            touched[key] = series
        request = self._request(report, project_id, touched, now)
        while len(self._series) > self.max_series:
            self._series.popitem(last=False)

        def undo() -> None:
            for key, series, index, value in added:
                if self._series.get(key) is series:
                    series.counts[index] -= 1
                    series.count -= 1
                    series.total -= value

        return Added(request, undo)

    def _request(
        self, report: PerformanceReport, project_id: int, touched: Mapping[_SeriesKey, _Series], now: int
    ) -> ExportMetricsServiceRequest:
        request = ExportMetricsServiceRequest()
        resource_metrics = request.resource_metrics.add()
        resource_metrics.resource.CopyFrom(_resource(report, project_id, {"service.instance.id": self.instance_id}))
        scope_metrics = resource_metrics.scope_metrics.add()
        scope_metrics.scope.CopyFrom(InstrumentationScope(name=SCOPE_NAME))
        metrics: dict[str, Metric] = {}
        for key, series in touched.items():
            name, rating, navigation, path = key[4:]
            vital = VITALS[name]
            metric = metrics.get(name)
            if metric is None:
                metric = scope_metrics.metrics.add(name=vital.metric, unit=vital.unit, description=vital.description)
                metric.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                metrics[name] = metric
            point: HistogramDataPoint = metric.histogram.data_points.add(
                start_time_unix_nano=series.start_ns,
                time_unix_nano=max(now, series.start_ns),
                count=series.count,
                sum=series.total,
            )
            point.explicit_bounds.extend(vital.bounds)
            point.bucket_counts.extend(series.counts)
            attrs = _Attrs()
            attrs.add("rating", rating)
            attrs.add("navigation_type", navigation)
            attrs.add(URL_PATH, path)
            attrs.into(point.attributes)
        return request
