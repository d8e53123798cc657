"""The ``attributes`` processor: each action on real OTLP requests of the three signals.

The helpers at the top build requests whose items carry given attributes and read the
attributes back with their OTLP types; ``test_attributes_matching`` and ``test_resource``
use them too.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.component import ComponentID, CreateSettings, Kind
from collector.consumer import PermanentError
from collector.pdata import ExportRequest, Payload, Signal
from collector.telemetry import Telemetry
from processors import attributes
from processors._attraction import anyvalue_from_raw
from tests.support.components import Sink

TRACE_ID = bytes(range(1, 17))
SPAN_ID = bytes(range(1, 9))


# --- helpers shared by the attributes and resource tests ------------------------------------


def to_py(value: AnyValue) -> Any:
    """An ``AnyValue`` as a Python value (``None`` for an empty value)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [to_py(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: to_py(kv.value) for kv in value.kvlist_value.values}
    return None if kind is None else getattr(value, kind)


def typed(value: Any) -> Any:
    """Tag every value with its type, so that True and 1, or 1 and 1.0, compare unequal."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def attrs_dict(kvs: Sequence[KeyValue]) -> dict[str, Any]:
    """An attribute list as a dict (keys must be unique)."""
    out = {kv.key: to_py(kv.value) for kv in kvs}
    assert len(out) == len(kvs), f"duplicate keys in {[kv.key for kv in kvs]}"
    return out


def fill(kvs: Any, values: Mapping[str, Any]) -> None:
    """Append ``values`` to a repeated KeyValue field, typed as YAML values are."""
    for key, value in values.items():
        kvs.add(key=key, value=anyvalue_from_raw(value))


def request(
    signal: Signal,
    items: Sequence[Mapping[str, Any]],
    *,
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str] = ("test.scope", "1.0"),
) -> ExportRequest:
    """A request of ``signal`` with one resource, one scope and one item per attribute dict.

    Items are spans, log records, or the data points of one gauge (metrics).
    """
    res_attrs = {"service.name": "svc"} if resource is None else resource
    if signal is Signal.TRACES:
        treq = ExportTraceServiceRequest()
        rs = treq.resource_spans.add()
        fill(rs.resource.attributes, res_attrs)
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = scope
        for i, values in enumerate(items):
            span = ss.spans.add(name=f"op{i}", trace_id=TRACE_ID, span_id=SPAN_ID)
            fill(span.attributes, values)
        return treq
    if signal is Signal.LOGS:
        lreq = ExportLogsServiceRequest()
        rl = lreq.resource_logs.add()
        fill(rl.resource.attributes, res_attrs)
        sl = rl.scope_logs.add()
        sl.scope.name, sl.scope.version = scope
        for i, values in enumerate(items):
            record = sl.log_records.add(trace_id=TRACE_ID, span_id=SPAN_ID, severity_text="INFO", severity_number=9)
            record.body.string_value = f"message {i}"
            fill(record.attributes, values)
        return lreq
    mreq = ExportMetricsServiceRequest()
    rm = mreq.resource_metrics.add()
    fill(rm.resource.attributes, res_attrs)
    sm = rm.scope_metrics.add()
    sm.scope.name, sm.scope.version = scope
    metric = sm.metrics.add(name="test.gauge")
    for i, values in enumerate(items):
        point = metric.gauge.data_points.add(as_int=i, time_unix_nano=1_000 + i)
        fill(point.attributes, values)
    return mreq


def item_attrs(signal: Signal, message: ExportRequest) -> list[dict[str, Any]]:
    """The attributes of every item (every data point for metrics), in order."""
    out: list[dict[str, Any]] = []
    if signal is Signal.TRACES:
        for rs in message.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                out.extend(attrs_dict(span.attributes) for span in ss.spans)
    elif signal is Signal.LOGS:
        for rl in message.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                out.extend(attrs_dict(rec.attributes) for rec in sl.log_records)
    else:
        for rm in message.resource_metrics:  # type: ignore[union-attr]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        out.extend(attrs_dict(p.attributes) for p in getattr(metric, kind).data_points)
    return out


def settings(ident: str, telemetry: Telemetry | None = None) -> CreateSettings:
    return CreateSettings(ComponentID.parse(ident), Kind.PROCESSOR, telemetry or Telemetry())


def payload_of(message: ExportRequest, signal: Signal, **kwargs: Any) -> Payload:
    """A payload as a receiver makes it: parsed from the request's bytes, bytes kept."""
    return Payload.from_bytes(signal, message.SerializeToString(), **kwargs)


async def process(
    config: Mapping[str, Any],
    signal: Signal,
    message: ExportRequest,
    *,
    telemetry: Telemetry | None = None,
    **payload_kwargs: Any,
) -> Payload:
    """Run one request through an ``attributes`` processor; the payload its next consumer got."""
    cfg = attributes.AttributesConfig.model_validate(dict(config))
    sink = Sink()
    proc = attributes.factory.create(
        settings=settings("attributes/test", telemetry), config=cfg, signal=signal, next_consumer=sink
    )
    await proc.consume(payload_of(message, signal, **payload_kwargs))
    assert len(sink.got) == 1
    return sink.got[0]


async def run_items(actions: Sequence[Any], signal: Signal, items: Sequence[Any], **kwargs: Any) -> list[dict[str, Any]]:
    """The items' attributes after the actions ran on them."""
    out = await process({"actions": list(actions)}, signal, request(signal, items), **kwargs)
    return item_attrs(signal, out.message)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SIGNALS = pytest.mark.parametrize("signal", list(Signal), ids=lambda s: s.value)


# --- insert / update / upsert ----------------------------------------------------------------


@SIGNALS
async def test_insert_value_only_where_absent(signal: Signal) -> None:
    got = await run_items(
        [{"key": "attribute1", "value": 123, "action": "insert"}],
        signal,
        [{}, {"anotherkey": "bob"}, {"attribute1": "bob"}],
    )
    assert typed(got) == typed([{"attribute1": 123}, {"anotherkey": "bob", "attribute1": 123}, {"attribute1": "bob"}])


@SIGNALS
async def test_insert_from_attribute_copies_the_typed_value(signal: Signal) -> None:
    got = await run_items(
        [{"key": "string key", "from_attribute": "anotherkey", "action": "insert"}],
        signal,
        [{}, {"bob": 1}, {"anotherkey": 8892342}, {"anotherkey": 8892342, "string key": "here"}],
    )
    assert typed(got) == typed(
        [{}, {"bob": 1}, {"anotherkey": 8892342, "string key": 8892342}, {"anotherkey": 8892342, "string key": "here"}]
    )


@SIGNALS
async def test_update_value_only_where_present(signal: Signal) -> None:
    got = await run_items(
        [{"key": "db.secret", "value": "redacted", "action": "update"}],
        signal,
        [{}, {"boo": "foo"}, {"db.secret": "password1234"}, {"db.secret": 42}],
    )
    assert typed(got) == typed([{}, {"boo": "foo"}, {"db.secret": "redacted"}, {"db.secret": "redacted"}])


@SIGNALS
async def test_update_from_attribute(signal: Signal) -> None:
    got = await run_items(
        [{"key": "boo", "from_attribute": "foo", "action": "update"}],
        signal,
        [{}, {"boo": "bob"}, {"foo": "over there"}, {"foo": "there is a party over here", "boo": "not here"}],
    )
    assert got == [
        {},
        {"boo": "bob"},
        {"foo": "over there"},
        {"foo": "there is a party over here", "boo": "there is a party over here"},
    ]


@SIGNALS
async def test_upsert_value(signal: Signal) -> None:
    got = await run_items(
        [{"key": "region", "value": "planet-earth", "action": "upsert"}],
        signal,
        [{}, {"mission": "to mars"}, {"mission": "to mars", "region": "solar system"}],
    )
    assert got == [
        {"region": "planet-earth"},
        {"mission": "to mars", "region": "planet-earth"},
        {"mission": "to mars", "region": "planet-earth"},
    ]


@SIGNALS
async def test_upsert_from_attribute_keeps_complex_types(signal: Signal) -> None:
    complex_value = {"list": [1, 2.5, True, "x", b"\x00\xff"], "map": {"inner": None}}
    got = await run_items(
        [{"key": "new_user_key", "from_attribute": "user_key", "action": "upsert"}],
        signal,
        [{}, {"boo": "ghosts"}, {"user_key": 2245}, {"user_key": complex_value, "new_user_key": 5422}, {"user_key": b"\x01\x02"}],
    )
    assert typed(got) == typed(
        [
            {},
            {"boo": "ghosts"},
            {"user_key": 2245, "new_user_key": 2245},
            {"user_key": complex_value, "new_user_key": complex_value},
            {"user_key": b"\x01\x02", "new_user_key": b"\x01\x02"},
        ]
    )


async def test_from_attribute_naming_its_own_key_changes_nothing() -> None:
    actions = [{"key": "boo", "action": a, "from_attribute": "boo"} for a in ("insert", "update", "upsert")]
    got = await run_items(actions, Signal.TRACES, [{"boo": "ghosts are scary"}])
    assert got == [{"boo": "ghosts are scary"}]


async def test_typed_config_values() -> None:
    actions = [
        {"key": "b", "value": True, "action": "insert"},
        {"key": "d", "value": 1.5, "action": "insert"},
        {"key": "i", "value": -7, "action": "insert"},
        {"key": "l", "value": [1, "two", 3.0], "action": "insert"},
        {"key": "m", "value": {"inner": "x", "n": 2}, "action": "insert"},
        {"key": "bin", "value": b"\x00\x01", "action": "insert"},
    ]
    got = await run_items(actions, Signal.TRACES, [{}])
    assert typed(got) == typed(
        [{"b": True, "d": 1.5, "i": -7, "l": [1, "two", 3.0], "m": {"inner": "x", "n": 2}, "bin": b"\x00\x01"}]
    )


async def test_action_names_are_case_insensitive() -> None:
    actions = [
        {"key": "one", "action": "Delete"},
        {"key": "two", "value": 123, "action": "INSERT"},
        {"key": "three", "from_attribute": "two", "action": "upDaTE"},
        {"key": "five", "from_attribute": "two", "action": "upsert"},
    ]
    got = await run_items(actions, Signal.TRACES, [{"one": 1, "three": "x"}])
    assert typed(got) == typed([{"three": 123, "two": 123, "five": 123}])


async def test_actions_apply_in_order() -> None:
    # The stock README's example: backfill "operation", copy it to "svc.operation", drop it.
    actions = [
        {"key": "operation", "value": "default", "action": "insert"},
        {"key": "svc.operation", "from_attribute": "operation", "action": "upsert"},
        {"key": "operation", "action": "delete"},
    ]
    got = await run_items(
        actions,
        Signal.TRACES,
        [
            {"foo": "casper"},
            {"foo": "casper", "operation": "arithmetic"},
            {"foo": "casper", "svc.operation": "some value"},
            {"foo": "casper", "operation": "arithmetic", "svc.operation": "add"},
        ],
    )
    assert got == [
        {"foo": "casper", "svc.operation": "default"},
        {"foo": "casper", "svc.operation": "arithmetic"},
        {"foo": "casper", "svc.operation": "default"},
        {"foo": "casper", "svc.operation": "arithmetic"},
    ]


# --- default_value ---------------------------------------------------------------------------


async def test_default_value_when_the_source_is_missing() -> None:
    actions = [
        {"key": "region", "from_attribute": "cloud.region", "default_value": "us-east-1", "action": "insert"},
        {"key": "tenant", "from_context": "metadata.tenant", "default_value": "default-tenant", "action": "upsert"},
        {"key": "env", "value": "", "default_value": "development", "action": "upsert"},
        {"key": "only_default", "default_value": 7, "action": "insert"},
    ]
    got = await run_items(actions, Signal.TRACES, [{}, {"cloud.region": "eu-west-3"}])
    assert typed(got) == typed(
        [
            {"region": "us-east-1", "tenant": "default-tenant", "env": "development", "only_default": 7},
            {"cloud.region": "eu-west-3", "region": "eu-west-3", "tenant": "default-tenant", "env": "development", "only_default": 7},
        ]
    )
    with_context = await run_items(actions[1:2], Signal.TRACES, [{}], metadata={"tenant": ("acme",)})
    assert with_context == [{"tenant": "acme"}]


# --- delete ----------------------------------------------------------------------------------


@SIGNALS
async def test_delete_by_key_and_pattern(signal: Signal) -> None:
    got = await run_items(
        [{"key": "duplicate_key", "pattern": "^duplicate_key_.", "action": "delete"}],
        signal,
        [
            {},
            {"boo": "ghosts are scary"},
            {"duplicate_key": 3245.6, "original_key": 3245.6},
            {
                "duplicate_key_a": 3245.6,
                "duplicate_key_b": 3245.6,
                "original_key": 3245.6,
                "not_duplicate_key": 3246.6,
            },
        ],
    )
    assert got == [{}, {"boo": "ghosts are scary"}, {"original_key": 3245.6}, {"original_key": 3245.6, "not_duplicate_key": 3246.6}]


async def test_delete_pattern_is_a_search_not_a_full_match() -> None:
    # Go's MatchString finds the pattern anywhere in the key.
    got = await run_items([{"pattern": "duplicate.*", "action": "delete"}], Signal.LOGS, [{"a.duplicate_b": 1, "keep": 2}])
    assert got == [{"keep": 2}]


async def test_delete_removes_every_occurrence_of_a_duplicated_key() -> None:
    message = request(Signal.TRACES, [{}])
    span = message.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[union-attr]
    fill(span.attributes, {"password": "a"})
    fill(span.attributes, {"keep": 1})
    fill(span.attributes, {"password": "b"})
    out = await process({"actions": [{"key": "password", "action": "delete"}]}, Signal.TRACES, message)
    assert item_attrs(Signal.TRACES, out.message) == [{"keep": 1}]


# --- hash ------------------------------------------------------------------------------------


@SIGNALS
async def test_hash_each_type_as_the_stock_does(signal: Signal) -> None:
    items = [
        {},
        {"boo": "foo"},
        {"updateme": "foo"},
        {"updateme": 24},
        {"updateme": 2.4},
        {"updateme": True},
        {"updateme": False},
        {"updateme": -1},
        {"updatemebyregexp": False, "donotupdatemebyregexp": False},
    ]
    got = await run_items([{"key": "updateme", "pattern": "^updatemeby.*", "action": "hash"}], signal, items)
    assert got == [
        {},
        {"boo": "foo"},
        {"updateme": sha256_hex(b"foo")},
        {"updateme": sha256_hex(struct.pack("<q", 24))},
        {"updateme": sha256_hex(struct.pack("<d", 2.4))},
        {"updateme": sha256_hex(b"\x01")},
        {"updateme": sha256_hex(b"\x00")},
        {"updateme": sha256_hex(b"\xff" * 8)},
        {"updatemebyregexp": sha256_hex(b"\x00"), "donotupdatemebyregexp": False},
    ]
    assert got[2]["updateme"] == "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"


async def test_hash_of_values_with_nothing_to_hash_is_empty() -> None:
    # The stock hasher only hashes strings, ints, doubles and booleans; the rest, and the
    # empty string, become "".
    got = await run_items(
        [{"key": "v", "action": "hash"}],
        Signal.TRACES,
        [{"v": b"\x01\x02\x03"}, {"v": [1, 2]}, {"v": {"a": 1}}, {"v": ""}],
    )
    assert got == [{"v": ""}, {"v": ""}, {"v": ""}, {"v": ""}]


# --- extract ---------------------------------------------------------------------------------


@SIGNALS
async def test_extract_with_several_groups(signal: Signal) -> None:
    pattern = r"^\/api\/v1\/document\/(?P<new_user_key>.*)\/update\/(?P<version>.*)$"
    got = await run_items(
        [{"key": "user_key", "pattern": pattern, "action": "extract"}],
        signal,
        [
            {},
            {"boo": "ghosts are scary"},
            {"boo": "ghosts are scary", "user_key": 1234},
            {"user_key": "does not match"},
            {"user_key": "/api/v1/document/12345678/update"},
            {"user_key": "/api/v1/document/12345678/update/v1", "foo": "casper"},
            {"user_key": "/api/v1/document/12345678/update/v1", "new_user_key": "2321", "version": "na"},
        ],
    )
    assert typed(got) == typed(
        [
            {},
            {"boo": "ghosts are scary"},
            {"boo": "ghosts are scary", "user_key": 1234},
            {"user_key": "does not match"},
            {"user_key": "/api/v1/document/12345678/update"},
            {"user_key": "/api/v1/document/12345678/update/v1", "foo": "casper", "new_user_key": "12345678", "version": "v1"},
            {"user_key": "/api/v1/document/12345678/update/v1", "new_user_key": "12345678", "version": "v1"},
        ]
    )


async def test_extract_group_that_took_no_part_gives_empty_string() -> None:
    got = await run_items(
        [{"key": "url", "pattern": r"^(?P<scheme>https?)://(?P<host>[^/:]+)(?::(?P<port>\d+))?", "action": "extract"}],
        Signal.TRACES,
        [{"url": "http://example.com/path"}, {"url": "https://example.com:8443/"}],
    )
    assert got == [
        {"url": "http://example.com/path", "scheme": "http", "host": "example.com", "port": ""},
        {"url": "https://example.com:8443/", "scheme": "https", "host": "example.com", "port": "8443"},
    ]


async def test_extract_accepts_re2_group_syntax() -> None:
    got = await run_items(
        [{"key": "k", "pattern": r"(?<first>\w+)-(?<second>\w+)\z", "action": "extract"}], Signal.LOGS, [{"k": "ab-cd"}]
    )
    assert got == [{"k": "ab-cd", "first": "ab", "second": "cd"}]


# --- convert ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "before", "after"),
    [
        ("int", "123", 123),
        ("int", "-42", -42),
        ("int", "+7", 7),
        ("int", " 12", " 12"),  # ParseInt refuses spaces: left as it is
        ("int", "1.5", "1.5"),
        ("int", "1_000", "1_000"),
        ("int", "9223372036854775808", "9223372036854775808"),  # out of int64 range
        ("int", -2.7, -2),  # truncated toward zero
        ("int", 3.99, 3),
        ("int", True, 1),
        ("int", False, 0),
        ("int", 5, 5),
        ("int", [1], [1]),
        ("int", b"\x01", b"\x01"),
        ("double", "1e3", 1000.0),
        ("double", "-0.5", -0.5),
        ("double", "Inf", float("inf")),
        ("double", "1e400", "1e400"),  # overflow is an error in Go
        ("double", "abc", "abc"),
        ("double", "1_0", "1_0"),
        ("double", 3, 3.0),
        ("double", True, 1.0),
        ("double", {"a": 1}, {"a": 1}),
        ("string", 123, "123"),
        ("string", 0.1, "0.1"),
        ("string", 2.0, "2"),
        ("string", 1e21, "1e+21"),
        ("string", 1e-7, "1e-7"),
        ("string", 123456789.0, "123456789"),
        ("string", True, "true"),
        ("string", b"\x00\xff", base64.b64encode(b"\x00\xff").decode()),
        ("string", {"b": 1, "a": [True, "x<y"]}, '{"a":[true,"x\\u003cy"],"b":1}'),
        ("string", "same", "same"),
    ],
)
async def test_convert(to: str, before: Any, after: Any) -> None:
    got = await run_items([{"key": "v", "action": "convert", "converted_type": to}], Signal.TRACES, [{"v": before}, {}])
    assert typed(got) == typed([{"v": after}, {}])


