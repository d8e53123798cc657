"""The aiohttp application: REST under ``/api/``, the dashboard pages and their static files.

The application is assembled from *feature modules*, listed in :data:`FEATURES`. Each one has a
function ``register(app: web.Application) -> None`` that declares its routes on the route table
``app[ROUTES]`` (see :mod:`api.routing`) and may add start-up or clean-up hooks to ``app``.
Handlers reach the shared pool, Redis and stores with ``services(request)``
(:mod:`api.services`). To add the issue endpoints, write ``api/issues.py`` with its
``register(app)`` and append ``"api.issues"`` here; its routes then get authentication, roles,
CSRF, validation and their OpenAPI entries like every other.

Every response carries defensive headers; pages get a Content-Security-Policy that admits only
same-origin scripts and styles, and API answers are never cached.
"""

from __future__ import annotations

import importlib

from aiohttp import web

from api.auth import SessionAuthenticator
from api.errors import MAX_BODY_KEY, error_middleware, is_api_path
from api.routing import ROUTES, RouteTable
from api.services import SERVICES, Services

FEATURES: tuple[str, ...] = (
    "api.auth",
    "api.users",
    "api.api_tokens",
    "api.issues",
    "api.alerts",
    "api.alert_activity",
    "api.ingest",
    "api.telemetry",
    "api.sessions",
    "api.sentry",
    "api.sdk",
    "api.projects",
    "api.sourcemaps",
    "api.pages",
    "api.dashboard",
    "api.session_pages",
    "api.alert_pages",
    "api.project_pages",
    "api.openapi",
)

_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if is_api_path(request.path):
        headers.setdefault("Cache-Control", "no-store")
    elif response.content_type == "text/html":
        headers.setdefault("Content-Security-Policy", _PAGE_CSP)
        headers.setdefault("Cache-Control", "no-store")
    if request.secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")


async def _verify_routes(app: web.Application) -> None:
    # Deny by default: a handler added to the router behind the table's back has no role.
    app[ROUTES].verify(app)


def build_app(svc: Services, features: tuple[str, ...] = FEATURES) -> web.Application:
    """The application for ``svc``, with the routes of ``features`` installed."""
    # Bodies are decoded by the handlers that take compressed ones (api.ingest.read_body), each
    # within its own limit, so that a corrupt body is answered 400 rather than cut off.
    app = web.Application(
        client_max_size=svc.config.max_request_body_size,
        middlewares=[error_middleware],
        handler_args={"auto_decompress": False},
    )
    app[SERVICES] = svc
    app[ROUTES] = RouteTable()
    app[MAX_BODY_KEY] = svc.config.max_request_body_size
    for name in features:
        importlib.import_module(name).register(app)
    app[ROUTES].install(app, SessionAuthenticator(svc))
    app.on_startup.append(_verify_routes)
    app.on_response_prepare.append(_security_headers)
    return app
