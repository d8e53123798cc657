"""The browser telemetry endpoints over HTTP: the real ``api`` extension (PostgreSQL for the
ingest keys, Redis for the rate limits) delivering to a recording OTLP/HTTP server that stands
in for the collector's receiver. Valid and invalid bodies of each endpoint, keys, compression,
limits, the receiver's backpressure, CORS and the OpenAPI entries."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from api.extension import ApiExtension
from collector.pdata import Signal
from exporters.errors.extract import any_value
from storage.projects import ProjectKey, ProjectStore
from tests.support.api import running_api
from tests.support.otlp_sink import OTLPSink

MAX_SIZE = 16 * 1024
SESSION = "s3ss10n-Ab_9"
V8_STACK = (
    "TypeError: Cannot read properties of undefined (reading 'price')\n"
    "    at total (https://shop.example/assets/cart.js:12:18)\n"
    "    at HTMLButtonElement.checkout (https://shop.example/assets/cart.js:30:5)"
)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class Telemetry:
    """The API under test, its receiver, a client and the key of project 1."""

    def __init__(self, api: ApiExtension, sink: OTLPSink, session: aiohttp.ClientSession, key: ProjectKey) -> None:
        self.api = api
        self.sink = sink
        self.session = session
        self.key = key
        assert api.services is not None
        self.projects = ProjectStore(api.services.pool)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    async def post(
        self,
        kind: str,
        body: Any,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        query: str = "",
    ) -> tuple[int, dict[str, str], Any]:
        sent = {"Content-Type": "application/json", "X-AppGuard-Key": key if key is not None else self.key.public_key}
        if key == "":
            del sent["X-AppGuard-Key"]
        sent.update(headers or {})
        data = raw if raw is not None else orjson.dumps(body)
        async with self.session.post(f"{self.base}/api/telemetry/{kind}{query}", data=data, headers=sent) as reply:
            content = await reply.read()
            return reply.status, dict(reply.headers), orjson.loads(content) if content else None

    def logs(self) -> list[ExportLogsServiceRequest]:
        return [r.message for r in self.sink.requests if r.signal is Signal.LOGS]  # type: ignore[misc]

    def metrics(self) -> list[ExportMetricsServiceRequest]:
        return [r.message for r in self.sink.requests if r.signal is Signal.METRICS]  # type: ignore[misc]

    def last_record(self) -> tuple[dict[str, Any], Any]:
        [resource_logs] = self.logs()[-1].resource_logs
        [record] = resource_logs.scope_logs[0].log_records
        return attributes(resource_logs.resource.attributes), record


@pytest.fixture
async def sink() -> AsyncIterator[OTLPSink]:
    async with OTLPSink(grpc_port=None) as running:
        yield running


async def _telemetry(
    tmp_path: Path, dsn: str, redis_url: str, prefix: str, sink: OTLPSink, **ingest: Any
) -> AsyncIterator[Telemetry]:
    settings = {"otlp_endpoint": sink.http_endpoint, "max_telemetry_size": MAX_SIZE, "timeout": "5s", **ingest}
    async with (
        running_api(tmp_path, dsn, redis_url, prefix, ingest=settings) as api,
        aiohttp.ClientSession() as session,
    ):
        assert api.services is not None
        key = (await ProjectStore(api.services.pool).list_keys(1))[0]
        yield Telemetry(api, sink, session, key)


@pytest.fixture
async def telemetry(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> AsyncIterator[Telemetry]:
    async for running in _telemetry(tmp_path, appguard_dsn, redis_url, redis_prefix, sink):
        yield running


def common(**extra: Any) -> dict[str, Any]:
    return {
        "timestamp": (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z"),
        "session_id": SESSION,
        "service": "shop-web",
        "environment": "production",
        "release": "shop-web@3.1.0",
        "url": "https://shop.example/cart?coupon=SPRING#total",
        "user": {"id": "u7", "email": "u7@example.com", "username": "ursula"},
        **extra,
    }


def error_body(**extra: Any) -> dict[str, Any]:
    return common(type="TypeError", message="Cannot read properties of undefined (reading 'price')",
                  stacktrace=V8_STACK, mechanism="onerror", handled=False, **extra)  # fmt: skip


# --------------------------------------------------------------------------- /error


async def test_an_error_becomes_one_log_record_of_the_keys_project(telemetry: Telemetry) -> None:
    project = await telemetry.projects.create_project("storefront")
    key = await telemetry.projects.create_key(project.id)
    event_id = uuid.uuid4().hex.upper()
    body = error_body(event_id=event_id, previous_session_id="earlier-session", attributes={"plan": "pro", "items": 3})
    status, _, answer = await telemetry.post(
        "error", body, key=key.public_key, headers={"User-Agent": "TestBrowser/1.0"}
    )
    assert (status, answer) == (200, {"accepted": 1, "event_id": event_id.lower()})
    resource, record = telemetry.last_record()
    assert resource == {
        "service.name": "shop-web",
        "service.version": "shop-web@3.1.0",
        "deployment.environment.name": "production",
        "telemetry.sdk.language": "webjs",
        "telemetry.sdk.name": "appguard.browser",
        "appguard.project_id": project.id,
    }
    attrs = attributes(record.attributes)
    assert attrs["exception.type"] == "TypeError"
    assert attrs["exception.message"] == body["message"]
    assert attrs["exception.stacktrace"] == V8_STACK
    assert attrs["exception.escaped"] is True and attrs["handled"] == "no" and attrs["mechanism"] == "onerror"
    assert attrs["appguard.event_id"] == event_id.lower()
    assert (attrs["session.id"], attrs["session.previous_id"]) == (SESSION, "earlier-session")
    assert (attrs["url.full"], attrs["url.path"]) == (body["url"], "/cart")
    assert (attrs["user.id"], attrs["user.email"], attrs["user.name"]) == ("u7", "u7@example.com", "ursula")
    assert attrs["user_agent.original"] == "TestBrowser/1.0"
    assert (attrs["plan"], attrs["items"]) == ("pro", 3)
    assert record.severity_text == "ERROR" and record.severity_number == 17
    sent = datetime.fromisoformat(body["timestamp"])
    assert record.time_unix_nano == int(sent.timestamp()) * 10**9 + sent.microsecond * 1000


async def test_an_error_without_optional_fields_gets_an_event_id_and_defaults(telemetry: Telemetry) -> None:
    status, _, answer = await telemetry.post("error", {"session_id": SESSION, "type": "Error"})
    assert status == 200 and answer["accepted"] == 1 and len(answer["event_id"]) == 32
    resource, record = telemetry.last_record()
    assert resource["service.name"] == "web" and "service.version" not in resource
    attrs = attributes(record.attributes)
    assert attrs["appguard.event_id"] == answer["event_id"]
    assert "exception.stacktrace" not in attrs and "exception.escaped" not in attrs
    # The time of arrival stands in for the missing timestamp.
    assert record.time_unix_nano == record.observed_time_unix_nano > 0


def _too_old() -> str:
    return (datetime.now(UTC) - timedelta(days=8)).isoformat()


def _ahead() -> str:
    return (datetime.now(UTC) + timedelta(hours=2)).isoformat()


INVALID_ERRORS: list[tuple[str, Any, str]] = [
    ("missing type", {"session_id": SESSION}, "type"),
    ("empty type", {"session_id": SESSION, "type": ""}, "type"),
    ("type not text", {"session_id": SESSION, "type": 42}, "type"),
    ("missing session", {"type": "Error"}, "session_id"),
    ("short session", {"session_id": "abc", "type": "Error"}, "session_id"),
    ("session with spaces", {"session_id": "a session id", "type": "Error"}, "session_id"),
    ("timestamp not a date", {"session_id": SESSION, "type": "Error", "timestamp": "yesterday"}, "timestamp"),
    ("timestamp a number", {"session_id": SESSION, "type": "Error", "timestamp": 1767323045}, "timestamp"),
    ("timestamp too old", {"session_id": SESSION, "type": "Error", "timestamp": "OLD"}, "timestamp"),
    ("timestamp ahead", {"session_id": SESSION, "type": "Error", "timestamp": "AHEAD"}, "timestamp"),
    ("message too long", {"session_id": SESSION, "type": "Error", "message": "x" * 8193}, "message"),
    ("handled not boolean", {"session_id": SESSION, "type": "Error", "handled": "yes"}, "handled"),
    ("event id not hex", {"session_id": SESSION, "type": "Error", "event_id": "z" * 32}, "event_id"),
    ("user not an object", {"session_id": SESSION, "type": "Error", "user": "u7"}, "user"),
    ("user email too long", {"session_id": SESSION, "type": "Error", "user": {"email": "e" * 300}}, "user.email"),
    ("attributes a list", {"session_id": SESSION, "type": "Error", "attributes": ["a"]}, "attributes"),
    ("too many attributes", {"session_id": SESSION, "type": "Error", "attributes": {f"k{i}": i for i in range(65)}}, "attributes"),
    ("nested attribute", {"session_id": SESSION, "type": "Error", "attributes": {"cart": {"items": 3}}}, "attributes.cart"),
    ("attribute too long", {"session_id": SESSION, "type": "Error", "attributes": {"note": "n" * 1025}}, "attributes"),
]  # fmt: skip


@pytest.mark.parametrize(("why", "body", "field"), INVALID_ERRORS, ids=[case[0] for case in INVALID_ERRORS])
async def test_an_invalid_error_is_refused_naming_the_field(
    telemetry: Telemetry, why: str, body: Any, field: str
) -> None:
    if body.get("timestamp") == "OLD":
        body = {**body, "timestamp": _too_old()}
    elif body.get("timestamp") == "AHEAD":
        body = {**body, "timestamp": _ahead()}
    status, _, answer = await telemetry.post("error", body)
    assert status == 400, (why, answer)
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["field"] == field, (why, answer)
    assert answer["error"]["message"].startswith(f"{field}:")
    assert telemetry.sink.requests == []


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b'["a list"]', "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused(telemetry: Telemetry, raw: bytes, says: str) -> None:
    for kind in ("error", "pageview", "event", "performance"):
        status, _, answer = await telemetry.post(kind, None, raw=raw)
        assert status == 400 and answer["error"]["code"] == "malformed_json" and says in answer["error"]["message"], (
            kind,
            answer,
        )
    assert telemetry.sink.requests == []


# --------------------------------------------------------------------------- /pageview and /event


async def test_a_page_view_becomes_a_browser_page_view_record(telemetry: Telemetry) -> None:
    body = common(referrer="https://search.example/?q=shop", title="Your cart", navigation="push")
    status, _, answer = await telemetry.post("pageview", body, headers={"User-Agent": "TestBrowser/2.0"})
    assert (status, answer) == (200, {"accepted": 1})
    resource, record = telemetry.last_record()
    assert resource["service.name"] == "shop-web" and resource["appguard.project_id"] == 1
    attrs = attributes(record.attributes)
    assert record.event_name == attrs["event.name"] == "browser.page_view"
    assert record.severity_text == "INFO" and record.severity_number == 9
    assert (attrs["url.full"], attrs["url.path"]) == (body["url"], "/cart")
    assert attrs["browser.referrer"] == "https://search.example/?q=shop"
    assert (attrs["browser.page.title"], attrs["browser.navigation.type"]) == ("Your cart", "push")
    assert (attrs["session.id"], attrs["user.id"], attrs["user_agent.original"]) == (SESSION, "u7", "TestBrowser/2.0")
    assert not any(key.startswith("exception.") for key in attrs)


async def test_a_custom_event_becomes_a_browser_custom_event_record(telemetry: Telemetry) -> None:
    body = common(name="coupon_applied", properties={"code": "SPRING", "discount": 12.5, "first": True},
                  attributes={"exception.type": "not an exception", "plan": "pro"})  # fmt: skip
    status, _, answer = await telemetry.post("event", body)
    assert (status, answer) == (200, {"accepted": 1})
    _, record = telemetry.last_record()
    attrs = attributes(record.attributes)
    assert record.event_name == attrs["event.name"] == "browser.custom_event"
    assert attrs["appguard.event.name"] == "coupon_applied" and record.body.string_value == "coupon_applied"
    assert attrs["appguard.event.property.code"] == "SPRING"
    assert attrs["appguard.event.property.discount"] == 12.5
    assert attrs["appguard.event.property.first"] is True
    # An attribute may not pose as an exception: the record would become an issue.
    assert "exception.type" not in attrs and attrs["plan"] == "pro"


INVALID_OTHERS: list[tuple[str, str, Any, str]] = [
    ("pageview", "unknown navigation", {"session_id": SESSION, "navigation": "reload"}, "navigation"),
    ("pageview", "title not text", {"session_id": SESSION, "title": ["a"]}, "title"),
    ("pageview", "url too long", {"session_id": SESSION, "url": "https://a.example/" + "p" * 8200}, "url"),
    ("pageview", "missing session", {"url": "https://a.example/"}, "session_id"),
    ("event", "missing name", {"session_id": SESSION}, "name"),
    ("event", "name too long", {"session_id": SESSION, "name": "n" * 129}, "name"),
    ("event", "nested property", {"session_id": SESSION, "name": "x", "properties": {"a": [1]}}, "properties.a"),
    ("event", "too many properties", {"session_id": SESSION, "name": "x", "properties": {f"p{i}": 1 for i in range(65)}}, "properties"),
    ("performance", "missing metrics", {"session_id": SESSION}, "metrics"),
    ("performance", "no metrics", {"session_id": SESSION, "metrics": []}, "metrics"),
    ("performance", "unknown vital", {"session_id": SESSION, "metrics": [{"name": "LCP", "value": 1}, {"name": "FID", "value": 3}]}, "metrics.1.name"),
    ("performance", "negative value", {"session_id": SESSION, "metrics": [{"name": "INP", "value": -1}]}, "metrics.0.value"),
    ("performance", "value as text", {"session_id": SESSION, "metrics": [{"name": "INP", "value": "12"}]}, "metrics.0.value"),
    ("performance", "missing value", {"session_id": SESSION, "metrics": [{"name": "INP"}]}, "metrics.0.value"),
    ("performance", "incredible CLS", {"session_id": SESSION, "metrics": [{"name": "CLS", "value": 5000}]}, "metrics.0.value"),
    ("performance", "unknown rating", {"session_id": SESSION, "metrics": [{"name": "CLS", "value": 0.1, "rating": "ok"}]}, "metrics.0.rating"),
    ("performance", "too many", {"session_id": SESSION, "metrics": [{"name": "CLS", "value": 0.1}] * 51}, "metrics"),
    ("performance", "metrics an object", {"session_id": SESSION, "metrics": {"name": "CLS", "value": 0.1}}, "metrics"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "why", "body", "field"), INVALID_OTHERS, ids=[f"{c[0]}-{c[1]}" for c in INVALID_OTHERS]
)
async def test_invalid_bodies_of_the_other_endpoints_name_the_field(
    telemetry: Telemetry, kind: str, why: str, body: Any, field: str
) -> None:
    status, _, answer = await telemetry.post(kind, body)
    assert status == 400, (why, answer)
    assert (answer["error"]["code"], answer["error"]["field"]) == ("invalid_request", field), (why, answer)
    assert telemetry.sink.requests == []


# --------------------------------------------------------------------------- /performance


def _histograms(request: ExportMetricsServiceRequest) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
    out = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.histogram.data_points:
                    out[(metric.name, tuple(sorted(attributes(point.attributes).items())))] = (metric, point)
    return out


async def test_web_vitals_become_cumulative_histograms(telemetry: Telemetry) -> None:
    report = common(metrics=[
        {"name": "LCP", "value": 2100, "rating": "good", "id": "v4-1", "navigation_type": "navigate"},
        {"name": "CLS", "value": 0.3, "rating": "poor", "navigation_type": "navigate"},
        {"name": "INP", "value": 180.5, "rating": "good", "navigation_type": "navigate"},
    ])  # fmt: skip
    status, _, answer = await telemetry.post("performance", report)
    assert (status, answer) == (200, {"accepted": 3})
    [first] = telemetry.metrics()
    resource = attributes(first.resource_metrics[0].resource.attributes)
    assert resource["service.name"] == "shop-web" and resource["service.version"] == "shop-web@3.1.0"
    assert resource["deployment.environment.name"] == "production" and resource["appguard.project_id"] == 1
    assert len(resource["service.instance.id"]) == 32
    points = _histograms(first)
    labels = (("navigation_type", "navigate"), ("rating", "good"), ("url.path", "/cart"))
    metric, lcp = points[("browser.web_vital.lcp", labels)]
    assert metric.unit == "ms" and metric.histogram.aggregation_temporality == 2  # cumulative
    assert (lcp.count, lcp.sum) == (1, 2100.0)
    assert list(lcp.explicit_bounds)[:6] == [500, 1000, 1500, 2000, 2500, 3000]
    assert list(lcp.bucket_counts)[4] == 1 and sum(lcp.bucket_counts) == 1  # 2000 < 2100 <= 2500
    metric, cls = points[
        ("browser.web_vital.cls", (("navigation_type", "navigate"), ("rating", "poor"), ("url.path", "/cart")))
    ]
    assert metric.unit == "1" and cls.count == 1
    assert points[("browser.web_vital.inp", labels)][1].sum == 180.5

    # A second page load on the same page: the totals go on from the first one.
    again = common(
        url="https://shop.example/cart?other=1",
        metrics=[{"name": "LCP", "value": 900, "rating": "good", "navigation_type": "navigate"}],
    )
    status, _, answer = await telemetry.post("performance", again)
    assert (status, answer) == (200, {"accepted": 1})
    later = _histograms(telemetry.metrics()[-1])
    assert list(later) == [("browser.web_vital.lcp", labels)]
    _, lcp2 = later[("browser.web_vital.lcp", labels)]
    assert (lcp2.count, lcp2.sum) == (2, 3000.0)
    assert lcp2.start_time_unix_nano == lcp.start_time_unix_nano and lcp2.time_unix_nano >= lcp.time_unix_nano
    assert list(lcp2.bucket_counts)[1] == 1 and list(lcp2.bucket_counts)[4] == 1


async def test_vitals_refused_by_a_busy_receiver_are_not_counted(telemetry: Telemetry) -> None:
    body = common(metrics=[{"name": "TTFB", "value": 120, "rating": "good"}])
    telemetry.sink.fail_next(1, http_status=503, retry_after=3)
    status, headers, answer = await telemetry.post("performance", body)
    assert status == 429 and headers["Retry-After"] == "3" and answer["error"]["code"] == "rate_limited"
    # The client retries; only the accepted report counts.
    status, _, _ = await telemetry.post("performance", body)
    assert status == 200
    [(_, point)] = _histograms(telemetry.metrics()[-1]).values()
    assert point.count == 1 and point.sum == 120.0


# --------------------------------------------------------------------------- keys, encodings, limits


async def test_keys_are_required_and_checked(telemetry: Telemetry) -> None:
    body = {"session_id": SESSION, "type": "Error"}
    for key, status, says in [
        ("", 401, "missing ingest key"),
        ("0" * 32, 401, "unknown"),
        ("not-a-key", 401, "unknown"),
    ]:
        got, _, answer = await telemetry.post("error", body, key=key)
        assert (got, answer["error"]["field"]) == (status, "X-AppGuard-Key") and says in answer["error"]["message"]
    revoked = await telemetry.projects.create_key(1)
    await telemetry.projects.revoke_key(1, revoked.id)
    got, _, answer = await telemetry.post("pageview", {"session_id": SESSION}, key=revoked.public_key)
    assert got == 403 and "revoked" in answer["error"]["message"]
    # The key in the query string, as navigator.sendBeacon (text/plain, no custom header) sends it.
    got, _, answer = await telemetry.post(
        "event", {"session_id": SESSION, "name": "beacon"}, key="", headers={"Content-Type": "text/plain"},
        query=f"?key={telemetry.key.public_key}",
    )  # fmt: skip
    assert (got, answer) == (200, {"accepted": 1})
    assert len(telemetry.logs()) == 1


async def test_compressed_bodies_and_limits(telemetry: Telemetry) -> None:
    body = orjson.dumps(error_body())
    for encoding, data in [("gzip", gzip.compress(body)), ("br", brotli.compress(body))]:
        status, _, answer = await telemetry.post("error", None, raw=data, headers={"Content-Encoding": encoding})
        assert status == 200 and answer["accepted"] == 1, (encoding, answer)
    assert len(telemetry.logs()) == 2
    status, _, answer = await telemetry.post(
        "error", None, raw=gzip.compress(body)[:-12], headers={"Content-Encoding": "gzip"}
    )
    assert status == 400 and "cannot read the body" in answer["error"]["message"]
    status, _, answer = await telemetry.post("error", None, raw=body, headers={"Content-Encoding": "lz4"})
    assert status == 415 and "lz4" in answer["error"]["message"]
    status, _, answer = await telemetry.post("error", None, raw=body, headers={"Content-Type": "application/xml"})
    assert (status, answer["error"]["field"]) == (415, "Content-Type")
    large = orjson.dumps(error_body(attributes={f"k{i}": "v" * 1000 for i in range(20)}))
    status, _, answer = await telemetry.post("error", None, raw=large)
    assert status == 413 and "api.ingest.max_telemetry_size" in answer["error"]["message"]
    # A compressed bomb stops at the limit once decoded.
    bomb = gzip.compress(orjson.dumps({"session_id": SESSION, "type": "E", "message": " " * (MAX_SIZE * 4)}))
    status, _, answer = await telemetry.post("error", None, raw=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in answer["error"]["message"]
    assert len(telemetry.logs()) == 2


async def test_an_unreachable_receiver_is_a_429(telemetry: Telemetry) -> None:
    await telemetry.sink.stop()
    status, headers, answer = await telemetry.post("error", error_body())
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "unavailable" in answer["error"]["message"]
    await telemetry.sink.start()
    status, _, _ = await telemetry.post("error", error_body())
    assert status == 200 and len(telemetry.logs()) == 1


async def test_the_rate_limit_per_key(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> None:
    async for telemetry in _telemetry(tmp_path, appguard_dsn, redis_url, redis_prefix, sink, rate_limit_per_key=2):
        body = {"session_id": SESSION, "name": "tick"}
        statuses = [(await telemetry.post("event", body))[0] for _ in range(2)]
        status, headers, answer = await telemetry.post("event", body)
        assert statuses == [200, 200] and status == 429 and int(headers["Retry-After"]) >= 1
        assert "per ingest key" in answer["error"]["message"]
        assert len(telemetry.logs()) == 2


async def test_cors_for_pages_of_the_allowed_origins(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> None:
    origins = ["https://shop.example"]
    async for telemetry in _telemetry(tmp_path, appguard_dsn, redis_url, redis_prefix, sink, allowed_origins=origins):
        preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type, x-appguard-key, content-encoding"}  # fmt: skip
        async with telemetry.session.options(f"{telemetry.base}/api/telemetry/error", headers=preflight) as reply:
            assert reply.status == 204
            assert reply.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            assert "x-appguard-key" in reply.headers["Access-Control-Allow-Headers"]
        status, headers, _ = await telemetry.post(
            "pageview", {"session_id": SESSION}, headers={"Origin": "https://shop.example"}
        )
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://shop.example"
        status, _, answer = await telemetry.post(
            "pageview", {"session_id": SESSION}, headers={"Origin": "https://evil.example"}
        )
        assert (status, answer["error"]["field"]) == (403, "Origin")
        assert len(telemetry.logs()) == 1


async def test_the_endpoints_are_in_the_openapi_document(telemetry: Telemetry) -> None:
    async with telemetry.session.get(f"{telemetry.base}/api/openapi.json") as reply:
        doc = await reply.json()
    schemas = doc["components"]["schemas"]
    expected = {"error": ("ErrorReport", "type"), "pageview": ("PageView", None), "event": ("CustomEvent", "name"),
                "performance": ("PerformanceReport", "metrics")}  # fmt: skip
    for kind, (model, required) in expected.items():
        op = doc["paths"][f"/api/telemetry/{kind}"]["post"]
        assert op["x-appguard-role"] == "public" and op["security"] == []
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert {"200", "400", "401", "403", "413", "415", "429"} <= set(op["responses"])
        assert "session_id" in schemas[model]["required"]
        if required:
            assert required in schemas[model]["required"]
    assert schemas["WebVital"]["properties"]["name"]["enum"] == ["LCP", "INP", "CLS", "TTFB", "FCP"]
