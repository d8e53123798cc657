"""``include``/``exclude``: which spans, log records or metrics a processor works on.

The config is the stock collector's ``MatchProperties`` (``internal/filter/filterconfig``):
``match_type`` (``strict`` or ``regexp``), ``services``, ``span_names``, ``span_kinds``,
``log_bodies``, ``log_severity_texts``, ``log_severity_number``, ``metric_names``,
``attributes``, ``resources`` and ``libraries``. Every property given must match for a
properties block to match; a list property matches when any of its entries does.
An item is processed when it matches ``include`` (if given) and does not match ``exclude``
(if given).

Matching is split by level so the per-item work is only what must be per item: service and
resource checks run once per resource, library checks once per scope, and
:meth:`ItemFilter.plan` hands the processor, per scope, either a constant (all or none of
the items) or one predicate for the items.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import Field, PrivateAttr, field_validator, model_validator

from collector.configtypes import ComponentConfig
from collector.pdata import Signal
from processors._attraction import anyvalue_from_raw, compile_pattern, format_float_fixed, value_as_string

_SPAN_KINDS = tuple(Span.SpanKind.Name(v) for v in Span.SpanKind.values())
_SPAN_KIND_NAMES = {v: Span.SpanKind.Name(v) for v in Span.SpanKind.values()}
_STANDARD_SPAN_KINDS = tuple(k for k in _SPAN_KINDS if k != "SPAN_KIND_UNSPECIFIED")
_NIL_SERVICE_NAME = "<nil-service-name>"


def _severity_number(value: Any) -> Any:
    # The stock config takes the number; the OTLP names (INFO, WARN2...) are accepted too.
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        name = value.strip().upper()
        try:
            return SeverityNumber.Value(name if name.startswith("SEVERITY_NUMBER_") else "SEVERITY_NUMBER_" + name)
        except ValueError:
            raise ValueError(f"unknown severity {value!r} (use a number or a name such as INFO or WARN)") from None
    return value


def _none_as_empty(value: Any) -> Any:
    # ``services:`` with nothing after it is null in YAML; the stock decoder takes it as empty.
    return [] if value is None else value


class RegexpOptions(ComponentConfig):
    """``regexp``: caching of regexp match results."""

    cacheenabled: bool = False
    cachemaxnumentries: int = Field(0, ge=0)


class AttributeMatch(ComponentConfig):
    """One ``attributes``/``resources`` entry: the key must exist, with ``value`` if given."""

    key: str
    value: Any = None

    @field_validator("key")
    @classmethod
    def _key_not_empty(cls, key: str) -> str:
        if not key:
            raise ValueError("can't have empty key in the list of attributes")
        return key


class LibraryMatch(ComponentConfig):
    """One ``libraries`` entry: the instrumentation scope name, and version if given."""

    name: str
    version: str | None = None


class SeverityNumberMatch(ComponentConfig):
    """``log_severity_number``: the lowest severity number that matches."""

    min: int = Field(0, ge=0, le=24)
    match_undefined: bool = False

    @field_validator("min", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return _severity_number(value)


class MatchProperties(ComponentConfig):
    """One ``include`` or ``exclude`` block, with the stock collector's keys."""

    match_type: str = ""
    regexp: RegexpOptions | None = None
    services: list[str] = []
    span_names: list[str] = []
    span_kinds: list[str] = []
    log_bodies: list[str] = []
    log_severity_texts: list[str] = []
    log_severity_number: SeverityNumberMatch | None = None
    metric_names: list[str] = []
    attributes: list[AttributeMatch] = []
    resources: list[AttributeMatch] = []
    libraries: list[LibraryMatch] = []

    _parts: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator(
        "services", "span_names", "span_kinds", "log_bodies", "log_severity_texts", "metric_names",
        "attributes", "resources", "libraries", mode="before",
    )
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return _none_as_empty(value)

    @model_validator(mode="after")
    def _check(self) -> MatchProperties:
        needs_type = bool(
            self.services or self.span_names or self.span_kinds or self.log_bodies or self.log_severity_texts
            or self.metric_names or self.libraries
            or any(a.value is not None for a in (*self.attributes, *self.resources))
        )
        if self.match_type not in ("strict", "regexp") and (needs_type or self.match_type):
            raise ValueError(f"unrecognized match_type: {self.match_type!r}, valid types are: regexp, strict")
        # Compile everything once here, so a bad pattern or value is a config error.
        self._parts = _compile_properties(self)
        return self


