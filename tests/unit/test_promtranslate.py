"""OTLP -> Prometheus translation rules (exporters._promtranslate), case by case.

The cases are the examples of the OpenTelemetry specification ("Prometheus and OpenMetrics
Compatibility") and the behaviour the stock exporters' translator documents.
"""

from __future__ import annotations

import math

import pytest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporters import _promtranslate as pt
from exporters._promtranslate import ExponentialState, InvalidName, Kind, Naming, Translator
from tests.support.prometheus import set_attributes

SUFFIXES = Naming()
NO_SUFFIXES = Naming(suffixes=False)
UTF8 = Naming(escape=False)


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        # Invalid characters separate words; runs of them (and of "_") become one "_".
        ("http.server.duration", "s", Kind.HISTOGRAM, "http_server_duration_seconds"),
        ("metric@with#special$chars", "", Kind.GAUGE, "metric_with_special_chars"),
        ("metric__with__multiple__underscores", "unit__multiple__underscores", Kind.GAUGE, "metric_with_multiple_underscores_unit_multiple_underscores"),
        # Units: full words, braces dropped, "/" as "per".
        ("response_time", "ms", Kind.GAUGE, "response_time_milliseconds"),
        ("memory_usage", "By", Kind.GAUGE, "memory_usage_bytes"),
        ("cache_size", "KiBy", Kind.GAUGE, "cache_size_kibibytes"),
        ("temperature", "Cel", Kind.GAUGE, "temperature_celsius"),
        ("cpu_usage", "%", Kind.GAUGE, "cpu_usage_percent"),
        ("custom_metric", "{custom}", Kind.GAUGE, "custom_metric"),
        ("packets", "{packet}", Kind.COUNTER, "packets_total"),
        ("custom_metric", "By/{custom}", Kind.GAUGE, "custom_metric_bytes"),
        ("throughput", "By/s", Kind.GAUGE, "throughput_bytes_per_second"),
        ("requests", "1/s", Kind.GAUGE, "requests_per_second"),
        ("events", "1/h", Kind.GAUGE, "events_per_hour"),
        ("invoices", "1/mo", Kind.GAUGE, "invoices_per_month"),
        ("custom", "1/custom_unit", Kind.GAUGE, "custom_per_custom_unit"),
        ("metric", "By/", Kind.GAUGE, "metric_bytes"),
        ("metric", " By / s ", Kind.GAUGE, "metric_bytes_per_second"),
        ("custom_metric", "unit@with#special/chars", Kind.GAUGE, "custom_metric_unit_with_special_per_chars"),
        ("custom_metric", "custom_unit", Kind.GAUGE, "custom_metric_custom_unit"),
        # The unit is not repeated when the name has it.
        ("response_time_seconds", "s", Kind.GAUGE, "response_time_seconds"),
        # Counters end in _total (once); gauges of unit 1 in _ratio; other unit-1 kinds get nothing.
        ("requests", "", Kind.COUNTER, "requests_total"),
        ("requests_total", "", Kind.COUNTER, "requests_total"),
        ("items", "1", Kind.COUNTER, "items_total"),
        ("cpu_usage", "1", Kind.GAUGE, "cpu_usage_ratio"),
        ("cpu_usage_ratio", "1", Kind.GAUGE, "cpu_usage_ratio"),
        ("active", "1", Kind.UPDOWN, "active"),
        ("requests", "1/s", Kind.COUNTER, "requests_per_second_total"),
        ("otelcol_process_cpu_seconds", "s", Kind.COUNTER, "otelcol_process_cpu_seconds_total"),
        # A leading digit gets "_".
        ("123metric", "", Kind.GAUGE, "_123metric"),
    ],
)
def test_metric_names_with_suffixes(name: str, unit: str, kind: str, expected: str) -> None:
    assert SUFFIXES.metric_name(name, unit, kind) == expected


