"""Personal API tokens: long-lived credentials for machines (CI pipelines, scripts).

A signed-in user creates a token (``POST /api/tokens``) and gets its secret once, in the answer;
only its SHA-256 is stored (:mod:`storage.api_tokens`). The machine then sends
``Authorization: Bearer agt_<random>`` and acts as that user, with the user's role capped by the
``role`` chosen at creation (never above the user's own); :mod:`api.auth` does the checking.

Everyone lists and revokes their own tokens; admins may list everybody's (``?all=true``) and
revoke any. Creating a token needs a signed-in session: a token cannot mint other tokens, so a
leaked one cannot outlive its revocation. ``/settings/tokens`` is the dashboard's page for all
of this (``api/static/js/tokens.js`` sends its changes to the same endpoints).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.auth import require_session
from api.errors import ApiError
from api.pages import render
from api.routing import ROUTES, Principal, body, json_response, params, principal, query
from api.services import services
from api.tokens import token_hash
from storage.api_tokens import SECRET_PREFIX, ApiToken, ApiTokenStore
from storage.users_store import Role

#: Characters of the random part kept, after the prefix, to tell tokens apart.
DISPLAY_CHARS = 8
MAX_EXPIRY_DAYS = 3650
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def new_api_token() -> tuple[str, str]:
    """A fresh secret (256 random bits after :data:`SECRET_PREFIX`) and what of it may be shown."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[: len(SECRET_PREFIX) + DISPLAY_CHARS]


def _name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# --------------------------------------------------------------------------- models


class TokenRequest(BaseModel):
    """A new token: what it is for, the most it may do (default: your role), and for how long."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_name)] = Field(
        description="what the token is for, e.g. `ci source maps`"
    )
    role: Role | None = Field(default=None, description="cap the token at this role; not above yours")
    expires_in_days: int | None = Field(
        default=None, ge=1, le=MAX_EXPIRY_DAYS, description="days until it stops working; omitted: never"
    )


class ApiTokenOut(BaseModel):
    """A token, never its secret: `prefix` is its first characters, `role` its cap (null: the
    user's role)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    role: Role | None
    user_id: int
    user_email: str
    created_at: datetime
    last_used_at: datetime | None = Field(description="updated at most once a minute")
    expires_at: datetime | None


class CreatedApiToken(ApiTokenOut):
    """A new token with its secret, `token`, shown this once: send it as `Authorization: Bearer <token>`."""

    token: str


class ApiTokenList(BaseModel):
    """Tokens not revoked, newest first (expired ones included until revoked)."""

    tokens: list[ApiTokenOut]


class TokenListQuery(BaseModel):
    """`all=true`: every user's tokens (admins only)."""

    model_config = ConfigDict(extra="forbid")

    all: bool = False


class TokenParams(BaseModel):
    """The token's id in the path."""

    id: int = Field(ge=1, le=2**63 - 1)


# --------------------------------------------------------------------------- handlers


def token_store(request: web.Request) -> ApiTokenStore:
    """The store of API tokens on the application's pool."""
    return ApiTokenStore(services(request).pool)


def _is_admin(caller: Principal) -> bool:
    return caller.role.includes(Role.ADMIN)


async def create_api_token(request: web.Request) -> web.StreamResponse:
    """Create a token for yourself; its secret is in this answer only."""
    caller = principal(request)
    require_session(request, "create API tokens")
    data = body(request, TokenRequest)
    if data.role is not None and not caller.role.includes(data.role):
        raise ApiError(
            400, "invalid_request", f"role: cannot be above your own role ({caller.role.value})", field="role"
        )
    secret, prefix = new_api_token()
    token = await token_store(request).create(
        caller.user.id,
        data.name,
        prefix=prefix,
        token_hash=token_hash(secret),
        role=data.role,
        expires_in_days=data.expires_in_days,
    )
    out = CreatedApiToken.model_validate({**ApiTokenOut.model_validate(token).model_dump(), "token": secret})
    return json_response(out, status=201)


async def list_api_tokens(request: web.Request) -> web.StreamResponse:
    """Your tokens; with `all=true`, everybody's (admins)."""
    caller = principal(request)
    everybody = query(request, TokenListQuery).all
    if everybody and not _is_admin(caller):
        raise ApiError(403, "forbidden", "listing every user's tokens needs the admin role", field="all")
    found = await token_store(request).list_tokens(None if everybody else caller.user.id)
    return json_response(ApiTokenList(tokens=[ApiTokenOut.model_validate(t) for t in found]))


async def revoke_api_token(request: web.Request) -> web.StreamResponse:
    """Revoke one of your tokens (admins: anyone's); it is refused from the next request on."""
    caller = principal(request)
    token_id = params(request, TokenParams).id
    owner = None if _is_admin(caller) else caller.user.id
    if not await token_store(request).revoke(token_id, owner):
        raise ApiError(404, "api_token_not_found", f"you have no API token {token_id}")
    return web.Response(status=204)


async def tokens_page(request: web.Request) -> web.StreamResponse:
    """The signed-in user's tokens, the form that creates one and the buttons that revoke them."""
    caller = principal(request)
    tokens: list[ApiToken] = await token_store(request).list_tokens(caller.user.id)
    return render(
        request,
        "tokens.html",
        title="API tokens",
        tokens=tokens,
        roles=[role for role in Role if caller.role.includes(role)],
        max_days=MAX_EXPIRY_DAYS,
        now=datetime.now(UTC),
    )


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the ``/api/tokens`` endpoints and the ``/settings/tokens`` page."""
    routes = app[ROUTES]
    tags = ["tokens"]
    routes.add(
        "POST", "/api/tokens", create_api_token, role=Role.VIEWER, summary="Create a personal API token",
        description="The answer holds the secret, `token`, this once; only its SHA-256 is stored. The token "
        "acts as you with at most `role`. Needs a signed-in session: an API token cannot create tokens.",
        body=TokenRequest, responses={201: CreatedApiToken},
        errors={403: "called with an API token (sign in to create one)"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/tokens", list_api_tokens, role=Role.VIEWER, summary="List your API tokens",
        description="Never their secrets. `all=true` lists every user's (admins).",
        query=TokenListQuery, responses={200: ApiTokenList}, errors={403: "all=true without the admin role"},
        tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/tokens/{id}", revoke_api_token, role=Role.VIEWER, summary="Revoke an API token",
        description="Your own; admins may revoke anyone's. Requests with it are refused (401) from then on.",
        params=TokenParams, responses={204: None}, errors={404: "no such token of yours"}, tags=tags,
    )  # fmt: skip
    routes.page("/settings/tokens", tokens_page, role=Role.VIEWER, summary="Your personal API tokens")
