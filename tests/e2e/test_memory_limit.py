"""A flood larger than the memory limit: refused with retryable errors, RSS under the limit,
and afterwards everything that was acknowledged is delivered."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from bench.workload import traces_request
from collector.pdata import Signal
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink
from tests.support.process import CollectorProcess

pytestmark = pytest.mark.e2e

LIMIT_MIB = 160
METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE}


def _config(grpc_port: int, sink_port: int) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  memory_limiter:
    check_interval: 50ms
    limit_mib: {LIMIT_MIB}
    spike_limit_mib: 50
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls:
      insecure: true
    compression: none
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 500ms
      max_elapsed_time: 0s
    sending_queue:
      queue_size: 100000
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter]
      exporters: [otlp]
"""


@pytest.fixture
def down_sink() -> Iterator[OTLPSink]:
    s = OTLPSink(grpc_port=free_port(), http_port=None)
    yield s
    s.stop_in_thread()


def _bodies(n: int) -> list[bytes]:
    template = traces_request(512)
    marker = template.resource_spans[0].resource.attributes.add()
    marker.key = "flood.request"
    out = []
    for i in range(n):
        marker.value.int_value = i
        out.append(template.SerializeToString())
    return out


async def _flood(port: int, bodies: list[bytes], peak: list[float], pid: int) -> tuple[set[int], int]:
    acked: set[int] = set()
    refused = 0
    proc = psutil.Process(pid)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        queue = list(enumerate(bodies))

        async def worker() -> None:
            nonlocal refused
            while queue:
                i, body = queue.pop()
                try:
                    await call(body, timeout=30)
                    acked.add(i)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() in RETRYABLE, exc
                    refused += 1
                peak.append(proc.memory_info().rss / 2**20)

        await asyncio.gather(*(worker() for _ in range(16)))
    return acked, refused


def test_flood_is_refused_and_acknowledged_data_is_delivered(tmp_path: Path, down_sink: OTLPSink) -> None:
    grpc_port = free_port()
    proc = CollectorProcess(_config(grpc_port, down_sink.grpc_port), tmp_path).start()
    try:
        proc.wait_ready()
        assert proc.proc is not None
        bodies = _bodies(1500)  # about 160 MB of OTLP while the backend is down
        peak: list[float] = []
        acked, refused = asyncio.run(_flood(grpc_port, bodies, peak, proc.proc.pid))
        assert refused > 0, "the memory limiter never refused"
        assert len(acked) > 0
        with open(f"/proc/{proc.proc.pid}/status") as f:
            hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
        print(f"acked {len(acked)} requests, refused {refused}, peak RSS {hwm:.0f} MiB")
        assert hwm < LIMIT_MIB, f"peak RSS {hwm:.0f} MiB over the {LIMIT_MIB} MiB limit"
        down_sink.start_in_thread()
        down_sink.wait_for_items_blocking(len(acked) * 512, Signal.TRACES, timeout=120)
        delivered = {
            kv.value.int_value
            for r in down_sink.requests
            for rs in r.message.resource_spans
            for kv in rs.resource.attributes
            if kv.key == "flood.request"
        }
        assert acked <= delivered
        text = proc.metrics_text()
        assert "otelcol_receiver_refused_spans_total" in text
    finally:
        assert proc.stop() == 0, proc.output()
