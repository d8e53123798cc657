"""The ``slack`` channel: a Block Kit message to a Slack incoming webhook.

The message is :meth:`alerting.render.Renderer.slack`'s: a header with the rule and its state,
a section per alert (issue title linked to the dashboard, event count, service, environment,
severity, and an "Open in AppGuard" button), a count of the alerts not shown, and a ``text``
fallback for notifications. ``channel`` and ``username`` are added when set (only legacy
webhooks honour them; app webhooks post where they were installed).

Slack accepts about one message per second per webhook. The channel sends one message at a
time and at least a second after the previous one ended; concurrent sends wait their turn.
When Slack answers 429 the next message waits for its ``Retry-After`` too, and a send that
would wait longer than the channel's ``timeout`` fails at once as retryable with the time left.

Answers: 200 is delivered; 429 (with ``retry_after`` from ``Retry-After``), 408, 5xx,
connection failures and timeouts are retryable; other answers (``400 invalid_payload``,
``403 invalid_token``, ``404 channel_not_found``, ``410 channel_is_archived``...) are permanent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from multidict import CIMultiDict

from alerting.channels.specs import SlackSpec
from alerting.channels.webhook import HttpChannel, json_body
from alerting.model import Notification, RetryableSendError
from alerting.render import Renderer

#: Seconds between the end of one message and the start of the next, per webhook.
MESSAGE_INTERVAL = 1.0


class Pacer:
    """Lets one sender through at a time, and not before ``interval`` after the previous one
    finished (or later, after :meth:`hold`)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = asyncio.Lock()
        self._not_before = 0.0

    @asynccontextmanager
    async def turn(self, max_wait: float) -> AsyncIterator[None]:
        """Wait for this sender's turn; :class:`RetryableSendError` if that is more than
        ``max_wait`` seconds away once the previous sender is done."""
        async with self._lock:
            wait = self._not_before - time.monotonic()
            if wait > max_wait:
                raise RetryableSendError(f"rate limited for another {wait:.1f}s", retry_after=wait)
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._not_before = max(self._not_before, time.monotonic() + self.interval)

    def hold(self, seconds: float) -> None:
        """Let no one through for ``seconds`` from now."""
        self._not_before = max(self._not_before, time.monotonic() + seconds)


class SlackChannel(HttpChannel):
    """Posts the rendered Block Kit message to the webhook, one per second at most."""

    kind = "slack"

    def __init__(self, name: str, spec: SlackSpec, *, renderer: Renderer) -> None:
        super().__init__(name, timeout=spec.timeout)
        self.spec = spec
        self.renderer = renderer
        self.pacer = Pacer(MESSAGE_INTERVAL)

    def message(self, notification: Notification) -> dict[str, object]:
        """The JSON document posted for ``notification``."""
        message: dict[str, object] = dict(self.renderer.slack(notification))
        if self.spec.channel:
            message["channel"] = self.spec.channel
        if self.spec.username:
            message["username"] = self.spec.username
        return message

    async def send(self, notification: Notification) -> None:
        body = json_body(self.message(notification))
        headers = CIMultiDict({"Content-Type": "application/json; charset=utf-8"})
        async with self.pacer.turn(max_wait=self.spec.timeout):
            try:
                await self.post(self.spec.webhook_url, body, headers)
            except RetryableSendError as exc:
                if exc.retry_after is not None:
                    self.pacer.hold(exc.retry_after)
                raise