@SIGNALS
async def test_convert_on_every_signal(signal: Signal) -> None:
    got = await run_items(
        [{"key": "http.status_code", "action": "convert", "converted_type": "int"}],
        signal,
        [{"http.status_code": "200"}, {"http.status_code": "OK"}, {}],
    )
    assert typed(got) == typed([{"http.status_code": 200}, {"http.status_code": "OK"}, {}])


# --- from_context ----------------------------------------------------------------------------


@SIGNALS
async def test_from_context_metadata_and_client_address(signal: Signal) -> None:
    actions = [
        {"key": "origin", "from_context": "metadata.origin", "action": "insert"},
        {"key": "multi", "from_context": "metadata.X-Multi", "action": "insert"},
        {"key": "bare", "from_context": "origin", "action": "insert"},
        {"key": "absent", "from_context": "metadata.nothere", "action": "insert"},
        {"key": "client.address", "from_context": "client.address", "action": "upsert"},
    ]
    got = await run_items(
        actions,
        signal,
        [{}, {"origin": "kept"}],
        metadata={"origin": ("web",), "x-multi": ("first", "second")},
        client_address="127.0.0.1:53124",
    )
    assert got == [
        {"origin": "web", "multi": "first;second", "bare": "web", "client.address": "127.0.0.1"},
        {"origin": "kept", "multi": "first;second", "bare": "web", "client.address": "127.0.0.1"},
    ]


