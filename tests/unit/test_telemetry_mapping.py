"""The browser telemetry bodies and their OTLP: validation, log records the errors exporter
groups as JavaScript, page views and custom events, and the web vitals accumulator."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from api.telemetry_mapping import (
    VITALS,
    CustomEvent,
    ErrorReport,
    PageView,
    PerformanceReport,
    VitalsAccumulator,
    bucket_index,
    custom_event_to_logs,
    error_to_logs,
    page_view_to_logs,
    url_path,
)
from collector.component import ComponentID, CreateSettings, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters._promtranslate import Naming
from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig
from exporters.errors.extract import Extractor, any_value
from storage.errors_store import ErrorEvent

SESSION = "abcDEF_123-x"
V8 = (
    "TypeError: Cannot read properties of undefined (reading 'price')\n"
    "    at priceOf (https://shop.example/assets/cart.js:20:15)\n"
    "    at Array.map (<anonymous>)\n"
    "    at total (https://shop.example/assets/cart.js:24:21)\n"
    "    at checkout (https://shop.example/assets/cart.js:41:5)"
)
# Firefox's error.stack has no header line; the type and message come from the body.
GECKO = (
    "priceOf@https://shop.example/assets/cart.js:20:15\n"
    "total@https://shop.example/assets/cart.js:24:21\n"
    "checkout@https://shop.example/assets/cart.js:41:5\n"
)

EXPORTER = ErrorsExporter(
    CreateSettings(ComponentID("errors"), Kind.EXPORTER, Telemetry(), logging.getLogger("test.errors"), None),
    ErrorsExporterConfig.model_validate({"endpoint": "postgresql://appguard@127.0.0.1/appguard"}),
    frozenset({Signal.TRACES, Signal.LOGS}),
)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def error(**extra: Any) -> ErrorReport:
    return ErrorReport.model_validate({"session_id": SESSION, "type": "TypeError",
                                       "message": "Cannot read properties of undefined (reading 'price')", **extra})  # fmt: skip


def stored(report: ErrorReport, project_id: int = 1, event_id: str = "ab" * 16) -> ErrorEvent:
    """What the errors exporter would store for a report, through the bytes of OTLP."""
    request = error_to_logs(report, project_id=project_id, event_id=event_id)
    [found] = Extractor().extract(Payload.from_bytes(Signal.LOGS, request.SerializeToString()))
    return EXPORTER.to_event(found)


# --------------------------------------------------------------------------- errors


def test_an_error_record_is_grouped_with_its_javascript_frames() -> None:
    report = error(stacktrace=V8, service="shop-web", release="shop-web@3.1.0", environment="staging",
                   url="https://shop.example/cart?x=1", user={"id": "u7", "email": "u7@example.com"},
                   handled=False, mechanism="onerror")  # fmt: skip
    event = stored(report, project_id=4)
    assert event.project_id == 4
    assert str(event.event_id).replace("-", "") == "ab" * 16
    assert (event.type, event.level) == ("TypeError", "error")
    assert event.title.startswith("TypeError: Cannot read properties of undefined")
    assert (event.service_name, event.service_version, event.environment) == ("shop-web", "shop-web@3.1.0", "staging")
    assert (event.session_id, event.user_id, event.user_email) == (SESSION, "u7", "u7@example.com")
    assert event.frames is not None
    [exc] = event.frames
    functions = [f.get("function") for f in exc["stacktrace"]["frames"]]
    assert functions == ["checkout", "total", "Array.map", "priceOf"]
    lines = [
        f.get("lineno")
        for f in exc["stacktrace"]["frames"]
        if "cart.js" in (f.get("filename") or f.get("abs_path") or "")
    ]
    assert lines == [41, 24, 20]
    assert event.attributes is not None
    assert (event.attributes["mechanism"], event.attributes["handled"]) == ("onerror", "no")


def test_the_same_bug_from_chrome_and_firefox_is_one_issue_and_another_bug_is_not() -> None:
    chrome = stored(error(stacktrace=V8))
    firefox = stored(error(stacktrace=GECKO))
    assert firefox.frames is not None and firefox.type == "TypeError"
    assert [f.get("function") for f in firefox.frames[0]["stacktrace"]["frames"]] == ["checkout", "total", "priceOf"]
    # V8's frame of the built-in Array.map is not the application's: it does not split the issue.
    assert firefox.fingerprint == chrome.fingerprint
    elsewhere = stored(error(stacktrace=V8.replace("priceOf", "taxOf")))
    assert chrome.fingerprint != elsewhere.fingerprint
    # The same report twice is the same issue; its event ids differ.
    assert stored(error(stacktrace=V8), event_id="cd" * 16).fingerprint == chrome.fingerprint


def test_an_error_record_carries_what_the_body_says_and_no_more() -> None:
    report = error(previous_session_id="previous-1", handled=True, user={"username": "ursula"},
                   attributes={"plan": "pro", "exception.type": "Spoof", "appguard.project_id": 9, "event.name": "x"})  # fmt: skip
    request = error_to_logs(report, project_id=2, event_id="EF" * 16, user_agent="Agent/1", received_ns=10**18)
    [rl] = request.resource_logs
    resource = attrs(rl.resource.attributes)
    assert resource == {"service.name": "web", "telemetry.sdk.language": "webjs",
                        "telemetry.sdk.name": "appguard.browser", "appguard.project_id": 2}  # fmt: skip
    [record] = rl.scope_logs[0].log_records
    found = attrs(record.attributes)
    assert found["exception.type"] == "TypeError" and found["appguard.event_id"] == "ef" * 16
    assert "appguard.project_id" not in found and "event.name" not in found
    assert found["exception.escaped"] is False and found["handled"] == "yes"
    assert (found["session.previous_id"], found["user.name"], found["user_agent.original"]) == (
        "previous-1",
        "ursula",
        "Agent/1",
    )
    assert "url.full" not in found and "exception.stacktrace" not in found and "mechanism" not in found
    assert record.time_unix_nano == record.observed_time_unix_nano == 10**18
    assert record.body.string_value == "TypeError: Cannot read properties of undefined (reading 'price')"
    # The user agent of the body wins over the request's header.
    other = error_to_logs(error(user_agent="Body/2"), project_id=1, event_id="ab" * 16, user_agent="Header/1")
    assert attrs(other.resource_logs[0].scope_logs[0].log_records[0].attributes)["user_agent.original"] == "Body/2"


def test_timestamps() -> None:
    now = datetime.now(UTC)
    naive = (now - timedelta(minutes=1)).replace(tzinfo=None)
    assert error(timestamp=naive.isoformat()).timestamp == naive.replace(tzinfo=UTC)
    zulu = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert error(timestamp=zulu).timestamp == datetime.fromisoformat(zulu)
    offset = (now - timedelta(hours=3)).astimezone(UTC).replace(microsecond=123456)
    report = error(timestamp=offset.isoformat())
    [record] = error_to_logs(report, project_id=1, event_id="ab" * 16).resource_logs[0].scope_logs[0].log_records
    assert record.time_unix_nano == int(offset.timestamp()) * 10**9 + 123456000
    for bad in [(now - timedelta(days=8)).isoformat(), (now + timedelta(hours=2)).isoformat(), "soon", 1767323045]:
        with pytest.raises(ValidationError) as caught:
            error(timestamp=bad)
        assert caught.value.errors()[0]["loc"] == ("timestamp",)


def test_unknown_fields_are_ignored_and_wrong_types_refused() -> None:
    report = error(sdk_version="2.0", stack="not ours")
    assert not hasattr(report, "sdk_version")
    for field, value in [("type", 1), ("message", ["a"]), ("handled", 1), ("service", ""), ("session_id", 12345678)]:
        with pytest.raises(ValidationError) as caught:
            error(**{field: value})
        assert caught.value.errors()[0]["loc"][0] == field, field


# --------------------------------------------------------------------------- page views and events


def test_a_page_view_record() -> None:
    view = PageView.model_validate({"session_id": SESSION, "url": "https://shop.example/a/b?c=d#e", "title": "B",
                                    "referrer": "https://ref.example/", "navigation": "pop", "attributes": {"ab": "x"}})  # fmt: skip
    request = page_view_to_logs(view, project_id=3, user_agent="Agent/1")
    [record] = request.resource_logs[0].scope_logs[0].log_records
    found = attrs(record.attributes)
    assert record.event_name == found["event.name"] == "browser.page_view"
    assert (record.severity_number, record.severity_text) == (9, "INFO")
    assert record.body.string_value == "page view /a/b"
    assert found == {
        "event.name": "browser.page_view",
        "browser.referrer": "https://ref.example/",
        "browser.page.title": "B",
        "browser.navigation.type": "pop",
        "session.id": SESSION,
        "url.full": "https://shop.example/a/b?c=d#e",
        "url.path": "/a/b",
        "user_agent.original": "Agent/1",
        "ab": "x",
    }
    # No exception attribute: the errors exporter finds nothing in it.
    assert Extractor().extract(Payload.from_bytes(Signal.LOGS, request.SerializeToString())) == []


def test_a_custom_event_record() -> None:
    event = CustomEvent.model_validate(
        {"session_id": SESSION, "name": "signup", "properties": {"plan": "pro", "seats": 3, "trial": False}}
    )
    request = custom_event_to_logs(event, project_id=1)
    [record] = request.resource_logs[0].scope_logs[0].log_records
    found = attrs(record.attributes)
    assert record.event_name == "browser.custom_event" and record.body.string_value == "signup"
    assert found["appguard.event.name"] == "signup"
    assert (
        found["appguard.event.property.plan"],
        found["appguard.event.property.seats"],
        found["appguard.event.property.trial"],
    ) == ("pro", 3, False)
    with pytest.raises(ValidationError) as caught:
        CustomEvent.model_validate({"session_id": SESSION, "name": "x", "properties": {"k" * 129: 1}})
    assert caught.value.errors()[0]["loc"] == ("properties",)


def test_url_path() -> None:
    assert url_path("https://a.example/x/y?q=1#f") == "/x/y"
    assert url_path("https://a.example") == "/"
    assert url_path("/relative?q") == "/relative"
    assert url_path(None) is None and url_path("") is None
    assert url_path("http://[broken/") is None


# --------------------------------------------------------------------------- web vitals


def vitals(*metrics: dict[str, Any], url: str = "https://shop.example/cart?x=1", **extra: Any) -> PerformanceReport:
    return PerformanceReport.model_validate({"session_id": SESSION, "url": url, "metrics": list(metrics), **extra})


def points(request: Any) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    out = {}
    for metric in request.resource_metrics[0].scope_metrics[0].metrics:
        for point in metric.histogram.data_points:
            out[(metric.name, tuple(sorted(attrs(point.attributes).items())))] = point
    return out


def test_bucket_index_bounds_are_inclusive_upper_ends() -> None:
    bounds = VITALS["LCP"].bounds
    assert bucket_index(bounds, 0) == 0
    assert bucket_index(bounds, 500) == 0
    assert bucket_index(bounds, 500.5) == 1
    assert bucket_index(bounds, 2500) == bounds.index(2500)
    assert bucket_index(bounds, 10**6) == len(bounds)


def test_vitals_are_added_up_per_series_and_sent_cumulative() -> None:
    acc = VitalsAccumulator("instance-1")
    first = acc.add(vitals({"name": "LCP", "value": 1200, "rating": "good"}, {"name": "CLS", "value": 0.3, "rating": "poor"},
                           service="shop", release="1.0", environment="prod"), project_id=1, now_ns=1000)  # fmt: skip
    resource = attrs(first.request.resource_metrics[0].resource.attributes)
    assert resource["service.instance.id"] == "instance-1" and resource["service.name"] == "shop"
    assert (resource["service.version"], resource["deployment.environment.name"], resource["appguard.project_id"]) == (
        "1.0",
        "prod",
        1,
    )
    got = points(first.request)
    lcp = got[("browser.web_vital.lcp", (("rating", "good"), ("url.path", "/cart")))]
    assert (lcp.start_time_unix_nano, lcp.time_unix_nano, lcp.count, lcp.sum) == (1000, 1000, 1, 1200.0)
    assert list(lcp.bucket_counts) == [0, 0, 1] + [0] * 9
    metrics = {m.name: m for m in first.request.resource_metrics[0].scope_metrics[0].metrics}
    assert metrics["browser.web_vital.cls"].unit == "1" and metrics["browser.web_vital.lcp"].unit == "ms"
    assert metrics["browser.web_vital.lcp"].histogram.aggregation_temporality == 2

    second = acc.add(vitals({"name": "LCP", "value": 3000, "rating": "good"}, url="https://shop.example/cart",
                            service="shop", release="1.0", environment="prod"), project_id=1, now_ns=2000)  # fmt: skip
    [(key, lcp2)] = points(second.request).items()
    assert key[0] == "browser.web_vital.lcp"
    assert (lcp2.start_time_unix_nano, lcp2.time_unix_nano, lcp2.count, lcp2.sum) == (1000, 2000, 2, 4200.0)
    assert list(lcp2.bucket_counts) == [0, 0, 1, 0, 0, 1] + [0] * 6

    # Another page, project or release is another series.
    other = acc.add(
        vitals({"name": "LCP", "value": 100}, url="https://shop.example/", service="shop"), project_id=2, now_ns=3000
    )
    [point] = points(other.request).values()
    assert point.count == 1 and point.start_time_unix_nano == 3000
    assert len(acc) == 3


def test_a_report_not_delivered_is_taken_back() -> None:
    acc = VitalsAccumulator()
    acc.add(vitals({"name": "TTFB", "value": 100}), project_id=1, now_ns=1)
    failed = acc.add(vitals({"name": "TTFB", "value": 900}, {"name": "TTFB", "value": 50}), project_id=1, now_ns=2)
    assert next(iter(points(failed.request).values())).count == 3
    failed.undo()
    retried = acc.add(vitals({"name": "TTFB", "value": 900}, {"name": "TTFB", "value": 50}), project_id=1, now_ns=3)
    point = next(iter(points(retried.request).values()))
    assert (point.count, point.sum) == (3, 1050.0)


def test_the_number_of_series_is_bounded() -> None:
    acc = VitalsAccumulator(max_series=3)
    for n in range(5):
        acc.add(vitals({"name": "FCP", "value": 10}, url=f"https://a.example/p{n}"), project_id=1, now_ns=n + 1)
    assert len(acc) == 3
    # The oldest series was forgotten: it starts again.
    again = acc.add(vitals({"name": "FCP", "value": 10}, url="https://a.example/p0"), project_id=1, now_ns=10)
    [point] = points(again.request).values()
    assert (point.count, point.start_time_unix_nano) == (1, 10)


def test_vital_values_are_bounded() -> None:
    assert vitals({"name": "INP", "value": 0}).metrics[0].value == 0
    for metric, loc in [
        ({"name": "INP", "value": 3_600_001}, ("metrics", 0, "value")),
        ({"name": "CLS", "value": 1001}, ("metrics", 0, "value")),
        ({"name": "CLS", "value": True}, ("metrics", 0, "value")),
        ({"name": "FID", "value": 1}, ("metrics", 0, "name")),
        ({"name": "LCP", "value": 1, "rating": "fine"}, ("metrics", 0, "rating")),
    ]:
        with pytest.raises(ValidationError) as caught:
            vitals(metric)
        assert caught.value.errors()[0]["loc"] == loc, metric


def test_prometheus_names_of_the_vitals() -> None:
    naming = Naming.from_config("", True, None)
    names = {naming.metric_name(v.metric, v.unit, "histogram") for v in VITALS.values()}
    assert names == {
        "browser_web_vital_lcp_milliseconds",
        "browser_web_vital_fcp_milliseconds",
        "browser_web_vital_inp_milliseconds",
        "browser_web_vital_ttfb_milliseconds",
        "browser_web_vital_cls",
    }
