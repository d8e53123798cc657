"""The endpoints Sentry SDKs report to: ``POST /api/<project>/envelope/`` and ``/store/``.

A stock Sentry SDK configured with a project's DSN (``http://<key>@host:8080/<project>``)
sends envelopes (or, older ones, bare events to ``store``). Each request is

1. **authenticated** by the key the SDK sends: ``X-Sentry-Auth: Sentry sentry_key=...``,
   ``Authorization: Sentry ...``, the ``sentry_key`` query parameter (browsers) or the ``dsn``
   envelope header. No key or an unknown one answers ``401``; a revoked key, or a key of
   another project, ``403``;
2. **read** within ``sentry.max_envelope_size``, on the wire and decompressed (``gzip``,
   ``deflate``, ``br``, decoded in bounded steps as the body streams in: a compressed bomb
   stops at the limit), ``413`` beyond it, ``400`` for a corrupt or truncated one;
3. **parsed** (:mod:`api.sentry_envelope`): a malformed envelope or event answers ``400``
   saying what is wrong. ``event`` and ``transaction`` items are used, and ``replay_event`` with
   its ``replay_recording`` become a segment of a replay session (:mod:`api.sentry_replay`);
   every other item type (``session``, ``sessions``, ``client_report``, ``attachment``,
   ``profile``, ``check_in``...) is accepted and ignored;
4. **rate limited** per key (its ``rate_limit`` per minute) or per project
   (``sentry.default_rate_limit``), counting events and transactions, in Redis: over the limit
   answers ``429`` with ``Retry-After`` and ``X-Sentry-Rate-Limits``;
5. **converted** (:mod:`api.sentry_mapping`): events to OTLP log records, transactions to
   spans, and **delivered** to the collector's own OTLP/HTTP receiver
   (``sentry.otlp_endpoint``), so the errors exporter, its observers, Loki and Tempo see them
   like any other data. The SDK is answered only once the receiver accepted: a receiver that
   refuses for now (429, 503) or cannot be reached makes the answer a ``429`` with
   ``Retry-After``, and nothing is answered 200 that was not handed on.

Answers are Sentry's: ``200 {"id": "<event id>"}``, errors as ``{"detail": "..."}``. Browsers
may call both endpoints from any origin (CORS, preflight included).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import BaseModel, Field

from api.config import SentryConfig
from api.errors import ApiError, Handler
from api.ingest import IngestKeys, OtlpForwarder, WindowLimiter, read_body
from api.routing import PUBLIC, ROUTES, json_response, params
from api.sentry_envelope import (
    Envelope,
    EnvelopeError,
    json_object,
    normalize_event_id,
    parse_auth_header,
    parse_dsn,
    parse_envelope,
)
from api.sentry_mapping import event_to_logs, transaction_to_traces
from api.sentry_replay import replay_segments
from api.services import SERVICES
from api.sessions import SESSIONS, store_segment
from storage.projects import ProjectKey, ProjectStore
from storage.sessions import IncomingSegment

_log = logging.getLogger("appguard.api.sentry")

_PATH = re.compile(r"^/api/[^/]+/(?:envelope|store)/$")
# The request headers Sentry's browser SDK (and tunnels) may send.
_ALLOWED_HEADERS = (
    "accept, authorization, authentication, baggage, content-encoding, content-type, origin, referer, "
    "sentry-trace, user-agent, x-requested-with, x-sentry-auth"
)
_EXPOSED_HEADERS = "retry-after, x-sentry-error, x-sentry-rate-limits"


# --------------------------------------------------------------------------- models


class ProjectParams(BaseModel):
    """The project id of the DSN, in the path."""

    project_id: int = Field(ge=1, le=2**63 - 1, description="the project's id (the last part of the DSN)")


class IngestAnswer(BaseModel):
    """What Sentry answers: the id of the event the request carried (absent when it carried none)."""

    id: str | None = Field(default=None, description="the event's id, 32 hex digits")


# --------------------------------------------------------------------------- refusals


class Refused(Exception):
    """An answer other than 200, in Sentry's shape: ``{"detail": ...}``."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        """The error response."""
        return web.Response(
            status=self.status,
            body=orjson.dumps({"detail": self.detail}),
            content_type="application/json",
            headers={"X-Sentry-Error": self.detail[:200], **self.headers},
        )


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class RateLimited:
    """A refusal by the rate limit: seconds until the window ends, and the limit's scope."""

    retry_after: int
    scope: str

    def headers(self) -> dict[str, str]:
        """``Retry-After`` and Sentry's ``X-Sentry-Rate-Limits`` for the error and transaction categories."""
        return {
            "Retry-After": str(self.retry_after),
            "X-Sentry-Rate-Limits": f"{self.retry_after}:error;transaction:{self.scope}",
        }


