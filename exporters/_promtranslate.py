"""OTLP metrics as Prometheus sees them: names, units, labels, series, buckets.

The rules are those of the OpenTelemetry specification ("Prometheus and OpenMetrics
Compatibility", OTLP to Prometheus) as the stock collector's ``prometheus`` and
``prometheusremotewrite`` exporters apply them:

* Metric names: characters outside ``[a-zA-Z0-9:]`` separate words, which are joined with
  ``_`` (so runs of ``_`` collapse); the unit is added as a word unless the name has it
  already (``s`` -> ``seconds``, ``By`` -> ``bytes``, ``{packet}`` dropped, ``By/s`` ->
  ``bytes_per_second``); monotonic sums end in ``_total``; gauges of unit ``1`` end in
  ``_ratio``; a leading digit gets a ``_`` in front; the namespace comes first.
* Label names: characters outside ``[a-zA-Z0-9]`` become ``_`` (runs collapse), a leading
  digit gets ``key_``; two attributes that end up with the same label name have their values
  joined with ``;`` in the order of their original keys.
* ``job`` is ``service.namespace/service.name`` (or ``service.name``), ``instance`` is
  ``service.instance.id``; the other resource attributes go to ``target_info``.
* Scope name, version and schema URL become ``otel_scope_name``, ``otel_scope_version`` and
  ``otel_scope_schema_url``; scope attributes become ``otel_scope_<key>`` labels.

The work is arranged per request: names, resources and scopes are translated once (and
remembered across requests), so per data point only its attributes are turned into labels.
Both exporters share this module; each builds its own output (exposition samples, remote
write time series) from what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from collector.ottl.values import as_string

# The strategies of the stock exporters' ``translation_strategy`` key.
UNDERSCORE_ESCAPING_WITH_SUFFIXES = "UnderscoreEscapingWithSuffixes"
UNDERSCORE_ESCAPING_WITHOUT_SUFFIXES = "UnderscoreEscapingWithoutSuffixes"
NO_UTF8_ESCAPING_WITH_SUFFIXES = "NoUTF8EscapingWithSuffixes"
NO_TRANSLATION = "NoTranslation"
TRANSLATION_STRATEGIES = (
    UNDERSCORE_ESCAPING_WITH_SUFFIXES,
    UNDERSCORE_ESCAPING_WITHOUT_SUFFIXES,
    NO_UTF8_ESCAPING_WITH_SUFFIXES,
    NO_TRANSLATION,
)

TARGET_INFO = "target_info"
TARGET_INFO_HELP = "Target metadata"
SCOPE_NAME_LABEL = "otel_scope_name"
SCOPE_VERSION_LABEL = "otel_scope_version"
SCOPE_SCHEMA_URL_LABEL = "otel_scope_schema_url"
TRACE_ID_KEY = "trace_id"
SPAN_ID_KEY = "span_id"
# OpenMetrics limits an exemplar's label names and values to 128 characters in all.
MAX_EXEMPLAR_RUNES = 128
# DataPointFlags.FLAG_NO_RECORDED_VALUE: the series has ended (a stale marker).
NO_RECORDED_VALUE = 1

SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
_SERVICE_KEYS = frozenset({SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID})

# OTLP units (UCSUM, https://ucum.org) as the words Prometheus uses.
UNIT_WORDS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
# The unit after the ``/`` of a rate, in the singular: ``By/s`` -> ``bytes_per_second``.
PER_UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

# Caches of translated names; bounded so that a flood of distinct names cannot grow them.
_CACHE_LIMIT = 100_000


class Kind:
    """What an OTLP metric becomes in Prometheus (the TYPE of its family)."""

    GAUGE = "gauge"
    COUNTER = "counter"  # a monotonic sum
    UPDOWN = "updown"  # a non-monotonic sum: a gauge
    HISTOGRAM = "histogram"
    EXPONENTIAL = "exponential"  # an exponential histogram, as classic buckets
    SUMMARY = "summary"
    UNKNOWN = "unknown"  # a gauge marked ``prometheus.type: unknown``


def prometheus_type(kind: str) -> str:
    """The exposition TYPE of a kind: ``gauge``, ``counter``, ``histogram``, ``summary``, ``unknown``."""
    if kind in (Kind.UPDOWN, Kind.GAUGE):
        return "gauge"
    if kind == Kind.EXPONENTIAL:
        return "histogram"
    return kind


# --------------------------------------------------------------------------------------------
# Names


def _is_metric_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == ":"


def _is_label_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9")


def _words(text: str, keep: Any) -> list[str]:
    """``text`` split at every character ``keep`` refuses (empty words dropped)."""
    out: list[str] = []
    word: list[str] = []
    for c in text:
        if keep(c):
            word.append(c)
        elif word:
            out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return out


def _collapse(text: str) -> str:
    """Invalid metric characters as ``_``, runs of ``_`` as one, no leading ``_``."""
    out: list[str] = []
    last_underscore = False
    for c in text:
        if not _is_metric_char(c):
            c = "_"
        if c == "_":
            if last_underscore:
                continue
            last_underscore = True
        else:
            last_underscore = False
        out.append(c)
    return "".join(out).removeprefix("_")


def unit_suffixes(unit: str) -> tuple[str, str]:
    """The main and ``per_`` parts a unit adds to a name, not yet cleaned up.

    ``"By/s"`` -> ``("bytes", "per_second")``; parts in braces (annotations such as
    ``{packet}``) and blank parts add nothing.
    """
    main_text, sep, per_text = unit.partition("/")
    main = per = ""
    main_text = main_text.strip()
    if main_text and "{" not in main_text and "}" not in main_text:
        main = UNIT_WORDS.get(main_text, main_text)
    if sep and per_text:
        per_text = per_text.strip()
        if per_text and "{" not in per_text and "}" not in per_text:
            word = PER_UNIT_WORDS.get(per_text, per_text)
            if word:
                per = "per_" + word
    return main, per


def unit_name(unit: str, *, escape: bool = True) -> str:
    """The UNIT metadata of an OTLP unit: ``"s"`` -> ``"seconds"``, ``"1/s"`` -> ``"per_second"``."""
    main, per = unit_suffixes(unit)
    if escape:
        main, per = _collapse(main), _collapse(per)
    text = f"{main}_{per}" if main and per else main or per
    return text.removeprefix("_").removesuffix("_")


class InvalidName(ValueError):
    """A metric or label name that translates to nothing usable (empty, or only ``_``)."""


@dataclass(frozen=True)
class Naming:
    """How names are translated: namespace, type and unit suffixes, escaping to ``_``."""

    namespace: str = ""
    suffixes: bool = True
    escape: bool = True

    @classmethod
    def from_config(cls, namespace: str, add_metric_suffixes: bool, translation_strategy: str | None) -> Naming:
        """The naming of the stock config keys: ``translation_strategy`` wins over ``add_metric_suffixes``."""
        if translation_strategy:
            suffixes = translation_strategy in (UNDERSCORE_ESCAPING_WITH_SUFFIXES, NO_UTF8_ESCAPING_WITH_SUFFIXES)
            escape = translation_strategy in (UNDERSCORE_ESCAPING_WITH_SUFFIXES, UNDERSCORE_ESCAPING_WITHOUT_SUFFIXES)
            return cls(namespace, suffixes, escape)
        return cls(namespace, add_metric_suffixes, True)

    def metric_name(self, name: str, unit: str, kind: str) -> str:
        """The Prometheus name of a metric; :class:`InvalidName` when nothing valid is left."""
        if not self.escape:
            return self._utf8_name(name, unit, kind)
        if self.suffixes:
            result = self._normalized(name, unit, kind)
        else:
            words = _words(name, lambda c: _is_metric_char(c) or c == "_")
            result = "_".join(words)
            if self.namespace:
                ns = "_".join(_words(self.namespace, lambda c: _is_metric_char(c) or c == "_"))
                result = f"{ns}_{result}"
            elif result and result[0].isdigit():
                result = "_" + result
        if not result:
            raise InvalidName(f"metric name {name!r} translates to an empty name")
        if result != name and not result.strip("_"):
            raise InvalidName(f"metric name {name!r} translates to the invalid name {result!r}")
        return result

    def _normalized(self, name: str, unit: str, kind: str) -> str:
        words = _words(name, _is_metric_char)
        main, per = unit_suffixes(unit)
        main, per = _collapse(main), _collapse(per)
        if main in words:
            main = ""
        if per == "per_":
            per = ""
        else:
            per = per.removesuffix("_")
            if per in words:
                per = ""
        if per:
            main = main.removesuffix("_")
        if main:
            words.append(main)
        if per:
            words.append(per)
        if kind == Kind.COUNTER:
            words = [w for w in words if w != "total"]
            words.append("total")
        if unit == "1" and kind in (Kind.GAUGE, Kind.UNKNOWN):
            words = [w for w in words if w != "ratio"]
            words.append("ratio")
        if self.namespace:
            words.insert(0, self.namespace)
        result = "_".join(words)
        if result and result[0].isdigit():
            result = "_" + result
        return result

    def _utf8_name(self, name: str, unit: str, kind: str) -> str:
        result = f"{self.namespace}_{name}" if self.namespace else name
        if not self.suffixes:
            return result
        tails: list[str] = []
        if unit == "1" and kind in (Kind.GAUGE, Kind.UNKNOWN):
            result = _trim_suffix(result, "ratio")
            tails.append("_ratio")
        if kind == Kind.COUNTER:
            result = _trim_suffix(result, "total")
            tails.append("_total")
        main, per = unit_suffixes(unit)
        if per:
            result = _trim_suffix(result, per)
            tails.append("_" + per)
        if main and not result.endswith(main):
            result = f"{result}_{main}"
        # The suffixes go back in the opposite order they were taken off.
        return result + "".join(reversed(tails))

    def label_name(self, key: str) -> str:
        """The Prometheus label name of an attribute key; :class:`InvalidName` if none."""
        if not key:
            raise InvalidName("an attribute key is empty")
        if not self.escape:
            if not key.strip("_"):
                raise InvalidName(f"label name {key!r} contains only underscores")
            return key
        return sanitize_label(key)


def _trim_suffix(name: str, suffix: str) -> str:
    # Also drops the one delimiter before the suffix.
    if name.endswith(suffix) and len(name) > len(suffix) + 1:
        return name[: -(len(suffix) + 1)]
    return name


_LABEL_CACHE: dict[str, str] = {}
_NO_CACHE: dict[str, str] = {}


def sanitize_label(key: str) -> str:
    """``http.method`` -> ``http_method``; ``2xx`` -> ``key_2xx``; ``__x__`` is kept reserved."""
    cached = _LABEL_CACHE.get(key)
    if cached is not None:
        return cached
    inner = key
    reserved = len(key) >= 4 and key.startswith("__") and key.endswith("__")
    if reserved:
        inner = key[2:-2]
    out: list[str] = []
    last_underscore = False
    for c in inner:
        if _is_label_char(c):
            out.append(c)
            last_underscore = False
        elif not last_underscore:
            out.append("_")
            last_underscore = True
    result = "".join(out)
    if reserved:
        result = f"__{result}__"
    if result and result[0].isdigit():
        result = "key_" + result
    if not result.strip("_"):
        raise InvalidName(f"label name {key!r} translates to the invalid name {result!r}")
    if len(_LABEL_CACHE) >= _CACHE_LIMIT:
        _LABEL_CACHE.clear()
    _LABEL_CACHE[key] = result
    return result


# --------------------------------------------------------------------------------------------
# Values and labels


def value_text(value: AnyValue) -> str:
    """An attribute value as a label value (pdata's ``AsString``)."""
    text = value.string_value
    if text:
        return text
    return as_string(value)


def attribute_labels(attributes: Iterable[KeyValue], naming: Naming, *, prefix: str = "") -> dict[str, str]:
    """Labels from attributes; colliding names join their values with ``;`` by original key.

    Attributes with an empty value, or whose key translates to no valid name, give no label
    (Prometheus treats an empty label value as an absent label).
    """
    labels: dict[str, str] = {}
    collided = False
    label_name = naming.label_name
    # Escaped names of plain keys are remembered: the common case is a dict lookup.
    known = _LABEL_CACHE if naming.escape and not prefix else _NO_CACHE
    for kv in attributes:
        text = kv.value.string_value or as_string(kv.value)
        if not text:
            continue
        name = known.get(kv.key)
        if name is None:
            try:
                name = label_name(prefix + kv.key)
            except InvalidName:
                continue
        if name in labels:
            collided = True
        labels[name] = text
    if collided:
        return _joined_labels(attributes, naming, prefix)
    return labels


def _joined_labels(attributes: Iterable[KeyValue], naming: Naming, prefix: str) -> dict[str, str]:
    pairs: list[tuple[str, str]] = []
    for kv in attributes:
        text = value_text(kv.value)
        if text:
            pairs.append((prefix + kv.key, text))
    pairs.sort(key=lambda p: p[0])
    labels: dict[str, str] = {}
    for key, text in pairs:
        try:
            name = naming.label_name(key)
        except InvalidName:
            continue
        labels[name] = f"{labels[name]};{text}" if name in labels else text
    return labels


def merged_attributes(point: Iterable[KeyValue], resource: Sequence[KeyValue]) -> list[KeyValue]:
    """Point attributes with the resource's added; on the same key the resource's wins.

    This is what ``resource_to_telemetry_conversion`` does in the stock collector.
    """
    keys = {kv.key for kv in resource}
    return [kv for kv in point if kv.key not in keys] + list(resource)


@dataclass(frozen=True)
class ResourceInfo:
    """What a resource contributes: ``job``, ``instance``, the ``target_info`` labels, and the
    attributes copied onto every series under ``resource_to_telemetry_conversion``."""

    job: str
    instance: str
    target_labels: dict[str, str]
    copied: tuple[KeyValue, ...]

    def identity(self) -> dict[str, str]:
        """``job`` and ``instance``, those that are not empty."""
        out = {}
        if self.job:
            out["job"] = self.job
        if self.instance:
            out["instance"] = self.instance
        return out


def job_and_instance(attributes: Iterable[KeyValue]) -> tuple[str, str]:
    """``job`` from ``service.namespace``/``service.name``, ``instance`` from ``service.instance.id``."""
    name = namespace = instance = None
    for kv in attributes:
        if kv.key == SERVICE_NAME:
            name = value_text(kv.value)
        elif kv.key == SERVICE_NAMESPACE:
            namespace = value_text(kv.value)
        elif kv.key == SERVICE_INSTANCE_ID:
            instance = value_text(kv.value)
    job = ""
    if name is not None:
        job = f"{namespace}/{name}" if namespace is not None else name
    return job, instance or ""


@dataclass(frozen=True)
class Family:
    """A metric's Prometheus identity: name, kind, help text and unit (for metadata)."""

    name: str
    kind: str
    help: str
    unit: str

    @property
    def type(self) -> str:
        """The exposition TYPE."""
        return prometheus_type(self.kind)


def metric_kind(metric: Metric, *, keep_deltas: bool) -> str | None:
    """The kind of a metric, or None when Prometheus cannot take it.

    Sums and histograms need cumulative temporality, except that with ``keep_deltas`` (an
    exporter that accumulates) monotonic delta sums and delta histograms are taken too.
    Non-monotonic delta sums and unspecified temporality never are.
    """
    data = metric.WhichOneof("data")
    if data == "gauge":
        for kv in metric.metadata:
            if kv.key == "prometheus.type" and kv.value.string_value == "unknown":
                return Kind.UNKNOWN
        return Kind.GAUGE
    if data == "sum":
        temporality = metric.sum.aggregation_temporality
        if temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE:
            return Kind.COUNTER if metric.sum.is_monotonic else Kind.UPDOWN
        if temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA and metric.sum.is_monotonic and keep_deltas:
            return Kind.COUNTER
        return None
    if data == "histogram":
        return _temporal(metric.histogram.aggregation_temporality, Kind.HISTOGRAM, keep_deltas)
    if data == "exponential_histogram":
        return _temporal(metric.exponential_histogram.aggregation_temporality, Kind.EXPONENTIAL, keep_deltas)
    if data == "summary":
        return Kind.SUMMARY
    return None


def _temporal(temporality: int, kind: str, keep_deltas: bool) -> str | None:
    if temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE:
        return kind
    if temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA and keep_deltas:
        return kind
    return None


class Translator:
    """Translates resources, scopes and metrics, remembering the results across requests.

    ``copy_resource``: ``resource_to_telemetry_conversion`` (with ``exclude_service`` its
    ``exclude_service_attributes``). ``scope_labels``: the ``otel_scope_*`` labels (off with
    the stock ``without_scope_info`` / ``disable_scope_info``).
    """

    def __init__(
        self,
        naming: Naming,
        *,
        copy_resource: bool = False,
        exclude_service: bool = False,
        scope_labels: bool = True,
        keep_deltas: bool = False,
    ) -> None:
        self.naming = naming
        self.copy_resource = copy_resource
        self.exclude_service = exclude_service
        self.scope_labels = scope_labels
        self.keep_deltas = keep_deltas
        self._resources: dict[bytes, ResourceInfo] = {}
        self._scopes: dict[tuple[bytes, str], dict[str, str]] = {}
        self._families: dict[tuple[str, str, str, str], Family | InvalidName] = {}
        self.target_info_name = f"{naming.namespace}_{TARGET_INFO}" if naming.namespace else TARGET_INFO
        if naming.escape and naming.namespace:
            self.target_info_name = naming.metric_name(TARGET_INFO, "", Kind.GAUGE)

    def resource(self, resource: Resource) -> ResourceInfo:
        """The resource's job, instance, target_info labels and copied attributes."""
        key = resource.SerializeToString()
        info = self._resources.get(key)
        if info is None:
            attrs = resource.attributes
            job, instance = job_and_instance(attrs)
            target = attribute_labels((kv for kv in attrs if kv.key not in _SERVICE_KEYS), self.naming)
            copied: tuple[KeyValue, ...] = ()
            if self.copy_resource:
                copied = tuple(kv for kv in attrs if not (self.exclude_service and kv.key in _SERVICE_KEYS))
            info = ResourceInfo(job, instance, target, copied)
            if len(self._resources) >= _CACHE_LIMIT:
                self._resources.clear()
            self._resources[key] = info
        return info

    def scope(self, scope: InstrumentationScope, schema_url: str) -> dict[str, str]:
        """The ``otel_scope_*`` labels of a scope (empty when they are turned off)."""
        if not self.scope_labels:
            return {}
        key = (scope.SerializeToString(), schema_url)
        labels = self._scopes.get(key)
        if labels is None:
            labels = attribute_labels(scope.attributes, self.naming, prefix="otel_scope_")
            for name, value in ((SCOPE_NAME_LABEL, scope.name), (SCOPE_VERSION_LABEL, scope.version), (SCOPE_SCHEMA_URL_LABEL, schema_url)):
                if value:
                    labels[name] = value
            if len(self._scopes) >= _CACHE_LIMIT:
                self._scopes.clear()
            self._scopes[key] = labels
        return labels

    def family(self, metric: Metric) -> Family | None:
        """The family of a metric; None when it cannot be exported (kind or name)."""
        kind = metric_kind(metric, keep_deltas=self.keep_deltas)
        if kind is None:
            return None
        key = (metric.name, metric.unit, metric.description, kind)
        found = self._families.get(key)
        if found is None:
            try:
                name = self.naming.metric_name(metric.name, metric.unit, kind)
                found = Family(name, kind, metric.description, self._unit(name, metric.unit, kind))
            except InvalidName as exc:
                found = exc
            if len(self._families) >= _CACHE_LIMIT:
                self._families.clear()
            self._families[key] = found
        if isinstance(found, InvalidName):
            raise found
        return found

    def _unit(self, name: str, unit: str, kind: str) -> str:
        # UNIT metadata only where the name carries it, as OpenMetrics requires.
        if not self.naming.suffixes:
            return ""
        text = unit_name(unit, escape=self.naming.escape)
        base = name.removesuffix("_total") if kind == Kind.COUNTER else name
        return text if text and base.endswith("_" + text) else ""

    def point_labels(self, attributes: Sequence[KeyValue], resource: ResourceInfo) -> dict[str, str]:
        """The labels a data point's attributes give (with the resource's when copied)."""
        if resource.copied:
            return attribute_labels(merged_attributes(attributes, resource.copied), self.naming)
        if not attributes:
            return {}
        return attribute_labels(attributes, self.naming)


# --------------------------------------------------------------------------------------------
# Buckets


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int], count: int) -> list[tuple[float, int]]:
    """Explicit-bucket counts as cumulative ``(le, count)`` pairs ending with ``+Inf``.

    Bounds are taken in ascending order, duplicates once; bounds without a count add nothing.
    """
    out: list[tuple[float, int]] = []
    running = 0
    n = min(len(bounds), len(counts))
    if n and all(bounds[i] < bounds[i + 1] for i in range(n - 1)):
        for i in range(n):
            running += counts[i]
            out.append((bounds[i], running))
    elif n:
        seen: dict[float, int] = {}
        for i in range(n):
            seen.setdefault(bounds[i], i)
        for bound in sorted(seen):
            running += counts[seen[bound]]
            out.append((bound, running))
    out.append((math.inf, count))
    return out