@pytest.mark.parametrize(
    ("naming", "name", "unit", "kind", "expected"),
    [
        (Naming(namespace="app"), "requests", "1/s", Kind.COUNTER, "app_requests_per_second_total"),
        (Naming(namespace="app"), "123_requests", "", Kind.COUNTER, "app_123_requests_total"),
        (NO_SUFFIXES, "simple_metric", "s", Kind.COUNTER, "simple_metric"),
        (NO_SUFFIXES, "metric@@##$$name", "", Kind.GAUGE, "metric_name"),
        (NO_SUFFIXES, "123metric", "", Kind.GAUGE, "_123metric"),
        # Only underscores is kept as it is without suffixes (it was valid to begin with).
        (NO_SUFFIXES, "___", "", Kind.GAUGE, "___"),
        (Naming(namespace="test_namespace", suffixes=False), "simple_metric", "", Kind.GAUGE, "test_namespace_simple_metric"),
        (Naming(namespace="test@namespace!!??", suffixes=False), "metric", "", Kind.GAUGE, "test_namespace_metric"),
        # Without escaping (UTF-8 strategies) the name is kept and suffixes are still added.
        (UTF8, "métric_with_ñ", "ms", Kind.GAUGE, "métric_with_ñ_milliseconds"),
        (UTF8, "requêsts", "1/s", Kind.COUNTER, "requêsts_per_second_total"),
        (UTF8, "cpu_seconds_total", "s", Kind.COUNTER, "cpu_seconds_total"),
        (UTF8, "cpu_usagé", "1", Kind.GAUGE, "cpu_usagé_ratio"),
        (Naming(namespace="ñamespace", escape=False), "requêsts", "1/s", Kind.COUNTER, "ñamespace_requêsts_per_second_total"),
        (Naming(suffixes=False, escape=False), "http.server.duration", "s", Kind.HISTOGRAM, "http.server.duration"),
    ],
)
def test_metric_names_other_strategies(naming: Naming, name: str, unit: str, kind: str, expected: str) -> None:
    assert naming.metric_name(name, unit, kind) == expected


@pytest.mark.parametrize(
    ("name", "naming"), [("", SUFFIXES), ("@#$%", SUFFIXES), ("___", SUFFIXES), ("@#$%", NO_SUFFIXES), ("@_#_$_%", NO_SUFFIXES)]
)
def test_names_that_translate_to_nothing_are_refused(name: str, naming: Naming) -> None:
    with pytest.raises(InvalidName):
        naming.metric_name(name, "", Kind.GAUGE)


