"""What the endpoints browsers and apps send data to have in common (``api.ingest``).

The browser telemetry endpoints (``/api/telemetry/...``) and the session replay segments
(``/api/sessions/<id>/segments``) are public: a request proves itself with a project's
*ingest key* (the public key of a DSN, :mod:`storage.projects`) rather than a login. This
module gives them, in one place:

- :class:`IngestKeys`: the key from the ``X-AppGuard-Key`` header or the ``key`` query
  parameter, looked up (401 unknown, 403 revoked or of another project);
- :func:`read_body`: the body with its ``Content-Encoding`` (gzip, deflate, br) undone in
  bounded steps (the application runs with aiohttp's own decompression off): 413 past the
  limit on the wire or decoded, 400 for a corrupt or truncated body, 415 for an unknown encoding;
- :class:`WindowLimiter` and :meth:`Ingest.check_rate`: requests per minute per key and per
  client address, counted in Redis so several API processes share them (429 with ``Retry-After``);
- CORS for the paths a feature declares with :func:`ingest_path`: a preflight from an origin in
  ``api.ingest.allowed_origins`` is answered, a request from any other origin refused (403);
- :class:`OtlpForwarder`: hands converted OTLP requests to the collector's own OTLP/HTTP
  receiver, so they go through the configured pipelines; a receiver that refuses for now or
  cannot be reached makes the answer a 429 with ``Retry-After``, so that nothing is answered
  200 that was not handed on.

Refusals are :class:`~api.errors.ApiError` (the API's error shape, ``field`` naming what is wrong).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import redis.asyncio
from aiohttp import web
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from api.config import IngestConfig
from api.errors import ApiError, Handler
from api.services import SERVICES
from collector.pdata import InvalidData
from receivers.otlp.decompress import WEB_DECODERS, BodyTooLarge
from receivers.otlp.decompress import read_body as _decode_body
from storage.projects import ProjectKey, ProjectStore

_log = logging.getLogger("appguard.api.ingest")

KEY_HEADER = "X-AppGuard-Key"
_KEY = re.compile(r"^[0-9a-f]{32}$")
# What a refusal of the receiver is turned into when it names no delay.
_DEFAULT_RETRY_AFTER = 10
# At most one warning per this many seconds about an unreachable receiver.
_WARN_EVERY = 10.0
ALLOWED_HEADERS = "content-type, content-encoding, x-appguard-key, baggage, traceparent, tracestate"
EXPOSED_HEADERS = "retry-after"
_JSON_TYPES = frozenset({"application/json", "text/plain"})

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class Refused(ApiError):
    """An ingest refusal: an :class:`ApiError` whose code follows from the status."""

    def __init__(
        self, status: int, message: str, headers: Mapping[str, str] | None = None, *, field: str | None = None
    ) -> None:
        super().__init__(status, _STATUS_CODES.get(status, "error"), message, field=field, headers=headers)


# --------------------------------------------------------------------------- bodies


def content_encodings() -> tuple[str, ...]:
    """The Content-Encodings the ingest endpoints undo."""
    return ("gzip", "deflate", "br")


async def read_body(request: web.Request, limit: int, setting: str) -> bytes:
    """The request's body, decoded; :class:`Refused` with 413 past ``limit`` bytes (on the wire
    or decoded; ``setting`` names the config key in the message), 415 for an encoding not
    understood, 400 for a corrupt, truncated or cut-off body."""
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, f"the body is larger than the limit of {limit} bytes ({setting})")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding == "identity":
        encoding = ""
    if encoding not in WEB_DECODERS or encoding == "zlib":
        raise Refused(415, f"unsupported Content-Encoding {encoding!r}; send {', '.join(content_encodings())} or none")
    try:
        return await _decode_body(request.content.iter_any(), encoding, limit, WEB_DECODERS)
    except BodyTooLarge:
        raise Refused(413, f"the decompressed body is larger than the limit of {limit} bytes ({setting})") from None
    except InvalidData as exc:
        raise Refused(400, f"cannot read the body: {exc}") from None
    except web.RequestPayloadError as exc:
        raise Refused(400, f"cannot read the body: {exc}") from None


# --------------------------------------------------------------------------- keys


def request_key(request: web.Request) -> str | None:
    """The ingest key a request carries: the ``X-AppGuard-Key`` header or the ``key`` query parameter."""
    return request.headers.get(KEY_HEADER) or request.query.get("key") or None


class IngestKeys:
    """Looks up the ingest key of a request."""

    def __init__(self, projects: ProjectStore) -> None:
        self.projects = projects

    async def authenticate(self, request: web.Request, project_id: int | None = None) -> ProjectKey:
        """The request's key if it is active (and of ``project_id`` when given); 401 or 403 otherwise."""
        missing = f"missing ingest key: send the {KEY_HEADER} header or the key query parameter"
        return await self.check(request_key(request), project_id, what="ingest key", missing=missing, field=KEY_HEADER)

    async def check(
        self, given: str | None, project_id: int | None, *, what: str, missing: str, field: str | None = None
    ) -> ProjectKey:
        """The key ``given`` if it is active (and of ``project_id`` when given): :class:`Refused`
        401 without one or for an unknown one, 403 for a revoked one or another project's.
        ``what`` names the key in the messages (``ingest key``, ``sentry_key``)."""
        if not given:
            raise Refused(401, missing, field=field)
        text = given.strip().lower()
        key = await self.projects.lookup_key(text) if _KEY.match(text) else None
        if key is None:
            raise Refused(401, f"unknown {what}", field=field)
        if not key.active:
            raise Refused(403, f"the {what} is revoked", field=field)
        if project_id is not None and key.project_id != project_id:
            raise Refused(403, f"the {what} does not belong to project {project_id}", field=field)
        return key


