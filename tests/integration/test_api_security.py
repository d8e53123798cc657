"""Attacks on the api extension, each refused with a clear error and no change to the data.

SQL injection in every login, registration and user-management field; access to another
role's endpoints (every admin and member route of the route table, as it grows); CSRF on
cookie sessions; oversized, malformed and mistyped bodies; routes added behind the table's back;
open redirects and script injection on the pages.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from aiohttp import web

from api.app import build_app
from api.extension import ApiExtension
from api.routing import PUBLIC, ROUTES, RouteDeclarationError, RouteTable, json_response
from storage.users_store import Role
from tests.support.api import PASSWORD, ApiClient, client, running_api


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    overrides: dict[str, Any] = {"max_request_body_size": 4096, "rate_limits": {"login_per_address": 1000}}
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, **overrides) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


def snapshot(dsn: str) -> list[tuple[Any, ...]]:
    """Every account as stored, to compare before and after an attack."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, email, name, role, disabled, password_hash FROM appguard.users ORDER BY id"
        ).fetchall()


async def _people(http: ApiClient) -> dict[str, dict[str, Any]]:
    """An admin, a member and a viewer, with their sessions."""
    admin = (await http.register("admin@example.com")).body
    member = (await http.register("member@example.com")).body
    viewer = (await http.register("viewer@example.com")).body
    changed = await http.call(
        "PATCH", f"/api/users/{viewer['user']['id']}", json={"role": "viewer"}, token=admin["access_token"]
    )
    assert changed.status == 200
    return {"admin": admin, "member": member, "viewer": viewer}


INJECTIONS = [
    "' OR '1'='1",
    "admin@example.com'--",
    "admin@example.com' OR 1=1--",
    "'; DROP TABLE appguard.users; --",
    "admin@example.com'; UPDATE appguard.users SET role='admin'; --",
    '" OR ""="',
    "admin@example.com\\' OR 1=1 #",
    "1) OR (1=1",
    "admin@example.com%27%20OR%201=1",
]


async def test_sql_injection_in_login_fields_changes_nothing(http: ApiClient, appguard_dsn: str) -> None:
    await _people(http)
    before = snapshot(appguard_dsn)
    for attempt in INJECTIONS:
        for email, password in ((attempt, PASSWORD), ("admin@example.com", attempt), (attempt, attempt)):
            reply = await http.login(email, password)
            assert (reply.status, reply.error_code) == (401, "invalid_credentials"), (email, password)
    assert snapshot(appguard_dsn) == before
    assert (await http.login("admin@example.com")).status == 200


async def test_sql_injection_in_registration_is_stored_as_text(http: ApiClient, appguard_dsn: str) -> None:
    await _people(http)
    before = snapshot(appguard_dsn)
    email = "x');DROP/**/TABLE/**/appguard.users;--@example.com"
    name = "Robert'); DROP TABLE appguard.users; --"
    reply = await http.register(email, name=name)
    assert reply.status == 201, reply.body
    assert reply.body["user"]["role"] == "member"
    after = snapshot(appguard_dsn)
    assert after[:-1] == before
    assert after[-1][1:4] == (email.lower(), name, "member")
    # With spaces it is not an email address at all.
    bad = await http.register("' OR 1=1; --")
    assert (bad.status, bad.error_code, bad.body["error"]["field"]) == (400, "invalid_request", "email")
    # Open registration needs no invitation, but one that is given must be valid.
    refused = await http.register("new@example.com", invitation="' OR '1'='1")
    assert (refused.status, refused.error_code) == (403, "invitation_invalid")
    assert snapshot(appguard_dsn) == after


async def test_sql_injection_in_user_management_parameters(http: ApiClient, appguard_dsn: str) -> None:
    people = await _people(http)
    token = people["admin"]["access_token"]
    before = snapshot(appguard_dsn)
    for path in ("/api/users/1 OR 1=1", "/api/users/1;DELETE FROM appguard.users", "/api/users/0x1", "/api/users/-1"):
        reply = await http.call("PATCH", path, json={"disabled": True}, token=token)
        assert (reply.status, reply.error_code, reply.body["error"]["field"]) == (400, "invalid_parameter", "id"), path
    for query in ("after=0;DROP TABLE appguard.users", "after=0 OR 1=1", "limit=1;--", "limit=1&limit=2"):
        reply = await http.call("GET", f"/api/users?{query}", token=token)
        assert (reply.status, reply.error_code) == (400, "invalid_parameter"), query
    unknown_param = await http.call("GET", "/api/users?role=admin'--", token=token)
    assert (unknown_param.status, unknown_param.body["error"]["field"]) == (400, "role")
    for role in ("admin' --", "owner", "ADMIN"):
        reply = await http.call(
            "PATCH", f"/api/users/{people['member']['user']['id']}", json={"role": role}, token=token
        )
        assert (reply.status, reply.body["error"]["field"]) == (400, "role"), role
    invite = await http.call("POST", "/api/users/invitations", json={"email": "a@b.c', 'admin') --"}, token=token)
    assert invite.status == 400
    assert snapshot(appguard_dsn) == before


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


