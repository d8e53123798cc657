"""End to end: the real CLI as a subprocess, the real OpenTelemetry SDK as the client.

Every span, log record and data point sent over gRPC, HTTP/protobuf and HTTP/JSON arrives
unchanged at an OTLP server standing in for Tempo and in the ``file`` exporter's output.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan

from collector import otlpjson
from collector.pdata import Signal
from tests.e2e.sdk import send_logs, send_metrics, send_spans
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink
from tests.support.process import CollectorProcess

pytestmark = pytest.mark.e2e


def _config(grpc_port: int, http_port: int, sink: OTLPSink, out: Path) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
exporters:
  otlp/tempo:
    endpoint: {sink.grpc_endpoint}
    tls:
      insecure: true
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 1s
  file:
    path: {out}
    flush_interval: 100ms
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp/tempo, file]
    metrics:
      receivers: [otlp]
      exporters: [otlp/tempo, file]
    logs:
      receivers: [otlp]
      exporters: [otlp/tempo, file]
"""


@pytest.fixture
def sink() -> Iterator[OTLPSink]:
    s = OTLPSink()
    s.start_in_thread()
    yield s
    s.stop_in_thread()


@pytest.fixture
def collector(tmp_path: Path, sink: OTLPSink) -> Iterator[CollectorProcess]:
    grpc_port, http_port = free_port(), free_port()
    proc = CollectorProcess(_config(grpc_port, http_port, sink, tmp_path / "out.jsonl"), tmp_path).start()
    proc.grpc_port, proc.http_port, proc.out = grpc_port, http_port, tmp_path / "out.jsonl"  # type: ignore[attr-defined]
    try:
        proc.wait_ready()
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, proc.output()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def _arrived_spans(messages: list[Any]) -> dict[tuple[bytes, bytes], Any]:
    out = {}
    for msg in messages:
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out[(span.trace_id, span.span_id)] = (rs, ss, span)
    return out


def _check_spans_unchanged(sent: list[ReadableSpan], messages: list[Any]) -> None:
    arrived = _arrived_spans(messages)
    assert len(arrived) == len(sent)
    for s in sent:
        ctx = s.get_span_context()
        assert ctx is not None
        rs, ss, span = arrived[(ctx.trace_id.to_bytes(16, "big"), ctx.span_id.to_bytes(8, "big"))]
        assert span.name == s.name
        assert span.start_time_unix_nano == s.start_time and span.end_time_unix_nano == s.end_time
        assert span.parent_span_id == (s.parent.span_id.to_bytes(8, "big") if s.parent else b"")
        assert {kv.key: _value(kv.value) for kv in span.attributes} == dict(s.attributes or {})
        assert [e.name for e in span.events] == [e.name for e in s.events]
        for got, want in zip(span.events, s.events, strict=True):
            assert {kv.key: _value(kv.value) for kv in got.attributes} == dict(want.attributes or {})
        assert span.status.code == s.status.status_code.value
        assert ss.scope.name == "e2e.tests" and ss.scope.version == "1.0"
        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
        assert res == dict(s.resource.attributes)


def _file_messages(path: Path, signal: Signal) -> list[Any]:
    out = []
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        key = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}[signal.value]
        if key in obj:
            out.append(otlpjson.parse_request(signal, line))
    return out


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_spans_arrive_unchanged(collector: CollectorProcess, sink: OTLPSink, transport: str) -> None:
    port = collector.grpc_port if transport == "grpc" else collector.http_port  # type: ignore[attr-defined]
    sent = send_spans(transport, port, 30, tag=transport)  # type: ignore[arg-type]
    assert len(sent) == 60
    sink.wait_for_items_blocking(60, Signal.TRACES, timeout=20)
    traces = [r for r in sink.requests if r.signal is Signal.TRACES]
    _check_spans_unchanged(sent, [r.message for r in traces])
    # Each span went out in a request of its own (SimpleSpanProcessor); the exporter forwarded
    # the very bytes the SDK's encoder made, each request once.
    sdk_bytes = sorted(encode_spans([s]).SerializeToString() for s in sent)
    assert sorted(r.raw for r in traces) == sdk_bytes
    collector.stop()
    _check_spans_unchanged(sent, _file_messages(collector.out, Signal.TRACES))  # type: ignore[attr-defined]
    metrics = collector.output()
    assert "Starting GRPC server" in metrics or "grpc" in metrics.lower()


