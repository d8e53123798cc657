"""The ``resource`` processor: config from YAML, and the actions on real requests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from collector.component import ComponentID
from collector.config import load_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.pdata import ExportRequest, Payload, Signal
from collector.registry import Registry, builtin_factories
from collector.telemetry import Telemetry
from processors import resource
from tests.support.components import Sink, factories
from tests.unit.test_attributes import SIGNALS, attrs_dict, item_attrs, payload_of, request, settings, typed

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture
def registry() -> Registry:
    ours = [f for f in builtin_factories() if f.type in ("attributes", "resource")]
    return Registry([*factories(), *ours])


RESOURCES = {Signal.TRACES: "resource_spans", Signal.METRICS: "resource_metrics", Signal.LOGS: "resource_logs"}


def resources_of(signal: Signal, message: ExportRequest) -> list[dict[str, Any]]:
    return [attrs_dict(block.resource.attributes) for block in getattr(message, RESOURCES[signal])]


def multi_resource_request(signal: Signal, resources: list[dict[str, Any]]) -> ExportRequest:
    """A request with one resource per dict, each with one item carrying {"item": i}."""
    first = request(signal, [{"item": 0}], resource=resources[0])
    for i, attrs in enumerate(resources[1:], start=1):
        other = request(signal, [{"item": i}], resource=attrs)
        getattr(first, RESOURCES[signal]).extend(getattr(other, RESOURCES[signal]))
    return first


async def process(
    config: dict[str, Any], signal: Signal, message: ExportRequest, telemetry: Telemetry | None = None, **kwargs: Any
) -> Payload:
    cfg = resource.ResourceConfig.model_validate(config)
    sink = Sink()
    proc = resource.factory.create(settings=settings("resource", telemetry), config=cfg, signal=signal, next_consumer=sink)
    assert proc.mutates_data
    await proc.consume(payload_of(message, signal, **kwargs))
    return sink.got[0]


def test_yaml_config(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPGUARD_TEST_UNSET_DEPLOYMENT_ENV", raising=False)
    config = load_config([str(TESTDATA / "resource_config.yaml")], registry)
    main = config.processors[ComponentID("resource")]
    assert isinstance(main, resource.ResourceConfig)
    assert [(a.key, a.action, a.value, a.from_attribute) for a in main.attributes] == [
        ("cloud.availability_zone", "upsert", "zone-1", ""),
        ("k8s.cluster.name", "insert", None, "k8s-cluster"),
        ("redundant-attribute", "delete", None, ""),
    ]
    defaults = config.processors[ComponentID("resource", "with_defaults")]
    assert isinstance(defaults, resource.ResourceConfig)
    assert [(a.key, a.value, a.default_value) for a in defaults.attributes] == [
        ("deployment.environment", "", "development"),
        ("service.namespace", None, "default"),
        ("cloud.region", None, "us-east-1"),
    ]
    graph = build_graph(config, Telemetry(), registry)
    assert len(graph.processors) == 5


def test_yaml_invalid(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([str(TESTDATA / "resource_invalid.yaml")], registry)
    text = str(info.value)
    for line in [
        'processors.resource/empty: missing required field "attributes"',
        'processors.resource/null_attributes: missing required field "attributes"',
        "processors.resource/wrong_section.actions: unknown key",
        "processors.resource/bad_action.attributes.0: unsupported action 'replace'",
        'processors.resource/no_key.attributes.0: missing required field "key"',
    ]:
        assert line in text


@SIGNALS
async def test_readme_example_on_every_resource(signal: Signal) -> None:
    config = {
        "attributes": [
            {"key": "cloud.availability_zone", "value": "zone-1", "action": "upsert"},
            {"key": "k8s.cluster.name", "from_attribute": "k8s-cluster", "action": "insert"},
            {"key": "redundant-attribute", "action": "delete"},
        ]
    }
    message = multi_resource_request(
        signal,
        [
            {"service.name": "a", "k8s-cluster": "prod", "redundant-attribute": 1},
            {"service.name": "b", "cloud.availability_zone": "zone-9", "k8s.cluster.name": "kept"},
            {},
        ],
    )
    out = await process(config, signal, message)
    assert resources_of(signal, out.message) == [
        {"service.name": "a", "k8s-cluster": "prod", "cloud.availability_zone": "zone-1", "k8s.cluster.name": "prod"},
        {"service.name": "b", "cloud.availability_zone": "zone-1", "k8s.cluster.name": "kept"},
        {"cloud.availability_zone": "zone-1"},
    ]
    # Item attributes are not the resource processor's business.
    assert item_attrs(signal, out.message) == [{"item": 0}, {"item": 1}, {"item": 2}]
    assert out.items == 3


async def test_defaults_context_and_other_actions() -> None:
    config = {
        "attributes": [
            {"key": "deployment.environment", "value": "", "default_value": "development", "action": "upsert"},
            {"key": "service.namespace", "from_attribute": "namespace", "default_value": "default", "action": "insert"},
            {"key": "cloud.region", "from_context": "metadata.region", "default_value": "us-east-1", "action": "upsert"},
            {"key": "host.name", "action": "hash"},
            {"key": "process.pid", "action": "convert", "converted_type": "string"},
            {
                "key": "k8s.pod.name",
                "pattern": r"^(?P<k8s_deployment_name>[a-z-]+)-(?P<k8s_replicaset_hash>[0-9a-f]+)-[0-9a-z]+$",
                "action": "extract",
            },
        ]
    }
    message = multi_resource_request(
        Signal.TRACES,
        [
            {"namespace": "shop", "host.name": "node-1", "process.pid": 4242, "k8s.pod.name": "cart-api-5d8f7c-x2x9z"},
            {},
        ],
    )
    out = await process(config, Signal.TRACES, message, metadata={"region": ("eu-west-3",)})
    assert typed(resources_of(Signal.TRACES, out.message)) == typed(
        [
            {
                "namespace": "shop",
                "host.name": hashlib.sha256(b"node-1").hexdigest(),
                "process.pid": "4242",
                "k8s.pod.name": "cart-api-5d8f7c-x2x9z",
                "deployment.environment": "development",
                "service.namespace": "shop",
                "cloud.region": "eu-west-3",
                "k8s_deployment_name": "cart-api",
                "k8s_replicaset_hash": "5d8f7c",
            },
            {"deployment.environment": "development", "service.namespace": "default", "cloud.region": "eu-west-3"},
        ]
    )
    out = await process(config, Signal.TRACES, message)
    assert resources_of(Signal.TRACES, out.message)[1]["cloud.region"] == "us-east-1"


async def test_nothing_to_change_keeps_the_bytes_and_counts() -> None:
    telemetry = Telemetry()
    message = request(Signal.LOGS, [{}, {}], resource={"service.name": "svc", "k8s.cluster.name": "x"})
    raw = message.SerializeToString()
    config = {
        "attributes": [
            {"key": "redundant-attribute", "action": "delete"},
            {"key": "k8s.cluster.name", "from_attribute": "k8s-cluster", "action": "insert"},
            {"key": "service.name", "value": "svc", "action": "insert"},
        ]
    }
    out = await process(config, Signal.LOGS, message, telemetry)
    assert out.has_raw and out.to_bytes() == raw
    labels = {"processor": "resource", "otel_signal": "logs"}
    assert telemetry.registry.get_sample_value("otelcol_processor_incoming_items_total", labels) == 2
    assert telemetry.registry.get_sample_value("otelcol_processor_outgoing_items_total", labels) == 2

    out = await process({"attributes": [{"key": "service.name", "action": "delete"}]}, Signal.LOGS, message)
    # a changed request keeps bytes: the re-encoded resource spliced into the received ones
    assert out.has_raw and out.to_bytes() == out.message.SerializeToString()
    assert resources_of(Signal.LOGS, Payload.from_bytes(Signal.LOGS, out.to_bytes()).message) == [{"k8s.cluster.name": "x"}]


async def test_resource_without_attributes_gets_them() -> None:
    message = request(Signal.METRICS, [{}])
    message.resource_metrics[0].ClearField("resource")  # type: ignore[union-attr]
    out = await process({"attributes": [{"key": "service.name", "value": "unknown", "action": "insert"}]}, Signal.METRICS, message)
    assert resources_of(Signal.METRICS, out.message) == [{"service.name": "unknown"}]
