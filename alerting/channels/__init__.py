"""Notification channels: email, Slack, generic webhook and Alertmanager.

:func:`build_channel` makes the channel a spec describes; each has a ``name``, ``send`` (deliver
a notification or raise :class:`~alerting.model.RetryableSendError` /
:class:`~alerting.model.PermanentSendError`) and ``close``.
"""

from __future__ import annotations

from alerting.channels.alertmanager import AlertmanagerChannel
from alerting.channels.email import EmailChannel
from alerting.channels.slack import SlackChannel
from alerting.channels.specs import AlertmanagerSpec, EmailSpec, SlackSpec, WebhookSpec
from alerting.channels.webhook import WebhookChannel
from alerting.model import Channel
from alerting.render import Renderer

__all__ = ["AlertmanagerChannel", "EmailChannel", "SlackChannel", "WebhookChannel", "build_channel"]


def build_channel(name: str, spec: EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec, *, renderer: Renderer) -> Channel:
    """The channel called ``name`` that ``spec`` describes, rendering with ``renderer``."""
    if isinstance(spec, EmailSpec):
        return EmailChannel(name, spec, renderer=renderer)
    if isinstance(spec, SlackSpec):
        return SlackChannel(name, spec, renderer=renderer)
    if isinstance(spec, WebhookSpec):
        return WebhookChannel(name, spec, renderer=renderer)
    if isinstance(spec, AlertmanagerSpec):
        return AlertmanagerChannel(name, spec, renderer=renderer)
    raise TypeError(f"no channel for {type(spec).__name__}")
