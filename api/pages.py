"""Server-rendered pages: the sign-in and registration forms and the dashboard shell.

Templates live in ``api/templates`` (Jinja2, autoescaped) and extend ``base.html``, the shell
every dashboard page shares: the top bar with the navigation (:data:`NAV`, filtered by role) and
the account menu. Scripts are ES modules under ``api/static/js`` with no build step; the pages
allow only same-origin scripts (see the Content-Security-Policy in ``api/app.py``).

A dashboard page is declared with ``routes.page(path, handler, role=...)`` and renders with
:func:`render`; callers without a session are sent to ``/login?next=<page>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from api.auth import SessionAuthenticator
from api.errors import ApiError
from api.routing import PUBLIC, ROUTES, Principal, current_principal, query
from api.services import STATIC_DIR, services
from storage.users_store import RegistrationMode, Role


@dataclass(frozen=True)
class NavItem:
    """A link of the top bar, shown to users with at least ``role``."""

    href: str
    label: str
    role: Role = Role.VIEWER


# The dashboard's sections; pages built later add their entries here.
NAV: list[NavItem] = [
    NavItem("/", "Overview"),
    NavItem("/issues", "Issues"),
    NavItem("/sessions", "Sessions"),
    NavItem("/alerts", "Alerts"),
    NavItem("/projects", "Projects"),
]


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render a page template; the signed-in user and the navigation are passed along."""
    caller = current_principal(request)
    context.setdefault("user", caller.user if caller is not None else None)
    context.setdefault("nav", [item for item in NAV if caller.role.includes(item.role)] if caller is not None else [])
    context.setdefault("active", request.path)
    html = services(request).templates.get_template(template).render(**context)
    return web.Response(status=status, text=html, content_type="text/html")


def safe_next(target: str | None) -> str:
    """A local path to go to after signing in; anything else (another site) becomes ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


class LoginPageQuery(BaseModel):
    """Where to go after signing in."""

    model_config = ConfigDict(extra="ignore")

    next: str | None = None


class RegisterPageQuery(BaseModel):
    """The invitation token from an invitation link, and where to go afterwards."""

    model_config = ConfigDict(extra="ignore")

    invitation: str | None = None
    next: str | None = None


async def _signed_in(request: web.Request) -> Principal | None:
    try:
        return await SessionAuthenticator(services(request)).authenticate(request)
    except ApiError:
        return None


async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form."""
    target = safe_next(query(request, LoginPageQuery).next)
    if await _signed_in(request) is not None:
        raise web.HTTPSeeOther(target)
    svc = services(request)
    can_register = svc.config.auth.registration is not RegistrationMode.CLOSED or not await svc.users.has_users()
    return render(request, "login.html", title="Sign in", next=target, can_register=can_register)


async def register_page(request: web.Request) -> web.StreamResponse:
    """The registration form (or why registration is not possible)."""
    q = query(request, RegisterPageQuery)
    svc = services(request)
    first = not await svc.users.has_users()
    return render(
        request,
        "register.html",
        title="Create an account",
        next=safe_next(q.next),
        first=first,
        mode=svc.config.auth.registration.value,
        invitation=q.invitation or "",
    )


def register(app: web.Application) -> None:
    """Declare the pages and the static files."""
    routes = app[ROUTES]
    routes.add_static("/static", STATIC_DIR)
    routes.page("/login", login_page, role=PUBLIC, summary="Sign-in page", query=LoginPageQuery)
    routes.page("/register", register_page, role=PUBLIC, summary="Registration page", query=RegisterPageQuery)
