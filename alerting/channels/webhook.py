"""The ``webhook`` channel: a notification POSTed as JSON, optionally signed; and the HTTP
sending the Slack and Alertmanager channels share with it.

The body (``Content-Type: application/json``, UTF-8), version ``1`` of the schema::

    {
      "version": "1",
      "id": "<notification id, the same on every retry>",
      "channel": "<channel name>",
      "status": "firing" | "resolved",     # firing while any alert of the group fires
      "title": "[FIRING:2] Checkout errors (shop production)",
      "groupKey": "...",
      "groupLabels": {"rule": "12"},
      "createdAt": "2024-05-01T12:00:00.000Z",
      "dashboardUrl": "https://..." | null,
      "alerts": [{
        "status": "firing" | "resolved",
        "fingerprint": "...",
        "rule": {"id": 12, "name": "Checkout errors", "kind": "issue" | "threshold" | "metric"},
        "severity": "info" | "warning" | "critical",
        "labels": {"alertname": "...", "rule": "12", "severity": "...", ...},
        "annotations": {"summary": "...", "description": "...", ...},
        "startsAt": "<RFC 3339>", "endsAt": "<RFC 3339>" | null,
        "value": 42.0 | null,
        "url": "https://..." | null,
        "issue": {"id": ..., "title": ..., "culprit": ..., "level": ..., "count": ...,
                  "users": ..., "service": ..., "environment": ...,
                  "first_seen": "<RFC 3339>", "last_seen": "<RFC 3339>"} | null
      }]
    }

Fields may be added within a version; none is removed or changes meaning without a new one.

Headers: ``X-AppGuard-Notification-Id`` (the ``id``, for de-duplication), the channel's own
``headers`` and, when a ``secret`` is set, ``X-AppGuard-Timestamp`` (Unix seconds) and
``X-AppGuard-Signature: sha256=<hex>``, the HMAC-SHA256 with the secret as key of
``<timestamp>.<body>``. A receiver recomputes it over the raw body and compares in constant
time, and refuses old timestamps to stop replays.

Answers: 2xx is delivered; 408, 429 and 5xx are retried (after ``Retry-After`` when given), as
are connection failures and timeouts; any other answer (other 4xx, a redirect) is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import date, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDict

from alerting.channels.specs import WebhookSpec
from alerting.model import Notification, PermanentSendError, RetryableSendError
from alerting.render import Renderer, rfc3339
from collector.exporterhelper import parse_retry_after, user_agent

SCHEMA_VERSION = "1"
# Enough of an error answer to say what went wrong.
_MAX_ERROR_BODY = 2048


def http_status_retryable(status: int) -> bool:
    """Whether an HTTP failure status may succeed later: 408, 429 and 5xx."""
    return status in (408, 429) or status >= 500


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def json_body(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON; datetimes as RFC 3339, anything else unknown as text."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode()


class HttpChannel:
    """What the HTTP channels share: one aiohttp session, made on the first send and closed
    by :meth:`close`, and the reading of answers as delivered, retryable or permanent.

    ``headers`` go with every request (the User-Agent is AppGuard's unless they name one).
    """

    kind = "http"

    def __init__(self, name: str, *, timeout: float, headers: dict[str, str] | None = None) -> None:
        self.name = name
        self._timeout = timeout
        self._headers = {"User-Agent": user_agent(), **(headers or {})}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers=self._headers,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: CIMultiDict[str]) -> bytes:
        """POST ``body`` to ``url``; the answer's body on 2xx, else a :class:`SendError`."""
        what = f"{self.kind} channel {self.name!r}"
        try:
            async with self._client().post(url, data=body, headers=headers, allow_redirects=False) as response:
                content = await response.content.read(_MAX_ERROR_BODY)
                if 200 <= response.status < 300:
                    return content
                message = f"{what}: HTTP {response.status}"
                detail = content.decode("utf-8", "replace").strip()
                if detail:
                    message += f": {detail}"
                if 300 <= response.status < 400:
                    message += f" (redirected to {response.headers.get('Location', '?')}; configure the final URL)"
                if http_status_retryable(response.status):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    raise RetryableSendError(message, retry_after=retry_after)
                raise PermanentSendError(message)
        except aiohttp.InvalidURL as exc:
            raise PermanentSendError(f"{what}: invalid URL {exc}") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            # Fails again until the certificate or the URL changes.
            raise PermanentSendError(f"{what}: TLS certificate not accepted: {exc}") from None
        except aiohttp.ClientError as exc:
            raise RetryableSendError(f"{what}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise RetryableSendError(f"{what}: no answer within {self._timeout:g}s") from None

    async def close(self) -> None:
        """Close the session (a later send makes a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def webhook_payload(notification: Notification, renderer: Renderer) -> dict[str, Any]:
    """The JSON document described in this module's docstring."""
    context = renderer.context(notification)
    return {
        "version": SCHEMA_VERSION,
        "id": notification.id,
        "channel": notification.channel,
        "status": context["status"],
        "title": context["title"],
        "groupKey": notification.group_key,
        "groupLabels": notification.group_labels,
        "createdAt": rfc3339(notification.created_at),
        "dashboardUrl": context["dashboard_url"],
        "alerts": [
            {
                "status": a.status,
                "fingerprint": a.fingerprint,
                "rule": {"id": a.rule_id, "name": a.rule_name, "kind": a.kind},
                "severity": str(a.severity),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(a.ends_at) if a.ends_at is not None else None,
                "value": a.value,
                "url": renderer.link(a.url) or a.url,
                "issue": a.issue,
            }
            for a in notification.alerts
        ],
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 keyed with ``secret`` of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel(HttpChannel):
    """POSTs :func:`webhook_payload` to the configured URL, signed when a secret is set."""

    kind = "webhook"

    def __init__(self, name: str, spec: WebhookSpec, *, renderer: Renderer) -> None:
        super().__init__(name, timeout=spec.timeout)
        self.spec = spec
        self.renderer = renderer

    async def send(self, notification: Notification) -> None:
        body = json_body(webhook_payload(notification, self.renderer))
        # The channel's own headers first, so that they cannot replace the signature.
        headers = CIMultiDict(self.spec.headers)
        headers["Content-Type"] = "application/json"
        headers["X-AppGuard-Notification-Id"] = notification.id
        if self.spec.secret is not None:
            timestamp = str(int(time.time()))
            headers["X-AppGuard-Timestamp"] = timestamp
            headers["X-AppGuard-Signature"] = signature(self.spec.secret, timestamp, body)
        await self.post(self.spec.url, body, headers)
