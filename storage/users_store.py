"""Accounts in PostgreSQL: users, login sessions, rotating refresh tokens and invitations.

The tables are those of ``migrations/0003_auth.sql``. This module holds the SQL and the rules
that need a transaction to be kept (the first user is the admin, an invitation is used once, the
last active admin stays, a reused refresh token ends its session); hashing passwords, signing
tokens and HTTP live in ``api/``. Token secrets never reach this module, only their SHA-256.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg.errors
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

# Any constant shared by every AppGuard process; it spells "apgusers" in ASCII, truncated to
# fit a bigint. Serialises registrations so that exactly one first user becomes the admin.
REGISTRATION_LOCK_KEY = 0x61_70_67_75_73_65_72


class Role(enum.StrEnum):
    """What a user may do: viewers read, members also change issues, admins also manage users."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Higher ranks include every right of the lower ones."""
        return _RANKS[self]

    def includes(self, other: Role) -> bool:
        """Whether this role has every right of ``other``."""
        return self.rank >= other.rank


_RANKS = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


class RegistrationMode(enum.StrEnum):
    """Who may register once the first user (the admin) exists."""

    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


@dataclass(slots=True)
class User:
    """A user as the API shows it (never the password hash)."""

    id: int
    email: str
    name: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(slots=True)
class Invitation:
    """An invitation to register, as the API shows it (never the token)."""

    id: int
    email: str | None
    role: str
    created_by: int | None
    created_at: datetime
    expires_at: datetime


class RegistrationRefused(Exception):
    """A registration the configured mode or the invitation does not allow.

    ``reason`` is one of ``registration_closed``, ``invitation_required``,
    ``invitation_invalid`` and ``invitation_email_mismatch``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EmailTaken(Exception):
    """Another account already has this email address."""


class LastAdmin(Exception):
    """The change would leave no active admin."""


class Rotation(enum.Enum):
    """What presenting a refresh token led to."""

    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    DISABLED = "disabled"


@dataclass(slots=True)
class RotationResult:
    """The outcome of :meth:`UsersStore.rotate`; ``user`` and ``session_id`` only when rotated."""

    outcome: Rotation
    user: User | None = None
    session_id: uuid.UUID | None = None


_USER_COLUMNS = "id, email, name, role, disabled, created_at, last_login_at"
_INVITATION_COLUMNS = "id, email, role, created_by, created_at, expires_at"


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively and without surrounding blanks."""
    return email.strip().lower()


