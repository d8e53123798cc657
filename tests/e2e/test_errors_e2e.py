"""End to end: applications instrumented with the real OpenTelemetry SDKs report exceptions to
the real CLI; the errors exporter files them into issues in PostgreSQL and the errormetrics
connector counts them into ``appguard.errors`` points that reach an OTLP backend.

- Python (``opentelemetry-sdk``): spans with ``record_exception`` over OTLP/gRPC and log
  records with ``exc_info`` through the SDK's logging handler over OTLP/HTTP. One bug raised
  from two releases of the code (another deploy directory, shifted line numbers, other ids in
  the message) lands in one issue with its log record; another bug in another issue.
- JavaScript (the SDK from npm, ``tests/js``): a Node.js TypeError with its V8 stack.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, Status, StatusCode

from collector.pdata import Signal
from tests.e2e.sdk import log_exporter, span_exporter
from tests.e2e.stack import Stack, rows, running_stack, stack_config, until
from tests.support.otlp_sink import OTLPSink

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parents[1] / "js"

# The same module in two releases: the second has more code above the failing function, so
# every line number differs, and it is deployed in another directory.
CHECKOUT_V1 = """
def total(cart):
    return sum(item["price"] for item in cart)


def checkout(cart):
    if not cart:
        raise ValueError(f"cart {id(cart)} of user is empty")
    return total(cart)