@pytest.mark.parametrize(
    ("address", "ip"),
    [("10.1.2.3", "10.1.2.3"), ("ipv4:10.1.2.3:4317", "10.1.2.3"), ("[::1]:4318", "::1"), ("ipv6:[::1]:4317", "::1"), ("::1", "::1")],
)
async def test_client_address_forms(address: str, ip: str) -> None:
    got = await run_items(
        [{"key": "ip", "from_context": "client.address", "action": "insert"}], Signal.LOGS, [{}], client_address=address
    )
    assert got == [{"ip": ip}]


async def test_from_context_without_value_does_nothing() -> None:
    got = await run_items(
        [
            {"key": "ip", "from_context": "client.address", "action": "insert"},
            {"key": "tenant", "from_context": "metadata.tenant", "action": "upsert"},
        ],
        Signal.TRACES,
        [{"tenant": "old"}],
    )
    assert got == [{"tenant": "old"}]


# --- what travels on -------------------------------------------------------------------------


async def test_ids_and_other_fields_are_untouched() -> None:
    message = request(Signal.TRACES, [{"a": 1}, {"b": 2}])
    out = await process(
        {"actions": [{"key": "a", "action": "delete"}, {"key": "new", "value": "x", "action": "insert"}]}, Signal.TRACES, message
    )
    before = message.resource_spans[0].scope_spans[0]  # type: ignore[union-attr]
    after = out.message.resource_spans[0].scope_spans[0]  # type: ignore[union-attr]
    for old, new in zip(before.spans, after.spans, strict=True):
        assert (new.trace_id, new.span_id, new.name) == (old.trace_id, old.span_id, old.name)
        del old.attributes[:]
        del new.attributes[:]
        assert old == new
    assert out.message.resource_spans[0].resource == message.resource_spans[0].resource  # type: ignore[union-attr]


