"""OTLP/HTTP: ``POST`` of binary protobuf or OTLP/JSON export requests, on aiohttp.

Answers follow the OTLP/HTTP specification: 200 with an ``Export*ServiceResponse`` in the
request's encoding; every 4xx/5xx carries a ``google.rpc.Status`` in the request's encoding
(JSON when the request's own type is not one OTLP knows). 400 for bad data, 401 when the
authenticator refuses, 404 for another path, 405 for another method, 413 past
``max_request_body_size`` (decompressed), 415 for another content type, 429 or 503 (with
``Retry-After`` when a delay is known) when the pipelines refuse for now.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.rpc import status_pb2

from collector import otlpjson
from collector.auth import AuthenticationError, ServerAuthenticator
from collector.consumer import ConsumeError
from collector.netconfig import bind_sockets, server_ssl_context, split_host_port
from collector.pdata import RESPONSE_TYPES, ExportRequest, InvalidData, Payload, Signal, parse_request
from collector.telemetry import ReceiverMetrics
from receivers.otlp.config import SUPPORTED_COMPRESSION, CORSConfig, HTTPServerConfig
from receivers.otlp.decompress import BodyTooLarge, read_body
from receivers.otlp.handoff import Handoff, bad_data_count, client_metadata, refusal, retry_after_header, rpc_status

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# aiohttp's own default for idle keep-alive connections, kept when idle_timeout is 0.
_IDLE_TIMEOUT = 3630.0


@dataclass(frozen=True)
class _Codec:
    """One of the two OTLP/HTTP encodings."""

    content_type: str
    parse: Callable[[Signal, bytes], ExportRequest]
    encode: Callable[[status_pb2.Status], bytes]
    success: Mapping[Signal, bytes]
    keeps_raw: bool  # the request body is the protobuf bytes a payload carries on


_PROTOBUF = _Codec(
    PROTOBUF,
    parse_request,
    lambda msg: msg.SerializeToString(),
    {s: t().SerializeToString() for s, t in RESPONSE_TYPES.items()},
    True,
)
_JSON = _Codec(
    JSON,
    otlpjson.parse_request,
    otlpjson.dumps,
    {s: otlpjson.dumps(t()) for s, t in RESPONSE_TYPES.items()},
    False,
)
_CODECS = {PROTOBUF: _PROTOBUF, JSON: _JSON}

# The gRPC code put in an error's Status, from its HTTP status (the stock collector's table).
_GRPC_CODE = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


def _codec(content_type: str | None) -> _Codec | None:
    # The media type without parameters (charset...), compared case-insensitively.
    if not content_type:
        return None
    return _CODECS.get(content_type.partition(";")[0].strip().lower())


class _CORS:
    """CORS as the stock receiver does it (rs/cors): listed origins, credentials allowed."""

    # Always allowed request headers (the CORS safelist, plus Origin).
    _SAFE = frozenset({"accept", "accept-language", "content-language", "content-type", "origin"})

    def __init__(self, config: CORSConfig) -> None:
        origins = [o.lower() for o in config.allowed_origins]
        self.any_origin = "*" in origins
        self.exact = {o for o in origins if "*" not in o}
        self.patterns = [re.compile(".*".join(re.escape(p) for p in o.split("*"))) for o in origins if "*" in o and o != "*"]
        headers = {h.lower() for h in config.allowed_headers}
        self.any_header = "*" in headers
        self.headers = self._SAFE | headers | (set() if headers else {"x-requested-with"})
        self.max_age = config.max_age

    def allows(self, origin: str) -> bool:
        o = origin.lower()
        return self.any_origin or o in self.exact or any(p.fullmatch(o) for p in self.patterns)

    def response_headers(self, origin: str | None) -> dict[str, str]:
        """Headers that let the browser read the response of an actual request."""
        if not origin or not self.allows(origin):
            return {"Vary": "Origin"}
        return {"Vary": "Origin", "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}

    def preflight(self, request: web.Request) -> web.Response:
        """Answer an OPTIONS preflight: 204, with the grants only when all is allowed."""
        headers = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method", "").upper()
        asked = request.headers.get("Access-Control-Request-Headers", "")
        wanted = [h.strip().lower() for h in asked.split(",") if h.strip()]
        if (
            origin
            and self.allows(origin)
            and method == "POST"
            and (self.any_header or all(h in self.headers for h in wanted))
        ):
            headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Credentials": "true",
                    "Access-Control-Allow-Methods": "POST",
                }
            )
            if wanted:
                headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
            if self.max_age > 0:
                headers["Access-Control-Max-Age"] = str(self.max_age)
        return web.Response(status=204, headers=headers)


class HTTPServer:
    """The OTLP/HTTP server of one receiver."""

    def __init__(
        self,
        config: HTTPServerConfig,
        handoff: Handoff,
        authenticator: ServerAuthenticator | None,
        logger: logging.Logger,
    ) -> None:
        self.config = config
        self.handoff = handoff
        self.authenticator = authenticator
        self.logger = logger
        self.port: int | None = None
        paths = {
            Signal.TRACES: config.traces_url_path,
            Signal.METRICS: config.metrics_url_path,
            Signal.LOGS: config.logs_url_path,
        }
        # Only signals with pipelines get a path; another signal's path answers 404.
        self.routes = {paths[s]: s for s in handoff.consumers}
        self.encodings = frozenset(e for e in config.compression_algorithms if e in SUPPORTED_COMPRESSION)
        self.cors = _CORS(config.cors) if config.cors and config.cors.allowed_origins else None
        self.allow = "POST, OPTIONS" if self.cors else "POST"
        self.extra_headers = dict(config.response_headers)
        self._runner: web.AppRunner | None = None

    async def start(self, grace: float) -> None:
        """Bind and serve; ``port`` is the bound port afterwards. ``grace`` bounds shutdown."""
        cfg = self.config
        if cfg.cors and not cfg.cors.allowed_origins and cfg.cors.allowed_headers:
            self.logger.warning("The CORS configuration lists allowed headers but no allowed origins, and is therefore ignored.")
        unsupported = [e for e in cfg.compression_algorithms if e not in SUPPORTED_COMPRESSION]
        if unsupported:
            self.logger.warning("compression_algorithms %s are not supported; such bodies get 400", unsupported)
        ssl_context = server_ssl_context(cfg.tls) if cfg.tls is not None else None
        host, port = split_host_port(cfg.endpoint)
        sockets = bind_sockets(host, port)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=grace,
            # aiohttp would otherwise inflate bodies itself, with no bound on the output.
            auto_decompress=False,
            keepalive_timeout=cfg.idle_timeout or _IDLE_TIMEOUT,
        )
        try:
            await runner.setup()
            for sock in sockets:
                await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        except BaseException:
            await runner.cleanup()
            for sock in sockets:
                sock.close()
            raise
        self._runner = runner
        self.port = sockets[0].getsockname()[1]
        shown = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.logger.info("Starting HTTP server on %s", shown, extra={"endpoint": shown})

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (within the grace), close."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _reply(self, status: int, body: bytes, content_type: str, origin: str | None, headers: dict[str, str] | None = None) -> web.Response:
        response = web.Response(status=status, body=body, headers={"Content-Type": content_type, **self.extra_headers, **(headers or {})})
        if self.cors is not None:
            response.headers.update(self.cors.response_headers(origin))
        if not self.config.keep_alives_enabled:
            response.force_close()
        return response

    def _error(
        self,
        status: int,
        message: str,
        codec: _Codec | None,
        origin: str | None,
        *,
        retry_after: float | None = None,
        rpc: status_pb2.Status | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """An error answer: ``rpc`` (or a Status made from ``message``) as the body."""
        codec = codec or _JSON
        if rpc is None:
            rpc = rpc_status(_GRPC_CODE.get(status, grpc.StatusCode.UNKNOWN), message, bad_data=status == 400)
        extra = dict(headers or {})
        if retry_after is not None and status in (429, 503):
            extra["Retry-After"] = retry_after_header(retry_after)
        return self._reply(status, codec.encode(rpc), codec.content_type, origin, extra)

    async def _handle(self, request: web.Request) -> web.Response:
        headers = request.headers
        codec = _codec(headers.get("Content-Type"))
        origin = headers.get("Origin")
        signal = self.routes.get(request.path)
        if signal is None:
            return self._error(404, f"no OTLP endpoint at {request.path}", codec, origin)
        if request.method == "OPTIONS" and self.cors is not None:
            return self.cors.preflight(request)
        if self.authenticator is not None:
            try:
                self.authenticator.authenticate(headers)
            except AuthenticationError as exc:
                return self._error(401, str(exc), codec, origin)
        if request.method != "POST":
            return self._error(405, f"method {request.method} not allowed, supported: [POST]", codec, origin, headers={"Allow": self.allow})
        if codec is None:
            return self._error(415, f"unsupported media type, supported: [{JSON}, {PROTOBUF}]", None, origin)
        encoding = headers.get("Content-Encoding", "").strip().lower()
        if encoding == "identity":
            encoding = ""
        if encoding not in self.encodings:
            return self._error(400, f"unsupported Content-Encoding: {encoding}", codec, origin)
        limit = self.config.max_request_body_size
        if request.content_length is not None and request.content_length > limit:
            return self._error(413, f"request body of {request.content_length} bytes is larger than the limit of {limit} bytes", codec, origin)
        try:
            # Admission is decided on the announced size, before the body is read and decoded;
            # a chunked body is admitted by its size once read.
            announced = request.content_length
            async with self.handoff.admission.acquire(announced or 0):
                failure = await self._read_and_push(request, signal, codec, encoding, limit, origin, announced is None)
        except ConsumeError as exc:
            answer = refusal(exc)
            return self._error(answer.http_status, str(exc), codec, origin, retry_after=answer.retry_after, rpc=answer.status)
        if failure is not None:
            return failure
        return self._reply(200, codec.success[signal], codec.content_type, origin)

    async def _read_and_push(
        self, request: web.Request, signal: Signal, codec: _Codec, encoding: str, limit: int, origin: str | None, admit_read: bool
    ) -> web.Response | None:
        """Read, decode and hand on the body; an error answer for bad input, else ``None``.

        A :class:`ConsumeError` from the pipeline (or the admission) propagates to the caller.
        """
        metrics = self.handoff.metrics
        try:
            body = await read_body(request.content.iter_any(), encoding, limit)
        except BodyTooLarge as exc:
            return self._error(413, str(exc), codec, origin)
        except InvalidData as exc:
            return self._error(400, str(exc), codec, origin)
        if not body:
            return None
        if admit_read:
            async with self.handoff.admission.acquire(len(body)):
                return await self._decode_and_push(body, request, signal, codec, origin, metrics)
        return await self._decode_and_push(body, request, signal, codec, origin, metrics)

    async def _decode_and_push(
        self, body: bytes, request: web.Request, signal: Signal, codec: _Codec, origin: str | None, metrics: ReceiverMetrics
    ) -> web.Response | None:
        try:
            message = codec.parse(signal, body)
        except InvalidData as exc:
            metrics.failed(signal, bad_data_count(signal, body) if codec.keeps_raw else 0)
            return self._error(400, str(exc), codec, origin)
        payload = Payload.from_message(
            signal,
            message,
            raw=body if codec.keeps_raw else None,
            metadata=client_metadata(request.headers.items()) if self.config.include_metadata else None,
            client_address=request.remote,
        )
        await self.handoff.push(payload)
        return None

