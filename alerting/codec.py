"""JSON for :class:`~alerting.model.Alert` and :class:`~alerting.model.Notification`, as Redis
keeps them (the grouping state and the notification queue).

Decoding gives back an equal object: datetimes keep their instant and their UTC offset
(a zone such as ``Europe/Paris`` comes back as the fixed offset it had, naive datetimes stay
naive), ``value`` may be NaN or infinite, and datetimes inside the free-form ``issue`` and
``extra`` dicts come back as datetimes, not strings. Tuples inside those dicts come back as
lists, as JSON has no tuples.

The document carries a format version ``v``; an unknown version, a missing field or a value
of the wrong type raises :class:`CodecError` naming the field.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any, cast

import orjson

from alerting.model import Alert, Notification, Severity

FORMAT_VERSION = 1

# Free-form values (``issue``, ``extra``) mark what JSON cannot say with a one-key object.
_DATETIME_TAG = "$datetime"
_DATE_TAG = "$date"
_FLOAT_TAG = "$float"

_KINDS = frozenset({"issue", "threshold", "metric"})
_STATUSES = frozenset({"firing", "resolved"})


class CodecError(ValueError):
    """A document is not a valid encoded alert or notification."""


# --------------------------------------------------------------------------- encoding


def encode_alert(alert: Alert) -> bytes:
    """``alert`` as JSON bytes."""
    return orjson.dumps({"v": FORMAT_VERSION, **alert_to_dict(alert)})


def encode_notification(notification: Notification) -> bytes:
    """``notification`` as JSON bytes."""
    return orjson.dumps(
        {
            "v": FORMAT_VERSION,
            "id": notification.id,
            "channel": notification.channel,
            "group_key": notification.group_key,
            "group_labels": notification.group_labels,
            "alerts": [alert_to_dict(a) for a in notification.alerts],
            "created_at": notification.created_at,
            "dashboard_url": notification.dashboard_url,
            "extra": _tag(notification.extra),
        }
    )


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """``alert`` as a dict orjson can encode (datetimes left to orjson)."""
    return {
        "rule_id": alert.rule_id,
        "rule_name": alert.rule_name,
        "kind": alert.kind,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "severity": alert.severity.value,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "value": _float_out(alert.value),
        "url": alert.url,
        "issue": None if alert.issue is None else _tag(alert.issue),
    }


def _float_out(value: float | None) -> float | str | None:
    # orjson writes NaN and infinities as null; keep them, the way Prometheus spells them.
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _tag(value: Any) -> Any:
    """A free-form value with datetimes, dates and non-finite floats marked."""
    if isinstance(value, datetime):
        return {_DATETIME_TAG: value.isoformat()}
    if isinstance(value, date):
        return {_DATE_TAG: value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {_FLOAT_TAG: _float_out(value)}
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    return value


# --------------------------------------------------------------------------- decoding


def decode_alert(data: bytes | str) -> Alert:
    """The alert :func:`encode_alert` wrote."""
    doc = _load(data)
    return alert_from_dict(doc, "")


def decode_notification(data: bytes | str) -> Notification:
    """The notification :func:`encode_notification` wrote."""
    doc = _load(data)
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise CodecError("alerts: must be a list")
    return Notification(
        id=_str(doc, "id", ""),
        channel=_str(doc, "channel", ""),
        group_key=_str(doc, "group_key", ""),
        group_labels=_str_dict(doc, "group_labels", ""),
        alerts=tuple(alert_from_dict(a, f"alerts[{i}].") for i, a in enumerate(alerts)),
        created_at=_datetime(doc, "created_at", ""),
        dashboard_url=_opt_str(doc, "dashboard_url", ""),
        extra=_untag_dict(doc.get("extra", {}), "extra"),
    )


def alert_from_dict(doc: Any, path: str = "") -> Alert:
    """The alert :func:`alert_to_dict` made; ``path`` prefixes field names in errors."""
    if not isinstance(doc, dict):
        raise CodecError(f"{path or 'alert'}: must be an object")
    kind = _str(doc, "kind", path)
    if kind not in _KINDS:
        raise CodecError(f"{path}kind: unknown kind {kind!r}")
    status = _str(doc, "status", path)
    if status not in _STATUSES:
        raise CodecError(f"{path}status: unknown status {status!r}")
    try:
        severity = Severity(_str(doc, "severity", path))
    except ValueError as exc:
        raise CodecError(f"{path}severity: {exc}") from None
    rule_id = doc.get("rule_id")
    if not isinstance(rule_id, int) or isinstance(rule_id, bool):
        raise CodecError(f"{path}rule_id: must be an integer")
    issue = doc.get("issue")
    return Alert(
        rule_id=rule_id,
        rule_name=_str(doc, "rule_name", path),
        kind=cast(Any, kind),
        fingerprint=_str(doc, "fingerprint", path),
        status=cast(Any, status),
        severity=severity,
        labels=_str_dict(doc, "labels", path),
        annotations=_str_dict(doc, "annotations", path),
        starts_at=_datetime(doc, "starts_at", path),
        ends_at=None if doc.get("ends_at") is None else _datetime(doc, "ends_at", path),
        value=_float_in(doc.get("value"), f"{path}value"),
        url=_opt_str(doc, "url", path),
        issue=None if issue is None else _untag_dict(issue, f"{path}issue"),
    )


def _load(data: bytes | str) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CodecError("must be a JSON object")
    if doc.get("v") != FORMAT_VERSION:
        raise CodecError(f"v: unsupported format version {doc.get('v')!r}")
    return doc


def _str(doc: dict[str, Any], key: str, path: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise CodecError(f"{path}{key}: must be a string")
    return value


def _opt_str(doc: dict[str, Any], key: str, path: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise CodecError(f"{path}{key}: must be a string or null")
    return value


def _str_dict(doc: dict[str, Any], key: str, path: str) -> dict[str, str]:
    value = doc.get(key)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CodecError(f"{path}{key}: must be an object of strings")
    return value


def _datetime(doc: dict[str, Any], key: str, path: str) -> datetime:
    value = doc.get(key)
    if not isinstance(value, str):
        raise CodecError(f"{path}{key}: must be an ISO 8601 date and time")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise CodecError(f"{path}{key}: not an ISO 8601 date and time: {value!r}") from None


def _float_in(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise CodecError(f"{where}: must be a number")
    try:
        return float(value)
    except ValueError:
        raise CodecError(f"{where}: not a number: {value!r}") from None


def _untag_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"{where}: must be an object")
    return {k: _untag(v, f"{where}.{k}") for k, v in value.items()}


def _untag(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return [_untag(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, text),) = value.items()
        try:
            if tag == _DATETIME_TAG:
                return datetime.fromisoformat(text)
            if tag == _DATE_TAG:
                return date.fromisoformat(text)
            if tag == _FLOAT_TAG:
                return float(text)
        except (TypeError, ValueError):
            raise CodecError(f"{where}: bad {tag} value {text!r}") from None
    return _untag_dict(value, where)
