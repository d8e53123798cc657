"""The otlp receiver's answers to bad requests and refusing pipelines, on both transports, and
that it keeps serving after each."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.consumer import ConsumeError, PermanentError, RetryableError
from collector.pdata import Signal
from collector.telemetry import Telemetry
from extensions.bearertokenauth import BearerTokenAuthConfig
from extensions.bearertokenauth import factory as bearer_factory
from receivers.otlp import OTLPReceiver
from tests.integration.test_otlp_receiver import (
    Recorder,
    grpc_call,
    running,
    sample,
    sdk_spans,
    send_with_sdk,
)

PB = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


def good_request(spans: int = 3) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(spans):
        ss.spans.add(trace_id=bytes(range(16)), span_id=bytes([i + 1] * 8), name=f"op{i}")
    return req.SerializeToString()


class Client:
    """Posts to one running receiver and checks it still takes a good request afterwards."""

    def __init__(self, receiver: OTLPReceiver, session: aiohttp.ClientSession, recorder: Recorder) -> None:
        self.receiver = receiver
        self.session = session
        self.recorder = recorder

    def url(self, path: str = "/v1/traces") -> str:
        return f"http://127.0.0.1:{self.receiver.http_port}{path}"

    async def post(self, body: bytes, headers: dict[str, str], path: str = "/v1/traces") -> tuple[int, dict[str, str], bytes]:
        async with self.session.post(self.url(path), data=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()

    async def still_serving(self) -> None:
        before = len(self.recorder.got)
        status, _, _ = await self.post(good_request(), PB)
        assert status == 200
        assert len(self.recorder.got) == before + 1


@asynccontextmanager
async def client(protocols: dict[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[Client]:
    recorder = kwargs.pop("consumer", None) or Recorder()
    async with running(protocols, recorder, **kwargs) as receiver, aiohttp.ClientSession(auto_decompress=False) as session:
        yield Client(receiver, session, recorder)


def status_of(body: bytes, headers: dict[str, str]) -> status_pb2.Status:
    """The google.rpc.Status of an error response, in the encoding it declares."""
    if headers["Content-Type"] == "application/json":
        return json_format.Parse(body, status_pb2.Status())
    assert headers["Content-Type"] == "application/x-protobuf"
    return status_pb2.Status.FromString(body)


def retry_delay(status: status_pb2.Status) -> float | None:
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


async def grpc_error(port: int, body: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.aio.AioRpcError:
    channel, call = grpc_call(port, Signal.TRACES)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(body, metadata=metadata)
        # and the server goes on serving
        assert await call(good_request()) == b""
    return info.value


def grpc_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    trailers = dict(error.trailing_metadata() or ())
    return status_pb2.Status.FromString(trailers["grpc-status-details-bin"])


SHORT_TRACE_ID = ExportTraceServiceRequest()
SHORT_TRACE_ID.resource_spans.add().scope_spans.add().spans.add(trace_id=bytes(15), span_id=bytes(8))
SHORT_TRACE_ID.resource_spans[0].scope_spans[0].spans.add(trace_id=bytes(16), span_id=bytes(8))


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"\x0a\x05\x0a\x03\xff\xff", PB, 400, "malformed traces protobuf"),
        (SHORT_TRACE_ID.SerializeToString(), PB, 400, "wrong length"),
        (b'{"resourceSpans": [}', JSON, 400, "invalid JSON"),
        (b'{"resourceSpans": "\xff\xfe"}', JSON, 400, "not valid UTF-8"),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102"}]}]}]}', JSON, 400, "resourceSpans[0].scopeSpans[0].spans[0].traceId"),
        (good_request(), {"Content-Type": "text/plain"}, 415, "unsupported media type"),
        (good_request(), {}, 415, "unsupported media type"),
        (good_request(), {**PB, "Content-Encoding": "br"}, 400, "unsupported Content-Encoding: br"),
        (b"not gzip at all", {**PB, "Content-Encoding": "gzip"}, 400, "cannot decompress the gzip body"),
        (gzip.compress(good_request())[:-12], {**PB, "Content-Encoding": "gzip"}, 400, "truncated"),
    ],
    ids=[
        "malformed-protobuf",
        "short-trace-id",
        "bad-json",
        "bad-utf8",
        "json-short-trace-id",
        "text-plain",
        "no-content-type",
        "unknown-encoding",
        "corrupt-gzip",
        "truncated-gzip",
    ],
)
async def test_bad_http_requests(body: bytes, headers: dict[str, str], status: int, message: str) -> None:
    telemetry = Telemetry()
    async with client(telemetry=telemetry) as c:
        got, resp_headers, resp_body = await c.post(body, headers)
        assert got == status
        st = status_of(resp_body, resp_headers)
        assert message in st.message
        # the Status comes in the request's encoding (JSON when that is not an OTLP one)
        wanted = headers.get("Content-Type") if got != 415 else "application/json"
        assert resp_headers["Content-Type"] == wanted
        if status == 400:
            assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in st.details)
        await c.still_serving()
        assert len(c.recorder.got) == 1
    if message == "wrong length":
        assert sample(telemetry, "otelcol_receiver_failed_spans_total", "http") == 2


async def test_wrong_method_and_path() -> None:
    async with client() as c:
        async with c.session.get(c.url(), headers=PB) as resp:
            assert resp.status == 405
            assert resp.headers["Allow"] == "POST"
            assert resp.headers["Content-Type"] == "application/x-protobuf"
            assert "method GET not allowed" in status_pb2.Status.FromString(await resp.read()).message
        async with c.session.put(c.url(), data=good_request()) as resp:
            assert resp.status == 405
            assert "method PUT not allowed" in json.loads(await resp.read())["message"]
        status, _, body = await c.post(good_request(), PB, path="/v1/spans")
        assert status == 404
        assert status_pb2.Status.FromString(body).code == grpc.StatusCode.UNIMPLEMENTED.value[0]
        await c.still_serving()


async def test_body_size_limits() -> None:
    limit = 64 * 1024
    async with client({"http": {"endpoint": "127.0.0.1:0", "max_request_body_size": limit}}) as c:
        big = b"\x00" * (limit + 1)
        # declared too large: refused before reading
        status, headers, body = await c.post(big, PB)
        assert status == 413
        assert "larger than" in status_of(body, headers).message

        # chunked, no Content-Length: refused once the limit is passed
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"\x00" * (limit // 4)

        async with c.session.post(c.url(), data=chunks(), headers=PB) as resp:
            assert resp.status == 413
        # a gzip bomb: a few KiB on the wire, far more than the limit inflated
        bomb = gzip.compress(b"\x00" * (32 * 1024 * 1024))
        assert len(bomb) < limit
        status, headers, body = await c.post(bomb, {**PB, "Content-Encoding": "gzip"})
        assert status == 413
        assert "decompressed request body larger than 65536 bytes" in status_of(body, headers).message
        # compressed and too large on the wire
        status, _, _ = await c.post(gzip.compress(bytes(range(256)) * 1024, compresslevel=0), {**PB, "Content-Encoding": "gzip"})
        assert status == 413
        # just under the limit decompressed is fine
        status, _, _ = await c.post(gzip.compress(good_request()), {**PB, "Content-Encoding": "gzip"})
        assert status == 200
        await c.still_serving()


@pytest.mark.parametrize(
    ("error", "http_status", "grpc_code", "retry_after", "delay"),
    [
        (RetryableError("queue is full", throttled=True, retry_after=3), 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "3", 3.0),
        # throttled without a known delay: still a delay, or a gRPC client would not retry at all
        (RetryableError("memory limit", throttled=True), 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "1", 1.0),
        (RetryableError("backend down"), 503, grpc.StatusCode.UNAVAILABLE, None, None),
        (RetryableError("backend down", retry_after=1.5), 503, grpc.StatusCode.UNAVAILABLE, "2", 1.5),
        (PermanentError("cannot be stored"), 400, grpc.StatusCode.INVALID_ARGUMENT, None, None),
    ],
)
async def test_pipeline_refusals(error: ConsumeError, http_status: int, grpc_code: grpc.StatusCode, retry_after: str | None, delay: float | None) -> None:
    telemetry = Telemetry()
    recorder = Recorder(error)
    async with client(consumer=recorder, telemetry=telemetry) as c:
        for content_type in ("application/x-protobuf", "application/json"):
            body = good_request() if content_type == "application/x-protobuf" else b'{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{}]}]}]}'
            status, headers, resp_body = await c.post(body, {"Content-Type": content_type})
            assert status == http_status
            assert headers.get("Retry-After") == retry_after
            st = status_of(resp_body, headers)
            assert str(error) in st.message
            assert retry_delay(st) == delay
        assert c.receiver.grpc_port
        channel, call = grpc_call(c.receiver.grpc_port, Signal.TRACES)
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(good_request())
        assert info.value.code() == grpc_code
        assert info.value.details() == str(error)
        assert retry_delay(grpc_details(info.value)) == delay
        trailers = dict(info.value.trailing_metadata() or ())
        if delay is not None:
            # the OpenTelemetry Python SDK looks for the RetryInfo in a trailer of its own
            info_bin = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
            assert info_bin.retry_delay.seconds + info_bin.retry_delay.nanos / 1e9 == delay
    counter = "otelcol_receiver_failed_spans_total" if isinstance(error, PermanentError) else "otelcol_receiver_refused_spans_total"
    assert sample(telemetry, counter, "http") == 6
    assert sample(telemetry, counter, "grpc") == 3
    assert sample(telemetry, "otelcol_receiver_accepted_spans_total", "http") == 0


async def test_unexpected_pipeline_exception_is_retryable() -> None:
    class Broken:
        mutates_data = False

        async def consume(self, payload: object) -> None:
            raise KeyError("bug")

    async with (
        running(consumer=Broken()) as receiver,  # type: ignore[arg-type]
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{receiver.http_port}/v1/traces", data=good_request(), headers=PB) as resp,
    ):
        assert resp.status == 503


async def test_bad_grpc_requests() -> None:
    telemetry = Telemetry()
    async with client(telemetry=telemetry) as c:
        port = c.receiver.grpc_port
        assert port
        error = await grpc_error(port, b"\x0a\x05\x0a\x03\xff\xff")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed traces protobuf" in (error.details() or "")
        error = await grpc_error(port, SHORT_TRACE_ID.SerializeToString())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any(d.Is(error_details_pb2.BadRequest.DESCRIPTOR) for d in grpc_details(error).details)
        # over max_recv_msg_size_mib (4 MiB by default): gRPC refuses it itself
        error = await grpc_error(port, b"\x0a" + b"\xff\xff\xff\x02" + b"\x00" * (5 * 1024 * 1024))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sample(telemetry, "otelcol_receiver_failed_spans_total", "grpc") == 2
    assert sample(telemetry, "otelcol_receiver_accepted_spans_total", "grpc") == 9


async def bearer_host(*tokens: str) -> Host:
    settings = CreateSettings(ComponentID("bearertokenauth"), Kind.EXTENSION, Telemetry())
    ext = bearer_factory.create(settings=settings, config=BearerTokenAuthConfig(tokens=list(tokens)))
    await ext.start(Host())
    return Host({ComponentID("bearertokenauth"): ext})


async def test_bearer_auth_on_both_transports() -> None:
    host = await bearer_host("s3cret", "other")
    auth = {"auth": {"authenticator": "bearertokenauth"}}
    protocols = {"grpc": {"endpoint": "127.0.0.1:0", **auth}, "http": {"endpoint": "127.0.0.1:0", **auth}}
    recorder = Recorder()
    spans = sdk_spans()
    async with running(protocols, recorder, host=host) as receiver, aiohttp.ClientSession() as session:
        assert receiver.grpc_port and receiver.http_port
        url = f"http://127.0.0.1:{receiver.http_port}/v1/traces"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            async with session.post(url, data=good_request(), headers={**PB, **headers}) as resp:
                assert resp.status == 401
                assert status_pb2.Status.FromString(await resp.read()).code == grpc.StatusCode.UNAUTHENTICATED.value[0]
            channel, call = grpc_call(receiver.grpc_port, Signal.TRACES)
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(good_request(), metadata=tuple((k.lower(), v) for k, v in headers.items()))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert recorder.got == []
        # the SDK exporters with the right header get through
        bearer = {"authorization": "Bearer s3cret"}
        assert (await send_with_sdk("grpc", receiver.grpc_port, Signal.TRACES, spans, headers=bearer)).name == "SUCCESS"
        assert (await send_with_sdk("http", receiver.http_port, Signal.TRACES, spans, headers={"Authorization": "Bearer other"})).name == "SUCCESS"
    assert len(recorder.got) == 2


async def test_unknown_authenticator_fails_start() -> None:
    with pytest.raises(ValueError, match=re.escape("receivers.otlp.protocols.http: auth.authenticator 'bearertokenauth/missing' is not an enabled extension")):
        async with running({"http": {"endpoint": "127.0.0.1:0", "auth": {"authenticator": "bearertokenauth/missing"}}}):
            pass
