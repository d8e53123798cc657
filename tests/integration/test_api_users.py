"""User management over HTTP: the list and its pages, role changes, disabling, invitations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.extension import ApiExtension
from tests.support.api import ApiClient, client, running_api


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    overrides: dict[str, Any] = {"public_url": "https://guard.example.com/"}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, **overrides) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


@pytest.fixture
async def admin(http: ApiClient) -> str:
    reply = await http.register("admin@example.com")
    assert reply.status == 201
    return str(reply.body["access_token"])


async def test_users_are_listed_a_page_at_a_time(http: ApiClient, admin: str) -> None:
    await asyncio.gather(*(http.register(f"user{i}@example.com") for i in range(6)))
    seen: list[str] = []
    path = "/api/users?limit=3"
    pages = 0
    while True:
        reply = await http.call("GET", path, token=admin)
        assert reply.status == 200, reply.body
        pages += 1
        seen += [u["email"] for u in reply.body["users"]]
        assert all("password" not in str(k) for u in reply.body["users"] for k in u)
        link = reply.headers.get("Link")
        if reply.body["next_cursor"] is None:
            assert link is None
            break
        # The Link header is built on public_url and carries the cursor.
        assert link == f'<https://guard.example.com/api/users?after={reply.body["next_cursor"]}&limit=3>; rel="next"'
        path = link[1 : link.index(">")].removeprefix("https://guard.example.com")
    assert pages == 3
    assert sorted(seen) == sorted(["admin@example.com", *(f"user{i}@example.com" for i in range(6))])
    assert len(set(seen)) == 7
    for bad in ("limit=0", "limit=501", "after=-1", "limit=ten"):
        reply = await http.call("GET", f"/api/users?{bad}", token=admin)
        assert (reply.status, reply.error_code) == (400, "invalid_parameter"), bad


async def test_role_changes_and_the_last_admin(http: ApiClient, admin: str, appguard_dsn: str) -> None:
    me = (await http.call("GET", "/api/auth/me", token=admin)).body
    bob = (await http.register("bob@example.com")).body
    for change in ({"role": "member"}, {"disabled": True}, {"role": "viewer", "disabled": False}):
        refused = await http.call("PATCH", f"/api/users/{me['id']}", json=change, token=admin)
        assert (refused.status, refused.error_code) == (409, "last_admin"), change
    promoted = await http.call("PATCH", f"/api/users/{bob['user']['id']}", json={"role": "admin"}, token=admin)
    assert promoted.status == 200 and promoted.body["role"] == "admin"
    # With a second admin, the first may step down.
    demoted = await http.call("PATCH", f"/api/users/{me['id']}", json={"role": "viewer"}, token=admin)
    assert demoted.status == 200 and demoted.body["role"] == "viewer"
    assert (await http.call("GET", "/api/users", token=admin)).status == 403
    # A disabled admin does not count as one.
    bob_token = bob["access_token"]
    refused = await http.call("PATCH", f"/api/users/{bob['user']['id']}", json={"disabled": True}, token=bob_token)
    assert (refused.status, refused.error_code) == (409, "last_admin")
    with psycopg.connect(appguard_dsn) as conn:
        roles = conn.execute("SELECT email, role, disabled FROM appguard.users ORDER BY id").fetchall()
    assert roles == [("admin@example.com", "viewer", False), ("bob@example.com", "admin", False)]


async def test_patch_validation_and_unknown_users(http: ApiClient, admin: str) -> None:
    missing = await http.call("PATCH", "/api/users/999999", json={"role": "member"}, token=admin)
    assert (missing.status, missing.error_code) == (404, "user_not_found")
    empty = await http.call("PATCH", "/api/users/1", json={}, token=admin)
    assert (empty.status, empty.error_code) == (400, "invalid_request")
    assert "role and/or disabled" in empty.body["error"]["message"]
    wrong = await http.call("PATCH", "/api/users/1", json={"disabled": "yes please"}, token=admin)
    assert (wrong.status, wrong.body["error"]["field"]) == (400, "disabled")
    extra = await http.call("PATCH", "/api/users/1", json={"role": "admin", "email": "x@y.z"}, token=admin)
    assert (extra.status, extra.body["error"]["field"]) == (400, "email")


async def test_invitations_are_listed_until_used_and_can_be_revoked(
    http: ApiClient, admin: str, appguard_dsn: str
) -> None:
    first = await http.call("POST", "/api/users/invitations", json={"email": "Bob@Example.com"}, token=admin)
    assert first.status == 201
    assert first.body["url"].startswith("https://guard.example.com/register?invitation=")
    assert first.body["role"] == "member" and first.body["email"] == "bob@example.com"
    second = await http.call("POST", "/api/users/invitations", json={"role": "viewer", "expires_in": 3600}, token=admin)
    assert second.status == 201
    listed = await http.call("GET", "/api/users/invitations", token=admin)
    assert [i["id"] for i in listed.body["invitations"]] == [second.body["id"], first.body["id"]]
    assert all("token" not in i for i in listed.body["invitations"])

    assert (await http.register("bob@example.com", invitation=first.body["token"])).status == 201
    assert (await http.call("DELETE", f"/api/users/invitations/{second.body['id']}", token=admin)).status == 204
    again = await http.call("DELETE", f"/api/users/invitations/{second.body['id']}", token=admin)
    assert (again.status, again.error_code) == (404, "invitation_not_found")
    assert (await http.call("GET", "/api/users/invitations", token=admin)).body == {"invitations": []}

    for bad in ({"expires_in": 5}, {"expires_in": 10**9}, {"role": "root"}, {"email": "not an email"}):
        reply = await http.call("POST", "/api/users/invitations", json=bad, token=admin)
        assert reply.status == 400, bad
    with psycopg.connect(appguard_dsn) as conn:
        stored = conn.execute("SELECT token_hash FROM appguard.invitations").fetchall()
    tokens = {first.body["token"].encode(), second.body["token"].encode()}
    assert len(stored) == 2 and not any(bytes(h) in tokens for (h,) in stored)


async def test_an_expired_invitation_is_refused(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, auth={"registration": "invite"}) as ext,
        client(ext) as http,
    ):
        token = (await http.register("admin@example.com")).body["access_token"]
        made = (await http.call("POST", "/api/users/invitations", json={}, token=token)).body
        with psycopg.connect(appguard_dsn) as conn:
            conn.execute("UPDATE appguard.invitations SET expires_at = now() - interval '1 second'")
        reply = await http.register("bob@example.com", invitation=made["token"])
        assert (reply.status, reply.error_code) == (403, "invitation_invalid")