async def test_unchanged_request_keeps_its_bytes() -> None:
    message = request(Signal.TRACES, [{"a": 1}, {"b": 2}])
    raw = message.SerializeToString()
    # "password" appears nowhere in the request: the action is left out without a scan.
    out = await process({"actions": [{"key": "password", "action": "delete"}]}, Signal.TRACES, message)
    assert out.has_raw and out.to_bytes() == raw
    # "a" is in the bytes but no span has "b" and "a" at once: scanned, nothing changed.
    out = await process({"actions": [{"key": "a", "from_attribute": "b", "action": "update"}]}, Signal.TRACES, message)
    assert out.has_raw and out.to_bytes() == raw
    out = await process({"actions": [{"key": "a", "action": "delete"}]}, Signal.TRACES, message)
    assert not out.has_raw
    assert item_attrs(Signal.TRACES, out.message) == [{}, {"b": 2}]
    assert item_attrs(Signal.TRACES, Payload.from_bytes(Signal.TRACES, out.to_bytes()).message) == [{}, {"b": 2}]


async def test_key_made_by_an_earlier_action_is_not_ruled_out() -> None:
    # "operation" is not in the request's bytes, but the first action creates it.
    actions = [
        {"key": "operation", "value": "default", "action": "insert"},
        {"key": "svc.operation", "from_attribute": "operation", "action": "upsert"},
        {"key": "svc.operation", "pattern": r"^(?P<first>\w)", "action": "extract"},
    ]
    got = await run_items(actions, Signal.TRACES, [{}])
    assert got == [{"operation": "default", "svc.operation": "default", "first": "d"}]