# --- string sets -----------------------------------------------------------------------------


class StringSet:
    """A list of strings or patterns; ``matches`` is true when any entry matches.

    ``strict`` compares exactly; ``regexp`` searches (unanchored, as Go's ``MatchString``).
    """

    def __init__(self, items: Sequence[str], match_type: str, options: RegexpOptions | None = None) -> None:
        self._exact: frozenset[str] | None = None
        self._patterns: list[re.Pattern[str]] = []
        self._cache: OrderedDict[str, bool] | None = None
        self._cache_max = 0
        if match_type == "strict":
            self._exact = frozenset(items)
            return
        for item in dict.fromkeys(items):
            try:
                self._patterns.append(compile_pattern(item))
            except ValueError as exc:
                raise ValueError(f"invalid regexp {item!r}: {exc}") from None
        if options is not None and options.cacheenabled:
            self._cache = OrderedDict()
            self._cache_max = options.cachemaxnumentries  # 0: unbounded, as in the stock

    def matches(self, text: str) -> bool:
        """Whether ``text`` matches any entry."""
        if self._exact is not None:
            return text in self._exact
        cache = self._cache
        if cache is not None:
            hit = cache.get(text)
            if hit is not None:
                cache.move_to_end(text)
                return hit
        result = any(p.search(text) for p in self._patterns)
        if cache is not None:
            cache[text] = result
            if self._cache_max and len(cache) > self._cache_max:
                cache.popitem(last=False)
        return result


# --- attribute matching ----------------------------------------------------------------------


def _value_text(value: AnyValue) -> str | None:
    # The text a regexp is matched against (the stock's attributeStringValue).
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return format_float_fixed(value.double_value)
    return None


def values_equal(a: AnyValue, b: AnyValue) -> bool:
    """Same type and same value; maps compare regardless of key order."""
    kind = a.WhichOneof("value")
    if kind != b.WhichOneof("value"):
        return False
    if kind == "array_value":
        xs, ys = a.array_value.values, b.array_value.values
        return len(xs) == len(ys) and all(values_equal(x, y) for x, y in zip(xs, ys, strict=True))
    if kind == "kvlist_value":
        xa = {kv.key: kv.value for kv in a.kvlist_value.values}
        xb = {kv.key: kv.value for kv in b.kvlist_value.values}
        return xa.keys() == xb.keys() and all(values_equal(v, xb[k]) for k, v in xa.items())
    if kind is None:
        return True
    return bool(getattr(a, kind) == getattr(b, kind))


def _first_value(attrs: Sequence[KeyValue], key: str) -> AnyValue | None:
    for kv in attrs:
        if kv.key == key:
            return kv.value
    return None


@dataclass(frozen=True)
class _AttrCheck:
    key: str
    exact: AnyValue | None
    pattern: StringSet | None


def _attr_checks(entries: Sequence[AttributeMatch], match_type: str, options: RegexpOptions | None) -> list[_AttrCheck]:
    checks = []
    for entry in entries:
        exact = pattern = None
        if entry.value is not None:
            value = anyvalue_from_raw(entry.value)
            if match_type == "regexp":
                if value.WhichOneof("value") != "string_value":
                    raise ValueError(f"match_type=regexp for {entry.key!r} only supports a string value")
                pattern = StringSet([value.string_value], "regexp", options)
            else:
                exact = value
        checks.append(_AttrCheck(entry.key, exact, pattern))
    return checks


def _attributes_matcher(checks: list[_AttrCheck]) -> Callable[[Sequence[KeyValue]], bool]:
    """Every check must hold: the key present, and its value equal or matching."""

    def match(attrs: Sequence[KeyValue]) -> bool:
        if not attrs:
            return False
        for check in checks:
            value = _first_value(attrs, check.key)
            if value is None:
                return False
            if check.pattern is not None:
                text = _value_text(value)
                if text is None or not check.pattern.matches(text):
                    return False
            elif check.exact is not None and not values_equal(check.exact, value):
                return False
        return True

    return match


# --- compiled properties ---------------------------------------------------------------------


