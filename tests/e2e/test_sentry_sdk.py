"""End to end: the real ``sentry-sdk`` from PyPI reports to the real CLI (OTLP receiver, errors
exporter, the ``api`` extension with its Sentry ingest) with a project's DSN, as an application
configured for Sentry would.

- ``capture_exception`` inside a transaction: the issue in PostgreSQL and through the API, with
  the SDK's in-app frames, its tags, user and the transaction's trace id; the transaction's
  spans reach the traces pipeline (written by a ``file`` exporter here, Tempo in production);
- an unhandled exception in a separate program, caught by the SDK's excepthook integration and
  flushed at exit, with library frames the SDK marks as not in-app;
- the same bug reported once through the OpenTelemetry SDK and once through ``sentry-sdk`` is
  one issue of two events; the same for a Node.js bug reported through the OpenTelemetry
  JavaScript SDK and through ``@sentry/node`` (``tests/js/send_error.js``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests.e2e.sdk import span_exporter
from tests.e2e.stack import Stack, StartStack, project_key, registered, rows, spans, until

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(start_stack: StartStack, tmp_path: Path) -> Stack:
    return start_stack(
        protocols=("grpc", "http"),
        file=tmp_path / "spans.jsonl",
        sentry=True,
        pipelines={"traces": ["errors", "file"], "logs": ["errors"]},
    )


# --------------------------------------------------------------------------- the application


class CouponError(Exception):
    """The application's own exception."""


def apply_coupon(cart: dict[str, float], code: str) -> float:
    total = cart["total"]
    return total / len(code.strip())


def checkout(cart: dict[str, float], code: str) -> float:
    try:
        return apply_coupon(cart, code)
    except ZeroDivisionError as exc:
        raise CouponError(f"coupon {code!r} is empty") from exc


def serve(report: Callable[[BaseException], object]) -> None:
    """The request handler: whatever fails is reported through the SDK the app was given."""
    try:
        checkout({"total": 10.0}, "   ")
    except Exception as exc:
        report(exc)


def report_through_opentelemetry(grpc_port: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "service.version": "shop@2.4.0"}))
    provider.add_span_processor(SimpleSpanProcessor(span_exporter("grpc", grpc_port)))
    tracer = provider.get_tracer("shop")

    def record(exc: BaseException) -> None:
        with tracer.start_as_current_span("POST /checkout") as span:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))

    serve(record)
    provider.shutdown()


