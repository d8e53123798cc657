"""What the parts of alerting exchange: rule definitions, alerts, notifications, send errors.

- **Rules** (:data:`AlertRuleSpec`) are validated pydantic models, the same whether they come
  from the API (JSON) or from a YAML file in ``config/``. Three kinds, told apart by ``kind``:
  :class:`IssueRule` (a new issue, a regression, an issue getting more than N events or M users
  in a window), :class:`ThresholdRule` (error count or rate over a window per service /
  environment, static or against the previous window, with warning and critical levels, a
  ``for`` duration and automatic resolve) and :class:`MetricRule` (a PromQL expression against
  a Prometheus HTTP API). Every error names the field at fault.
- **Alerts** (:class:`Alert`) are what evaluation produces: one firing or resolved instance of a
  rule, identified by a ``fingerprint`` stable across evaluations (the rule and its labels), so
  grouping and de-duplication can recognise it.
- **Notifications** (:class:`Notification`) are what the queue hands a channel: the alerts of
  one group for one channel, with an ``id`` that is the same on every retry of that message.
- **Channels** (:class:`Channel`) send a notification or raise :class:`RetryableSendError`
  (try again later, perhaps after ``retry_after`` seconds) or :class:`PermanentSendError`
  (retrying cannot help: bad address, 4xx other than 429).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.configtypes import Duration

#: Labels and names: what Prometheus and Alertmanager accept as label names.
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"


class Severity(enum.StrEnum):
    """How urgent an alert is; threshold rules have a level per severity."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(enum.StrEnum):
    """An alert instance's state, kept in PostgreSQL.

    ``pending``: the condition holds but not yet for the rule's ``for`` duration;
    ``firing``: notified; ``resolved``: the condition stopped holding after firing.
    """

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


# --------------------------------------------------------------------------- rules


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RuleFilters(_Strict):
    """Which errors a rule looks at; empty lists match everything. Values within one filter
    are alternatives (OR); different filters must all match (AND)."""

    service: list[str] = Field(default_factory=list, max_length=100)
    environment: list[str] = Field(default_factory=list, max_length=100)
    level: list[str] = Field(default_factory=list, max_length=20)
    exception_type: list[str] = Field(default_factory=list, max_length=100)
    #: Event attribute (tag) name -> value it must have.
    tags: dict[str, str] = Field(default_factory=dict, max_length=20)


