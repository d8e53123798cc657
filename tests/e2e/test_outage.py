"""The backend goes away: nothing the client saw acknowledged is lost.

In memory, the exporter retries until the backend is back. With the persistent queue, the
collector is killed with SIGKILL during the outage and restarted; the data still arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.pdata import Signal
from tests.e2e.sdk import send_spans
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink
from tests.support.process import CollectorProcess

pytestmark = pytest.mark.e2e


def _config(grpc_port: int, sink_port: int, storage_dir: Path | None) -> str:
    storage = f"extensions:\n  file_storage:\n    directory: {storage_dir}\n" if storage_dir else ""
    queue_storage = "      storage: file_storage\n" if storage_dir else ""
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls:
      insecure: true
    timeout: 2s
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 500ms
      max_elapsed_time: 0s
    sending_queue:
      queue_size: 5000
{queue_storage}{storage}service:
  extensions: [{"file_storage" if storage_dir else ""}]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
"""


@pytest.fixture
def down_sink() -> Iterator[OTLPSink]:
    """A sink whose port is reserved but that is not serving yet (the backend is down)."""
    s = OTLPSink(grpc_port=free_port(), http_port=None)
    yield s
    s.stop_in_thread()


def test_retries_deliver_everything_after_an_outage(tmp_path: Path, down_sink: OTLPSink) -> None:
    grpc_port = free_port()
    proc = CollectorProcess(_config(grpc_port, down_sink.grpc_port, None), tmp_path).start()
    try:
        proc.wait_ready()
        sent = send_spans("grpc", grpc_port, 20)  # acknowledged while the backend is down
        assert len(sent) == 40
        text = proc.metrics_text()
        assert 'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 40.0' in text
        down_sink.start_in_thread()  # the backend comes back on the same port
        down_sink.wait_for_items_blocking(40, Signal.TRACES, timeout=30)
        got = {s.span_id for r in down_sink.requests for s in r.message.resource_spans[0].scope_spans[0].spans}
        assert got == {s.get_span_context().span_id.to_bytes(8, "big") for s in sent}  # type: ignore[union-attr]
    finally:
        assert proc.stop() == 0, proc.output()


def test_persistent_queue_survives_kill_9(tmp_path: Path, down_sink: OTLPSink) -> None:
    grpc_port = free_port()
    storage = tmp_path / "queue"
    storage.mkdir()
    config = _config(grpc_port, down_sink.grpc_port, storage)
    first = CollectorProcess(config, tmp_path).start()
    first.wait_ready()
    sent = send_spans("grpc", grpc_port, 25)
    first.kill()  # kill -9 during the outage, with everything still queued
    assert len(sent) == 50

    second = CollectorProcess(config, tmp_path).start()
    try:
        second.wait_ready()
        down_sink.start_in_thread()
        down_sink.wait_for_items_blocking(50, Signal.TRACES, timeout=30)
        got = [s.span_id for r in down_sink.requests for s in r.message.resource_spans[0].scope_spans[0].spans]
        want = {s.get_span_context().span_id.to_bytes(8, "big") for s in sent}  # type: ignore[union-attr]
        assert set(got) == want
        # nothing was ever exported before the kill, so nothing arrives twice either
        assert len(got) == len(want)
    finally:
        assert second.stop() == 0, second.output()