"""
CHECKOUT_V2 = '''
"""Checkout, release 2: discounts."""

DISCOUNTS = {"SPRING": 0.1}


def discount(code):
    return DISCOUNTS.get(code, 0.0)


def total(cart):
    return sum(item["price"] for item in cart)


def checkout(cart):
    if not cart:
        raise ValueError(f"cart {id(cart)} of user is empty")
    return total(cart)
'''


@pytest.fixture
def sink() -> Iterator[OTLPSink]:
    s = OTLPSink()
    s.start_in_thread()
    yield s
    s.stop_in_thread()


@pytest.fixture
def stack(tmp_path: Path, sink: OTLPSink, appguard_dsn: str) -> Iterator[Stack]:
    config = stack_config(
        appguard_dsn,
        protocols=("grpc", "http"),
        batch=False,
        errors={"pool_size": 2, "retry_on_failure": {"initial_interval": "100ms", "max_interval": "1s"}},
        api=None,
        pipelines={
            "traces": ["errors", "errormetrics"],
            "logs": ["errors", "errormetrics"],
            "metrics": {"receivers": ["errormetrics"], "exporters": ["otlp/metrics"]},
        },
        overrides={
            "exporters": {"otlp/metrics": {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}}},
            "connectors": {"errormetrics": {"metrics_flush_interval": "300ms"}},
        },
    )
    with running_stack(config, tmp_path) as running:
        yield running


def load_release(tmp_path: Path, release: str, source: str) -> ModuleType:
    """Deploy ``source`` as ``<tmp>/<release>/shop/checkout.py`` and import it."""
    path = tmp_path / release / "shop" / "checkout.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"shop_checkout_{release}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def handle(span: Span, logger: logging.Logger | None, fn: Callable[..., Any], *args: Any) -> None:
    """The app's request handler: a failure is recorded on the span (and logged, if asked,
    with the request's session and user as the record's attributes)."""
    try:
        fn(*args)
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        if logger is not None:
            context = {key: span.attributes[key] for key in ("session.id", "user.id")}  # type: ignore[attr-defined]
            logger.exception("checkout failed", extra=context)


def python_app(tmp_path: Path, grpc_port: int, http_port: int) -> list[ReadableSpan]:
    """Spans over gRPC, logs over HTTP, from the real SDK; returns the spans it made."""
    v1 = load_release(tmp_path, "release-1", CHECKOUT_V1)
    v2 = load_release(tmp_path, "release-2", CHECKOUT_V2)
    resource = Resource.create(
        {"service.name": "shop-py", "service.version": "1.0.0", "deployment.environment.name": "e2e"}
    )
    memory = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter("grpc", grpc_port)))
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter("http", http_port)))
    logger = logging.getLogger("shop.e2e")
    logger.propagate = False
    with pytest.warns(DeprecationWarning):
        handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    tracer = tracer_provider.get_tracer("shop", "1.0.0")
    try:
        with tracer.start_as_current_span(
            "POST /checkout", attributes={"session.id": "py-session-1", "user.id": "alice"}
        ) as span:
            handle(span, None, v1.checkout, [])
        with tracer.start_as_current_span(
            "POST /checkout", attributes={"session.id": "py-session-2", "user.id": "bob"}
        ) as span:
            handle(span, logger, v2.checkout, [])
        with tracer.start_as_current_span(
            "GET /cart/total", attributes={"session.id": "py-session-1", "user.id": "alice"}
        ) as span:
            handle(span, None, v1.total, [{"name": "gift card"}])
    finally:
        logger.removeHandler(handler)
        tracer_provider.shutdown()
        logger_provider.shutdown()
    return list(memory.get_finished_spans())


def node_app(http_port: int) -> dict[str, str]:
    """Run tests/js/send_error.js (installing its npm packages first if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the JavaScript SDK test"
    if not (JS_DIR / "node_modules" / "@opentelemetry" / "sdk-trace-base").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, check=True, capture_output=True, timeout=600)
    done = subprocess.run(
        [node, str(JS_DIR / "send_error.js"), str(http_port)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    ids: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return ids


def error_counts(sink: OTLPSink) -> dict[tuple[str, str, str], int]:
    """The latest cumulative ``appguard.errors`` value per (service, environment, type)."""
    latest: dict[tuple[str, str, str], tuple[int, int]] = {}
    for request in sink.requests:
        if request.signal is not Signal.METRICS:
            continue
        for rm in request.message.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "appguard.errors":
                        continue
                    assert metric.sum.is_monotonic and metric.unit == "{error}"
                    for dp in metric.sum.data_points:
                        attrs = {kv.key: kv.value.string_value for kv in dp.attributes}
                        key = (attrs["service.name"], attrs["deployment.environment.name"], attrs["exception.type"])
                        if key not in latest or dp.time_unix_nano >= latest[key][0]:
                            latest[key] = (dp.time_unix_nano, dp.as_int)
    return {key: value for key, (_, value) in latest.items()}


async def test_python_and_javascript_exceptions_become_issues_and_error_metrics(
    stack: Stack, sink: OTLPSink, appguard_dsn: str, tmp_path: Path
) -> None:
    spans = python_app(tmp_path, stack.ports.grpc, stack.ports.http)
    js = node_app(stack.ports.http)

    events = await until(
        lambda: rows(appguard_dsn, 'SELECT * FROM appguard.error_events ORDER BY "timestamp"'),
        lambda found: len(found) == 5,
        what=lambda: f"five error events; the collector said:\n{stack.output()}",
    )
    assert len(events) == 5, stack.output()
    issues = {i["type"]: i for i in await rows(appguard_dsn, "SELECT * FROM appguard.issues")}
    assert sorted(issues) == ["KeyError", "TypeError", "ValueError"]

    # One bug from two releases, recorded on two spans and logged once: one issue.
    empty = issues["ValueError"]
    assert (empty["event_count"], empty["user_count"]) == (3, 2)
    assert (empty["service_name"], empty["environment"], empty["level"]) == ("shop-py", "e2e", "error")
    assert empty["title"].startswith("ValueError: cart ") and empty["title"].endswith(" of user is empty")
    assert empty["culprit"].endswith("checkout.py in checkout")
    empty_events = [e for e in events if e["issue_id"] == empty["id"]]
    raise_lines = {e["frames"][-1]["stacktrace"]["frames"][-1]["lineno"] for e in empty_events}
    assert len(raise_lines) == 2  # other line numbers, same issue
    assert len({e["message"] for e in empty_events}) >= 2  # other ids in the message, same issue
    # Another bug of the same service: another issue.
    assert (issues["KeyError"]["event_count"], issues["KeyError"]["service_name"]) == (1, "shop-py")
    assert issues["KeyError"]["id"] != empty["id"]

    # Every Python event links back to its span (and the log record to the span it was logged in).
    by_ids = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}"): s for s in spans}  # type: ignore[union-attr]
    py_events = [e for e in events if e["service_name"] == "shop-py"]
    assert all((e["trace_id"], e["span_id"]) in by_ids for e in py_events)
    sessions = sorted((e["session_id"], e["user_id"], e["type"]) for e in py_events)
    assert sessions == [
        ("py-session-1", "alice", "KeyError"),
        ("py-session-1", "alice", "ValueError"),
        ("py-session-2", "bob", "ValueError"),
        ("py-session-2", "bob", "ValueError"),
    ]
    logged = [e for e in py_events if e["attributes"].get("code.function.name") == "handle"]
    assert len(logged) == 1 and logged[0]["stacktrace"].startswith("Traceback (most recent call last):")
    assert by_ids[(logged[0]["trace_id"], logged[0]["span_id"])].attributes["session.id"] == "py-session-2"  # type: ignore[index]

    # The JavaScript SDK's exception: a V8 stack parsed into JavaScript frames.
    type_error = issues["TypeError"]
    assert (type_error["service_name"], type_error["environment"]) == ("storefront-js", "e2e")
    assert type_error["title"].startswith("TypeError: Cannot read properties of undefined")
    assert "priceOf" in type_error["culprit"]
    (js_event,) = [e for e in events if e["issue_id"] == type_error["id"]]
    assert (js_event["trace_id"], js_event["span_id"]) == (js["traceId"], js["spanId"])
    assert (js_event["session_id"], js_event["user_id"], js_event["service_version"]) == (
        "js-session-1",
        "js-user-1",
        "4.2.0",
    )
    frames = js_event["frames"][-1]["stacktrace"]["frames"]
    app_frames = [f for f in frames if f["in_app"]]
    # Oldest call first: the module's top level, main, cartTotal, the reduce callback, priceOf.
    named = [f["function"] for f in app_frames if f.get("function")]
    assert named == ["Object.<anonymous>", "main", "cartTotal", "priceOf"], frames
    assert all(f["filename"].endswith("send_error.js") for f in app_frames)
    assert any(f.get("function") == "Array.reduce" and not f["in_app"] for f in frames)
    assert all(isinstance(f["lineno"], int) and isinstance(f["colno"], int) for f in app_frames)
    assert js_event["stacktrace"].startswith("TypeError: Cannot read properties of undefined")

    # The errormetrics connector counted the same errors into the metrics pipeline.
    want = {
        ("shop-py", "e2e", "ValueError"): 3,
        ("shop-py", "e2e", "KeyError"): 1,
        ("storefront-js", "e2e", "TypeError"): 1,
    }
    got = await until(lambda: error_counts(sink), lambda counts: counts == want, what="the errormetrics counts")
    assert got == want, error_counts(sink)
