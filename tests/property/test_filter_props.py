"""Properties of the filter processor on generated OTLP requests.

Whatever the request and the conditions: the result is what a direct evaluation of the
conditions says (with or without the request's bytes for the prefilter), no emptied scope or
resource is left behind, the kept items are byte-for-byte the ones received (ids intact), the
item count is right, and the request still round-trips through protobuf.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal, count_items
from collector.telemetry import Telemetry
from processors.filter import FilterConfig, factory
from tests.support.components import Sink
from tests.unit.test_ottl_compiler import attrs

KEYS = ["k", "container.name", "n"]
STRINGS = ["a", "b", "app_container_1", "GET /x", "é"]
values = st.one_of(st.sampled_from(STRINGS), st.integers(-3, 3), st.booleans(), st.sampled_from([0.5, -1.5, 2.0]))
attributes = st.dictionaries(st.sampled_from(KEYS), values, max_size=3)
names = st.sampled_from(STRINGS)
spans = st.fixed_dictionaries(
    {
        "name": names,
        "attrs": attributes,
        "events": st.lists(names, max_size=3),
        "trace_id": st.binary(min_size=16, max_size=16),
        "span_id": st.binary(min_size=8, max_size=8),
    }
)
layouts = st.lists(st.tuples(attributes, st.lists(st.lists(spans, max_size=4), max_size=3)), max_size=3)


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# (condition, context when listed under traces.span/spanevent, context it infers by itself,
#  reference predicate on (item, resource attributes))
Condition = tuple[str, str, str, Callable[[Any, dict[str, Any]], bool]]
SPAN_CONDITIONS: list[Condition] = [
    ('name == "a"', "span", "span", lambda sp, r: sp["name"] == "a"),
    ('attributes["container.name"] == "app_container_1"', "span", "span", lambda sp, r: sp["attrs"].get("container.name") == "app_container_1"),
    ('attributes["n"] != "b"', "span", "span", lambda sp, r: sp["attrs"].get("n") != "b"),
    ('attributes["k"] > 0', "span", "span", lambda sp, r: number(sp["attrs"].get("k")) and sp["attrs"]["k"] > 0),
    ('attributes["k"] == true', "span", "span", lambda sp, r: sp["attrs"].get("k") is True),
    ('resource.attributes["k"] == "a"', "span", "resource", lambda sp, r: r.get("k") == "a"),
    ('resource.attributes["n"] == "b" and name == "é"', "span", "span", lambda sp, r: r.get("n") == "b" and sp["name"] == "é"),
    ('IsMatch(name, "^G")', "span", "span", lambda sp, r: sp["name"].startswith("G")),
    ('attributes["n"] == nil', "span", "span", lambda sp, r: "n" not in sp["attrs"]),
]
EVENT_CONDITIONS: list[Condition] = [
    ('name == "b"', "spanevent", "spanevent", lambda ev, r: ev == "b"),
    ('resource.attributes["container.name"] == "app_container_1"', "spanevent", "resource", lambda ev, r: r.get("container.name") == "app_container_1"),
]


def build(layout: list[Any]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for resource_attrs, scopes in layout:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(attrs(resource_attrs))
        for i, scope in enumerate(scopes):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{i}"
            for sp in scope:
                span = ss.spans.add(name=sp["name"], trace_id=sp["trace_id"], span_id=sp["span_id"])
                span.attributes.extend(attrs(sp["attrs"]))
                for ev in sp["events"]:
                    span.events.add(name=ev)
    return req


def expected(layout: list[Any], conditions: list[tuple[str, Callable[[Any, dict[str, Any]], bool]]]) -> list[Any]:
    """What the stock processor keeps, from (context, predicate) pairs."""
    by_context: dict[str, list[Callable[[Any, dict[str, Any]], bool]]] = {}
    for context, ref in conditions:
        by_context.setdefault(context, []).append(ref)
    # Emptied (or empty) scopes and resources go only when a deeper-than-resource context filters.
    prune = any(context != "resource" for context, _ in conditions)
    out = []
    for resource_attrs, scopes in layout:
        if any(ref(None, resource_attrs) for ref in by_context.get("resource", [])):
            continue
        kept_scopes = []
        for scope in scopes:
            kept = []
            for sp in scope:
                if any(ref(sp, resource_attrs) for ref in by_context.get("span", [])):
                    continue
                events = [ev for ev in sp["events"] if not any(ref(ev, resource_attrs) for ref in by_context.get("spanevent", []))]
                kept.append((sp["span_id"], sp["name"], events))
            if kept or not prune:
                kept_scopes.append(kept)
        if kept_scopes or not prune:
            out.append(kept_scopes)
    return out


def observed(message: ExportTraceServiceRequest) -> list[Any]:
    return [
        [[(sp.span_id, sp.name, [e.name for e in sp.events]) for sp in ss.spans] for ss in rs.scope_spans]
        for rs in message.resource_spans
    ]


def run(config: dict[str, Any], signal: Signal, payload: Payload) -> Payload | None:
    sink = Sink()
    settings_ = CreateSettings(ComponentID("filter", "p"), Kind.PROCESSOR, Telemetry(), logging.getLogger("test.filter.props"))
    proc = factory.create(settings=settings_, config=FilterConfig.model_validate(config), signal=signal, next_consumer=sink)
    asyncio.run(proc.consume(payload))
    return sink.got[0] if sink.got else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=layouts,
    span_conds=st.lists(st.sampled_from(SPAN_CONDITIONS), max_size=3, unique=True),
    event_conds=st.lists(st.sampled_from(EVENT_CONDITIONS), max_size=2, unique=True),
    inferred=st.booleans(),
)
def test_traces_filtering_is_exact_and_leaves_wellformed_otlp(layout: list[Any], span_conds: list[Any], event_conds: list[Any], inferred: bool) -> None:
    if not span_conds and not event_conds:
        event_conds = [EVENT_CONDITIONS[0]]
    if inferred:
        config: dict[str, Any] = {"trace_conditions": [_prefix(text, ctx) for text, ctx, _, _ in span_conds + event_conds]}
        want = expected(layout, [(inferred_ctx, ref) for _, _, inferred_ctx, ref in span_conds + event_conds])
    else:
        config = {"traces": {"span": [t for t, _, _, _ in span_conds] or None, "spanevent": [t for t, _, _, _ in event_conds] or None}}
        want = expected(layout, [(ctx, ref) for _, ctx, _, ref in span_conds + event_conds])
    request = build(layout)
    raw = request.SerializeToString()
    original_spans = {sp.SerializeToString() for rs in request.resource_spans for ss in rs.scope_spans for sp in ss.spans}
    for payload in (Payload.from_bytes(Signal.TRACES, raw), Payload.from_message(Signal.TRACES, build(layout))):
        out = run(config, Signal.TRACES, payload)
        if not want:
            assert out is None
            continue
        assert out is not None
        message = out.message
        assert observed(message) == want  # type: ignore[arg-type]
        item_level = any(ctx != "resource" for ctx in (c[2] if inferred else c[1] for c in span_conds + event_conds))
        for rs in message.resource_spans:  # type: ignore[union-attr]
            assert rs.scope_spans or not item_level  # no emptied resource is left behind
            for ss in rs.scope_spans:
                assert ss.spans or not item_level  # nor an emptied scope
                for sp in ss.spans:
                    if not event_conds:
                        assert sp.SerializeToString() in original_spans  # untouched, ids included
                    assert len(sp.trace_id) == 16 and len(sp.span_id) == 8
        assert out.items == count_items(Signal.TRACES, message)
        again = ExportTraceServiceRequest.FromString(out.to_bytes())
        assert again == message


def _prefix(text: str, context: str) -> str:
    # The same conditions in the context-inferred style: bare paths get their context name.
    out = text
    for bare in ('attributes["', "name "):
        out = out.replace(bare, f"{context}.{bare}")
    return out.replace(f"resource.{context}.attributes", "resource.attributes").replace("IsMatch(name", f"IsMatch({context}.name")


points = st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b"])), max_size=4)
metric_layouts = st.lists(st.lists(st.tuples(st.sampled_from(["gauge", "sum", "none"]), points), max_size=4), max_size=3)


@settings(max_examples=100, deadline=None)
@given(layout=metric_layouts, threshold=st.integers(0, 3), route=st.sampled_from(["a", "b"]))
def test_metrics_no_empty_metric_scope_or_resource_remains(layout: list[Any], threshold: int, route: str) -> None:
    req = ExportMetricsServiceRequest()
    for scope in layout:
        sm = req.resource_metrics.add().scope_metrics.add()
        for kind, pts in scope:
            m = sm.metrics.add(name=kind)
            if kind == "none":
                continue
            getattr(m, kind).SetInParent()
            for v, r in pts:
                getattr(m, kind).data_points.add(as_int=v).attributes.extend(attrs({"route": r}))
    config = {"metrics": {"datapoint": [f"value_int < {threshold}", f'attributes["route"] == "{route}"']}}
    out = run(config, Signal.METRICS, Payload.from_bytes(Signal.METRICS, req.SerializeToString()))
    want = [
        [
            (kind, [] if kind == "none" else [v for v, r in pts if not (v < threshold or r == route)])
            for kind, pts in scope
            if kind == "none" or any(not (v < threshold or r == route) for v, r in pts)
        ]
        for scope in layout
    ]
    want = [scope for scope in want if scope]
    if not want:
        assert out is None
        return
    assert out is not None
    got = [[(m.name, _points(m)) for m in rm.scope_metrics[0].metrics] for rm in out.message.resource_metrics]  # type: ignore[union-attr]
    assert got == want
    assert out.items == count_items(Signal.METRICS, out.message)


def _points(metric: Any) -> list[int]:
    kind = metric.WhichOneof("data")
    return [dp.as_int for dp in getattr(metric, kind).data_points] if kind else []


@settings(max_examples=100, deadline=None)
@given(records=st.lists(st.lists(st.tuples(st.integers(0, 24), st.sampled_from(STRINGS)), max_size=5), max_size=4))
def test_logs_severity_and_body(records: list[list[tuple[int, str]]]) -> None:
    req = ExportLogsServiceRequest()
    for scope in records:
        sl = req.resource_logs.add().scope_logs.add()
        for severity, body in scope:
            sl.log_records.add(severity_number=severity).body.string_value = body  # type: ignore[arg-type]
    config = {"log_conditions": ["log.severity_number < SEVERITY_NUMBER_WARN", 'IsMatch(log.body, "^app_")']}
    out = run(config, Signal.LOGS, Payload.from_bytes(Signal.LOGS, req.SerializeToString()))
    want = [[(s, b) for s, b in scope if not (s < 13 or b.startswith("app_"))] for scope in records]
    want = [scope for scope in want if scope]
    if not want:
        assert out is None
        return
    assert out is not None
    got = [[(r.severity_number, r.body.string_value) for r in rl.scope_logs[0].log_records] for rl in out.message.resource_logs]  # type: ignore[union-attr]
    assert got == want
