"""The api extension's authentication over real HTTP, PostgreSQL and Redis.

Registration (first user admin, then by mode), login, refresh rotation and reuse detection,
logout, password change, expired and forged access tokens, browser cookie sessions with CSRF,
disabled accounts and the failed-login rate limits.
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psycopg
import pytest

from api.extension import ApiExtension

# The receiver tests' certificate maker; one helper serves both.
from tests.integration.test_otlp_receiver import _self_signed
from tests.support.api import JWT_SECRET, PASSWORD, ApiClient, client, running_api


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


def sessions(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT u.email, s.revoked_reason FROM appguard.auth_sessions s JOIN appguard.users u ON u.id = s.user_id"
            " ORDER BY s.created_at"
        ).fetchall()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def test_first_user_is_admin_later_ones_get_the_default_role(http: ApiClient, appguard_dsn: str) -> None:
    first = await http.register("Ada@Example.COM", name="Ada")
    assert first.status == 201, first.body
    assert first.body["user"]["role"] == "admin"
    assert first.body["user"]["email"] == "ada@example.com"
    assert first.body["token_type"] == "Bearer" and first.body["expires_in"] == 900
    assert first.body["csrf_token"] is None
    second = await http.register("bob@example.com")
    assert second.status == 201 and second.body["user"]["role"] == "member"
    # The email is unique whatever its case.
    again = await http.register("BOB@example.com")
    assert (again.status, again.error_code, again.body["error"]["field"]) == (409, "email_taken", "email")

    claims = claims_of(first.body["access_token"])
    assert claims["sub"] == str(first.body["user"]["id"]) and claims["role"] == "admin"
    assert {"exp", "iat", "jti", "sid", "iss"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 900

    login = await http.login("ada@example.com")
    assert login.status == 200, login.body
    me = await http.call("GET", "/api/auth/me", token=login.body["access_token"])
    assert me.status == 200 and me.body["email"] == "ada@example.com" and me.body["role"] == "admin"
    assert me.body["last_login_at"] is not None
    with psycopg.connect(appguard_dsn) as conn:
        (stored,) = conn.execute(
            "SELECT password_hash FROM appguard.users WHERE email = 'ada@example.com'"
        ).fetchone() or ("",)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_wrong_password_and_unknown_account_look_the_same(http: ApiClient) -> None:
    await http.register("ada@example.com")
    wrong = await http.login("ada@example.com", "not the password")
    unknown = await http.login("nobody@example.com")
    assert (wrong.status, wrong.error_code) == (401, "invalid_credentials")
    assert (unknown.status, unknown.body) == (401, wrong.body)


async def test_refresh_rotates_and_a_reused_token_ends_the_session(http: ApiClient, appguard_dsn: str) -> None:
    await http.register("ada@example.com")
    login = await http.login("ada@example.com")
    first_refresh = login.body["refresh_token"]

    rotated = await http.call("POST", "/api/auth/refresh", json={"refresh_token": first_refresh})
    assert rotated.status == 200, rotated.body
    second_refresh, second_access = rotated.body["refresh_token"], rotated.body["access_token"]
    assert second_refresh != first_refresh and second_access != login.body["access_token"]
    assert claims_of(second_access)["sid"] == claims_of(login.body["access_token"])["sid"]
    assert (await http.call("GET", "/api/auth/me", token=second_access)).status == 200

    # The first token again: somebody kept a copy. The whole session ends.
    reused = await http.call("POST", "/api/auth/refresh", json={"refresh_token": first_refresh})
    assert (reused.status, reused.error_code) == (401, "refresh_token_reused")
    after = await http.call("POST", "/api/auth/refresh", json={"refresh_token": second_refresh})
    assert (after.status, after.error_code) == (401, "session_ended")
    me = await http.call("GET", "/api/auth/me", token=second_access)
    assert (me.status, me.error_code) == (401, "session_ended")
    assert ("ada@example.com", "refresh_token_reused") in sessions(appguard_dsn)

    unknown = await http.call("POST", "/api/auth/refresh", json={"refresh_token": "x" * 43})
    assert (unknown.status, unknown.error_code) == (401, "refresh_token_invalid")
    missing = await http.call("POST", "/api/auth/refresh", json={})
    assert (missing.status, missing.error_code) == (401, "refresh_token_missing")


async def test_refresh_tokens_are_stored_hashed(http: ApiClient, appguard_dsn: str) -> None:
    await http.register("ada@example.com")
    login = await http.login("ada@example.com")
    with psycopg.connect(appguard_dsn) as conn:
        stored = [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM appguard.refresh_tokens").fetchall()]
    token = login.body["refresh_token"]
    assert len(stored) == 2 and all(len(h) == 32 for h in stored)
    assert all(token.encode() not in h for h in stored)


async def test_logout_ends_the_session_and_only_that_one(http: ApiClient, appguard_dsn: str) -> None:
    await http.register("ada@example.com")
    one = (await http.login("ada@example.com")).body
    two = (await http.login("ada@example.com")).body
    out = await http.call("POST", "/api/auth/logout", json={}, token=one["access_token"])
    assert out.status == 204
    me = await http.call("GET", "/api/auth/me", token=one["access_token"])
    assert (me.status, me.error_code) == (401, "session_ended")
    refreshed = await http.call("POST", "/api/auth/refresh", json={"refresh_token": one["refresh_token"]})
    assert (refreshed.status, refreshed.error_code) == (401, "session_ended")
    assert (await http.call("GET", "/api/auth/me", token=two["access_token"])).status == 200
    # Logging out by refresh token alone works too, and twice is harmless.
    for _ in range(2):
        assert (await http.call("POST", "/api/auth/logout", json={"refresh_token": two["refresh_token"]})).status == 204
    assert (await http.call("GET", "/api/auth/me", token=two["access_token"])).status == 401
    assert [reason for _, reason in sessions(appguard_dsn)].count("logout") == 2


async def test_password_change_ends_every_session_and_opens_a_new_one(http: ApiClient) -> None:
    await http.register("ada@example.com")
    one = (await http.login("ada@example.com")).body
    two = (await http.login("ada@example.com")).body
    wrong = await http.call(
        "POST",
        "/api/auth/password",
        json={"current_password": "not it at all", "new_password": "a brand new password"},
        token=one["access_token"],
    )
    assert (wrong.status, wrong.error_code, wrong.body["error"]["field"]) == (400, "wrong_password", "current_password")
    short = await http.call(
        "POST",
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        token=one["access_token"],
    )
    assert (short.status, short.error_code, short.body["error"]["field"]) == (400, "invalid_request", "new_password")

    changed = await http.call(
        "POST",
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
        token=one["access_token"],
    )
    assert changed.status == 200, changed.body
    for old in (one, two):
        assert (await http.call("GET", "/api/auth/me", token=old["access_token"])).status == 401
        assert (
            await http.call("POST", "/api/auth/refresh", json={"refresh_token": old["refresh_token"]})
        ).status == 401
    assert (await http.call("GET", "/api/auth/me", token=changed.body["access_token"])).status == 200
    assert (await http.login("ada@example.com")).status == 401
    assert (await http.login("ada@example.com", "a brand new password")).status == 200


def _forge(claims: dict[str, Any], *, key: str = JWT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_expired_and_forged_access_tokens_are_refused(http: ApiClient) -> None:
    await http.register("ada@example.com")
    member = await http.register("bob@example.com")
    token = member.body["access_token"]
    claims = claims_of(token)
    now = int(time.time())
    header, _, signature = token.split(".")

    expired = _forge({**claims, "iat": now - 3600, "exp": now - 60})
    wrong_secret = _forge(claims, key="another secret of at least thirty-two bytes")
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    as_admin = f"{header}.{_b64({**claims, 'role': 'admin', 'sub': '1'})}.{signature}"
    other_session = _forge({**claims, "sid": str(uuid.uuid4())})
    wrong_issuer = _forge({**claims, "iss": "someone-else"})
    no_sid = _forge({k: v for k, v in claims.items() if k != "sid"})
    hs512 = _forge(claims, key=JWT_SECRET * 2, alg="HS512")

    cases = {
        "expired": (expired, "token_expired"),
        "wrong secret": (wrong_secret, "invalid_token"),
        "alg none": (unsigned, "invalid_token"),
        "tampered payload": (as_admin, "invalid_token"),
        "unknown session": (other_session, "session_ended"),
        "wrong issuer": (wrong_issuer, "invalid_token"),
        "no sid claim": (no_sid, "invalid_token"),
        "other algorithm": (hs512, "invalid_token"),
        "garbage": ("not.a.jwt", "invalid_token"),
    }
    for name, (forged, code) in cases.items():
        reply = await http.call("GET", "/api/auth/me", token=forged)
        assert (reply.status, reply.error_code) == (401, code), name
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), name
        # Not even a member endpoint accepts it, let alone an admin one.
        assert (await http.call("GET", "/api/users", token=forged)).status == 401, name

    basic = await http.call("GET", "/api/auth/me", headers={"Authorization": "Basic YWRhOnB3"})
    assert (basic.status, basic.error_code) == (401, "invalid_token")
    nothing = await http.call("GET", "/api/auth/me")
    assert (nothing.status, nothing.error_code) == (401, "unauthenticated")
    assert (await http.call("GET", "/api/auth/me", token=token)).status == 200


async def test_browser_session_in_cookies_with_csrf(api: ApiExtension) -> None:
    async with client(api) as admin:
        await admin.register("ada@example.com")
    async with client(api) as browser:
        login = await browser.login("ada@example.com", cookies=True)
        assert login.status == 200, login.body
        assert login.body["access_token"] is None and login.body["refresh_token"] is None
        csrf = login.body["csrf_token"]
        assert csrf and browser.cookie("appguard_csrf") == csrf
        set_cookies = {c.split("=", 1)[0]: c for c in login.headers.getall("Set-Cookie")}
        access, refresh, csrf_cookie = (
            set_cookies[n] for n in ("appguard_access", "appguard_refresh", "appguard_csrf")
        )
        assert "HttpOnly" in access and "SameSite=Lax" in access and "Path=/;" in access + ";"
        assert "HttpOnly" in refresh and "SameSite=Strict" in refresh and "Path=/api/auth" in refresh
        assert "HttpOnly" not in csrf_cookie and "SameSite=Strict" in csrf_cookie
        assert "Secure" not in access  # plain http: cookie_secure is auto

        # Safe methods need no CSRF header.
        assert (await browser.call("GET", "/api/auth/me")).status == 200
        body = {"current_password": PASSWORD, "new_password": "another good password"}
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            refused = await browser.call("POST", "/api/auth/password", json=body, headers=headers)
            assert (refused.status, refused.error_code) == (403, "csrf_failed"), headers
        refused = await browser.call("POST", "/api/auth/refresh", json={})
        assert (refused.status, refused.error_code) == (403, "csrf_failed")
        refused = await browser.call("POST", "/api/auth/logout", json={})
        assert (refused.status, refused.error_code) == (403, "csrf_failed")
        assert (await browser.call("GET", "/api/auth/me")).status == 200

        refreshed = await browser.call("POST", "/api/auth/refresh", json={}, headers={"X-CSRF-Token": csrf})
        assert refreshed.status == 200 and refreshed.body["csrf_token"] == csrf
        assert refreshed.body["refresh_token"] is None

        # A CSRF token of another session of the same user is no good here.
        async with client(api) as other:
            other_csrf = (await other.login("ada@example.com", cookies=True)).body["csrf_token"]
        assert other_csrf != csrf
        refused = await browser.call(
            "POST",
            "/api/auth/password",
            json=body,
            headers={"X-CSRF-Token": other_csrf, "Cookie": f"appguard_csrf={other_csrf}"},
        )
        assert (refused.status, refused.error_code) == (403, "csrf_failed")

        out = await browser.call("POST", "/api/auth/logout", json={}, headers={"X-CSRF-Token": csrf})
        assert out.status == 204
        assert browser.cookie("appguard_access") is None and browser.cookie("appguard_refresh") is None
        assert (await browser.call("GET", "/api/auth/me")).status == 401


async def test_bearer_requests_need_no_csrf_token(http: ApiClient) -> None:
    token = (await http.register("ada@example.com")).body["access_token"]
    changed = await http.call(
        "POST",
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "another good one"},
        token=token,
    )
    assert changed.status == 200


async def test_registration_by_invitation(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> None:
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, auth={"registration": "invite"}) as ext,
        client(ext) as http,
    ):
        admin = await http.register("ada@example.com")
        assert admin.status == 201 and admin.body["user"]["role"] == "admin"
        token = admin.body["access_token"]
        refused = await http.register("bob@example.com")
        assert (refused.status, refused.error_code) == (403, "invitation_required")

        made = await http.call(
            "POST", "/api/users/invitations", json={"email": "Bob@example.com", "role": "viewer"}, token=token
        )
        assert made.status == 201, made.body
        invitation = made.body["token"]
        assert made.body["url"] == f"{http.base}/register?invitation={invitation}"
        assert made.body["email"] == "bob@example.com" and made.body["role"] == "viewer"

        wrong_email = await http.register("eve@example.com", invitation=invitation)
        assert (wrong_email.status, wrong_email.error_code) == (403, "invitation_email_mismatch")
        made_up = await http.register("bob@example.com", invitation="made-up-token")
        assert (made_up.status, made_up.error_code, made_up.body["error"]["field"]) == (
            403,
            "invitation_invalid",
            "invitation",
        )
        bob = await http.register("bob@example.com", invitation=invitation)
        assert bob.status == 201 and bob.body["user"]["role"] == "viewer"
        used = await http.register("carol@example.com", invitation=invitation)
        assert (used.status, used.error_code) == (403, "invitation_invalid")

        # An open invitation (no email) works for anyone, once; a revoked one for nobody.
        anyone = (await http.call("POST", "/api/users/invitations", json={}, token=token)).body
        revoked = (await http.call("POST", "/api/users/invitations", json={"role": "admin"}, token=token)).body
        assert (await http.call("DELETE", f"/api/users/invitations/{revoked['id']}", token=token)).status == 204
        assert (await http.register("dan@example.com", invitation=revoked["token"])).error_code == "invitation_invalid"
        carol = await http.register("carol@example.com", invitation=anyone["token"])
        assert carol.status == 201 and carol.body["user"]["role"] == "member"


async def test_registration_closed(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> None:
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, auth={"registration": "closed"}) as ext,
        client(ext) as http,
    ):
        # Closed or not, somebody has to become the admin.
        admin = await http.register("ada@example.com")
        assert admin.status == 201 and admin.body["user"]["role"] == "admin"
        refused = await http.register("bob@example.com")
        assert (refused.status, refused.error_code) == (403, "registration_closed")
        invite = await http.call("POST", "/api/users/invitations", json={}, token=admin.body["access_token"])
        assert (invite.status, invite.error_code) == (409, "registration_closed")
        page = await http.call("GET", "/register")
        assert page.status == 200 and "Registration is closed" in page.body and "<form" not in page.body
    with psycopg.connect(appguard_dsn) as conn:
        assert conn.execute("SELECT email FROM appguard.users").fetchall() == [("ada@example.com",)]


async def test_open_registration_with_a_configured_default_role_and_an_invitation(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    overrides = {"auth": {"registration": "open", "default_role": "viewer"}}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, **overrides) as ext, client(ext) as http:
        token = (await http.register("ada@example.com")).body["access_token"]
        assert (await http.register("bob@example.com")).body["user"]["role"] == "viewer"
        invitation = (await http.call("POST", "/api/users/invitations", json={"role": "member"}, token=token)).body
        carol = await http.register("carol@example.com", invitation=invitation["token"])
        assert carol.body["user"]["role"] == "member"
        bad = await http.register("dan@example.com", invitation="not-an-invitation")
        assert (bad.status, bad.error_code) == (403, "invitation_invalid")


async def test_first_registrations_racing_make_exactly_one_admin(http: ApiClient) -> None:
    import asyncio

    replies = await asyncio.gather(*(http.register(f"user{i}@example.com") for i in range(6)))
    assert all(r.status == 201 for r in replies)
    assert sorted(r.body["user"]["role"] for r in replies) == ["admin"] + ["member"] * 5


async def test_disabled_user_cannot_log_in_or_refresh(http: ApiClient) -> None:
    admin = (await http.register("ada@example.com")).body
    bob = (await http.register("bob@example.com")).body
    bob_id = bob["user"]["id"]
    disabled = await http.call("PATCH", f"/api/users/{bob_id}", json={"disabled": True}, token=admin["access_token"])
    assert disabled.status == 200 and disabled.body["disabled"] is True

    me = await http.call("GET", "/api/auth/me", token=bob["access_token"])
    assert (me.status, me.error_code) == (401, "session_ended")
    refreshed = await http.call("POST", "/api/auth/refresh", json={"refresh_token": bob["refresh_token"]})
    assert refreshed.status == 401
    login = await http.login("bob@example.com")
    assert (login.status, login.error_code) == (403, "account_disabled")
    # Its wrong-password answer is the ordinary one: being disabled is told only to the owner.
    assert (await http.login("bob@example.com", "wrong password")).error_code == "invalid_credentials"

    enabled = await http.call("PATCH", f"/api/users/{bob_id}", json={"disabled": False}, token=admin["access_token"])
    assert enabled.status == 200 and enabled.body["disabled"] is False
    assert (await http.login("bob@example.com")).status == 200


async def test_failed_logins_are_limited_per_account(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    limits = {"login_per_account": 3, "login_per_address": 100, "window": "10m"}
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, rate_limits=limits) as ext,
        client(ext) as http,
    ):
        await http.register("ada@example.com")
        await http.register("bob@example.com")
        for _ in range(3):
            assert (await http.login("ada@example.com", "guess guess")).status == 401
        limited = await http.login("ada@example.com")  # even the right password
        assert (limited.status, limited.error_code) == (429, "too_many_attempts")
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 600
        # Another account from the same address is not affected.
        assert (await http.login("bob@example.com")).status == 200
        # A success clears the account's count: bob can fail three times again.
        for _ in range(3):
            assert (await http.login("bob@example.com", "guess guess")).status == 401
        assert (await http.login("bob@example.com")).status == 429


async def test_failed_logins_are_limited_per_address(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    limits = {"login_per_account": 100, "login_per_address": 4, "window": "1h"}
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, rate_limits=limits) as ext,
        client(ext) as http,
    ):
        await http.register("ada@example.com")
        for i in range(4):
            assert (await http.login(f"someone{i}@example.com", "guess guess")).status == 401
        limited = await http.login("ada@example.com")
        assert (limited.status, limited.error_code) == (429, "too_many_attempts")
        assert 3000 < int(limited.headers["Retry-After"]) <= 3600
        assert "this address" in limited.body["error"]["message"]


async def test_password_change_with_wrong_passwords_is_rate_limited(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    limits = {"login_per_account": 2, "login_per_address": 100}
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, rate_limits=limits) as ext,
        client(ext) as http,
    ):
        token = (await http.register("ada@example.com")).body["access_token"]
        body = {"current_password": "a wrong guess", "new_password": "whatever it is"}
        for _ in range(2):
            assert (await http.call("POST", "/api/auth/password", json=body, token=token)).status == 400
        limited = await http.call("POST", "/api/auth/password", json=body, token=token)
        assert (limited.status, limited.error_code) == (429, "too_many_attempts")


async def test_tls_serves_https_with_secure_cookies(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    tls = {"cert_file": str(cert_file), "key_file": str(key_file)}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, tls=tls) as ext:
        context = ssl.create_default_context(cafile=str(cert_file))
        body = {"email": "ada@example.com", "password": PASSWORD, "cookies": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"https://127.0.0.1:{ext.port}/api/auth/register", json=body, ssl=context) as resp,
        ):
            assert resp.status == 201
            cookies = resp.headers.getall("Set-Cookie")
            assert len(cookies) == 3 and all("Secure" in c for c in cookies)
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http://127.0.0.1:{ext.port}/api/openapi.json")
