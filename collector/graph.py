"""The pipeline graph: components built from a :class:`~collector.config.Config` and wired.

Pipelines are built downstream first. A pipeline's exporters (and connectors used as its
exporters) sit behind one fan-out; its processors are chained in front of that, one instance
per pipeline; receivers are built last and fan out to every pipeline that lists them.
Connectors join pipelines: the graph of pipelines they form must have no cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from collector.admission import MemoryPressure
from collector.component import Component, ComponentID, CreateSettings, Kind
from collector.config import Config, PipelineID
from collector.confmap import ConfigError
from collector.consumer import Consumer, fanout
from collector.pdata import Signal
from collector.registry import Registry, default_registry
from collector.telemetry import Telemetry


@dataclass
class Graph:
    """Built components, in start order (extensions, exporters, connectors, processors, receivers)."""

    extensions: dict[ComponentID, Component] = field(default_factory=dict)
    exporters: dict[ComponentID, Component] = field(default_factory=dict)
    connectors: dict[ComponentID, Component] = field(default_factory=dict)
    processors: list[tuple[PipelineID, ComponentID, Component]] = field(default_factory=list)
    receivers: dict[ComponentID, Component] = field(default_factory=dict)
    entries: dict[PipelineID, Consumer] = field(default_factory=dict)
    # Pipeline components in the order they were built: every one after all it feeds, so
    # this is the order to start them in (and the reverse, to stop them).
    built: list[tuple[Kind, str, Component]] = field(default_factory=list)

    def start_order(self) -> list[tuple[Kind, str, Component]]:
        """Every pipeline component with a label, each after everything downstream of it."""
        return list(self.built)


def _pipeline_order(cfg: Config) -> list[PipelineID]:
    """Pipelines ordered so that a pipeline comes after every pipeline it feeds."""
    pipes = cfg.service.pipelines
    feeds: dict[PipelineID, set[PipelineID]] = {p: set() for p in pipes}
    for pid, pipe in pipes.items():
        for ident in pipe.exporters:
            if ident in cfg.connectors:
                feeds[pid] |= {q for q, other in pipes.items() if ident in other.receivers}
    order: list[PipelineID] = []
    state: dict[PipelineID, int] = {}

    def visit(p: PipelineID, stack: list[PipelineID]) -> None:
        if state.get(p) == 2:
            return
        if state.get(p) == 1:
            cycle = " -> ".join(str(x) for x in [*stack[stack.index(p) :], p])
            raise ConfigError(f"service.pipelines: connectors form a cycle: {cycle}")
        state[p] = 1
        for q in sorted(feeds[p], key=str):
            visit(q, [*stack, p])
        state[p] = 2
        order.append(p)

    for p in sorted(pipes, key=str):
        visit(p, [])
    return order


def build_graph(
    cfg: Config,
    telemetry: Telemetry,
    registry: Registry | None = None,
    data_dir: str | None = None,
) -> Graph:
    """Construct every component (nothing is started, no port is bound)."""
    registry = registry or default_registry()
    graph = Graph()
    pipes = cfg.service.pipelines
    memory = MemoryPressure()

    def settings(kind: Kind, ident: ComponentID) -> CreateSettings:
        logger = logging.getLogger(f"appguard.{kind.value}.{ident}")
        return CreateSettings(ident, kind, telemetry, logger, data_dir, memory)

    def factory(kind: Kind, ident: ComponentID):  # type: ignore[no-untyped-def]
        f = registry.get(kind, ident.type)
        if f is None:
            raise ConfigError(f"{kind.section}.{ident}: unknown {kind.value} type")
        return f

    for ident in cfg.service.extensions:
        graph.extensions[ident] = factory(Kind.EXTENSION, ident).create(
            settings=settings(Kind.EXTENSION, ident), config=cfg.extensions[ident]
        )

    for ident, ecfg in cfg.exporters.items():
        signals = frozenset(p.signal for p, pipe in pipes.items() if ident in pipe.exporters)
        if signals:
            graph.exporters[ident] = factory(Kind.EXPORTER, ident).create(
                settings=settings(Kind.EXPORTER, ident), config=ecfg, signals=signals
            )
            graph.built.append((Kind.EXPORTER, str(ident), graph.exporters[ident]))

    def connector(ident: ComponentID) -> Component:
        if ident not in graph.connectors:
            consumers: dict[Signal, list[Consumer]] = {}
            for q, pipe in pipes.items():
                if ident in pipe.receivers:
                    consumers.setdefault(q.signal, []).append(graph.entries[q])
            graph.connectors[ident] = factory(Kind.CONNECTOR, ident).create(
                settings=settings(Kind.CONNECTOR, ident),
                config=cfg.connectors[ident],
                consumers={s: fanout(c) for s, c in consumers.items()},
            )
            graph.built.append((Kind.CONNECTOR, str(ident), graph.connectors[ident]))
        return graph.connectors[ident]

    for pid in _pipeline_order(cfg):
        pipe = pipes[pid]
        tail: list[Consumer] = []
        for ident in pipe.exporters:
            comp = graph.exporters[ident] if ident in graph.exporters else connector(ident)
            tail.append(comp)  # type: ignore[arg-type]
        nxt: Consumer = fanout(tail)
        for ident in reversed(pipe.processors):
            proc = factory(Kind.PROCESSOR, ident).create(
                settings=settings(Kind.PROCESSOR, ident), config=cfg.processors[ident], signal=pid.signal, next_consumer=nxt
            )
            graph.processors.append((pid, ident, proc))
            graph.built.append((Kind.PROCESSOR, f"{ident} in {pid}", proc))
            nxt = proc
        graph.entries[pid] = nxt

    for ident, rcfg in cfg.receivers.items():
        by_signal: dict[Signal, list[Consumer]] = {}
        for pid, pipe in pipes.items():
            if ident in pipe.receivers:
                by_signal.setdefault(pid.signal, []).append(graph.entries[pid])
        if by_signal:
            consumers: Mapping[Signal, Consumer] = {s: fanout(c) for s, c in by_signal.items()}
            graph.receivers[ident] = factory(Kind.RECEIVER, ident).create(
                settings=settings(Kind.RECEIVER, ident), config=rcfg, consumers=consumers
            )
            graph.built.append((Kind.RECEIVER, str(ident), graph.receivers[ident]))
    return graph
