"""From found errors to the events the store writes: grouping, links, users; and the errors
exporter's and errormetrics connector's configs as YAML."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import Status, StatusCode, Tracer

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import load_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.pdata import Signal
from collector.telemetry import Telemetry
from connectors.errormetrics import ErrorMetricsConfig
from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig
from storage.errors_store import ErrorEvent
from tests.unit.test_errors_extract import OrderError, sdk_logs, sdk_traces


def make_exporter(config: ErrorsExporterConfig, data_dir: Path) -> ErrorsExporter:
    """An errors exporter as the graph builds it (not started: no database needed)."""
    settings = CreateSettings(ComponentID("errors"), Kind.EXPORTER, Telemetry(), logging.getLogger("test.errors"), str(data_dir))
    return ErrorsExporter(settings, config, frozenset({Signal.TRACES, Signal.LOGS}))


def charge(card: str, amount: int) -> None:
    """One bug: raised from the same place whatever the values."""
    if amount > 0:
        raise OrderError(f"card {card} declined for {amount} EUR")


def refund(order: int) -> None:
    """Another bug, same exception type."""
    raise OrderError(f"order {order} cannot be refunded")


def _events(exporter: ErrorsExporter, work: Any, resource: dict[str, Any] | None = None) -> list[ErrorEvent]:
    payload, _ = sdk_traces(work, resource)
    return [exporter.to_event(f) for f in exporter.extractor.extract(payload)]


def _record(tracer: Tracer, name: str, fn: Any, *args: Any, **attrs: Any) -> None:
    with tracer.start_as_current_span(name, attributes=attrs) as span:
        try:
            fn(*args)
        except OrderError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))


def test_same_bug_one_fingerprint_other_bug_another(tmp_path: Path) -> None:
    exporter = make_exporter(ErrorsExporterConfig(), tmp_path)

    def work(tracer: Tracer) -> None:
        _record(tracer, "pay 1", charge, "4242", 10)
        _record(tracer, "pay 2", charge, "5555", 99)
        _record(tracer, "refund", refund, 7)

    first, second, other = _events(exporter, work)

    assert first.fingerprint == second.fingerprint != other.fingerprint
    assert first.message == "card 4242 declined for 10 EUR" and second.message == "card 5555 declined for 99 EUR"
    assert first.type == f"{OrderError.__module__}.OrderError"
    assert first.title == f"{OrderError.__module__}.OrderError: card 4242 declined for 10 EUR"
    assert first.culprit == f"{__file__} in charge"
    assert first.level == "error"
    assert first.frames is not None and first.frames[-1]["stacktrace"]["frames"][-1]["function"] == "charge"
    assert first.stacktrace is not None and "Traceback" in first.stacktrace


def test_links_service_and_user_fields(tmp_path: Path) -> None:
    exporter = make_exporter(ErrorsExporterConfig(), tmp_path)
    resource = {"service.name": "shop", "service.version": "3.0.1", "deployment.environment": "prod-old-key"}

    def work(tracer: Tracer) -> None:
        _record(
            tracer, "checkout", charge, "1", 1,
            **{"session.id": "sess-1", "user.id": "u-1", "user.email": "u1@example.com", "user_agent.original": "Mozilla/5.0", "http.route": "/pay"},
        )
        _record(tracer, "checkout", charge, "1", 1, **{"enduser.id": "end-2"})

    (event, enduser) = _events(exporter, work, resource)

    assert len(event.trace_id or "") == 32 and len(event.span_id or "") == 16
    assert event.session_id == "sess-1"
    assert (event.user_id, event.user_email, event.user_agent) == ("u-1", "u1@example.com", "Mozilla/5.0")
    assert enduser.user_id == "end-2" and enduser.session_id is None
    assert (event.service_name, event.service_version, event.environment) == ("shop", "3.0.1", "prod-old-key")
    assert event.attributes is not None and event.attributes["http.route"] == "/pay"
    assert event.attributes["telemetry.sdk.language"] == "python"
    assert event.event_id != enduser.event_id


def test_fingerprints_from_the_app_and_from_rules(tmp_path: Path) -> None:
    config = ErrorsExporterConfig.model_validate(
        {"grouping": {"fingerprint_rules": [{"match": {"message": "*cannot be refunded*"}, "fingerprint": ["refunds"], "title": "Refund refused"}]}}
    )
    exporter = make_exporter(config, tmp_path)

    def work(tracer: Tracer) -> None:
        _record(tracer, "a", refund, 1)
        _record(tracer, "b", refund, 2)
        with tracer.start_as_current_span("c") as span:
            try:
                charge("1", 1)
            except OrderError as exc:
                span.record_exception(exc, attributes={"appguard.fingerprint": ["payments", "declined"]})
        with tracer.start_as_current_span("d", attributes={"appguard.fingerprint": ["payments", "declined"]}) as span:
            try:
                charge("2", 3)
            except OrderError as exc:
                span.record_exception(exc)

    a, b, c, d = _events(exporter, work)

    assert a.fingerprint == b.fingerprint and a.title == "Refund refused"
    assert c.fingerprint == d.fingerprint != a.fingerprint
    default = _events(make_exporter(ErrorsExporterConfig(), tmp_path), lambda t: _record(t, "e", charge, "3", 4))[0]
    assert default.fingerprint != c.fingerprint


def test_logs_and_spans_of_one_bug_share_the_issue(tmp_path: Path) -> None:
    exporter = make_exporter(ErrorsExporterConfig(), tmp_path)

    def log_work(logger: logging.Logger) -> None:
        try:
            charge("9", 9)
        except OrderError:
            logger.exception("charge failed")

    (from_log,) = [exporter.to_event(f) for f in exporter.extractor.extract(sdk_logs(log_work))]
    (from_span,) = _events(exporter, lambda t: _record(t, "x", charge, "8", 8))

    # The handler names the type OrderError, the span module.OrderError; the traceback decides.
    assert from_log.type == from_span.type == f"{OrderError.__module__}.OrderError"
    assert from_log.level == "error"
    # The log's traceback has the logging call's frame in it too: same in-app frames otherwise.
    assert from_log.frames is not None and from_log.frames[-1]["stacktrace"]["frames"][-1]["function"] == "charge"


def test_in_app_rules_from_the_config(tmp_path: Path) -> None:
    config = ErrorsExporterConfig.model_validate({"grouping": {"in_app_exclude": [str(Path(__file__).parent)]}})
    exporter = make_exporter(config, tmp_path)

    (event,) = _events(exporter, lambda t: _record(t, "x", charge, "1", 1))

    assert event.frames is not None
    frames = [f for exc in event.frames for f in exc["stacktrace"]["frames"]]
    assert frames and not any(f["in_app"] for f in frames)


# --------------------------------------------------------------------------- configs as YAML


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config([str(path)])


_PIPELINES = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [{exporters}]
    logs:
      receivers: [otlp]
      exporters: [{exporters}]
    metrics:
      receivers: [{metrics_receivers}]
      exporters: [nop]
"""


