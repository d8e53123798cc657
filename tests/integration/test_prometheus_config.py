"""Config of the ``prometheus`` and ``prometheusremotewrite`` exporters, as YAML a user writes
for the stock collector, loaded through the real registry and config loader."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from collector.component import ComponentID
from collector.config import parse_config
from collector.confmap import ConfigError
from collector.registry import Registry, builtin_factories
from exporters.prometheus import PrometheusExporterConfig
from exporters.prometheusremotewrite import PrometheusRemoteWriteConfig

STOCK_YAML = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  prometheus:
  prometheus/2:
    endpoint: "1.2.3.4:1234"
    namespace: test-space
    const_labels:
      label1: value1
      "another label": spaced value
    send_timestamps: true
    metric_expiration: 60m
    enable_open_metrics: true
    add_metric_suffixes: false
    resource_to_telemetry_conversion:
      enabled: true
  prometheusremotewrite:
    endpoint: "https://my-cortex:7900/api/v1/push"
    external_labels:
      label_name1: label_value1
  prometheus_remote_write/2:
    namespace: "test-space"
    max_batch_request_parallelism: 10
    retry_on_failure:
      enabled: true
      initial_interval: 10s
      max_interval: 60s
      max_elapsed_time: 10m
    endpoint: "http://localhost:8888/api/v1/write"
    tls:
      ca_file: "/var/lib/mycert.pem"
    write_buffer_size: 524288
    add_metric_suffixes: false
    headers:
      Prometheus-Remote-Write-Version: "0.1.0"
      X-Scope-OrgID: 234
    external_labels:
      key1: value1
      key2: value2
    resource_to_telemetry_conversion:
      enabled: true
    remote_write_queue:
      queue_size: 2000
      num_consumers: 10
service:
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [prometheus, prometheus/2, prometheusremotewrite, prometheus_remote_write/2]
"""


def registry() -> Registry:
    return Registry(builtin_factories())


def test_both_exporters_are_registered_and_the_shared_module_is_not() -> None:
    types = {f.type for f in builtin_factories()}
    assert {"prometheus", "prometheusremotewrite", "prometheus_remote_write"} <= types
    assert not any("promtranslate" in t for t in types)


def test_stock_yaml_loads() -> None:
    cfg = parse_config(yaml.safe_load(STOCK_YAML), registry())
    default = cfg.exporters[ComponentID("prometheus")]
    assert isinstance(default, PrometheusExporterConfig)
    assert default.endpoint == "localhost:8889" and default.metric_expiration == 300.0
    assert default.add_metric_suffixes and not default.send_timestamps and not default.enable_open_metrics
    second = cfg.exporters[ComponentID("prometheus", "2")]
    assert isinstance(second, PrometheusExporterConfig)
    assert second.const_labels == {"label1": "value1", "another label": "spaced value"}
    assert second.metric_expiration == 3600.0 and second.send_timestamps and second.enable_open_metrics
    assert second.resource_to_telemetry_conversion.enabled
    assert second.naming().suffixes is False

    prw = cfg.exporters[ComponentID("prometheusremotewrite")]
    assert isinstance(prw, PrometheusRemoteWriteConfig)
    assert prw.max_batch_size_bytes == 3_000_000 and prw.timeout == 5.0
    assert prw.retry_on_failure.initial_interval == 0.05
    assert (prw.remote_write_queue.enabled, prw.remote_write_queue.queue_size, prw.remote_write_queue.num_consumers) == (True, 10000, 5)
    assert prw.target_info.enabled and not prw.send_metadata and prw.add_metric_suffixes
    helper = prw.helper_settings()
    assert helper.sending_queue.enabled and helper.sending_queue.queue_size == 10000 and helper.sending_queue.num_consumers == 1

    two = cfg.exporters[ComponentID("prometheus_remote_write", "2")]
    assert isinstance(two, PrometheusRemoteWriteConfig)
    assert two.headers == {"Prometheus-Remote-Write-Version": "0.1.0", "X-Scope-OrgID": "234"}
    assert two.parallelism() == 10 and two.retry_on_failure.max_elapsed_time == 600.0
    assert two.remote_write_queue.queue_size == 2000


@pytest.mark.parametrize(
    ("exporter", "body", "fragment"),
    [
        ("prometheus", {"endpoint": ""}, "non-blank address"),
        ("prometheus", {"endpoint": "nohost"}, "host:port"),
        ("prometheus", {"translation_strategy": "invalid_strategy"}, "translation_strategy"),
        ("prometheus", {"metrics_path": "/othermetrics"}, "metrics_path"),
        ("prometheusremotewrite", {}, "endpoint"),
        ("prometheusremotewrite", {"endpoint": "localhost:8888"}, "not an http"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "remote_write_queue": {"queue_size": -1}}, "can't be negative"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "remote_write_queue": {"num_consumers": -1}}, "can't be negative"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "remote_write_queue": {"queue_size": 0}}, "0 size queue"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "max_batch_request_parallelism": 0}, "below 1"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "compression": "gzip"}, "must be snappy"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "protobuf_message": "io.prometheus.write.v4.Request"}, "protobuf_message"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "protobuf_message": "io.prometheus.write.v2.Request"}, "remote write 1.0"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "translation_strategy": "NoTranslation"}, "Remote Write 2.0"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "translation_strategy": "NoUTF8EscapingWithSuffixes"}, "Remote Write 2.0"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "external_labels": {"k": ""}}, "empty key or value"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "sending_queue": {"enabled": False}}, "sending_queue"),
        ("prometheusremotewrite", {"endpoint": "http://x/w", "max_batch_size_bytes": -1}, "greater than 0"),
    ],
)
def test_invalid_configs_name_the_yaml_path(exporter: str, body: dict[str, Any], fragment: str) -> None:
    raw = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "exporters": {exporter: body},
        "service": {"pipelines": {"metrics": {"receivers": ["otlp"], "exporters": [exporter]}}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, registry())
    assert f"exporters.{exporter}" in str(info.value) and fragment in str(info.value)


def test_metrics_only() -> None:
    raw = yaml.safe_load(
        """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
exporters: {prometheus: {}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [prometheus]}}}
"""
    )
    with pytest.raises(ConfigError, match="prometheus"):
        parse_config(raw, registry())
