"""Access tokens (JWT, HS256), opaque refresh and invitation tokens, and CSRF tokens.

An access token is short-lived and names the user (``sub``), the role it was issued with, its
login session (``sid``), when it was issued and expires, and a unique ``jti``. The server still
looks the session up on every request, so a revoked session ends its access tokens at once.

Refresh and invitation tokens are random strings of 256 bits; only their SHA-256 is stored,
which is enough for secrets that cannot be guessed (unlike passwords, they need no slow hash).
The CSRF token of a session is an HMAC of its id under the signing secret: it needs no storage,
and a token taken from one session is worthless in another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ISSUER = "appguard"
# Tolerated clock difference between replicas that share the secret.
LEEWAY_SECONDS = 5
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "sid", "role", "iss"]


class TokenError(Exception):
    """An access token that cannot be accepted; ``code`` is ``token_expired`` or ``invalid_token``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The claims of a verified access token that the server uses."""

    user_id: int
    session_id: uuid.UUID
    role: str
    expires_at: int


class TokenCodec:
    """Signs and verifies access tokens and derives CSRF tokens with one secret."""

    def __init__(self, secret: str, access_ttl: float) -> None:
        self._key = secret.encode()
        self.access_ttl = access_ttl

    def issue_access(self, user_id: int, role: str, session_id: uuid.UUID, *, now: float | None = None) -> str:
        """A signed access token for a user's session."""
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "role": role,
            "sid": str(session_id),
            "iat": issued,
            "exp": issued + int(self.access_ttl),
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify_access(self, token: str) -> AccessClaims:
        """The claims of a valid token; :class:`TokenError` otherwise.

        Only HS256 is accepted, so neither ``alg: none`` nor a key confusion can slip through.
        """
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token_expired", "the access token has expired; refresh it") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError("invalid_token", f"the access token is not valid: {exc}") from None
        try:
            return AccessClaims(int(claims["sub"]), uuid.UUID(claims["sid"]), str(claims["role"]), int(claims["exp"]))
        except (TypeError, ValueError):
            raise TokenError("invalid_token", "the access token's claims are malformed") from None

    def csrf_token(self, session_id: uuid.UUID) -> str:
        """The CSRF token of a session (stable for the session's life)."""
        digest = hmac.new(self._key, b"csrf:" + session_id.bytes, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_secret_token() -> str:
    """A fresh random token for a refresh token or an invitation (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """What is stored of a refresh or invitation token."""
    return hashlib.sha256(token.encode()).digest()
