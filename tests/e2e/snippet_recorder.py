"""Stand-ins for the servers the browser snippet talks to, for its browser tests.

:class:`Recorder` implements the snippet's wire contract (``docs/browser.md``) strictly: the
``X-AppGuard-Key`` header, JSON bodies, gzip for replay segments, every field's presence and
type, and no unknown field. What it accepts is stored; what it refuses is answered 400 (or 401)
and listed in :attr:`Recorder.problems`, which a test expects to stay empty. It answers CORS
preflights as AppGuard does, and can be told to refuse the next requests to a path with a given
status (429/503 with ``Retry-After``, 400) to watch the snippet's retries.

:class:`HeaderEcho` is a backend the page calls with fetch/XMLHttpRequest: it keeps the headers
each request arrived with (to see the W3C ``baggage`` the snippet adds) and allows the
``baggage`` header cross-origin.
"""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from tests.support.net import free_port

KEY_HEADER = "X-AppGuard-Key"
ALLOWED_HEADERS = {"content-type", "content-encoding", "x-appguard-key"}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")

COMMON_REQUIRED = {"timestamp", "session_id", "service", "environment", "url", "user_agent"}
COMMON_OPTIONAL = {"previous_session_id", "release", "user", "attributes"}
KIND_FIELDS: dict[str, set[str]] = {
    "error": {"event_id", "type", "message", "stacktrace", "mechanism", "handled"},
    "pageview": {"referrer", "title", "navigation"},
    "event": {"name", "properties"},
    "performance": {"metrics"},
}
SEGMENT_REQUIRED = {"sequence", "url", "user_agent", "service", "environment", "events"}
SEGMENT_OPTIONAL = {"release", "user", "previous_session_id"}
METRICS = {"LCP", "INP", "CLS", "TTFB", "FCP"}
RATINGS = {"good", "needs-improvement", "poor"}


class Refused(Exception):
    """The body breaks the contract; the message names the field."""


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def _check_scalars(where: str, value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and _is_scalar(v) for k, v in value.items()):
        raise Refused(f"{where}: must be an object of string, number or boolean values")


def _check_uuid(where: str, value: Any) -> None:
    try:
        uuid.UUID(str(value))
    except ValueError:
        raise Refused(f"{where}: not a UUID") from None


def _check_keys(where: str, body: Mapping[str, Any], required: set[str], optional: set[str]) -> None:
    missing = required - body.keys()
    if missing:
        raise Refused(f"{where}: missing {sorted(missing)}")
    unknown = body.keys() - required - optional
    if unknown:
        raise Refused(f"{where}: unknown fields {sorted(unknown)}")


def _check_str(body: Mapping[str, Any], name: str, *, empty: bool = True) -> None:
    value = body.get(name)
    if not isinstance(value, str) or (not empty and not value):
        raise Refused(f"{name}: must be a {'' if empty else 'non-empty '}string")


def _check_user(body: Mapping[str, Any]) -> None:
    if "user" not in body:
        return
    user = body["user"]
    if not isinstance(user, dict) or not user or not set(user) <= {"id", "email", "username"}:
        raise Refused("user: must be an object with id, email and/or username")
    if not all(isinstance(v, str) for v in user.values()):
        raise Refused("user: values must be strings")


