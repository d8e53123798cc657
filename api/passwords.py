"""Password hashing with argon2id, off the event loop.

A hash takes tens of milliseconds of CPU and 64 MiB by design (argon2-cffi's defaults, the
RFC 9106 low-memory profile), so it runs in a worker thread. Checking a login for an unknown
email still hashes once, against a dummy hash, so that the response time does not tell whether
an account exists.
"""

from __future__ import annotations

import asyncio
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
# argon2 accepts any length, but hashing megabytes on request is a cheap denial of service.
MAX_LENGTH = 1024


class Passwords:
    """Hashes and verifies passwords."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash("appguard: no such account")

    async def hash(self, password: str) -> str:
        """The PHC-format argon2id hash of ``password``."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no stored hash, spend the same time and say no."""
        return await asyncio.to_thread(self._verify, stored_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            if stored_hash is None:
                self._hasher.verify(self._dummy_hash, password)
                return False
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
