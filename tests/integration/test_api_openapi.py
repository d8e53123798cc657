"""The OpenAPI document is true: every /api route is in it, everything in it is a route, and
real answers match the schemas it gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from api.extension import ApiExtension
from api.routing import ROUTES
from storage.users_store import Role
from tests.support.api import ApiClient, client, running_api


@pytest.fixture
async def api(tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ApiExtension]:
    async with running_api(tmp_path, appguard_dsn, redis_url, redis_prefix) as ext:
        yield ext


@pytest.fixture
async def http(api: ApiExtension) -> AsyncIterator[ApiClient]:
    async with client(api) as c:
        yield c


@pytest.fixture
async def document(http: ApiClient) -> dict[str, Any]:
    reply = await http.call("GET", "/api/openapi.json")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    return dict(reply.body)


def served_api_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the aiohttp router serves under /api/."""
    found = set()
    for resource in app.router.resources():
        path = resource.canonical
        if not (path == "/api" or path.startswith("/api/")):
            continue
        for route in resource:
            found.add((route.method.upper(), path))
    return found


def documented_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


async def test_every_api_route_is_documented_and_every_documented_route_exists(
    api: ApiExtension, document: dict[str, Any]
) -> None:
    assert api.app is not None
    served = served_api_routes(api.app)
    assert len(served) >= 11
    assert served == documented_routes(document)


async def test_each_operation_states_its_role_summary_and_answers(api: ApiExtension, document: dict[str, Any]) -> None:
    assert api.app is not None
    declared = {(r.method, r.path): r for r in api.app[ROUTES].routes if not r.page}
    for (method, path), route in declared.items():
        op = document["paths"][path][method.lower()]
        assert op["summary"] == route.summary
        assert op["x-appguard-role"] == (route.role.value if isinstance(route.role, Role) else "public")
        statuses = set(op["responses"])
        assert {str(s) for s in route.responses} <= statuses
        if isinstance(route.role, Role):
            assert {"401", "403"} <= statuses and op["security"] == [{"bearerAuth": []}, {"cookieAuth": []}]
        else:
            assert op["security"] == []
        if route.body is not None:
            assert {"400", "413", "415"} <= statuses
            assert "requestBody" in op
        for name in route.params.model_fields if route.params is not None else ():
            assert {"name": name, "in": "path", "required": True}.items() <= next(
                p for p in op["parameters"] if p["name"] == name
            ).items()
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    assert document["openapi"] == "3.1.0"
    validator.validate(document)


def _check(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Validate a real answer against the document's schema for it."""
    content = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    schema = {**content["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


async def test_real_answers_match_the_documented_schemas(http: ApiClient, document: dict[str, Any]) -> None:
    registered = await http.register("admin@example.com", name="Ada")
    _check(document, "/api/auth/register", "post", 201, registered.body)
    token = registered.body["access_token"]
    _check(document, "/api/auth/login", "post", 200, (await http.login("admin@example.com")).body)
    cookie = await http.login("admin@example.com", cookies=True)
    _check(document, "/api/auth/login", "post", 200, cookie.body)
    _check(document, "/api/auth/me", "get", 200, (await http.call("GET", "/api/auth/me", token=token)).body)
    _check(document, "/api/users", "get", 200, (await http.call("GET", "/api/users", token=token)).body)
    made = await http.call("POST", "/api/users/invitations", json={"email": "b@example.com"}, token=token)
    _check(document, "/api/users/invitations", "post", 201, made.body)
    listed = await http.call("GET", "/api/users/invitations", token=token)
    _check(document, "/api/users/invitations", "get", 200, listed.body)
    patched = await http.call("PATCH", "/api/users/1", json={"role": "admin"}, token=token)
    _check(document, "/api/users/{id}", "patch", 200, patched.body)
    http.session.cookie_jar.clear()  # the cookie session above would sign this in
    refused = await http.call("GET", "/api/users")
    _check(document, "/api/users", "get", 401, refused.body)
    bad = await http.call("PATCH", "/api/users/1", json={"role": "x"}, token=token)
    _check(document, "/api/users/{id}", "patch", 400, bad.body)
    with pytest.raises(jsonschema.ValidationError):
        _check(document, "/api/auth/me", "get", 200, {"id": "one"})


async def test_the_document_names_the_public_url(
    tmp_path: Path, appguard_dsn: str, redis_url: str, redis_prefix: str
) -> None:
    async with (
        running_api(tmp_path, appguard_dsn, redis_url, redis_prefix, public_url="https://guard.example.com") as ext,
        client(ext) as http,
    ):
        doc = (await http.call("GET", "/api/openapi.json")).body
        assert doc["servers"] == [{"url": "https://guard.example.com"}]