def bucket_lower_bound(scale: int, index: int) -> float:
    """The lower boundary of exponential bucket ``index``: ``base ** index``, base ``2**2**-scale``."""
    try:
        if scale <= 0:
            return math.ldexp(1.0, index << -scale)
        return math.exp2(index / (1 << scale))
    except OverflowError:
        return math.inf if index > 0 else 0.0


@dataclass
class ExponentialState:
    """An exponential histogram point's buckets, as accumulated or as received."""

    scale: int
    zero_count: int
    zero_threshold: float
    pos_offset: int
    pos_counts: list[int]
    neg_offset: int
    neg_counts: list[int]
    count: int
    sum: float | None

    @classmethod
    def of(cls, point: Any) -> ExponentialState:
        """The state of an ``ExponentialHistogramDataPoint``."""
        return cls(
            point.scale,
            point.zero_count,
            point.zero_threshold,
            point.positive.offset,
            list(point.positive.bucket_counts),
            point.negative.offset,
            list(point.negative.bucket_counts),
            point.count,
            point.sum if point.HasField("sum") else None,
        )

    def buckets(self) -> list[tuple[float, int]]:
        """Classic cumulative ``(le, count)`` buckets: negative buckets from the most negative,
        the zero bucket (``le`` the zero threshold), the positive buckets, then ``+Inf``."""
        out: list[tuple[float, int]] = []
        running = 0
        scale = self.scale
        for i in range(len(self.neg_counts) - 1, -1, -1):
            running += self.neg_counts[i]
            out.append((-bucket_lower_bound(scale, self.neg_offset + i), running))
        if self.zero_count or self.neg_counts or self.pos_counts:
            running += self.zero_count
            out.append((self.zero_threshold, running))
        for i, n in enumerate(self.pos_counts):
            running += n
            out.append((bucket_lower_bound(scale, self.pos_offset + i + 1), running))
        if out and out[-1][0] == math.inf:
            out.pop()
        out.append((math.inf, self.count))
        return out

    def merged(self, newer: ExponentialState) -> ExponentialState:
        """This state plus a later delta, both at the smaller of the two scales."""
        scale = min(self.scale, newer.scale)
        pos_offset, pos = _merge_counts(
            _downscale(self.pos_offset, self.pos_counts, self.scale - scale),
            _downscale(newer.pos_offset, newer.pos_counts, newer.scale - scale),
        )
        neg_offset, neg = _merge_counts(
            _downscale(self.neg_offset, self.neg_counts, self.scale - scale),
            _downscale(newer.neg_offset, newer.neg_counts, newer.scale - scale),
        )
        total: float | None = None
        if self.sum is not None or newer.sum is not None:
            total = (self.sum or 0.0) + (newer.sum or 0.0)
        return ExponentialState(
            scale,
            self.zero_count + newer.zero_count,
            max(self.zero_threshold, newer.zero_threshold),
            pos_offset,
            pos,
            neg_offset,
            neg,
            self.count + newer.count,
            total,
        )


