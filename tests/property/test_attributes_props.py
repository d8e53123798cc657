"""Properties of the attribute actions over arbitrary action lists and attribute sets.

Whatever the actions and the attributes, the processed request must stay well-formed OTLP:
it serializes and parses back to the same bytes, ids and item counts are untouched, no empty
key appears, a key present at most once stays so, and the actions agree with a plain
dict-based model of the stock semantics. Leaving actions out because their keys are absent
from the request's bytes must not change the outcome, and "nothing changed" must be true.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.pdata import ExportRequest, Payload, Signal, parse_request
from processors import attributes
from processors._attraction import ActionKeyValue, AttrProc, convert_value, hash_value
from tests.support.components import Sink
from tests.unit.test_attributes import request
from tests.unit.test_attributes import settings as create_settings

KEYS = ["a", "b", "user.id", "http.url", "x_y", "é", "a1", "first", "n"]
PATTERNS_KEY = ["^a", "b$", "user", ".*", r"\.", "^x_"]
EXTRACT_PATTERNS = [r"^(?P<first>\w+)", r"(?P<n>\d+)-(?P<a1>.*)", r"(?P<user_id>[^@]+)@(?P<x_y>.+)"]
METADATA = {"tenant": ("acme",), "multi": ("one", "two")}
CLIENT = "10.0.0.7:4317"

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["123", "-5", "1.5", "1e3", "abc@example.com", "12-rest", ""]),
    int64,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=8),
)
raw_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6
)
config_values = st.recursive(
    st.one_of(st.text(max_size=8), int64, st.floats(allow_nan=False), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)),
    max_leaves=4,
)
keys = st.sampled_from(KEYS)


def _anyvalue(raw: Any) -> AnyValue:
    # Built by hand rather than with the module under test.
    out = AnyValue()
    if isinstance(raw, bool):
        out.bool_value = raw
    elif isinstance(raw, int):
        out.int_value = raw
    elif isinstance(raw, float):
        out.double_value = raw
    elif isinstance(raw, str):
        out.string_value = raw
    elif isinstance(raw, bytes):
        out.bytes_value = raw
    elif isinstance(raw, list):
        out.array_value.SetInParent()
        for item in raw:
            out.array_value.values.append(_anyvalue(item))
    else:
        out.kvlist_value.SetInParent()
        for k, v in raw.items():
            out.kvlist_value.values.append(KeyValue(key=k, value=_anyvalue(v)))
    return out


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["insert", "update", "upsert", "delete", "hash", "extract", "convert"]))
    action: dict[str, Any] = {"action": kind}
    if kind in ("insert", "update", "upsert"):
        action["key"] = draw(keys)
        source = draw(st.sampled_from(["value", "from_attribute", "from_context", "default_only"]))
        if source == "value":
            action["value"] = draw(config_values)
        elif source == "from_attribute":
            action["from_attribute"] = draw(keys)
        elif source == "from_context":
            action["from_context"] = draw(st.sampled_from(["metadata.tenant", "metadata.multi", "metadata.none", "client.address"]))
        if source == "default_only" or draw(st.booleans()):
            action["default_value"] = draw(config_values)
    elif kind in ("delete", "hash"):
        use = draw(st.sampled_from(["key", "pattern", "both"]))
        if use != "pattern":
            action["key"] = draw(keys)
        if use != "key":
            action["pattern"] = draw(st.sampled_from(PATTERNS_KEY))
    elif kind == "extract":
        action["key"] = draw(keys)
        action["pattern"] = draw(st.sampled_from(EXTRACT_PATTERNS))
    else:
        action["key"] = draw(keys)
        action["converted_type"] = draw(st.sampled_from(["int", "double", "string"]))
    return action


action_lists = st.lists(actions(), min_size=1, max_size=6)
unique_attrs = st.dictionaries(keys, raw_values, max_size=6)
signals = st.sampled_from(list(Signal))


def _items(signal: Signal, message: ExportRequest) -> list[Any]:
    """Every attribute-bearing item: spans, log records, data points."""
    out: list[Any] = []
    if signal is Signal.TRACES:
        for rs in message.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                out.extend(ss.spans)
    elif signal is Signal.LOGS:
        for rl in message.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                out.extend(sl.log_records)
    else:
        for rm in message.resource_metrics:  # type: ignore[union-attr]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.extend(metric.gauge.data_points)
    return out


def _build(signal: Signal, item_attrs: list[list[tuple[str, Any]]]) -> ExportRequest:
    message = request(signal, [{} for _ in item_attrs])
    for item, attrs in zip(_items(signal, message), item_attrs, strict=True):
        for key, raw in attrs:
            item.attributes.append(KeyValue(key=key, value=_anyvalue(raw)))
    return message


def _run(config: dict[str, Any], signal: Signal, payload: Payload) -> Payload:
    cfg = attributes.AttributesConfig.model_validate(config)
    sink = Sink()
    proc = attributes.factory.create(settings=create_settings("attributes/p"), config=cfg, signal=signal, next_consumer=sink)
    asyncio.run(proc.consume(payload))
    return sink.got[0]


def _ids(signal: Signal, message: ExportRequest) -> list[tuple[bytes, ...]]:
    if signal is Signal.METRICS:
        return [(bytes(str(p.time_unix_nano), "ascii"),) for p in _items(signal, message)]
    return [(i.trace_id, i.span_id) for i in _items(signal, message)]


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(signal=signals, acts=action_lists, items=st.lists(unique_attrs, min_size=1, max_size=4))
def test_output_is_well_formed_otlp(signal: Signal, acts: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    message = _build(signal, [list(d.items()) for d in items])
    raw = message.SerializeToString()
    out = _run({"actions": acts}, signal, Payload.from_bytes(signal, raw, metadata=METADATA, client_address=CLIENT))
    data = out.to_bytes()
    parsed = parse_request(signal, data)  # checks the id lengths too
    assert parsed.SerializeToString() == data
    assert out.items == len(items)
    assert _ids(signal, parsed) == _ids(signal, message)
    for item in _items(signal, parsed):
        names = [kv.key for kv in item.attributes]
        assert "" not in names
        assert len(names) == len(set(names)), names


@PROPS
@given(
    signal=signals,
    acts=action_lists,
    items=st.lists(st.lists(st.tuples(keys, scalars), max_size=6), min_size=1, max_size=3),
)
def test_actions_never_add_a_key_that_is_present(
    signal: Signal, acts: list[dict[str, Any]], items: list[list[tuple[str, Any]]]
) -> None:
    message = _build(signal, items)
    out = _run({"actions": acts}, signal, Payload.from_bytes(signal, message.SerializeToString(), metadata=METADATA))
    for before, after in zip(_items(signal, message), _items(signal, out.message), strict=True):
        counts_before = Counter(kv.key for kv in before.attributes)
        for key, n in Counter(kv.key for kv in after.attributes).items():
            assert n <= max(counts_before[key], 1), (key, n, counts_before[key])


@PROPS
@given(signal=signals, acts=action_lists, items=st.lists(unique_attrs, min_size=1, max_size=3))
def test_leaving_out_actions_by_the_bytes_changes_nothing(
    signal: Signal, acts: list[dict[str, Any]], items: list[dict[str, Any]]
) -> None:
    message = _build(signal, [list(d.items()) for d in items])
    raw = message.SerializeToString()
    with_bytes = _run({"actions": acts}, signal, Payload.from_bytes(signal, raw, metadata=METADATA))
    without = _run({"actions": acts}, signal, Payload.from_message(signal, parse_request(signal, raw), metadata=METADATA))
    kept_bytes = with_bytes.has_raw
    assert with_bytes.to_bytes() == without.to_bytes()
    if kept_bytes:
        assert with_bytes.to_bytes() == raw


@PROPS
@given(acts=action_lists, attrs=st.lists(st.tuples(keys, scalars), max_size=8))
def test_no_change_reported_means_no_change(acts: list[dict[str, Any]], attrs: list[tuple[str, Any]]) -> None:
    span = Span()
    for key, raw in attrs:
        span.attributes.append(KeyValue(key=key, value=_anyvalue(raw)))
    before = span.SerializeToString()
    apply = AttrProc(ActionKeyValue.model_validate(a) for a in acts).bind(metadata=METADATA, client_address=CLIENT)
    # None: every action was left out (a context value that is missing, with no default).
    if apply is None or not apply(span.attributes):
        assert span.SerializeToString() == before


# --- a dict model of the stock semantics, for attribute lists without duplicate keys ----------


def _model(acts: list[dict[str, Any]], attrs: dict[str, AnyValue]) -> dict[str, AnyValue]:
    d = dict(attrs)
    for a in acts:
        kind = a["action"]
        key = a.get("key", "")
        regex = re.compile(a["pattern"]) if "pattern" in a else None
        if kind in ("insert", "update", "upsert"):
            default = _anyvalue(a["default_value"]) if "default_value" in a else None
            value: AnyValue | None
            if "value" in a and not (a["value"] == "" and default is not None):
                # (An empty value with a default_value is an unset ${ENV}: the default applies.)
                value = _anyvalue(a["value"])
            elif "from_attribute" in a:
                value = d.get(a["from_attribute"])
            elif "from_context" in a:
                ctx = a["from_context"]
                if ctx == "client.address":
                    value = AnyValue(string_value="10.0.0.7")
                else:
                    found = METADATA.get(ctx.removeprefix("metadata."))
                    value = AnyValue(string_value=";".join(found)) if found else None
            else:
                value = None
            value = value if value is not None else default
            if value is None:
                continue
            copy = AnyValue()
            copy.CopyFrom(value)
            if (kind == "insert" and key not in d) or (kind == "update" and key in d) or kind == "upsert":
                d[key] = copy
        elif kind == "delete":
            d = {k: v for k, v in d.items() if not (k == key or (regex is not None and regex.search(k)))}
        elif kind == "hash":
            for k, v in d.items():
                if k == key or (regex is not None and regex.search(k)):
                    d[k] = AnyValue(string_value=hash_value(v))
        elif kind == "extract":
            source = d.get(key)
            if source is not None and source.WhichOneof("value") == "string_value":
                assert regex is not None
                m = regex.search(source.string_value)
                if m:
                    for name in sorted(regex.groupindex, key=regex.groupindex.__getitem__):
                        d[name] = AnyValue(string_value=m.group(name) or "")
        elif key in d:
            converted = AnyValue()
            converted.CopyFrom(d[key])
            convert_value(converted, a["converted_type"])
            d[key] = converted
    return d


def _same(a: AnyValue, b: AnyValue) -> bool:
    if a.WhichOneof("value") == "double_value" and b.WhichOneof("value") == "double_value":
        x, y = a.double_value, b.double_value
        return (math.isnan(x) and math.isnan(y)) or x == y
    return a.SerializeToString() == b.SerializeToString()


@PROPS
@given(acts=action_lists, attrs=unique_attrs)
def test_agrees_with_a_dict_model(acts: list[dict[str, Any]], attrs: dict[str, Any]) -> None:
    span = Span()
    for key, raw in attrs.items():
        span.attributes.append(KeyValue(key=key, value=_anyvalue(raw)))
    expected = _model(acts, {k: _anyvalue(v) for k, v in attrs.items()})
    apply = AttrProc(ActionKeyValue.model_validate(a) for a in acts).bind(metadata=METADATA, client_address=CLIENT)
    if apply is not None:
        apply(span.attributes)
    got = [(kv.key, kv.value) for kv in span.attributes]
    assert [k for k, _ in got] == list(expected)
    for key, value in got:
        assert _same(value, expected[key]), (key, value, expected[key])