class IngestLimiter:
    """Events per minute per key (its ``rate_limit``) or per project (the default), counted by
    the ingest endpoints' :class:`~api.ingest.WindowLimiter` in Redis: a request whose events
    would pass the limit is refused whole and not counted; several API processes share the counts.
    """

    WINDOW = 60

    def __init__(self, windows: WindowLimiter, default_limit: int | None) -> None:
        self._windows = windows
        self.default_limit = default_limit

    async def admit(self, key: ProjectKey, events: int, *, now: float | None = None) -> RateLimited | None:
        """Count ``events`` for the key, or return the refusal when that would pass its limit."""
        if events <= 0:
            return None
        if key.rate_limit is not None:
            limit, scope, owner = key.rate_limit, "key", f"sentry-key:{key.id}"
        elif self.default_limit is not None:
            limit, scope, owner = self.default_limit, "project", f"sentry-project:{key.project_id}"
        else:
            return None
        retry_after = await self._windows.hit(owner, limit, events, self.WINDOW, now=now)
        return None if retry_after is None else RateLimited(retry_after, scope)


# --------------------------------------------------------------------------- the ingest


def sentry_key(request: web.Request) -> str | None:
    """The public key a request carries in its headers or query string, if any."""
    for header in ("X-Sentry-Auth", "Authorization"):
        value = request.headers.get(header)
        if value and (header == "X-Sentry-Auth" or value.lstrip().lower().startswith("sentry ")):
            key = parse_auth_header(value).get("sentry_key")
            if key:
                return key
    return request.query.get("sentry_key") or None


@dataclass
class Converted:
    """What a request turns into: the OTLP requests to deliver and the answer's event id."""

    logs: ExportLogsServiceRequest
    traces: ExportTraceServiceRequest
    event_id: str | None
    counted: int


class SentryIngest:
    """Authenticates, limits, converts and delivers what Sentry SDKs send."""

    def __init__(self, config: SentryConfig, projects: ProjectStore, limiter: IngestLimiter) -> None:
        self.config = config
        self.keys = IngestKeys(projects)
        self.limiter = limiter
        self.forwarder = OtlpForwarder(config.otlp_endpoint, config.timeout, "Sentry SDK")

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.forwarder.close()

    # ---- steps

    async def authenticate(self, public_key: str | None, project_id: int) -> ProjectKey:
        """The key, if it may send to the project; :class:`Refused` (401, 403) otherwise."""
        missing = "missing authorization information: send X-Sentry-Auth with sentry_key (a DSN's key)"
        try:
            return await self.keys.check(public_key, project_id, what="sentry_key", missing=missing)
        except ApiError as exc:
            raise Refused(exc.status, exc.message, exc.headers) from None

    async def read(self, request: web.Request) -> bytes:
        """The request's body, decompressed and bounded by ``max_envelope_size``."""
        try:
            return await read_body(request, self.config.max_envelope_size, "sentry.max_envelope_size")
        except ApiError as exc:
            raise Refused(exc.status, exc.message, exc.headers) from None

    def convert(self, events: list[dict[str, Any]], transactions: list[dict[str, Any]], key: ProjectKey, fallback_id: str | None) -> Converted:
        """The OTLP requests of the events and transactions of one request."""
        logs = ExportLogsServiceRequest()
        traces = ExportTraceServiceRequest()
        answer_id = fallback_id
        received = time.time_ns()
        for event in events:
            event_id = normalize_event_id(event.get("event_id")) or fallback_id or uuid.uuid4().hex
            answer_id = answer_id or event_id
            request = event_to_logs(event, project_id=key.project_id, event_id=event_id, received_ns=received)
            logs.resource_logs.extend(request.resource_logs)
        for transaction in transactions:
            answer_id = answer_id or normalize_event_id(transaction.get("event_id"))
            traces.resource_spans.extend(transaction_to_traces(transaction, project_id=key.project_id).resource_spans)
        return Converted(logs, traces, answer_id, len(events) + len(transactions))

    async def admit(self, key: ProjectKey, converted: Converted) -> None:
        """Count the request's events against the key's rate limit; :class:`Refused` (429) beyond it."""
        limited = await self.limiter.admit(key, converted.counted)
        if limited is not None:
            raise Refused(429, f"rate limit of the {limited.scope} exceeded; retry in {limited.retry_after} s", limited.headers())

    async def deliver(self, converted: Converted) -> None:
        """Send the OTLP requests to the receiver; :class:`Refused` unless it accepted them all."""
        try:
            await self.forwarder.deliver(logs=converted.logs, traces=converted.traces)
        except ApiError as exc:
            raise Refused(exc.status, exc.message, exc.headers) from None


_INGEST = web.AppKey("appguard_sentry_ingest", SentryIngest)


def _ingest(request: web.Request) -> SentryIngest:
    return request.app[_INGEST]


# --------------------------------------------------------------------------- handlers


