"""The alerting endpoints: alert rules, notification channels and the Prometheus rules export.

Thin handlers over :class:`alerting.store.RuleStore`. Viewers read; members and admins edit.
Rule and channel specs are checked here with the alerting models (:func:`parse_rule`,
:func:`parse_channel`) rather than by the route table, so that an error names the field as the
user wrote it (``window``, ``spec.webhook_url``) whatever the rule's kind; the OpenAPI document
still shows their schemas. A store's :class:`DefinitionError` becomes 400 (invalid) or 409
(name taken, defined in the rules file, channel in use).

Enabling and disabling a rule is ``PATCH /api/alert-rules/{id}`` with ``{"enabled": bool}``;
``PUT`` replaces the whole definition. Channels' secrets are never returned: they show as
``********``, and a ``PUT`` that sends ``********`` or leaves a secret out keeps the stored one.

Metric rules are checked against the Prometheus of the config's ``prometheus_url``; without
one they are refused. Each group of endpoints is
declared by its own ``_declare_*`` function, called from :func:`register`: later groups
(test sends, alert history, dead letters) add theirs beside them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel, TypeAdapter
from pydantic.json_schema import GetJsonSchemaHandler, JsonSchemaValue
from pydantic_core import CoreSchema

from alerting.channels.specs import CHANNEL_SPEC, redacted
from alerting.model import AlertRuleSpec
from alerting.promexport import render
from alerting.state import AlertStateStore
from alerting.store import (
    RULE_SPEC,
    ChannelInUse,
    ChannelRecord,
    DefinitionError,
    InvalidDefinition,
    NameTaken,
    PrometheusUnavailable,
    ReadOnlyDefinition,
    RuleRecord,
    RuleStore,
    parse_channel,
    parse_rule,
    with_stored_secrets,
)
from api.errors import ApiError
from api.routing import ROUTES, RouteTable, body, json_response, params, principal, query
from api.services import SERVICES
from storage.users_store import Role

#: The Prometheus HTTP API metric rules are checked against, when set on the application before
#: it starts; else the config's ``prometheus_url``. Neither: metric rules are refused.
PROMETHEUS_URL = web.AppKey("appguard_alerting_prometheus_url", str)

_STORE = web.AppKey("appguard_rule_store", RuleStore)

#: The project every alerting endpoint works on until the API has projects.
_PROJECT = 1

_ID_MAX = 2**63 - 1


# --------------------------------------------------------------------------- request models


class _CheckedObject(RootModel[dict[str, Any]]):
    """A JSON object the handler validates itself, documented with the schema of ``documented_by``."""

    documented_by: ClassVar[TypeAdapter[Any]]

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(cls.documented_by.core_schema)


class RuleSpecBody(_CheckedObject):
    """An alert rule; `kind` (issue, threshold or metric) says which fields it has."""

    documented_by: ClassVar[TypeAdapter[Any]] = RULE_SPEC


class ChannelSpec(_CheckedObject):
    """A channel's settings; `type` (email, slack, webhook or alertmanager) says which fields it has."""

    documented_by: ClassVar[TypeAdapter[Any]] = CHANNEL_SPEC


class ChannelBody(BaseModel):
    """A notification channel: the name rules use to send to it, and its settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    spec: ChannelSpec


class RuleEnabled(BaseModel):
    """Enable or disable the rule."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool


class RuleListQuery(BaseModel):
    """Filters of the rule list, and how many rules at most."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["issue", "threshold", "metric"] | None = None
    enabled: bool | None = None
    limit: int = Field(default=500, ge=1, le=1000)


class IdParams(BaseModel):
    """The rule's or channel's id in the path."""

    id: int = Field(ge=1, le=_ID_MAX)


# --------------------------------------------------------------------------- response models


class RuleOut(BaseModel):
    """An alert rule: its definition (`spec`), who owns it (`source`: `api`, or `file`: read-only
    here), and `version`, counting the changes of its definition."""

    id: int
    name: str
    kind: Literal["issue", "threshold", "metric"]
    enabled: bool
    source: Literal["api", "file"]
    version: int
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    spec: AlertRuleSpec


class RuleList(BaseModel):
    """Alert rules by id."""

    rules: list[RuleOut]


class ChannelOut(BaseModel):
    """A notification channel; its secrets show as `********` when set."""

    id: int
    name: str
    type: Literal["email", "slack", "webhook", "alertmanager"]
    source: Literal["api", "file"]
    created_at: datetime
    updated_at: datetime
    spec: ChannelSpec


class ChannelList(BaseModel):
    """Notification channels by name."""

    channels: list[ChannelOut]


# --------------------------------------------------------------------------- helpers


def rule_store(request: web.Request) -> RuleStore:
    """The application's :class:`RuleStore`."""
    return request.app[_STORE]


def _rule_out(record: RuleRecord) -> dict[str, Any]:
    spec = record.rule.spec
    out = RuleOut(
        id=record.rule.id,
        name=spec.name,
        kind=spec.kind,
        enabled=spec.enabled,
        source=record.rule.source,
        version=record.version,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
        spec=spec,
    )
    # By alias: a rule's `for` is `for_` in Python.
    return out.model_dump(mode="json", by_alias=True)


def _channel_out(record: ChannelRecord) -> dict[str, Any]:
    return ChannelOut(
        id=record.id,
        name=record.name,
        type=record.spec.type,
        source=record.source,
        created_at=record.created_at,
        updated_at=record.updated_at,
        spec=ChannelSpec(redacted(record.spec)),
    ).model_dump(mode="json")


_CONFLICTS: dict[type[DefinitionError], str] = {
    NameTaken: "name_taken",
    ReadOnlyDefinition: "defined_in_file",
    ChannelInUse: "channel_in_use",
}


def _refused(exc: DefinitionError) -> ApiError:
    message = exc.message
    more = len(exc.problems) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    code = _CONFLICTS.get(type(exc))
    if code is not None:
        return ApiError(409, code, message, field=exc.field)
    return ApiError(400, "invalid_request", message, field=exc.field)


def _unavailable(exc: PrometheusUnavailable) -> ApiError:
    return ApiError(503, "prometheus_unavailable", str(exc), field="expr", headers={"Retry-After": "5"})


def _rule_not_found(rule_id: int) -> ApiError:
    return ApiError(404, "alert_rule_not_found", f"there is no alert rule {rule_id}")


def _channel_not_found(channel_id: int) -> ApiError:
    return ApiError(404, "alert_channel_not_found", f"there is no alert channel {channel_id}")


# --------------------------------------------------------------------------- rule handlers


async def list_alert_rules(request: web.Request) -> web.StreamResponse:
    """The alert rules, by id."""
    q = query(request, RuleListQuery)
    found = await rule_store(request).list_rules(project_id=_PROJECT, kind=q.kind, enabled=q.enabled, limit=q.limit)
    return json_response({"rules": [_rule_out(r) for r in found]})


async def create_alert_rule(request: web.Request) -> web.StreamResponse:
    """Create an alert rule."""
    raw = body(request, RuleSpecBody).root
    try:
        record = await rule_store(request).create_rule(
            parse_rule(raw), project_id=_PROJECT, created_by=principal(request).user.id
        )
    except DefinitionError as exc:
        raise _refused(exc) from None
    except PrometheusUnavailable as exc:
        raise _unavailable(exc) from None
    return json_response(_rule_out(record), status=201)


async def get_alert_rule(request: web.Request) -> web.StreamResponse:
    """One alert rule."""
    target = params(request, IdParams)
    record = await rule_store(request).get_rule(target.id, project_id=_PROJECT)
    if record is None:
        raise _rule_not_found(target.id)
    return json_response(_rule_out(record))


