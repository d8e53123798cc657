"""``nop``: accepts everything and sends it nowhere (as the stock nopexporter).

Useful to measure a receiver alone, or to terminate a pipeline whose data a connector
already took.
"""

from __future__ import annotations

from collector.component import Component, CreateSettings, Factory, Kind
from collector.configtypes import ComponentConfig
from collector.pdata import Payload, Signal


class NopConfig(ComponentConfig):
    """The nop exporter has no settings."""


class NopExporter(Component):
    """Counts what it gets as sent, and drops it by design."""

    mutates_data = False

    def __init__(self, settings: CreateSettings) -> None:
        self._metrics = settings.telemetry.exporter(str(settings.id))

    async def consume(self, payload: Payload) -> None:
        self._metrics.sent(payload.signal, payload.items)


def _create(*, settings: CreateSettings, config: NopConfig, signals: frozenset[Signal]) -> NopExporter:
    return NopExporter(settings)


factory = Factory(
    type="nop",
    kind=Kind.EXPORTER,
    config_class=NopConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="beta",
    description="drops everything it gets (for measuring and for connector-only pipelines)",
)