async def ingest_envelope(request: web.Request) -> web.StreamResponse:
    """Take an envelope from a Sentry SDK."""
    ingest = _ingest(request)
    project_id = params(request, ProjectParams).project_id
    try:
        public_key = sentry_key(request)
        key = await ingest.authenticate(public_key, project_id) if public_key else None
        body = await ingest.read(request)
        try:
            envelope = parse_envelope(body)
            if key is None:
                key = await ingest.authenticate(_dsn_key(envelope), project_id)
            events, transactions = _used_items(envelope)
            replays = _replay_segments(request.app, envelope, key.project_id)
        except EnvelopeError as exc:
            raise Refused(400, f"malformed envelope: {exc}") from None
        converted = ingest.convert(events, transactions, key, envelope.event_id)
        await ingest.admit(key, converted)
        for segment in replays:
            try:
                await store_segment(request.app, segment)
            except ApiError as exc:
                raise Refused(exc.status, f"replay segment {segment.sequence}: {exc.message}", exc.headers) from None
        await ingest.deliver(converted)
    except Refused as refused:
        return refused.response()
    return json_response(IngestAnswer(id=converted.event_id).model_dump(exclude_none=True))


async def ingest_event(request: web.Request) -> web.StreamResponse:
    """Take one event from a Sentry SDK (the store endpoint older SDKs use)."""
    ingest = _ingest(request)
    project_id = params(request, ProjectParams).project_id
    try:
        key = await ingest.authenticate(sentry_key(request), project_id)
        body = await ingest.read(request)
        try:
            event = json_object(body, "the event")
        except EnvelopeError as exc:
            raise Refused(400, f"malformed event: {exc}") from None
        event_id = normalize_event_id(event.get("event_id")) or uuid.uuid4().hex
        converted = ingest.convert([event], [], key, event_id)
        await ingest.admit(key, converted)
        await ingest.deliver(converted)
    except Refused as refused:
        return refused.response()
    return json_response(IngestAnswer(id=event_id).model_dump())


def _dsn_key(envelope: Envelope) -> str | None:
    dsn = envelope.dsn
    parsed = parse_dsn(dsn) if dsn is not None else None
    return parsed[0] if parsed is not None else None


def _replay_segments(app: web.Application, envelope: Envelope, project_id: int) -> list[IncomingSegment]:
    """The replay segments of an envelope (none where the session replay feature is not installed)."""
    if SESSIONS not in app:
        return []
    replay_events = [item.json() for item in envelope.items if item.type == "replay_event"]
    recordings = [item.payload for item in envelope.items if item.type == "replay_recording"]
    if not replay_events and not recordings:
        return []
    limit = app[SERVICES].config.sessions.max_segment_size
    return replay_segments(replay_events, recordings, project_id=project_id, limit=limit)


def _used_items(envelope: Envelope) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events and transactions of an envelope, decoded; the other items are ignored."""
    events: list[dict[str, Any]] = []
    transactions: list[dict[str, Any]] = []
    for item in envelope.items:
        if item.type == "event":
            events.append(item.json())
        elif item.type == "transaction":
            transactions.append(item.json())
    return events, transactions


# --------------------------------------------------------------------------- CORS


def is_ingest_path(path: str) -> bool:
    """Whether a path is one of the ingest endpoints (``/api/<project>/envelope/`` or ``/store/``)."""
    return _PATH.match(path) is not None


@web.middleware
async def _preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The route table declares no OPTIONS routes: a browser's preflight is answered here.
    if request.method == "OPTIONS" and is_ingest_path(request.path):
        return web.Response(
            status=200,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
                "Access-Control-Max-Age": "3600",
            },
        )
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    if is_ingest_path(request.path):
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = _EXPOSED_HEADERS


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the ingest endpoints; the OTLP client is closed with the application."""
    svc = app[SERVICES]
    config = svc.config.sentry
    limiter = IngestLimiter(WindowLimiter(svc.redis, svc.key_prefix), config.default_rate_limit)
    ingest = SentryIngest(config, ProjectStore(svc.pool), limiter)
    app[_INGEST] = ingest

    async def close_client(_: web.Application) -> None:
        await ingest.close()

    app.on_cleanup.append(close_client)
    app.middlewares.append(_preflight)
    app.on_response_prepare.append(_cors_headers)
    routes = app[ROUTES]
    tags = ["sentry"]
    failures = {
        400: "a malformed envelope or event (the detail says where), in Sentry's shape {\"detail\": ...}",
        401: "no sentry_key, or an unknown one",
        403: "the key is revoked or belongs to another project",
        413: "the body is larger than sentry.max_envelope_size, compressed or decompressed",
        415: "a Content-Encoding other than gzip, deflate or br",
        429: "over the key's or project's rate limit (Retry-After, X-Sentry-Rate-Limits), or the collector is busy (Retry-After)",
    }
    routes.add(
        "POST", "/api/{project_id}/envelope/", ingest_envelope, role=PUBLIC, summary="Sentry SDK envelope",
        description="What Sentry SDKs send (application/x-sentry-envelope). Authenticated by the DSN's key: "
        "X-Sentry-Auth, the sentry_key query parameter or the envelope's dsn header. Events become "
        "issues, transactions become spans; other item types are accepted and ignored. See docs/sentry.md.",
        params=ProjectParams, responses={200: IngestAnswer}, errors=failures, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/{project_id}/store/", ingest_event, role=PUBLIC, summary="Sentry SDK event (store)",
        description="One event as JSON, the endpoint older Sentry SDKs use; authenticated like the envelope endpoint.",
        params=ProjectParams, responses={200: IngestAnswer}, errors=failures, tags=tags,
    )  # fmt: skip
