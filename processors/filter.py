"""``filter``: drop spans, span events, metrics, data points and log records by OTTL condition.

The stock collector's ``filterprocessor`` with its OTTL configuration:

* ``traces: {resource, span, spanevent}``, ``metrics: {resource, metric, datapoint}`` and
  ``logs: {resource, log_record}`` lists, each condition running in that context;
* the newer ``trace_conditions``, ``metric_conditions`` and ``log_conditions`` lists, whose
  conditions name their context by path prefix (``span.name``, ``resource.attributes[..]``)
  - or, in the "advanced" style, groups ``{context, conditions, error_mode}``.

If any condition is true the item is dropped. A dropped resource or scope takes its items
with it; scopes left without items and resources left without scopes are removed; a span
whose events all drop stays, a metric whose data points all drop goes. When everything is
dropped nothing is passed on (the stock ``ErrSkipProcessingData``). ``error_mode`` decides
what a failing condition does: ``ignore`` (default) logs and treats it as false, ``silent``
only treats it as false, ``propagate`` refuses the request with a permanent error.

Every condition is compiled once, when the config is validated, into one generated Python
function per signal (:mod:`collector.ottl`). The legacy ``include``/``exclude`` matching of
the stock processor is not offered: such a config is refused with a pointer to OTTL.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collector.component import CreateSettings, Factory, Kind, ProcessorBase
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer, PermanentError
from collector.ottl import (
    CompiledCondition,
    ConditionFailed,
    OTTLError,
    Program,
    apply_plan,
    build_program,
    compile_condition,
    plan_is_empty,
)
from collector.ottl.contexts import CONTEXTS
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry

ErrorMode = Literal["ignore", "silent", "propagate"]

_LEGACY_HINT = (
    "the legacy include/exclude filters are not supported by AppGuard; "
    "write OTTL conditions instead (see docs/filter.md)"
)


def _as_list(value: Any) -> Any:
    # A single condition may be written as a plain string; null means none.
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return value


Conditions = list[str] | None


class TraceFilters(ComponentConfig):
    """``traces``: conditions in the resource, span and span event contexts."""

    resource: Conditions = None
    span: Conditions = None
    spanevent: Conditions = None
    include: Any = None
    exclude: Any = None

    _as_list = field_validator("resource", "span", "spanevent", mode="before")(_as_list)


class MetricFilters(ComponentConfig):
    """``metrics``: conditions in the resource, metric and data point contexts."""

    resource: Conditions = None
    metric: Conditions = None
    datapoint: Conditions = None
    include: Any = None
    exclude: Any = None
    regexp: Any = None

    _as_list = field_validator("resource", "metric", "datapoint", mode="before")(_as_list)


class LogFilters(ComponentConfig):
    """``logs``: conditions in the resource and log contexts."""

    resource: Conditions = None
    log_record: Conditions = None
    include: Any = None
    exclude: Any = None

    _as_list = field_validator("resource", "log_record", mode="before")(_as_list)


class ConditionGroup(ComponentConfig):
    """An "advanced" entry of ``*_conditions``: conditions sharing a context and error mode."""

    context: str | None = None
    conditions: list[str] = []
    error_mode: ErrorMode | None = None

    _as_list = field_validator("conditions", mode="before")(_as_list)

    @field_validator("context", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# Entries are plain conditions (the "basic" style) or groups; validated by hand so that errors
# read trace_conditions[0].error_mode rather than naming pydantic's union branches.
InferredConditions = list[Any] | None

# Where each signal's conditions live in the config: (section, key, context) for the
# context-per-list style, and the context-inferred list.
_EXPLICIT = {
    Signal.TRACES: (("traces", "resource", "resource"), ("traces", "span", "span"), ("traces", "spanevent", "spanevent")),
    Signal.METRICS: (("metrics", "resource", "resource"), ("metrics", "metric", "metric"), ("metrics", "datapoint", "datapoint")),
    Signal.LOGS: (("logs", "resource", "resource"), ("logs", "log_record", "log")),
}
_INFERRED = {Signal.TRACES: "trace_conditions", Signal.METRICS: "metric_conditions", Signal.LOGS: "log_conditions"}


def _error(loc: tuple[str, ...], message: str, value: Any) -> InitErrorDetails:
    # The message goes through a context value: conditions and regexps contain braces.
    return InitErrorDetails(type=PydanticCustomError("filter", "{error}", {"error": message}), loc=loc, input=value)


class FilterConfig(ComponentConfig):
    """The filter processor's settings; conditions are compiled when this is validated."""

    error_mode: ErrorMode = "ignore"
    traces: TraceFilters = Field(default_factory=TraceFilters)
    metrics: MetricFilters = Field(default_factory=MetricFilters)
    logs: LogFilters = Field(default_factory=LogFilters)
    trace_conditions: InferredConditions = None
    metric_conditions: InferredConditions = None
    log_conditions: InferredConditions = None
    spans: Any = None

    _programs: dict[Signal, Program] = PrivateAttr(default_factory=dict)
    _groups: dict[Signal, list[str | ConditionGroup]] = PrivateAttr(default_factory=dict)

    _as_list = field_validator("trace_conditions", "metric_conditions", "log_conditions", mode="before")(_as_list)

    def _explicit(self, signal: Signal) -> Iterator[tuple[tuple[str, ...], str, str, str | None]]:
        for section, key, context in _EXPLICIT[signal]:
            for i, text in enumerate(getattr(getattr(self, section), key) or []):
                yield (section, f"{key}[{i}]"), text, context, None

    def _inferred(self, signal: Signal) -> Iterator[tuple[tuple[str, ...], str, str | None, str | None]]:
        name = _INFERRED[signal]
        for i, entry in enumerate(self._groups.get(signal, [])):
            if isinstance(entry, str):
                yield (f"{name}[{i}]",), entry, None, None
                continue
            if entry.context is not None and entry.context not in CONTEXTS[signal]:
                continue  # reported once, at the group's `context`
            for j, text in enumerate(entry.conditions):
                yield (f"{name}[{i}]", f"conditions[{j}]"), text, entry.context, entry.error_mode

    def _structure_errors(self) -> list[InitErrorDetails]:
        errors = []
        legacy = [
            (("spans",), self.spans),
            (("traces", "include"), self.traces.include),
            (("traces", "exclude"), self.traces.exclude),
            (("metrics", "include"), self.metrics.include),
            (("metrics", "exclude"), self.metrics.exclude),
            (("metrics", "regexp"), self.metrics.regexp),
            (("logs", "include"), self.logs.include),
            (("logs", "exclude"), self.logs.exclude),
        ]
        for loc, value in legacy:
            if value is not None:
                errors.append(_error(loc, _LEGACY_HINT, {}))
        for signal, name in _INFERRED.items():
            raw = getattr(self, name)
            if raw is None:
                continue
            entries: list[str | ConditionGroup] = []
            for i, entry in enumerate(raw):
                if isinstance(entry, str):
                    entries.append(entry)
                elif isinstance(entry, dict):
                    try:
                        entries.append(ConditionGroup.model_validate(entry))
                    except ValidationError as exc:
                        for e in exc.errors():
                            message = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
                            errors.append(_error((f"{name}[{i}]", *map(str, e["loc"])), message, e.get("input")))
                else:
                    errors.append(_error((f"{name}[{i}]",), "expected a condition or a group with `conditions`", entry))
            self._groups[signal] = entries
            section = _EXPLICIT[signal][0][0]
            used = [f"{section}.{key}" for _, key, _ in _EXPLICIT[signal] if getattr(getattr(self, section), key) is not None]
            if used:
                errors.append(
                    _error((name,), f'cannot use the context-inferred "{name}" and {", ".join(used)} at the same time', {})
                )
            if len({isinstance(e, str) for e in entries}) > 1:
                errors.append(
                    _error(
                        (name,),
                        "configuring multiple configuration styles is not supported: use only plain conditions "
                        "or only groups with `conditions`",
                        {},
                    )
                )
            for i, entry in enumerate(entries):
                if isinstance(entry, ConditionGroup) and entry.context is not None and entry.context not in CONTEXTS[signal]:
                    errors.append(
                        _error((f"{name}[{i}]", "context"), f"unknown context for {signal.value} (use {', '.join(CONTEXTS[signal])})", entry.context)
                    )
        return errors

    @model_validator(mode="after")
    def _compile(self) -> FilterConfig:
        errors = self._structure_errors()
        programs: dict[Signal, Program] = {}
        for signal in Signal:
            compiled: list[CompiledCondition] = []
            entries = list(self._inferred(signal)) + list(self._explicit(signal))
            for loc, text, context, group_mode in entries:
                if not isinstance(text, str) or not text.strip():
                    errors.append(_error(loc, "condition cannot be empty", text))
                    continue
                try:
                    compiled.append(
                        compile_condition(text, signal, context, prefix=f"c{len(compiled)}_", error_mode=group_mode)
                    )
                except OTTLError as exc:
                    errors.append(_error(loc, f"invalid OTTL condition: {exc}", text))
            if not errors:
                programs[signal] = build_program(signal, compiled, self.error_mode)
        if errors:
            raise ValidationError.from_exception_data("FilterConfig", errors)
        self._programs = programs
        return self

    def program(self, signal: Signal) -> Program:
        """The compiled filter for ``signal`` (empty when no condition applies to it)."""
        return self._programs[signal]


