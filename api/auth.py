"""Authentication: registration, login, token refresh, logout, password change, who am I.

Two ways to hold a session, chosen per login by the ``cookies`` field:

- **API clients** (``cookies: false``, the default) get the access and refresh tokens in the
  JSON body and send ``Authorization: Bearer <access token>``; they refresh by posting the
  refresh token.
- **Browsers** (``cookies: true``, what the dashboard pages send) get three cookies: the access
  token (HttpOnly, SameSite=Lax, path ``/``), the refresh token (HttpOnly, SameSite=Strict,
  path ``/api/auth``) and the CSRF token (readable by scripts, SameSite=Strict). Any unsafe
  request authenticated by cookie must repeat the CSRF token in the ``X-CSRF-Token`` header
  (double submit); the token is an HMAC of the session id, so it cannot be forged or moved to
  another session. The tokens never appear in the body.

Refresh tokens rotate on every use; presenting one that was already rotated revokes its whole
session (somebody else holds a copy). Logout revokes the session; a password change revokes
every session of the user and opens a new one for the caller; a disabled user's sessions end.
Failed sign-ins are limited per account and per address (:mod:`api.ratelimit`).

Machines (CI pipelines) use **personal API tokens** instead (:mod:`api.api_tokens`):
``Authorization: Bearer agt_<random>``, told apart from a JWT by its prefix. A token acts as its
user (who must be active), with the user's role capped by the token's own; it is looked up on
every request, so a revoked token stops working at once. It carries no cookie, so no CSRF check
applies, and it opens no session: it cannot create tokens nor change the password.
"""

from __future__ import annotations

import hmac
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.errors import ApiError, error_response
from api.passwords import MAX_LENGTH, MIN_LENGTH
from api.routing import PUBLIC, ROUTES, Principal, body, json_response, principal
from api.services import Services, services
from api.tokens import TokenError, new_secret_token, token_hash
from storage.api_tokens import SECRET_PREFIX, ApiToken, ApiTokenStore, TokenState
from storage.users_store import EmailTaken, RegistrationRefused, Role, Rotation, User, normalize_email

ACCESS_COOKIE = "appguard_access"
REFRESH_COOKIE = "appguard_refresh"
CSRF_COOKIE = "appguard_csrf"
CSRF_HEADER = "X-CSRF-Token"
REFRESH_COOKIE_PATH = "/api/auth"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_WWW_AUTHENTICATE = 'Bearer realm="appguard"'

#: The ``session_id`` of a caller authenticated by an API token, which has no login session.
NO_SESSION = uuid.UUID(int=0)
_API_TOKEN = web.RequestKey("appguard_api_token", ApiToken)


# Models.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=4096)


def _email(value: str) -> str:
    value = normalize_email(value)
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not an email address")
    return value


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
NewPassword = Annotated[str, Field(min_length=MIN_LENGTH, max_length=MAX_LENGTH)]


class RegisterRequest(_Strict):
    """A new account. `invitation` is the token of an admin's invitation, when needed."""

    email: Email
    password: NewPassword
    name: str = Field(default="", max_length=200)
    invitation: str | None = Field(default=None, max_length=200)
    cookies: bool = False


class LoginRequest(_Strict):
    """Credentials; `cookies: true` keeps the session in cookies (browsers)."""

    email: str = Field(max_length=254)
    password: str = Field(max_length=MAX_LENGTH)
    cookies: bool = False


class RefreshRequest(_Strict):
    """The refresh token, for API clients; browsers send `{}` and the refresh cookie."""

    refresh_token: str | None = Field(default=None, max_length=200)


class LogoutRequest(_Strict):
    """The refresh token of the session to end, for API clients; browsers send `{}`."""

    refresh_token: str | None = Field(default=None, max_length=200)


class PasswordChangeRequest(_Strict):
    """The current password, and the new one."""

    current_password: str = Field(max_length=MAX_LENGTH)
    new_password: NewPassword


