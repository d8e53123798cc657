"""Projects and their keys over HTTP, against the real PostgreSQL: CRUD, roles, validation
errors naming the field, names unique whatever their case, revoked keys flagged (and refused by
the store's lookup), DSNs built from the public URL or the request's own address, unknown ids,
and the answers matching the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.extension import ApiExtension
from storage.projects import ProjectStore
from tests.support.api import ApiClient, client, running_api

# The public URL of the conftest's API (tests/support/issue_data.py).
PUBLIC_HOST = "guard.example.com"


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


async def make_project(http: ApiClient, token: str, name: str, platform: str = "") -> dict[str, Any]:
    reply = await http.call("POST", "/api/projects", json={"name": name, "platform": platform}, token=token)
    assert reply.status == 201, reply.body
    made: dict[str, Any] = reply.body
    return made


def refusal(reply: Any) -> tuple[int, str | None, str | None]:
    return reply.status, reply.error_code, reply.body["error"].get("field")


async def test_projects_are_created_listed_read_and_renamed(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    admin, viewer = tokens["admin"], tokens["viewer"]
    made = await make_project(http, admin, "Checkout", "python-django")
    assert (made["id"], made["name"], made["platform"]) == (2, "Checkout", "python-django")
    # A new project comes with one active key, and its DSN at the public URL.
    [key] = made["keys"]
    assert (key["project_id"], key["label"], key["active"], key["revoked_at"], key["rate_limit"]) == (
        2, "Default", True, None, None,
    )  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{32}", key["public_key"])
    assert key["dsn"] == f"https://{key['public_key']}@{PUBLIC_HOST}/2"
    assert rows(appguard_dsn, "SELECT id, name, platform FROM appguard.projects ORDER BY id") == [
        (1, "default", "other"), (2, "Checkout", "python-django"),
    ]  # fmt: skip
    assert rows(appguard_dsn, "SELECT public_key FROM appguard.project_keys WHERE project_id = 2") == [
        (key["public_key"],)
    ]

    # Viewers read the list (by id) and a project with its keys.
    listed = await http.call("GET", "/api/projects", token=viewer)
    assert listed.status == 200
    assert [(p["id"], p["name"]) for p in listed.body["projects"]] == [(1, "default"), (2, "Checkout")]
    assert "keys" not in listed.body["projects"][0]
    got = await http.call("GET", "/api/projects/2", token=viewer)
    assert got.status == 200 and got.body == made

    # PATCH renames; a name is trimmed; the platform alone changes only the platform.
    renamed = await http.call("PATCH", "/api/projects/2", json={"name": "  Shop checkout "}, token=admin)
    assert renamed.status == 200, renamed.body
    assert (renamed.body["name"], renamed.body["platform"], renamed.body["keys"]) == (
        "Shop checkout", "python-django", made["keys"],
    )  # fmt: skip
    moved = await http.call("PATCH", "/api/projects/2", json={"platform": "node"}, token=admin)
    assert (moved.body["name"], moved.body["platform"]) == ("Shop checkout", "node")
    cleared = await http.call("PATCH", "/api/projects/2", json={"platform": ""}, token=admin)
    assert cleared.body["platform"] == ""
    assert rows(appguard_dsn, "SELECT name, platform FROM appguard.projects WHERE id = 2") == [("Shop checkout", "")]


async def test_viewers_and_members_read_only_admins_manage(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    await make_project(http, tokens["admin"], "Checkout")
    before = rows(appguard_dsn, "SELECT * FROM appguard.projects ORDER BY id") + rows(
        appguard_dsn, "SELECT * FROM appguard.project_keys ORDER BY id"
    )
    writes = [
        ("POST", "/api/projects", {"name": "Mine"}),
        ("PATCH", "/api/projects/2", {"name": "Mine"}),
        ("POST", "/api/projects/2/keys", {"label": "mine"}),
        ("DELETE", "/api/projects/2/keys/2", None),
    ]
    for who in ("viewer", "member"):
        for method, path, body in writes:
            reply = await http.call(method, path, json=body, token=tokens[who])
            assert (reply.status, reply.error_code) == (403, "forbidden"), (who, method, path)
            assert "admin" in reply.body["error"]["message"]
        for path in ("/api/projects", "/api/projects/2", "/api/projects/2/keys"):
            assert (await http.call("GET", path, token=tokens[who])).status == 200, (who, path)
    for method, path, body in writes:
        assert (await http.call(method, path, json=body)).status == 401
    after = rows(appguard_dsn, "SELECT * FROM appguard.projects ORDER BY id") + rows(
        appguard_dsn, "SELECT * FROM appguard.project_keys ORDER BY id"
    )
    assert after == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/projects", {}, "name"),
        ("POST", "/api/projects", {"name": "   "}, "name"),
        ("POST", "/api/projects", {"name": "x" * 101}, "name"),
        ("POST", "/api/projects", {"name": 7}, "name"),
        ("POST", "/api/projects", {"name": "Shop", "platform": "Python 3"}, "platform"),
        ("POST", "/api/projects", {"name": "Shop", "platform": "x" * 65}, "platform"),
        ("POST", "/api/projects", {"name": "Shop", "owner": "me"}, "owner"),
        ("PATCH", "/api/projects/1", {"name": ""}, "name"),
        ("PATCH", "/api/projects/1", {"platform": "-python"}, "platform"),
        ("PATCH", "/api/projects/abc", {"name": "Shop"}, "id"),
        ("PATCH", "/api/projects/0", {"name": "Shop"}, "id"),
        ("POST", "/api/projects/1/keys", {"rate_limit": 0}, "rate_limit"),
        ("POST", "/api/projects/1/keys", {"rate_limit": "fast"}, "rate_limit"),
        ("POST", "/api/projects/1/keys", {"label": "x" * 101}, "label"),
        ("DELETE", "/api/projects/1/keys/none", None, "key_id"),
    ],
)
async def test_invalid_requests_name_the_field(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str, method: str, path: str, body: Any, field: str
) -> None:
    before = rows(appguard_dsn, "SELECT count(*) FROM appguard.projects") + rows(
        appguard_dsn, "SELECT count(*), count(revoked_at) FROM appguard.project_keys"
    )
    reply = await http.call(method, path, json=body, token=tokens["admin"])
    assert reply.status == 400, reply.body
    assert reply.body["error"]["field"] == field
    assert reply.body["error"]["message"].startswith(f"{field}:")
    after = rows(appguard_dsn, "SELECT count(*) FROM appguard.projects") + rows(
        appguard_dsn, "SELECT count(*), count(revoked_at) FROM appguard.project_keys"
    )
    assert after == before


async def test_a_patch_must_change_something(http: ApiClient, tokens: dict[str, str]) -> None:
    reply = await http.call("PATCH", "/api/projects/1", json={}, token=tokens["admin"])
    assert (reply.status, reply.error_code) == (400, "invalid_request")
    assert "give name and/or platform" in reply.body["error"]["message"]


async def test_names_are_unique_whatever_their_case(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    admin = tokens["admin"]
    await make_project(http, admin, "Shop")
    other = await make_project(http, admin, "Blog")
    again = await http.call("POST", "/api/projects", json={"name": "SHOP"}, token=admin)
    assert refusal(again) == (409, "project_name_taken", "name")
    assert "SHOP" in again.body["error"]["message"]
    clash = await http.call("PATCH", f"/api/projects/{other['id']}", json={"name": "shop"}, token=admin)
    assert refusal(clash) == (409, "project_name_taken", "name")
    # A project may change the case of its own name.
    assert (await http.call("PATCH", "/api/projects/1", json={"name": "Default"}, token=admin)).status == 200
    assert rows(appguard_dsn, "SELECT name FROM appguard.projects ORDER BY id") == [("Default",), ("Shop",), ("Blog",)]


async def test_keys_are_added_and_revoked_and_revoked_keys_are_flagged(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str, pool: AsyncConnectionPool[Any]
) -> None:
    admin, viewer = tokens["admin"], tokens["viewer"]
    project = await make_project(http, admin, "Checkout")
    first = project["keys"][0]
    added = await http.call("POST", "/api/projects/2/keys", json={"label": " backend ", "rate_limit": 600}, token=admin)
    assert added.status == 201, added.body
    key = added.body
    assert (key["project_id"], key["label"], key["rate_limit"], key["active"]) == (2, "backend", 600, True)
    assert key["public_key"] != first["public_key"]
    assert key["dsn"] == f"https://{key['public_key']}@{PUBLIC_HOST}/2"
    # A key with nothing said about it: no label, no limit of its own.
    bare = await http.call("POST", "/api/projects/2/keys", json={}, token=admin)
    assert (bare.status, bare.body["label"], bare.body["rate_limit"]) == (201, "", None)

    revoked = await http.call("DELETE", f"/api/projects/2/keys/{first['id']}", token=admin)
    assert revoked.status == 200, revoked.body
    assert (revoked.body["id"], revoked.body["active"]) == (first["id"], False)
    assert revoked.body["revoked_at"] is not None and revoked.body["dsn"] == first["dsn"]
    # Revoking again changes nothing, not even the moment.
    again = await http.call("DELETE", f"/api/projects/2/keys/{first['id']}", token=admin)
    assert again.status == 200 and again.body == revoked.body

    listed = await http.call("GET", "/api/projects/2/keys", token=viewer)
    assert listed.status == 200
    assert [(k["id"], k["active"]) for k in listed.body["keys"]] == [
        (first["id"], False), (key["id"], True), (bare.body["id"], True),
    ]  # fmt: skip
    detail = await http.call("GET", "/api/projects/2", token=viewer)
    assert detail.body["keys"] == listed.body["keys"]
    assert rows(appguard_dsn, f"SELECT revoked_at IS NOT NULL FROM appguard.project_keys WHERE id = {first['id']}") == [
        (True,)
    ]

    # What the ingest endpoints ask: the revoked key is known, and not active.
    found = await ProjectStore(pool).lookup_key(first["public_key"])
    live = await ProjectStore(pool).lookup_key(key["public_key"])
    assert found is not None and not found.active
    assert live is not None and live.active and live.project_id == 2


async def test_unknown_projects_and_keys_answer_404(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    admin = tokens["admin"]
    await make_project(http, admin, "Checkout")
    key_of_2 = rows(appguard_dsn, "SELECT id FROM appguard.project_keys WHERE project_id = 2")[0][0]
    for method, path, body in (
        ("GET", "/api/projects/99", None),
        ("PATCH", "/api/projects/99", {"name": "x"}),
        ("GET", "/api/projects/99/keys", None),
        ("POST", "/api/projects/99/keys", {"label": "x"}),
    ):
        reply = await http.call(method, path, json=body, token=admin)
        assert (reply.status, reply.error_code) == (404, "project_not_found"), (method, path)
        assert reply.body["error"]["message"] == "there is no project 99"
    missing = await http.call("DELETE", "/api/projects/2/keys/999", token=admin)
    assert (missing.status, missing.error_code) == (404, "project_key_not_found")
    # A key is revoked through its own project only.
    elsewhere = await http.call("DELETE", f"/api/projects/1/keys/{key_of_2}", token=admin)
    assert (elsewhere.status, elsewhere.error_code) == (404, "project_key_not_found")
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.project_keys WHERE revoked_at IS NOT NULL") == [(0,)]
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.projects") == [(2,)]


@pytest.fixture
async def plain_api(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[ApiExtension]:
    """The API without a configured public URL: DSNs take the request's own address."""
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix) as ext:
        yield ext


