"""OTTL contexts: which paths and enums each one offers, and the code that reads them.

Each signal is a hierarchy of levels - traces: resource, scope, span, spanevent; metrics:
resource, scope, metric, datapoint; logs: resource, scope, log - and a condition of one
context may read its own fields and those of the levels above it (``resource.*``,
``scope.*``, and ``span.*`` from a span event, ``metric.*`` from a data point).

The generated code names the entity of each level with a fixed variable: ``r``/``rs`` for the
resource and its ``Resource*`` container, ``s``/``ss`` for the scope and its ``Scope*``
container, then ``sp``/``ev`` (+ ``ei``, the event index), ``m``/``dp`` (+ ``mk``, the metric's
data kind) or ``lr``.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.ottl.ast import OTTLError, Path, Segment
from collector.ottl.expr import CodeGen, Expr
from collector.pdata import Signal

CONTEXTS: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: ("resource", "scope", "span", "spanevent"),
    Signal.METRICS: ("resource", "scope", "metric", "datapoint"),
    Signal.LOGS: ("resource", "scope", "log"),
}
ALIASES = {"instrumentation_scope": "scope"}
ALL_CONTEXT_NAMES = frozenset({"resource", "scope", "instrumentation_scope", "span", "spanevent", "metric", "datapoint", "log"})

ITEM_VARS = {Signal.TRACES: ("sp", "ev"), Signal.METRICS: ("m", "dp"), Signal.LOGS: ("lr",)}

_SPAN_ENUMS = {
    **{name: int(value) for name, value in Span.SpanKind.items()},
    **{name: int(value) for name, value in Status.StatusCode.items()},
}
_METRIC_ENUMS = {
    "METRIC_DATA_TYPE_NONE": 0,
    "METRIC_DATA_TYPE_GAUGE": 1,
    "METRIC_DATA_TYPE_SUM": 2,
    "METRIC_DATA_TYPE_HISTOGRAM": 3,
    "METRIC_DATA_TYPE_EXPONENTIAL_HISTOGRAM": 4,
    "METRIC_DATA_TYPE_SUMMARY": 5,
    **{name: int(value) for name, value in AggregationTemporality.items()},
    "FLAG_NONE": 0,
    "FLAG_NO_RECORDED_VALUE": 1,
}
_LOG_ENUMS = {name: int(value) for name, value in SeverityNumber.items()}

ENUMS: dict[str, dict[str, int]] = {
    "resource": {},
    "scope": {},
    "span": _SPAN_ENUMS,
    "spanevent": _SPAN_ENUMS,
    "metric": _METRIC_ENUMS,
    "datapoint": _METRIC_ENUMS,
    "log": _LOG_ENUMS,
}

METRIC_TYPE_NUMBERS = {None: 0, "gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}
SPAN_KIND_STRINGS = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
SPAN_KIND_NAMES = {int(v): n for n, v in Span.SpanKind.items()}


def level_of(signal: Signal, context: str) -> int:
    """The depth of ``context`` in ``signal`` (resource is 0)."""
    return CONTEXTS[signal].index(ALIASES.get(context, context))


class PathResolver:
    """Turns paths into code for one signal and context."""

    def __init__(self, signal: Signal, context: str, gen: CodeGen, require_prefix: bool) -> None:
        self.signal = signal
        self.context = ALIASES.get(context, context)
        self.level = level_of(signal, self.context)
        self.gen = gen
        self.require_prefix = require_prefix

    def path_context(self, path: Path) -> tuple[str, list[Segment]]:
        """The context a path reads and its segments after the context name."""
        first = path.segments[0]
        name = ALIASES.get(first.name, first.name)
        if first.name in ALL_CONTEXT_NAMES and not first.keys and len(path.segments) > 1:
            if name not in CONTEXTS[self.signal]:
                raise OTTLError(
                    f'path "{path.text}" reads the {name} context, which {self.signal.value} conditions do not have',
                    path.col,
                )
            return name, path.segments[1:]
        if self.require_prefix:
            names = ", ".join(CONTEXTS[self.signal])
            raise OTTLError(
                f'missing context name for path "{path.text}": it must start with one of {names} '
                "(or give the condition group an explicit `context`)",
                path.col,
            )
        return self.context, path.segments

    def resolve(self, path: Path) -> Expr:
        context, rest = self.path_context(path)
        level = CONTEXTS[self.signal].index(context)
        if level > self.level:
            raise OTTLError(f'path "{path.text}" is not available in the {self.context} context', path.col)
        handler: Callable[[Path, list[Segment], int], Expr | None] = getattr(self, "_" + context)
        expr = handler(path, rest, level)
        if expr is None:
            raise OTTLError(
                f'invalid path "{path.text}" for the {context} context (see docs/filter.md for the supported paths)',
                path.col,
            )
        return expr

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _plain(rest: list[Segment], *names: str) -> bool:
        return len(rest) == len(names) and all(s.name == n and not s.keys for s, n in zip(rest, names, strict=True))

    def _attributes(self, path: Path, seg: Segment, container: str, level: int) -> Expr:
        if not seg.keys:
            return Expr(f"_PMap({container})", "pmap", level)
        first = seg.keys[0]
        if not isinstance(first, str):
            raise OTTLError(f'"{path.text}": attributes are indexed with a string key', path.col)
        lookup = f"_attr({container}, {first!r})"
        if len(seg.keys) == 1:
            return Expr(lookup, "av", level, attr_key=(level, first))
        keys = self.gen.literal(tuple(seg.keys[1:]))
        return Expr(f"_index({lookup}, {keys})", "any", level, raises=True)

    def _common(self, path: Path, rest: list[Segment], var: str, level: int, ints: tuple[str, ...], strs: tuple[str, ...]) -> Expr | None:
        if not rest:
            return None
        head = rest[0]
        if head.name == "attributes" and len(rest) == 1:
            return self._attributes(path, head, f"{var}.attributes", level)
        if len(rest) != 1 or head.keys:
            return None
        if head.name in ints:
            return Expr(f"{var}.{head.name}", "int", level)
        if head.name in strs:
            return Expr(f"{var}.{head.name}", "str", level)
        return None

    def _ids(self, rest: list[Segment], var: str, level: int, fields: dict[str, tuple[str, str]]) -> Expr | None:
        head = rest[0]
        if head.name not in fields or head.keys:
            return None
        kind, zero = fields[head.name]
        raw = f"({var}.{head.name} or {zero})"
        if len(rest) == 1:
            return Expr(raw, kind, level)
        if self._plain(rest[1:], "string"):
            return Expr(f"{raw}.hex()", "str", level)
        return None

    # -- contexts --------------------------------------------------------------------------

    def _resource(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if self._plain(rest, "schema_url"):
            return Expr("rs.schema_url", "str", level)
        return self._common(path, rest, "r", level, ("dropped_attributes_count",), ())

    def _scope(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if self._plain(rest, "schema_url"):
            return Expr("ss.schema_url", "str", level)
        return self._common(path, rest, "s", level, ("dropped_attributes_count",), ("name", "version"))

    def _span(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if not rest:
            return None
        head = rest[0]
        ids = self._ids(rest, "sp", level, {"trace_id": ("tid", "_Z16"), "span_id": ("sid", "_Z8"), "parent_span_id": ("sid", "_Z8")})
        if ids is not None:
            return ids
        if head.name == "kind" and not head.keys:
            if len(rest) == 1:
                return Expr("sp.kind", "int", level)
            if self._plain(rest[1:], "string"):
                return Expr("_KIND_STR.get(sp.kind, '')", "str", level)
            if self._plain(rest[1:], "deprecated_string"):
                return Expr("_KIND_NAME.get(sp.kind, '')", "str", level)
            return None
        if head.name == "status" and not head.keys and len(rest) == 2 and not rest[1].keys:
            if rest[1].name == "code":
                return Expr("sp.status.code", "int", level)
            if rest[1].name == "message":
                return Expr("sp.status.message", "str", level)
            return None
        if head.name == "trace_state" and len(rest) == 1:
            if not head.keys:
                return Expr("sp.trace_state", "str", level)
            if len(head.keys) == 1 and isinstance(head.keys[0], str):
                return Expr(f"_ts_get(sp.trace_state, {head.keys[0]!r})", "any", level)
            raise OTTLError("trace_state takes exactly one string key", path.col)
        if head.name in ("events", "links") and len(rest) == 1 and not head.keys:
            return Expr(f"sp.{head.name}", head.name, level)
        return self._common(
            path,
            rest,
            "sp",
            level,
            ("start_time_unix_nano", "end_time_unix_nano", "dropped_attributes_count", "dropped_events_count", "dropped_links_count"),
            ("name",),
        )

    def _spanevent(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if self._plain(rest, "event_index"):
            return Expr("ei", "int", level)
        return self._common(path, rest, "ev", level, ("time_unix_nano", "dropped_attributes_count"), ("name",))

    def _metric(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if len(rest) != 1 or rest[0].keys:
            return None
        name = rest[0].name
        if name in ("name", "description", "unit"):
            return Expr(f"m.{name}", "str", level)
        if name == "type":
            return Expr("_MTYPE[mk]", "int", level)
        if name == "aggregation_temporality":
            return Expr("(getattr(m, mk).aggregation_temporality if mk in _TEMPORAL else 0)", "int", level)
        if name == "is_monotonic":
            return Expr("(mk == 'sum' and m.sum.is_monotonic)", "bool", level)
        if name == "data_points":
            return Expr("(getattr(m, mk).data_points if mk else ())", "data_points", level)
        return None

    def _datapoint(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if not rest:
            return None
        if rest[0].name == "attributes" and len(rest) == 1:
            return self._attributes(path, rest[0], "dp.attributes", level)
        if len(rest) != 1 or rest[0].keys:
            return None
        name = rest[0].name
        if name in ("start_time_unix_nano", "time_unix_nano", "flags"):
            return Expr(f"dp.{name}", "int", level)
        if name == "value_double":
            return Expr("(dp.as_double if mk in _NUMBER else None)", "any", level)
        if name == "value_int":
            return Expr("(dp.as_int if mk in _NUMBER else None)", "any", level)
        if name == "count":
            return Expr("(None if mk in _NUMBER else dp.count)", "any", level)
        if name == "sum":
            return Expr("(None if mk in _NUMBER else dp.sum)", "any", level)
        if name in ("scale", "zero_count"):
            return Expr(f"(dp.{name} if mk == 'exponential_histogram' else None)", "any", level)
        return None

    def _log(self, path: Path, rest: list[Segment], level: int) -> Expr | None:
        if not rest:
            return None
        head = rest[0]
        if head.name == "body":
            if len(rest) == 1 and not head.keys:
                return Expr("lr.body", "avb", level)
            if len(rest) == 1:
                return Expr(f"_index_body(lr.body, {self.gen.literal(tuple(head.keys))})", "any", level, raises=True)
            if not head.keys and self._plain(rest[1:], "string"):
                return Expr("_as_string(lr.body)", "str", level)
            return None
        ids = self._ids(rest, "lr", level, {"trace_id": ("tid", "_Z16"), "span_id": ("sid", "_Z8")})
        if ids is not None:
            return ids
        return self._common(
            path,
            rest,
            "lr",
            level,
            ("severity_number", "time_unix_nano", "observed_time_unix_nano", "flags", "dropped_attributes_count"),
            ("severity_text", "event_name"),
        )