class UserOut(BaseModel):
    """A user account."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


class SessionOut(BaseModel):
    """A signed-in session. API clients get `access_token` and `refresh_token`; browsers get
    cookies instead, and `csrf_token` to send in `X-CSRF-Token`."""

    user: UserOut
    token_type: str = "Bearer"
    expires_in: int = Field(description="seconds until the access token expires")
    access_token: str | None = None
    refresh_token: str | None = None
    csrf_token: str | None = None


# Authentication of requests.


class SessionAuthenticator:
    """Authenticates by bearer token or access cookie, against a live session."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The caller; None without credentials; a 401 :class:`ApiError` for bad ones."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise _unauthorized(
                    "invalid_token", "the Authorization header must be: Bearer <access token or API token>"
                )
            if token.startswith(SECRET_PREFIX):
                return await self._api_token(request, token)
            via_cookie = False
        else:
            token = request.cookies.get(ACCESS_COOKIE, "")
            if not token:
                return None
            via_cookie = True
        try:
            claims = self._svc.tokens.verify_access(token)
        except TokenError as exc:
            raise _unauthorized(exc.code, exc.message) from None
        user = await self._svc.users.session_user(claims.user_id, claims.session_id)
        if user is None:
            raise _unauthorized(
                "session_ended",
                "the session has ended (signed out, password changed or account disabled); sign in again",
            )
        return Principal(user=user, role=Role(user.role), session_id=claims.session_id, via_cookie=via_cookie)

    async def _api_token(self, request: web.Request, secret: str) -> Principal:
        found = await ApiTokenStore(self._svc.pool).authenticate(token_hash(secret))
        token, user = found.token, found.user
        if found.state is not TokenState.VALID or token is None or user is None:
            raise _unauthorized(*_api_token_refusal(found.state, token))
        request[_API_TOKEN] = token
        role = token.effective_role(Role(user.role))
        return Principal(user=user, role=role, session_id=NO_SESSION, via_cookie=False)

    def check_csrf(self, request: web.Request, principal: Principal) -> None:
        """Raise 403 unless header and cookie both carry this session's CSRF token."""
        _check_csrf(self._svc, request, principal.session_id)


def calling_token(request: web.Request) -> ApiToken | None:
    """The API token the caller authenticated with; None for a session (or no caller)."""
    return request.get(_API_TOKEN)


def require_session(request: web.Request, action: str) -> None:
    """Raise 403 when the caller holds an API token rather than a signed-in session."""
    if calling_token(request) is not None:
        raise ApiError(
            403,
            "session_required",
            f"an API token cannot {action}; sign in with your email and password (the dashboard) to do it",
        )


def _api_token_refusal(state: TokenState, token: ApiToken | None) -> tuple[str, str]:
    if state is TokenState.REVOKED:
        return "api_token_revoked", "this API token was revoked; create a new one"
    if state is TokenState.EXPIRED and token is not None and token.expires_at is not None:
        when = token.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return "api_token_expired", f"this API token expired on {when}; create a new one"
    if state is TokenState.DISABLED:
        return "account_disabled", "the account this API token belongs to is disabled; ask an admin"
    return "api_token_invalid", "the API token is not valid (unknown or mistyped)"


def _check_csrf(svc: Services, request: web.Request, session_id: uuid.UUID) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    expected = svc.tokens.csrf_token(session_id)
    if not (sent and hmac.compare_digest(sent, cookie) and hmac.compare_digest(sent, expected)):
        raise ApiError(
            403,
            "csrf_failed",
            f"requests authenticated by cookie must send the {CSRF_HEADER} header with the value of the {CSRF_COOKIE} cookie",
        )


def _unauthorized(code: str, message: str, *, bad_token: bool = True) -> ApiError:
    # RFC 6750: error="invalid_token" when a token was presented and refused.
    challenge = f'{_WWW_AUTHENTICATE}, error="invalid_token"' if bad_token else _WWW_AUTHENTICATE
    return ApiError(401, code, message, headers={"WWW-Authenticate": challenge})


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


# Sessions and cookies.


