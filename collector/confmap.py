"""Reading config sources into one mapping: YAML files, ``${env:...}`` expansion, merging.

Sources are given as the stock collector takes ``--config``: a file path, ``file:PATH``,
``env:VAR`` (YAML held in a variable) or ``yaml:key::sub: value`` (an inline snippet).
Several sources merge in order: maps merge key by key, anything else is replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml


class ConfigError(Exception):
    """A config that cannot be used; the message names the YAML path."""


_REF = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _resolve(ref: str, path: str) -> str:
    scheme, sep, rest = ref.partition(":")
    if not sep:
        scheme, rest = "env", ref
    if scheme != "env":
        raise ConfigError(f"{path}: unsupported config provider {scheme!r} in ${{{ref}}} (only env is)")
    name, dsep, default = rest.partition(":-")
    if not _ENV_NAME.match(name):
        raise ConfigError(f"{path}: invalid environment variable name {name!r} in ${{{ref}}}")
    value = os.environ.get(name)
    if value is None or (dsep and value == ""):
        return default if dsep else ""
    return value


def _expand_string(text: str, path: str) -> Any:
    whole = _REF.fullmatch(text)
    if whole and whole.group(0) != "$$":
        # A value that is one reference takes the referenced text's YAML type (a port stays
        # an int), as the stock collector does.
        expanded = _resolve(whole.group(1), path)
        try:
            parsed = yaml.safe_load(expanded) if expanded else None
        except yaml.YAMLError:
            return expanded
        return parsed if isinstance(parsed, (int, float, bool)) and not isinstance(parsed, str) else expanded

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return _resolve(match.group(1), path)

    return _REF.sub(repl, text)


def expand(value: Any, path: str = "") -> Any:
    """Expand ``${env:VAR}``, ``${env:VAR:-default}``, ``${VAR}`` and ``$$`` in every string."""
    if isinstance(value, str):
        return _expand_string(value, path or "<root>")
    if isinstance(value, Mapping):
        return {k: expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def merge(base: Any, override: Any) -> Any:
    """Deep-merge two config trees: maps key by key, other values replaced by ``override``."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return override


def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a map, not {type(data).__name__}")
    return data


def _inline_yaml(snippet: str) -> dict[str, Any]:
    # ``yaml:exporters::debug::verbosity: detailed`` -> nested maps, as the stock yaml provider.
    key, sep, value = snippet.partition(": ")
    if not sep:
        return _parse_yaml(snippet, "yaml:")
    parts = key.split("::")
    tree: Any = _parse_yaml(f"v: {value}", "yaml:")["v"]
    for part in reversed(parts):
        tree = {part: tree}
    return tree  # type: ignore[no-any-return]


def load_source(source: str) -> dict[str, Any]:
    """Read one ``--config`` source into a mapping (not yet expanded)."""
    scheme, sep, rest = source.partition(":")
    if sep and scheme == "yaml":
        return _inline_yaml(rest)
    if sep and scheme == "env":
        text = os.environ.get(rest)
        if text is None:
            raise ConfigError(f"{source}: environment variable {rest} is not set")
        return _parse_yaml(text, source)
    path = rest if sep and scheme == "file" else source
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    return _parse_yaml(text, path)


def load_sources(sources: list[str]) -> dict[str, Any]:
    """Load, merge in order, then expand the references of several sources."""
    merged: dict[str, Any] = {}
    for source in sources:
        merged = merge(merged, load_source(source))
    return expand(merged)  # type: ignore[no-any-return]
