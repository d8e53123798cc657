"""``attributes``: insert, update, upsert, delete, hash, extract or convert item attributes.

Works like the stock collector's ``attributesprocessor``: the ``actions`` (see
:mod:`processors._attraction`) run on the attributes of every span, every log record and every
metric data point, optionally narrowed by ``include``/``exclude`` (see
:mod:`processors._matching`). For metrics, ``include``/``exclude`` select metrics by name and
the actions run on all data points of a selected metric.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from pydantic import field_validator, model_validator

from collector.component import CreateSettings, Factory, Kind, ProcessorBase
from collector.configtypes import ComponentConfig
from collector.confmap import ConfigError
from collector.consumer import Consumer
from collector.pdata import ExportRequest, Payload, Signal
from processors._attraction import ActionKeyValue, Applier, AttrProc, edit_in_place
from processors._matching import ItemFilter, MatchProperties, build_filter

# Field names by signal: resources, their scopes, the scopes' items.
_FIELDS = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
}


class AttributesConfig(ComponentConfig):
    """``actions`` (required), applied in order; ``include``/``exclude`` select the items."""

    include: MatchProperties | None = None
    exclude: MatchProperties | None = None
    actions: list[ActionKeyValue] = []

    @field_validator("actions", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _required(self) -> AttributesConfig:
        if not self.actions:
            raise ValueError('missing required field "actions"')
        return self


def _apply_to_points(metric: Metric, apply: Applier) -> bool:
    kind = metric.WhichOneof("data")
    if kind is None:
        return False
    changed = False
    for point in getattr(metric, kind).data_points:
        if apply(point.attributes):
            changed = True
    return changed


class AttributesProcessor(ProcessorBase):
    """Applies the configured actions to the attributes of the selected items."""

    mutates_data = True

    def __init__(
        self,
        settings: CreateSettings,
        config: AttributesConfig,
        signal: Signal,
        next_consumer: Consumer,
        item_filter: ItemFilter | None,
    ) -> None:
        super().__init__(settings, signal, next_consumer)
        self._actions = AttrProc(config.actions)
        self._filter = item_filter
        self._fields = _FIELDS[signal]
        self._telemetry = settings.telemetry.processor(str(settings.id), signal)

    async def consume(self, payload: Payload) -> None:
        """Edit the selected items' attributes, then pass the request on."""
        items = payload.items
        self._telemetry.incoming(items)
        apply = self._actions.bind(
            metadata=payload.metadata,
            client_address=payload.client_address,
            raw=payload.to_bytes() if payload.has_raw else None,
        )
        if apply is not None:
            edit_in_place(payload, lambda message: self._edit(message, apply))
        self._telemetry.outgoing(items)
        await self.next.consume(payload)

    def _edit(self, message: ExportRequest, apply: Applier) -> bool:
        resources_field, scopes_field, items_field = self._fields
        item_filter = self._filter
        metrics = self.signal is Signal.METRICS
        changed = False
        for block in getattr(message, resources_field):
            rplan = None
            if item_filter is not None:
                rplan = item_filter.for_resource(block.resource)
                if rplan is None:
                    continue
            for scope_block in getattr(block, scopes_field):
                plan = True if item_filter is None or rplan is None else item_filter.plan(rplan, scope_block.scope)
                if plan is False:
                    continue
                entries = getattr(scope_block, items_field)
                # Two loops rather than one with a test per item: most scopes need no filter.
                if plan is True:
                    if metrics:
                        for metric in entries:
                            if _apply_to_points(metric, apply):
                                changed = True
                    else:
                        for entry in entries:
                            if apply(entry.attributes):
                                changed = True
                    continue
                if metrics:
                    for metric in entries:
                        if plan(metric) and _apply_to_points(metric, apply):
                            changed = True
                else:
                    for entry in entries:
                        if plan(entry) and apply(entry.attributes):
                            changed = True
        return changed


def _create(*, settings: CreateSettings, config: AttributesConfig, signal: Signal, next_consumer: Consumer) -> AttributesProcessor:
    try:
        item_filter = build_filter(config.include, config.exclude, signal, settings.logger)
    except ValueError as exc:
        # Which properties are allowed depends on the pipeline's signal, known only here.
        raise ConfigError(f"processors.{settings.id}.{exc} (in a {signal.value} pipeline)") from None
    return AttributesProcessor(settings, config, signal, next_consumer, item_filter)


factory = Factory(
    type="attributes",
    kind=Kind.PROCESSOR,
    config_class=AttributesConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="beta",
    description="inserts, updates, deletes, hashes, extracts or converts span, log and data point attributes",
)