@pytest.mark.parametrize(
    ("strategy", "add_suffixes", "expected"),
    [
        (None, True, Naming("", True, True)),
        (None, False, Naming("", False, True)),
        (pt.UNDERSCORE_ESCAPING_WITH_SUFFIXES, False, Naming("", True, True)),
        (pt.UNDERSCORE_ESCAPING_WITHOUT_SUFFIXES, True, Naming("", False, True)),
        (pt.NO_UTF8_ESCAPING_WITH_SUFFIXES, False, Naming("", True, False)),
        (pt.NO_TRANSLATION, True, Naming("", False, False)),
    ],
)
def test_translation_strategy_wins_over_add_metric_suffixes(strategy: str | None, add_suffixes: bool, expected: Naming) -> None:
    assert Naming.from_config("", add_suffixes, strategy) == expected


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("s", "seconds"), ("By/s", "bytes_per_second"), ("1/s", "per_second"), ("1", ""), ("{packet}", ""), ("%", "percent"), ("m/s", "meters_per_second")],
)
def test_unit_metadata(unit: str, expected: str) -> None:
    assert pt.unit_name(unit) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.method", "http_method"),
        ("http-method", "http_method"),
        ("label with spaces", "label_with_spaces"),
        ("a..b", "a_b"),
        ("2xx", "key_2xx"),
        ("_private", "_private"),
        ("__reserved__", "__reserved__"),
        ("__re.served__", "__re_served__"),
        ("ünïcode", "_n_code"),
        ("valid_Name1", "valid_Name1"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert SUFFIXES.label_name(key) == expected


@pytest.mark.parametrize("key", ["", "___", "..."])
def test_unusable_label_names(key: str) -> None:
    with pytest.raises(InvalidName):
        SUFFIXES.label_name(key)


def _kvs(values: dict[str, object]) -> list[KeyValue]:
    holder = Resource()
    set_attributes(holder.attributes, values)
    return list(holder.attributes)


def test_colliding_labels_join_values_in_key_order() -> None:
    # The specification's rule: values joined with ";" by the lexicographic order of the keys.
    labels = pt.attribute_labels(_kvs({"foo_bar": "2", "foo.bar": "1", "other": "x"}), SUFFIXES)
    assert labels == {"foo_bar": "1;2", "other": "x"}


def test_attribute_values_as_text() -> None:
    labels = pt.attribute_labels(
        _kvs({"s": "text", "i": 42, "d": 1.5, "b": True, "raw": b"\x01\x02", "empty": "", "bad..": "dropped?"}), SUFFIXES
    )
    assert labels == {"s": "text", "i": "42", "d": "1.5", "b": "true", "raw": "AQI=", "bad_": "dropped?"}


def test_job_instance_and_target_info() -> None:
    translator = Translator(SUFFIXES)
    resource = Resource()
    set_attributes(resource.attributes, {"service.name": "cart", "service.namespace": "shop", "service.instance.id": "i-1", "k8s.pod.name": "p"})
    info = translator.resource(resource)
    assert info.identity() == {"job": "shop/cart", "instance": "i-1"}
    assert info.target_labels == {"k8s_pod_name": "p"}
    assert info.copied == ()
    # Without a namespace the job is the service name; without an instance id, no instance.
    resource = Resource()
    set_attributes(resource.attributes, {"service.name": "cart"})
    assert translator.resource(resource).identity() == {"job": "cart"}
    assert translator.resource(resource).target_labels == {}


def test_resource_attributes_copied_to_points() -> None:
    translator = Translator(SUFFIXES, copy_resource=True, exclude_service=True)
    resource = Resource()
    set_attributes(resource.attributes, {"service.name": "cart", "host.name": "h1"})
    info = translator.resource(resource)
    labels = translator.point_labels(_kvs({"host.name": "from-point", "route": "/"}), info)
    assert labels == {"host_name": "h1", "route": "/"}


def test_scope_labels() -> None:
    translator = Translator(SUFFIXES)
    scope = InstrumentationScope(name="io.opentelemetry.http", version="1.2.3")
    set_attributes(scope.attributes, {"library.mascot": "bear"})
    assert translator.scope(scope, "https://opentelemetry.io/schemas/1.21.0") == {
        "otel_scope_library_mascot": "bear",
        "otel_scope_name": "io.opentelemetry.http",
        "otel_scope_version": "1.2.3",
        "otel_scope_schema_url": "https://opentelemetry.io/schemas/1.21.0",
    }
    assert Translator(SUFFIXES, scope_labels=False).scope(scope, "") == {}


def _metric(kind: str, *, temporality: int = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE, monotonic: bool = False) -> Metric:
    metric = Metric(name="m")
    data = getattr(metric, kind)
    data.SetInParent()
    if kind == "sum":
        data.is_monotonic = monotonic
    if kind in ("sum", "histogram", "exponential_histogram"):
        data.aggregation_temporality = temporality
    return metric


DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
UNSPECIFIED = AggregationTemporality.AGGREGATION_TEMPORALITY_UNSPECIFIED


@pytest.mark.parametrize(
    ("metric", "keep_deltas", "expected"),
    [
        (_metric("gauge"), False, Kind.GAUGE),
        (_metric("sum", monotonic=True), False, Kind.COUNTER),
        (_metric("sum"), False, Kind.UPDOWN),
        (_metric("sum", monotonic=True, temporality=DELTA), False, None),
        (_metric("sum", monotonic=True, temporality=DELTA), True, Kind.COUNTER),
        (_metric("sum", temporality=DELTA), True, None),
        (_metric("sum", monotonic=True, temporality=UNSPECIFIED), True, None),
        (_metric("histogram"), False, Kind.HISTOGRAM),
        (_metric("histogram", temporality=DELTA), False, None),
        (_metric("histogram", temporality=DELTA), True, Kind.HISTOGRAM),
        (_metric("exponential_histogram"), False, Kind.EXPONENTIAL),
        (_metric("summary"), False, Kind.SUMMARY),
        (Metric(name="empty"), True, None),
    ],
)
def test_metric_kinds(metric: Metric, keep_deltas: bool, expected: str | None) -> None:
    assert pt.metric_kind(metric, keep_deltas=keep_deltas) == expected


def test_gauge_marked_unknown() -> None:
    metric = _metric("gauge")
    set_attributes(metric.metadata, {"prometheus.type": "unknown"})
    assert pt.metric_kind(metric, keep_deltas=False) == Kind.UNKNOWN
    assert pt.prometheus_type(Kind.UNKNOWN) == "unknown"


def test_family_unit_only_where_the_name_carries_it() -> None:
    translator = Translator(SUFFIXES)
    metric = _metric("histogram")
    metric.unit = "s"
    metric.description = "time"
    family = translator.family(metric)
    assert family is not None and (family.name, family.unit, family.help, family.type) == ("m_seconds", "seconds", "time", "histogram")
    counter = _metric("sum", monotonic=True)
    counter.unit = "By"
    family = translator.family(counter)
    assert family is not None and (family.name, family.unit) == ("m_bytes_total", "bytes")
    assert Translator(NO_SUFFIXES).family(counter) == pt.Family("m", Kind.COUNTER, "", "")


def test_cumulative_buckets() -> None:
    assert pt.cumulative_buckets([0.1, 1.0, 10.0], [1, 2, 3, 4], 10) == [(0.1, 1), (1.0, 3), (10.0, 6), (math.inf, 10)]
    # Unsorted or repeated bounds: ascending, each once.
    assert pt.cumulative_buckets([5.0, 1.0, 5.0], [1, 2, 3, 4], 10) == [(1.0, 2), (5.0, 3), (math.inf, 10)]
    assert pt.cumulative_buckets([], [7], 7) == [(math.inf, 7)]


def test_exponential_buckets_as_classic() -> None:
    # scale 0: positive bucket i is (2**i, 2**(i+1)]; negative bucket i is [-2**(i+1), -2**i).
    state = ExponentialState(0, 1, 0.0, 0, [2, 3], 1, [4], 10, 3.0)
    assert state.buckets() == [(-2.0, 4), (0.0, 5), (2.0, 7), (4.0, 10), (math.inf, 10)]
    # scale 1: base sqrt(2); scale -1: base 4.
    assert ExponentialState(1, 0, 0.0, 2, [1], 0, [], 1, None).buckets()[-2][0] == pytest.approx(2 ** 1.5)
    assert ExponentialState(-1, 0, 0.0, 1, [1], 0, [], 1, None).buckets()[-2][0] == 16.0
    assert ExponentialState(0, 0, 0.0, 0, [], 0, [], 0, None).buckets() == [(math.inf, 0)]


def test_exponential_merge_downscales() -> None:
    fine = ExponentialState(1, 1, 0.0, 1, [1, 1], -3, [2], 5, 4.0)  # (2**0.5, 2], (2, 2**1.5]; negative idx -3
    coarse = ExponentialState(0, 2, 0.001, 1, [5], 0, [], 7, None)  # (2, 4]
    merged = fine.merged(coarse)
    assert merged.scale == 0
    assert (merged.pos_offset, merged.pos_counts) == (0, [1, 6])
    # -3 at scale 1 is -2 at scale 0 (floor division).
    assert (merged.neg_offset, merged.neg_counts) == (-2, [2])
    assert (merged.zero_count, merged.zero_threshold, merged.count, merged.sum) == (3, 0.001, 12, 4.0)


def test_exemplar_labels_respect_the_rune_limit() -> None:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Exemplar

    e = Exemplar(trace_id=bytes(range(16)), span_id=bytes(range(8)), as_int=3)
    set_attributes(e.filtered_attributes, {"user": "u1"})
    assert pt.exemplar_labels(e) == {"trace_id": bytes(range(16)).hex(), "span_id": bytes(range(8)).hex(), "user": "u1"}
    assert pt.exemplar_value(e) == 3.0
    long = Exemplar(trace_id=bytes(range(16)), as_double=1.0)
    set_attributes(long.filtered_attributes, {"k": "v" * 100})
    assert pt.exemplar_labels(long) == {"trace_id": bytes(range(16)).hex()}
