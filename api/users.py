"""User management for admins: list users, change roles, disable accounts, invitations."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Email, UserOut
from api.errors import ApiError
from api.routing import ROUTES, body, json_response, params, principal, query
from api.services import services
from api.tokens import new_secret_token, token_hash
from storage.users_store import LastAdmin, RegistrationMode, Role

# Bounds of an invitation's lifetime when the request sets one.
_MIN_INVITATION_TTL = 60
_MAX_INVITATION_TTL = 90 * 24 * 3600


class UserListQuery(BaseModel):
    """Cursor pagination: users after the id `after`, at most `limit`."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=500)
    after: int = Field(default=0, ge=0)


class UserList(BaseModel):
    """A page of users, by id. `next_cursor` is the `after` of the next page, if any."""

    users: list[UserOut]
    next_cursor: int | None


class UserParams(BaseModel):
    """The user's id in the path."""

    id: int = Field(ge=1)


class UserPatch(BaseModel):
    """The changes to make; give at least one."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> UserPatch:
        if self.role is None and self.disabled is None:
            raise ValueError("give role and/or disabled")
        return self


class InvitationRequest(BaseModel):
    """Who is invited (optional: anyone holding the token, when absent), with which role, for how long."""

    model_config = ConfigDict(extra="forbid")

    email: Email | None = None
    role: Role = Role.MEMBER
    expires_in: int | None = Field(
        default=None,
        ge=_MIN_INVITATION_TTL,
        le=_MAX_INVITATION_TTL,
        description="seconds; default auth.invitation_ttl",
    )


class InvitationOut(BaseModel):
    """A pending invitation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str | None
    role: Role
    created_by: int | None
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationOut):
    """A new invitation with its token, shown this once, and the registration link carrying it."""

    token: str
    url: str


class InvitationList(BaseModel):
    """The pending invitations, newest first."""

    invitations: list[InvitationOut]


class InvitationParams(BaseModel):
    """The invitation's id in the path."""

    id: int = Field(ge=1)


def _base_url(request: web.Request) -> str:
    configured = services(request).config.public_url
    return configured if configured is not None else f"{request.scheme}://{request.host}"


async def list_users(request: web.Request) -> web.StreamResponse:
    """List users by id, a page at a time."""
    page = query(request, UserListQuery)
    found = await services(request).users.list_users(after=page.after, limit=page.limit + 1)
    more = len(found) > page.limit
    users = found[: page.limit]
    next_cursor = users[-1].id if more else None
    headers = {}
    if next_cursor is not None:
        link = f"{_base_url(request)}{request.path}?{urlencode({'after': next_cursor, 'limit': page.limit})}"
        headers["Link"] = f'<{link}>; rel="next"'
    out = UserList(users=[UserOut.model_validate(u) for u in users], next_cursor=next_cursor)
    return json_response(out, headers=headers)


async def update_user(request: web.Request) -> web.StreamResponse:
    """Change a user's role or disable (or re-enable) the account."""
    target = params(request, UserParams)
    change = body(request, UserPatch)
    try:
        user = await services(request).users.update(target.id, role=change.role, disabled=change.disabled)
    except LastAdmin:
        raise ApiError(409, "last_admin", "this would leave no active admin; make someone else admin first") from None
    if user is None:
        raise ApiError(404, "user_not_found", f"there is no user {target.id}")
    return json_response(UserOut.model_validate(user))


async def create_invitation(request: web.Request) -> web.StreamResponse:
    """Invite someone to register."""
    svc = services(request)
    data = body(request, InvitationRequest)
    if svc.config.auth.registration is RegistrationMode.CLOSED:
        raise ApiError(409, "registration_closed", "registration is closed, so an invitation could not be used")
    token = new_secret_token()
    invitation = await svc.users.create_invitation(
        token_hash(token),
        email=data.email,
        role=data.role,
        created_by=principal(request).user.id,
        ttl=float(data.expires_in) if data.expires_in is not None else svc.config.auth.invitation_ttl,
    )
    url = f"{_base_url(request)}/register?{urlencode({'invitation': token})}"
    out = InvitationCreated(**InvitationOut.model_validate(invitation).model_dump(), token=token, url=url)
    return json_response(out, status=201)


async def list_invitations(request: web.Request) -> web.StreamResponse:
    """The invitations not yet used, revoked or expired."""
    found = await services(request).users.pending_invitations()
    return json_response(InvitationList(invitations=[InvitationOut.model_validate(i) for i in found]))


async def revoke_invitation(request: web.Request) -> web.StreamResponse:
    """Revoke a pending invitation."""
    target = params(request, InvitationParams)
    if not await services(request).users.revoke_invitation(target.id):
        raise ApiError(404, "invitation_not_found", f"there is no pending invitation {target.id}")
    return web.Response(status=204)


def register(app: web.Application) -> None:
    """Declare the ``/api/users`` endpoints (all for admins)."""
    routes = app[ROUTES]
    tags = ["users"]
    routes.add(
        "GET",
        "/api/users",
        list_users,
        role=Role.ADMIN,
        summary="List users",
        description='By id. A `Link: <...>; rel="next"` header points to the next page when there is one.',
        query=UserListQuery,
        responses={200: UserList},
        tags=tags,
    )
    routes.add(
        "PATCH",
        "/api/users/{id}",
        update_user,
        role=Role.ADMIN,
        summary="Change a user's role or disable the account",
        description="Disabling ends the user's sessions at once. The last active admin cannot be demoted or disabled.",
        params=UserParams,
        body=UserPatch,
        responses={200: UserOut},
        errors={404: "no such user", 409: "the last active admin"},
        tags=tags,
    )
    routes.add(
        "POST",
        "/api/users/invitations",
        create_invitation,
        role=Role.ADMIN,
        summary="Invite someone to register",
        description="The token is returned once; only its hash is stored.",
        body=InvitationRequest,
        responses={201: InvitationCreated},
        errors={409: "registration is closed"},
        tags=tags,
    )
    routes.add(
        "GET",
        "/api/users/invitations",
        list_invitations,
        role=Role.ADMIN,
        summary="List pending invitations",
        responses={200: InvitationList},
        tags=tags,
    )
    routes.add(
        "DELETE",
        "/api/users/invitations/{id}",
        revoke_invitation,
        role=Role.ADMIN,
        summary="Revoke an invitation",
        params=InvitationParams,
        responses={204: None},
        errors={404: "no such pending invitation"},
        tags=tags,
    )