def _session_response(
    svc: Services, user: User, session_id: uuid.UUID, refresh: str, *, cookies: bool, status: int = 200
) -> web.Response:
    access = svc.tokens.issue_access(user.id, user.role, session_id)
    auth = svc.config.auth
    out = SessionOut(user=UserOut.model_validate(user), expires_in=int(auth.access_token_ttl))
    if not cookies:
        out.access_token, out.refresh_token = access, refresh
        return json_response(out, status=status)
    csrf = svc.tokens.csrf_token(session_id)
    out.csrf_token = csrf
    resp = json_response(out, status=status)
    secure = svc.config.cookie_secure
    resp.set_cookie(
        ACCESS_COOKIE,
        access,
        max_age=int(auth.access_token_ttl),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    resp.set_cookie(
        REFRESH_COOKIE,
        refresh,
        max_age=int(auth.refresh_token_ttl),
        path=REFRESH_COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    resp.set_cookie(CSRF_COOKIE, csrf, max_age=int(auth.refresh_token_ttl), path="/", samesite="Strict", secure=secure)
    return resp


def _clear_cookies(resp: web.StreamResponse) -> None:
    resp.del_cookie(ACCESS_COOKIE, path="/")
    resp.del_cookie(REFRESH_COOKIE, path=REFRESH_COOKIE_PATH)
    resp.del_cookie(CSRF_COOKIE, path="/")


async def _open_session(
    svc: Services, request: web.Request, user: User, *, cookies: bool, status: int = 200
) -> web.Response:
    refresh = new_secret_token()
    session_id = await svc.users.open_session(
        user.id,
        token_hash(refresh),
        svc.config.auth.refresh_token_ttl,
        user_agent=request.headers.get("User-Agent", ""),
        client_address=_address(request),
    )
    return _session_response(svc, user, session_id, refresh, cookies=cookies, status=status)


# Handlers.


async def register_user(request: web.Request) -> web.StreamResponse:
    """Create an account and sign it in."""
    svc = services(request)
    data = body(request, RegisterRequest)
    password_hash = await svc.passwords.hash(data.password)
    try:
        user = await svc.users.register(
            data.email,
            data.name.strip(),
            password_hash,
            mode=svc.config.auth.registration,
            default_role=svc.config.auth.default_role,
            invitation_hash=None if data.invitation is None else token_hash(data.invitation),
        )
    except RegistrationRefused as exc:
        field = "invitation" if exc.reason.startswith("invitation") else None
        raise ApiError(403, exc.reason, str(exc), field=field) from None
    except EmailTaken:
        raise ApiError(409, "email_taken", "an account with this email already exists", field="email") from None
    return await _open_session(svc, request, user, cookies=data.cookies, status=201)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the credentials and open a session."""
    svc = services(request)
    data = body(request, LoginRequest)
    email = normalize_email(data.email)
    address = _address(request)
    await svc.limiter.check(email, address)
    found = await svc.users.credentials(email)
    valid = await svc.passwords.verify(found[1] if found is not None else None, data.password)
    if found is None or not valid:
        await svc.limiter.failed(email, address)
        raise _unauthorized("invalid_credentials", "wrong email or password", bad_token=False)
    user = found[0]
    if user.disabled:
        raise ApiError(403, "account_disabled", "this account is disabled; ask an admin")
    await svc.limiter.succeeded(email)
    return await _open_session(svc, request, user, cookies=data.cookies)


_ROTATION_ERRORS = {
    Rotation.UNKNOWN: ("refresh_token_invalid", "the refresh token is not valid; sign in again"),
    Rotation.EXPIRED: ("refresh_token_expired", "the refresh token has expired; sign in again"),
    Rotation.REVOKED: ("session_ended", "the session has ended; sign in again"),
    Rotation.REUSED: (
        "refresh_token_reused",
        "this refresh token was already used; the session has been ended in case it was stolen. Sign in again",
    ),
    Rotation.DISABLED: ("account_disabled", "this account is disabled; ask an admin"),
}


async def refresh(request: web.Request) -> web.StreamResponse:
    """Exchange a refresh token for a new access token and a new refresh token."""
    svc = services(request)
    data = body(request, RefreshRequest)
    cookies = data.refresh_token is None
    token = request.cookies.get(REFRESH_COOKIE, "") if cookies else data.refresh_token or ""
    if not token:
        raise _unauthorized("refresh_token_missing", "send refresh_token in the body, or the refresh cookie")
    hashed = token_hash(token)
    if cookies:
        session_id = await svc.users.session_of_refresh(hashed)
        if session_id is not None:
            _check_csrf(svc, request, session_id)
    new_refresh = new_secret_token()
    result = await svc.users.rotate(hashed, token_hash(new_refresh), svc.config.auth.refresh_token_ttl)
    if result.outcome is not Rotation.ROTATED:
        code, message = _ROTATION_ERRORS[result.outcome]
        resp = error_response(_unauthorized(code, message))
        if cookies:
            _clear_cookies(resp)
        return resp
    assert result.user is not None and result.session_id is not None
    return _session_response(svc, result.user, result.session_id, new_refresh, cookies=cookies)


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session named by the bearer token, the refresh token or the cookies."""
    svc = services(request)
    data = body(request, LogoutRequest)
    session_id: uuid.UUID | None = None
    if "Authorization" in request.headers or (data.refresh_token is None and ACCESS_COOKIE in request.cookies):
        try:
            caller = await SessionAuthenticator(svc).authenticate(request)
        except ApiError:
            caller = None  # an expired or ended session: the refresh token may still name it
        if caller is not None:
            if caller.via_cookie:
                _check_csrf(svc, request, caller.session_id)
            session_id = caller.session_id
    if session_id is None:
        token = data.refresh_token or request.cookies.get(REFRESH_COOKIE, "")
        if token:
            session_id = await svc.users.session_of_refresh(token_hash(token))
            if session_id is not None and data.refresh_token is None:
                _check_csrf(svc, request, session_id)
    if session_id is not None:
        await svc.users.revoke_session(session_id, "logout")
    resp = web.Response(status=204)
    _clear_cookies(resp)
    return resp


async def change_password(request: web.Request) -> web.StreamResponse:
    """Change one's own password: every session ends, and a new one is opened for the caller."""
    svc = services(request)
    caller = principal(request)
    require_session(request, "change the password")
    data = body(request, PasswordChangeRequest)
    address = _address(request)
    await svc.limiter.check(caller.user.email, address)
    stored = await svc.users.password_hash(caller.user.id)
    if not await svc.passwords.verify(stored, data.current_password):
        await svc.limiter.failed(caller.user.email, address)
        raise ApiError(400, "wrong_password", "the current password is wrong", field="current_password")
    await svc.users.set_password(caller.user.id, await svc.passwords.hash(data.new_password))
    return await _open_session(svc, request, caller.user, cookies=caller.via_cookie)


async def me(request: web.Request) -> web.StreamResponse:
    """The signed-in user."""
    return json_response(UserOut.model_validate(principal(request).user))


def register(app: web.Application) -> None:
    """Declare the ``/api/auth`` endpoints."""
    routes = app[ROUTES]
    tags = ["auth"]
    routes.add(
        "POST",
        "/api/auth/register",
        register_user,
        role=PUBLIC,
        summary="Create an account and sign in",
        description="The first account becomes an admin. After that, `auth.registration` decides: "
        "`open` (anyone; the configured default role), `invite` (an admin's invitation token, "
        "whose role is given) or `closed`.",
        body=RegisterRequest,
        responses={201: SessionOut},
        errors={403: "registration closed, or the invitation is missing or not valid", 409: "email taken"},
        tags=tags,
    )
    routes.add(
        "POST",
        "/api/auth/login",
        login,
        role=PUBLIC,
        summary="Sign in",
        description="Failed attempts are limited per account and per client address; beyond the limit "
        "the answer is 429 with Retry-After.",
        body=LoginRequest,
        responses={200: SessionOut},
        errors={401: "wrong email or password", 403: "account disabled", 429: "too many failed attempts"},
        tags=tags,
    )
    routes.add(
        "POST",
        "/api/auth/refresh",
        refresh,
        role=PUBLIC,
        summary="Rotate the refresh token and get a new access token",
        description="A refresh token works once. Presenting one again ends its session. Browsers send `{}` "
        "with the refresh cookie and the X-CSRF-Token header.",
        body=RefreshRequest,
        responses={200: SessionOut},
        errors={401: "refresh token missing, unknown, expired, reused or its session ended", 403: "CSRF token missing"},
        tags=tags,
    )
    routes.add(
        "POST",
        "/api/auth/logout",
        logout,
        role=PUBLIC,
        summary="End the session",
        description="Ends the session of the bearer token, of `refresh_token`, or of the cookies, and clears the cookies.",
        body=LogoutRequest,
        responses={204: None},
        errors={403: "CSRF token missing"},
        tags=tags,
    )
    routes.add(
        "POST",
        "/api/auth/password",
        change_password,
        role=Role.VIEWER,
        summary="Change your password",
        description="Ends every session of the account, then opens a new one for the caller.",
        body=PasswordChangeRequest,
        responses={200: SessionOut},
        errors={403: "called with an API token (a signed-in session is needed)", 429: "too many failed attempts"},
        tags=tags,
    )
    routes.add(
        "GET", "/api/auth/me", me, role=Role.VIEWER, summary="The signed-in user", responses={200: UserOut}, tags=tags
    )