async def test_self_telemetry_counts_items_in_and_out() -> None:
    telemetry = Telemetry()
    await process(
        {"actions": [{"key": "a", "value": 1, "action": "upsert"}]},
        Signal.LOGS,
        request(Signal.LOGS, [{}, {}, {}]),
        telemetry=telemetry,
    )
    labels = {"processor": "attributes/test", "otel_signal": "logs"}
    assert telemetry.registry.get_sample_value("otelcol_processor_incoming_items_total", labels) == 3
    assert telemetry.registry.get_sample_value("otelcol_processor_outgoing_items_total", labels) == 3


async def test_next_consumer_error_reaches_the_caller() -> None:
    class Refuses:
        mutates_data = False

        async def consume(self, payload: Payload) -> None:
            raise PermanentError("no thanks")

    cfg = attributes.AttributesConfig.model_validate({"actions": [{"key": "a", "value": 1, "action": "insert"}]})
    proc = attributes.factory.create(settings=settings("attributes"), config=cfg, signal=Signal.TRACES, next_consumer=Refuses())
    assert proc.mutates_data
    with pytest.raises(PermanentError):
        await proc.consume(payload_of(request(Signal.TRACES, [{}]), Signal.TRACES))


async def test_every_metric_type_has_its_points_processed() -> None:
    message = ExportMetricsServiceRequest()
    sm = message.resource_metrics.add().scope_metrics.add()
    sm.metrics.add(name="g").gauge.data_points.add(as_double=1.0)
    sm.metrics.add(name="s").sum.data_points.add(as_int=1)
    sm.metrics.add(name="h").histogram.data_points.add(count=1)
    sm.metrics.add(name="e").exponential_histogram.data_points.add(count=1)
    sm.metrics.add(name="q").summary.data_points.add(count=1)
    sm.metrics.add(name="empty")
    out = await process({"actions": [{"key": "k", "value": "v", "action": "insert"}]}, Signal.METRICS, message)
    assert item_attrs(Signal.METRICS, out.message) == [{"k": "v"}] * 5
    assert out.items == 5


