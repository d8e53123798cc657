"""The ``email`` channel: a multipart (plain text and HTML) message over SMTP.

Subject and bodies come from the renderer's templates (``title.txt``, ``email.txt``,
``email.html``). The ``Message-ID`` is made from the notification's id, so a retried message
has the same one and mail clients can recognise the copy; ``Auto-Submitted: auto-generated``
keeps vacation responders quiet.

``security``: ``none`` (plain SMTP, STARTTLS never tried), ``starttls`` (STARTTLS required)
or ``tls`` (TLS from the first byte). ``insecure_skip_verify`` accepts any certificate.

Failures: a refused or dropped connection, a timeout and SMTP 4xx answers (greylisting, a full
mailbox, "try again later") are retryable; SMTP 5xx answers (unknown recipient, refused
sender, failed authentication), a TLS handshake that fails (a certificate that does not
verify, ``tls`` against a STARTTLS port) and a server lacking what the settings require
(STARTTLS, AUTH) are permanent. When only some recipients are
refused, the others got the message: that is a success, and a warning is logged.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import re
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib

from alerting.channels.specs import EmailSpec
from alerting.model import Notification, PermanentSendError, RetryableSendError, SendError
from alerting.render import Renderer, one_line

_log = logging.getLogger("appguard.alerting")

# aiosmtplib's start_tls: False never tries STARTTLS, True requires it; with use_tls it is unused.
_START_TLS: dict[str, bool | None] = {"none": False, "starttls": True, "tls": None}

# What may stand left of the @ in a Message-ID as it is (a subset of RFC 5322's dot-atom).
_ID_SAFE = re.compile(r"^[A-Za-z0-9_+=-]+(\.[A-Za-z0-9_+=-]+)*$")


def message_id(notification_id: str, sender: str) -> str:
    """``<appguard.<id>@<sender's domain>>``; an id with other characters is hashed."""
    local = notification_id if _ID_SAFE.match(notification_id) and len(notification_id) <= 128 else (
        hashlib.sha256(notification_id.encode()).hexdigest()[:40]
    )
    domain = sender.rpartition("@")[2] or "appguard.invalid"
    return f"<appguard.{local}@{domain}>"


def _smtp_failure(code: int, message: str) -> SendError:
    """4xx (and anything below 500) is transient in SMTP; 5xx is final."""
    if code >= 500:
        return PermanentSendError(message)
    return RetryableSendError(message)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc``, if any: a handshake that fails (an unverifiable
    certificate, ``tls`` against a STARTTLS port) fails again until the settings change."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class EmailChannel:
    """Sends each notification as one email to every address of ``to``."""

    def __init__(self, name: str, spec: EmailSpec, *, renderer: Renderer) -> None:
        self.name = name
        self.spec = spec
        self.renderer = renderer

    def message(self, notification: Notification) -> EmailMessage:
        """The email for ``notification``."""
        rendered = self.renderer.email(notification)
        msg = EmailMessage()
        msg["Subject"] = rendered.subject
        msg["From"] = self.spec.from_
        msg["To"] = ", ".join(self.spec.to)
        msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
        msg["Message-ID"] = message_id(notification.id, self.spec.from_)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-AppGuard-Notification-Id"] = one_line(notification.id)
        msg.set_content(rendered.text)
        msg.add_alternative(rendered.html, subtype="html")
        return msg

    async def send(self, notification: Notification) -> None:
        spec = self.spec
        what = f"email channel {self.name!r} ({spec.host}:{spec.port})"
        try:
            refused, _ = await aiosmtplib.send(
                self.message(notification),
                sender=spec.from_,
                recipients=spec.to,
                hostname=spec.host,
                port=spec.port,
                username=spec.username,
                password=spec.password,
                use_tls=spec.security == "tls",
                start_tls=_START_TLS[spec.security],
                validate_certs=not spec.insecure_skip_verify,
                timeout=spec.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            reasons = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            failure = f"{what}: every recipient refused: {reasons}"
            if any(r.code < 500 for r in exc.recipients):
                raise RetryableSendError(failure) from None
            raise PermanentSendError(failure) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_failure(exc.code, f"{what}: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise PermanentSendError(f"{what}: {exc}") from None
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise RetryableSendError(f"{what}: timed out: {exc}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            tls = _tls_failure(exc)
            if isinstance(tls, ssl.SSLCertVerificationError):
                raise PermanentSendError(
                    f"{what}: the server's TLS certificate does not verify ({tls.verify_message}); "
                    "fix it or set insecure_skip_verify"
                ) from None
            if tls is not None:
                raise PermanentSendError(f"{what}: TLS failed ({tls}); check security and port") from None
            if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
                raise RetryableSendError(f"{what}: {exc}") from None
            # Other client-side refusals (no AUTH offered, no usable mechanism) come from the settings.
            raise PermanentSendError(f"{what}: {exc}") from None
        if refused:
            _log.warning(
                "%s: message %s not delivered to %s",
                what,
                notification.id,
                "; ".join(f"{rcpt}: {resp.code} {resp.message}" for rcpt, resp in refused.items()),
            )

    async def close(self) -> None:
        """Nothing to release: each send uses its own SMTP connection."""