async def test_every_route_refuses_roles_below_its_own(api: ApiExtension, http: ApiClient, appguard_dsn: str) -> None:
    people = await _people(http)
    before = snapshot(appguard_dsn)
    assert api.app is not None
    routes = [r for r in api.app[ROUTES].routes if not r.page]
    guarded = [r for r in routes if r.role in (Role.MEMBER, Role.ADMIN)]
    assert {(r.method, r.path) for r in guarded} >= {("GET", "/api/users"), ("PATCH", "/api/users/{id}")}
    for route in guarded:
        assert isinstance(route.role, Role)
        below = [name for name in ("viewer", "member") if not Role(name).includes(route.role)]
        body: dict[str, Any] | None = {} if route.body is not None else None
        for name in below:
            reply = await http.call(route.method, _concrete(route.path), json=body, token=people[name]["access_token"])
            assert (reply.status, reply.error_code) == (403, "forbidden"), (route.method, route.path, name)
            assert route.role.value in reply.body["error"]["message"]
    for route in routes:
        if route.role == PUBLIC:
            continue
        body = {} if route.body is not None else None
        reply = await http.call(route.method, _concrete(route.path), json=body)
        assert (reply.status, reply.error_code) == (401, "unauthenticated"), (route.method, route.path)
    assert snapshot(appguard_dsn) == before


async def test_role_changes_apply_to_live_tokens_at_once(http: ApiClient) -> None:
    people = await _people(http)
    member_token = people["member"]["access_token"]
    member_id = people["member"]["user"]["id"]
    assert (await http.call("GET", "/api/users", token=member_token)).status == 403
    admin_token = people["admin"]["access_token"]
    assert (
        await http.call("PATCH", f"/api/users/{member_id}", json={"role": "admin"}, token=admin_token)
    ).status == 200
    assert (await http.call("GET", "/api/users", token=member_token)).status == 200
    assert (
        await http.call("PATCH", f"/api/users/{member_id}", json={"role": "viewer"}, token=admin_token)
    ).status == 200
    assert (await http.call("GET", "/api/users", token=member_token)).status == 403


async def test_cookie_session_unsafe_requests_need_the_csrf_header(api: ApiExtension, appguard_dsn: str) -> None:
    async with client(api) as setup:
        people = await _people(setup)
    before = snapshot(appguard_dsn)
    async with client(api) as browser:
        csrf = (await browser.login("admin@example.com", cookies=True)).body["csrf_token"]
        target = f"/api/users/{people['member']['user']['id']}"
        refused = await browser.call("PATCH", target, json={"disabled": True})
        assert (refused.status, refused.error_code) == (403, "csrf_failed")
        refused = await browser.call("POST", "/api/users/invitations", json={"role": "admin"})
        assert (refused.status, refused.error_code) == (403, "csrf_failed")
        # Header without the cookie (another site cannot read it, but could guess a header).
        browser.session.cookie_jar.clear(lambda m: m.key == "appguard_csrf")
        refused = await browser.call("PATCH", target, json={"disabled": True}, headers={"X-CSRF-Token": csrf})
        assert (refused.status, refused.error_code) == (403, "csrf_failed")
        assert snapshot(appguard_dsn) == before
        ok = await browser.call(
            "PATCH", target, json={"disabled": True}, headers={"X-CSRF-Token": csrf, "Cookie": f"appguard_csrf={csrf}"}
        )
        assert ok.status == 200


async def test_oversized_bodies_are_refused_with_413(http: ApiClient, appguard_dsn: str) -> None:
    people = await _people(http)
    before = snapshot(appguard_dsn)
    big = {"email": "admin@example.com", "password": "x" * 10_000}
    reply = await http.login(big["email"], big["password"])
    assert (reply.status, reply.error_code) == (413, "body_too_large")
    assert "4096" in reply.body["error"]["message"]
    reply = await http.call(
        "POST", "/api/users/invitations", json={"email": "a" * 8000 + "@x.y"}, token=people["admin"]["access_token"]
    )
    assert (reply.status, reply.error_code) == (413, "body_too_large")
    assert snapshot(appguard_dsn) == before


