"""The component model: ids, kinds, factories and the lifecycle every component follows.

A factory knows its type name (``otlp``, ``batch``...), its config model with defaults and how
to build the component. The pipeline graph calls it; the service starts the built components
(exporters first, receivers last) and shuts them down in the opposite order.
"""

from __future__ import annotations

import builtins
import enum
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from collector.admission import MemoryPressure
from collector.configtypes import ComponentConfig
from collector.consumer import Consumer
from collector.pdata import Signal

if TYPE_CHECKING:
    from collector.telemetry import Telemetry

_TYPE_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}$")
_NAME_RE = re.compile(r"^[^\s/]+$")


class Kind(enum.StrEnum):
    """The kinds of component, named as the config sections are."""

    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    CONNECTOR = "connector"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        """The top-level YAML section holding this kind's configs."""
        return self.value + "s"


@dataclass(frozen=True, order=True)
class ComponentID:
    """``type[/name]``, as written in YAML."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        """Parse ``type[/name]``, raising ``ValueError`` on a malformed id."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a component id must be a non-empty string")
        type_, sep, name = text.strip().partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(f"invalid component type {type_!r} in id {text!r}")
        if sep and not _NAME_RE.match(name):
            raise ValueError(f"invalid component name {name!r} in id {text!r}")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class Host:
    """What a running component may ask the service for: the extensions, by id."""

    def __init__(self, extensions: Mapping[ComponentID, Component] | None = None) -> None:
        self.extensions: dict[ComponentID, Component] = dict(extensions or {})

    def extension(self, ident: str | ComponentID) -> Component:
        """The running extension with this id; ``KeyError`` if the config has none."""
        key = ComponentID.parse(ident) if isinstance(ident, str) else ident
        return self.extensions[key]


class Component:
    """Base of every component: ``start`` after its consumers, ``shutdown`` before them."""

    async def start(self, host: Host) -> None:
        """Bind ports, open connections, start tasks. Raise to abort the service start."""

    async def shutdown(self) -> None:
        """Stop taking data, finish or persist what is in flight, release resources."""


@dataclass
class CreateSettings:
    """What every factory gets besides the config: its id, logger and self-telemetry."""

    id: ComponentID
    kind: Kind
    telemetry: Telemetry
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("appguard"))
    data_dir: str | None = None
    # Shared by every component of one service: memory limiters set it, receivers read it.
    memory: MemoryPressure = field(default_factory=MemoryPressure)


C = TypeVar("C", bound=ComponentConfig)


@dataclass
class Factory(Generic[C]):
    """Builds one type of component.

    ``signals`` lists the signals a receiver, processor or exporter supports. A connector lists
    the (from, to) signal pairs it joins in ``connects``.
    """

    type: str
    kind: Kind
    config_class: builtins.type[C]
    create: Callable[..., Any]
    signals: frozenset[Signal] = frozenset()
    connects: frozenset[tuple[Signal, Signal]] = frozenset()
    stability: str = "beta"
    description: str = ""

    def default_config(self) -> C:
        """The config with every default, as when the YAML gives the id with no keys."""
        return self.config_class()


# The constructors' shapes, by kind (the graph calls them with keywords):
#   receiver:  create(settings, config, consumers: Mapping[Signal, Consumer]) -> Component
#   processor: create(settings, config, signal, next: Consumer) -> Component & Consumer
#   exporter:  create(settings, config, signals: frozenset[Signal]) -> Component & Consumer
#   connector: create(settings, config, consumers: Mapping[Signal, Consumer]) -> Component & Consumer
#   extension: create(settings, config) -> Component


class ProcessorBase(Component):
    """Convenience base for processors: holds the next consumer and the id."""

    mutates_data = True

    def __init__(self, settings: CreateSettings, signal: Signal, next_consumer: Consumer) -> None:
        self.settings = settings
        self.signal = signal
        self.next = next_consumer
