"""Small real components for testing the graph and service: a receiver that hands out its
consumers, a processor that tags resources, and an exporter that records what it got."""

from __future__ import annotations

from collections.abc import Mapping

from collector.component import Component, Factory, Kind
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer
from collector.pdata import Payload, Signal

ALL = frozenset(Signal)


class RecvConfig(ComponentConfig):
    pass


class Recv(Component):
    def __init__(self, consumers: Mapping[Signal, Consumer]) -> None:
        self.consumers = dict(consumers)
        self.started = False

    async def start(self, host: object) -> None:
        self.started = True


class TagConfig(ComponentConfig):
    key: str = "tagged"
    value: str = "yes"


class Tag(Component):
    """Adds a resource attribute to every resource (mutates)."""

    mutates_data = True

    def __init__(self, config: TagConfig, nxt: Consumer) -> None:
        self.config, self.next = config, nxt

    async def consume(self, payload: Payload) -> None:
        msg = payload.mutable()
        for rs in getattr(msg, f"resource_{'spans' if payload.signal is Signal.TRACES else payload.signal.value}"):
            kv = rs.resource.attributes.add()
            kv.key = self.config.key
            kv.value.string_value = self.config.value
        await self.next.consume(payload)


class SinkConfig(ComponentConfig):
    pass


class Sink(Component):
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Payload] = []

    async def consume(self, payload: Payload) -> None:
        self.got.append(payload)


def factories() -> list[Factory]:
    return [
        Factory("testrecv", Kind.RECEIVER, RecvConfig, lambda *, settings, config, consumers: Recv(consumers), ALL),
        Factory(
            "tag",
            Kind.PROCESSOR,
            TagConfig,
            lambda *, settings, config, signal, next_consumer: Tag(config, next_consumer),
            ALL,
        ),
        Factory("testsink", Kind.EXPORTER, SinkConfig, lambda *, settings, config, signals: Sink(), ALL),
        Factory("tracesonly", Kind.EXPORTER, SinkConfig, lambda *, settings, config, signals: Sink(), frozenset({Signal.TRACES})),
    ]