def check_telemetry(kind: str, body: Any) -> None:
    """Raise :class:`Refused` unless ``body`` is a valid ``/api/telemetry/<kind>`` body."""
    if not isinstance(body, dict):
        raise Refused("body: must be a JSON object")
    _check_keys(kind, body, COMMON_REQUIRED | KIND_FIELDS[kind], COMMON_OPTIONAL)
    try:
        datetime.fromisoformat(body["timestamp"])
    except (TypeError, ValueError):
        raise Refused("timestamp: not an ISO 8601 time") from None
    _check_uuid("session_id", body["session_id"])
    if "previous_session_id" in body:
        _check_uuid("previous_session_id", body["previous_session_id"])
    for name in ("service", "environment", "user_agent"):
        _check_str(body, name, empty=False)
    if not str(body["url"]).startswith(("http://", "https://")):
        raise Refused("url: not an http(s) URL")
    if "release" in body:
        _check_str(body, "release", empty=False)
    _check_user(body)
    if "attributes" in body:
        _check_scalars("attributes", body["attributes"])
    if kind == "error":
        if not isinstance(body["event_id"], str) or not _HEX32.match(body["event_id"]):
            raise Refused("event_id: must be 32 lowercase hex digits")
        _check_str(body, "type", empty=False)
        _check_str(body, "message")
        _check_str(body, "stacktrace")
        if body["mechanism"] not in {"onerror", "onunhandledrejection", "manual"}:
            raise Refused("mechanism: must be onerror, onunhandledrejection or manual")
        if not isinstance(body["handled"], bool):
            raise Refused("handled: must be a boolean")
    elif kind == "pageview":
        _check_str(body, "referrer")
        _check_str(body, "title")
        if body["navigation"] not in {"load", "push", "replace", "pop", "hash"}:
            raise Refused("navigation: must be load, push, replace, pop or hash")
    elif kind == "event":
        _check_str(body, "name", empty=False)
        _check_scalars("properties", body["properties"])
    elif kind == "performance":
        metrics = body["metrics"]
        if not isinstance(metrics, list) or not metrics:
            raise Refused("metrics: must be a non-empty list")
        for i, metric in enumerate(metrics):
            where = f"metrics.{i}"
            if not isinstance(metric, dict):
                raise Refused(f"{where}: must be an object")
            _check_keys(where, metric, {"name", "value", "rating", "id", "navigation_type"}, set())
            if metric["name"] not in METRICS:
                raise Refused(f"{where}.name: unknown metric {metric['name']!r}")
            if not isinstance(metric["value"], int | float) or isinstance(metric["value"], bool) or metric["value"] < 0:
                raise Refused(f"{where}.value: must be a number >= 0")
            if metric["rating"] not in RATINGS:
                raise Refused(f"{where}.rating: must be good, needs-improvement or poor")
            _check_str(metric, "id", empty=False)
            _check_str(metric, "navigation_type", empty=False)


def check_segment(body: Any) -> None:
    """Raise :class:`Refused` unless ``body`` is a valid replay segment."""
    if not isinstance(body, dict):
        raise Refused("body: must be a JSON object")
    _check_keys("segment", body, SEGMENT_REQUIRED, SEGMENT_OPTIONAL)
    if not isinstance(body["sequence"], int) or isinstance(body["sequence"], bool) or body["sequence"] < 0:
        raise Refused("sequence: must be an integer >= 0")
    for name in ("url", "user_agent", "service", "environment"):
        _check_str(body, name, empty=False)
    if "previous_session_id" in body:
        _check_uuid("previous_session_id", body["previous_session_id"])
    _check_user(body)
    events = body["events"]
    if not isinstance(events, list) or not events:
        raise Refused("events: must be a non-empty list")
    for i, event in enumerate(events):
        if (
            not isinstance(event, dict)
            or not isinstance(event.get("type"), int)
            or not isinstance(event.get("timestamp"), int | float)
        ):
            raise Refused(f"events.{i}: an rrweb event has an integer type and a numeric timestamp")


@dataclass
class Segment:
    """A replay segment as it arrived."""

    session_id: str
    body: dict[str, Any]
    gzipped: bool

    @property
    def sequence(self) -> int:
        return int(self.body["sequence"])

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.body["events"])

    def custom(self, tag: str) -> list[dict[str, Any]]:
        """The payloads of this segment's rrweb custom events (type 5) tagged ``tag``."""
        return [e["data"]["payload"] for e in self.events if e["type"] == 5 and e["data"].get("tag") == tag]


