"""The browser telemetry endpoints: ``POST /api/telemetry/{error,pageview,event,performance}``.

Browsers and applications that do not speak OTLP send small JSON bodies here (the AppGuard
snippet does). Each request is

1. **authenticated** by a project's ingest key (``X-AppGuard-Key`` or the ``key`` query
   parameter, :mod:`api.ingest`): 401 without or with an unknown key, 403 for a revoked one;
2. **rate limited** per key and per client address (429 with ``Retry-After``);
3. **read** within ``api.ingest.max_telemetry_size``, gzip, deflate or br undone in bounded
   steps (413, 415, 400 for a corrupt body);
4. **validated** against its model (:mod:`api.telemetry_mapping`): a 400 names the field at
   fault (``type``, ``timestamp``, ``metrics.0.name``...);
5. **converted** to OTLP (errors, page views and custom events to log records, web vitals to
   cumulative histograms) and **delivered** to the collector's own OTLP/HTTP receiver, so that
   the configured pipelines carry them: errors become issues of the key's project, vitals
   reach Prometheus, the log records Loki. A receiver that is busy or unreachable makes the
   answer a 429: nothing is answered 200 that was not handed on.

The answer is ``200 {"accepted": n}`` (and the ``event_id`` of an error). See docs/telemetry.md.
"""

from __future__ import annotations

import time
from typing import TypeVar

from aiohttp import web

from api.errors import Handler
from api.ingest import ingest, ingest_path
from api.routing import PUBLIC, ROUTES, json_object_body, json_response, validate_body
from api.telemetry_mapping import (
    Accepted,
    CustomEvent,
    ErrorReport,
    PageView,
    PerformanceReport,
    TelemetryBody,
    VitalsAccumulator,
    custom_event_to_logs,
    error_to_logs,
    new_event_id,
    page_view_to_logs,
)

PREFIX = "/api/telemetry/"
_SETTING = "api.ingest.max_telemetry_size"

B = TypeVar("B", bound=TelemetryBody)

VITALS = web.AppKey("appguard_telemetry_vitals", VitalsAccumulator)


async def _read(request: web.Request, model: type[B]) -> tuple[B, int]:
    """Authenticate, limit, read and validate one telemetry body; the body and the key's project."""
    shared = ingest(request)
    key, raw = await shared.accept(request, shared.config.max_telemetry_size, _SETTING)
    body = validate_body(model, json_object_body(raw))
    return body, key.project_id


# --------------------------------------------------------------------------- handlers


async def telemetry_error(request: web.Request) -> web.StreamResponse:
    """Take an error a browser caught."""
    report, project_id = await _read(request, ErrorReport)
    event_id = (report.event_id or new_event_id()).lower()
    logs = error_to_logs(report, project_id=project_id, event_id=event_id, user_agent=request.headers.get("User-Agent"))
    await ingest(request).forwarder.deliver(logs=logs)
    return json_response(Accepted(accepted=1, event_id=event_id))


async def telemetry_pageview(request: web.Request) -> web.StreamResponse:
    """Take a page view."""
    view, project_id = await _read(request, PageView)
    logs = page_view_to_logs(view, project_id=project_id, user_agent=request.headers.get("User-Agent"))
    await ingest(request).forwarder.deliver(logs=logs)
    return json_response(Accepted(accepted=1).model_dump(exclude_none=True))


async def telemetry_event(request: web.Request) -> web.StreamResponse:
    """Take a custom event."""
    event, project_id = await _read(request, CustomEvent)
    logs = custom_event_to_logs(event, project_id=project_id, user_agent=request.headers.get("User-Agent"))
    await ingest(request).forwarder.deliver(logs=logs)
    return json_response(Accepted(accepted=1).model_dump(exclude_none=True))


async def telemetry_performance(request: web.Request) -> web.StreamResponse:
    """Take web vitals measured on a page."""
    report, project_id = await _read(request, PerformanceReport)
    added = request.app[VITALS].add(report, project_id=project_id, now_ns=time.time_ns())
    try:
        await ingest(request).forwarder.deliver(metrics=added.request)
    except BaseException:
        # Not handed on: the client is told to retry, so its measurements must not stay counted.
        added.undo()
        raise
    return json_response(Accepted(accepted=len(report.metrics)).model_dump(exclude_none=True))


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the four endpoints as ingest paths (CORS), after ``api.ingest``."""
    ingest_path(app, PREFIX + "[a-z]+")
    app[VITALS] = VitalsAccumulator()
    routes = app[ROUTES]
    tags = ["telemetry"]
    failures = {
        400: "a body that is not a JSON object or a field that does not validate (error.field names it), "
        "or a corrupt compressed body",
        401: "no ingest key (X-AppGuard-Key header or key query parameter), or an unknown one",
        403: "the ingest key is revoked, or the page's origin is not in api.ingest.allowed_origins",
        413: "the body is larger than api.ingest.max_telemetry_size, compressed or decompressed",
        415: "a Content-Type other than application/json (or text/plain), or a Content-Encoding other than gzip, deflate or br",
        429: "over the rate limit of the key or the client address, or the collector is busy (Retry-After)",
    }
    common = "Authenticated by a project's ingest key (X-AppGuard-Key or ?key=). The body may be gzip, deflate or br encoded. See docs/telemetry.md."
    declared: list[tuple[str, Handler, type[TelemetryBody], str, str]] = [
        ("error", telemetry_error, ErrorReport, "A browser error",
         "One error the page caught; it becomes an event of an issue of the key's project, its stack parsed as JavaScript."),
        ("pageview", telemetry_pageview, PageView, "A page view",
         "A page shown; it becomes a log record named browser.page_view."),
        ("event", telemetry_event, CustomEvent, "A custom event",
         "Something the application recorded; it becomes a log record named browser.custom_event."),
        ("performance", telemetry_performance, PerformanceReport, "Web vitals",
         "LCP, INP, CLS, TTFB and FCP measurements; they become the histograms browser.web_vital.<name>."),
    ]  # fmt: skip
    for name, handler, model, summary, description in declared:
        routes.add(
            "POST",
            f"{PREFIX}{name}",
            handler,
            role=PUBLIC,
            summary=summary,
            description=f"{description} {common}",
            body=model,
            reads_body=True,
            responses={200: Accepted},
            errors=failures,
            tags=tags,
        )
