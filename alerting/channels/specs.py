"""The settings of each notification channel type, as the API and the rules file take them.

A channel has a unique ``name`` and a ``type`` (``email``, ``slack``, ``webhook``,
``alertmanager``) with that type's settings. Fields listed in a spec's ``SECRETS`` (passwords,
webhook URLs that embed a token, signing secrets) are stored but never returned by the API:
:func:`redacted` replaces them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from collector.configtypes import Duration

_EMAIL = r"^[^@\s]+@[^@\s]+$"


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    SECRETS: ClassVar[tuple[str, ...]] = ()
    timeout: Duration = 10.0


class EmailSpec(_Spec):
    """Email over SMTP. ``security``: ``none``, ``starttls`` (upgrade after connecting) or
    ``tls`` (TLS from the start, usually port 465)."""

    SECRETS: ClassVar[tuple[str, ...]] = ("password",)

    type: Literal["email"] = "email"
    to: list[Annotated[str, Field(pattern=_EMAIL)]] = Field(min_length=1, max_length=50)
    from_: str = Field(alias="from", pattern=_EMAIL)
    host: str = Field(min_length=1)
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = None
    insecure_skip_verify: bool = False


class SlackSpec(_Spec):
    """A Slack incoming webhook (its URL holds the token, so it is a secret)."""

    SECRETS: ClassVar[tuple[str, ...]] = ("webhook_url",)

    type: Literal["slack"] = "slack"
    webhook_url: HttpUrl
    channel: str | None = None
    username: str | None = None


class WebhookSpec(_Spec):
    """A generic webhook: JSON POSTed to ``url``; with ``secret``, signed with HMAC-SHA256."""

    SECRETS: ClassVar[tuple[str, ...]] = ("secret",)

    type: Literal["webhook"] = "webhook"
    url: HttpUrl
    secret: str | None = Field(default=None, min_length=16)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)


class AlertmanagerSpec(_Spec):
    """A Prometheus Alertmanager: alerts are POSTed to ``url`` + ``/api/v2/alerts``."""

    SECRETS: ClassVar[tuple[str, ...]] = ("password",)

    type: Literal["alertmanager"] = "alertmanager"
    url: HttpUrl
    username: str | None = None
    password: str | None = None


ChannelSpec = Annotated[EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec, Field(discriminator="type")]
CHANNEL_SPEC: TypeAdapter[EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec] = TypeAdapter(ChannelSpec)

#: What :func:`redacted` puts in place of a secret that is set.
REDACTED = "********"


def redacted(spec: EmailSpec | SlackSpec | WebhookSpec | AlertmanagerSpec) -> dict[str, Any]:
    """The spec as JSON-ready data with its secrets hidden (set ones shown as ``********``)."""
    data = spec.model_dump(mode="json", by_alias=True)
    for name in spec.SECRETS:
        if data.get(name) is not None:
            data[name] = REDACTED
    return data