def report_through_sentry(dsn: str) -> tuple[str, str, str]:
    """capture_exception inside a transaction; returns (event id, trace id, span id of the transaction)."""
    sentry_sdk.init(
        dsn=dsn,
        release="shop@2.4.0",
        environment="production",
        server_name="web-1",
        traces_sample_rate=1.0,
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    try:
        with sentry_sdk.isolation_scope():
            sentry_sdk.set_tag("shop", "eu")
            sentry_sdk.set_user({"id": "u42", "email": "u42@example.com"})
            with sentry_sdk.start_transaction(op="http.server", name="POST /checkout") as transaction:
                with sentry_sdk.start_span(op="db", name="SELECT * FROM carts"):
                    pass
                event_ids: list[str] = []
                serve(lambda exc: event_ids.append(sentry_sdk.capture_exception(exc) or ""))
        sentry_sdk.flush(timeout=10)
        return event_ids[0], transaction.trace_id, transaction.span_id
    finally:
        sentry_sdk.get_client().close(timeout=10)
        sentry_sdk.get_global_scope().set_client(None)  # back to the client that records nothing


UNHANDLED = """
import json
import sys

import sentry_sdk

sentry_sdk.init(dsn=sys.argv[1], release="settings@1.0.0", environment="staging")


def read_settings(text):
    return json.loads(text)


read_settings("{not json")
"""


# --------------------------------------------------------------------------- checks


EVENTS = (
    "SELECT e.event_id, e.issue_id, e.project_id, e.type, e.level, e.trace_id, e.span_id, e.user_id, "
    "e.user_email, e.service_name, e.service_version, e.environment, e.frames, e.attributes, "
    "i.title, i.event_count FROM appguard.error_events e JOIN appguard.issues i ON i.id = e.issue_id "
    "ORDER BY e.received_at, e.id"
)


async def events_at_least(dsn: str, count: int) -> list[dict[str, Any]]:
    """The error events, once there are ``count`` of them."""
    return await until(lambda: rows(dsn, EVENTS), lambda found: len(found) >= count, what=f"{count} error events")


def _frames(event: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [
        (exc["type"], f.get("function", ""), f["in_app"])
        for exc in event["frames"]
        for f in exc.get("stacktrace", {}).get("frames", [])
    ]


async def test_sentry_sdk_reports_become_issues(stack: Stack, appguard_dsn: str, tmp_path: Path) -> None:
    key = await project_key(appguard_dsn)
    dsn = key.dsn(stack.api)
    assert dsn == f"http://{key.public_key}@127.0.0.1:{stack.ports.api}/1"

    # 1. capture_exception inside a transaction, in this process.
    event_id, trace_id, span_id = await asyncio.to_thread(report_through_sentry, dsn)
    events = await events_at_least(appguard_dsn, 1)
    [sentry_event] = events
    assert sentry_event["event_id"].hex == event_id
    assert sentry_event["project_id"] == 1
    assert sentry_event["type"] == f"{__name__}.CouponError"
    assert sentry_event["title"] == f"{__name__}.CouponError: coupon '   ' is empty"
    assert (sentry_event["trace_id"], sentry_event["span_id"]) == (trace_id, span_id)
    assert (sentry_event["user_id"], sentry_event["user_email"]) == ("u42", "u42@example.com")
    assert (sentry_event["service_name"], sentry_event["service_version"], sentry_event["environment"]) == (
        "shop", "shop@2.4.0", "production"
    )  # fmt: skip
    assert sentry_event["attributes"]["shop"] == "eu"
    assert _frames(sentry_event) == [
        ("ZeroDivisionError", "checkout", True),
        ("ZeroDivisionError", "apply_coupon", True),
        (f"{__name__}.CouponError", "serve", True),
        (f"{__name__}.CouponError", "checkout", True),
    ]

    # The transaction's spans went down the traces pipeline.
    found = await until(
        lambda: {span["name"]: span for span in spans(stack.file)},
        lambda names: {"POST /checkout", "SELECT * FROM carts"} <= set(names),
        what="the transaction's spans in the spans file",
    )
    assert found["POST /checkout"]["traceId"] == found["SELECT * FROM carts"]["traceId"] == trace_id
    assert found["SELECT * FROM carts"]["parentSpanId"] == found["POST /checkout"]["spanId"] == span_id

    # 2. An unhandled exception in another program, through the SDK's excepthook.
    script = tmp_path / "settings_app.py"
    script.write_text(UNHANDLED)
    run = await asyncio.to_thread(
        subprocess.run, [sys.executable, str(script), dsn], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "JSONDecodeError" in run.stderr, run.stderr
    events = await events_at_least(appguard_dsn, 2)
    unhandled = events[1]
    assert unhandled["type"] == "json.decoder.JSONDecodeError"
    assert (unhandled["service_name"], unhandled["environment"]) == ("settings", "staging")
    assert (unhandled["attributes"]["handled"], unhandled["attributes"]["mechanism"]) == ("no", "excepthook")
    frames = _frames(unhandled)
    assert [f for f in frames if f[2]] == [
        ("json.decoder.JSONDecodeError", "<module>", True),
        ("json.decoder.JSONDecodeError", "read_settings", True),
    ]
    assert {"loads", "decode"} <= {function for _, function, in_app in frames if not in_app}

    # 3. The same bug through OpenTelemetry: one issue, two events.
    await asyncio.to_thread(report_through_opentelemetry, stack.ports.grpc)
    events = await events_at_least(appguard_dsn, 3)
    assert len(events) == 3
    otel_event = events[2]
    assert otel_event["issue_id"] == sentry_event["issue_id"] != unhandled["issue_id"]
    assert otel_event["event_count"] == 2
    assert _frames(otel_event) == _frames(sentry_event)

    # Through the API, as the dashboard shows it.
    async with registered(stack.api, name="Owner") as user:
        issues = (await user.get("/api/issues?project=1&sort=events"))["issues"]
        assert [(i["type"], i["event_count"]) for i in issues] == [
            (f"{__name__}.CouponError", 2),
            ("json.decoder.JSONDecodeError", 1),
        ]
        detail = await user.get(f"/api/issues/{issues[0]['id']}?project=1")
        tags = {t["key"]: {v["value"] for v in t["top"]} for t in detail["tags"]}
        assert tags["shop"] == {"eu"}
        assert tags["release"] == {"shop@2.4.0"}
        latest = detail["latest_event"]
        in_app = [f["function"] for exc in latest["exceptions"] for f in exc["frames"] if f["in_app"]]
        assert in_app == ["checkout", "apply_coupon", "serve", "checkout"]


# --------------------------------------------------------------------------- JavaScript


JS_DIR = Path(__file__).resolve().parent.parent / "js"


def run_node_app(*args: str) -> dict[str, str]:
    """Run tests/js/send_error.js with ``args`` (installing its npm packages first if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the JavaScript SDK test"
    if not (JS_DIR / "node_modules" / "@sentry" / "node").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, capture_output=True, timeout=600)
    done = subprocess.run([node, str(JS_DIR / "send_error.js"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ids: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


async def test_a_node_bug_through_opentelemetry_and_sentry_node_is_one_issue(stack: Stack, appguard_dsn: str) -> None:
    dsn = (await project_key(appguard_dsn)).dsn(stack.api)

    otel = await asyncio.to_thread(run_node_app, str(stack.ports.http))
    sentry = await asyncio.to_thread(run_node_app, dsn, "sentry")
    events = await events_at_least(appguard_dsn, 2)
    assert len(events) == 2, events
    by_trace = {e["trace_id"]: e for e in events}
    otel_event = by_trace[otel["traceId"]]
    [sentry_event] = [e for e in events if e is not otel_event]
    assert sentry_event["event_id"].hex == sentry["eventId"]
    assert otel_event["type"] == sentry_event["type"] == "TypeError"
    assert (sentry_event["service_name"], sentry_event["service_version"], sentry_event["environment"]) == (
        "storefront-js", "4.2.0", "e2e"
    )  # fmt: skip

    # Both SDKs give the same in-app frames (file, line, column); they name them differently (a
    # module from @sentry/node only; a nameless function is '?' to Sentry, '' or '<anonymous>'
    # in V8's text), which grouping does not let split the issue.
    def where(event: dict[str, Any]) -> list[tuple[str, int, int]]:
        frames = event["frames"][-1]["stacktrace"]["frames"]
        return [(Path(f["filename"]).name, f["lineno"], f["colno"]) for f in frames if f["in_app"]]

    assert [f[1] for f in _frames(otel_event) if f[2]] == ["Object.<anonymous>", "main", "cartTotal", "", "priceOf"]
    assert [f[1] for f in _frames(sentry_event) if f[2]] == ["Object.?", "main", "cartTotal", "?", "priceOf"]
    assert len(where(otel_event)) == 5 and where(sentry_event) == where(otel_event)
    assert sentry_event["issue_id"] == otel_event["issue_id"]
    assert sentry_event["event_count"] == 2
    assert {otel_event["user_id"], sentry_event["user_id"]} == {"js-user-1", "js-user-2"}
