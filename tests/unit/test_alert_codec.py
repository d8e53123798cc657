"""The JSON of alerts and notifications: exact round trips (datetimes with their offsets,
non-finite values, datetimes inside free-form dicts) and errors that name the field."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from alerting.codec import (
    CodecError,
    decode_alert,
    decode_notification,
    encode_alert,
    encode_notification,
)
from alerting.model import Alert, Notification, Severity

IST = timezone(timedelta(hours=5, minutes=30))


def alert(**fields: Any) -> Alert:
    values: dict[str, Any] = {
        "rule_id": 7,
        "rule_name": "New issues in checkout",
        "kind": "issue",
        "fingerprint": "f" * 16,
        "status": "firing",
        "severity": Severity.CRITICAL,
        "labels": {"alertname": "New issues in checkout", "rule": "7", "severity": "critical", "service": "checkout"},
        "annotations": {"summary": "ValueError: bad input", "description": "in checkout.views:pay — «ünïcode»"},
        "starts_at": datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    }
    values.update(fields)
    return Alert(**values)


def notification(alerts: tuple[Alert, ...], **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "id": "email-ops:7:0123456789abcdef:a1b2:3",
        "channel": "email-ops",
        "group_key": "email-ops:7:0123456789abcdef",
        "group_labels": {"rule": "7"},
        "alerts": alerts,
        "created_at": datetime(2024, 5, 1, 12, 31, tzinfo=IST),
    }
    values.update(fields)
    return Notification(**values)


def test_alert_round_trip_keeps_every_field() -> None:
    original = alert(
        status="resolved",
        ends_at=datetime(2024, 5, 1, 13, 0, tzinfo=IST),
        value=0.1 + 0.2,
        url="http://127.0.0.1:8080/issues/42",
        issue={
            "id": 42,
            "title": "ValueError: bad input",
            "count": 17,
            "users": 3,
            "first_seen": datetime(2024, 4, 30, 23, 59, 59, 999999, tzinfo=UTC),
            "last_seen": datetime(2024, 5, 1, 12, 30, tzinfo=IST),
            "day": date(2024, 5, 1),
            "tags": [{"at": datetime(2024, 5, 1, tzinfo=UTC)}, "plain", None, True, 1.5],
        },
    )
    decoded = decode_alert(encode_alert(original))
    assert decoded == original
    assert decoded.ends_at is not None and decoded.ends_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert decoded.issue is not None
    assert isinstance(decoded.issue["first_seen"], datetime)
    assert decoded.issue["first_seen"].utcoffset() == timedelta(0)
    assert decoded.issue["day"] == date(2024, 5, 1) and not isinstance(decoded.issue["day"], datetime)
    assert decoded.severity is Severity.CRITICAL


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 7, 1, 8, 0, 0, 1, tzinfo=ZoneInfo("Europe/Paris")),
        datetime(2024, 3, 10, 1, 2, 3, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
        datetime(2024, 3, 10, 1, 2, 3, 400000),
    ],
    ids=["utc", "zone", "negative-offset", "naive"],
)
def test_datetimes_keep_instant_and_offset(moment: datetime) -> None:
    decoded = decode_alert(encode_alert(alert(starts_at=moment))).starts_at
    assert decoded == moment
    assert decoded.utcoffset() == moment.utcoffset()
    assert decoded.replace(tzinfo=None) == moment.replace(tzinfo=None)


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1e308, -0.0, 5e-324, None])
def test_values_round_trip(value: float | None) -> None:
    assert decode_alert(encode_alert(alert(value=value))).value == value


def test_nan_value_round_trips() -> None:
    decoded = decode_alert(encode_alert(alert(value=math.nan))).value
    assert decoded is not None and math.isnan(decoded)


def test_notification_round_trip() -> None:
    alerts = (alert(), alert(fingerprint="g" * 16, status="resolved", kind="threshold", severity=Severity.WARNING))
    original = notification(
        alerts,
        dashboard_url="http://127.0.0.1:8080/alerts",
        extra={"sequence": 3, "window": [datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)]},
    )
    decoded = decode_notification(encode_notification(original))
    assert decoded == original
    assert isinstance(decoded.alerts, tuple)
    assert [a.status for a in decoded.firing] == ["firing"]
    assert [a.fingerprint for a in decoded.resolved] == ["g" * 16]
    assert decoded.created_at.utcoffset() == timedelta(hours=5, minutes=30)


def test_the_json_is_plain_and_readable() -> None:
    doc = orjson.loads(encode_notification(notification((alert(),))))
    assert doc["v"] == 1
    assert doc["created_at"] == "2024-05-01T12:31:00+05:30"
    assert doc["alerts"][0]["severity"] == "critical"
    assert doc["alerts"][0]["starts_at"] == "2024-05-01T12:30:15.123456+00:00"


def _mutated(change: Any) -> bytes:
    doc = orjson.loads(encode_notification(notification((alert(),))))
    change(doc)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("id"), "id"),
        (lambda d: d.update(v=2), "v"),
        (lambda d: d.update(alerts={}), "alerts"),
        (lambda d: d.update(created_at="yesterday"), "created_at"),
        (lambda d: d.update(group_labels={"rule": 7}), "group_labels"),
        (lambda d: d["alerts"][0].update(status="pending"), "alerts[0].status"),
        (lambda d: d["alerts"][0].update(severity="fatal"), "alerts[0].severity"),
        (lambda d: d["alerts"][0].update(kind="log"), "alerts[0].kind"),
        (lambda d: d["alerts"][0].update(rule_id="7"), "alerts[0].rule_id"),
        (lambda d: d["alerts"][0].update(value="lots"), "alerts[0].value"),
        (lambda d: d["alerts"][0].update(labels=["a"]), "alerts[0].labels"),
        (lambda d: d["alerts"][0].pop("starts_at"), "alerts[0].starts_at"),
        (lambda d: d["alerts"][0].update(issue={"first_seen": {"$datetime": "soon"}}), "alerts[0].issue.first_seen"),
    ],
)
def test_bad_documents_name_the_field(change: Any, field: str) -> None:
    with pytest.raises(CodecError) as info:
        decode_notification(_mutated(change))
    assert str(info.value).startswith(f"{field}:"), str(info.value)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", "{}"])
def test_not_a_document(data: bytes | str) -> None:
    with pytest.raises(CodecError):
        decode_notification(data)
