"""Alert rules and channels written in a YAML file, kept under version control beside the config.

The file has two top-level keys, both optional::

    channels:              # name -> channel spec (alerting/channels/specs.py)
      ops-mail:
        type: email
        to: [ops@example.com]
        from: appguard@example.com
        host: smtp.example.com
        password: ${env:SMTP_PASSWORD}
    rules:                 # a list of rule specs (alerting/model.py)
      - name: Checkout errors
        kind: threshold
        warning: 50
        channels: [ops-mail]

Values may use ``${env:VAR}`` and ``${env:VAR:-default}`` as in the collector's config, so
secrets stay out of the file. :func:`load` reads and validates the file, reporting every
problem with its YAML path (``rules[2].window: must be longer than 0s``); :func:`sync` makes
the store's file definitions those of the file (``source='file'``: created, updated, and
deleted when no longer in the file), all or nothing. The API refuses to change them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerting.store import (
    AnyChannelSpec,
    AnyRuleSpec,
    InvalidDefinition,
    RuleStore,
    SyncReport,
    check_channel_name,
    parse_channel,
    parse_rule,
)
from collector.confmap import ConfigError, expand, load_source

_KEYS = ("channels", "rules")


class RuleFileError(ConfigError):
    """A rules file that cannot be used; ``problems`` are ``(YAML path, message)`` pairs."""

    def __init__(self, origin: str, problems: list[tuple[str, str]]) -> None:
        self.origin = origin
        self.problems = problems
        lines = "\n  ".join(f"{path}: {message}" if path else message for path, message in problems)
        super().__init__(f"invalid rules file {origin}:\n  {lines}")


@dataclass(frozen=True)
class RuleFile:
    """A validated rules file: channels by name and rules in file order."""

    origin: str
    channels: dict[str, AnyChannelSpec]
    rules: list[AnyRuleSpec]


def parse(tree: Any, origin: str = "<rules>") -> RuleFile:
    """Validate an already loaded (and expanded) rules tree; :class:`RuleFileError` lists every problem."""
    problems: list[tuple[str, str]] = []
    if tree is None:
        tree = {}
    if not isinstance(tree, Mapping):
        raise RuleFileError(origin, [("", "the top level must be a map with channels: and rules:")])
    problems += [(str(key), f"unknown key (expected {' or '.join(_KEYS)})") for key in tree if key not in _KEYS]

    channels: dict[str, AnyChannelSpec] = {}
    raw_channels = tree.get("channels") or {}
    if not isinstance(raw_channels, Mapping):
        problems.append(("channels", "must be a map of channel name -> settings"))
        raw_channels = {}
    for name, body in raw_channels.items():
        where = f"channels.{name}"
        try:
            channels[check_channel_name(name)] = parse_channel(body)
        except InvalidDefinition as exc:
            # A bad name is the key's fault, not a field's inside it.
            problems += exc.under(where).problems if exc.field != "name" else [(where, f"name {exc.problems[0][1]}")]

    rules: list[AnyRuleSpec] = []
    raw_rules = tree.get("rules") or []
    if not isinstance(raw_rules, list):
        problems.append(("rules", "must be a list of rules"))
        raw_rules = []
    first_of: dict[str, int] = {}
    for i, body in enumerate(raw_rules):
        try:
            spec = parse_rule(body)
        except InvalidDefinition as exc:
            problems += exc.under(f"rules[{i}]").problems
            continue
        if spec.name in first_of:
            problems.append((f"rules[{i}].name", f"{spec.name!r} is already the name of rules[{first_of[spec.name]}]"))
            continue
        first_of[spec.name] = i
        rules.append(spec)
    if problems:
        raise RuleFileError(origin, problems)
    return RuleFile(origin=origin, channels=channels, rules=rules)


def load(path: str | Path) -> RuleFile:
    """Read, expand (``${env:...}``) and validate a rules file."""
    origin = str(path)
    tree = load_source(origin)
    return parse(expand(tree), origin)


async def sync(store: RuleStore, file: str | Path | RuleFile, *, project_id: int = 1) -> SyncReport:
    """Make the store's file rules and channels those of ``file`` (a path, or one already loaded).

    All or nothing: :class:`RuleFileError` (with paths into the file) leaves the store as it was.
    """
    loaded = file if isinstance(file, RuleFile) else load(file)
    try:
        return await store.apply_file(loaded.channels, loaded.rules, project_id=project_id)
    except InvalidDefinition as exc:
        raise RuleFileError(loaded.origin, exc.problems) from None
