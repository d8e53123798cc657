"""``forward``: joins pipelines of the same signal, passing data on unchanged."""

from __future__ import annotations

from collections.abc import Mapping

from collector.component import Component, CreateSettings, Factory, Kind
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer
from collector.pdata import Payload, Signal


class ForwardConfig(ComponentConfig):
    """The forward connector has no settings."""


class ForwardConnector(Component):
    """Exporter of some pipelines, receiver of others of the same signal."""

    def __init__(self, consumers: Mapping[Signal, Consumer]) -> None:
        self._next = dict(consumers)
        # It hands the payload on as it is, so it mutates whatever its consumers mutate.
        self.mutates_data = any(c.mutates_data for c in self._next.values())

    async def consume(self, payload: Payload) -> None:
        await self._next[payload.signal].consume(payload)


def _create(*, settings: CreateSettings, config: ForwardConfig, consumers: Mapping[Signal, Consumer]) -> ForwardConnector:
    return ForwardConnector(consumers)


factory = Factory(
    type="forward",
    kind=Kind.CONNECTOR,
    config_class=ForwardConfig,
    create=_create,
    connects=frozenset((s, s) for s in Signal),
    stability="beta",
    description="passes data from pipelines to pipelines of the same signal",
)
