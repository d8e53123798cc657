"""The dashboard's alerting pages: the alerts overview, and the forms of alert rules and
notification channels.

``/alerts`` shows what is firing or pending, the rules (with an enabled switch and a test send),
the channels, and the notification queue's dead letters and sizes. ``/alerts/rules/new`` and
``/alerts/rules/{id}`` hold the rule form (its fields shown by the rule's kind) and the rule's
history; ``/alerts/channels/new`` and ``/alerts/channels/{id}`` the channel form (its fields
shown by the channel's type).

Pages are rendered on the server from the stores the REST API uses (:mod:`api.alerts`,
:mod:`api.alert_activity`); the browser sends every change to that API
(``api/static/js/alerts.js``, ``alert-rule-form.js``, ``alert-channel-form.js``), so its checks and
roles apply unchanged and a refused field is shown where the API names it. Viewers get the
same pages without the controls; rules and channels from the rules file are read-only to all.
A channel's secrets never reach a page: they show as ``********`` and are kept unless changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from alerting.channels.specs import AlertmanagerSpec, EmailSpec, SlackSpec, WebhookSpec, redacted
from alerting.model import IssueRule, MetricRule, RuleFilters, ThresholdRule
from alerting.store import AnyChannelSpec, AnyRuleSpec, RuleRecord
from api.alert_activity import notification_queue, state_store
from api.alerts import IdParams, rule_store
from api.errors import ApiError
from api.pages import render
from api.routing import ROUTES, params, principal
from storage.users_store import Role

#: The project the pages show, as the alerting endpoints do until the API has projects.
_PROJECT = 1

#: The rule kinds and channel types in the order the forms offer them.
RULE_KINDS: dict[str, str] = {"issue": "Issue", "threshold": "Threshold", "metric": "Metric (PromQL)"}
CHANNEL_TYPES: dict[str, str] = {"email": "Email", "slack": "Slack", "webhook": "Webhook", "alertmanager": "Alertmanager"}

# Each kind and type with placeholders for its required fields: the blank form's values.
_BLANK_RULES: dict[str, AnyRuleSpec] = {
    "issue": IssueRule.model_construct(name="", when="new_issue"),
    "threshold": ThresholdRule.model_construct(name=""),
    "metric": MetricRule.model_construct(name="", expr=""),
}
_BLANK_CHANNELS: dict[str, AnyChannelSpec] = {
    "email": EmailSpec.model_construct(to=[], host="", from_=""),
    "slack": SlackSpec.model_construct(webhook_url=""),
    "webhook": WebhookSpec.model_construct(url=""),
    "alertmanager": AlertmanagerSpec.model_construct(url=""),
}

_WHEN = {"new_issue": "a new issue appears", "regression": "a resolved issue has a new event"}


# --------------------------------------------------------------------------- text for people


def duration(seconds: float | None) -> str:
    """Seconds as the duration text the forms take back (``90`` -> ``1m30s``, ``0.2`` -> ``200ms``)."""
    if seconds is None:
        return ""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    whole, rest = divmod(millis, 1000)
    if whole == 0:
        return f"{rest}ms"
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text + (f"{rest}ms" if rest else "")


def number(value: float | None) -> str:
    """A threshold or count without needless decimals (``10.0`` -> ``10``)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def condition(spec: AnyRuleSpec) -> str:
    """When the rule alerts, in one line (``error count over 5m ≥ 10 (warning) per service``)."""
    if isinstance(spec, IssueRule):
        if spec.when != "frequency":
            return _WHEN[spec.when]
        counts = [f"{number(n)} {what}" for n, what in ((spec.events, "events"), (spec.users, "users")) if n]
        return f"an issue gets more than {' or '.join(counts)} in {duration(spec.window)}"
    if isinstance(spec, ThresholdRule):
        measure = "error count" if spec.measure == "count" else "errors/s"
        unit = "%" if spec.compare == "percent_change" else ""
        levels = ", ".join(
            f"{number(level)}{unit} ({name})"
            for name, level in (("warning", spec.warning), ("critical", spec.critical))
            if level is not None
        )
        if spec.compare == "percent_change":
            text = f"{measure} over {duration(spec.window)} up on the window before by {levels}"
        else:
            text = f"{measure} over {duration(spec.window)} ≥ {levels}"
        if spec.per:
            text += " per " + ", ".join(spec.per)
        return text + (f" for {duration(spec.for_)}" if spec.for_ else "")
    return spec.expr + (f" for {duration(spec.for_)}" if spec.for_ else "")


def filters_text(spec: AnyRuleSpec) -> str:
    """The filters that narrow a rule, in one line (empty when it looks at every error)."""
    filters: RuleFilters | None = getattr(spec, "filters", None)
    if filters is None:
        return ""
    parts = [
        f"{name}: {', '.join(values)}"
        for name, values in (
            ("service", filters.service),
            ("environment", filters.environment),
            ("level", filters.level),
            ("type", filters.exception_type),
        )
        if values
    ]
    parts += [f"{key}={value}" for key, value in filters.tags.items()]
    return " · ".join(parts)


def destination(spec: AnyChannelSpec) -> str:
    """Where a channel sends, without its secrets (a Slack webhook's URL is one)."""
    if isinstance(spec, EmailSpec):
        return ", ".join(spec.to)
    if isinstance(spec, SlackSpec):
        return spec.channel or "Slack incoming webhook"
    return spec.url