def test_metrics_and_logs_arrive_over_both_transports(collector: CollectorProcess, sink: OTLPSink) -> None:
    for transport, port in (("grpc", collector.grpc_port), ("http", collector.http_port)):  # type: ignore[attr-defined]
        send_metrics(transport, port, service=f"metrics-{transport}")  # type: ignore[arg-type]
        send_logs(transport, port, 25, service=f"logs-{transport}")  # type: ignore[arg-type]
    sink.wait_for_items_blocking(50, Signal.LOGS, timeout=20)
    sink.wait_for_items_blocking(1, Signal.METRICS, timeout=20)
    logs = [r.message for r in sink.requests if r.signal is Signal.LOGS]
    bodies = sorted(
        ({kv.key: kv.value.string_value for kv in rl.resource.attributes}["service.name"], rec.body.string_value)
        for m in logs for rl in m.resource_logs for sl in rl.scope_logs for rec in sl.log_records
    )
    want = sorted((f"logs-{t}", f"log line {i} via {t}") for t in ("grpc", "http") for i in range(25))
    assert bodies == want
    metrics = [r.message for r in sink.requests if r.signal is Signal.METRICS]
    by_service: dict[str, dict[str, Any]] = {}
    for m in metrics:
        for rm in m.resource_metrics:
            svc = {kv.key: kv.value.string_value for kv in rm.resource.attributes}["service.name"]
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    by_service.setdefault(svc, {})[metric.name] = metric
    for t in ("grpc", "http"):
        got = by_service[f"metrics-{t}"]
        assert set(got) == {"orders", "queue.depth", "latency", "temperature"}
        orders = {dp.attributes[0].value.string_value: dp.as_int for dp in got["orders"].sum.data_points}
        assert orders == {"us": 1 + 3 + 5 + 7 + 9, "eu": 2 + 4 + 6 + 8 + 10}
        assert got["orders"].sum.is_monotonic
        assert got["latency"].histogram.data_points[0].count == 10
        assert got["latency"].histogram.data_points[0].sum == pytest.approx(sum(i * 12.5 for i in range(10)))
        assert got["temperature"].gauge.data_points[0].as_double == 21.5
    collector.stop()
    file_logs = _file_messages(collector.out, Signal.LOGS)  # type: ignore[attr-defined]
    assert sum(len(sl.log_records) for m in file_logs for rl in m.resource_logs for sl in rl.scope_logs) == 50
    assert len(_file_messages(collector.out, Signal.METRICS)) == len(metrics)  # type: ignore[attr-defined]


def _post(port: int, path: str, body: bytes, content_type: str, method: str = "POST") -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def test_otlp_json_with_hex_ids_string_ints_and_both_key_styles(collector: CollectorProcess, sink: OTLPSink) -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
                "scope_spans": [
                    {
                        "scope": {"name": "hand-written"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "span_id": "eee19b7ec3c1b174",
                                "name": "checkout",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": "1700000000000000000",
                                "end_time_unix_nano": 1700000000500000000,
                                "attributes": [{"key": "http.response.status_code", "value": {"intValue": "500"}}],
                                "status": {"code": 2, "message": "boom"},
                                "someFutureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, resp, headers = _post(collector.http_port, "/v1/traces", json.dumps(body).encode(), "application/json")  # type: ignore[attr-defined]
    assert status == 200, resp
    assert headers["Content-Type"].startswith("application/json")
    sink.wait_for_items_blocking(1, Signal.TRACES, timeout=20)
    span = sink.requests[-1].message.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert span.span_id.hex() == "eee19b7ec3c1b174"
    assert span.kind == 2 and span.end_time_unix_nano == 1700000000500000000
    assert span.attributes[0].value.int_value == 500 and span.status.message == "boom"


def test_bad_input_is_refused_and_the_server_goes_on(collector: CollectorProcess, sink: OTLPSink) -> None:
    port = collector.http_port  # type: ignore[attr-defined]
    cases = [
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", 400),
        (b"{not json", "application/json", 400),
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abcd","spanId":"eee19b7ec3c1b174"}]}]}]}', "application/json", 400),
        (b"\xff\xfe\xfa", "application/json", 400),
        (b"hello", "text/plain", 415),
    ]
    for body, ctype, want in cases:
        status, resp, _ = _post(port, "/v1/traces", body, ctype)
        assert status == want, (body, resp)
    status, _, headers = _post(port, "/v1/traces", b"", "application/x-protobuf", method="GET")
    assert status == 405 and "POST" in headers.get("Allow", "")
    sent = send_spans("http", port, 3)
    sink.wait_for_items_blocking(6, Signal.TRACES, timeout=20)
    _check_spans_unchanged(sent, [r.message for r in sink.requests if r.signal is Signal.TRACES])
    # the sink records a request before it answers, so the exporter may count it a moment later
    counted = (
        'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 6.0',
        'otelcol_exporter_sent_spans_total{exporter="otlp/tempo"} 6.0',
    )
    deadline = time.monotonic() + 10
    while not all(w in (text := collector.metrics_text()) for w in counted) and time.monotonic() < deadline:
        time.sleep(0.05)
    for w in counted:
        assert w in text