class Grouping(_Strict):
    """How notifications of a rule are grouped, as Alertmanager's route does it.

    Alerts with equal values of ``group_by`` labels form one group; the first notification of
    a new group waits ``group_wait`` for more alerts to join; later changes to the group are
    sent at most every ``group_interval``; a group that did not change is sent again after
    ``repeat_interval`` while it fires.
    """

    group_by: list[Annotated[str, Field(pattern=_LABEL_NAME)]] = Field(
        default_factory=lambda: ["rule"], max_length=20
    )
    group_wait: Duration = 30.0
    group_interval: Duration = 300.0
    repeat_interval: Duration = 4 * 3600.0

    @field_validator("group_interval", "repeat_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class _RuleBase(_Strict):
    """What every rule has."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    enabled: bool = True
    #: Names of notification channels (each must exist).
    channels: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=20)
    #: Extra labels on every alert of the rule (routing, Alertmanager).
    labels: dict[Annotated[str, Field(pattern=_LABEL_NAME)], str] = Field(default_factory=dict, max_length=30)
    grouping: Grouping = Field(default_factory=Grouping)


class IssueRule(_RuleBase):
    """Reacts to the errors as they are written.

    ``when``: ``new_issue`` (an issue appears), ``regression`` (a resolved issue gets a new
    event), ``frequency`` (an issue gets more than ``events`` events, or more than ``users``
    distinct users, within ``window``). ``action_interval``: after notifying about an issue,
    stay quiet about that same issue for this long.
    """

    kind: Literal["issue"] = "issue"
    when: Literal["new_issue", "regression", "frequency"]
    filters: RuleFilters = Field(default_factory=RuleFilters)
    events: int | None = Field(default=None, ge=1)
    users: int | None = Field(default=None, ge=1)
    window: Duration = 3600.0
    action_interval: Duration = 1800.0
    severity: Severity = Severity.WARNING

    @model_validator(mode="after")
    def _frequency_needs_a_count(self) -> IssueRule:
        if self.when == "frequency":
            if self.events is None and self.users is None:
                raise ValueError("events: a frequency rule needs events or users (or both)")
            if self.window <= 0:
                raise ValueError("window: must be longer than 0s")
        elif self.events is not None or self.users is not None:
            raise ValueError(f"events: only frequency rules count events or users, not {self.when}")
        return self


PerLabel = Literal["service", "environment"]
_PER_DEFAULT: tuple[PerLabel, ...] = ("service", "environment")


class ThresholdRule(_RuleBase):
    """Error count (``measure: count``, events in ``window``) or rate (``measure: rate``, events
    per second over ``window``) per ``group_by`` (service, environment), compared with
    ``warning`` / ``critical``. ``compare: static`` compares the value itself; ``compare:
    percent_change`` compares the change against the previous window, in percent. The
    condition must hold for ``for`` before the alert fires; it resolves by itself."""

    kind: Literal["threshold"] = "threshold"
    measure: Literal["count", "rate"] = "count"
    window: Duration = 300.0
    per: list[PerLabel] = Field(default_factory=lambda: list(_PER_DEFAULT))
    filters: RuleFilters = Field(default_factory=RuleFilters)
    compare: Literal["static", "percent_change"] = "static"
    warning: float | None = Field(default=None, ge=0)
    critical: float | None = Field(default=None, ge=0)
    for_: Duration = Field(default=0.0, alias="for")

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _levels(self) -> ThresholdRule:
        if self.warning is None and self.critical is None:
            raise ValueError("warning: give warning or critical (or both)")
        if self.warning is not None and self.critical is not None and self.critical < self.warning:
            raise ValueError("critical: must not be below warning")
        return self


class MetricRule(_RuleBase):
    """A PromQL expression evaluated against the configured Prometheus; every series it
    returns is an alert instance (labelled like the series), firing once it has been returned
    for ``for``."""

    kind: Literal["metric"] = "metric"
    expr: str = Field(min_length=1, max_length=10000)
    for_: Duration = Field(default=0.0, alias="for")
    severity: Severity = Severity.WARNING
    annotations: dict[str, str] = Field(default_factory=dict, max_length=30)


AlertRuleSpec = Annotated[IssueRule | ThresholdRule | MetricRule, Field(discriminator="kind")]


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert instance, firing or resolved, as evaluation hands it to the queue.

    ``labels`` always hold ``alertname`` (the rule's name), ``rule`` (the rule's id as text)
    and ``severity``, plus ``service`` / ``environment`` / ``issue_id`` where they apply and the
    rule's own labels. ``annotations`` hold ``summary`` and ``description`` (free text) and
    whatever the rule adds. ``fingerprint`` identifies the instance across evaluations.
    ``issue`` is the issue's summary for issue rules (id, title, culprit, level, count, users,
    service, environment, first_seen, last_seen), else None. ``url`` links to the dashboard.
    """

    rule_id: int
    rule_name: str
    kind: Literal["issue", "threshold", "metric"]
    fingerprint: str
    status: Literal["firing", "resolved"]
    severity: Severity
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    value: float | None = None
    url: str | None = None
    issue: dict[str, Any] | None = None


@dataclass(frozen=True)
class Notification:
    """What a channel sends: the alerts of one group.

    ``id`` is stable across retries of the same message (de-duplication keys on it);
    ``group_labels`` are the values of the grouping labels shared by the alerts.
    """

    id: str
    channel: str
    group_key: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]
    created_at: datetime
    dashboard_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.status == "resolved"]


# --------------------------------------------------------------------------- channels


class SendError(Exception):
    """A channel could not send a notification."""


class RetryableSendError(SendError):
    """Try again later; ``retry_after`` (seconds) when the receiver said how long to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Retrying cannot help (refused address, bad request): the message goes to the dead letters."""


class Channel(Protocol):
    """A notification channel: email, Slack, webhook, Alertmanager."""

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver the notification or raise :class:`SendError`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class StoredRule:
    """A rule as kept in PostgreSQL: its id, project and definition."""

    id: int
    project_id: int
    spec: IssueRule | ThresholdRule | MetricRule
    source: Literal["api", "file"] = "api"
