"""Personal API tokens over HTTP against the real PostgreSQL: created by a signed-in user with the
secret shown once, used as ``Authorization: Bearer agt_...`` with the user's role capped by the
token's, listed without secrets, revoked, expired and disabled tokens refused at the next request,
tokens that cannot mint tokens, a viewer's token that cannot upload source maps, and the row as
stored (a SHA-256, never the secret)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import pytest

from api.extension import ApiExtension
from collector.sourcemaps_cli import multipart
from tests.support.api import ApiClient, Reply, client

MAPS = "/api/projects/1/releases/1.0.0/sourcemaps"
SOURCE_MAP = json.dumps({"version": 3, "sources": ["a.js"], "names": [], "mappings": "AAAA"}).encode()


def rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), args).fetchall()


def execute(dsn: str, sql: str, *args: Any) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.encode(), args)


async def create(http: ApiClient, session: str, name: str = "ci", **fields: Any) -> Reply:
    return await http.call("POST", "/api/tokens", json={"name": name, **fields}, token=session)


async def new_token(http: ApiClient, session: str, name: str = "ci", **fields: Any) -> dict[str, Any]:
    reply = await create(http, session, name, **fields)
    assert reply.status == 201, reply.body
    return dict(reply.body)


async def upload_map(http: ApiClient, token: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    body, content_type = multipart([("~/static/a.js.map", "a.js.map", SOURCE_MAP)])
    sent = {"Content-Type": content_type, **(headers or {})}
    return await http.call("POST", MAPS, data=body, token=token, headers=sent)


async def test_a_token_is_shown_once_and_acts_as_its_user(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    made = await new_token(http, tokens["member"], "ci source maps")
    secret = made["token"]
    assert secret.startswith("agt_") and len(secret) == 4 + 43
    assert made["prefix"] == secret[:12]
    assert (made["name"], made["role"], made["user_email"], made["expires_at"]) == (
        "ci source maps", None, "member@example.com", None
    )  # fmt: skip
    assert made["last_used_at"] is None

    me = await http.call("GET", "/api/auth/me", token=secret)
    assert (me.status, me.body["email"], me.body["role"]) == (200, "member@example.com", "member")
    # A member-only endpoint, and what the token is for: a source map upload (no CSRF asked).
    uploaded = await upload_map(http, secret)
    assert uploaded.status == 201, uploaded.body
    deleted = await http.call("DELETE", f"{MAPS}/{uploaded.body['sourcemaps'][0]['id']}", token=secret)
    assert deleted.status == 204

    # Stored: the SHA-256 of the secret and a prefix to show; the secret in no column.
    [row] = rows(appguard_dsn, "SELECT * FROM appguard.api_tokens")
    [(token_hash, prefix, last_used)] = rows(appguard_dsn, "SELECT token_hash, prefix, last_used_at FROM appguard.api_tokens")
    assert bytes(token_hash) == hashlib.sha256(secret.encode()).digest()
    assert prefix == secret[:12]
    assert last_used is not None
    stored = [bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row]
    assert not any(secret.encode() in value for value in stored)

    # The secret is never shown again.
    listed = await http.call("GET", "/api/tokens", token=tokens["member"])
    assert [t["id"] for t in listed.body["tokens"]] == [made["id"]]
    assert "token" not in listed.body["tokens"][0] and secret not in json.dumps(listed.body)


async def test_the_role_is_capped_by_the_token_and_never_above_the_user(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    capped = (await new_token(http, tokens["admin"], "admin as member", role="member"))["token"]
    assert (await http.call("GET", "/api/users", token=tokens["admin"])).status == 200
    refused = await http.call("GET", "/api/users", token=capped)
    assert (refused.status, refused.error_code) == (403, "forbidden")
    assert "you are member" in refused.body["error"]["message"]
    assert (await upload_map(http, capped)).status == 201

    viewer_cap = (await new_token(http, tokens["admin"], "read only", role="viewer"))["token"]
    assert (await http.call("GET", MAPS, token=viewer_cap)).status == 200
    denied = await upload_map(http, viewer_cap)
    assert (denied.status, denied.error_code) == (403, "forbidden")

    above = await create(http, tokens["member"], "too much", role="admin")
    assert (above.status, above.body["error"]["field"]) == (400, "role")
    assert "member" in above.body["error"]["message"]

    # Uncapped, a token follows its user's role as it changes.
    member_token = (await new_token(http, tokens["member"]))["token"]
    assert (await upload_map(http, member_token)).status == 201
    [(member_id,)] = rows(appguard_dsn, "SELECT id FROM appguard.users WHERE email = 'member@example.com'")
    demoted = await http.call("PATCH", f"/api/users/{member_id}", json={"role": "viewer"}, token=tokens["admin"])
    assert demoted.status == 200
    after = await upload_map(http, member_token)
    assert (after.status, after.error_code) == (403, "forbidden")
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.source_maps") == [(1,)]


async def test_a_viewers_token_cannot_upload_source_maps(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    secret = (await new_token(http, tokens["viewer"]))["token"]
    assert (await http.call("GET", MAPS, token=secret)).status == 200
    reply = await upload_map(http, secret)
    assert (reply.status, reply.error_code) == (403, "forbidden")
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.source_maps") == [(0,)]


async def test_listing_shows_own_tokens_and_admins_see_all(http: ApiClient, tokens: dict[str, str]) -> None:
    first = await new_token(http, tokens["member"], "first")
    second = await new_token(http, tokens["member"], "second", expires_in_days=30)
    theirs = await new_token(http, tokens["admin"], "admin's")
    mine = await http.call("GET", "/api/tokens", token=tokens["member"])
    assert [t["name"] for t in mine.body["tokens"]] == ["second", "first"]
    text = json.dumps(mine.body)
    assert all(made["token"] not in text for made in (first, second, theirs))

    everybody = await http.call("GET", "/api/tokens?all=true", token=tokens["member"])
    assert (everybody.status, everybody.error_code) == (403, "forbidden")
    everybody = await http.call("GET", "/api/tokens?all=true", token=tokens["admin"])
    assert [(t["name"], t["user_email"]) for t in everybody.body["tokens"]] == [
        ("admin's", "admin@example.com"), ("second", "member@example.com"), ("first", "member@example.com")
    ]  # fmt: skip
    # A token may list its user's tokens too.
    by_token = await http.call("GET", "/api/tokens", token=first["token"])
    assert [t["id"] for t in by_token.body["tokens"]] == [second["id"], first["id"]]


async def test_a_revoked_token_is_refused_at_the_next_request(http: ApiClient, tokens: dict[str, str]) -> None:
    made = await new_token(http, tokens["member"])
    assert (await http.call("GET", "/api/auth/me", token=made["token"])).status == 200
    done = await http.call("DELETE", f"/api/tokens/{made['id']}", token=tokens["member"])
    assert done.status == 204
    refused = await http.call("GET", "/api/auth/me", token=made["token"])
    assert (refused.status, refused.error_code) == (401, "api_token_revoked")
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert (await http.call("GET", "/api/tokens", token=tokens["member"])).body == {"tokens": []}

    # Another user's token is not found; an admin revokes anyone's.
    admins = await new_token(http, tokens["admin"])
    members = await new_token(http, tokens["member"])
    other = await http.call("DELETE", f"/api/tokens/{admins['id']}", token=tokens["member"])
    assert (other.status, other.error_code) == (404, "api_token_not_found")
    assert (await http.call("GET", "/api/auth/me", token=admins["token"])).status == 200
    assert (await http.call("DELETE", f"/api/tokens/{members['id']}", token=tokens["admin"])).status == 204
    assert (await http.call("GET", "/api/auth/me", token=members["token"])).error_code == "api_token_revoked"
    missing = await http.call("DELETE", "/api/tokens/999999", token=tokens["admin"])
    assert missing.status == 404


async def test_an_expired_token_is_refused(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    made = await new_token(http, tokens["member"], expires_in_days=7)
    [(created, expires)] = rows(
        appguard_dsn, "SELECT created_at, expires_at FROM appguard.api_tokens WHERE id = %s", made["id"]
    )
    assert (expires - created).days == 7
    assert (await http.call("GET", "/api/auth/me", token=made["token"])).status == 200
    execute(appguard_dsn, "UPDATE appguard.api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s", made["id"])
    refused = await http.call("GET", "/api/auth/me", token=made["token"])
    assert (refused.status, refused.error_code) == (401, "api_token_expired")
    assert "expired on" in refused.body["error"]["message"]
    # Still listed, so that its owner sees why the pipeline fails.
    assert [t["id"] for t in (await http.call("GET", "/api/tokens", token=tokens["member"])).body["tokens"]] == [made["id"]]


async def test_a_disabled_users_tokens_are_refused(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    made = await new_token(http, tokens["member"])
    [(member_id,)] = rows(appguard_dsn, "SELECT id FROM appguard.users WHERE email = 'member@example.com'")
    off = await http.call("PATCH", f"/api/users/{member_id}", json={"disabled": True}, token=tokens["admin"])
    assert off.status == 200
    refused = await http.call("GET", "/api/auth/me", token=made["token"])
    assert (refused.status, refused.error_code) == (401, "account_disabled")
    on = await http.call("PATCH", f"/api/users/{member_id}", json={"disabled": False}, token=tokens["admin"])
    assert on.status == 200
    assert (await http.call("GET", "/api/auth/me", token=made["token"])).status == 200


async def test_unknown_and_mistyped_tokens_are_refused(http: ApiClient, tokens: dict[str, str]) -> None:
    made = await new_token(http, tokens["member"])
    for wrong in ("agt_" + "A" * 43, made["token"][:-1], "agt_"):
        reply = await http.call("GET", "/api/auth/me", token=wrong)
        assert (reply.status, reply.error_code) == (401, "api_token_invalid"), wrong


async def test_a_token_cannot_create_tokens_nor_change_the_password(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    secret = (await new_token(http, tokens["admin"]))["token"]
    reply = await create(http, secret, "child")
    assert (reply.status, reply.error_code) == (403, "session_required")
    assert "sign in" in reply.body["error"]["message"]
    password = await http.call(
        "POST", "/api/auth/password", json={"current_password": "x" * 8, "new_password": "y" * 12}, token=secret
    )
    assert (password.status, password.error_code) == (403, "session_required")
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.api_tokens") == [(1,)]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ci", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ci", "expires_in_days": 3651}, "expires_in_days"),
        ({"name": "ci", "role": "owner"}, "role"),
        ({"name": "ci", "scopes": ["all"]}, "scopes"),
        ({}, "name"),
    ],
)
async def test_bad_requests_name_the_field(
    http: ApiClient, tokens: dict[str, str], fields: dict[str, Any], field: str, appguard_dsn: str
) -> None:
    reply = await http.call("POST", "/api/tokens", json=fields, token=tokens["member"])
    assert (reply.status, reply.body["error"]["field"]) == (400, field)
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.api_tokens") == [(0,)]


async def test_last_used_is_written_at_most_once_a_minute(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    made = await new_token(http, tokens["member"])

    def last_used() -> Any:
        [(value,)] = rows(appguard_dsn, "SELECT last_used_at FROM appguard.api_tokens WHERE id = %s", made["id"])
        return value

    assert last_used() is None
    await http.call("GET", "/api/auth/me", token=made["token"])
    assert last_used() is not None
    execute(appguard_dsn, "UPDATE appguard.api_tokens SET last_used_at = now() - interval '30 seconds' WHERE id = %s", made["id"])
    recent = last_used()
    await http.call("GET", "/api/auth/me", token=made["token"])
    assert last_used() == recent
    execute(appguard_dsn, "UPDATE appguard.api_tokens SET last_used_at = now() - interval '2 minutes' WHERE id = %s", made["id"])
    old = last_used()
    await http.call("GET", "/api/auth/me", token=made["token"])
    assert last_used() > old
    listed = (await http.call("GET", "/api/tokens", token=tokens["member"])).body["tokens"]
    assert listed[0]["last_used_at"] is not None


async def test_a_browser_session_creates_tokens_with_the_csrf_header_and_sees_them_on_its_page(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str]
) -> None:
    async with client(api) as browser:
        csrf = (await browser.login("member@example.com", cookies=True)).body["csrf_token"]
        forged = await browser.call("POST", "/api/tokens", json={"name": "forged"})
        assert (forged.status, forged.error_code) == (403, "csrf_failed")
        made = await browser.call("POST", "/api/tokens", json={"name": "deploys"}, headers={"X-CSRF-Token": csrf})
        assert made.status == 201, made.body
        page = await browser.call("GET", "/settings/tokens")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "deploys" in page.body and made.body["prefix"] in page.body
        assert made.body["token"] not in page.body and "forged" not in page.body
        # The role menu offers no role above the user's.
        assert '<option value="member">' in page.body and '<option value="admin">' not in page.body
        revoked = await browser.call("DELETE", f"/api/tokens/{made.body['id']}", headers={"X-CSRF-Token": csrf})
        assert revoked.status == 204
        assert "deploys" not in (await browser.call("GET", "/settings/tokens")).body
    async with client(api) as stranger:
        away = await stranger.call("GET", "/settings/tokens", allow_redirects=False)
        assert away.status == 303 and away.headers["Location"].startswith("/login?next=")
