"""Failed-login limits per account and per client address, counted in Redis.

Each key counts failures in a fixed window that starts with the first failure (the key's
expiry). While a count is at its limit, login attempts are refused with ``429`` and a
``Retry-After`` of the seconds left in the window, before any password is checked. A successful
login clears the account's count, not the address's. Keys hold a hash of the email rather than
the email itself.
"""

from __future__ import annotations

import hashlib
import math

import redis.asyncio

from api.errors import ApiError


class LoginLimiter:
    """Counts failed logins and refuses attempts beyond the configured limits."""

    def __init__(
        self, client: redis.asyncio.Redis, prefix: str, *, per_account: int, per_address: int, window: float
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self.per_account = per_account
        self.per_address = per_address
        self.window_ms = int(window * 1000)

    def _keys(self, account: str, address: str) -> tuple[str, str]:
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        return f"{self._prefix}login-failures:account:{digest}", f"{self._prefix}login-failures:address:{address}"

    async def check(self, account: str, address: str) -> None:
        """Raise a 429 :class:`ApiError` if the account or the address is at its limit."""
        account_key, address_key = self._keys(account, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in (account_key, address_key):
                pipe.get(key)
                pipe.pttl(key)
            account_count, account_ttl, address_count, address_ttl = await pipe.execute()
        waits = []
        if int(account_count or 0) >= self.per_account:
            waits.append(("this account", account_ttl))
        if int(address_count or 0) >= self.per_address:
            waits.append(("this address", address_ttl))
        if not waits:
            return
        seconds = max(self._seconds(ttl) for _, ttl in waits)
        who = " and ".join(name for name, _ in waits)
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed sign-ins for {who}; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

    def _seconds(self, pttl: int) -> int:
        # -1 (no expiry) cannot happen with the writes below, but would mean a whole window.
        return max(1, math.ceil((pttl if pttl > 0 else self.window_ms) / 1000))

    async def failed(self, account: str, address: str) -> None:
        """Count one failed attempt for both the account and the address."""
        account_key, address_key = self._keys(account, address)
        async with self._redis.pipeline(transaction=True) as pipe:
            # SET NX starts the window on the first failure; INCR never moves it.
            for key in (account_key, address_key):
                pipe.set(key, 0, px=self.window_ms, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, account: str) -> None:
        """Forget the account's failures after a successful sign-in."""
        account_key, _ = self._keys(account, "")
        await self._redis.delete(account_key)