def _downscale(offset: int, counts: list[int], shift: int) -> tuple[int, list[int]]:
    if not counts or shift <= 0:
        return offset, counts
    # Python's >> floors, as bucket indexes need for negative offsets.
    first = offset >> shift
    out = [0] * (((offset + len(counts) - 1) >> shift) - first + 1)
    for i, n in enumerate(counts):
        out[((offset + i) >> shift) - first] += n
    return first, out


def _merge_counts(a: tuple[int, list[int]], b: tuple[int, list[int]]) -> tuple[int, list[int]]:
    (off_a, ca), (off_b, cb) = a, b
    if not ca:
        return off_b, list(cb)
    if not cb:
        return off_a, list(ca)
    first = min(off_a, off_b)
    last = max(off_a + len(ca), off_b + len(cb))
    out = [0] * (last - first)
    for i, n in enumerate(ca):
        out[off_a - first + i] += n
    for i, n in enumerate(cb):
        out[off_b - first + i] += n
    return first, out


# --------------------------------------------------------------------------------------------
# Exemplars


def exemplar_labels(exemplar: Any) -> dict[str, str]:
    """``trace_id`` / ``span_id`` in hex, and the filtered attributes when all fit in 128 characters."""
    labels: dict[str, str] = {}
    runes = 0
    if exemplar.trace_id:
        labels[TRACE_ID_KEY] = exemplar.trace_id.hex()
        runes += len(TRACE_ID_KEY) + 32
    if exemplar.span_id:
        labels[SPAN_ID_KEY] = exemplar.span_id.hex()
        runes += len(SPAN_ID_KEY) + 16
    extra: dict[str, str] = {}
    for kv in exemplar.filtered_attributes:
        text = value_text(kv.value)
        runes += len(kv.key) + len(text)
        extra[kv.key] = text
    if extra and runes <= MAX_EXEMPLAR_RUNES:
        for key, text in extra.items():
            labels.setdefault(key, text)
    return labels


def exemplar_value(exemplar: Any) -> float:
    """An exemplar's value as a float, whichever of int and double it holds."""
    if exemplar.WhichOneof("value") == "as_int":
        return float(exemplar.as_int)
    return float(exemplar.as_double)


def number_value(point: Any) -> float:
    """A ``NumberDataPoint``'s value as a float."""
    if point.WhichOneof("value") == "as_int":
        return float(point.as_int)
    return float(point.as_double)