async def update_alert_rule(request: web.Request) -> web.StreamResponse:
    """Replace an alert rule's definition."""
    target = params(request, IdParams)
    raw = body(request, RuleSpecBody).root
    try:
        record = await rule_store(request).update_rule(target.id, parse_rule(raw), project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    except PrometheusUnavailable as exc:
        raise _unavailable(exc) from None
    if record is None:
        raise _rule_not_found(target.id)
    return json_response(_rule_out(record))


async def set_alert_rule_enabled(request: web.Request) -> web.StreamResponse:
    """Enable or disable an alert rule."""
    target = params(request, IdParams)
    change = body(request, RuleEnabled)
    try:
        record = await rule_store(request).set_rule_enabled(target.id, change.enabled, project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    if record is None:
        raise _rule_not_found(target.id)
    return json_response(_rule_out(record))


async def delete_alert_rule(request: web.Request) -> web.StreamResponse:
    """Delete an alert rule."""
    target = params(request, IdParams)
    try:
        deleted = await rule_store(request).delete_rule(target.id, project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    if not deleted:
        raise _rule_not_found(target.id)
    # Its alerts' states and history go with it.
    await AlertStateStore(request.app[SERVICES].pool).forget_rule(target.id)
    return web.Response(status=204)


async def export_prometheus_rules(request: web.Request) -> web.StreamResponse:
    """The enabled threshold rules as a Prometheus alerting-rules file."""
    rules = await rule_store(request).enabled_rules(project_id=_PROJECT)
    return web.Response(text=render(rules), content_type="text/yaml")


# --------------------------------------------------------------------------- channel handlers


def _channel_spec(data: ChannelBody, current: ChannelRecord | None) -> Any:
    try:
        return parse_channel(with_stored_secrets(data.spec.root, current.spec if current is not None else None))
    except InvalidDefinition as exc:
        raise _refused(exc.under("spec")) from None


async def list_alert_channels(request: web.Request) -> web.StreamResponse:
    """The notification channels, by name."""
    found = await rule_store(request).list_channels(project_id=_PROJECT)
    return json_response({"channels": [_channel_out(c) for c in found]})


async def create_alert_channel(request: web.Request) -> web.StreamResponse:
    """Create a notification channel."""
    data = body(request, ChannelBody)
    spec = _channel_spec(data, None)
    try:
        record = await rule_store(request).create_channel(data.name, spec, project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    return json_response(_channel_out(record), status=201)


async def get_alert_channel(request: web.Request) -> web.StreamResponse:
    """One notification channel."""
    target = params(request, IdParams)
    record = await rule_store(request).get_channel(target.id, project_id=_PROJECT)
    if record is None:
        raise _channel_not_found(target.id)
    return json_response(_channel_out(record))


async def update_alert_channel(request: web.Request) -> web.StreamResponse:
    """Replace a notification channel's name and settings."""
    target = params(request, IdParams)
    data = body(request, ChannelBody)
    store = rule_store(request)
    current = await store.get_channel(target.id, project_id=_PROJECT)
    if current is None:
        raise _channel_not_found(target.id)
    try:
        record = await store.update_channel(target.id, data.name, _channel_spec(data, current), project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    if record is None:
        raise _channel_not_found(target.id)
    return json_response(_channel_out(record))


async def delete_alert_channel(request: web.Request) -> web.StreamResponse:
    """Delete a notification channel no rule sends to."""
    target = params(request, IdParams)
    try:
        deleted = await rule_store(request).delete_channel(target.id, project_id=_PROJECT)
    except DefinitionError as exc:
        raise _refused(exc) from None
    if not deleted:
        raise _channel_not_found(target.id)
    return web.Response(status=204)


# --------------------------------------------------------------------------- registration


def _declare_rules(routes: RouteTable) -> None:
    tags = ["alerts"]
    not_found = {404: "no such rule"}
    written = {409: "the name is taken, or the rule comes from the rules file", 503: "Prometheus did not answer"}
    routes.add(
        "GET", "/api/alert-rules", list_alert_rules, role=Role.VIEWER, summary="List alert rules",
        query=RuleListQuery, responses={200: RuleList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/alert-rules", create_alert_rule, role=Role.MEMBER, summary="Create an alert rule",
        description="A 400 names the field at fault; the channels a rule names must exist; a metric rule's "
        "`expr` must parse in the configured Prometheus.",
        body=RuleSpecBody, responses={201: RuleOut}, errors=written, tags=tags,
    )  # fmt: skip
    # Before /{id}, which would otherwise take "prometheus.yml" for an id.
    routes.add(
        "GET", "/api/alert-rules/prometheus.yml", export_prometheus_rules, role=Role.VIEWER,
        summary="The threshold rules as Prometheus alerting rules",
        description="A Prometheus rules file (`text/yaml`, groups/rules) of the enabled threshold rules over "
        "`appguard_errors_total`, one rule per severity level, for `promtool check rules` and a Prometheus "
        "`rule_files` directory. Rules filtering on `level` are left out and named in a comment.",
        responses={200: None}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/alert-rules/{id}", get_alert_rule, role=Role.VIEWER, summary="An alert rule",
        params=IdParams, responses={200: RuleOut}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "PUT", "/api/alert-rules/{id}", update_alert_rule, role=Role.MEMBER, summary="Replace an alert rule",
        params=IdParams, body=RuleSpecBody, responses={200: RuleOut}, errors={**not_found, **written}, tags=tags,
    )  # fmt: skip
    routes.add(
        "PATCH", "/api/alert-rules/{id}", set_alert_rule_enabled, role=Role.MEMBER,
        summary="Enable or disable an alert rule", params=IdParams, body=RuleEnabled, responses={200: RuleOut},
        errors={**not_found, 409: "the rule comes from the rules file"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/alert-rules/{id}", delete_alert_rule, role=Role.MEMBER, summary="Delete an alert rule",
        params=IdParams, responses={204: None}, errors={**not_found, 409: "the rule comes from the rules file"},
        tags=tags,
    )  # fmt: skip


def _declare_channels(routes: RouteTable) -> None:
    tags = ["alerts"]
    not_found = {404: "no such channel"}
    routes.add(
        "GET", "/api/alert-channels", list_alert_channels, role=Role.VIEWER, summary="List notification channels",
        responses={200: ChannelList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/alert-channels", create_alert_channel, role=Role.MEMBER,
        summary="Create a notification channel", body=ChannelBody, responses={201: ChannelOut},
        errors={409: "the name is taken"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/alert-channels/{id}", get_alert_channel, role=Role.VIEWER, summary="A notification channel",
        params=IdParams, responses={200: ChannelOut}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "PUT", "/api/alert-channels/{id}", update_alert_channel, role=Role.MEMBER,
        summary="Replace a notification channel",
        description="A secret sent as `********`, or left out, keeps its stored value (while the type stays "
        "the same); send null to remove an optional one. A channel rules send to keeps its name.",
        params=IdParams, body=ChannelBody, responses={200: ChannelOut},
        errors={**not_found, 409: "the name is taken, rules send to it, or it comes from the rules file"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/alert-channels/{id}", delete_alert_channel, role=Role.MEMBER,
        summary="Delete a notification channel", params=IdParams, responses={204: None},
        errors={**not_found, 409: "rules send to it, or it comes from the rules file"}, tags=tags,
    )  # fmt: skip


async def _open_store(app: web.Application) -> None:
    # At start-up rather than in register(), so that PROMETHEUS_URL may be set after build_app().
    configured = app.get(PROMETHEUS_URL) or app[SERVICES].config.prometheus_url
    app[_STORE] = RuleStore(app[SERVICES].pool, prometheus_url=configured)


def register(app: web.Application) -> None:
    """Declare the alerting endpoints."""
    app.on_startup.append(_open_store)
    routes = app[ROUTES]
    _declare_rules(routes)
    _declare_channels(routes)
