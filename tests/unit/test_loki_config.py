"""The loki exporter's config, loaded from YAML as a user writes it (stock keys and AppGuard's)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import parse_config
from collector.confmap import ConfigError
from collector.pdata import Signal
from collector.registry import Registry, default_registry
from collector.telemetry import Telemetry
from exporters.loki import LokiExporter, LokiExporterConfig, factory, retryable_status
from tests.support.components import factories

STOCK = """
receivers: {testrecv: {}}
exporters:
  loki:
    endpoint: http://loki:3100/loki/api/v1/push
  loki/allsettings:
    endpoint: https://loki:3100/loki/api/v1/push
    default_labels_enabled:
      exporter: false
      job: true
    tls:
      insecure_skip_verify: true
      ca_file: /var/lib/mycert.pem
    timeout: 10s
    read_buffer_size: 123
    write_buffer_size: 345
    headers:
      "X-Custom-Header": loki_rocks
    sending_queue:
      enabled: true
      num_consumers: 2
      queue_size: 10
    retry_on_failure:
      enabled: true
      initial_interval: 10s
      max_interval: 60s
      max_elapsed_time: 10m
  loki/appguard:
    endpoint: http://loki:3100/loki/api/v1/push
    format: logfmt
    tenant: shop
    compression: gzip
    max_label_names_per_series: 10
    labels:
      resource:
        deployment.environment.name: env
        k8s.namespace.name:
      attributes:
        http.method: method
      record:
        severity: severity_text
        traceID: ""
    structured_metadata:
      resource: true
      max_entries: 50
service:
  pipelines:
    logs: {receivers: [testrecv], exporters: [loki, loki/allsettings, loki/appguard]}
"""


def registry() -> Registry:
    return Registry([*factories(), factory])


def exporters(text: str) -> dict[str, LokiExporterConfig]:
    cfg = parse_config(yaml.safe_load(text), registry())
    return {str(k): v for k, v in cfg.exporters.items()}  # type: ignore[misc]


def errors(exporter: dict[str, Any]) -> str:
    doc = {
        "receivers": {"testrecv": {}},
        "exporters": {"loki": exporter},
        "service": {"pipelines": {"logs": {"receivers": ["testrecv"], "exporters": ["loki"]}}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(doc, registry())
    return str(info.value)


def test_registered_for_logs_only() -> None:
    found = default_registry().get(Kind.EXPORTER, "loki")
    assert found is factory
    assert factory.signals == frozenset({Signal.LOGS})


def test_defaults() -> None:
    cfg = exporters(STOCK)["loki"]
    assert cfg.timeout == 30.0
    assert cfg.default_labels_enabled.model_dump() == {"exporter": True, "job": True, "instance": True, "level": True}
    assert cfg.format == "json"
    assert (cfg.tenant, cfg.compression, cfg.max_label_names_per_series) == (None, "", 15)
    assert cfg.labels.model_dump() == {"resource": {}, "attributes": {}, "record": {}}
    assert cfg.structured_metadata.model_dump() == {
        "enabled": True, "trace_context": True, "attributes": True, "resource": False, "max_entries": 128, "max_size": 65536
    }
    assert (cfg.sending_queue.enabled, cfg.sending_queue.queue_size, cfg.retry_on_failure.initial_interval) == (True, 1000, 5.0)


def test_stock_settings() -> None:
    cfg = exporters(STOCK)["loki/allsettings"]
    assert cfg.default_labels_enabled.model_dump() == {"exporter": False, "job": True, "instance": True, "level": True}
    assert (cfg.timeout, cfg.read_buffer_size, cfg.write_buffer_size) == (10.0, 123, 345)
    assert cfg.tls.insecure_skip_verify and cfg.tls.ca_file == "/var/lib/mycert.pem"
    assert cfg.headers == {"X-Custom-Header": "loki_rocks"}
    assert (cfg.sending_queue.num_consumers, cfg.sending_queue.queue_size) == (2, 10)
    assert (cfg.retry_on_failure.initial_interval, cfg.retry_on_failure.max_interval, cfg.retry_on_failure.max_elapsed_time) == (10.0, 60.0, 600.0)


def test_appguard_settings_become_label_rules() -> None:
    cfg = exporters(STOCK)["loki/appguard"]
    exporter = LokiExporter(CreateSettings(ComponentID("loki", "appguard"), Kind.EXPORTER, Telemetry()), cfg, frozenset({Signal.LOGS}))
    rules = exporter.converter.rules
    assert rules.resource_labels == {"deployment.environment.name": "env", "k8s.namespace.name": "k8s_namespace_name"}
    assert rules.attribute_labels == {"http.method": "method"}
    assert rules.record_labels == {"severity": "severity_text", "traceID": "traceID"}
    assert (rules.format, rules.tenant, rules.max_label_names) == ("logfmt", "shop", 10)
    assert (rules.metadata_resource, rules.max_metadata_entries, rules.max_metadata_size) == (True, 50, 65536)
    assert cfg.compression == "gzip"


@pytest.mark.parametrize(
    ("exporter", "message"),
    [
        ({}, "exporters.loki.endpoint: required"),
        ({"endpoint": "loki:3100"}, 'exporters.loki.endpoint: "endpoint" must be a valid URL'),
        ({"endpoint": "http://l/push", "default_labels_enabled": {"service": False}}, "exporters.loki.default_labels_enabled.service: unknown key"),
        ({"endpoint": "http://l/push", "labels": {"attributes": {"http.method": "http.method"}}}, "the label `http.method` in \"labels.attributes\" is not a valid label name"),
        ({"endpoint": "http://l/push", "labels": {"record": {"trace_id": "t"}}}, "exporters.loki.labels.record.trace_id"),
        ({"endpoint": "http://l/push", "format": "xml"}, "exporters.loki.format"),
        ({"endpoint": "http://l/push", "compression": "zstd"}, "exporters.loki.compression"),
        ({"endpoint": "http://l/push", "max_label_names_per_series": 0}, "exporters.loki.max_label_names_per_series"),
        ({"endpoint": "http://l/push", "labels": {"resource": {"a": "1abc"}}}, "the label `1abc` in \"labels.resource\""),
    ],
)
def test_refused(exporter: dict[str, Any], message: str) -> None:
    assert message in errors(exporter)


def test_empty_sections_mean_defaults() -> None:
    cfg = exporters(
        "exporters:\n  loki:\n    endpoint: http://l/push\n    labels:\n    default_labels_enabled:\n    structured_metadata:\n"
        "receivers: {testrecv: {}}\nservice: {pipelines: {logs: {receivers: [testrecv], exporters: [loki]}}}\n"
    )["loki"]
    assert cfg.labels.resource == {} and cfg.default_labels_enabled.job and cfg.structured_metadata.enabled


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (502, True), (503, True), (599, True), (400, False), (401, False), (404, False), (413, False), (301, False)])
def test_which_statuses_are_retried(status: int, retryable: bool) -> None:
    assert retryable_status(status) is retryable
