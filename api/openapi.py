"""The OpenAPI 3.1 document of the REST API, built from the route table.

Nothing here is written by hand per endpoint: paths, methods, summaries, the role each needs,
parameters, request and response bodies all come from the :class:`~api.routing.Route` entries,
and the schemas from their pydantic models (JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
A route that exists is therefore documented, and a documented route exists; a test checks both.
"""

from __future__ import annotations

import http
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.auth import ACCESS_COOKIE
from api.errors import ErrorBody
from api.routing import PUBLIC, ROUTES, Route, RouteTable
from api.services import SERVICES
from storage.users_store import Role

_REF = "#/components/schemas/{model}"

# Error statuses every route of a kind can answer, added to what the route declares.
_AUTH_ERRORS = {
    401: "not signed in, or the access token is expired, forged or its session ended",
    403: "the role is not enough, or (cookie sessions) the X-CSRF-Token header is missing",
}
_BODY_ERRORS = {
    400: "malformed JSON, or a field that does not validate",
    413: "the body is larger than max_request_body_size",
    415: "the body is not application/json",
}


def _version() -> str:
    try:
        return version("appguard")
    except PackageNotFoundError:
        return "0.0.0"


def build_document(table: RouteTable, *, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of every REST route of ``table``."""
    api_routes = [r for r in table.routes if not r.page]
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in api_routes:
        if route.body is not None:
            inputs.append((route.body, "validation"))
        for model in route.responses.values():
            if model is not None:
                inputs.append((model, "serialization"))
    inputs.append((ErrorBody, "serialization"))
    unique = list(dict.fromkeys(inputs))
    refs, defs = models_json_schema(unique, ref_template=_REF)
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        return refs[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, ref)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "AppGuard API",
            "version": _version(),
            "description": "The REST API of the AppGuard dashboard. Each operation names the least role "
            "it needs in `x-appguard-role` (viewer < member < admin, or public).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An access token (JWT) from /api/auth/login, or a personal API token (agt_...)",
                },
                "cookieAuth": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": ACCESS_COOKIE,
                    "description": "Browser sessions; unsafe methods also need the X-CSRF-Token header.",
                },
            },
        },
        "tags": [{"name": tag} for tag in sorted({t for r in api_routes for t in r.tags})],
    }
    if server_url is not None:
        doc["servers"] = [{"url": server_url}]
    return doc


def _operation(route: Route, ref: Any) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": list(route.tags),
        "x-appguard-role": route.role.value if isinstance(route.role, Role) else PUBLIC,
    }
    if route.description:
        op["description"] = route.description
    parameters = []
    for location, model in (("path", route.params), ("query", route.query)):
        if model is None:
            continue
        schema = model.model_json_schema(ref_template=_REF)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": location, "required": location == "path" or name in required}
            if "description" in prop:
                param["description"] = prop["description"]
            param["schema"] = prop
            parameters.append(param)
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(route.body, "validation")}},
        }
    responses: dict[str, Any] = {}
    for status, model in route.responses.items():
        entry: dict[str, Any] = {"description": _describe(status, model)}
        if model is not None:
            entry["content"] = {"application/json": {"schema": ref(model, "serialization")}}
        responses[str(status)] = entry
    errors: dict[int, str] = {}
    if route.body is not None or route.params is not None or route.query is not None:
        errors[400] = _BODY_ERRORS[400] if route.body is not None else "a parameter that does not validate"
    if route.body is not None:
        errors.update({k: v for k, v in _BODY_ERRORS.items() if k != 400})
    if route.role != PUBLIC:
        errors.update(_AUTH_ERRORS)
    for status, text in route.errors.items():
        errors[status] = f"{errors[status]}; {text}" if status in errors else text
    error_schema = {"application/json": {"schema": ref(ErrorBody, "serialization")}}
    for status in sorted(errors):
        responses[str(status)] = {"description": errors[status], "content": error_schema}
    op["responses"] = responses
    op["security"] = [] if route.role == PUBLIC else [{"bearerAuth": []}, {"cookieAuth": []}]
    return op


def _describe(status: int, model: type[BaseModel] | None) -> str:
    if model is not None and model.__doc__:
        return " ".join(model.__doc__.split())
    return http.HTTPStatus(status).phrase


_DOCUMENT_KEY = web.AppKey("appguard_openapi", bytes)


async def _build_on_startup(app: web.Application) -> None:
    # Built once every feature has declared its routes, before the application is frozen.
    app[_DOCUMENT_KEY] = orjson.dumps(build_document(app[ROUTES], server_url=app[SERVICES].config.public_url))


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """This document."""
    return web.Response(body=request.app[_DOCUMENT_KEY], content_type="application/json")


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


def register(app: web.Application) -> None:
    """Declare ``GET /api/openapi.json``."""
    app.on_startup.append(_build_on_startup)
    app[ROUTES].add(
        "GET",
        "/api/openapi.json",
        openapi_document,
        role=PUBLIC,
        summary="The OpenAPI 3.1 document of this API",
        responses={200: OpenApiDocument},
        tags=["meta"],
    )
