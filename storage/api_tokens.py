"""Personal API tokens in PostgreSQL (``migrations/0010_api_tokens.sql``).

A token belongs to a user and acts as that user, with at most the role it was created with.
This module stores and finds tokens by the SHA-256 of their secret; making secrets and reading
them from requests is the API's business (``api/api_tokens.py``, ``api/auth.py``), so a secret
never reaches this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from storage.users_store import Role, User

#: How every token's secret starts, so that the API tells it from a JWT (and secret scanners
#: can find leaked ones): ``agt_`` then 43 URL-safe characters (256 random bits).
SECRET_PREFIX = "agt_"
#: ``last_used_at`` is written at most this often per token (seconds).
TOUCH_INTERVAL = 60.0

_COLUMNS = (
    "t.id, t.user_id, u.email AS user_email, t.name, t.prefix, t.role, t.created_at, t.last_used_at,"
    " t.expires_at, t.revoked_at"
)
# The user's, beside _COLUMNS (which already has the id and email): names that do not clash.
_USER_COLUMNS = "u.name AS user_name, u.role AS user_role, u.disabled, u.created_at AS user_created_at, u.last_login_at"


@dataclass(slots=True)
class ApiToken:
    """A token as the API shows it: never its secret nor its hash.

    ``role`` is the cap chosen at creation (None: the user's role, whatever it is).
    """

    id: int
    user_id: int
    user_email: str
    name: str
    prefix: str
    role: str | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def effective_role(self, user_role: Role) -> Role:
        """What the token may do for a user who now has ``user_role``: the lower of the two."""
        if self.role is None:
            return user_role
        cap = Role(self.role)
        return cap if user_role.includes(cap) else user_role


class TokenState(enum.Enum):
    """What presenting a token's secret led to."""

    VALID = "valid"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    DISABLED = "disabled"


@dataclass(slots=True)
class TokenLookup:
    """The outcome of :meth:`ApiTokenStore.authenticate`; ``token`` and ``user`` unless unknown."""

    state: TokenState
    token: ApiToken | None = None
    user: User | None = None


class ApiTokenStore:
    """Creates, lists, revokes and checks API tokens through a pool of autocommit connections."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def create(
        self,
        user_id: int,
        name: str,
        *,
        prefix: str,
        token_hash: bytes,
        role: Role | None,
        expires_in_days: int | None,
    ) -> ApiToken:
        """Record a token of ``user_id`` whose secret has ``token_hash``."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiToken))
            await cur.execute(
                "WITH t AS (INSERT INTO appguard.api_tokens (user_id, name, prefix, token_hash, role, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(days => %s)) RETURNING *)"
                f" SELECT {_COLUMNS} FROM t JOIN appguard.users u ON u.id = t.user_id",
                (user_id, name, prefix, token_hash, None if role is None else role.value, expires_in_days),
            )
            token = await cur.fetchone()
        assert token is not None
        return token

    async def list_tokens(self, user_id: int | None) -> list[ApiToken]:
        """The tokens not revoked of one user (of every user when ``user_id`` is None), newest first.

        Expired tokens are listed (their ``expires_at`` says so) until someone revokes them.
        """
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiToken))
            await cur.execute(
                f"SELECT {_COLUMNS} FROM appguard.api_tokens t JOIN appguard.users u ON u.id = t.user_id"
                " WHERE t.revoked_at IS NULL AND (%(user)s::bigint IS NULL OR t.user_id = %(user)s)"
                " ORDER BY t.id DESC",
                {"user": user_id},
            )
            return await cur.fetchall()

    async def revoke(self, token_id: int, user_id: int | None) -> bool:
        """Revoke a token of ``user_id`` (of anyone when None); False if there is no such token.

        Revoking a revoked token again changes nothing and answers True.
        """
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE appguard.api_tokens SET revoked_at = coalesce(revoked_at, now())"
                " WHERE id = %(id)s AND (%(user)s::bigint IS NULL OR user_id = %(user)s)",
                {"id": token_id, "user": user_id},
            )
            return cur.rowcount > 0

    async def authenticate(self, token_hash: bytes) -> TokenLookup:
        """The token whose secret has ``token_hash``, its user, and whether it may be used.

        Called on every request that presents a token, so it is one statement: the lookup, and
        (for a usable token not used within :data:`TOUCH_INTERVAL`) the update of ``last_used_at``.
        """
        async with self._pool.connection() as conn:
            # A data-modifying WITH runs to completion even though the SELECT does not read it.
            cur = await conn.execute(
                "WITH found AS ("
                f" SELECT {_COLUMNS}, {_USER_COLUMNS},"
                " t.revoked_at IS NOT NULL AS revoked, coalesce(t.expires_at <= now(), false) AS expired"
                " FROM appguard.api_tokens t JOIN appguard.users u ON u.id = t.user_id WHERE t.token_hash = %s"
                "), touched AS ("
                " UPDATE appguard.api_tokens t SET last_used_at = now() FROM found f"
                " WHERE t.id = f.id AND NOT f.revoked AND NOT f.expired AND NOT f.disabled"
                " AND (t.last_used_at IS NULL OR t.last_used_at < now() - make_interval(secs => %s))"
                ") SELECT * FROM found",
                (token_hash, TOUCH_INTERVAL),
            )
            row = await cur.fetchone()
        if row is None:
            return TokenLookup(TokenState.UNKNOWN)
        token = ApiToken(*row[:10])
        name, role, disabled, created_at, last_login_at, revoked, expired = row[10:]
        user = User(token.user_id, token.user_email, name, role, disabled, created_at, last_login_at)
        if revoked:
            state = TokenState.REVOKED
        elif expired:
            state = TokenState.EXPIRED
        elif user.disabled:
            state = TokenState.DISABLED
        else:
            state = TokenState.VALID
        return TokenLookup(state, token, user)
