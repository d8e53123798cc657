"""Alert rules and notification channels in PostgreSQL (``storage/migrations/0005_alert_rules.sql``).

Definitions come from two places: the REST API (``source='api'``, edited there) and a rules file
(``source='file'``, written only by :meth:`RuleStore.apply_file`, read-only to the API). Nothing
is written before it is valid:

- its spec validates against the pydantic models; :func:`parse_rule` and :func:`parse_channel`
  turn their errors into field paths (``window``, ``filters.service[0]``),
- the channels a rule names exist (and a channel some rule names is neither renamed nor
  deleted),
- a metric rule's ``expr`` parses in the configured Prometheus (``/api/v1/format_query``);
  without a Prometheus, metric rules are refused, since nothing could evaluate them.

What cannot be stored raises a :class:`DefinitionError` naming the field at fault.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self, TypeVar

import aiohttp
import psycopg.errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter, ValidationError

from alerting.channels.specs import (
    CHANNEL_SPEC,
    REDACTED,
    AlertmanagerSpec,
    EmailSpec,
    SlackSpec,
    WebhookSpec,
)
from alerting.model import AlertRuleSpec, IssueRule, MetricRule, StoredRule, ThresholdRule

_log = logging.getLogger("appguard.alerting")

AnyRuleSpec = IssueRule | ThresholdRule | MetricRule
AnyChannelSpec = EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec
Source = Literal["api", "file"]

RULE_SPEC: TypeAdapter[AnyRuleSpec] = TypeAdapter(AlertRuleSpec)

#: What a metric rule gets without a Prometheus to check and evaluate it against.
NO_PROMETHEUS = "metric rules need a Prometheus to evaluate against (alerting.prometheus.endpoint)"

# Any constant shared by every AppGuard process; "apgrule" in ASCII. Serialises rules-file
# synchronisations, so replicas starting together apply the file once each, in turn.
FILE_SYNC_LOCK_KEY = 0x61_70_67_72_75_6C_65

_MAX_NAME = 200
_FIELD_MESSAGE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*): (.+)$", re.DOTALL)

S = TypeVar("S")


# --------------------------------------------------------------------------- errors


class DefinitionError(Exception):
    """A rule or channel that cannot be stored as given.

    ``problems`` are ``(path, message)`` pairs, the path naming the field at fault (``""`` for
    the definition as a whole); :attr:`field` and :attr:`message` are the first one's.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> Self:
        """An error of one problem."""
        return cls([(path, message)])

    @property
    def field(self) -> str | None:
        """The path of the first problem, or None when it is about the whole definition."""
        return self.problems[0][0] or None

    @property
    def message(self) -> str:
        """The first problem as text (``window: must be longer than 0s``)."""
        path, message = self.problems[0]
        return f"{path}: {message}" if path else message

    def under(self, prefix: str) -> Self:
        """The same error with every path below ``prefix`` (``rules[2]`` + ``window``)."""
        return type(self)([(join_path(prefix, path), message) for path, message in self.problems])


class InvalidDefinition(DefinitionError):
    """The spec does not validate, names an unknown channel, or its PromQL does not parse."""


class NameTaken(DefinitionError):
    """Another rule (or channel) of the project already has this name."""


class ReadOnlyDefinition(DefinitionError):
    """The definition comes from the rules file; change it there."""


class ChannelInUse(DefinitionError):
    """Rules send to this channel, so it cannot be renamed or deleted."""


class PrometheusUnavailable(Exception):
    """The configured Prometheus did not answer whether an expression parses."""


def join_path(prefix: str, path: str) -> str:
    """``rules[2]`` and ``window`` -> ``rules[2].window``; list indexes join without a dot."""
    if not path:
        return prefix
    if not prefix:
        return path
    return f"{prefix}{path}" if path.startswith("[") else f"{prefix}.{path}"