async def test_malformed_json_is_refused_naming_the_problem(http: ApiClient, appguard_dsn: str) -> None:
    await _people(http)
    before = snapshot(appguard_dsn)
    json_type = {"Content-Type": "application/json"}
    cases: list[tuple[bytes, str, str]] = [
        (b"{bad", "malformed_json", "not valid JSON"),
        (b"", "malformed_json", "empty"),
        (b"   ", "malformed_json", "empty"),
        (b'{"email": "a@b.c", "password": "x"', "malformed_json", "not valid JSON"),
        (b"\xff\xfe{}", "malformed_json", "not valid JSON"),
        (b'{"email": NaN}', "malformed_json", "not valid JSON"),
        (b"[1, 2]", "malformed_json", "not an array"),
        (b'"admin@example.com"', "malformed_json", "not a string"),
        (b"null", "malformed_json", "not null"),
        (b'{"email": "admin@example.com"}', "invalid_request", "password: required"),
        (b'{"email": 5, "password": "x"}', "invalid_request", "email"),
        (b'{"email": "a@b.c", "password": "x", "admin": true}', "invalid_request", "admin: unknown field"),
    ]
    for raw, code, text in cases:
        reply = await http.call("POST", "/api/auth/login", data=raw, headers=json_type)
        assert (reply.status, reply.error_code) == (400, code), raw
        assert text in reply.body["error"]["message"], (raw, reply.body)
    missing = await http.call("POST", "/api/auth/login", data=b'{"password": "x"}', headers=json_type)
    assert missing.body["error"]["field"] == "email"
    assert snapshot(appguard_dsn) == before


async def test_bodies_must_be_json(http: ApiClient) -> None:
    await _people(http)
    form = await http.call(
        "POST",
        "/api/auth/login",
        data=f"email=admin%40example.com&password={PASSWORD}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (form.status, form.error_code) == (415, "unsupported_media_type")
    text = await http.call("POST", "/api/auth/login", data='{"email": "a@b.c"}', headers={"Content-Type": "text/plain"})
    assert (text.status, text.error_code) == (415, "unsupported_media_type")


async def test_unknown_paths_and_methods_answer_json_errors(http: ApiClient) -> None:
    missing = await http.call("GET", "/api/no-such-thing")
    assert (missing.status, missing.error_code) == (404, "not_found")
    wrong_method = await http.call("DELETE", "/api/auth/login")
    assert (wrong_method.status, wrong_method.error_code) == (405, "method_not_allowed")
    assert "POST" in wrong_method.headers["Allow"]
    page = await http.call("GET", "/no-such-page")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]


async def test_a_route_added_behind_the_tables_back_is_refused_at_start(api: ApiExtension) -> None:
    assert api.services is not None
    app = build_app(api.services)

    async def sneaky(request: web.Request) -> web.StreamResponse:
        return json_response({"secret": True})

    app.router.add_get("/api/sneaky", sneaky)
    runner = web.AppRunner(app)
    with pytest.raises(RouteDeclarationError, match="without a declared role"):
        await runner.setup()
    await runner.cleanup()


def test_a_route_must_declare_its_role() -> None:
    table = RouteTable()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response()

    with pytest.raises(RouteDeclarationError, match="declare role"):
        table.add("GET", "/api/x", handler, role=None, summary="x", responses={200: None})  # type: ignore[arg-type]
    with pytest.raises(RouteDeclarationError, match="declare role"):
        table.add("GET", "/api/x", handler, role="member", summary="x", responses={200: None})  # type: ignore[arg-type]
    with pytest.raises(RouteDeclarationError, match="path's parameters"):
        table.add("GET", "/api/x/{id}", handler, role=Role.ADMIN, summary="x", responses={200: None})
    with pytest.raises(RouteDeclarationError, match="under /api/"):
        table.add("GET", "/x", handler, role=Role.ADMIN, summary="x", responses={200: None})
    table.add("GET", "/api/x", handler, role=Role.ADMIN, summary="x", responses={200: None})
    with pytest.raises(RouteDeclarationError, match="declared twice"):
        table.add("GET", "/api/x", handler, role=Role.ADMIN, summary="x", responses={200: None})


async def test_pages_require_a_session_and_redirect_only_locally(api: ApiExtension) -> None:
    async with client(api) as browser:
        home = await browser.call("GET", "/", allow_redirects=False)
        assert home.status == 303 and home.headers["Location"] == "/login?next=/"
        for target, expected in (
            ("//evil.example/x", "/"),
            ("https://evil.example/", "/"),
            ("/\\evil.example", "/"),
            ("/issues?status=resolved", "/issues?status=resolved"),
        ):
            reply = await browser.call("GET", f"/login?next={quote(target, safe='')}")
            assert reply.status == 200
            assert f'data-next="{expected.replace("&", "&amp;")}"' in reply.body, target
        login_page = await browser.call("GET", "/login")
        assert "script-src 'self'" in login_page.headers["Content-Security-Policy"]
        assert login_page.headers["X-Frame-Options"] == "DENY"
        assert "<script>" not in login_page.body.replace('<script type="module"', "")

        reg = await browser.register("admin@example.com", name="<script>alert(1)</script>", cookies=True)
        assert reg.status == 201
        home = await browser.call("GET", "/")
        assert home.status == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in home.body and "<script>alert" not in home.body
        # Signed in, the sign-in page sends you on.
        again = await browser.call("GET", "/login?next=/somewhere", allow_redirects=False)
        assert again.status == 303 and again.headers["Location"] == "/somewhere"


async def test_api_answers_are_not_cached(http: ApiClient) -> None:
    token = (await http.register("admin@example.com")).body["access_token"]
    reply = await http.call("GET", "/api/auth/me", token=token)
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
