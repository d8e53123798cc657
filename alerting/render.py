"""Turning a notification into what people read: email subject and bodies, Slack blocks.

The words live in Jinja2 templates under ``alerting/templates/``; a deployment can replace
any of them by putting a file of the same name in its own directory (``override_dir``), which
is looked at first. The templates:

========================  ===================================================================
``title.txt``             one line: the email subject and the Slack header
``email.txt``             the plain-text email body
``email.html``            the HTML email body (the only template that is HTML-escaped)
``alert.txt``             one alert as text, included by ``email.txt``
``slack_alert.md``        one alert as a Slack ``mrkdwn`` section
``slack_text.txt``        the Slack message's ``text``: what notifications and old clients show
========================  ===================================================================

Every template gets ``notification``, ``items`` (one :class:`AlertView` per alert, firing
ones first), ``firing`` and ``resolved`` (the views by state), ``status`` (``firing`` while
any alert fires, else ``resolved``), ``rule_name``, ``scope`` (the service and environment the
alerts share, e.g. ``shop production``), ``dashboard_url`` and ``public_url``; all but
``title.txt`` also get ``title``. ``slack_alert.md`` gets its alert as ``item``. Values that
a template writes into Slack ``mrkdwn`` are escaped as Slack asks (``&``, ``<``, ``>``); the
template's own text is not, so it may hold Slack links (``<url|text>``) and formatting.

A template that does not parse is reported when the :class:`Renderer` is made, naming the file
and line; a name a template uses that does not exist renders as nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import jinja2

from alerting.model import Alert, Notification

TEMPLATES_DIR = Path(__file__).parent / "templates"

#: Every template a :class:`Renderer` uses (and checks when it is made).
TEMPLATE_NAMES = ("title.txt", "email.txt", "email.html", "alert.txt", "slack_alert.md", "slack_text.txt")

#: Alerts shown one by one in a Slack message; the rest are counted ("and 4 more").
SLACK_MAX_ALERTS = 10
# Slack's Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
SLACK_TEXT_MAX = 4000
SLACK_BUTTON_TEXT_MAX = 75
SLACK_URL_MAX = 3000

_WHITESPACE = re.compile(r"\s+")


class TemplateConfigError(ValueError):
    """A template could not be loaded or parsed; the message names the file and line."""


def rfc3339(value: datetime) -> str:
    """``value`` as RFC 3339 in UTC with a ``Z`` (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def _readable_time(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space, stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with an ellipsis if it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(value: Any) -> str:
    """Text made safe for Slack ``mrkdwn``: the three characters Slack asks to escape."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class AlertView:
    """One alert as the templates show it, with the choices made once for every template.

    ``title`` is the issue's title for issue rules, else the ``summary`` annotation, else the
    rule's name. ``link`` is an absolute http(s) URL to the dashboard, or None when none can be
    made (a relative ``alert.url`` needs the renderer's ``public_url``).
    """

    alert: Alert
    status: str
    title: str
    culprit: str
    events: int | None
    users: int | None
    service: str
    environment: str
    level: str
    severity: str
    value: float | None
    summary: str
    description: str
    link: str | None
    starts_at: str
    ends_at: str


class Renderer:
    """Renders notifications with the packaged templates, or the ones in ``override_dir``.

    ``public_url`` is the dashboard's address as users reach it; relative alert links are
    resolved against it.
    """

    def __init__(self, override_dir: Path | None = None, public_url: str | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None:
            if not override_dir.is_dir():
                raise TemplateConfigError(f"{override_dir}: not a directory")
            loaders.append(jinja2.FileSystemLoader(override_dir))
        loaders.append(jinja2.FileSystemLoader(TEMPLATES_DIR))
        self.override_dir = override_dir
        self.public_url = public_url.rstrip("/") + "/" if public_url else None
        common: dict[str, Any] = {
            "loader": jinja2.ChoiceLoader(loaders),
            "undefined": jinja2.ChainableUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
            "keep_trailing_newline": False,
        }
        # HTML templates are escaped; text and Slack ones are not HTML. Slack templates get
        # their own environment so that every value they print is escaped for mrkdwn.
        self._env = jinja2.Environment(
            autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False, default=False),
            **common,
        )
        self._slack_env = jinja2.Environment(autoescape=False, finalize=slack_escape, **common)
        for env in (self._env, self._slack_env):
            env.filters["when"] = _readable_time
        for name in TEMPLATE_NAMES:
            self._template(name)

    def _template(self, name: str) -> jinja2.Template:
        env = self._slack_env if name.startswith("slack_") else self._env
        try:
            return env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateConfigError(f"{exc.filename or name}:{exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateConfigError(f"{name}: {exc}") from None

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self._template(name).render(context)
        except jinja2.TemplateError as exc:
            raise TemplateConfigError(f"{name}: {exc}") from None

    # ---- the values templates see

    def link(self, url: str | None) -> str | None:
        """``url`` made absolute with ``public_url``; None unless the result is http(s)."""
        if not url:
            return None
        if self.public_url is not None and not urlsplit(url).scheme:
            url = urljoin(self.public_url, url.lstrip("/"))
        return url if urlsplit(url).scheme in ("http", "https") and len(url) <= SLACK_URL_MAX else None

    def view(self, alert: Alert) -> AlertView:
        """The :class:`AlertView` of one alert."""
        issue = alert.issue or {}
        labels = alert.labels
        summary = alert.annotations.get("summary", "")
        return AlertView(
            alert=alert,
            status=alert.status,
            title=one_line(str(issue.get("title") or summary or alert.rule_name)),
            culprit=str(issue.get("culprit") or ""),
            events=_number(issue.get("count")),
            users=_number(issue.get("users")),
            service=str(labels.get("service") or issue.get("service") or ""),
            environment=str(labels.get("environment") or issue.get("environment") or ""),
            level=str(issue.get("level") or labels.get("level") or ""),
            severity=str(alert.severity),
            value=alert.value,
            summary=summary,
            description=alert.annotations.get("description", ""),
            link=self.link(alert.url),
            starts_at=_readable_time(alert.starts_at),
            ends_at=_readable_time(alert.ends_at),
        )

    def context(self, notification: Notification) -> dict[str, Any]:
        """What every template gets (see the module's description), ``title`` included."""
        alerts = sorted(notification.alerts, key=lambda a: a.status != "firing")
        items = [self.view(a) for a in alerts]
        firing = [v for v in items if v.status == "firing"]
        context: dict[str, Any] = {
            "notification": notification,
            "items": items,
            "firing": firing,
            "resolved": [v for v in items if v.status == "resolved"],
            "status": "firing" if firing else "resolved",
            "rule_name": rule_name(notification),
            "scope": " ".join(v for v in (_shared(notification, "service"), _shared(notification, "environment")) if v),
            "dashboard_url": self.link(notification.dashboard_url),
            "public_url": self.public_url,
        }
        context["title"] = truncate(one_line(self._render("title.txt", context)), 998)
        return context

    # ---- what channels send

    def email(self, notification: Notification) -> RenderedEmail:
        """Subject, plain-text body and HTML body of the notification's email."""
        context = self.context(notification)
        return RenderedEmail(
            subject=context["title"],
            text=self._render("email.txt", context).strip() + "\n",
            html=self._render("email.html", context),
        )

    def slack(self, notification: Notification) -> dict[str, Any]:
        """The Slack message: ``blocks`` (a header, a section per alert up to
        :data:`SLACK_MAX_ALERTS`, then a count of the others) and the ``text`` fallback."""
        context = self.context(notification)
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(context["title"], SLACK_HEADER_MAX), "emoji": True}}
        ]
        items: list[AlertView] = context["items"]
        for item in items[:SLACK_MAX_ALERTS]:
            text = self._render("slack_alert.md", {**context, "item": item}).strip() or slack_escape(item.title)
            section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SLACK_SECTION_MAX)}}
            if item.link is not None:
                section["accessory"] = {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in AppGuard"},
                    "url": item.link,
                }
            blocks.append(section)
        hidden = len(items) - SLACK_MAX_ALERTS
        if hidden > 0:
            more = f"and {hidden} more"
            if context["dashboard_url"] is not None:
                more = f"<{slack_escape(context['dashboard_url'])}|{more}>"
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
        text = truncate(self._render("slack_text.txt", context).strip() or slack_escape(context["title"]), SLACK_TEXT_MAX)
        return {"text": text, "blocks": blocks}


@dataclass(frozen=True)
class RenderedEmail:
    """An email's subject (one line) and its two bodies."""

    subject: str
    text: str
    html: str


def rule_name(notification: Notification) -> str:
    """The rule the notification is about (the first alert's; the group's ``alertname`` label
    when there are no alerts)."""
    if notification.alerts:
        return notification.alerts[0].rule_name
    return notification.group_labels.get("alertname", "")


def _shared(notification: Notification, label: str) -> str:
    """The value of ``label`` in the group labels, else the value every alert has, else ''."""
    if notification.group_labels.get(label):
        return notification.group_labels[label]
    values = {a.labels.get(label, "") for a in notification.alerts}
    return values.pop() if len(values) == 1 else ""