@dataclass
class _Compiled:
    """One properties block, split by the level each check works at."""

    resource: list[Callable[[Resource], bool]]
    scope: list[Callable[[InstrumentationScope], bool]]
    item: list[Callable[[Any], bool]]

    def resource_ok(self, resource: Resource) -> bool:
        return all(check(resource) for check in self.resource)

    def scope_ok(self, scope: InstrumentationScope) -> bool:
        return all(check(scope) for check in self.scope)

    def item_predicate(self) -> Callable[[Any], bool] | None:
        checks = self.item
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda item: all(check(item) for check in checks)


def _compile_properties(mp: MatchProperties) -> dict[str, Any]:
    """Every matcher a block can need, whatever the signal (built once, checked once)."""
    opts, mt = mp.regexp, mp.match_type
    out: dict[str, Any] = {}
    for name in ("services", "span_names", "span_kinds", "log_bodies", "log_severity_texts", "metric_names"):
        items = getattr(mp, name)
        if items:
            try:
                out[name] = StringSet(items, mt, opts)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    for name in ("attributes", "resources"):
        entries = getattr(mp, name)
        if entries:
            try:
                out[name] = _attr_checks(entries, mt, opts)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
    libraries = []
    for lib in mp.libraries:
        try:
            version = None if lib.version is None else StringSet([lib.version], mt, opts)
            libraries.append((StringSet([lib.name], mt, opts), version))
        except ValueError as exc:
            raise ValueError(f"libraries: {exc}") from None
    if libraries:
        out["libraries"] = libraries
    return out


_SPAN_ONLY = ("services", "span_names", "span_kinds")
_LOG_ONLY = ("log_bodies", "log_severity_texts", "log_severity_number")


def validate_for(mp: MatchProperties, signal: Signal) -> None:
    """The stock's per-signal checks (``ValidateForSpans``/``Logs``/``Metrics``): ``ValueError``."""
    given = {name for name in MatchProperties.model_fields if name not in ("match_type", "regexp") and getattr(mp, name)}
    if signal is Signal.TRACES:
        for name in (*_LOG_ONLY, "metric_names"):
            if name in given:
                raise ValueError(f"{name} should not be specified for trace spans")
        if not given:
            raise ValueError(
                'at least one of "services", "span_names", "span_kinds", "attributes", "libraries" or "resources" '
                "must be specified"
            )
        if mp.match_type == "strict":
            for kind in mp.span_kinds:
                if kind not in _STANDARD_SPAN_KINDS:
                    raise ValueError(
                        "span_kinds string must match one of the standard span kinds when match_type=strict: "
                        + ", ".join(sorted(_STANDARD_SPAN_KINDS))
                    )
    elif signal is Signal.LOGS:
        invalid = [n for n in (*_SPAN_ONLY, "metric_names") if n in given]
        if invalid:
            raise ValueError(f"{', '.join(invalid)} are not valid for log records")
        if not given:
            raise ValueError(
                'at least one of "attributes", "libraries", "resources", "log_bodies", "log_severity_texts" or '
                '"log_severity_number" must be specified'
            )
    else:
        invalid = [n for n in (*_SPAN_ONLY, *_LOG_ONLY, "attributes", "libraries") if n in given]
        if invalid:
            raise ValueError(f"{', '.join(invalid)} are not valid for metrics")
        if not given:
            raise ValueError('at least one of "metric_names" or "resources" must be specified')


def _service_check(names: StringSet) -> Callable[[Resource], bool]:
    def check(resource: Resource) -> bool:
        value = _first_value(resource.attributes, "service.name")
        return names.matches(_NIL_SERVICE_NAME if value is None else value_as_string(value))

    return check


def _libraries_check(libraries: list[tuple[StringSet, StringSet | None]]) -> Callable[[InstrumentationScope], bool]:
    def check(scope: InstrumentationScope) -> bool:
        return any(
            name.matches(scope.name) and (version is None or version.matches(scope.version))
            for name, version in libraries
        )

    return check


def _severity_check(sev: SeverityNumberMatch) -> Callable[[LogRecord], bool]:
    lowest, undefined = sev.min, sev.match_undefined

    def check(record: LogRecord) -> bool:
        number = record.severity_number
        return undefined if number == 0 else number >= lowest

    return check


