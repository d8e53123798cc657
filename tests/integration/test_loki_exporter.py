"""The loki exporter against the strict test Loki server, and the whole way from the
OpenTelemetry SDK through AppGuard's otlp receiver to Loki."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.config import parse_config
from collector.pdata import Payload, Signal
from collector.service import Service
from collector.telemetry import Telemetry
from exporters.loki import LokiExporter, LokiExporterConfig
from tests.support.loki_server import LokiServer
from tests.support.net import free_port
from tests.unit.test_exporterhelper import FAST_RETRY
from tests.unit.test_loki_convert import SPAN, TRACE, logs

LOGS = frozenset({Signal.LOGS})
NAME = "loki"


def exporter(loki: LokiServer, telemetry: Telemetry, **raw: Any) -> LokiExporter:
    cfg = {"endpoint": loki.push_url, "retry_on_failure": FAST_RETRY, **raw}
    settings = CreateSettings(ComponentID(NAME), Kind.EXPORTER, telemetry, logging.getLogger("appguard.test.loki"))
    return LokiExporter(settings, LokiExporterConfig.model_validate(cfg), LOGS)


def metric(telemetry: Telemetry, name: str) -> float:
    return telemetry.registry.get_sample_value(name, {"exporter": NAME}) or 0.0


def payload(records: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> Payload:
    now = time.time_ns()
    for r in records:
        r.setdefault("time", now)
    return Payload.from_bytes(Signal.LOGS, logs(records, resource).SerializeToString())


@pytest.fixture
async def loki() -> AsyncIterator[LokiServer]:
    async with LokiServer() as server:
        yield server
    assert not server.errors, server.errors


async def test_delivers_labels_lines_and_metadata(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel, tenant="shop-team")
    await exp.start(Host())
    records = [
        {"body": "paid", "severity": 9, "severity_text": "INFO", "trace_id": TRACE, "span_id": SPAN, "attrs": {"order.id": 42}},
        {"body": "declined", "severity": 17, "severity_text": "ERROR", "attrs": {"order.id": 43}},
    ]
    await exp.consume(payload(records, {"service.name": "checkout", "service.namespace": "shop", "host.name": "web-1"}))
    await loki.wait_for_entries(2)
    await exp.shutdown()
    [push] = loki.pushes
    assert push.tenant == "shop-team"
    assert (push.content_type, push.content_encoding) == ("application/x-protobuf", "")
    assert push.headers["user-agent"].startswith("AppGuard/")
    streams = {s.labels["level"]: s for s in push.streams}
    assert streams["INFO"].labels == {"exporter": "OTLP", "job": "shop/checkout", "level": "INFO"}
    [paid] = streams["INFO"].entries
    assert json.loads(paid.line) == {
        "body": "paid", "traceid": TRACE.hex(), "spanid": SPAN.hex(), "severity": "INFO", "attributes": {"order.id": 42},
        "resources": {"service.name": "checkout", "service.namespace": "shop", "host.name": "web-1"},
        "instrumentation_scope": {"name": "shop.orders", "version": "1.2"},
    }
    assert paid.structured_metadata == {"trace_id": TRACE.hex(), "span_id": SPAN.hex(), "order_id": "42"}
    assert streams["ERROR"].entries[0].structured_metadata == {"order_id": "43"}
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 2


async def test_one_push_per_tenant_with_its_header(loki: LokiServer) -> None:
    exp = exporter(loki, Telemetry(), headers={"X-Scope-OrgID": "fallback"})
    await exp.start(Host())
    req = logs([{"body": "r", "time": time.time_ns()}], {"service.name": "a", "loki.tenant": "team", "team": "red"})
    logs([{"body": "b", "time": time.time_ns()}], {"service.name": "b", "loki.tenant": "team", "team": "blue"}, request=req)
    logs([{"body": "none", "time": time.time_ns()}], {"service.name": "c"}, request=req)
    await exp.consume(Payload.from_message(Signal.LOGS, req))
    await loki.wait_for_entries(3)
    await exp.shutdown()
    assert sorted((p.tenant, [e.line[:14] for s in p.streams for e in s.entries]) for p in loki.pushes) == [
        ("blue", ['{"body":"b","r']), ("fallback", ['{"body":"none"']), ("red", ['{"body":"r","r'])
    ]


async def test_compression_gzip_wraps_the_snappy_block(loki: LokiServer) -> None:
    exp = exporter(loki, Telemetry(), compression="gzip")
    await exp.start(Host())
    await exp.consume(payload([{"body": "zipped"}]))
    await loki.wait_for_entries(1)
    await exp.shutdown()
    assert loki.pushes[0].content_encoding == "gzip"


async def test_429_is_retried_after_retry_after(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel)
    await exp.start(Host())
    loki.fail_next(1, status=429, retry_after=1, message="Ingestion rate limit exceeded for user fake")
    started = time.monotonic()
    await exp.consume(payload([{"body": "once"}]))
    await loki.wait_for_entries(1)
    await exp.shutdown()
    # The backoff alone would have retried after ~10ms: the server's Retry-After was honoured.
    assert loki.pushes[0].received_at - started >= 0.9
    assert loki.answered_failures == 1
    assert [e.line[:15] for _, e in loki.entries()] == ['{"body":"once",']
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 1
    assert metric(tel, "otelcol_exporter_send_failed_log_records_total") == 0


async def test_500_is_retried_and_delivered_once(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel)
    await exp.start(Host())
    loki.fail_next(2, status=500)
    await exp.consume(payload([{"body": "a"}, {"body": "b"}]))
    await loki.wait_for_entries(2)
    await exp.shutdown()
    assert loki.answered_failures == 2
    assert len(loki.pushes) == 1 and loki.entry_count() == 2
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 2


async def test_400_is_permanent_counted_and_logged_with_lokis_message(loki: LokiServer, caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel)
    await exp.start(Host())
    week_ago = time.time_ns() - 8 * 24 * 3600 * 1_000_000_000
    with caplog.at_level(logging.ERROR, logger="appguard.test.loki"):
        await exp.consume(payload([{"body": "old", "time": week_ago}, {"body": "older", "time": week_ago - 1}]))
        for _ in range(500):
            if metric(tel, "otelcol_exporter_send_failed_log_records_total"):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    await exp.shutdown()
    assert metric(tel, "otelcol_exporter_send_failed_log_records_total") == 2
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 0
    # Sent once, never retried.
    assert len(loki.refused) == 1 and loki.pushes == []
    [record] = [r for r in caplog.records if "Exporting failed" in r.getMessage()]
    assert "HTTP 400" in record.getMessage()
    assert "has timestamp too old" in record.getMessage()
    assert "not retryable" in record.getMessage()


async def test_scripted_400_is_not_retried(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel, sending_queue={"wait_for_result": True})
    await exp.start(Host())
    loki.fail_next(1, status=400, message="stream '{job=\"x\"}' has duplicate label name: 'job'")
    with pytest.raises(Exception, match="duplicate label name"):
        await exp.consume(payload([{"body": "x"}]))
    await exp.shutdown()
    assert loki.answered_failures == 1 and loki.pushes == []
    assert metric(tel, "otelcol_exporter_send_failed_log_records_total") == 1


async def test_retry_resends_only_the_tenants_not_delivered(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel)
    await exp.start(Host())
    loki.fail_next(2, status=503, tenant="blue")
    req = logs([{"body": "r", "time": time.time_ns()}], {"service.name": "a", "loki.tenant": "team", "team": "red"})
    logs([{"body": "b", "time": time.time_ns()}], {"service.name": "b", "loki.tenant": "team", "team": "blue"}, request=req)
    await exp.consume(Payload.from_message(Signal.LOGS, req))
    await loki.wait_for_entries(2)
    await exp.shutdown()
    assert sorted(p.tenant for p in loki.pushes if p.tenant) == ["blue", "red"]
    assert loki.answered_failures == 2
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 2


async def test_a_tenant_refused_for_good_is_not_forgotten_by_the_retry(loki: LokiServer) -> None:
    tel = Telemetry()
    exp = exporter(loki, tel, sending_queue={"wait_for_result": True})
    await exp.start(Host())
    loki.fail_next(1, status=400, message="refused for red", tenant="red")
    loki.fail_next(1, status=503, tenant="blue")
    req = logs([{"body": "r", "time": time.time_ns()}], {"service.name": "a", "loki.tenant": "team", "team": "red"})
    logs([{"body": "b", "time": time.time_ns()}], {"service.name": "b", "loki.tenant": "team", "team": "blue"}, request=req)
    with pytest.raises(Exception, match="refused for red"):
        await exp.consume(Payload.from_message(Signal.LOGS, req))
    await exp.shutdown()
    # Blue got through on the retry; red was tried once; the request counts as failed.
    assert [p.tenant for p in loki.pushes] == ["blue"]
    assert loki.answered_failures == 2
    assert metric(tel, "otelcol_exporter_send_failed_log_records_total") == 2


async def test_unreachable_loki_is_retried_until_it_answers() -> None:
    port = free_port()
    loki = LokiServer(port=port)
    tel = Telemetry()
    exp = exporter(loki, tel, endpoint=f"http://127.0.0.1:{port}/loki/api/v1/push")
    await exp.start(Host())
    await exp.consume(payload([{"body": "patient"}]))
    await asyncio.sleep(0.2)
    async with loki:
        await loki.wait_for_entries(1)
    await exp.shutdown()
    assert metric(tel, "otelcol_exporter_sent_log_records_total") == 1


# ---- the whole way: SDK -> otlp receiver -> loki exporter -> Loki


async def test_sdk_logs_through_appguard_to_loki(loki: LokiServer) -> None:
    http_port, metrics_port = free_port(), free_port()
    config = yaml.safe_load(
        f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  batch:
    timeout: 50ms
exporters:
  loki:
    endpoint: {loki.push_url}
    tenant: shop
    labels:
      resource:
        deployment.environment.name: env
service:
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
  pipelines:
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [loki]
"""
    )
    service = Service(parse_config(config))
    await service.start()
    try:
        memory = InMemoryLogRecordExporter()

        def emit() -> None:
            resource = Resource.create({"service.name": "checkout", "service.namespace": "shop", "deployment.environment.name": "test"})
            provider = LoggerProvider(resource=resource)
            provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/logs", timeout=10)))
            provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
            tracer = TracerProvider().get_tracer("shop")
            log = logging.getLogger("shop.checkout.sdk-test")
            log.propagate = False
            log.setLevel(logging.INFO)
            handler = LoggingHandler(logger_provider=provider)
            log.addHandler(handler)
            try:
                with tracer.start_as_current_span("checkout"):
                    log.warning("cart %s is almost empty", "c-1", extra={"cart.items": 1})
                    log.error("payment for order %d declined", 42, extra={"order.id": 42})
                log.info("no span here")
            finally:
                log.removeHandler(handler)
                provider.shutdown()

        await asyncio.to_thread(emit)
        await loki.wait_for_entries(3)
    finally:
        await service.shutdown()

    finished = memory.get_finished_logs()
    sent = {r.log_record.body: r.log_record for r in finished}
    # Recent SDKs give every resource a service.instance.id: the `instance` label.
    instance = finished[0].resource.attributes.get("service.instance.id")
    expected_labels = {"exporter": "OTLP", "job": "shop/checkout", "env": "test"} | ({"instance": instance} if instance else {})
    got = {json.loads(e.line)["body"]: (labels, e) for labels, e in loki.entries(tenant="shop")}
    assert set(got) == set(sent) == {"cart c-1 is almost empty", "payment for order 42 declined", "no span here"}
    for body, record in sent.items():
        labels, entry = got[body]
        assert labels == expected_labels | {"level": record.severity_text}
        assert entry.timestamp_ns == record.timestamp
        line = json.loads(entry.line)
        assert line["resources"]["service.name"] == "checkout"
        assert "deployment.environment.name" not in line["resources"]
        if record.trace_id:
            assert entry.structured_metadata["trace_id"] == f"{record.trace_id:032x}"
            assert entry.structured_metadata["span_id"] == f"{record.span_id:016x}"
            assert line["traceid"] == f"{record.trace_id:032x}"
        else:
            assert "trace_id" not in entry.structured_metadata
    assert got["payment for order 42 declined"][1].structured_metadata["order_id"] == "42"
    assert json.loads(got["cart c-1 is almost empty"][1].line)["attributes"]["cart.items"] == 1
    assert service.telemetry.registry.get_sample_value("otelcol_exporter_sent_log_records_total", {"exporter": "loki"}) == 3
