"""``resource``: insert, update, upsert, delete, hash, extract or convert resource attributes.

Works like the stock collector's ``resourceprocessor``: the ``attributes`` actions (see
:mod:`processors._attraction`) run on the resource of every ``ResourceSpans``,
``ResourceMetrics`` and ``ResourceLogs`` of a request, so the work is per resource, never per
item.
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator, model_validator

from collector.component import CreateSettings, Factory, Kind, ProcessorBase
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer
from collector.pdata import ExportRequest, Payload, Signal
from collector.wire import replace_resources
from processors._attraction import ActionKeyValue, Applier, AttrProc, edit_in_place

_RESOURCES_FIELD = {Signal.TRACES: "resource_spans", Signal.METRICS: "resource_metrics", Signal.LOGS: "resource_logs"}


class ResourceConfig(ComponentConfig):
    """``attributes``: the actions to apply to resource attributes, in order (required)."""

    attributes: list[ActionKeyValue] = []

    @field_validator("attributes", mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return [] if value is None else value

    @model_validator(mode="after")
    def _required(self) -> ResourceConfig:
        if not self.attributes:
            raise ValueError('missing required field "attributes"')
        return self


class ResourceProcessor(ProcessorBase):
    """Applies the configured actions to each resource of the requests it gets."""

    mutates_data = True

    def __init__(self, settings: CreateSettings, config: ResourceConfig, signal: Signal, next_consumer: Consumer) -> None:
        super().__init__(settings, signal, next_consumer)
        self._actions = AttrProc(config.attributes)
        self._field = _RESOURCES_FIELD[signal]
        self._telemetry = settings.telemetry.processor(str(settings.id), signal)

    async def consume(self, payload: Payload) -> None:
        """Edit the resources' attributes, then pass the request on."""
        items = payload.items
        self._telemetry.incoming(items)
        apply = self._actions.bind(
            metadata=payload.metadata,
            client_address=payload.client_address,
            raw=payload.to_bytes() if payload.has_raw else None,
        )
        if apply is not None:
            if payload.has_raw:
                self._edit_and_splice(payload, apply)
            else:
                edit_in_place(payload, lambda message: self._edit(message, apply))
        self._telemetry.outgoing(items)
        await self.next.consume(payload)

    def _edit_and_splice(self, payload: Payload, apply: Applier) -> None:
        # Only the resources change: re-encode them alone and splice them into the bytes the
        # request came with, so the exporter still sends bytes without encoding the items.
        raw = payload.to_bytes()
        try:
            new: list[bytes | None] = []
            for block in getattr(payload.message, self._field):
                new.append(block.resource.SerializeToString() if apply(block.resource.attributes) else None)
            if any(r is not None for r in new):
                payload.replace_bytes(replace_resources(raw, new))
        except BaseException:
            payload.mutable()  # part of the edit may have happened: the old bytes are stale
            raise

    def _edit(self, message: ExportRequest, apply: Applier) -> bool:
        changed = False
        for block in getattr(message, self._field):
            if apply(block.resource.attributes):
                changed = True
        return changed


def _create(*, settings: CreateSettings, config: ResourceConfig, signal: Signal, next_consumer: Consumer) -> ResourceProcessor:
    return ResourceProcessor(settings, config, signal, next_consumer)


factory = Factory(
    type="resource",
    kind=Kind.PROCESSOR,
    config_class=ResourceConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="beta",
    description="inserts, updates, deletes, hashes, extracts or converts resource attributes",
)