@dataclass
class Recorder:
    """The AppGuard side of the snippet's contract, storing what it accepts."""

    key: str
    port: int = field(default_factory=free_port)
    telemetry: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    segments: list[Segment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Answers to give, in order, to the next requests to a path (status, headers).
    scripted: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=lambda: defaultdict(list))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, kind: str, predicate: Callable[[dict[str, Any]], bool] = lambda _: True) -> list[dict[str, Any]]:
        """The accepted telemetry bodies of ``kind`` that match ``predicate``."""
        return [b for b in self.telemetry[kind] if predicate(b)]

    def segments_of(self, session_id: str) -> list[Segment]:
        """The accepted segments of a session, by sequence."""
        return sorted((s for s in self.segments if s.session_id == session_id), key=lambda s: s.sequence)

    def _cors(self, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        return (
            {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": "Retry-After", "Vary": "Origin"}
            if origin
            else {}
        )

    def _refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        self.problems.append(f"{request.path}: {message}")
        return web.json_response({"error": message}, status=status, headers=self._cors(request))

    async def _preflight(self, request: web.Request) -> web.Response:
        asked = {
            h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()
        }
        if request.headers.get("Access-Control-Request-Method") != "POST" or not asked <= ALLOWED_HEADERS:
            return self._refuse(
                request, 403, f"preflight for {request.headers.get('Access-Control-Request-Method')} {sorted(asked)}"
            )
        return web.Response(
            status=204,
            headers={
                **self._cors(request),
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": ", ".join(sorted(ALLOWED_HEADERS)),
                "Access-Control-Max-Age": "600",
            },
        )

    async def _read(self, request: web.Request) -> tuple[Any, bool] | web.Response:
        self.attempts[request.path] += 1
        if self.scripted[request.path]:
            status, headers = self.scripted[request.path].pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers={**self._cors(request), **headers})
        if request.headers.get(KEY_HEADER) != self.key:
            return self._refuse(request, 401, f"{KEY_HEADER} is {request.headers.get(KEY_HEADER)!r}")
        if request.content_type != "application/json":
            return self._refuse(request, 400, f"Content-Type is {request.content_type!r}")
        raw = await request.read()
        encoding = request.headers.get("Content-Encoding")
        if encoding == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as exc:
                return self._refuse(request, 400, f"body is not gzip: {exc}")
        elif encoding:
            return self._refuse(request, 400, f"Content-Encoding {encoding!r}")
        try:
            return json.loads(raw), encoding == "gzip"
        except ValueError as exc:
            return self._refuse(request, 400, f"body is not JSON: {exc}")

    async def _telemetry(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        if kind not in KIND_FIELDS:
            return self._refuse(request, 404, f"unknown telemetry kind {kind!r}")
        got = await self._read(request)
        if isinstance(got, web.Response):
            return got
        body, gzipped = got
        if gzipped:
            return self._refuse(request, 400, "telemetry came gzipped; the contract sends it as plain JSON")
        try:
            check_telemetry(kind, body)
        except Refused as exc:
            return self._refuse(request, 400, str(exc))
        self.telemetry[kind].append(body)
        return web.json_response({"ok": True}, headers=self._cors(request))

    async def _segment(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        got = await self._read(request)
        if isinstance(got, web.Response):
            return got
        body, gzipped = got
        try:
            _check_uuid("session id in the path", session_id)
            check_segment(body)
        except Refused as exc:
            return self._refuse(request, 400, str(exc))
        self.segments.append(Segment(session_id, body, gzipped))
        return web.json_response({"ok": True}, headers=self._cors(request))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024, handler_args={"auto_decompress": False})
        app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
        app.router.add_post("/api/telemetry/{kind}", self._telemetry)
        app.router.add_post("/api/sessions/{session_id}/segments", self._segment)
        return app


@dataclass
class HeaderEcho:
    """A backend that keeps the headers of every request it gets, by path."""

    port: int = field(default_factory=free_port)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers_of(self, path: str) -> list[dict[str, str]]:
        """The (lower-cased) headers of the non-preflight requests to ``path``."""
        return [h for method, p, h in self.requests if p == path and method != "OPTIONS"]

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, {k.lower(): v for k, v in request.headers.items()}))
        cors = {"Access-Control-Allow-Origin": request.headers.get("Origin", "*")}
        if request.method == "OPTIONS":
            cors["Access-Control-Allow-Headers"] = "baggage, content-type"
            cors["Access-Control-Allow-Methods"] = "GET, POST"
            return web.Response(status=204, headers=cors)
        return web.json_response({"ok": True}, headers=cors)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        return app


@asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[None]:
    """Run ``app`` on 127.0.0.1:``port`` for the block."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