# --- requests from the OpenTelemetry SDK -----------------------------------------------------


async def test_sdk_spans_logs_and_metrics() -> None:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    resource = Resource.create({"service.name": "checkout"})
    actions = [
        {"key": "user.email", "action": "hash"},
        {"key": "http.status_code", "action": "convert", "converted_type": "int"},
        {"key": "deployment.environment", "value": "test", "action": "insert"},
    ]
    expected = {
        "user.email": sha256_hex(b"a@example.com"),
        "http.status_code": 503,
        "deployment.environment": "test",
    }
    sdk_attrs = {"user.email": "a@example.com", "http.status_code": "503"}

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    with tracer_provider.get_tracer("t").start_as_current_span("checkout", attributes=sdk_attrs):
        pass
    traces = encode_spans(spans.get_finished_spans())
    out = await process({"actions": actions}, Signal.TRACES, traces)
    assert typed(item_attrs(Signal.TRACES, out.message)) == typed([expected])
    span = out.message.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[union-attr]
    assert span.trace_id == traces.resource_spans[0].scope_spans[0].spans[0].trace_id

    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    logger_provider.get_logger("l").emit(body="payment failed", attributes=sdk_attrs)
    out = await process({"actions": actions}, Signal.LOGS, encode_logs(logs.get_finished_logs()))
    assert typed(item_attrs(Signal.LOGS, out.message)) == typed([expected])

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter_provider.get_meter("m").create_counter("requests").add(3, attributes=sdk_attrs)
    metrics_data = reader.get_metrics_data()
    assert metrics_data is not None
    out = await process({"actions": actions}, Signal.METRICS, encode_metrics(metrics_data))
    assert typed(item_attrs(Signal.METRICS, out.message)) == typed([expected])
