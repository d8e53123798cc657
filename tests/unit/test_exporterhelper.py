"""The exporterhelper: config, backoff, error classification, queue, retries, batching, shutdown.

The exporter under test is a small real subclass whose ``push`` plays the backend: it
records what it got, fails as scripted, or holds requests until released.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import ValidationError

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.config import format_validation_error
from collector.consumer import PermanentError, RetryableError
from collector.exporterhelper import (
    Backoff,
    ExporterBase,
    ExportError,
    ExporterSettings,
    grpc_status_retryable,
    http_status_retryable,
    merge_payloads,
    parse_retry_after,
    split_payload,
)
from collector.pdata import Payload, Signal, count_items
from collector.telemetry import Telemetry

FAST_RETRY = {"initial_interval": "10ms", "max_interval": "50ms", "max_elapsed_time": "5s"}


def traces(spans: int, *, resources: int = 1, service: str = "svc") -> Payload:
    """A traces payload parsed from bytes (so it carries them), ``spans`` per resource."""
    req = ExportTraceServiceRequest()
    for r in range(resources):
        rs = req.resource_spans.add()
        rs.resource.attributes.add(key="service.name").value.string_value = f"{service}-{r}"
        ss = rs.scope_spans.add()
        ss.scope.name = "lib"
        for i in range(spans):
            span = ss.spans.add()
            span.trace_id = os.urandom(16)
            span.span_id = os.urandom(8)
            span.name = f"{service}-{r}-{i}"
    return Payload.from_bytes(Signal.TRACES, req.SerializeToString())


def span_names(payloads: list[Payload]) -> list[str]:
    return [
        span.name
        for p in payloads
        for rs in p.message.resource_spans  # type: ignore[union-attr]
        for ss in rs.scope_spans
        for span in ss.spans
    ]


class ScriptedExporter(ExporterBase):
    """Plays the backend: fails with the scripted errors first, then records the payloads."""

    def __init__(self, settings: CreateSettings, config: ExporterSettings, signals: frozenset[Signal]) -> None:
        super().__init__(settings, config, signals)
        self.delivered: list[Payload] = []
        self.script: list[ExportError] = []
        self.attempt_times: list[float] = []
        self.gate: asyncio.Event | None = None

    async def push(self, payload: Payload) -> None:
        self.attempt_times.append(asyncio.get_running_loop().time())
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            raise self.script.pop(0)
        self.delivered.append(payload)


def settings(telemetry: Telemetry, name: str = "test") -> CreateSettings:
    return CreateSettings(ComponentID("otlp", name), Kind.EXPORTER, telemetry, logging.getLogger(f"appguard.test.{name}"))


def make(telemetry: Telemetry, raw: dict[str, Any] | None = None, signals: frozenset[Signal] = frozenset({Signal.TRACES})) -> ScriptedExporter:
    raw = dict(raw or {})
    raw.setdefault("retry_on_failure", FAST_RETRY)
    return ScriptedExporter(settings(telemetry), ExporterSettings.model_validate(raw), signals)


def metric(telemetry: Telemetry, name: str, **labels: str) -> float:
    return telemetry.registry.get_sample_value(name, {"exporter": "otlp/test", **labels}) or 0.0


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


# ---- config


def test_defaults_match_the_stock_exporterhelper() -> None:
    cfg = ExporterSettings.model_validate({})
    assert cfg.timeout == 5.0
    r = cfg.retry_on_failure
    assert (r.enabled, r.initial_interval, r.max_interval, r.max_elapsed_time) == (True, 5.0, 30.0, 300.0)
    assert (r.multiplier, r.randomization_factor) == (1.5, 0.5)
    q = cfg.sending_queue
    assert (q.enabled, q.num_consumers, q.queue_size, q.sizer) == (True, 10, 1000, "requests")
    assert (q.block_on_overflow, q.wait_for_result, q.storage, q.batch) == (False, False, None, None)


def test_empty_sections_mean_defaults_and_batch_takes_its_defaults() -> None:
    cfg = ExporterSettings.model_validate({"sending_queue": None, "retry_on_failure": None})
    assert cfg.sending_queue.queue_size == 1000
    cfg = ExporterSettings.model_validate({"sending_queue": {"batch": None}})
    assert cfg.sending_queue.batch is not None
    assert (cfg.sending_queue.batch.flush_timeout, cfg.sending_queue.batch.min_size) == (0.2, 8192)


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"sending_queue": {"storage": "file_storage", "wait_for_result": True}}, "x.sending_queue", "wait_for_result"),
        ({"sending_queue": {"sizer": "requests", "batch": {}}}, "x.sending_queue", "items or bytes"),
        ({"sending_queue": {"batch": {"min_size": 10, "max_size": 5}}}, "x.sending_queue", "max_size"),
        ({"sending_queue": {"sizer": "items", "queue_size": 100, "batch": {"min_size": 200}}}, "x.sending_queue", "queue_size"),
        ({"sending_queue": {"storage": "not a/valid/id"}}, "x.sending_queue.storage", "invalid"),
        ({"retry_on_failure": {"initial_interval": "10s", "max_elapsed_time": "5s"}}, "x.retry_on_failure", "initial_interval"),
        ({"retry_on_failure": {"randomization_factor": 2}}, "x.retry_on_failure.randomization_factor", ""),
        ({"sending_queue": {"queue_size": 0}}, "x.sending_queue.queue_size", ""),
        ({"timeout": "soon"}, "x.timeout", "duration"),
        ({"sending_queue": {"unknown": 1}}, "x.sending_queue.unknown", "unknown key"),
    ],
)
def test_invalid_configs_name_the_yaml_path(raw: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ExporterSettings.model_validate(raw)
    errors = format_validation_error("x", info.value)
    assert any(p == path and fragment in m for p, m in errors), errors


def test_batch_sizer_follows_the_queue_sizer_when_set() -> None:
    from collector.exporterhelper import batch_sizer

    assert batch_sizer(ExporterSettings.model_validate({"sending_queue": {"batch": {}}}).sending_queue) == "items"
    q = ExporterSettings.model_validate({"sending_queue": {"sizer": "bytes", "queue_size": 10_000_000, "batch": {}}}).sending_queue
    assert batch_sizer(q) == "bytes"


# ---- classification and backoff


def test_grpc_codes_retryable_per_the_otlp_spec() -> None:
    retryable = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        assert grpc_status_retryable(code) == (code.name in retryable), code
    assert grpc_status_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, has_retry_info=True)
    assert not grpc_status_retryable(grpc.StatusCode.RESOURCE_EXHAUSTED, has_retry_info=False)


def test_http_statuses_retryable_per_the_otlp_spec() -> None:
    assert {s for s in range(400, 600) if http_status_retryable(s)} == {429, 502, 503, 504}


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    when = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    assert when == 0.0  # a date in the past: no wait
    import email.utils
    import time

    future = email.utils.formatdate(time.time() + 60, usegmt=True)
    delay = parse_retry_after(future)
    assert delay is not None and 50 < delay <= 60


def test_backoff_grows_by_the_multiplier_up_to_max_interval() -> None:
    cfg = ExporterSettings.model_validate({}).retry_on_failure
    middle = Backoff(cfg, rand=lambda: 0.5)
    assert [round(middle.next(), 4) for _ in range(7)] == [5.0, 7.5, 11.25, 16.875, 25.3125, 30.0, 30.0]
    low, high = Backoff(cfg, rand=lambda: 0.0), Backoff(cfg, rand=lambda: 1.0)
    assert (low.next(), high.next()) == (2.5, 7.5)


# ---- retries


async def test_retryable_failures_are_retried_then_delivered_once() -> None:
    tel = Telemetry()
    exp = make(tel)
    exp.script = [ExportError("down", retryable=True) for _ in range(3)]
    await exp.start(Host())
    payload = traces(4)
    await exp.consume(payload)
    await until(lambda: exp.delivered)
    await exp.shutdown()
    assert exp.delivered == [payload]
    assert len(exp.attempt_times) == 4
    assert metric(tel, "otelcol_exporter_sent_spans_total") == 4
    assert metric(tel, "otelcol_exporter_send_failed_spans_total") == 0


async def test_server_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    exp = make(Telemetry())
    exp.script = [ExportError("throttled", retryable=True, retry_after=0.3)]
    await exp.start(Host())
    await exp.consume(traces(1))
    await until(lambda: exp.delivered)
    await exp.shutdown()
    first, second = exp.attempt_times
    assert second - first >= 0.3


async def test_permanent_error_is_not_retried_and_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    exp = make(tel)
    exp.script = [ExportError("bad request", retryable=False)]
    await exp.start(Host())
    with caplog.at_level(logging.ERROR, logger="appguard.test"):
        await exp.consume(traces(5))
        await until(lambda: metric(tel, "otelcol_exporter_send_failed_spans_total") == 5)
    await exp.shutdown()
    assert len(exp.attempt_times) == 1
    assert exp.delivered == []
    dropped = tel.registry.get_sample_value(
        "appguard_dropped_items_total", {"component": "exporter/otlp/test", "otel_signal": "traces", "reason": "permanent_error"}
    )
    assert dropped == 5
    assert any("Dropping data" in r.getMessage() and "5 spans" in r.getMessage() for r in caplog.records)


async def test_retries_stop_at_max_elapsed_time(caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    exp = make(tel, {"retry_on_failure": {"initial_interval": "20ms", "max_interval": "20ms", "max_elapsed_time": "150ms"}})
    exp.script = [ExportError("down", retryable=True) for _ in range(1000)]
    await exp.start(Host())
    with caplog.at_level(logging.ERROR, logger="appguard.test"):
        await exp.consume(traces(2))
        await until(lambda: metric(tel, "otelcol_exporter_send_failed_spans_total") == 2)
    await exp.shutdown()
    assert 2 <= len(exp.attempt_times) < 1000
    assert any("no more retries left" in r.getMessage() and "2 spans" in r.getMessage() for r in caplog.records)


async def test_retry_disabled_gives_up_after_one_attempt() -> None:
    tel = Telemetry()
    exp = make(tel, {"retry_on_failure": {"enabled": False}})
    exp.script = [ExportError("down", retryable=True)]
    await exp.start(Host())
    await exp.consume(traces(1))
    await until(lambda: metric(tel, "otelcol_exporter_send_failed_spans_total") == 1)
    await exp.shutdown()
    assert len(exp.attempt_times) == 1


async def test_an_attempt_longer_than_timeout_is_retried() -> None:
    exp = make(Telemetry(), {"timeout": "50ms"})
    exp.gate = asyncio.Event()
    await exp.start(Host())
    await exp.consume(traces(1))
    await until(lambda: len(exp.attempt_times) >= 2)
    exp.gate.set()
    await until(lambda: exp.delivered)
    await exp.shutdown()
    assert len(exp.delivered) == 1


# ---- the queue


async def test_full_queue_refuses_with_a_throttling_error_and_counts_it() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"queue_size": 2, "num_consumers": 1}})
    exp.gate = asyncio.Event()
    await exp.start(Host())
    for _ in range(2):
        await exp.consume(traces(3))
    with pytest.raises(RetryableError) as info:
        await exp.consume(traces(3))
    assert info.value.throttled
    assert metric(tel, "otelcol_exporter_enqueue_failed_spans_total") == 3
    assert tel.registry.get_sample_value("otelcol_exporter_queue_size", {"exporter": "otlp/test", "data_type": "traces"}) == 2
    assert tel.registry.get_sample_value("otelcol_exporter_queue_capacity", {"exporter": "otlp/test", "data_type": "traces"}) == 2
    exp.gate.set()
    await until(lambda: len(exp.delivered) == 2)
    await exp.shutdown()


async def test_items_sizer_refuses_a_request_larger_than_the_queue() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"sizer": "items", "queue_size": 5}})
    await exp.start(Host())
    with pytest.raises(PermanentError):
        await exp.consume(traces(6))
    await exp.consume(traces(5))
    await until(lambda: exp.delivered)
    await exp.shutdown()
    assert metric(tel, "otelcol_exporter_enqueue_failed_spans_total") == 6


async def test_block_on_overflow_waits_for_room() -> None:
    exp = make(Telemetry(), {"sending_queue": {"queue_size": 1, "num_consumers": 1, "block_on_overflow": True}})
    exp.gate = asyncio.Event()
    await exp.start(Host())
    await exp.consume(traces(1, service="a"))
    blocked = asyncio.create_task(exp.consume(traces(1, service="b")))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    exp.gate.set()
    await blocked
    await until(lambda: len(exp.delivered) == 2)
    await exp.shutdown()
    assert span_names(exp.delivered) == ["a-0-0", "b-0-0"]


async def test_wait_for_result_returns_the_exports_outcome() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"wait_for_result": True}})
    await exp.start(Host())
    await exp.consume(traces(1))
    assert len(exp.delivered) == 1  # returned only once exported
    exp.script = [ExportError("rejected", retryable=False)]
    with pytest.raises(PermanentError, match="rejected"):
        await exp.consume(traces(1))
    await exp.shutdown()
    # The client was told: nothing was dropped behind its back.
    assert tel.registry.get_sample_value(
        "appguard_dropped_items_total", {"component": "exporter/otlp/test", "otel_signal": "traces", "reason": "permanent_error"}
    ) is None
    assert metric(tel, "otelcol_exporter_send_failed_spans_total") == 1


async def test_queue_disabled_exports_synchronously_and_raises() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False}})
    await exp.start(Host())
    await exp.consume(traces(2))
    assert len(exp.delivered) == 1
    exp.script = [ExportError("unavailable", retryable=True, retry_after=3.0)]
    with pytest.raises(RetryableError) as info:
        await exp.consume(traces(2))
    assert info.value.retry_after == 3.0
    await exp.shutdown()
    assert metric(tel, "otelcol_exporter_sent_spans_total") == 2


async def test_num_consumers_export_concurrently() -> None:
    exp = make(Telemetry(), {"sending_queue": {"num_consumers": 3}})
    exp.gate = asyncio.Event()
    await exp.start(Host())
    for _ in range(5):
        await exp.consume(traces(1))
    await until(lambda: len(exp.attempt_times) == 3)
    await asyncio.sleep(0.05)
    assert len(exp.attempt_times) == 3  # the other two wait for a free consumer
    exp.gate.set()
    await until(lambda: len(exp.delivered) == 5)
    await exp.shutdown()


async def test_empty_requests_are_ignored() -> None:
    exp = make(Telemetry())
    await exp.start(Host())
    await exp.consume(Payload.from_message(Signal.TRACES, ExportTraceServiceRequest()))
    await exp.shutdown()
    assert exp.attempt_times == []


# ---- shutdown


async def test_shutdown_drains_the_memory_queue() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"num_consumers": 1}})
    exp.gate = asyncio.Event()
    await exp.start(Host())
    for _ in range(5):
        await exp.consume(traces(2))
    stopping = asyncio.create_task(exp.shutdown())
    await asyncio.sleep(0.02)
    with pytest.raises(RetryableError):
        await exp.consume(traces(1))
    exp.gate.set()
    await stopping
    assert len(exp.delivered) == 5
    assert metric(tel, "otelcol_exporter_sent_spans_total") == 10


async def test_shutdown_cut_short_counts_and_logs_what_is_lost(caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"num_consumers": 1}})
    exp.gate = asyncio.Event()  # never released: the backend hangs
    await exp.start(Host())
    for _ in range(3):
        await exp.consume(traces(2))
    with caplog.at_level(logging.ERROR, logger="appguard.test"), pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # the service's grace period
            await exp.shutdown()
    assert metric(tel, "otelcol_exporter_send_failed_spans_total") == 6
    assert tel.registry.get_sample_value(
        "appguard_dropped_items_total", {"component": "exporter/otlp/test", "otel_signal": "traces", "reason": "shutdown"}
    ) == 6
    assert any("6 spans dropped" in r.getMessage() for r in caplog.records)


async def test_consume_before_start_is_refused_as_retryable() -> None:
    exp = make(Telemetry())
    with pytest.raises(RetryableError):
        await exp.consume(traces(1))


# ---- batching


async def test_batch_merges_up_to_min_size() -> None:
    tel = Telemetry()
    exp = make(tel, {"sending_queue": {"batch": {"min_size": 10, "flush_timeout": "10s"}}})
    await exp.start(Host())
    sent = [traces(3, service=f"p{i}") for i in range(4)]
    for p in sent:
        await exp.consume(p)
    await until(lambda: exp.delivered)
    await exp.shutdown()
    assert len(exp.delivered) == 1
    batch = exp.delivered[0]
    assert batch.items == 12 == count_items(Signal.TRACES, batch.message)
    assert batch.to_bytes() == b"".join(p.to_bytes() for p in sent)  # merged without re-encoding
    assert span_names(exp.delivered) == span_names(sent)
    assert metric(tel, "otelcol_exporter_sent_spans_total") == 12


async def test_batch_flushes_after_flush_timeout() -> None:
    exp = make(Telemetry(), {"sending_queue": {"batch": {"min_size": 1000, "flush_timeout": "50ms"}}})
    await exp.start(Host())
    await exp.consume(traces(2, service="a"))
    await exp.consume(traces(2, service="b"))
    await until(lambda: exp.delivered)
    assert [p.items for p in exp.delivered] == [4]
    await exp.shutdown()


async def test_batch_splits_above_max_size_and_keeps_order() -> None:
    exp = make(Telemetry(), {"sending_queue": {"batch": {"min_size": 4, "max_size": 5, "flush_timeout": "50ms"}}})
    await exp.start(Host())
    sent = [traces(12, service="big"), traces(1, service="x")]
    for p in sent:
        await exp.consume(p)
    await until(lambda: sum(p.items for p in exp.delivered) == 13)
    await exp.shutdown()
    assert all(p.items <= 5 for p in exp.delivered)
    assert sorted(span_names(exp.delivered)) == sorted(span_names(sent))
    for p in exp.delivered:
        assert p.items == count_items(Signal.TRACES, p.message)


async def test_batch_with_wait_for_result_answers_each_caller() -> None:
    exp = make(Telemetry(), {"sending_queue": {"wait_for_result": True, "batch": {"min_size": 4, "max_size": 4, "flush_timeout": "20ms"}}})
    await exp.start(Host())
    exp.script = [ExportError("nope", retryable=False)]
    results = await asyncio.gather(*(exp.consume(traces(3, service=f"c{i}")) for i in range(2)), return_exceptions=True)
    await exp.shutdown()
    # The first chunk failed; both callers' data was in it (3 + 1 of 3), both are told.
    assert all(isinstance(r, PermanentError) for r in results), results


async def test_batch_drains_on_shutdown() -> None:
    exp = make(Telemetry(), {"sending_queue": {"batch": {"min_size": 1000, "flush_timeout": "10s"}}})
    await exp.start(Host())
    await exp.consume(traces(3))
    await exp.shutdown()
    assert [p.items for p in exp.delivered] == [3]


def test_merge_keeps_common_metadata_only() -> None:
    a, b = traces(1), traces(1)
    a.metadata = b.metadata = {"tenant": ("x",)}
    assert merge_payloads([a, b]).metadata == {"tenant": ("x",)}
    b.metadata = {"tenant": ("y",)}
    assert merge_payloads([a, b]).metadata == {}
    assert merge_payloads([a]) is a


def test_split_by_items_and_by_bytes() -> None:
    payload = traces(10, resources=3)
    parts = split_payload(payload, 7, "items")
    assert [p.items for p in parts] == [7, 7, 7, 7, 2]
    assert span_names(parts) == span_names([payload])
    assert split_payload(payload, 100, "items") == [payload]
    by_bytes = split_payload(payload, payload.byte_size() // 3, "bytes")
    assert len(by_bytes) >= 3
    assert span_names(by_bytes) == span_names([payload])


def test_split_metrics_and_logs_keep_every_item() -> None:
    metrics = ExportMetricsServiceRequest()
    sm = metrics.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="g").gauge
    for i in range(9):
        gauge.data_points.add(as_int=i)
    mp = Payload.from_message(Signal.METRICS, metrics)
    parts = split_payload(mp, 4, "items")
    assert [p.items for p in parts] == [4, 4, 1]
    values = [dp.as_int for p in parts for rm in p.message.resource_metrics for s in rm.scope_metrics for m in s.metrics for dp in m.gauge.data_points]  # type: ignore[union-attr]
    assert values == list(range(9))
    logs = ExportLogsServiceRequest()
    sl = logs.resource_logs.add().scope_logs.add()
    for i in range(5):
        sl.log_records.add().body.string_value = str(i)
    lp = Payload.from_message(Signal.LOGS, logs)
    assert [p.items for p in split_payload(lp, 2, "items")] == [2, 2, 1]