class UsersStore:
    """Reads and writes the account tables through a pool of autocommit connections."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    # Users.

    async def has_users(self) -> bool:
        """Whether anyone has registered yet (the next registration would be the admin's)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM appguard.users)")
            row = await cur.fetchone()
            return bool(row and row[0])

    async def register(
        self,
        email: str,
        name: str,
        password_hash: str,
        *,
        mode: RegistrationMode,
        default_role: Role,
        invitation_hash: bytes | None,
    ) -> User:
        """Create an account as ``mode`` allows and return it.

        The first account is an admin whatever the mode. Afterwards ``closed`` refuses,
        ``invite`` needs a valid invitation, and ``open`` gives ``default_role`` (or the role of
        an invitation, when one is presented: an invalid one is refused, not ignored). Raises
        :class:`RegistrationRefused` or :class:`EmailTaken`.
        """
        email = normalize_email(email)
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRATION_LOCK_KEY,))
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM appguard.users)")
            row = await cur.fetchone()
            first = not (row and row[0])
            invitation_id: int | None = None
            if first:
                role = Role.ADMIN
            elif mode is RegistrationMode.CLOSED:
                raise RegistrationRefused("registration_closed", "registration is closed; ask an admin for an account")
            elif invitation_hash is None and mode is RegistrationMode.INVITE:
                raise RegistrationRefused("invitation_required", "registration needs an invitation from an admin")
            elif invitation_hash is None:
                role = default_role
            else:
                cur = await conn.execute(
                    "SELECT id, email, role FROM appguard.invitations WHERE token_hash = %s AND accepted_at IS NULL"
                    " AND revoked_at IS NULL AND expires_at > now() FOR UPDATE",
                    (invitation_hash,),
                )
                found = await cur.fetchone()
                if found is None:
                    raise RegistrationRefused(
                        "invitation_invalid", "the invitation is unknown, used, revoked or expired"
                    )
                invitation_id, invited_email, invited_role = found
                if invited_email is not None and invited_email != email:
                    raise RegistrationRefused(
                        "invitation_email_mismatch", "the invitation was made for another email address"
                    )
                role = Role(invited_role)
            try:
                cur = await conn.execute(
                    f"INSERT INTO appguard.users (email, name, password_hash, role) VALUES (%s, %s, %s, %s)"
                    f" RETURNING {_USER_COLUMNS}",
                    (email, name, password_hash, role.value),
                )
            except psycopg.errors.UniqueViolation:
                raise EmailTaken(email) from None
            created = await cur.fetchone()
            assert created is not None
            user = User(*created)
            if invitation_id is not None:
                await conn.execute(
                    "UPDATE appguard.invitations SET accepted_at = now(), accepted_by = %s WHERE id = %s",
                    (user.id, invitation_id),
                )
            return user

    async def credentials(self, email: str) -> tuple[User, str] | None:
        """The account with this email and its password hash, or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {_USER_COLUMNS}, password_hash FROM appguard.users WHERE email = %s",
                (normalize_email(email),),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return User(*row[:-1]), row[-1]

    async def password_hash(self, user_id: int) -> str | None:
        """The stored hash of one user's password."""
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT password_hash FROM appguard.users WHERE id = %s", (user_id,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def get(self, user_id: int) -> User | None:
        """One user by id."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(f"SELECT {_USER_COLUMNS} FROM appguard.users WHERE id = %s", (user_id,))
            return await cur.fetchone()

    async def list_users(self, *, after: int, limit: int) -> list[User]:
        """Users with an id above ``after``, by id, at most ``limit``."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(
                f"SELECT {_USER_COLUMNS} FROM appguard.users WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
            )
            return await cur.fetchall()

    async def update(self, user_id: int, *, role: Role | None = None, disabled: bool | None = None) -> User | None:
        """Change a user's role and/or disabled flag; None if there is no such user.

        Disabling ends the user's sessions. Raises :class:`LastAdmin` when no enabled admin
        would remain.
        """
        async with self._pool.connection() as conn, conn.transaction():
            # Admin rows locked in id order: two admins demoting each other cannot both succeed.
            cur = await conn.execute(
                "SELECT id FROM appguard.users WHERE role = 'admin' AND NOT disabled ORDER BY id FOR UPDATE"
            )
            admins = {r[0] for r in await cur.fetchall()}
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(
                f"UPDATE appguard.users SET role = coalesce(%s, role), disabled = coalesce(%s, disabled),"
                f" updated_at = now() WHERE id = %s RETURNING {_USER_COLUMNS}",
                (None if role is None else role.value, disabled, user_id),
            )
            user = await cur.fetchone()
            if user is None:
                return None
            still_admin = user.role == Role.ADMIN and not user.disabled
            if user_id in admins and not still_admin and len(admins) == 1:
                raise LastAdmin(user_id)
            if disabled:
                await self._revoke_user_sessions(conn, user_id, "account_disabled")
            return user

    async def set_password(self, user_id: int, password_hash: str) -> None:
        """Store a new password hash and end every session of the user."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE appguard.users SET password_hash = %s, password_changed_at = now(), updated_at = now()"
                " WHERE id = %s",
                (password_hash, user_id),
            )
            await self._revoke_user_sessions(conn, user_id, "password_changed")

    # Sessions and refresh tokens.

    async def open_session(
        self, user_id: int, refresh_hash: bytes, ttl: float, *, user_agent: str = "", client_address: str = ""
    ) -> uuid.UUID:
        """Start a login session whose first refresh token has ``refresh_hash``; record the login."""
        session_id = uuid.uuid4()
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO appguard.auth_sessions (id, user_id, expires_at, user_agent, client_address)"
                " VALUES (%s, %s, now() + make_interval(secs => %s), %s, %s)",
                (session_id, user_id, ttl, user_agent[:512], client_address[:64]),
            )
            await conn.execute(
                "INSERT INTO appguard.refresh_tokens (token_hash, session_id, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (refresh_hash, session_id, ttl),
            )
            await conn.execute("UPDATE appguard.users SET last_login_at = now() WHERE id = %s", (user_id,))
        return session_id

    async def session_user(self, user_id: int, session_id: uuid.UUID) -> User | None:
        """The user of a live session: None when the session is revoked, over or not the user's,
        or the user is disabled. Called on every authenticated request."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(User))
            await cur.execute(
                "SELECT u.id, u.email, u.name, u.role, u.disabled, u.created_at, u.last_login_at"
                " FROM appguard.auth_sessions s JOIN appguard.users u ON u.id = s.user_id"
                " WHERE s.id = %s AND u.id = %s AND s.revoked_at IS NULL AND s.expires_at > now() AND NOT u.disabled",
                (session_id, user_id),
            )
            return await cur.fetchone()

    async def session_of_refresh(self, refresh_hash: bytes) -> uuid.UUID | None:
        """The session a refresh token belongs to (whatever its state), or None."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT session_id FROM appguard.refresh_tokens WHERE token_hash = %s", (refresh_hash,)
            )
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def rotate(self, refresh_hash: bytes, new_hash: bytes, ttl: float) -> RotationResult:
        """Exchange a refresh token for a new one of the same session.

        A token presented a second time after its rotation is taken as stolen: the whole
        session is revoked (reason ``refresh_token_reused``), so neither the thief nor the
        owner can go on with it.
        """
        async with self._pool.connection() as conn, conn.transaction():
            # Locking the session row serialises concurrent rotations within one session.
            cur = await conn.execute(
                "SELECT t.session_id, t.expires_at <= now(), t.rotated_at IS NOT NULL, s.revoked_at IS NOT NULL,"
                " u.disabled, u.id"
                " FROM appguard.refresh_tokens t JOIN appguard.auth_sessions s ON s.id = t.session_id"
                " JOIN appguard.users u ON u.id = s.user_id WHERE t.token_hash = %s FOR UPDATE OF t, s",
                (refresh_hash,),
            )
            row = await cur.fetchone()
            if row is None:
                return RotationResult(Rotation.UNKNOWN)
            session_id, expired, rotated, revoked, disabled, user_id = row
            if revoked:
                return RotationResult(Rotation.REVOKED)
            if rotated:
                await self._revoke_session(conn, session_id, "refresh_token_reused")
                return RotationResult(Rotation.REUSED)
            if expired:
                return RotationResult(Rotation.EXPIRED)
            if disabled:
                await self._revoke_session(conn, session_id, "account_disabled")
                return RotationResult(Rotation.DISABLED)
            await conn.execute(
                "UPDATE appguard.refresh_tokens SET rotated_at = now() WHERE token_hash = %s", (refresh_hash,)
            )
            await conn.execute(
                "INSERT INTO appguard.refresh_tokens (token_hash, session_id, expires_at)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))",
                (new_hash, session_id, ttl),
            )
            await conn.execute(
                "UPDATE appguard.auth_sessions SET last_used_at = now(),"
                " expires_at = now() + make_interval(secs => %s) WHERE id = %s",
                (ttl, session_id),
            )
            cur2 = conn.cursor(row_factory=class_row(User))
            await cur2.execute(f"SELECT {_USER_COLUMNS} FROM appguard.users WHERE id = %s", (user_id,))
            user = await cur2.fetchone()
            return RotationResult(Rotation.ROTATED, user, session_id)

    async def revoke_session(self, session_id: uuid.UUID, reason: str) -> None:
        """End one session (its access and refresh tokens stop working)."""
        async with self._pool.connection() as conn:
            await self._revoke_session(conn, session_id, reason)

    async def purge_expired(self, grace: float) -> int:
        """Delete sessions over for more than ``grace`` seconds, with their tokens; return how many."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM appguard.auth_sessions WHERE expires_at < now() - make_interval(secs => %s)", (grace,)
            )
            return cur.rowcount

    @staticmethod
    async def _revoke_session(conn: psycopg.AsyncConnection[Any], session_id: uuid.UUID, reason: str) -> None:
        await conn.execute(
            "UPDATE appguard.auth_sessions SET revoked_at = now(), revoked_reason = %s"
            " WHERE id = %s AND revoked_at IS NULL",
            (reason, session_id),
        )

    @staticmethod
    async def _revoke_user_sessions(conn: psycopg.AsyncConnection[Any], user_id: int, reason: str) -> None:
        await conn.execute(
            "UPDATE appguard.auth_sessions SET revoked_at = now(), revoked_reason = %s"
            " WHERE user_id = %s AND revoked_at IS NULL",
            (reason, user_id),
        )

    # Invitations.

    async def create_invitation(
        self, token_hash: bytes, *, email: str | None, role: Role, created_by: int, ttl: float
    ) -> Invitation:
        """Record an invitation whose token has ``token_hash``."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Invitation))
            await cur.execute(
                "INSERT INTO appguard.invitations (token_hash, email, role, created_by, expires_at)"
                f" VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING {_INVITATION_COLUMNS}",
                (token_hash, None if email is None else normalize_email(email), role.value, created_by, ttl),
            )
            invitation = await cur.fetchone()
        assert invitation is not None
        return invitation

    async def pending_invitations(self) -> list[Invitation]:
        """Invitations not yet used, revoked or expired, newest first."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Invitation))
            await cur.execute(
                f"SELECT {_INVITATION_COLUMNS} FROM appguard.invitations WHERE accepted_at IS NULL"
                " AND revoked_at IS NULL AND expires_at > now() ORDER BY id DESC"
            )
            return await cur.fetchall()

    async def revoke_invitation(self, invitation_id: int) -> bool:
        """Revoke a pending invitation; False if there is no pending one with this id."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE appguard.invitations SET revoked_at = now() WHERE id = %s AND accepted_at IS NULL"
                " AND revoked_at IS NULL",
                (invitation_id,),
            )
            return cur.rowcount > 0