def test_yaml_config_of_both_components(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPGUARD_TEST_ERRORS_DSN", "postgresql://app:secret@db.example:5432/appguard")
    config = _load(
        tmp_path,
        """
exporters:
  errors:
    endpoint: ${env:APPGUARD_TEST_ERRORS_DSN}
    pool_size: 8
    write_batch_size: 500
    timeout: 10s
    retention:
      max_age: 720h
      interval: 30m
    traces:
      status_errors: true
    logs:
      min_severity: ERROR
    grouping:
      in_app_include: ["com.acme."]
      fingerprint_rules:
        - match: {type: "*TimeoutError"}
          fingerprint: ["timeouts"]
    retry_on_failure:
      max_elapsed_time: 10m
    sending_queue:
      num_consumers: 4
  errors/embedded:
  nop:
connectors:
  errormetrics:
    metrics_flush_interval: 5s
    aggregation_temporality: AGGREGATION_TEMPORALITY_DELTA
    aggregation_cardinality_limit: 50
    dimensions:
      - name: http.route
        default: unknown
    logs:
      min_severity: WARN
  errormetrics/defaults:
"""
        + _PIPELINES.format(exporters="errors, errors/embedded, errormetrics, errormetrics/defaults", metrics_receivers="errormetrics, errormetrics/defaults"),
    )
    errors = config.exporters[ComponentID("errors")]
    assert isinstance(errors, ErrorsExporterConfig)
    assert errors.postgres_dsn == "postgresql://app:secret@db.example:5432/appguard"
    assert (errors.pool_size, errors.write_batch_size, errors.timeout) == (8, 500, 10.0)
    assert (errors.retention.max_age, errors.retention.interval) == (720 * 3600.0, 1800.0)
    assert errors.traces.status_errors and errors.logs.min_severity == 17
    assert errors.grouping.in_app_include == ["com.acme."] and errors.grouping.fingerprint_rules[0].fingerprint == ["timeouts"]
    assert errors.sending_queue.num_consumers == 4 and errors.retry_on_failure.max_elapsed_time == 600.0
    embedded = config.exporters[ComponentID("errors", "embedded")]
    assert isinstance(embedded, ErrorsExporterConfig)
    assert embedded.postgres_dsn is None and embedded.retention.max_age == 90 * 24 * 3600.0 and embedded.timeout == 30.0
    assert embedded.logs.min_severity is None and not embedded.traces.status_errors
    metrics = config.connectors[ComponentID("errormetrics")]
    assert isinstance(metrics, ErrorMetricsConfig)
    assert metrics.metrics_flush_interval == 5.0 and metrics.aggregation_cardinality_limit == 50
    assert metrics.aggregation_temporality == "AGGREGATION_TEMPORALITY_DELTA"
    assert [(d.name, d.default) for d in metrics.dimensions] == [("http.route", "unknown")]
    assert metrics.logs.min_severity == 13
    defaults = config.connectors[ComponentID("errormetrics", "defaults")]
    assert isinstance(defaults, ErrorMetricsConfig)
    assert defaults.metrics_flush_interval == 15.0 and defaults.aggregation_temporality == "AGGREGATION_TEMPORALITY_CUMULATIVE"
    graph = build_graph(config, Telemetry(), data_dir=str(tmp_path))
    assert set(graph.exporters) >= {ComponentID("errors"), ComponentID("errors", "embedded")}
    assert set(graph.connectors) == {ComponentID("errormetrics"), ComponentID("errormetrics", "defaults")}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("exporters:\n  errors:\n    endpoint: postgresql://a@h/db\n    dsn: postgresql://b@h/db\n", "exporters.errors: give the PostgreSQL DSN as endpoint or as dsn, not both"),
        ("exporters:\n  errors:\n    endpoint: 'host=db bogus=1'\n", "exporters.errors: endpoint is not a valid PostgreSQL DSN"),
        ("exporters:\n  errors:\n    pool_size: 0\n", "exporters.errors.pool_size"),
        ("exporters:\n  errors:\n    logs:\n      min_severity: LOUD\n", "exporters.errors.logs.min_severity"),
        ("exporters:\n  errors:\n    retention:\n      interval: 0s\n", "exporters.errors.retention.interval"),
        ("exporters:\n  errors:\n    observers: ['bad id/']\n", "exporters.errors.observers"),
        ("exporters:\n  errors:\n    grouping:\n      unknown: 1\n", "exporters.errors.grouping.unknown: unknown key"),
        ("exporters:\n  errors:\n    traces:\n      status_error: true\n", "exporters.errors.traces.status_error: unknown key"),
    ],
)
def test_invalid_exporter_configs(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, section + "  nop:\n" + _PIPELINES.format(exporters="errors", metrics_receivers="otlp"))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("connectors:\n  errormetrics:\n    metrics_flush_interval: 0s\n", "connectors.errormetrics.metrics_flush_interval"),
        ("connectors:\n  errormetrics:\n    aggregation_temporality: DELTA\n", "connectors.errormetrics.aggregation_temporality"),
        ("connectors:\n  errormetrics:\n    dimensions: [{name: exception.type}]\n", "duplicate dimension name exception.type"),
        ("connectors:\n  errormetrics:\n    aggregation_cardinality_limit: -1\n", "connectors.errormetrics.aggregation_cardinality_limit"),
    ],
)
def test_invalid_connector_configs(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, section + "exporters:\n  nop:\n" + _PIPELINES.format(exporters="nop, errormetrics", metrics_receivers="errormetrics"))
    assert message in str(info.value)
