"""The loki exporter's conversion: labels, lines, timestamps, structured metadata, tenants.

Every push is read back with the test Loki server's own decoder and label parser (written
apart from the exporter's encoder), so a test sees what Loki would store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from exporters.loki import LokiExporterConfig, convert
from processors._attraction import anyvalue_from_raw
from tests.support.loki_server import decode_push, parse_labels

NOW = 1_750_000_000_000_000_000
TRACE = bytes(range(16))
SPAN = bytes(range(100, 108))


def logs(
    records: Sequence[Mapping[str, Any]],
    resource: Mapping[str, Any] | None = None,
    *,
    scope: tuple[str, str] = ("shop.orders", "1.2"),
    request: ExportLogsServiceRequest | None = None,
) -> ExportLogsServiceRequest:
    """A logs request with one resource (``service.name: shop`` unless given) and one scope.

    A record is a dict of ``body``, ``attrs``, ``severity``, ``severity_text``, ``time``,
    ``observed``, ``trace_id``, ``span_id``, ``flags``.
    """
    req = request or ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    for key, value in ({"service.name": "shop"} if resource is None else resource).items():
        rl.resource.attributes.add(key=key).value.CopyFrom(anyvalue_from_raw(value))
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = scope
    for spec in records:
        rec = sl.log_records.add()
        if "body" in spec:
            rec.body.CopyFrom(anyvalue_from_raw(spec["body"]))
        for key, value in spec.get("attrs", {}).items():
            rec.attributes.add(key=key).value.CopyFrom(anyvalue_from_raw(value))
        rec.severity_number = spec.get("severity", 0)
        rec.severity_text = spec.get("severity_text", "")
        rec.time_unix_nano = spec.get("time", NOW)
        rec.observed_time_unix_nano = spec.get("observed", 0)
        rec.trace_id = spec.get("trace_id", b"")
        rec.span_id = spec.get("span_id", b"")
        rec.flags = spec.get("flags", 0)
    return req


def converter(**config: Any) -> convert.Converter:
    cfg = LokiExporterConfig.model_validate({"endpoint": "http://loki:3100/loki/api/v1/push", **config})
    return convert.Converter(convert.rules_from(cfg), logging.getLogger("appguard.test.loki"))


def decoded(request: ExportLogsServiceRequest, **config: Any) -> dict[str | None, list[tuple[dict[str, str], list[Any]]]]:
    """tenant -> [(labels, entries)] as Loki would read the pushes."""
    out: dict[str | None, list[tuple[dict[str, str], list[Any]]]] = {}
    conversion = converter(**config).convert(request, now_ns=NOW + 999)
    for push in conversion.pushes:
        unknown: list[str] = []
        streams, _ = decode_push(push.encode(), unknown)
        assert not unknown
        out[push.tenant] = [(dict(parse_labels(s.labels)), s.entries) for s in streams]
    return out


def only_stream(request: ExportLogsServiceRequest, **config: Any) -> tuple[dict[str, str], list[Any]]:
    pushes = decoded(request, **config)
    assert len(pushes) == 1
    streams = next(iter(pushes.values()))
    assert len(streams) == 1, streams
    return streams[0]


def labels_of(request: ExportLogsServiceRequest, **config: Any) -> list[dict[str, str]]:
    return [labels for streams in decoded(request, **config).values() for labels, _ in streams]


# ---- default labels


def test_default_labels() -> None:
    req = logs(
        [{"severity": 9, "body": "hi"}],
        {"service.name": "checkout", "service.namespace": "shop", "service.instance.id": "pod-7", "host.name": "web-1"},
    )
    labels, _ = only_stream(req)
    assert labels == {"exporter": "OTLP", "job": "shop/checkout", "instance": "pod-7", "level": "INFO"}


@pytest.mark.parametrize(
    ("resource", "job"),
    [({"service.name": "checkout"}, "checkout"), ({"service.namespace": "shop"}, None), ({}, None)],
)
def test_job_needs_service_name(resource: dict[str, str], job: str | None) -> None:
    labels, _ = only_stream(logs([{"body": "x"}], resource))
    assert labels.get("job") == job
    assert "instance" not in labels


@pytest.mark.parametrize(("severity", "level"), [(1, "TRACE"), (5, "DEBUG"), (10, "INFO2"), (13, "WARN"), (17, "ERROR"), (24, "FATAL4")])
def test_level_from_severity_number(severity: int, level: str) -> None:
    labels, _ = only_stream(logs([{"severity": severity}]))
    assert labels["level"] == level


def test_level_attribute_wins_and_leaves_the_line() -> None:
    labels, entries = only_stream(logs([{"severity": 9, "attrs": {"level": "notice", "user": "ann"}}]))
    assert labels["level"] == "notice"
    line = json.loads(entries[0].line)
    assert line["attributes"] == {"user": "ann"}


def test_no_level_without_severity_number() -> None:
    labels, entries = only_stream(logs([{"attrs": {"level": "notice"}}]))
    assert "level" not in labels
    assert json.loads(entries[0].line)["attributes"] == {"level": "notice"}


def test_default_labels_can_be_turned_off() -> None:
    req = logs([{"severity": 9}], {"service.name": "a", "service.instance.id": "i"})
    off = {"exporter": False, "job": False, "instance": False}
    assert labels_of(req, default_labels_enabled=off) == [{"level": "INFO"}]
    assert labels_of(req, default_labels_enabled={"level": False}) == [{"exporter": "OTLP", "job": "a", "instance": "i"}]


def test_a_record_without_any_label_is_dropped_and_counted() -> None:
    req = logs([{"body": "lost"}, {"body": "kept", "attrs": {"team": "core"}}], {})
    conv = converter(
        default_labels_enabled={"exporter": False, "job": False, "instance": False, "level": False},
        labels={"attributes": {"team": ""}},
    ).convert(req)
    assert (conv.records, conv.dropped) == (2, 1)
    [push] = conv.pushes
    [stream], _ = decode_push(push.encode(), [])
    assert stream.labels == '{team="core"}'
    assert [json.loads(e.line)["body"] for e in stream.entries] == ["kept"]


# ---- labels from the config and from hints


def test_labels_config_maps_resource_attributes_and_record_fields() -> None:
    req = logs(
        [{"severity": 17, "severity_text": "Error", "trace_id": TRACE, "attrs": {"http.method": "GET", "user.id": "u1"}}],
        {"service.name": "shop", "deployment.environment.name": "prod", "k8s.pod.name": "p-1"},
    )
    labels, entries = only_stream(
        req,
        labels={
            "resource": {"deployment.environment.name": "env", "k8s.pod.name": ""},
            "attributes": {"http.method": "method"},
            "record": {"severity": "severity_text", "severityN": "severity_number", "traceID": "trace"},
        },
    )
    assert labels == {
        "exporter": "OTLP", "job": "shop", "level": "ERROR", "env": "prod", "k8s_pod_name": "p-1", "method": "GET",
        "severity_text": "Error", "severity_number": "17", "trace": TRACE.hex(),
    }
    line = json.loads(entries[0].line)
    # What became a label is not repeated in the line.
    assert line["attributes"] == {"user.id": "u1"}
    assert line["resources"] == {"service.name": "shop"}


def test_hints_on_resource_and_record() -> None:
    req = logs(
        [
            {"attrs": {"loki.attribute.labels": "event.domain, event.name", "event.domain": "cart", "event.name": "add", "qty": 2}},
            {"attrs": {"loki.attribute.labels": ["event.domain"], "event.domain": "pay", "loki.resource.labels": "region"}},
        ],
        {"service.name": "shop", "cloud.zone": "eu-1a", "region": "eu", "loki.resource.labels": "cloud.zone"},
    )
    streams = decoded(req)[None]
    by_domain = {labels["event_domain"]: (labels, entries) for labels, entries in streams}
    cart_labels, cart_entries = by_domain["cart"]
    assert cart_labels == {"exporter": "OTLP", "job": "shop", "cloud_zone": "eu-1a", "event_domain": "cart", "event_name": "add"}
    cart_line = json.loads(cart_entries[0].line)
    assert cart_line["attributes"] == {"qty": 2}
    assert cart_line["resources"] == {"service.name": "shop", "region": "eu"}
    pay_labels, pay_entries = by_domain["pay"]
    assert pay_labels["region"] == "eu"
    pay_line = json.loads(pay_entries[0].line)
    assert "attributes" not in pay_line
    assert pay_line["resources"] == {"service.name": "shop"}
    for _, entries in streams:
        assert "loki." not in entries[0].line


def test_hint_finds_a_nested_attribute() -> None:
    req = logs([{"attrs": {"loki.attribute.labels": "http.request.method", "http": {"request.method": "PUT"}}}])
    labels, _ = only_stream(req)
    assert labels["http_request_method"] == "PUT"


def test_label_names_are_sanitized() -> None:
    req = logs(
        [{"attrs": {"loki.attribute.labels": "k8s.pod-name,1st,ünï", "k8s.pod-name": "a", "1st": "b", "ünï": "c"}}]
    )
    labels, _ = only_stream(req)
    assert {k: labels[k] for k in ("k8s_pod_name", "key_1st", "_n_")} == {"k8s_pod_name": "a", "key_1st": "b", "_n_": "c"}


def test_label_values_survive_any_characters() -> None:
    value = 'a "quoted"\\ value\nwith\tcontrols\x01 and ünicode ✓'
    labels, _ = only_stream(logs([{}], {"service.name": value}))
    assert labels["job"] == value


def test_empty_label_values_are_left_out() -> None:
    labels, _ = only_stream(logs([{"attrs": {"team": ""}}]), labels={"attributes": {"team": ""}})
    assert "team" not in labels


def test_more_than_15_labels_go_to_structured_metadata() -> None:
    attrs = {f"a{i:02d}": f"v{i}" for i in range(20)}
    req = logs([{"attrs": attrs}, {"attrs": attrs}])
    labels, entries = only_stream(req, labels={"attributes": {k: "" for k in attrs}})
    assert len(labels) == 15
    assert list(labels)[:2] == ["a00", "a01"] and "exporter" in labels and "job" in labels
    assert [k for k in attrs if k not in labels] == [f"a{i}" for i in range(13, 20)]
    for entry in entries:
        metadata = dict(entry.structured_metadata)
        assert {k: metadata[k] for k in attrs if k not in labels} == {f"a{i}": f"v{i}" for i in range(13, 20)}


def test_the_label_cap_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    attrs = {f"a{i:02d}": "v" for i in range(16)}
    conv = converter(labels={"attributes": {k: "" for k in attrs}})
    with caplog.at_level(logging.WARNING, logger="appguard.test.loki"):
        for _ in range(3):
            conv.convert(logs([{"attrs": attrs}]))
    assert len([r for r in caplog.records if "more than 15 labels" in r.getMessage()]) == 1


def test_too_long_label_value_goes_to_structured_metadata() -> None:
    long = "x" * 3000
    labels, entries = only_stream(logs([{"attrs": {"big": long}}]), labels={"attributes": {"big": ""}})
    assert "big" not in labels
    assert dict(entries[0].structured_metadata)["big"] == long


def test_max_label_names_is_configurable() -> None:
    labels, _ = only_stream(logs([{"severity": 9}], {"service.name": "a", "service.instance.id": "b"}), max_label_names_per_series=2)
    assert labels == {"exporter": "OTLP", "job": "a"}


# ---- lines


def test_json_line_fields() -> None:
    req = logs(
        [{
            "body": {"msg": "paid", "amount": 12.5},
            "trace_id": TRACE,
            "span_id": SPAN,
            "severity_text": "INFO",
            "severity": 9,
            "flags": 1,
            "attrs": {"order.id": 42, "ok": True, "tags": ["a", "b"], "raw": b"\x00\x01", "ratio": 0.5},
        }],
        {"service.name": "shop", "host.name": "web-1"},
    )
    _, [entry] = only_stream(req)
    assert json.loads(entry.line) == {
        "body": {"msg": "paid", "amount": 12.5},
        "traceid": TRACE.hex(),
        "spanid": SPAN.hex(),
        "severity": "INFO",
        "flags": 1,
        "attributes": {"order.id": 42, "ok": True, "tags": ["a", "b"], "raw": "AAE=", "ratio": 0.5},
        "resources": {"service.name": "shop", "host.name": "web-1"},
        "instrumentation_scope": {"name": "shop.orders", "version": "1.2"},
    }
    assert list(json.loads(entry.line)) == ["body", "traceid", "spanid", "severity", "flags", "attributes", "resources", "instrumentation_scope"]


def test_json_line_leaves_out_what_is_empty() -> None:
    _, [entry] = only_stream(logs([{}], {}, scope=("", "")))
    assert entry.line == "{}"
    _, [entry] = only_stream(logs([{"body": "x"}], {}, scope=("lib", "")))
    assert json.loads(entry.line) == {"body": "x", "instrumentation_scope": {"name": "lib"}}


def test_logfmt_line() -> None:
    req = logs(
        [
            {"body": "order 42 paid", "trace_id": TRACE, "span_id": SPAN, "severity_text": "INFO", "attrs": {"order.id": 42, "user name": "a b", "http": {"method": "GET", "codes": [200, 304]}}},
            {"body": "status=200 duration=3ms path=\"/a b\"", "severity_text": "WARN"},
            {"body": {"event": "login", "user": "ann"}},
            {"body": ["x", "y"]},
            {"body": 3.5},
            {"body": "severity=custom"},
        ],
        {"service.name": "shop"},
    )
    _, entries = only_stream(req, format="logfmt")
    assert [e.line for e in entries] == [
        f'msg="order 42 paid" traceID={TRACE.hex()} spanID={SPAN.hex()} severity=INFO attribute_order.id=42 '
        'attribute_user_name="a b" attribute_http_method=GET attribute_http_codes_0=200 attribute_http_codes_1=304 '
        "resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
        'status=200 duration=3ms path="/a b" severity=WARN resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2',
        "event=login user=ann resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
        "body_0=x body_1=y resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
        "msg=3.5 resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
        "severity=custom resource_service.name=shop instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
    ]


def test_raw_line() -> None:
    req = logs([{"body": "plain text", "attrs": {"a": 1}}, {"body": {"k": [1, 2]}}, {"body": 7}, {}])
    _, entries = only_stream(req, format="raw")
    assert [e.line for e in entries] == ["plain text", '{"k":[1,2]}', "7", ""]


def test_format_hint_resource_wins_over_record_and_config() -> None:
    req = logs([{"body": "a", "attrs": {"loki.format": "json"}}], {"service.name": "s", "loki.format": "raw"})
    logs([{"body": "b", "attrs": {"loki.format": "logfmt"}}], {"service.name": "s"}, request=req)
    logs([{"body": "c", "attrs": {"loki.format": "xml"}}], {"service.name": "s"}, request=req)
    [(_, entries)] = decoded(req)[None]
    assert [e.line for e in entries] == [
        "a",
        "msg=b resource_service.name=s instrumentation_scope_name=shop.orders instrumentation_scope_version=1.2",
        '{"body":"c","resources":{"service.name":"s"},"instrumentation_scope":{"name":"shop.orders","version":"1.2"}}',
    ]


# ---- timestamps and order


def test_timestamp_prefers_time_then_observed_then_now() -> None:
    req = logs([{"time": NOW + 5, "observed": NOW + 9}, {"time": 0, "observed": NOW + 7}, {"time": 0}])
    _, entries = only_stream(req)
    assert sorted(e.timestamp_ns for e in entries) == [NOW + 5, NOW + 7, NOW + 999]


def test_entries_of_a_stream_are_sorted_by_time() -> None:
    times = [NOW + 30, NOW + 10, NOW + 20, NOW + 10]
    req = logs([{"time": t, "body": f"r{i}"} for i, t in enumerate(times)])
    _, entries = only_stream(req)
    assert [(e.timestamp_ns, json.loads(e.line)["body"]) for e in entries] == [
        (NOW + 10, "r1"), (NOW + 10, "r3"), (NOW + 20, "r2"), (NOW + 30, "r0")
    ]


# ---- structured metadata


def test_structured_metadata_has_trace_context_and_the_other_attributes() -> None:
    req = logs(
        [{"trace_id": TRACE, "span_id": SPAN, "attrs": {"user.id": "u1", "count": 3, "ok": False, "obj": {"a": 1}, "team": "core"}}],
        {"service.name": "shop", "host.name": "web-1"},
    )
    _, [entry] = only_stream(req, labels={"attributes": {"team": ""}})
    assert entry.structured_metadata == [
        ("trace_id", TRACE.hex()), ("span_id", SPAN.hex()), ("user_id", "u1"), ("count", "3"), ("ok", "false"), ("obj", '{"a":1}')
    ]


def test_structured_metadata_options() -> None:
    req = logs([{"trace_id": TRACE, "attrs": {"a": "1"}}], {"service.name": "shop", "host.name": "web-1"})
    _, [entry] = only_stream(req, structured_metadata={"resource": True, "trace_context": False})
    assert entry.structured_metadata == [("a", "1"), ("service_name", "shop"), ("host_name", "web-1")]
    _, [entry] = only_stream(req, structured_metadata={"enabled": False})
    assert entry.structured_metadata == []
    _, [entry] = only_stream(req, structured_metadata={"attributes": False})
    assert entry.structured_metadata == [("trace_id", TRACE.hex())]


def test_structured_metadata_stays_within_loki_limits(caplog: pytest.LogCaptureFixture) -> None:
    attrs = {f"k{i}": "v" * 10 for i in range(200)}
    with caplog.at_level(logging.WARNING, logger="appguard.test.loki"):
        _, [entry] = only_stream(logs([{"attrs": attrs}]))
    assert len(entry.structured_metadata) == 128
    _, [entry] = only_stream(logs([{"attrs": {f"k{i}": "v" * 1000 for i in range(100)}}]))
    assert sum(len(n) + len(v) for n, v in entry.structured_metadata) <= 65536
    assert len(entry.structured_metadata) == 65
    assert any("structured metadata of an entry beyond" in r.getMessage() for r in caplog.records)


# ---- tenants


def test_tenants_from_hints_and_config() -> None:
    req = logs([{"body": "r1"}], {"service.name": "a", "loki.tenant": "team", "team": "red"})
    logs([{"body": "r2", "attrs": {"loki.tenant": "team", "team": "blue"}}], {"service.name": "b"}, request=req)
    # The resource's hint wins; the attribute it names may be the record's.
    logs([{"body": "r3", "attrs": {"loki.tenant": "other", "owner": "green", "other": "x"}}], {"service.name": "c", "loki.tenant": "owner"}, request=req)
    logs([{"body": "r4"}], {"service.name": "d"}, request=req)
    logs([{"body": "r5"}], {"service.name": "e", "loki.tenant": "team", "team": 7}, request=req)
    pushes = decoded(req, tenant="default")
    assert {t: sorted(json.loads(e.line)["body"] for _, entries in streams for e in entries) for t, streams in pushes.items()} == {
        "red": ["r1"], "blue": ["r2"], "green": ["r3"], "default": ["r4", "r5"]
    }
    assert {t: [labels["job"] for labels, _ in streams] for t, streams in pushes.items()}["red"] == ["a"]


def test_no_tenant_without_hint_or_config() -> None:
    assert list(decoded(logs([{}]))) == [None]


# ---- streams


def test_records_with_the_same_labels_share_a_stream_across_resources() -> None:
    req = logs([{"severity": 9, "body": "a"}, {"severity": 13, "body": "b"}], {"service.name": "s", "pod": "1"})
    logs([{"severity": 9, "body": "c"}], {"service.name": "s", "pod": "2"}, request=req)
    streams = decoded(req)[None]
    assert sorted((labels["level"], [json.loads(e.line)["body"] for e in entries]) for labels, entries in streams) == [
        ("INFO", ["a", "c"]), ("WARN", ["b"])
    ]


def test_label_string_is_sorted_prometheus_form() -> None:
    assert convert.label_string([("job", "x"), ("a", 'q"\n')]) == '{a="q\\"\\n", job="x"}'