# --------------------------------------------------------------------------- rate limits


class WindowLimiter:
    """Counts per fixed window of the clock in Redis; a hit that would pass the limit is refused
    and not counted."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    async def hit(
        self, scope: str, limit: int, count: int = 1, window: int = 60, *, now: float | None = None
    ) -> int | None:
        """Count ``count`` for ``scope``; the seconds until the window ends when that passes ``limit``."""
        moment = time.time() if now is None else now
        slot = int(moment // window)
        counter = f"{self._prefix}ingest-rate:{scope}:{window}:{slot}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(counter, count)
            pipe.expire(counter, window * 2)
            total, _ = await pipe.execute()
        if int(total) <= limit:
            return None
        await self._redis.decrby(counter, count)
        return max(1, math.ceil((slot + 1) * window - moment))


# --------------------------------------------------------------------------- OTLP hand-off


class OtlpForwarder:
    """Sends OTLP/HTTP protobuf requests to the collector's own receiver."""

    def __init__(self, endpoint: str, timeout: float, what: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.what = what
        self._session: aiohttp.ClientSession | None = None
        self._warned_at = 0.0

    def session(self) -> aiohttp.ClientSession:
        """The HTTP client, made at the first request."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(
        self,
        *,
        logs: ExportLogsServiceRequest | None = None,
        traces: ExportTraceServiceRequest | None = None,
        metrics: ExportMetricsServiceRequest | None = None,
    ) -> None:
        """Send the non-empty requests; :class:`Refused` unless the receiver accepted them all."""
        sends = []
        if logs is not None and logs.resource_logs:
            sends.append(self.post("/v1/logs", logs.SerializeToString()))
        if traces is not None and traces.resource_spans:
            sends.append(self.post("/v1/traces", traces.SerializeToString()))
        if metrics is not None and metrics.resource_metrics:
            sends.append(self.post("/v1/metrics", metrics.SerializeToString()))
        if sends:
            await asyncio.gather(*sends)

    async def post(self, path: str, body: bytes) -> None:
        """POST one protobuf request to ``path`` of the receiver."""
        url = f"{self.endpoint}{path}"
        try:
            async with self.session().post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as reply:
                status = reply.status
                retry_after = reply.headers.get("Retry-After", "")
                text = (await reply.read())[:500].decode("utf-8", "replace") if status != 200 else ""
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._warn(
                f"the OTLP receiver at {url} cannot be reached ({type(exc).__name__}: {exc}); {self.what} clients are told to retry"
            )
            raise Refused(
                429, "the collector is unavailable; retry later", {"Retry-After": str(_DEFAULT_RETRY_AFTER)}
            ) from None
        if status == 200:
            return
        if status in (429, 503):
            seconds = int(retry_after) if retry_after.isdigit() else _DEFAULT_RETRY_AFTER
            raise Refused(429, "the collector is busy; retry later", {"Retry-After": str(max(1, seconds))})
        if status == 413:
            raise Refused(413, "the converted data is larger than the OTLP receiver accepts")
        _log.error("the OTLP receiver at %s refused converted %s data with %d: %s", url, self.what, status, text)
        raise Refused(500, f"the collector refused the converted data ({status})")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            _log.warning("%s", message)


# --------------------------------------------------------------------------- the shared object


@dataclass
class Ingest:
    """Keys, limits and the OTLP hand-off of the ingest endpoints, one per application."""

    config: IngestConfig
    keys: IngestKeys
    limiter: WindowLimiter
    forwarder: OtlpForwarder
    paths: list[re.Pattern[str]]

    def client_address(self, request: web.Request) -> str:
        """The client's address: the first ``X-Forwarded-For`` hop when proxies are trusted."""
        if self.config.trust_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For", "")
            first = forwarded.split(",", 1)[0].strip()
            if first:
                return first
        return request.remote or "unknown"

    async def check_rate(self, request: web.Request, key: ProjectKey, count: int = 1) -> None:
        """Count a request against its key's and its address's limits; 429 with ``Retry-After`` beyond one."""
        config = self.config
        checks: list[tuple[str, int, str]] = []
        if config.rate_limit_per_key is not None:
            checks.append((f"key:{key.id}", config.rate_limit_per_key, "ingest key"))
        if config.rate_limit_per_address is not None:
            checks.append((f"addr:{self.client_address(request)}", config.rate_limit_per_address, "client address"))
        for scope, limit, name in checks:
            retry_after = await self.limiter.hit(scope, limit, count)
            if retry_after is not None:
                raise Refused(
                    429,
                    f"rate limit of {limit} requests per minute per {name} exceeded; retry in {retry_after} s",
                    {"Retry-After": str(retry_after)},
                )

    async def accept(self, request: web.Request, limit: int, setting: str) -> tuple[ProjectKey, bytes]:
        """What every ingest endpoint does first: the key (401, 403), the rate limits (429), a
        JSON content type (415; ``text/plain`` too, what ``navigator.sendBeacon`` sends without a
        preflight) and the body decoded within ``limit`` (413, 400)."""
        key = await self.keys.authenticate(request)
        await self.check_rate(request, key)
        if request.content_type not in _JSON_TYPES:
            raise Refused(415, "send the body as Content-Type: application/json", field="Content-Type")
        return key, await read_body(request, limit, setting)

    def origin_allowed(self, origin: str) -> bool:
        """Whether browsers on ``origin`` may send (``*`` in the list allows every origin)."""
        allowed = self.config.allowed_origins
        return "*" in allowed or origin.rstrip("/") in allowed

    def covers(self, path: str) -> bool:
        """Whether ``path`` is one of the ingest endpoints declared with :func:`ingest_path`."""
        return any(pattern.fullmatch(path) is not None for pattern in self.paths)


INGEST = web.AppKey("appguard_ingest", Ingest)


def ingest(request: web.Request) -> Ingest:
    """The application's :class:`Ingest`."""
    return request.app[INGEST]


def ingest_path(app: web.Application, pattern: str) -> None:
    """Declare the paths ``pattern`` matches whole (a regular expression such as
    ``/api/telemetry/[a-z]+``) as ingest endpoints: CORS as configured. The dashboard's own
    endpoints beside them are left alone."""
    app[INGEST].paths.append(re.compile(pattern))


# --------------------------------------------------------------------------- CORS


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    shared = request.app[INGEST]
    origin = request.headers.get("Origin")
    if origin is None or not shared.covers(request.path):
        return await handler(request)
    if not shared.origin_allowed(origin):
        raise Refused(403, f"origin {origin} is not allowed to send here (api.ingest.allowed_origins)", field="Origin")
    if request.method == "OPTIONS":
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "3600",
                "Vary": "Origin",
            },
        )
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    shared = request.app[INGEST]
    origin = request.headers.get("Origin")
    if origin is not None and shared.covers(request.path) and shared.origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers["Vary"] = "Origin"


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Make the shared :class:`Ingest`; feature modules registered after this one use it."""
    svc = app[SERVICES]
    config = svc.config.ingest
    shared = Ingest(
        config=config,
        keys=IngestKeys(ProjectStore(svc.pool)),
        limiter=WindowLimiter(svc.redis, svc.key_prefix),
        forwarder=OtlpForwarder(config.otlp_endpoint, config.timeout, "browser"),
        paths=[],
    )
    app[INGEST] = shared

    async def close_client(_: web.Application) -> None:
        await shared.forwarder.close()

    app.on_cleanup.append(close_client)
    app.middlewares.append(_cors)
    app.on_response_prepare.append(_cors_headers)
