"""The errors exporter against the real PostgreSQL: rows and links from SDK-made spans and logs,
exact counts through retries and two concurrent exporters, regressions seen by observers,
failure classification, retention, and the embedded server when no endpoint is configured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import Status, StatusCode, Tracer
from psycopg.rows import dict_row

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.consumer import PermanentError, RetryableError
from collector.exporterhelper import ExportError
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig, WrittenErrors
from storage.errors_store import ErrorStore, Outcome
from tests.support.net import free_port
from tests.support.services import database_dsn, drop_database
from tests.unit.test_errors_extract import OrderError, sdk_logs, sdk_traces


def charge(card: str) -> None:
    raise OrderError(f"card {card} declined")


def ship(order: int) -> None:
    raise KeyError(f"order-{order}")


def pay(card: str, span: Any = None, logger: logging.Logger | None = None, **extra: Any) -> None:
    """The application's handler: the failure is recorded on the span, or logged."""
    try:
        charge(card)
    except OrderError as exc:
        if span is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        else:
            assert logger is not None
            logger.error("payment failed", exc_info=True, extra=extra)


def make(dsn: str | None, data_dir: Path | None = None, **config: Any) -> ErrorsExporter:
    """An errors exporter whose consume returns the write's own outcome (no queue, no retries)."""
    base: dict[str, Any] = {"sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False}}
    if dsn is not None:
        base["endpoint"] = dsn
    cfg = ErrorsExporterConfig.model_validate({**base, **config})
    settings = CreateSettings(
        ComponentID("errors"), Kind.EXPORTER, Telemetry(), logging.getLogger("test.errors"), str(data_dir) if data_dir else None
    )
    return ErrorsExporter(settings, cfg, frozenset({Signal.TRACES, Signal.LOGS}))


@pytest.fixture
async def exporter(appguard_dsn: str) -> AsyncIterator[ErrorsExporter]:
    exp = make(appguard_dsn)
    await exp.start(Host())
    try:
        yield exp
    finally:
        await exp.shutdown()


async def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(sql.encode(), params)
        return await cur.fetchall()


def shop_traffic(tracer: Tracer) -> None:
    """A user's session: a declined card twice (other values), a shipping failure, fine requests."""
    for i, card in enumerate(("4242", "5555")):
        with tracer.start_as_current_span(f"POST /pay {i}", attributes={"session.id": "sess-A", "user.id": f"user-{i}", "http.route": "/pay"}) as span:
            pay(card, span)
        with tracer.start_as_current_span("GET /health"):
            pass
    with tracer.start_as_current_span("POST /ship", attributes={"session.id": "sess-B", "user.email": "b@example.com"}) as span:
        try:
            ship(17)
        except KeyError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))


async def test_spans_and_logs_become_issues_and_events_with_their_links(exporter: ErrorsExporter, appguard_dsn: str) -> None:
    traces, spans = sdk_traces(shop_traffic)

    def log_work(logger: logging.Logger) -> None:
        pay("9999", logger=logger, **{"session.id": "sess-C", "user.id": "user-9"})

    logs = sdk_logs(log_work)

    await exporter.consume(traces)
    await exporter.consume(logs)

    issues = await query(appguard_dsn, "SELECT * FROM appguard.issues ORDER BY event_count DESC, id")
    assert [(i["type"], i["event_count"], i["user_count"]) for i in issues] == [
        (f"{OrderError.__module__}.OrderError", 3, 3),
        ("KeyError", 1, 1),
    ]
    declined, shipping = issues
    assert declined["title"] == f"{OrderError.__module__}.OrderError: card 4242 declined"
    assert declined["culprit"].endswith("test_errors_exporter.py in charge")
    assert (declined["service_name"], declined["environment"], declined["status"], declined["substatus"]) == ("checkout", "staging", "unresolved", "new")
    assert declined["first_release"] == "2.1.0"

    events = await query(appguard_dsn, 'SELECT * FROM appguard.error_events ORDER BY "timestamp"')
    assert len(events) == 4
    by_span = {(s.get_span_context().trace_id, s.get_span_context().span_id): s for s in spans}  # type: ignore[union-attr]
    for event in events[:3]:
        span = by_span[(int(event["trace_id"], 16), int(event["span_id"], 16))]
        assert span.name.startswith(("POST /pay", "POST /ship"))
    paid = [e for e in events if e["issue_id"] == declined["id"]]
    assert sorted(e["session_id"] for e in paid) == ["sess-A", "sess-A", "sess-C"]
    assert {e["message"] for e in paid} == {"card 4242 declined", "card 5555 declined", "card 9999 declined"}
    assert all(e["stacktrace"].startswith("Traceback (most recent call last):") for e in events)
    assert all(e["frames"][-1]["stacktrace"]["frames"][-1]["function"] in ("charge", "ship") for e in events)
    ship_event = next(e for e in events if e["issue_id"] == shipping["id"])
    assert (ship_event["session_id"], ship_event["user_email"], ship_event["user_id"]) == ("sess-B", "b@example.com", None)
    assert ship_event["attributes"]["span.name"] == "POST /ship"
    log_event = next(e for e in paid if e["session_id"] == "sess-C")
    assert log_event["trace_id"] is None and log_event["level"] == "error"
    assert log_event["attributes"]["code.function.name"] == "pay"


