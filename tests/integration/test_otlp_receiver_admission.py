"""Admission control in the otlp receiver: bytes in flight are bounded before decoding."""

from __future__ import annotations

import asyncio

import aiohttp
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.consumer import Consumer
from collector.pdata import Payload, Signal
from tests.integration.test_otlp_receiver import grpc_call, running
from tests.integration.test_otlp_receiver_errors import grpc_details, retry_delay


class Gate:
    """A consumer that holds every request until the test opens the gate."""

    mutates_data = False

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self.got: list[Payload] = []

    async def consume(self, payload: Payload) -> None:
        self.entered += 1
        await self.open.wait()
        self.got.append(payload)


async def _until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_requests_beyond_the_limits_wait_then_are_refused() -> None:
    gate = Gate()
    consumer: Consumer = gate
    body = big_request()
    assert 600_000 < len(body) < 1024 * 1024
    # 1 MiB in flight and 1 MiB waiting: one request each; a third is refused at once
    limits = {"request_limit_mib": 1, "waiting_limit_mib": 1}
    async with running(None, consumer, admission=limits) as receiver, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{receiver.http_port}/v1/traces"
        headers = {"Content-Type": "application/x-protobuf"}

        async def post() -> tuple[int, dict[str, str]]:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status, dict(resp.headers)

        first = asyncio.create_task(post())
        await _until(lambda: gate.entered == 1)
        second = asyncio.create_task(post())  # waits for room, not yet decoded
        await asyncio.sleep(0.2)
        assert gate.entered == 1 and not second.done()
        status, resp_headers = await post()  # over the waiting limit: refused, retryable
        assert status == 429 and "Retry-After" in resp_headers
        channel, call = grpc_call(receiver.grpc_port, Signal.TRACES)  # type: ignore[arg-type]
        async with channel:
            try:
                await call(body, timeout=5)
                raise AssertionError("the gRPC call should have been refused")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert retry_delay(grpc_details(exc)) is not None
        gate.open.set()
        assert (await first)[0] == 200 and (await second)[0] == 200
        assert len(gate.got) == 2


def big_request() -> bytes:
    """A valid trace request of about 700 KB."""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(3000):
        span = ss.spans.add(trace_id=bytes(range(16)), span_id=i.to_bytes(8, "big"), name=f"op{i}")
        span.attributes.add(key="payload").value.string_value = "x" * 200
    return req.SerializeToString()