def lines(mapping: Mapping[str, Any] | None, sep: str = "=") -> str:
    """A mapping as the ``key=value`` lines of a form's text area."""
    return "\n".join(f"{key}{sep}{value}" for key, value in (mapping or {}).items())


# --------------------------------------------------------------------------- form values


def rule_values(spec: AnyRuleSpec | None) -> dict[str, dict[str, Any]]:
    """The rule form's values per kind: the rule's own for its kind, the defaults for the others
    (so that switching kinds shows sensible values)."""
    out = {}
    for kind, blank in _BLANK_RULES.items():
        source = spec if spec is not None and spec.kind == kind else blank
        out[kind] = source.model_dump(mode="json", by_alias=True)
    return out


def channel_values(spec: AnyChannelSpec | None) -> dict[str, dict[str, Any]]:
    """The channel form's values per type; the channel's secrets as ``********``."""
    out = {}
    for kind, blank in _BLANK_CHANNELS.items():
        out[kind] = redacted(spec) if spec is not None and spec.type == kind else blank.model_dump(mode="json", by_alias=True)
    return out


def _can_change(request: web.Request) -> bool:
    return principal(request).role.includes(Role.MEMBER)


# --------------------------------------------------------------------------- pages


async def alerts_page(request: web.Request) -> web.StreamResponse:
    """Active alerts, rules, channels, dead letters and the queue's sizes."""
    store = rule_store(request)
    rules = await store.list_rules(project_id=_PROJECT, limit=1000)
    channels = await store.list_channels(project_id=_PROJECT)
    active_alerts = await state_store(request).active([r.rule.id for r in rules])
    queue = notification_queue(request)
    dead_letters = await queue.dead_letters(limit=50)
    stats = await queue.stats()
    return render(
        request,
        "alerts.html",
        title="Alerts",
        rules=rules,
        rule_names={r.rule.id: r.rule.spec.name for r in rules},
        channels=channels,
        active_alerts=active_alerts,
        dead_letters=dead_letters,
        stats=stats,
        kinds=RULE_KINDS,
        types=CHANNEL_TYPES,
        can_change=_can_change(request),
    )


async def _rule_form(request: web.Request, record: RuleRecord | None) -> web.StreamResponse:
    spec = record.rule.spec if record is not None else None
    channels = await rule_store(request).list_channels(project_id=_PROJECT)
    can_change = _can_change(request)
    return render(
        request,
        "alert_rule.html",
        active="/alerts",
        title=spec.name if spec is not None else "New alert rule",
        record=record,
        spec=spec,
        kind=spec.kind if spec is not None else "issue",
        values=rule_values(spec),
        channel_names=[c.name for c in channels],
        kinds=RULE_KINDS,
        can_change=can_change,
        editable=can_change and (record is None or record.rule.source == "api"),
    )


async def new_alert_rule_page(request: web.Request) -> web.StreamResponse:
    """The form of a new alert rule."""
    return await _rule_form(request, None)


async def alert_rule_page(request: web.Request) -> web.StreamResponse:
    """An alert rule's form, its history and its test send."""
    target = params(request, IdParams)
    record = await rule_store(request).get_rule(target.id, project_id=_PROJECT)
    if record is None:
        raise ApiError(404, "alert_rule_not_found", f"there is no alert rule {target.id}")
    return await _rule_form(request, record)


async def _channel_form(request: web.Request, target: int | None) -> web.StreamResponse:
    record = None
    if target is not None:
        record = await rule_store(request).get_channel(target, project_id=_PROJECT)
        if record is None:
            raise ApiError(404, "alert_channel_not_found", f"there is no alert channel {target}")
    can_change = _can_change(request)
    return render(
        request,
        "alert_channel.html",
        active="/alerts",
        title=record.name if record is not None else "New notification channel",
        record=record,
        type=record.spec.type if record is not None else "email",
        values=channel_values(record.spec if record is not None else None),
        types=CHANNEL_TYPES,
        can_change=can_change,
        editable=can_change and (record is None or record.source == "api"),
    )


async def new_alert_channel_page(request: web.Request) -> web.StreamResponse:
    """The form of a new notification channel."""
    return await _channel_form(request, None)


async def alert_channel_page(request: web.Request) -> web.StreamResponse:
    """A notification channel's form and its test send."""
    return await _channel_form(request, params(request, IdParams).id)


def register(app: web.Application) -> None:
    """Declare the alerting pages and their template filters."""
    from api.services import SERVICES

    env = app[SERVICES].templates
    env.filters["duration"] = duration
    env.filters["number"] = number
    env.filters["condition"] = condition
    env.filters["filters_text"] = filters_text
    env.filters["destination"] = destination
    env.filters["lines"] = lines
    routes = app[ROUTES]
    routes.page("/alerts", alerts_page, role=Role.VIEWER, summary="Alerts, rules, channels and dead letters")
    # The "new" forms before the {id} ones, which would take "new" for an id.
    routes.page("/alerts/rules/new", new_alert_rule_page, role=Role.MEMBER, summary="New alert rule form")
    routes.page("/alerts/rules/{id}", alert_rule_page, role=Role.VIEWER, summary="Alert rule", params=IdParams)
    routes.page("/alerts/channels/new", new_alert_channel_page, role=Role.MEMBER, summary="New channel form")
    routes.page(
        "/alerts/channels/{id}", alert_channel_page, role=Role.VIEWER, summary="Notification channel", params=IdParams
    )
