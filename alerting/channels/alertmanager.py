"""The ``alertmanager`` channel: alerts POSTed to a Prometheus Alertmanager's API v2.

Each alert of the notification becomes one element of the ``POST <url>/api/v2/alerts`` list:
``labels`` (the alert's, always with ``alertname`` and ``severity``; empty values left out, as
Prometheus leaves them out), ``annotations`` (the alert's, with ``summary`` set to the issue's
title when the rule gave none), ``startsAt``, and ``generatorURL`` (the alert's dashboard link)
when there is an absolute one.

``endsAt`` follows Alertmanager's rules. A resolved alert carries the time it resolved, so
Alertmanager marks it resolved at once and sends its own "resolved" notifications. A firing
alert carries none: Alertmanager then keeps it firing until ``resolve_timeout`` (5 minutes by
default) passes without the alert being posted again, and resolves it by itself after that.
Alertmanager expects a client to keep posting active alerts, as Prometheus does every
evaluation; so an Alertmanager channel wants a ``repeat_interval`` shorter than the
Alertmanager's ``resolve_timeout``, else it shows a firing alert as resolved in between.

Basic auth is sent when ``username`` and ``password`` are set. 2xx is delivered; 408, 429 and
5xx answers, connection failures and timeouts are retryable; other answers are permanent (a
400 carries Alertmanager's reason, such as an invalid label name).
"""

from __future__ import annotations

import base64
from typing import Any

from multidict import CIMultiDict

from alerting.channels.specs import AlertmanagerSpec
from alerting.channels.webhook import HttpChannel, json_body
from alerting.model import Notification
from alerting.render import Renderer, rfc3339


def alertmanager_alerts(notification: Notification, renderer: Renderer) -> list[dict[str, Any]]:
    """The notification's alerts in Alertmanager's API v2 ``postableAlerts`` form."""
    out: list[dict[str, Any]] = []
    for alert in notification.alerts:
        view = renderer.view(alert)
        labels = {k: v for k, v in alert.labels.items() if v}
        labels.setdefault("alertname", alert.rule_name)
        labels.setdefault("severity", str(alert.severity))
        annotations = {k: v for k, v in alert.annotations.items() if v}
        annotations.setdefault("summary", view.title)
        entry: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": rfc3339(alert.starts_at)}
        if alert.status == "resolved":
            ends_at = alert.ends_at or notification.created_at
            # Alertmanager refuses an alert that ends before it starts.
            entry["endsAt"] = rfc3339(max(ends_at, alert.starts_at))
        link = view.link or renderer.link(notification.dashboard_url)
        if link is not None:
            entry["generatorURL"] = link
        out.append(entry)
    return out


class AlertmanagerChannel(HttpChannel):
    """POSTs :func:`alertmanager_alerts` to ``<url>/api/v2/alerts``."""

    kind = "alertmanager"

    def __init__(self, name: str, spec: AlertmanagerSpec, *, renderer: Renderer) -> None:
        headers = {}
        if spec.username is not None and spec.password is not None:
            credentials = base64.b64encode(f"{spec.username}:{spec.password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {credentials}"
        super().__init__(name, timeout=spec.timeout, headers=headers)
        self.spec = spec
        self.renderer = renderer
        self.url = spec.url.rstrip("/") + "/api/v2/alerts"

    async def send(self, notification: Notification) -> None:
        alerts = alertmanager_alerts(notification, self.renderer)
        if not alerts:
            return
        await self.post(self.url, json_body(alerts), CIMultiDict({"Content-Type": "application/json"}))