_FILTERED_METRICS = {
    Signal.TRACES: ("otelcol_processor_filter_spans_filtered", "Number of spans dropped by the filter processor"),
    Signal.METRICS: ("otelcol_processor_filter_datapoints_filtered", "Number of metric data points dropped by the filter processor"),
    Signal.LOGS: ("otelcol_processor_filter_logs_filtered", "Number of logs dropped by the filter processor"),
}
_counters: weakref.WeakKeyDictionary[Telemetry, dict[Signal, Counter]] = weakref.WeakKeyDictionary()


def _filtered_counter(telemetry: Telemetry, signal: Signal) -> Counter:
    # One family per service registry, shared by every filter processor (label "filter").
    by_signal = _counters.setdefault(telemetry, {})
    if signal not in by_signal:
        name, help_text = _FILTERED_METRICS[signal]
        by_signal[signal] = Counter(name, help_text, ["filter"], registry=telemetry.registry)
    return by_signal[signal]


class _ErrorLog:
    """Collects condition errors during one request, for one log line per condition."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.counts: dict[int, int] = {}
        self.first: dict[int, BaseException] = {}

    def record(self, index: int, error: BaseException) -> None:
        self.counts[index] = self.counts.get(index, 0) + 1
        self.first.setdefault(index, error)

    def flush(self, logger: logging.Logger, processor: str) -> None:
        for index, count in self.counts.items():
            logger.warning(
                "%s: condition %r failed on %d item(s) and was treated as false: %s",
                processor,
                self.program.conditions[index].text,
                count,
                self.first[index],
            )


class FilterProcessor(ProcessorBase):
    """Drops the items matching any condition, then passes the rest on."""

    mutates_data = True

    def __init__(self, settings: CreateSettings, config: FilterConfig, signal: Signal, next_consumer: Consumer) -> None:
        super().__init__(settings, signal, next_consumer)
        self.program = config.program(signal)
        self._name = str(settings.id)
        self._telemetry = settings.telemetry.processor(self._name, signal)
        self._filtered = _filtered_counter(settings.telemetry, signal).labels(filter=self._name)

    async def consume(self, payload: Payload) -> None:
        """Drop what matches; pass the rest on, or nothing at all when nothing is left."""
        before = payload.items
        self._telemetry.incoming(before)
        program = self.program
        if program.empty:
            self._telemetry.outgoing(before)
            await self.next.consume(payload)
            return
        errors = _ErrorLog(program)
        # The request's bytes serve the byte prefilter; to_bytes() returns the received bytes
        # (or serializes once and keeps them for the exporter when nothing is dropped).
        data = payload.to_bytes() if program.needles else None
        try:
            plan = program.plan(payload.message, data, errors.record)
        except ConditionFailed as exc:
            self.settings.logger.error("%s: %s", self._name, exc)
            raise PermanentError(f"{self._name}: {exc}") from exc
        finally:
            errors.flush(self.settings.logger, self._name)
        if not plan_is_empty(plan):
            apply_plan(payload.mutable(), self.signal, plan)
            after = payload.refresh_count()
            if before > after:
                self._filtered.inc(before - after)
        self._telemetry.outgoing(payload.items)
        if payload.is_empty():
            return  # everything was dropped: like the stock processor, nothing goes on
        await self.next.consume(payload)


def _create(*, settings: CreateSettings, config: FilterConfig, signal: Signal, next_consumer: Consumer) -> FilterProcessor:
    return FilterProcessor(settings, config, signal, next_consumer)


factory = Factory(
    type="filter",
    kind=Kind.PROCESSOR,
    config_class=FilterConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="alpha",
    description="drops spans, span events, metrics, data points and log records matching OTTL conditions",
)
