"""The Sentry ingest endpoints over HTTP: the real ``api`` extension (PostgreSQL for the keys,
Redis for the rate limits) delivering to a recording OTLP/HTTP server that stands in for the
collector's receiver. Auth cases, malformed and compressed bodies, rate limits and the
receiver's backpressure, CORS, and what reaches the receiver."""

from __future__ import annotations

import gzip
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from api.extension import ApiExtension
from api.sessions import SESSIONS
from collector.pdata import Signal
from exporters.errors.extract import any_value
from storage.projects import ProjectKey, ProjectStore
from tests.support.api import running_api
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink

MAX_SIZE = 256 * 1024


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def event(**extra: Any) -> dict[str, Any]:
    """A Python SDK's event: an exception with one in-app frame."""
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": "2026-01-02T03:04:05.123456Z",
        "platform": "python",
        "level": "error",
        "release": "shop@2.4.0",
        "environment": "production",
        "exception": {
            "values": [
                {
                    "type": "KeyError",
                    "value": "'alice'",
                    "mechanism": {"type": "generic", "handled": True},
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "load_profile",
                                "module": "shop.profiles",
                                "filename": "shop/profiles.py",
                                "abs_path": "/srv/shop/profiles.py",
                                "lineno": 12,
                                "context_line": "    return profiles[user]['email']",
                                "in_app": True,
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {"trace": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}},
        "user": {"id": "u1", "email": "u1@example.com"},
        "tags": {"shop": "eu"},
        **extra,
    }


def envelope(*items: tuple[dict[str, Any], bytes], headers: dict[str, Any] | None = None) -> bytes:
    lines = [orjson.dumps(headers or {})]
    for item_headers, payload in items:
        lines += [orjson.dumps({**item_headers, "length": len(payload)}), payload]
    return b"\n".join(lines) + b"\n"


def event_envelope(payload: dict[str, Any], **headers: Any) -> bytes:
    return envelope(({"type": "event"}, orjson.dumps(payload)), headers={"event_id": payload.get("event_id"), **headers})


def auth(key: str) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_client=test/1.0, sentry_key={key}"}


class Ingest:
    """The API under test, its receiver and a client."""

    def __init__(self, api: ApiExtension, sink: OTLPSink, session: aiohttp.ClientSession) -> None:
        self.api = api
        self.sink = sink
        self.session = session
        assert api.services is not None
        self.projects = ProjectStore(api.services.pool)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    async def key(self, project: int = 1) -> ProjectKey:
        return (await self.projects.list_keys(project))[0]

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        async with self.session.post(f"{self.base}{path}", data=body, headers=headers or {}) as reply:
            raw = await reply.read()
            try:
                decoded = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                decoded = raw.decode(errors="replace")
            return reply.status, dict(reply.headers), decoded

    def logs(self) -> list[ExportLogsServiceRequest]:
        return [r.message for r in self.sink.requests if r.signal is Signal.LOGS]  # type: ignore[misc]

    def traces(self) -> list[ExportTraceServiceRequest]:
        return [r.message for r in self.sink.requests if r.signal is Signal.TRACES]  # type: ignore[misc]


@pytest.fixture
async def sink() -> AsyncIterator[OTLPSink]:
    async with OTLPSink(grpc_port=None) as running:
        yield running


@pytest.fixture
async def ingest(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> AsyncIterator[Ingest]:
    sentry = {"otlp_endpoint": sink.http_endpoint, "max_envelope_size": MAX_SIZE, "timeout": "5s"}
    # The JSON endpoints' own limit is smaller: envelopes are not bound by it.
    async with (
        running_api(
            tmp_path, appguard_dsn, redis_url, redis_prefix, sentry=sentry, max_request_body_size=MAX_SIZE // 8
        ) as api,
        aiohttp.ClientSession() as session,
    ):
        yield Ingest(api, sink, session)


# --------------------------------------------------------------------------- delivery


async def test_an_event_is_delivered_as_a_log_record_and_answered_with_its_id(ingest: Ingest) -> None:
    key = await ingest.key()
    payload = event()
    status, headers, body = await ingest.post("/api/1/envelope/", event_envelope(payload), auth(key.public_key))
    assert (status, body) == (200, {"id": payload["event_id"]})
    assert headers["Access-Control-Allow-Origin"] == "*"
    [request] = ingest.logs()
    [resource_logs] = request.resource_logs
    resource = attributes(resource_logs.resource.attributes)
    assert resource["appguard.project_id"] == 1
    assert resource["service.name"] == "shop"
    assert resource["service.version"] == "shop@2.4.0"
    assert resource["deployment.environment.name"] == "production"
    assert resource["telemetry.sdk.language"] == "python"
    [record] = resource_logs.scope_logs[0].log_records
    attrs = attributes(record.attributes)
    assert attrs["exception.type"] == "KeyError"
    assert attrs["exception.message"] == "'alice'"
    assert attrs["appguard.event_id"] == payload["event_id"]
    assert attrs["user.id"] == "u1" and attrs["shop"] == "eu"
    assert 'File "/srv/shop/profiles.py", line 12, in load_profile' in attrs["exception.stacktrace"]
    frames = orjson.loads(attrs["appguard.exception.values"])[0]["stacktrace"]["frames"]
    assert frames[0]["in_app"] is True and frames[0]["module"] == "shop.profiles"
    assert record.trace_id.hex() == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record.span_id.hex() == "00f067aa0ba902b7"
    assert record.severity_text == "ERROR"


async def test_the_store_endpoint_takes_a_bare_event(ingest: Ingest) -> None:
    key = await ingest.key()
    payload = event()
    status, _, body = await ingest.post("/api/1/store/", orjson.dumps(payload), auth(key.public_key))
    assert (status, body) == (200, {"id": payload["event_id"]})
    without_id = {k: v for k, v in event().items() if k != "event_id"}
    status, _, body = await ingest.post("/api/1/store/", orjson.dumps(without_id), auth(key.public_key))
    assert status == 200 and len(body["id"]) == 32
    assert len(ingest.logs()) == 2
    assert attributes(ingest.logs()[1].resource_logs[0].scope_logs[0].log_records[0].attributes)["appguard.event_id"] == body["id"]


async def test_a_transaction_is_delivered_as_spans(ingest: Ingest) -> None:
    key = await ingest.key()
    trace_id = "5308c3f2ac274c1190946b1fdbe76564"
    transaction = {
        "type": "transaction",
        "event_id": uuid.uuid4().hex,
        "transaction": "GET /cart",
        "start_timestamp": 1767323045.0,
        "timestamp": 1767323045.25,
        "platform": "python",
        "contexts": {"trace": {"trace_id": trace_id, "span_id": "bacae9918e619db2", "op": "http.server", "status": "ok"}},
        "spans": [
            {
                "trace_id": trace_id,
                "span_id": "ae20c4adf20673b2",
                "parent_span_id": "bacae9918e619db2",
                "op": "db",
                "description": "SELECT 1",
                "start_timestamp": 1767323045.1,
                "timestamp": 1767323045.2,
                "data": {"db.system": "postgresql"},
            }
        ],
    }
    body = envelope(({"type": "transaction"}, orjson.dumps(transaction)), headers={"event_id": transaction["event_id"]})
    status, _, answer = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
    assert (status, answer) == (200, {"id": transaction["event_id"]})
    assert ingest.logs() == []
    [request] = ingest.traces()
    spans = {s.name: s for s in request.resource_spans[0].scope_spans[0].spans}
    assert set(spans) == {"GET /cart", "SELECT 1"}
    root, child = spans["GET /cart"], spans["SELECT 1"]
    assert root.trace_id.hex() == child.trace_id.hex() == trace_id
    assert child.parent_span_id == root.span_id and root.parent_span_id == b""
    assert child.end_time_unix_nano - child.start_time_unix_nano == pytest.approx(100_000_000, abs=1000)
    assert attributes(child.attributes) == {"sentry.op": "db", "db.system": "postgresql"}


async def test_other_item_types_are_accepted_and_ignored(ingest: Ingest) -> None:
    key = await ingest.key()
    body = envelope(
        ({"type": "session"}, b'{"sid":"a","status":"ok","started":"2026-01-01T00:00:00Z"}'),
        ({"type": "client_report"}, b'{"discarded_events":[{"reason":"queue_overflow","category":"error","quantity":1}]}'),
        ({"type": "attachment", "filename": "log.txt"}, b"line 1\nline 2\n" * (MAX_SIZE // 32)),
        ({"type": "profile"}, b"\x00\x01binary"),
        ({"type": "something_new"}, b"whatever"),
    )
    status, _, answer = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
    assert (status, answer) == (200, {})
    assert ingest.sink.requests == []


async def test_replay_items_become_a_replay_session(ingest: Ingest) -> None:
    key = await ingest.key()
    replay_id = "d2132d31b39445f1938d7e21b6bf0ec4"
    start = 1767323045000
    rrweb = [
        {"type": 4, "timestamp": start, "data": {"href": "https://shop.test/cart", "width": 800, "height": 600}},
        {"type": 2, "timestamp": start + 5, "data": {"node": {"type": 0, "id": 1, "childNodes": []}, "initialOffset": {"top": 0, "left": 0}}},
        {"type": 3, "timestamp": start + 2500, "data": {"source": 2, "type": 2, "id": 1, "x": 10, "y": 10}},
    ]

    def replay(segment: int, events: list[dict[str, Any]]) -> bytes:
        replay_event = {
            "type": "replay_event", "replay_id": replay_id, "segment_id": segment, "urls": ["https://shop.test/cart"],
            "release": "shop@2.4.0", "environment": "production", "user": {"id": "u1"},
            "request": {"headers": {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/140.0 Safari/537.36"}},
        }  # fmt: skip
        recording = orjson.dumps({"segment_id": segment}) + b"\n" + zlib.compress(orjson.dumps(events))
        return envelope(({"type": "replay_event"}, orjson.dumps(replay_event)), ({"type": "replay_recording"}, recording))

    # Segment 1 first, then 0, then 1 again (a retry): one session, in order.
    for segment, events in [(1, rrweb[2:]), (0, rrweb[:2]), (1, rrweb[2:])]:
        status, _, answer = await ingest.post("/api/1/envelope/", replay(segment, events), auth(key.public_key))
        assert status == 200, answer
    assert ingest.sink.requests == []
    assert ingest.api.app is not None
    store = ingest.api.app[SESSIONS]
    session = await store.get_session(replay_id)
    assert session is not None
    assert (session.project_id, session.segment_count, session.duration_ms) == (1, 2, 2500)
    assert (session.release, session.environment, session.user_id, session.browser) == ("shop@2.4.0", "production", "u1", "Chrome")
    stored = [e async for chunk in store.recording(replay_id, await store.segment_sequences(replay_id)) for e in orjson.loads(chunk)]
    assert stored == rrweb
    # A recording without its event, or one that is not rrweb JSON, is refused saying why.
    lone = envelope(({"type": "replay_recording"}, b'{"segment_id": 2}\n[]'))
    status, _, answer = await ingest.post("/api/1/envelope/", lone, auth(key.public_key))
    assert status == 400 and "replay_recording" in answer["detail"]
    status, _, answer = await ingest.post("/api/1/envelope/", replay(3, [])[:-40] + b"x" * 40, auth(key.public_key))
    assert status == 400, answer


# --------------------------------------------------------------------------- auth


async def test_the_key_may_come_in_the_header_the_query_or_the_dsn(ingest: Ingest) -> None:
    key = await ingest.key()
    ways = [
        ("/api/1/envelope/", event_envelope(event()), auth(key.public_key)),
        ("/api/1/envelope/", event_envelope(event()), {"Authorization": f"Sentry sentry_key={key.public_key}"}),
        (f"/api/1/envelope/?sentry_key={key.public_key}&sentry_version=7", event_envelope(event()), {}),
        ("/api/1/envelope/", event_envelope(event(), dsn=f"http://{key.public_key}@example.com/1"), {}),
        (f"/api/1/store/?sentry_key={key.public_key}", orjson.dumps(event()), {}),
    ]
    for path, body, headers in ways:
        status, _, answer = await ingest.post(path, body, headers)
        assert status == 200, (path, headers, answer)
    assert len(ingest.logs()) == len(ways)


async def test_unknown_revoked_and_foreign_keys_are_refused(ingest: Ingest) -> None:
    key = await ingest.key()
    other = await ingest.projects.create_project("billing", "python")
    other_key = await ingest.key(other.id)
    revoked = await ingest.projects.create_key(1, "old")
    await ingest.projects.revoke_key(1, revoked.id)
    body = event_envelope(event())
    cases = [
        ({}, 401, "missing authorization"),
        (auth("0" * 32), 401, "unknown sentry_key"),
        (auth("not-a-key"), 401, "unknown sentry_key"),
        (auth(revoked.public_key), 403, "revoked"),
        (auth(other_key.public_key), 403, "does not belong to project 1"),
    ]
    for headers, expected, detail in cases:
        status, reply_headers, answer = await ingest.post("/api/1/envelope/", body, headers)
        assert status == expected, (headers, answer)
        assert detail in answer["detail"]
        assert reply_headers["X-Sentry-Error"] == answer["detail"]
        assert reply_headers["Access-Control-Allow-Origin"] == "*"
    # A DSN in the envelope header is checked the same way.
    status, _, answer = await ingest.post("/api/1/envelope/", event_envelope(event(), dsn=f"http://{revoked.public_key}@h/1"))
    assert (status, answer["detail"]) == (403, "the sentry_key is revoked")
    # The other project's key is good for its own project.
    status, _, _ = await ingest.post(f"/api/{other.id}/envelope/", body, auth(other_key.public_key))
    assert status == 200
    [request] = ingest.logs()
    assert attributes(request.resource_logs[0].resource.attributes)["appguard.project_id"] == other.id
    # And a project id that is no number is a bad path parameter.
    status, _, _ = await ingest.post("/api/abc/envelope/", body, auth(key.public_key))
    assert status == 400


# --------------------------------------------------------------------------- bad input


async def test_malformed_envelopes_are_refused_with_a_clear_message_and_the_server_keeps_serving(ingest: Ingest) -> None:
    key = await ingest.key()
    good = orjson.dumps(event())
    cases = [
        (b"", "the envelope is empty"),
        (b"not json\n{}\n", "envelope header"),
        (b"[1, 2]\n", "envelope header (first line) must be a JSON object"),
        (b'{}\n{"length": 2}\n{}\n', "has no type"),
        (b'{}\n{"type": "event", "length": 50000}\n' + good, "declares 50000 bytes but only"),
        (b'{}\n{"type": "event", "length": -1}\n{}', "non-negative integer"),
        (b'{}\n{"type": "event", "length": 2}\n{}xx\n', "not followed by a newline"),
        (b'{}\n{"type": "event"}\n{"exception": \n', "item 1 (event) is not valid JSON"),
        (b'{}\n{"type": "event"}\n[1]\n', "item 1 (event) must be a JSON object"),
        (b'{}\n{"type": "transaction", "length": 4}\nnull\n', "item 1 (transaction) must be a JSON object"),
    ]
    for body, message in cases:
        status, _, answer = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
        assert status == 400, (body, answer)
        assert message in answer["detail"], (body, answer)
    status, _, answer = await ingest.post("/api/1/store/", b"{oops", auth(key.public_key))
    assert status == 400 and "the event is not valid JSON" in answer["detail"]
    assert ingest.sink.requests == []
    # Events of wrong shapes are taken for what they hold, never a server error.
    odd = {"exception": {"values": [None, 3, {"type": ["x"], "stacktrace": {"frames": "no"}}]}, "level": 7, "user": "me"}
    status, _, _ = await ingest.post("/api/1/store/", orjson.dumps(odd), auth(key.public_key))
    assert status == 200
    status, _, _ = await ingest.post("/api/1/envelope/", event_envelope(event()), auth(key.public_key))
    assert status == 200
    assert len(ingest.logs()) == 2


async def test_compressed_bodies_are_read_and_bombs_refused(ingest: Ingest) -> None:
    key = await ingest.key()
    body = event_envelope(event())
    for encoding, data in [
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("br", brotli.compress(body)),
        ("identity", body),
    ]:
        status, _, answer = await ingest.post(
            "/api/1/envelope/", data, {**auth(key.public_key), "Content-Encoding": encoding}
        )
        assert status == 200, (encoding, answer)
    assert len(ingest.logs()) == 4
    bomb = b"\n" * (64 * MAX_SIZE)
    for encoding, data in [("gzip", gzip.compress(bomb)), ("br", brotli.compress(bomb)), ("deflate", zlib.compress(bomb))]:
        assert len(data) < MAX_SIZE // 4
        status, _, answer = await ingest.post(
            "/api/1/envelope/", data, {**auth(key.public_key), "Content-Encoding": encoding}
        )
        assert status == 413, (encoding, answer)
        assert str(MAX_SIZE) in answer["detail"]
    status, _, _ = await ingest.post("/api/1/envelope/", b"{}\n" + b" " * MAX_SIZE, auth(key.public_key))
    assert status == 413
    # A cut compressed stream and a corrupt one are both answered 400, the connection kept.
    for encoding, data, why in [
        ("gzip", gzip.compress(body)[:-12], "truncated"),
        ("br", brotli.compress(body)[:-3], "truncated"),
        ("gzip", gzip.compress(body)[:10] + bytes(range(256)) * 4, "cannot decompress"),
        ("deflate", b"\x78\x9c" + bytes(range(256)) * 4, "cannot decompress"),
        ("br", bytes(range(256)) * 4, "cannot decompress"),
    ]:
        status, _, answer = await ingest.post("/api/1/envelope/", data, {**auth(key.public_key), "Content-Encoding": encoding})
        assert status == 400 and "cannot read the body" in answer["detail"] and why in answer["detail"], (encoding, answer)
    status, _, answer = await ingest.post("/api/1/envelope/", body, {**auth(key.public_key), "Content-Encoding": "lz4"})
    assert status == 415 and "lz4" in answer["detail"]
    assert len(ingest.logs()) == 4
    status, _, _ = await ingest.post("/api/1/envelope/", gzip.compress(body), {**auth(key.public_key), "Content-Encoding": "gzip"})
    assert status == 200 and len(ingest.logs()) == 5


# --------------------------------------------------------------------------- limits and backpressure


async def test_a_key_over_its_rate_limit_gets_429_with_both_headers(ingest: Ingest) -> None:
    limited = await ingest.projects.create_key(1, "limited", rate_limit=2)
    headers = auth(limited.public_key)
    answers = [await ingest.post("/api/1/envelope/", event_envelope(event()), headers) for _ in range(2)]
    assert [a[0] for a in answers] == [200, 200]
    status, reply_headers, answer = await ingest.post("/api/1/envelope/", event_envelope(event()), headers)
    # The window is a minute of the clock: the third event is refused unless the minute just turned.
    if status == 200:
        status, reply_headers, answer = await ingest.post("/api/1/envelope/", event_envelope(event()), headers)
        assert status == 200
        status, reply_headers, answer = await ingest.post("/api/1/envelope/", event_envelope(event()), headers)
    assert status == 429, answer
    retry_after = int(reply_headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert reply_headers["X-Sentry-Rate-Limits"] == f"{retry_after}:error;transaction:key"
    assert reply_headers["Access-Control-Expose-Headers"].count("x-sentry-rate-limits") == 1
    assert "rate limit of the key" in answer["detail"]
    # Refused events are not counted, sessions are not limited, and other keys are not affected.
    delivered = len(ingest.logs())
    session = envelope(({"type": "session"}, b"{}"))
    assert (await ingest.post("/api/1/envelope/", session, headers))[0] == 200
    default_key = await ingest.key()
    assert (await ingest.post("/api/1/envelope/", event_envelope(event()), auth(default_key.public_key)))[0] == 200
    assert len(ingest.logs()) == delivered + 1


async def test_the_default_rate_limit_applies_per_project(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> None:
    sentry = {"otlp_endpoint": sink.http_endpoint, "default_rate_limit": 1}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, sentry=sentry) as api, aiohttp.ClientSession() as session:
        ingest = Ingest(api, sink, session)
        first = await ingest.key()
        second = await ingest.projects.create_key(1, "second")
        statuses = []
        for key in (first, second, first, second):
            status, headers, _ = await ingest.post("/api/1/envelope/", event_envelope(event()), auth(key.public_key))
            statuses.append((status, headers.get("X-Sentry-Rate-Limits", "").rpartition(":")[2]))
        # One event per minute for the whole project, whichever key sends it (the minute may turn once).
        assert statuses.count((200, "")) in (1, 2)
        assert all(s == (429, "project") for s in statuses if s[0] != 200)


async def test_a_busy_or_missing_receiver_makes_the_sdk_retry_later(ingest: Ingest) -> None:
    key = await ingest.key()
    body = event_envelope(event())
    ingest.sink.fail_next(1, http_status=503, retry_after=7)
    status, headers, answer = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
    assert (status, headers["Retry-After"]) == (429, "7"), answer
    ingest.sink.fail_next(1, http_status=429)
    status, headers, _ = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert "X-Sentry-Rate-Limits" not in headers
    assert ingest.logs() == []
    # The same envelope sent again is taken once the receiver accepts.
    status, _, _ = await ingest.post("/api/1/envelope/", body, auth(key.public_key))
    assert status == 200 and len(ingest.logs()) == 1
    # A receiver that is not there at all: the same answer, never a 200.
    await ingest.sink.stop()
    try:
        status, headers, answer = await ingest.post("/api/1/envelope/", event_envelope(event()), auth(key.public_key))
        assert (status, headers["Retry-After"]) == (429, "10"), answer
    finally:
        await ingest.sink.start()


async def test_an_unreachable_endpoint_is_a_429_too(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str, sink: OTLPSink
) -> None:
    sentry = {"otlp_endpoint": f"http://127.0.0.1:{free_port()}"}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, sentry=sentry) as api, aiohttp.ClientSession() as session:
        ingest = Ingest(api, sink, session)
        key = await ingest.key()
        status, headers, answer = await ingest.post("/api/1/store/", orjson.dumps(event()), auth(key.public_key))
        assert status == 429 and headers["Retry-After"] == "10", answer


# --------------------------------------------------------------------------- CORS


async def test_browsers_may_send_from_any_origin(ingest: Ingest) -> None:
    key = await ingest.key()
    preflight = {
        "Origin": "https://shop.example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-sentry-auth",
    }
    for path in ("/api/1/envelope/", "/api/1/store/"):
        async with ingest.session.options(f"{ingest.base}{path}", headers=preflight) as reply:
            assert reply.status == 200
            assert reply.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in reply.headers["Access-Control-Allow-Methods"]
            allowed = {h.strip() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"content-type", "x-sentry-auth", "content-encoding"} <= allowed
    # The browser SDK's own request: key in the query, text/plain body, an Origin.
    status, headers, _ = await ingest.post(
        f"/api/1/envelope/?sentry_key={key.public_key}&sentry_version=7&sentry_client=sentry.javascript.browser%2F8.0.0",
        event_envelope(event(platform="javascript")),
        {"Origin": "https://shop.example.com", "Content-Type": "text/plain;charset=UTF-8"},
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "retry-after" in headers["Access-Control-Expose-Headers"]
    # Other endpoints of the API are not opened to other origins.
    async with ingest.session.options(f"{ingest.base}/api/issues", headers=preflight) as reply:
        assert reply.status == 405
        assert "Access-Control-Allow-Origin" not in reply.headers
