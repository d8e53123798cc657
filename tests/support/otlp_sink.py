"""An OTLP server for tests, standing in for Tempo or any OTLP backend (gRPC and HTTP).

It records every export request it receives, decoded strictly (a malformed request is a test
error, kept in :attr:`OTLPSink.errors` and raised by the ``wait_*`` helpers), and can be told
to fail the next requests or to stop for a while, keeping its ports::

    async with OTLPSink() as sink:                  # gRPC and HTTP on free loopback ports
        exporter_config = {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}
        sink.fail_next(2, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503, retry_after=0.1)
        ...
        await sink.wait_for_items(10, Signal.TRACES)
        assert sink.requests[0].raw == expected_bytes

    await sink.stop(); ...; await sink.start()      # an outage, same ports

From a synchronous test (for example one driving the collector as a subprocess) run it in a
thread of its own: ``sink.start_in_thread()``, ``sink.wait_for_items_blocking(...)``,
``sink.stop_in_thread()``. As a program, ``python -m tests.support.otlp_sink --grpc-port N
--http-port M`` serves until interrupted and prints one JSON line per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import signal as os_signal
import sys
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import grpc
import zstandard
from aiohttp import web
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from collector import otlpjson
from collector.pdata import (
    RESPONSE_TYPES,
    ExportRequest,
    ExportResponse,
    InvalidData,
    Signal,
    count_items,
    parse_request,
)
from tests.support.threaded import ThreadedServer

_GRPC_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
_PROTO = "application/x-protobuf"
_JSON = "application/json"
# What an HTTP status means in gRPC terms, for the google.rpc.Status body of an HTTP failure.
_HTTP_TO_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 429: 8, 500: 13, 502: 14, 503: 14, 504: 4}


@dataclass
class Received:
    """One export request as the sink got it.

    ``raw`` is the request body after decompression (protobuf, or JSON for HTTP/JSON);
    ``headers`` are the gRPC metadata or HTTP headers, keys in lower case; ``encoding`` is the
    HTTP Content-Encoding (``identity`` when absent; empty for gRPC).
    """

    signal: Signal
    transport: str
    message: ExportRequest
    raw: bytes
    headers: dict[str, str]
    encoding: str
    content_type: str
    items: int


@dataclass
class _Answer:
    grpc_code: grpc.StatusCode | None = None
    http_status: int | None = None
    retry_after: float | None = None
    message: str = ""
    rejected: int = 0


class OTLPSink(ThreadedServer):
    """A recording OTLP/gRPC + OTLP/HTTP server on 127.0.0.1.

    Ports given as 0 are chosen on the first start and kept for restarts; ``None`` disables
    that transport.
    """

    thread_name = "otlp-sink"

    def __init__(self, *, grpc_port: int | None = 0, http_port: int | None = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self._grpc_port = grpc_port
        self._http_port = http_port
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._script: list[_Answer] = []
        self.errors: list[str] = []
        self.answered_failures = 0
        self._grpc_server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.on_request: Callable[[Received], None] | None = None

    # ---- addresses

    @property
    def grpc_port(self) -> int:
        assert self._grpc_port, "gRPC is disabled or the sink was never started"
        return self._grpc_port

    @property
    def http_port(self) -> int:
        assert self._http_port, "HTTP is disabled or the sink was never started"
        return self._http_port

    @property
    def grpc_endpoint(self) -> str:
        """``host:port`` for an OTLP/gRPC exporter (plaintext: set ``tls.insecure``)."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL for an OTLP/HTTP exporter (``/v1/traces`` etc. are appended)."""
        return f"http://{self.host}:{self.http_port}"

    # ---- behaviour

    def fail_next(
        self,
        n: int,
        *,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        http_status: int = 503,
        retry_after: float | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer the next ``n`` requests with an error (not recorded as received).

        ``retry_after`` becomes a gRPC RetryInfo detail or an HTTP ``Retry-After`` header
        (whole seconds, rounded up).
        """
        with self._lock:
            self._script.extend(_Answer(grpc_code, http_status, retry_after, message) for _ in range(n))

    def partial_next(self, n: int, *, rejected: int, message: str = "partially rejected") -> None:
        """Accept the next ``n`` requests (recorded) but report ``rejected`` items in partial_success."""
        with self._lock:
            self._script.extend(_Answer(rejected=rejected, message=message) for _ in range(n))

    # ---- what was received

    @property
    def requests(self) -> list[Received]:
        """Every request accepted so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def items(self, signal: Signal | None = None) -> int:
        """Spans, data points or log records received (of ``signal``, or of all signals)."""
        return sum(r.items for r in self.requests if signal is None or r.signal is signal)

    def clear(self) -> None:
        """Forget what was received, the pending failures and the errors."""
        with self._lock:
            self._requests.clear()
            self._script.clear()
            self.errors.clear()
            self.answered_failures = 0

    def _check(self, n: int, signal: Signal | None) -> bool:
        if self.errors:
            raise AssertionError(f"the OTLP sink got malformed requests: {self.errors}")
        return self.items(signal) >= n

    async def wait_for_items(self, n: int, signal: Signal | None = None, timeout: float = 10.0) -> None:
        """Wait until at least ``n`` items arrived; AssertionError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._check(n, signal):
            if time.monotonic() > deadline:
                raise AssertionError(f"the OTLP sink got {self.items(signal)} items, expected {n}")
            await asyncio.sleep(0.01)

    def wait_for_items_blocking(self, n: int, signal: Signal | None = None, timeout: float = 10.0) -> None:
        """:meth:`wait_for_items` for synchronous code (the sink runs in its own thread)."""
        deadline = time.monotonic() + timeout
        while not self._check(n, signal):
            if time.monotonic() > deadline:
                raise AssertionError(f"the OTLP sink got {self.items(signal)} items, expected {n}")
            time.sleep(0.01)

    # ---- handling a request

    def _next_answer(self) -> _Answer | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)
        if self.on_request is not None:
            self.on_request(received)

    def _response(self, signal: Signal, answer: _Answer | None) -> ExportResponse:
        response = RESPONSE_TYPES[signal]()
        if answer is not None and answer.rejected:
            partial = response.partial_success
            if signal is Signal.TRACES:
                partial.rejected_spans = answer.rejected  # type: ignore[union-attr]
            elif signal is Signal.METRICS:
                partial.rejected_data_points = answer.rejected  # type: ignore[union-attr]
            else:
                partial.rejected_log_records = answer.rejected  # type: ignore[union-attr]
            partial.error_message = answer.message
        return response

    def _grpc_handler(self, signal: Signal) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Coroutine[Any, Any, bytes]]:
        async def export(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            answer = self._next_answer()
            if answer is not None and answer.grpc_code is not None:
                with self._lock:
                    self.answered_failures += 1
                await context.abort_with_status(rpc_status.to_status(_grpc_status(answer)))
            try:
                message = parse_request(signal, request)
            except InvalidData as exc:
                self._error(f"gRPC {signal}: {exc}")
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            headers = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            self._record(Received(signal, "grpc", message, request, headers, "", "application/grpc", count_items(signal, message)))
            return self._response(signal, answer).SerializeToString()

        return export

    async def _http_handler(self, request: web.Request) -> web.Response:
        name = request.match_info["signal"]
        try:
            signal = Signal(name)
        except ValueError:
            self._error(f"HTTP request to unknown path {request.path}")
            return web.Response(status=404)
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        answer = self._next_answer()
        if answer is not None and answer.http_status is not None:
            with self._lock:
                self.answered_failures += 1
            return _http_failure(answer)
        try:
            raw = _decompress(encoding, body)
            if content_type == _PROTO:
                message = parse_request(signal, raw)
            elif content_type == _JSON:
                message = otlpjson.parse_request(signal, raw)
            else:
                raise InvalidData(f"unsupported Content-Type {content_type!r}")
        except (InvalidData, ValueError, OSError, zstandard.ZstdError) as exc:
            self._error(f"HTTP {signal}: {exc}")
            return web.Response(status=400, text=str(exc))
        headers = {k.lower(): v for k, v in request.headers.items()}
        self._record(Received(signal, "http", message, raw, headers, encoding, content_type, count_items(signal, message)))
        response = self._response(signal, answer)
        if content_type == _JSON:
            return web.Response(body=otlpjson.dumps(response), content_type=_JSON)
        return web.Response(body=response.SerializeToString(), content_type=_PROTO)

    # ---- lifecycle

    async def start(self) -> None:
        """Serve (again, on the same ports after :meth:`stop`)."""
        if self._grpc_port is not None:
            server = grpc.aio.server()
            handlers = {
                s: grpc.unary_unary_rpc_method_handler(self._grpc_handler(s)) for s in Signal
            }
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(_GRPC_SERVICES[s], {"Export": h}) for s, h in handlers.items()]
            )
            self._grpc_port = server.add_insecure_port(f"{self.host}:{self._grpc_port}")
            await server.start()
            self._grpc_server = server
        if self._http_port is not None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_post("/v1/{signal}", self._http_handler)
            # Bodies are decompressed here, by the declared Content-Encoding, to check it.
            runner = web.AppRunner(app, access_log=None, auto_decompress=False)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._http_port, reuse_address=True)
            await site.start()
            self._http_port = runner.addresses[0][1]
            self._runner = runner

    async def stop(self) -> None:
        """Stop serving (clients see connection refused); what was received is kept."""
        if self._grpc_server is not None:
            await self._grpc_server.stop(None)
            self._grpc_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None



def _grpc_status(answer: _Answer) -> status_pb2.Status:
    assert answer.grpc_code is not None
    status = status_pb2.Status(code=answer.grpc_code.value[0], message=answer.message)
    if answer.retry_after is not None:
        detail = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(answer.retry_after * 1e9))
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        status.details.append(detail)
    return status


def _http_failure(answer: _Answer) -> web.Response:
    assert answer.http_status is not None
    status = status_pb2.Status(code=_HTTP_TO_GRPC.get(answer.http_status, 2), message=answer.message)
    headers = {}
    if answer.retry_after is not None:
        headers["Retry-After"] = str(max(0, int(-(-answer.retry_after // 1))))
    return web.Response(status=answer.http_status, body=status.SerializeToString(), content_type=_PROTO, headers=headers)


def _decompress(encoding: str, body: bytes) -> bytes:
    if encoding in ("identity", ""):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, printing a JSON line per request received."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--grpc-port", type=int, default=4317, help="0 for a free port, -1 to disable")
    parser.add_argument("--http-port", type=int, default=4318, help="0 for a free port, -1 to disable")
    args = parser.parse_args(argv)

    def show(r: Received) -> None:
        print(json.dumps({"transport": r.transport, "signal": r.signal.value, "items": r.items, "bytes": len(r.raw)}), flush=True)

    async def serve() -> None:
        sink = OTLPSink(
            grpc_port=None if args.grpc_port < 0 else args.grpc_port,
            http_port=None if args.http_port < 0 else args.http_port,
        )
        sink.on_request = show
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with sink:
            ports = {"grpc_port": sink._grpc_port, "http_port": sink._http_port}
            print(json.dumps({"ready": True, **ports}), flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