async def test_the_same_request_twice_keeps_counts_exact(exporter: ErrorsExporter, appguard_dsn: str) -> None:
    written: list[WrittenErrors] = []

    async def observe(batch: WrittenErrors) -> None:
        written.append(batch)

    exporter.add_observer(observe)
    traces, _ = sdk_traces(shop_traffic)
    await exporter.consume(traces)
    # A retry: the same bytes, received again.
    await exporter.consume(Payload.from_bytes(Signal.TRACES, traces.to_bytes()))

    counts = await query(appguard_dsn, "SELECT sum(event_count) AS events, count(*) AS issues FROM appguard.issues")
    assert counts == [{"events": 3, "issues": 2}]
    assert (await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 3}]
    # Both events of the declined card are in the issue this write created.
    assert [o.outcome for o in written[0].report.outcomes] == [Outcome.NEW] * 3
    assert len(written[0].report.new_issues) == 2
    assert [o.outcome for o in written[1].report.outcomes] == [Outcome.DUPLICATE] * 3
    assert written[0].report.new_issues and not written[1].report.new_issues
    assert written[0].exporter == "errors"


async def test_two_exporters_writing_at_once_keep_counts_exact(appguard_dsn: str) -> None:
    payloads = []
    for round_ in range(12):

        def work(tracer: Tracer, round_: int = round_) -> None:
            for i in range(5):
                with tracer.start_as_current_span(f"r{round_} op{i}", attributes={"user.id": f"u{(round_ * 5 + i) % 7}"}) as span:
                    try:
                        if i % 2:
                            charge(str(round_ * 10 + i))
                        else:
                            ship(round_ * 10 + i)
                    except (OrderError, KeyError) as exc:
                        span.record_exception(exc)

        payloads.append(sdk_traces(work)[0])
    first, second = make(appguard_dsn, pool_size=3), make(appguard_dsn, pool_size=3)
    await asyncio.gather(first.start(Host()), second.start(Host()))
    try:
        # Both get every request (a client retrying at another replica), in other orders.
        await asyncio.gather(
            *(first.consume(p) for p in payloads),
            *(second.consume(Payload.from_bytes(Signal.TRACES, p.to_bytes())) for p in reversed(payloads)),
        )
    finally:
        await asyncio.gather(first.shutdown(), second.shutdown())

    issues = await query(appguard_dsn, "SELECT type, event_count, user_count FROM appguard.issues ORDER BY type")
    assert [(i["type"], i["event_count"]) for i in issues] == [("KeyError", 36), (f"{OrderError.__module__}.OrderError", 24)]
    assert {i["user_count"] for i in issues} <= {7}
    assert (await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 60}]
    distinct_users = await query(
        appguard_dsn, "SELECT i.type, count(DISTINCT e.user_id) AS n FROM appguard.error_events e JOIN appguard.issues i ON i.id = e.issue_id GROUP BY i.type ORDER BY i.type"
    )
    assert [i["user_count"] for i in issues] == [d["n"] for d in distinct_users]