def _loc_path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path = join_path(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path


def validation_problems(exc: ValidationError, *, tag: str) -> list[tuple[str, str]]:
    """Pydantic errors of a discriminated union as ``(path, message)`` pairs.

    The union's tag value (the first element of every location) is left out, so a threshold
    rule's bad window is ``window``, not ``threshold.window``; a model check whose message
    starts with a field's name (``warning: give warning or critical``) is put on that field.
    """
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        kind = err["type"]
        ctx = err.get("ctx") or {}
        if kind == "union_tag_not_found":
            out.append((tag, "required"))
            continue
        if kind == "union_tag_invalid":
            out.append((tag, f"must be one of {ctx.get('expected_tags', '')} (got {ctx.get('tag', '')!r})"))
            continue
        loc = list(err["loc"])[1:]
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required"
        else:
            message = err["msg"].removeprefix("Value error, ")
        path = _loc_path(loc)
        named = _FIELD_MESSAGE.match(message) if kind == "value_error" else None
        if named is not None:
            path, message = join_path(path, named.group(1)), named.group(2)
        out.append((path, message))
    return out


def _parse(adapter: TypeAdapter[S], data: Any, tag: str) -> S:
    if not isinstance(data, Mapping):
        raise InvalidDefinition.at("", "must be an object (a map)")
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise InvalidDefinition(validation_problems(exc, tag=tag)) from None


def parse_rule(data: Any) -> AnyRuleSpec:
    """A rule spec from JSON or YAML data; :class:`InvalidDefinition` naming the fields at fault."""
    return _parse(RULE_SPEC, data, "kind")


def parse_channel(data: Any) -> AnyChannelSpec:
    """A channel spec from JSON or YAML data; :class:`InvalidDefinition` naming the fields at fault."""
    return _parse(CHANNEL_SPEC, data, "type")


def check_channel_name(name: Any) -> str:
    """A channel's name: text of 1 to 200 characters (rules refer to channels by it)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidDefinition.at("name", "must be a non-empty string")
    if len(name) > _MAX_NAME:
        raise InvalidDefinition.at("name", f"must be at most {_MAX_NAME} characters")
    return name


def with_stored_secrets(data: Mapping[str, Any], stored: AnyChannelSpec | None) -> dict[str, Any]:
    """A channel spec as sent, with the secrets it leaves out (or sends as ``********``) taken
    from ``stored``, the channel's current spec (None for a new channel).

    A secret is kept only while the type stays the same; sending ``********`` with no secret
    to keep is refused, so the placeholder is never stored as a password.
    """
    out = dict(data)
    spec_class = _SPEC_CLASSES.get(str(out.get("type", "")))
    if spec_class is None:
        return out  # parse_channel names the bad type
    same_type = stored is not None and stored.type == out.get("type")
    for name in spec_class.SECRETS:
        if name in out and out[name] != REDACTED:
            continue
        kept = getattr(stored, name, None) if same_type else None
        if kept is not None:
            out[name] = kept
        elif out.get(name) == REDACTED:
            raise InvalidDefinition.at(name, f"give the secret itself: there is no stored one to keep as {REDACTED}")
    return out


_SPEC_CLASSES: dict[str, type[AnyChannelSpec]] = {
    cls.model_fields["type"].default: cls for cls in (EmailSpec, SlackSpec, WebhookSpec, AlertmanagerSpec)
}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RuleRecord:
    """A stored rule with what the API shows about it besides its definition."""

    rule: StoredRule
    version: int
    created_by: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ChannelRecord:
    """A stored channel; ``spec`` holds its secrets (show it through ``redacted()``)."""

    id: int
    project_id: int
    name: str
    spec: AnyChannelSpec
    source: Source
    created_at: datetime
    updated_at: datetime


@dataclass
class SyncReport:
    """What :meth:`RuleStore.apply_file` changed, by name."""

    rules_created: list[str] = field(default_factory=list)
    rules_updated: list[str] = field(default_factory=list)
    rules_deleted: list[str] = field(default_factory=list)
    channels_created: list[str] = field(default_factory=list)
    channels_updated: list[str] = field(default_factory=list)
    channels_deleted: list[str] = field(default_factory=list)


_RULE_COLUMNS = "id, project_id, spec, source, version, created_by, created_at, updated_at"
_CHANNEL_COLUMNS = "id, project_id, name, spec, source, created_at, updated_at"


def _rule_record(row: Mapping[str, Any]) -> RuleRecord:
    return RuleRecord(
        rule=StoredRule(
            id=row["id"],
            project_id=row["project_id"],
            spec=RULE_SPEC.validate_python(row["spec"]),
            source=row["source"],
        ),
        version=row["version"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _channel_record(row: Mapping[str, Any]) -> ChannelRecord:
    return ChannelRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        spec=CHANNEL_SPEC.validate_python(row["spec"]),
        source=row["source"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _spec_json(spec: AnyRuleSpec | AnyChannelSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True)


def _names(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _read_only(what: str, name: str) -> ReadOnlyDefinition:
    return ReadOnlyDefinition.at(
        "", f"{what} {name!r} comes from the rules file and cannot be changed through the API; change the file"
    )


# --------------------------------------------------------------------------- the store

Conn = psycopg.AsyncConnection[Any]


class RuleStore:
    """Reads and writes rules and channels through a pool of autocommit connections.

    ``prometheus_url`` is the Prometheus HTTP API metric rules are checked (and evaluated)
    against; without it metric rules are refused.
    """

    def __init__(
        self, pool: AsyncConnectionPool[Any], *, prometheus_url: str | None = None, prometheus_timeout: float = 10.0
    ) -> None:
        self._pool = pool
        self.prometheus_url = prometheus_url.rstrip("/") if prometheus_url else None
        self._timeout = prometheus_timeout

    # ---- checks

    async def check_expr(self, expr: str) -> None:
        """Refuse (:class:`InvalidDefinition` on ``expr``) PromQL the configured Prometheus
        cannot parse; :class:`PrometheusUnavailable` when it does not answer."""
        if self.prometheus_url is None:
            raise InvalidDefinition.at("expr", NO_PROMETHEUS)
        url = f"{self.prometheus_url}/api/v1/format_query"
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout)) as session,
                session.get(url, params={"query": expr}) as response,
            ):
                status = response.status
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.prometheus_url} did not answer: {exc}") from None
        if status == 200 and isinstance(answer, dict) and answer.get("status") == "success":
            return
        if status == 400 and isinstance(answer, dict) and answer.get("errorType") == "bad_data":
            reason = str(answer.get("error", "")).removeprefix('invalid parameter "query": ')
            raise InvalidDefinition.at("expr", f"Prometheus cannot parse it: {reason}")
        raise PrometheusUnavailable(
            f"Prometheus at {self.prometheus_url} answered {url} with HTTP {status}"
            + (f": {answer.get('error')}" if isinstance(answer, dict) and answer.get("error") else "")
        )

    async def _check_rule(self, spec: AnyRuleSpec) -> None:
        if isinstance(spec, MetricRule):
            await self.check_expr(spec.expr)

    @staticmethod
    async def _missing_channels(conn: Conn, names: Sequence[str], project_id: int) -> list[str]:
        # FOR SHARE: a channel cannot be deleted or renamed while a rule naming it is written.
        if not names:
            return []
        cur = await conn.execute(
            "SELECT name FROM appguard.alert_channels WHERE project_id = %s AND name = ANY(%s) FOR SHARE",
            (project_id, list(names)),
        )
        found = {row[0] for row in await cur.fetchall()}
        return [n for n in dict.fromkeys(names) if n not in found]

    async def _check_channels(self, conn: Conn, spec: AnyRuleSpec, project_id: int) -> None:
        missing = await self._missing_channels(conn, spec.channels, project_id)
        if missing:
            raise InvalidDefinition.at("channels", f"no channel named {_names(missing)}")

    @staticmethod
    async def _rules_sending_to(conn: Conn, channel: str, project_id: int) -> list[str]:
        cur = await conn.execute(
            "SELECT name FROM appguard.alert_rules WHERE project_id = %s AND spec -> 'channels' ? %s ORDER BY name",
            (project_id, channel),
        )
        return [row[0] for row in await cur.fetchall()]

    # ---- rules

    async def list_rules(
        self, *, project_id: int = 1, kind: str | None = None, enabled: bool | None = None, limit: int = 1000
    ) -> list[RuleRecord]:
        """The project's rules by id, optionally of one kind and enabled state; at most ``limit``."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_RULE_COLUMNS} FROM appguard.alert_rules WHERE project_id = %(project)s"
                " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
                " AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s) ORDER BY id LIMIT %(limit)s",
                {"project": project_id, "kind": kind, "enabled": enabled, "limit": limit},
            )
            return [_rule_record(row) for row in await cur.fetchall()]

    async def get_rule(self, rule_id: int, *, project_id: int = 1) -> RuleRecord | None:
        """One rule, or None."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_RULE_COLUMNS} FROM appguard.alert_rules WHERE id = %s AND project_id = %s",
                (rule_id, project_id),
            )
            row = await cur.fetchone()
            return _rule_record(row) if row is not None else None

    async def create_rule(self, spec: AnyRuleSpec, *, project_id: int = 1, created_by: int | None = None) -> RuleRecord:
        """Store a new rule made through the API."""
        await self._check_rule(spec)
        async with self._pool.connection() as conn, conn.transaction():
            await self._check_channels(conn, spec, project_id)
            cur = conn.cursor(row_factory=dict_row)
            try:
                await cur.execute(
                    "INSERT INTO appguard.alert_rules (project_id, name, kind, spec, enabled, source, created_by)"
                    f" VALUES (%s, %s, %s, %s, %s, 'api', %s) RETURNING {_RULE_COLUMNS}",
                    (project_id, spec.name, spec.kind, Jsonb(_spec_json(spec)), spec.enabled, created_by),
                )
            except psycopg.errors.UniqueViolation:
                raise NameTaken.at("name", f"there is already a rule named {spec.name!r}") from None
            row = await cur.fetchone()
            assert row is not None
            return _rule_record(row)

    async def _lock_rule(self, conn: Conn, rule_id: int, project_id: int) -> dict[str, Any] | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_RULE_COLUMNS} FROM appguard.alert_rules WHERE id = %s AND project_id = %s FOR UPDATE",
            (rule_id, project_id),
        )
        row = await cur.fetchone()
        if row is not None and row["source"] == "file":
            raise _read_only("rule", row["spec"].get("name", str(rule_id)))
        return row

    async def update_rule(self, rule_id: int, spec: AnyRuleSpec, *, project_id: int = 1) -> RuleRecord | None:
        """Replace a rule's definition (its name too); None when there is no such rule."""
        async with self._pool.connection() as conn, conn.transaction():
            if await self._lock_rule(conn, rule_id, project_id) is None:
                return None
            # After the lock, so that a rule from the file is refused as such whatever its expr.
            await self._check_rule(spec)
            await self._check_channels(conn, spec, project_id)
            cur = conn.cursor(row_factory=dict_row)
            try:
                await cur.execute(
                    "UPDATE appguard.alert_rules SET name = %s, kind = %s, spec = %s, enabled = %s,"
                    f" version = version + 1, updated_at = now() WHERE id = %s RETURNING {_RULE_COLUMNS}",
                    (spec.name, spec.kind, Jsonb(_spec_json(spec)), spec.enabled, rule_id),
                )
            except psycopg.errors.UniqueViolation:
                raise NameTaken.at("name", f"there is already a rule named {spec.name!r}") from None
            row = await cur.fetchone()
            assert row is not None
            return _rule_record(row)

    async def set_rule_enabled(self, rule_id: int, enabled: bool, *, project_id: int = 1) -> RuleRecord | None:
        """Enable or disable a rule (a change of its definition); None when there is no such rule."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await self._lock_rule(conn, rule_id, project_id)
            if row is None:
                return None
            if row["spec"].get("enabled") == enabled:
                return _rule_record(row)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "UPDATE appguard.alert_rules SET enabled = %s, spec = jsonb_set(spec, '{enabled}', to_jsonb(%s::boolean)),"
                f" version = version + 1, updated_at = now() WHERE id = %s RETURNING {_RULE_COLUMNS}",
                (enabled, enabled, rule_id),
            )
            updated = await cur.fetchone()
            assert updated is not None
            return _rule_record(updated)

    async def delete_rule(self, rule_id: int, *, project_id: int = 1) -> bool:
        """Delete a rule made through the API; False when there is no such rule."""
        async with self._pool.connection() as conn, conn.transaction():
            if await self._lock_rule(conn, rule_id, project_id) is None:
                return False
            await conn.execute("DELETE FROM appguard.alert_rules WHERE id = %s", (rule_id,))
            return True

    async def enabled_rules(self, *, project_id: int | None = None) -> list[StoredRule]:
        """The enabled rules to evaluate, of every project unless ``project_id`` is given.

        A stored definition this version's models refuse (written by another AppGuard version)
        is logged and left out rather than stopping the evaluation of every other rule.
        """
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_RULE_COLUMNS} FROM appguard.alert_rules WHERE enabled"
                " AND (%(project)s::bigint IS NULL OR project_id = %(project)s) ORDER BY project_id, id",
                {"project": project_id},
            )
            rules: list[StoredRule] = []
            for row in await cur.fetchall():
                try:
                    rules.append(_rule_record(row).rule)
                except ValidationError as exc:
                    _log.error(
                        "alert rule %s cannot be evaluated, its stored definition is invalid: %s", row["id"], exc
                    )
            return rules

    # ---- channels

    async def list_channels(self, *, project_id: int = 1) -> list[ChannelRecord]:
        """The project's channels by name."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_CHANNEL_COLUMNS} FROM appguard.alert_channels WHERE project_id = %s ORDER BY name",
                (project_id,),
            )
            return [_channel_record(row) for row in await cur.fetchall()]

    async def get_channel(self, channel_id: int, *, project_id: int = 1) -> ChannelRecord | None:
        """One channel, or None."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                f"SELECT {_CHANNEL_COLUMNS} FROM appguard.alert_channels WHERE id = %s AND project_id = %s",
                (channel_id, project_id),
            )
            row = await cur.fetchone()
            return _channel_record(row) if row is not None else None

    async def channel_specs(self, *, project_id: int = 1) -> dict[str, AnyChannelSpec]:
        """Every channel of the project, name -> spec with its secrets, to build the senders."""
        return {c.name: c.spec for c in await self.list_channels(project_id=project_id)}

    async def create_channel(self, name: str, spec: AnyChannelSpec, *, project_id: int = 1) -> ChannelRecord:
        """Store a new channel made through the API."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            try:
                await cur.execute(
                    "INSERT INTO appguard.alert_channels (project_id, name, type, spec, source)"
                    f" VALUES (%s, %s, %s, %s, 'api') RETURNING {_CHANNEL_COLUMNS}",
                    (project_id, name, spec.type, Jsonb(_spec_json(spec))),
                )
            except psycopg.errors.UniqueViolation:
                raise NameTaken.at("name", f"there is already a channel named {name!r}") from None
            row = await cur.fetchone()
            assert row is not None
            return _channel_record(row)

    async def _lock_channel(self, conn: Conn, channel_id: int, project_id: int) -> ChannelRecord | None:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"SELECT {_CHANNEL_COLUMNS} FROM appguard.alert_channels WHERE id = %s AND project_id = %s FOR UPDATE",
            (channel_id, project_id),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        if row["source"] == "file":
            raise _read_only("channel", row["name"])
        return _channel_record(row)

    async def update_channel(
        self, channel_id: int, name: str, spec: AnyChannelSpec, *, project_id: int = 1
    ) -> ChannelRecord | None:
        """Replace a channel's name and spec; None when there is no such channel. A channel
        rules send to keeps its name (:class:`ChannelInUse`)."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._lock_channel(conn, channel_id, project_id)
            if current is None:
                return None
            if name != current.name:
                users = await self._rules_sending_to(conn, current.name, project_id)
                if users:
                    raise ChannelInUse.at(
                        "name", f"rules {_names(users)} send to {current.name!r}; change them before renaming it"
                    )
            cur = conn.cursor(row_factory=dict_row)
            try:
                await cur.execute(
                    "UPDATE appguard.alert_channels SET name = %s, type = %s, spec = %s, updated_at = now()"
                    f" WHERE id = %s RETURNING {_CHANNEL_COLUMNS}",
                    (name, spec.type, Jsonb(_spec_json(spec)), channel_id),
                )
            except psycopg.errors.UniqueViolation:
                raise NameTaken.at("name", f"there is already a channel named {name!r}") from None
            row = await cur.fetchone()
            assert row is not None
            return _channel_record(row)

    async def delete_channel(self, channel_id: int, *, project_id: int = 1) -> bool:
        """Delete a channel no rule sends to; False when there is no such channel."""
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._lock_channel(conn, channel_id, project_id)
            if current is None:
                return False
            users = await self._rules_sending_to(conn, current.name, project_id)
            if users:
                raise ChannelInUse.at("", f"rules {_names(users)} send to {current.name!r}; change them first")
            await conn.execute("DELETE FROM appguard.alert_channels WHERE id = %s", (channel_id,))
            return True

    # ---- the rules file

    async def apply_file(
        self, channels: Mapping[str, AnyChannelSpec], rules: Sequence[AnyRuleSpec], *, project_id: int = 1
    ) -> SyncReport:
        """Make the project's file definitions those given, in one transaction.

        Channels and rules are matched by name: new ones are created, changed ones updated
        (a rule's ``version`` counts up), those no longer given deleted. A name the API already
        uses, a rule naming a channel that exists nowhere, a deleted channel an API rule still
        sends to and PromQL that does not parse raise :class:`InvalidDefinition` with paths into
        the file (``channels.ops``, ``rules[2].channels``); then nothing changes.
        """
        problems: list[tuple[str, str]] = []
        for i, spec in enumerate(rules):
            try:
                await self._check_rule(spec)
            except InvalidDefinition as exc:
                problems += exc.under(f"rules[{i}]").problems
        report = SyncReport()
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await self._write_file(conn, channels, rules, project_id, report, problems)
                if problems:
                    # Raising inside the transaction rolls every change of this call back.
                    raise InvalidDefinition(problems)
        except psycopg.errors.UniqueViolation:
            # The API created a rule or channel of a name the file brings, after the lock was taken.
            raise InvalidDefinition.at(
                "", "a name of the file was taken meanwhile through the API; sync again"
            ) from None
        return report

    async def _write_file(
        self,
        conn: Conn,
        channels: Mapping[str, AnyChannelSpec],
        rules: Sequence[AnyRuleSpec],
        project_id: int,
        report: SyncReport,
        problems: list[tuple[str, str]],
    ) -> None:
        """Write the file's definitions in ``conn``'s transaction, adding what is wrong to ``problems``."""
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (FILE_SYNC_LOCK_KEY,))
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, name, spec, source FROM appguard.alert_channels WHERE project_id = %s FOR UPDATE",
            (project_id,),
        )
        stored_channels = {row["name"]: row for row in await cur.fetchall()}
        await cur.execute(
            "SELECT id, name, spec, source FROM appguard.alert_rules WHERE project_id = %s FOR UPDATE",
            (project_id,),
        )
        stored_rules = {row["name"]: row for row in await cur.fetchall()}

        for name, channel in channels.items():
            data = _spec_json(channel)
            old = stored_channels.get(name)
            if old is None:
                await conn.execute(
                    "INSERT INTO appguard.alert_channels (project_id, name, type, spec, source)"
                    " VALUES (%s, %s, %s, %s, 'file')",
                    (project_id, name, channel.type, Jsonb(data)),
                )
                report.channels_created.append(name)
            elif old["source"] != "file":
                problems.append((f"channels.{name}", "a channel made through the API has this name; rename one"))
            elif old["spec"] != data:
                await conn.execute(
                    "UPDATE appguard.alert_channels SET type = %s, spec = %s, updated_at = now() WHERE id = %s",
                    (channel.type, Jsonb(data), old["id"]),
                )
                report.channels_updated.append(name)

        for i, spec in enumerate(rules):
            missing = await self._missing_channels(conn, spec.channels, project_id)
            if missing:
                problems.append((f"rules[{i}].channels", f"no channel named {_names(missing)}"))
            data = _spec_json(spec)
            old = stored_rules.get(spec.name)
            if old is None:
                await conn.execute(
                    "INSERT INTO appguard.alert_rules (project_id, name, kind, spec, enabled, source)"
                    " VALUES (%s, %s, %s, %s, %s, 'file')",
                    (project_id, spec.name, spec.kind, Jsonb(data), spec.enabled),
                )
                report.rules_created.append(spec.name)
            elif old["source"] != "file":
                problems.append((f"rules[{i}].name", "a rule made through the API has this name; rename one"))
            elif old["spec"] != data:
                await conn.execute(
                    "UPDATE appguard.alert_rules SET kind = %s, spec = %s, enabled = %s, version = version + 1,"
                    " updated_at = now() WHERE id = %s",
                    (spec.kind, Jsonb(data), spec.enabled, old["id"]),
                )
                report.rules_updated.append(spec.name)

        kept_rules = {spec.name for spec in rules}
        for name, old in stored_rules.items():
            if old["source"] == "file" and name not in kept_rules:
                await conn.execute("DELETE FROM appguard.alert_rules WHERE id = %s", (old["id"],))
                report.rules_deleted.append(name)
        for name, old in stored_channels.items():
            if old["source"] == "file" and name not in channels:
                users = await self._rules_sending_to(conn, name, project_id)
                if users:
                    problems.append(
                        ("channels", f"{name!r} is no longer in the file but rules {_names(users)} send to it")
                    )
                await conn.execute("DELETE FROM appguard.alert_channels WHERE id = %s", (old["id"],))
                report.channels_deleted.append(name)
