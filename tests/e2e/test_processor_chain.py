"""The processor chain end to end: the real OpenTelemetry SDK -> AppGuard running
memory_limiter, resource, attributes, filter, a python scrubber and batch -> an OTLP server.
Checks exactly which spans and logs arrive, and with what attributes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.pdata import Signal
from tests.e2e.sdk import send_logs, send_spans
from tests.support.net import free_port
from tests.support.otlp_sink import OTLPSink
from tests.support.process import CollectorProcess

pytestmark = pytest.mark.e2e

SCRUBBER = '''
import re

EMAIL = re.compile(r"[\\w.+-]+@[\\w-]+\\.[\\w.]+")


def scrub_pii(item, resource, scope, *, config):
    for kv in list(item.attributes):
        if kv.key in config["drop"]:
            item.attributes.remove(kv)
        elif kv.value.HasField("string_value"):
            kv.value.string_value = EMAIL.sub("<email>", kv.value.string_value)
'''


def _config(grpc_port: int, http_port: int, sink: OTLPSink) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: 2000
  resource:
    attributes:
      - key: deployment.environment.name
        value: e2e
        action: upsert
      - key: cloud.region
        value: eu-west-1
        action: insert
  attributes/hash:
    actions:
      - key: db.statement
        action: hash
  filter:
    error_mode: ignore
    traces:
      span:
        - 'name == "db query" and resource.attributes["service.name"] == "noisy"'
        - 'IsMatch(name, "^request noise")'
    logs:
      log_record:
        - 'severity_number < SEVERITY_NUMBER_WARN'
  python/scrub:
    function: chain_scrub:scrub_pii
    per: item
    config:
      drop: [ratio]
  batch:
    timeout: 100ms
exporters:
  otlp:
    endpoint: {sink.grpc_endpoint}
    tls:
      insecure: true
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, resource, attributes/hash, filter, python/scrub, batch]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [memory_limiter, resource, filter, python/scrub, batch]
      exporters: [otlp]
"""


@pytest.fixture
def sink() -> Iterator[OTLPSink]:
    s = OTLPSink()
    s.start_in_thread()
    yield s
    s.stop_in_thread()


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def test_chain_changes_and_drops_exactly_what_it_says(tmp_path: Path, sink: OTLPSink) -> None:
    (tmp_path / "chain_scrub.py").write_text(SCRUBBER)
    grpc_port, http_port = free_port(), free_port()
    proc = CollectorProcess(_config(grpc_port, http_port, sink), tmp_path).start()
    try:
        proc.wait_ready()
        shop = send_spans("grpc", grpc_port, 6, service="shop", tag="mail bob@example.com ")
        noisy = send_spans("http", http_port, 4, service="noisy")
        noise = send_spans("grpc", grpc_port, 3, service="shop", tag="noise ")
        assert len(shop) == 12 and len(noisy) == 8 and len(noise) == 6
        # shop: 12 spans kept; noisy: its 4 "db query" spans dropped, 4 requests kept;
        # the "noise" requests: their "request noise..." parents dropped, db queries kept.
        expected = 12 + 4 + 3
        sink.wait_for_items_blocking(expected, Signal.TRACES, timeout=30)
        send_logs("grpc", grpc_port, 4, service="shop", level=logging.INFO)  # below WARN: dropped
        send_logs("grpc", grpc_port, 5, service="shop")  # WARNING records: kept
        sink.wait_for_items_blocking(5, Signal.LOGS, timeout=30)
    finally:
        assert proc.stop() == 0, proc.output()

    spans: list[tuple[dict[str, Any], Any]] = []
    for r in sink.requests:
        if r.signal is not Signal.TRACES:
            continue
        for rs in r.message.resource_spans:
            res = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                spans.extend((res, s) for s in ss.spans)
    assert len(spans) == expected  # nothing more arrived after the wait either
    names = sorted((res["service.name"], s.name.split(" ")[0]) for res, s in spans)
    assert names.count(("noisy", "db")) == 0 and names.count(("noisy", "request")) == 4
    assert not any(s.name.startswith("request noise") for _, s in spans)
    shop_queries = [s for res, s in spans if res["service.name"] == "shop" and s.name == "db query"]
    assert len(shop_queries) == 6 + 3
    for res, span in spans:
        assert res["deployment.environment.name"] == "e2e" and res["cloud.region"] == "eu-west-1"
        attrs = _attrs(span.attributes)
        assert "ratio" not in attrs  # dropped by the python scrubber
        if span.name == "db query":
            statement = attrs["db.statement"]
            assert len(statement) == 64 and all(c in "0123456789abcdef" for c in statement)  # SHA-256 hex
        if "tag" in attrs:
            assert "bob@example.com" not in attrs["tag"]
            if attrs["tag"].startswith("mail"):
                assert attrs["tag"] == "mail <email> "
    logs = [
        (_attrs(rl.resource.attributes), rec)
        for r in sink.requests if r.signal is Signal.LOGS
        for rl in r.message.resource_logs for sl in rl.scope_logs for rec in sl.log_records
    ]
    assert len(logs) == 5
    assert all(rec.severity_number >= 13 for _, rec in logs)  # SEVERITY_NUMBER_WARN and above only
    assert all(res["deployment.environment.name"] == "e2e" for res, _ in logs)
