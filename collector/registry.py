"""Where factories come from: the built-in component packages and the entry-point group.

Every module (or package) directly inside ``receivers``, ``processors``, ``exporters``,
``connectors`` and ``extensions`` that defines ``factory`` (or a list ``factories``) is built
in. Third-party packages add components through the ``appguard.components`` entry-point
group; each entry point names a :class:`~collector.component.Factory` or a list of them.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points

from collector.component import Factory, Kind

ENTRY_POINT_GROUP = "appguard.components"
_PACKAGES = ("receivers", "processors", "exporters", "connectors", "extensions")
_log = logging.getLogger("appguard.registry")


class Registry:
    """Factories by kind and type name."""

    def __init__(self, factories: Iterable[Factory] = ()) -> None:
        self._by_kind: dict[Kind, dict[str, Factory]] = {k: {} for k in Kind}
        for factory in factories:
            self.add(factory)

    def add(self, factory: Factory) -> None:
        """Register a factory; a second one of the same kind and type is an error."""
        table = self._by_kind[factory.kind]
        if factory.type in table:
            raise ValueError(f"duplicate {factory.kind.value} type {factory.type!r}")
        table[factory.type] = factory

    def get(self, kind: Kind, type_: str) -> Factory | None:
        """The factory, or ``None`` when no such type is registered."""
        return self._by_kind[kind].get(type_)

    def types(self, kind: Kind) -> list[str]:
        """The registered type names of a kind, sorted."""
        return sorted(self._by_kind[kind])

    def all(self) -> list[Factory]:
        """Every factory, by kind then type."""
        return [self._by_kind[k][t] for k in Kind for t in sorted(self._by_kind[k])]


def _module_factories(module: object) -> list[Factory]:
    found: list[Factory] = []
    single = getattr(module, "factory", None)
    if isinstance(single, Factory):
        found.append(single)
    many = getattr(module, "factories", None)
    if many:
        found.extend(f for f in many if isinstance(f, Factory))
    return found


def builtin_factories() -> list[Factory]:
    """Import every module of the component packages and collect their factories."""
    factories: list[Factory] = []
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{package_name}.{info.name}")
            factories.extend(_module_factories(module))
    return factories


def plugin_factories() -> list[Factory]:
    """Factories that installed distributions register under ``appguard.components``."""
    factories: list[Factory] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:  # a broken plugin must not take the collector down
            _log.exception("cannot load component entry point %s", ep.name)
            continue
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        factories.extend(f for f in items if isinstance(f, Factory))
    return factories


_default: Registry | None = None


def default_registry() -> Registry:
    """Built-in plus plugin factories, loaded once."""
    global _default
    if _default is None:
        _default = Registry([*builtin_factories(), *plugin_factories()])
    return _default