async def test_regression_reopens_and_observers_hear_of_it(exporter: ErrorsExporter, appguard_dsn: str) -> None:
    written: list[WrittenErrors] = []

    async def observe(batch: WrittenErrors) -> None:
        written.append(batch)

    exporter.add_observer(observe)

    def once(tracer: Tracer) -> None:
        with tracer.start_as_current_span("POST /pay") as span:
            try:
                charge("1")
            except OrderError as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR))

    await exporter.consume(sdk_traces(once)[0])
    (issue,) = await query(appguard_dsn, "SELECT id FROM appguard.issues")
    store = await ErrorStore.open(appguard_dsn)
    try:
        # Fixed in a release newer than the one still running: its events do not reopen.
        assert await store.set_issue_status(issue["id"], "resolved", resolved_in_release="2.2.0")
        await exporter.consume(sdk_traces(once)[0])
        assert (await query(appguard_dsn, "SELECT status FROM appguard.issues"))[0]["status"] == "resolved"
        # Resolved for good, then seen again: a regression.
        assert await store.set_issue_status(issue["id"], "resolved")
        await asyncio.sleep(0.01)
        await exporter.consume(sdk_traces(once)[0])
    finally:
        await store.close()

    row = (await query(appguard_dsn, "SELECT status, substatus, event_count FROM appguard.issues"))[0]
    assert row == {"status": "unresolved", "substatus": "regressed", "event_count": 3}
    assert [o.outcome for w in written for o in w.report.outcomes] == [Outcome.NEW, Outcome.EXISTING, Outcome.REGRESSION]
    assert written[-1].report.regressed_issues == {issue["id"]}


async def test_an_observer_that_fails_does_not_fail_the_write(exporter: ErrorsExporter, appguard_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(batch: WrittenErrors) -> None:
        raise RuntimeError("alerting is down")

    exporter.add_observer(broken)
    with caplog.at_level(logging.ERROR, logger="test.errors"):
        await exporter.consume(sdk_traces(shop_traffic)[0])
    exporter.remove_observer(broken)
    assert (await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 3}]
    assert "an errors observer failed" in caplog.text


async def test_one_bad_request_does_not_fail_the_others_written_with_it(appguard_dsn: str) -> None:
    # A constraint the database enforces: events of one request break it, permanently.
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        await conn.execute("ALTER TABLE appguard.error_events ADD CONSTRAINT no_poison CHECK (message NOT LIKE 'card poison%')")
    exp = make(appguard_dsn, pool_size=1)
    await exp.start(Host())
    try:
        good = sdk_traces(shop_traffic)[0]

        def poison(tracer: Tracer) -> None:
            with tracer.start_as_current_span("bad") as span:
                try:
                    charge("poison")
                except OrderError as exc:
                    span.record_exception(exc)

        results = await asyncio.gather(exp.push(good), exp.push(sdk_traces(poison)[0]), return_exceptions=True)
    finally:
        await exp.shutdown()

    assert results[0] is None
    assert isinstance(results[1], ExportError) and not results[1].retryable
    assert "CheckViolation" in str(results[1])
    assert (await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 3}]


async def test_an_unreachable_or_missing_database_is_retryable_until_it_is_there(postgres_dsn: str) -> None:
    port = free_port()
    down = make(f"postgresql://postgres@127.0.0.1:{port}/nothing", connect_timeout="2s")
    await down.start(Host())  # starts anyway: data waits in the queue while the database is away
    try:
        with pytest.raises(RetryableError):
            await down.consume(sdk_traces(shop_traffic)[0])
    finally:
        await down.shutdown()

    name = f"appguard_t_later_{port}"
    dsn = database_dsn(postgres_dsn, name)
    later = make(dsn, connect_timeout="2s")
    await later.start(Host())
    try:
        with pytest.raises(RetryableError):
            await later.consume(sdk_traces(shop_traffic)[0])
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        await later.consume(sdk_traces(shop_traffic)[0])
        assert (await query(dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 3}]
    finally:
        await later.shutdown()
        drop_database(postgres_dsn, name)


