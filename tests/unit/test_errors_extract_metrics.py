"""The errormetrics connector: errors found in SDK-made traces and logs become the cumulative
(or delta) sum ``appguard.errors``, bounded in series and resources."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE, AGGREGATION_TEMPORALITY_DELTA
from opentelemetry.trace import Tracer

from collector.component import ComponentID, CreateSettings, Kind
from collector.consumer import RetryableError
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from connectors.errormetrics import ErrorMetricsConfig, ErrorMetricsConnector, factory
from tests.support.components import Sink
from tests.unit.test_errors_extract import OrderError, fail_order, sdk_logs, sdk_traces

Point = tuple[str, tuple[tuple[str, str], ...], int]


def connector(config: dict[str, Any] | None = None, sink: Any = None) -> tuple[ErrorMetricsConnector, Sink]:
    sink = sink or Sink()
    settings = CreateSettings(ComponentID("errormetrics"), Kind.CONNECTOR, Telemetry(), logging.getLogger("test.errormetrics"))
    made = factory.create(settings=settings, config=ErrorMetricsConfig.model_validate(config or {}), consumers={Signal.METRICS: sink})
    assert isinstance(made, ErrorMetricsConnector)
    return made, sink


def errors_in(service: str, failures: list[type[BaseException]], env: str = "prod", **span_attrs: Any) -> Payload:
    """A traces request of ``service`` with one exception event per entry of ``failures``."""

    def work(tracer: Tracer) -> None:
        for i, kind in enumerate(failures):
            with tracer.start_as_current_span(f"op {i}", attributes=span_attrs) as span:
                try:
                    raise kind(f"failure {i}")
                except BaseException as exc:
                    span.record_exception(exc)
            with tracer.start_as_current_span(f"fine {i}"):
                pass

    payload, _ = sdk_traces(work, {"service.name": service, "deployment.environment.name": env, "service.instance.id": f"{service}-1"})
    return payload


def points(request: ExportMetricsServiceRequest) -> list[Point]:
    """(service.name of the resource, sorted data point attributes, value) per data point."""
    out: list[Point] = []
    for rm in request.resource_metrics:
        service = {kv.key: kv.value.string_value for kv in rm.resource.attributes}.get("service.name", "")
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for dp in metric.sum.data_points:
                    attrs = tuple(sorted((kv.key, kv.value.string_value) for kv in dp.attributes))
                    out.append((service, attrs, dp.as_int))
    return sorted(out)


def dims(service: str, env: str, exc_type: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"service.name": service, "deployment.environment.name": env, "exception.type": exc_type, **extra}.items()))


async def test_cumulative_counts_by_service_environment_and_type() -> None:
    conn, sink = connector()
    await conn.consume(errors_in("checkout", [ValueError, ValueError, KeyError]))
    await conn.consume(errors_in("search", [ValueError], env="staging"))
    await conn.flush()
    await conn.consume(errors_in("checkout", [ValueError]))
    await conn.flush()

    assert len(sink.got) == 2
    first, second = (p.message for p in sink.got)
    assert isinstance(first, ExportMetricsServiceRequest) and isinstance(second, ExportMetricsServiceRequest)
    assert points(first) == [
        ("checkout", dims("checkout", "prod", "KeyError"), 1),
        ("checkout", dims("checkout", "prod", "ValueError"), 2),
        ("search", dims("search", "staging", "ValueError"), 1),
    ]
    assert points(second) == [
        ("checkout", dims("checkout", "prod", "KeyError"), 1),
        ("checkout", dims("checkout", "prod", "ValueError"), 3),
        ("search", dims("search", "staging", "ValueError"), 1),
    ]
    metric = second.resource_metrics[0].scope_metrics[0].metrics[0]
    assert (metric.name, metric.unit) == ("appguard.errors", "{error}")
    assert metric.sum.is_monotonic and metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    # The resource is the one the errors came from, whole.
    resource = {kv.key: kv.value.string_value for kv in second.resource_metrics[0].resource.attributes}
    assert resource["service.instance.id"] in ("checkout-1", "search-1") and resource["telemetry.sdk.language"] == "python"
    # Cumulative: the start time stays, the time moves on.
    starts = {dp.start_time_unix_nano for rm in first.resource_metrics for dp in rm.scope_metrics[0].metrics[0].sum.data_points}
    later = {dp.start_time_unix_nano for rm in second.resource_metrics for dp in rm.scope_metrics[0].metrics[0].sum.data_points}
    assert starts == later
    assert sink.got[1].items == 3


async def test_delta_temporality_reports_only_what_changed() -> None:
    conn, sink = connector({"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA"})
    await conn.consume(errors_in("checkout", [ValueError, KeyError]))
    await conn.flush()
    await conn.consume(errors_in("checkout", [ValueError, ValueError]))
    await conn.flush()
    await conn.flush()  # nothing new: nothing sent

    assert len(sink.got) == 2
    assert points(sink.got[1].message) == [("checkout", dims("checkout", "prod", "ValueError"), 2)]  # type: ignore[arg-type]
    metric = sink.got[1].message.resource_metrics[0].scope_metrics[0].metrics[0]  # type: ignore[union-attr]
    assert metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA and metric.sum.is_monotonic
    first_dp = sink.got[0].message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]  # type: ignore[union-attr]
    second_dp = metric.sum.data_points[0]
    assert second_dp.start_time_unix_nano == first_dp.time_unix_nano


async def test_cardinality_limit_overflows_into_one_series() -> None:
    conn, sink = connector({"aggregation_cardinality_limit": 2})
    kinds: list[type[BaseException]] = [ValueError, KeyError, TypeError, OrderError, TypeError]
    await conn.consume(errors_in("checkout", kinds))
    await conn.flush()

    got = points(sink.got[0].message)  # type: ignore[arg-type]
    assert got == [
        ("checkout", dims("checkout", "prod", "KeyError"), 1),
        ("checkout", dims("checkout", "prod", "ValueError"), 1),
        ("checkout", (("otel.metric.overflow", "true"),), 3),
    ]
    assert sum(v for _, _, v in got) == len(kinds)


async def test_extra_dimensions_with_defaults() -> None:
    conn, sink = connector({"dimensions": [{"name": "http.route", "default": "unknown"}, {"name": "tenant"}]})
    await conn.consume(errors_in("checkout", [ValueError], **{"http.route": "/pay", "tenant": "acme"}))
    await conn.consume(errors_in("checkout", [ValueError]))
    await conn.flush()

    assert points(sink.got[0].message) == [  # type: ignore[arg-type]
        ("checkout", dims("checkout", "prod", "ValueError", **{"http.route": "/pay", "tenant": "acme"}), 1),
        ("checkout", dims("checkout", "prod", "ValueError", **{"http.route": "unknown"}), 1),
    ]


async def test_resources_are_bounded_and_keyed_by_chosen_attributes() -> None:
    conn, sink = connector({"resource_metrics_cache_size": 2})
    for service in ("a", "b", "c"):
        await conn.consume(errors_in(service, [ValueError]))
    await conn.flush()
    assert sorted(s for s, _, _ in points(sink.got[0].message)) == ["b", "c"]  # type: ignore[arg-type]

    keyed, sink2 = connector({"resource_metrics_key_attributes": ["service.name"]})
    await keyed.consume(errors_in("a", [ValueError]))
    await keyed.consume(errors_in("a", [ValueError], env="other"))
    await keyed.flush()
    assert len(sink2.got[0].message.resource_metrics) == 1  # type: ignore[union-attr]
    keyed_points = points(sink2.got[0].message)  # type: ignore[arg-type]
    assert sum(v for _, _, v in keyed_points) == 2


async def test_expired_series_are_dropped() -> None:
    conn, sink = connector({"metrics_expiration": "1s"})
    found = conn.extractor.extract(errors_in("checkout", [ValueError]))
    conn.record(found, 1_000_000_000)
    assert conn.collect(1_500_000_000) is not None
    assert conn.collect(2_500_000_000) is None
    assert not sink.got


async def test_logs_with_exceptions_and_severity_are_counted() -> None:
    def work(logger: logging.Logger) -> None:
        try:
            fail_order(1)
        except OrderError:
            logger.exception("failed")
        logger.error("no exception, counted with min_severity only")
        logger.info("ignored")

    conn, sink = connector({"logs": {"min_severity": "ERROR"}})
    await conn.consume(sdk_logs(work))
    await conn.flush()

    assert points(sink.got[0].message) == [  # type: ignore[arg-type]
        ("checkout", dims("checkout", "staging", ""), 1),
        ("checkout", dims("checkout", "staging", "OrderError"), 1),
    ]


class _Refusing(Sink):
    async def consume(self, payload: Payload) -> None:
        raise RetryableError("metrics pipeline full")


async def test_shutdown_flushes_and_refusals_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    conn, sink = connector()
    await conn.start(None)  # type: ignore[arg-type]
    await conn.consume(errors_in("checkout", [ValueError]))
    await conn.shutdown()
    assert points(sink.got[0].message) == [("checkout", dims("checkout", "prod", "ValueError"), 1)]  # type: ignore[arg-type]

    refusing, _ = connector(sink=_Refusing())
    await refusing.consume(errors_in("checkout", [ValueError]))
    with caplog.at_level(logging.WARNING, logger="test.errormetrics"):
        await refusing.flush()
    assert "refused 1 error-count points" in caplog.text


async def test_requests_without_errors_add_nothing() -> None:
    conn, sink = connector()
    assert conn.mutates_data is False
    await conn.consume(errors_in("checkout", []))
    await conn.flush()
    assert sink.got == []
