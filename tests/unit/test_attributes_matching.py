"""``include``/``exclude`` of the ``attributes`` processor, strict and regexp, per signal."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.confmap import ConfigError
from collector.pdata import Signal
from processors import attributes
from processors._matching import MatchProperties, StringSet
from tests.support.components import Sink
from tests.unit.test_attributes import TRACE_ID, fill, item_attrs, process, settings

DELETE_CARD = [{"key": "credit_card", "action": "delete"}]


def spans_request(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """One resource per span: each dict gives service, name, kind, attrs, resource, scope."""
    req = ExportTraceServiceRequest()
    for s in spans:
        rs = req.resource_spans.add()
        resource = dict(s.get("resource", {}))
        if "service" in s:
            resource["service.name"] = s["service"]
        fill(rs.resource.attributes, resource)
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = s.get("scope", ("lib", ""))
        span = ss.spans.add(name=s.get("name", "op"), kind=s.get("kind", 0), trace_id=TRACE_ID, span_id=bytes(8))
        fill(span.attributes, s.get("attrs", {}))
    return req


async def kept_cards(config: dict[str, Any], spans: list[dict[str, Any]]) -> list[bool]:
    """For each span: whether it still has credit_card (i.e. was not processed)."""
    for s in spans:
        s.setdefault("attrs", {})["credit_card"] = "1234"
    out = await process({**config, "actions": DELETE_CARD}, Signal.TRACES, spans_request(spans))
    return ["credit_card" in attrs for attrs in item_attrs(Signal.TRACES, out.message)]


async def test_exclude_services_and_attributes() -> None:
    # The stock testdata's attributes/excludemulti: spans 1 and 2 match and are left alone.
    config = {
        "exclude": {
            "match_type": "strict",
            "services": ["svcA", "svcB"],
            "attributes": [{"key": "env", "value": "dev"}, {"key": "test_request"}],
        }
    }
    kept = await kept_cards(
        config,
        [
            {"service": "svcB", "attrs": {"env": "dev", "test_request": 123}},
            {"service": "svcA", "attrs": {"env": "dev", "test_request": False}},
            {"service": "svcB", "attrs": {"env": 1, "test_request": "dev"}},
            {"service": "svcC", "attrs": {"env": "dev", "test_request": False}},
        ],
    )
    assert kept == [True, True, False, False]


async def test_include_services_regexp() -> None:
    kept = await kept_cards(
        {"include": {"match_type": "regexp", "services": ["auth.*", "login.*"]}},
        [{"service": "authservice"}, {"service": "loginsvc"}, {"service": "billing"}, {}, {"service": "my-auth"}],
    )
    # Regexps search anywhere in the name, as Go's MatchString does; no service.name -> no match.
    assert kept == [False, False, True, True, False]
    # A resource without service.name has the stock's placeholder name, not "".
    kept = await kept_cards({"include": {"match_type": "regexp", "services": ["^$"]}}, [{}, {"service": ""}])
    assert kept == [True, False]
    kept = await kept_cards({"include": {"match_type": "strict", "services": ["<nil-service-name>"]}}, [{}, {"service": "a"}])
    assert kept == [False, True]


async def test_include_then_exclude() -> None:
    # The stock testdata's attributes/selectiveprocessing.
    config = {
        "include": {"match_type": "strict", "services": ["svcA", "svcB"]},
        "exclude": {"match_type": "strict", "attributes": [{"key": "redact_trace", "value": False}]},
    }
    kept = await kept_cards(
        config,
        [
            {"service": "svcB", "attrs": {"env": "production", "redact_trace": "false"}},
            {"service": "svcA", "attrs": {"env": "staging", "redact_trace": True}},
            {"service": "svcB", "attrs": {"env": "production", "redact_trace": False}},
            {"service": "svcC", "attrs": {"env": "dev"}},
        ],
    )
    assert kept == [False, False, True, True]


async def test_span_names_and_kinds() -> None:
    config = {
        "include": {"match_type": "regexp", "services": ["auth.*"]},
        "exclude": {"match_type": "regexp", "span_names": ["login.*"]},
    }
    kept = await kept_cards(
        config, [{"service": "auth", "name": "login/start"}, {"service": "auth", "name": "token"}, {"service": "x", "name": "token"}]
    )
    assert kept == [True, False, True]
    kinds = {"include": {"match_type": "strict", "span_kinds": ["SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"]}}
    kept = await kept_cards(
        kinds,
        [{"kind": Span.SPAN_KIND_SERVER}, {"kind": Span.SPAN_KIND_CLIENT}, {"kind": Span.SPAN_KIND_CONSUMER}, {}],
    )
    assert kept == [False, True, False, True]


async def test_strict_attribute_values_compare_types() -> None:
    config = {"include": {"match_type": "strict", "attributes": [{"key": "code", "value": 200}]}}
    kept = await kept_cards(config, [{"attrs": {"code": 200}}, {"attrs": {"code": "200"}}, {"attrs": {"code": 200.0}}, {}])
    assert kept == [False, True, True, True]
    nested = {"include": {"match_type": "strict", "attributes": [{"key": "m", "value": {"a": 1, "b": [True]}}]}}
    kept = await kept_cards(nested, [{"attrs": {"m": {"b": [True], "a": 1}}}, {"attrs": {"m": {"a": 1}}}])
    assert kept == [False, True]


async def test_regexp_attribute_values_match_their_text() -> None:
    config = {"include": {"match_type": "regexp", "attributes": [{"key": "code", "value": "^5"}, {"key": "db"}]}}
    kept = await kept_cards(
        config,
        [
            {"attrs": {"code": 503, "db": "x"}},
            {"attrs": {"code": "500", "db": 1}},
            {"attrs": {"code": 5.5, "db": True}},
            {"attrs": {"code": 404, "db": "x"}},
            {"attrs": {"code": 503}},
            {"attrs": {"code": [5], "db": "x"}},
        ],
    )
    assert kept == [False, False, False, True, True, True]


async def test_resources_and_libraries() -> None:
    config = {"exclude": {"match_type": "strict", "resources": [{"key": "host.type", "value": "n1-standard-1"}]}}
    kept = await kept_cards(
        config,
        [{"resource": {"host.type": "n1-standard-1"}}, {"resource": {"host.type": "n2"}}, {"resource": {}}],
    )
    assert kept == [True, False, False]
    # A version given must match exactly (an empty one matches only an empty version); no
    # version matches any.
    libs = {
        "include": {
            "match_type": "strict",
            "libraries": [{"name": "mongo-java-driver", "version": "3.8.0"}, {"name": "redis", "version": ""}, {"name": "pg"}],
        }
    }
    kept = await kept_cards(
        libs,
        [
            {"scope": ("mongo-java-driver", "3.8.0")},
            {"scope": ("mongo-java-driver", "3.9.0")},
            {"scope": ("redis", "")},
            {"scope": ("redis", "1")},
            {"scope": ("pg", "")},
            {"scope": ("pg", "2")},
            {"scope": ("other", "3.8.0")},
        ],
    )
    assert kept == [False, True, False, True, False, False, True]


async def test_log_bodies_and_severity() -> None:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    records: list[tuple[str | int, str, int]] = [
        ("AUTH failed", "debug", 5),
        ("payment ok", "debug2", 6),
        ("AUTH ok", "info", 9),
        ("AUTH x", "DEBUG", 0),
        (42, "debug", 2),
    ]
    for body, text, number in records:
        record = sl.log_records.add(severity_text=text, severity_number=number)
        if isinstance(body, str):
            record.body.string_value = body
        else:
            record.body.int_value = body
        fill(record.attributes, {"token": "t"})
    delete_token = [{"key": "token", "action": "delete"}]

    async def kept(include: dict[str, Any]) -> list[bool]:
        out = await process({"include": include, "actions": delete_token}, Signal.LOGS, req)
        return ["token" in attrs for attrs in item_attrs(Signal.LOGS, out.message)]

    assert await kept({"match_type": "regexp", "log_bodies": ["AUTH.*"]}) == [False, True, False, False, True]
    assert await kept({"match_type": "strict", "log_bodies": ["42"]}) == [True, True, True, True, False]
    assert await kept({"match_type": "regexp", "log_severity_texts": ["^debug"]}) == [False, False, True, True, False]
    assert await kept({"log_severity_number": {"min": "INFO"}}) == [True, True, False, True, True]
    assert await kept({"log_severity_number": {"min": 5, "match_undefined": True}}) == [False, False, False, False, True]
    assert await kept({"match_type": "strict", "attributes": [{"key": "token", "value": "t"}], "log_severity_texts": ["info"]}) == [
        True, True, False, True, True,
    ]


async def test_metrics_select_by_metric_name() -> None:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    for name in ("http.server.duration", "http.client.duration", "process.cpu"):
        point = sm.metrics.add(name=name).sum.data_points.add(as_int=1)
        fill(point.attributes, {"http.target": "/x"})
    delete_target = [{"key": "http.target", "action": "delete"}]

    async def kept(config: dict[str, Any]) -> list[bool]:
        out = await process({**config, "actions": delete_target}, Signal.METRICS, req)
        return ["http.target" in attrs for attrs in item_attrs(Signal.METRICS, out.message)]

    assert await kept({"include": {"match_type": "strict", "metric_names": ["http.server.duration"]}}) == [False, True, True]
    assert await kept({"exclude": {"match_type": "regexp", "metric_names": [r"^http\."]}}) == [True, True, False]
    both = {
        "include": {"match_type": "regexp", "metric_names": ["duration$"]},
        "exclude": {"match_type": "strict", "metric_names": ["http.client.duration"]},
    }
    assert await kept(both) == [False, True, True]
    # As in the stock collector, resources are accepted for metrics but select nothing.
    assert await kept({"include": {"match_type": "strict", "resources": [{"key": "nothere"}]}}) == [False, False, False]


def test_regexp_cache_gives_the_same_answers() -> None:
    options = MatchProperties.model_validate({"regexp": {"cacheenabled": True, "cachemaxnumentries": 2}}).regexp
    cached = StringSet(["^a", "b$"], "regexp", options)
    plain = StringSet(["^a", "b$"], "regexp")
    for text in ["abc", "cab", "x", "abc", "ab", "x", "q", "cab"]:
        assert cached.matches(text) == plain.matches(text)


@pytest.mark.parametrize(
    ("signal", "block", "message"),
    [
        (Signal.TRACES, {"match_type": "strict"}, 'at least one of "services"'),
        (Signal.TRACES, {"match_type": "strict", "log_bodies": ["x"]}, "log_bodies should not be specified for trace spans"),
        (Signal.TRACES, {"match_type": "strict", "metric_names": ["x"]}, "metric_names should not be specified"),
        (Signal.TRACES, {"match_type": "strict", "span_kinds": ["server"]}, "span_kinds string must match one of"),
        (Signal.LOGS, {"match_type": "strict", "span_names": ["x"]}, "span_names are not valid for log records"),
        (Signal.LOGS, {"match_type": "strict"}, 'at least one of "attributes"'),
        (Signal.METRICS, {"match_type": "strict", "attributes": [{"key": "a"}]}, "attributes are not valid for metrics"),
        (Signal.METRICS, {"match_type": "strict", "services": ["a"]}, "services are not valid for metrics"),
        (Signal.METRICS, {"match_type": "strict"}, 'at least one of "metric_names" or "resources"'),
    ],
)
def test_properties_checked_for_the_pipeline_signal(signal: Signal, block: dict[str, Any], message: str) -> None:
    for where in ("include", "exclude"):
        cfg = attributes.AttributesConfig.model_validate({where: block, "actions": DELETE_CARD})
        with pytest.raises(ConfigError) as info:
            attributes.factory.create(settings=settings("attributes/x"), config=cfg, signal=signal, next_consumer=Sink())
        text = str(info.value)
        assert text.startswith(f"processors.attributes/x.{where}: ")
        assert message in text
        assert f"in a {signal.value} pipeline" in text


def test_span_kinds_regexp_need_not_be_standard_names() -> None:
    cfg = attributes.AttributesConfig.model_validate(
        {"include": {"match_type": "regexp", "span_kinds": ["SERVER$"]}, "actions": DELETE_CARD}
    )
    attributes.factory.create(settings=settings("attributes/x"), config=cfg, signal=Signal.TRACES, next_consumer=Sink())