async def test_a_permanent_database_error_is_not_retried(appguard_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(appguard_dsn, autocommit=True) as conn:
        await conn.execute("ALTER TABLE appguard.error_events ADD CONSTRAINT nothing_allowed CHECK (false) NOT VALID")
    exp = make(appguard_dsn)
    await exp.start(Host())
    try:
        with pytest.raises(PermanentError):
            await exp.consume(sdk_traces(shop_traffic)[0])
    finally:
        await exp.shutdown()


def _old_errors(days_ago: int, count: int) -> Payload:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "batch-jobs"
    ss = rs.scope_spans.add()
    when = datetime.now(UTC) - timedelta(days=days_ago)
    for i in range(count):
        span = ss.spans.add()
        span.trace_id, span.span_id, span.name = bytes([days_ago + 1]) * 15 + bytes([i + 1]), bytes([i + 1]) * 8, "nightly"
        event = span.events.add()
        event.name = "exception"
        event.time_unix_nano = int(when.timestamp() * 1e9) + i
        attr = event.attributes.add()
        attr.key, attr.value.string_value = "exception.type", "TimeoutError"
        attr = event.attributes.add()
        attr.key, attr.value.string_value = "exception.message", "job timed out"
    return Payload.from_bytes(Signal.TRACES, request.SerializeToString())


async def test_retention_removes_old_events_and_keeps_issue_counts(appguard_dsn: str) -> None:
    writer = make(appguard_dsn, retention={"max_age": 0})
    await writer.start(Host())
    try:
        await writer.consume(_old_errors(5, 3))
        await writer.consume(_old_errors(0, 2))
    finally:
        await writer.shutdown()
    assert (await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")) == [{"n": 5}]

    keeper = make(appguard_dsn, retention={"max_age": "48h", "interval": "200ms"})
    await keeper.start(Host())
    try:
        for _ in range(100):
            remaining = await query(appguard_dsn, "SELECT count(*) AS n FROM appguard.error_events")
            if remaining == [{"n": 2}]:
                break
            await asyncio.sleep(0.1)
    finally:
        await keeper.shutdown()
    assert remaining == [{"n": 2}]
    assert (await query(appguard_dsn, "SELECT event_count FROM appguard.issues")) == [{"event_count": 5}]


@pytest.mark.slow
async def test_without_endpoint_the_embedded_server_is_used_and_stopped(tmp_path: Path) -> None:
    exp = make(None, tmp_path)
    await exp.start(Host())
    try:
        await exp.consume(sdk_traces(shop_traffic)[0])
        dsn = (tmp_path / "postgres" / "port").read_text()
        rows = await query(f"postgresql://postgres@127.0.0.1:{dsn}/appguard", "SELECT sum(event_count) AS n FROM appguard.issues")
        assert rows == [{"n": 3}]
    finally:
        await exp.shutdown()
    assert not (tmp_path / "postgres" / "data" / "postmaster.pid").exists()


class AlertingExtension:
    """An extension as an alerting component would be: told about every write."""

    def __init__(self) -> None:
        self.new_issues: set[int] = set()

    async def errors_written(self, written: WrittenErrors) -> None:
        self.new_issues |= written.report.new_issues


async def test_observer_extensions_named_in_the_config(appguard_dsn: str) -> None:
    alerting = AlertingExtension()
    exp = make(appguard_dsn, observers=["alerting"])
    await exp.start(Host({ComponentID("alerting"): alerting}))  # type: ignore[dict-item]
    try:
        await exp.consume(sdk_traces(shop_traffic)[0])
    finally:
        await exp.shutdown()
    ids = {row["id"] for row in await query(appguard_dsn, "SELECT id FROM appguard.issues")}
    assert alerting.new_issues == ids and len(ids) == 2

    for host, message in (
        (Host(), "'alerting' is not an enabled extension"),
        (Host({ComponentID("alerting"): object()}), "has no errors_written method"),  # type: ignore[dict-item]
    ):
        broken = make(appguard_dsn, observers=["alerting"])
        with pytest.raises(ValueError, match=message):
            await broken.start(host)