def compile_for(mp: MatchProperties, signal: Signal) -> _Compiled:
    """The checks of one block for one signal (validated with :func:`validate_for` first)."""
    parts = mp._parts
    resource: list[Callable[[Resource], bool]] = []
    scope: list[Callable[[InstrumentationScope], bool]] = []
    item: list[Callable[[Any], bool]] = []
    if signal is Signal.METRICS:
        # As in the stock collector, only metric_names select metrics: ``resources`` passes
        # validation but is not used for metrics.
        if "metric_names" in parts:
            names: StringSet = parts["metric_names"]
            item.append(lambda metric: names.matches(metric.name))
        return _Compiled(resource, scope, item)
    if "services" in parts:
        resource.append(_service_check(parts["services"]))
    if "resources" in parts:
        match_resource = _attributes_matcher(parts["resources"])
        resource.append(lambda res: match_resource(res.attributes))
    if "libraries" in parts:
        scope.append(_libraries_check(parts["libraries"]))
    if signal is Signal.TRACES:
        if "span_names" in parts:
            span_names: StringSet = parts["span_names"]
            item.append(lambda span: span_names.matches(span.name))
        if "span_kinds" in parts:
            kinds: StringSet = parts["span_kinds"]
            item.append(lambda span: kinds.matches(_SPAN_KIND_NAMES.get(span.kind, "")))
    else:
        if "log_bodies" in parts:
            bodies: StringSet = parts["log_bodies"]
            item.append(lambda record: bodies.matches(value_as_string(record.body)))
        if "log_severity_texts" in parts:
            texts: StringSet = parts["log_severity_texts"]
            item.append(lambda record: texts.matches(record.severity_text))
        if mp.log_severity_number is not None:
            item.append(_severity_check(mp.log_severity_number))
    if "attributes" in parts:
        match_attrs = _attributes_matcher(parts["attributes"])
        item.append(lambda it: match_attrs(it.attributes))
    return _Compiled(resource, scope, item)


# What ItemFilter.plan gives for one scope: all items, none, or those the predicate accepts.
ScopePlan = bool | Callable[[Any], bool]


@dataclass(frozen=True)
class ResourcePlan:
    """The resource-level outcome: whether ``exclude`` can still match below it."""

    exclude_possible: bool


class ItemFilter:
    """``include`` and ``exclude`` compiled for one signal."""

    def __init__(self, include: MatchProperties | None, exclude: MatchProperties | None, signal: Signal) -> None:
        self.include = compile_for(include, signal) if include is not None else None
        self.exclude = compile_for(exclude, signal) if exclude is not None else None

    def for_resource(self, resource: Resource) -> ResourcePlan | None:
        """``None`` when nothing under this resource is to be processed."""
        if self.include is not None and not self.include.resource_ok(resource):
            return None
        return ResourcePlan(self.exclude is not None and self.exclude.resource_ok(resource))

    def plan(self, rplan: ResourcePlan, scope: InstrumentationScope) -> ScopePlan:
        """For one scope: ``True`` (every item), ``False`` (none) or a predicate per item."""
        inc, exc = self.include, self.exclude
        if inc is not None and not inc.scope_ok(scope):
            return False
        inc_item = inc.item_predicate() if inc is not None else None
        exc_item = None
        if rplan.exclude_possible and exc is not None and exc.scope_ok(scope):
            exc_item = exc.item_predicate()
            if exc_item is None:
                return False  # exclude matches every item of this scope
        if exc_item is None:
            return True if inc_item is None else inc_item
        if inc_item is None:
            excluded = exc_item
            return lambda item: not excluded(item)
        included = inc_item
        excluded = exc_item
        return lambda item: included(item) and not excluded(item)


def build_filter(
    include: MatchProperties | None,
    exclude: MatchProperties | None,
    signal: Signal,
    logger: logging.Logger | None = None,
) -> ItemFilter | None:
    """Validate both blocks for ``signal`` and compile them; ``None`` when neither is given.

    Raises ``ValueError`` prefixed with ``include:`` or ``exclude:``.
    """
    if include is None and exclude is None:
        return None
    for label, mp in (("include", include), ("exclude", exclude)):
        if mp is None:
            continue
        try:
            validate_for(mp, signal)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
        if signal is Signal.METRICS and mp.resources and logger is not None:
            logger.warning("%s.resources has no effect on metrics (as in the stock collector); only metric_names select metrics", label)
    return ItemFilter(include, exclude, signal)