async def test_dsns_use_the_address_the_api_was_reached_at(plain_api: ApiExtension, appguard_dsn: str) -> None:
    async with client(plain_api) as http:
        token = (await http.register("admin@example.com")).body["access_token"]
        keys = (await http.call("GET", "/api/projects/1/keys", token=token)).body["keys"]
    # The default project's key, seeded by the migration.
    [seeded] = rows(appguard_dsn, "SELECT id, public_key FROM appguard.project_keys WHERE project_id = 1")
    assert [(k["id"], k["public_key"]) for k in keys] == [seeded]
    dsn = urlsplit(keys[0]["dsn"])
    assert (dsn.scheme, dsn.username, dsn.password, dsn.hostname, dsn.port, dsn.path) == (
        "http", seeded[1], None, "127.0.0.1", plain_api.port, "/1",
    )  # fmt: skip
    assert keys[0]["dsn"] == f"http://{seeded[1]}@127.0.0.1:{plain_api.port}/1"


async def test_answers_match_the_openapi_document(http: ApiClient, tokens: dict[str, str]) -> None:
    admin = tokens["admin"]
    document = (await http.call("GET", "/api/openapi.json")).body

    def check(path: str, method: str, status: int, body: Any) -> None:
        content = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
        jsonschema.Draft202012Validator({**content["schema"], "components": document["components"]}).validate(body)

    made = await http.call("POST", "/api/projects", json={"name": "Checkout", "platform": "go"}, token=admin)
    check("/api/projects", "post", 201, made.body)
    check("/api/projects", "get", 200, (await http.call("GET", "/api/projects", token=admin)).body)
    check("/api/projects/{id}", "get", 200, (await http.call("GET", "/api/projects/2", token=admin)).body)
    patched = await http.call("PATCH", "/api/projects/2", json={"name": "Shop"}, token=admin)
    check("/api/projects/{id}", "patch", 200, patched.body)
    key = await http.call("POST", "/api/projects/2/keys", json={"label": "web"}, token=admin)
    check("/api/projects/{id}/keys", "post", 201, key.body)
    check("/api/projects/{id}/keys", "get", 200, (await http.call("GET", "/api/projects/2/keys", token=admin)).body)
    revoked = await http.call("DELETE", f"/api/projects/2/keys/{key.body['id']}", token=admin)
    check("/api/projects/{id}/keys/{key_id}", "delete", 200, revoked.body)
    taken = await http.call("POST", "/api/projects", json={"name": "shop"}, token=admin)
    check("/api/projects", "post", 409, taken.body)
    missing = await http.call("GET", "/api/projects/9", token=admin)
    check("/api/projects/{id}", "get", 404, missing.body)
    with pytest.raises(jsonschema.ValidationError):
        check("/api/projects/{id}/keys", "post", 201, {**key.body, "active": "yes"})
