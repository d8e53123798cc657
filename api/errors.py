"""Errors of the REST API: one JSON shape, ``{"error": {"code", "message", "field"?}}``.

Handlers raise :class:`ApiError`; :func:`error_middleware` turns it, aiohttp's own HTTP errors
(404, 405, 413...) and unexpected exceptions into that shape for every path under ``/api/``.
Pages get the same statuses with a short HTML body instead.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
import redis.exceptions
from aiohttp import web
from psycopg_pool import PoolTimeout
from pydantic import BaseModel

_log = logging.getLogger("appguard.api")

# The application's body size limit, for the 413 message.
MAX_BODY_KEY = web.AppKey("api_max_body", int)


class ErrorDetail(BaseModel):
    """What went wrong: a stable `code` for programs, a `message` for people and, for a bad
    request, the `field` at fault (dotted path into the body or the parameter name)."""

    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response of the API."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine-readable ``code``, human ``message``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """The JSON bytes of an error body."""
    detail: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return orjson.dumps({"error": detail})


def error_response(error: ApiError, *, page: bool = False) -> web.Response:
    """The response for an :class:`ApiError`: JSON for the API, a small HTML page for pages."""
    if page:
        text = f"<!doctype html><title>{error.status}</title><h1>{error.status}</h1><p>{html.escape(error.message)}</p>"
        return web.Response(status=error.status, text=text, content_type="text/html", headers=error.headers)
    return web.Response(
        status=error.status,
        body=error_body(error.code, error.message, error.field),
        content_type="application/json",
        headers=error.headers,
    )


# aiohttp's HTTP exceptions mapped to our codes; the message is aiohttp's reason unless set here.
_HTTP_CODES: dict[int, tuple[str, str | None]] = {
    400: ("bad_request", None),
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", None),
    413: ("body_too_large", None),
    415: ("unsupported_media_type", None),
}


def _from_http_exception(exc: web.HTTPException, request: web.Request) -> ApiError:
    code, message = _HTTP_CODES.get(exc.status, ("http_error", None))
    if exc.status == 413:
        limit = request.app[MAX_BODY_KEY]
        message = f"the request body is larger than the limit of {limit} bytes"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"{request.method} is not allowed here; allowed: {allowed}"
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Location", "Retry-After")}
    return ApiError(exc.status, code, message or exc.reason, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_api_path(path: str) -> bool:
    """Whether a path belongs to the REST API (JSON errors) rather than the pages."""
    return path == "/api" or path.startswith("/api/")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure in the error shape of the API (or as a page)."""
    page = not is_api_path(request.path)
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc, page=page)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects pass through
        return error_response(_from_http_exception(exc, request), page=page)
    except (PoolTimeout, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        _log.error("%s %s: a backing service is unavailable: %s", request.method, request.path, exc)
        unavailable = ApiError(
            503, "service_unavailable", "a backing service is unavailable; try again", headers={"Retry-After": "5"}
        )
        return error_response(unavailable, page=page)
    except Exception:
        _log.exception("%s %s failed", request.method, request.path)
        return error_response(ApiError(500, "internal_error", "internal server error"), page=page)
