"""The config model and the pipeline graph, with small real components."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.component import ComponentID
from collector.config import PipelineID, parse_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.pdata import Payload, Signal
from collector.registry import Registry, builtin_factories
from collector.telemetry import Telemetry
from tests.support.components import factories


@pytest.fixture
def registry() -> Registry:
    forward = [f for f in builtin_factories() if f.type == "forward"]
    return Registry([*factories(), *forward])


def _request(n_resources: int = 1, spans: int = 2) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(n_resources):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        ss = rs.scope_spans.add()
        for i in range(spans):
            span = ss.spans.add(name=f"op{i}")
            span.trace_id = bytes(range(16))
            span.span_id = bytes(range(8))
    return req


def _errors(registry: Registry, raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, registry)
    return str(info.value)


def test_ids_defaults_and_pipelines(registry: Registry) -> None:
    cfg = parse_config(
        {
            "receivers": {"testrecv": None, "testrecv/b": {}},
            "processors": {"tag/x": {"key": "k"}},
            "exporters": {"testsink": None},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["testrecv"], "processors": ["tag/x"], "exporters": ["testsink"]},
                    "logs/extra": {"receivers": ["testrecv/b"], "exporters": ["testsink"]},
                }
            },
        },
        registry,
    )
    assert ComponentID("tag", "x") in cfg.processors
    assert cfg.processors[ComponentID("tag", "x")].key == "k"  # type: ignore[attr-defined]
    assert cfg.processors[ComponentID("tag", "x")].value == "yes"  # type: ignore[attr-defined]
    assert set(cfg.service.pipelines) == {PipelineID(Signal.TRACES), PipelineID(Signal.LOGS, "extra")}
    assert str(PipelineID(Signal.LOGS, "extra")) == "logs/extra"


def test_errors_name_yaml_paths(registry: Registry) -> None:
    msg = _errors(
        registry,
        {
            "receivers": {"testrecv": None, "bogus": None},
            "processors": {"tag": {"key": 5, "nope": 1}},
            "exporters": {"testsink": None, "tracesonly": None},
            "extra_section": {},
            "service": {
                "extensions": ["missing_ext"],
                "pipelines": {
                    "traces": {"receivers": ["testrecv"], "processors": ["tag", "tag"], "exporters": ["nothere"]},
                    "logs": {"receivers": [], "exporters": ["tracesonly"]},
                    "profiles": {"receivers": ["testrecv"], "exporters": ["testsink"]},
                },
            },
        },
    )
    assert "receivers.bogus: unknown receiver type 'bogus'" in msg
    assert "processors.tag.key: Input should be a valid string" in msg
    assert "processors.tag.nope: unknown key" in msg
    assert "extra_section: unknown top-level key" in msg
    assert "service.extensions[0]: references extension 'missing_ext' which is not configured" in msg
    assert "service.pipelines.traces.processors[1]: tag is listed twice" in msg
    assert "service.pipelines.traces.exporters[0]: references exporter or connector 'nothere'" in msg
    assert "service.pipelines.logs.receivers: a pipeline needs at least one receiver" in msg
    assert "service.pipelines.logs.exporters[0]: exporter tracesonly does not support logs" in msg
    assert "service.pipelines.profiles: unknown signal 'profiles'" in msg


def test_missing_service_and_bad_ids(registry: Registry) -> None:
    assert "service: is missing" in _errors(registry, {"receivers": {"testrecv": None}})
    msg = _errors(registry, {"receivers": {"test recv": None}, "service": {"pipelines": {}}})
    assert "receivers.test recv: invalid component type" in msg
    assert "service.pipelines: at least one pipeline is required" in msg


def test_telemetry_forms(registry: Registry) -> None:
    base = {
        "receivers": {"testrecv": None},
        "exporters": {"testsink": None},
    }
    pipes = {"traces": {"receivers": ["testrecv"], "exporters": ["testsink"]}}
    old = parse_config({**base, "service": {"pipelines": pipes, "telemetry": {"metrics": {"address": "127.0.0.1:9999"}}}}, registry)
    assert old.service.telemetry.metrics.endpoint() == ("127.0.0.1", 9999)
    new = parse_config(
        {
            **base,
            "service": {
                "pipelines": pipes,
                "telemetry": {
                    "logs": {"level": "debug", "encoding": "json"},
                    "metrics": {"readers": [{"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": 8899}}}}]},
                },
            },
        },
        registry,
    )
    assert new.service.telemetry.metrics.endpoint() == ("0.0.0.0", 8899)
    assert new.service.telemetry.logs.encoding == "json"
    none = parse_config({**base, "service": {"pipelines": pipes, "telemetry": {"metrics": {"level": "none"}}}}, registry)
    assert none.service.telemetry.metrics.endpoint() is None


async def test_fanout_copies_only_for_mutating_consumers(registry: Registry) -> None:
    cfg = parse_config(
        {
            "receivers": {"testrecv": None},
            "processors": {"tag": None},
            "exporters": {"testsink/plain": None, "testsink/tagged": None},
            "service": {
                "pipelines": {
                    "traces/plain": {"receivers": ["testrecv"], "exporters": ["testsink/plain"]},
                    "traces/tagged": {"receivers": ["testrecv"], "processors": ["tag"], "exporters": ["testsink/tagged"]},
                }
            },
        },
        registry,
    )
    graph = build_graph(cfg, Telemetry(), registry)
    recv = graph.receivers[ComponentID("testrecv")]
    raw = _request().SerializeToString()
    payload = Payload.from_bytes(Signal.TRACES, raw)
    await recv.consumers[Signal.TRACES].consume(payload)  # type: ignore[attr-defined]
    plain = graph.exporters[ComponentID("testsink", "plain")].got  # type: ignore[attr-defined]
    tagged = graph.exporters[ComponentID("testsink", "tagged")].got  # type: ignore[attr-defined]
    # The read-only pipeline got the original, bytes still attached and untouched.
    assert plain[0] is payload and payload.has_raw and payload.to_bytes() == raw
    assert [kv.key for kv in plain[0].message.resource_spans[0].resource.attributes] == ["service.name"]
    # The mutating pipeline worked on its own copy.
    assert tagged[0] is not payload
    assert [kv.key for kv in tagged[0].message.resource_spans[0].resource.attributes] == ["service.name", "tagged"]


async def test_connectors_chain_pipelines_and_share_exporters(registry: Registry) -> None:
    cfg = parse_config(
        {
            "receivers": {"testrecv": None},
            "processors": {"tag/a": {"key": "a"}, "tag/b": {"key": "b"}},
            "exporters": {"testsink": None},
            "connectors": {"forward": None},
            "service": {
                "pipelines": {
                    "traces/in": {"receivers": ["testrecv"], "processors": ["tag/a"], "exporters": ["forward", "testsink"]},
                    "traces/out": {"receivers": ["forward"], "processors": ["tag/b"], "exporters": ["testsink"]},
                }
            },
        },
        registry,
    )
    graph = build_graph(cfg, Telemetry(), registry)
    order = [label for _, label, _ in graph.start_order()]
    # each component starts after everything it feeds (and stops before it): a connector
    # after the processors of the pipeline it feeds, so its last flush at shutdown gets through
    assert order == ["testsink", "tag/b in traces/out", "forward", "tag/a in traces/in", "testrecv"]
    recv = graph.receivers[ComponentID("testrecv")]
    await recv.consumers[Signal.TRACES].consume(Payload.from_message(Signal.TRACES, _request()))  # type: ignore[attr-defined]
    got = graph.exporters[ComponentID("testsink")].got  # type: ignore[attr-defined]
    keys = sorted(tuple(kv.key for kv in p.message.resource_spans[0].resource.attributes) for p in got)
    # One copy went straight out after tag/a, one through forward and tag/b.
    assert keys == [("service.name", "a"), ("service.name", "a", "b")]
    # The first payload the sink got was not changed afterwards by tag/b.
    assert len(got) == 2


def test_connector_cycles_and_one_sided_use(registry: Registry) -> None:
    base = {"receivers": {"testrecv": None}, "exporters": {"testsink": None}}
    cyc = parse_config(
        {
            **base,
            "connectors": {"forward/a": None, "forward/b": None},
            "service": {
                "pipelines": {
                    "traces/1": {"receivers": ["testrecv", "forward/b"], "exporters": ["forward/a"]},
                    "traces/2": {"receivers": ["forward/a"], "exporters": ["forward/b", "testsink"]},
                }
            },
        },
        registry,
    )
    with pytest.raises(ConfigError, match="connectors form a cycle"):
        build_graph(cyc, Telemetry(), registry)
    msg = _errors(
        registry,
        {
            **base,
            "connectors": {"forward": None},
            "service": {"pipelines": {"traces": {"receivers": ["testrecv"], "exporters": ["forward"]}}},
        },
    )
    assert "connectors.forward: a connector must be used both as an exporter and as a receiver" in msg
    msg = _errors(
        registry,
        {
            **base,
            "connectors": {"forward": None},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["testrecv"], "exporters": ["forward"]},
                    "logs": {"receivers": ["forward"], "exporters": ["testsink"]},
                }
            },
        },
    )
    assert "connectors.forward: connector forward cannot take traces to logs" in msg
