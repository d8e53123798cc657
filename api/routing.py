"""The route table: every endpoint and page declares its role, summary and schemas here.

A feature module (``api/auth.py``, ``api/users.py``...) adds its routes to the application's
:class:`RouteTable` in its ``register(app)`` function. The table then installs them on the
aiohttp router, each wrapped so that, before the handler runs,

1. the caller is authenticated and must have the declared role (``PUBLIC`` routes skip this;
   there is no default, so a route that forgets its role cannot be declared),
2. a browser authenticated by cookie must send the CSRF header on unsafe methods,
3. path parameters, the query string and the JSON body are validated against their pydantic
   models, a failure answering ``400`` with the field at fault.

Handlers keep aiohttp's shape, ``async def handler(request) -> web.StreamResponse``, and read
what was validated through :func:`body`, :func:`query`, :func:`params` and :func:`principal`.
:meth:`RouteTable.verify` refuses, at start-up, any aiohttp route that did not come through the
table (deny by default), and ``api/openapi.py`` builds the OpenAPI document from the same table.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import ApiError, is_api_path
from storage.users_store import Role, User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC: Final = "public"
Access = Role | Literal["public"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")

M = TypeVar("M", bound=BaseModel)


class RouteDeclarationError(Exception):
    """A route is declared wrongly, or served without having been declared."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of a request."""

    user: User
    role: Role
    session_id: uuid.UUID
    via_cookie: bool


class Authenticator(Protocol):
    """Finds who is calling; ``api/auth.py`` provides the implementation."""

    async def authenticate(self, request: web.Request) -> Principal | None:
        """The caller, or None when the request carries no credentials.

        Raises :class:`ApiError` (401) when it carries credentials that are not valid.
        """

    def check_csrf(self, request: web.Request, principal: Principal) -> None:
        """Raise :class:`ApiError` (403) unless the request carries the session's CSRF token."""


@dataclass(frozen=True, slots=True)
class Route:
    """One declared endpoint or page (see :meth:`RouteTable.add` for the fields)."""

    method: str
    path: str
    handler: Handler
    role: Access
    summary: str
    description: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    params: type[BaseModel] | None = None
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: Mapping[int, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    page: bool = False
    #: The handler reads and validates the body itself (compressed bodies); ``body`` documents it.
    reads_body: bool = False

    @property
    def operation_id(self) -> str:
        """A stable id for the OpenAPI document: the handler's name."""
        return self.handler.__name__.lstrip("_")


_BODY_KEY = web.RequestKey("api_body", BaseModel)
_QUERY_KEY = web.RequestKey("api_query", BaseModel)
_PARAMS_KEY = web.RequestKey("api_params", BaseModel)
_PRINCIPAL_KEY = web.RequestKey("api_principal", Principal)


def body(request: web.Request, model: type[M]) -> M:
    """The validated JSON body of a route declared with ``body=model``."""
    return _validated(request, _BODY_KEY, model)


def query(request: web.Request, model: type[M]) -> M:
    """The validated query string of a route declared with ``query=model``."""
    return _validated(request, _QUERY_KEY, model)


def params(request: web.Request, model: type[M]) -> M:
    """The validated path parameters of a route declared with ``params=model``."""
    return _validated(request, _PARAMS_KEY, model)


def principal(request: web.Request) -> Principal:
    """The authenticated caller of a route declared with a role."""
    found = current_principal(request)
    if found is None:
        raise RuntimeError(f"{request.path}: no authenticated caller on a public route")
    return found


def current_principal(request: web.Request) -> Principal | None:
    """The authenticated caller, or None on a public route."""
    return request.get(_PRINCIPAL_KEY)


def _validated(request: web.Request, key: web.RequestKey[BaseModel], model: type[M]) -> M:
    value = request.get(key)
    if not isinstance(value, model):
        raise RuntimeError(f"{request.path}: the route was not declared with this {model.__name__}")
    return value


def json_response(
    data: BaseModel | Mapping[str, Any] | Sequence[Any], *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response from a pydantic model (serialised by its schema) or plain data."""
    payload = data.model_dump_json().encode() if isinstance(data, BaseModel) else orjson.dumps(data)
    return web.Response(status=status, body=payload, content_type="application/json", headers=headers)


class RouteTable:
    """Every route of the application, with what the OpenAPI document says about it."""

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.statics: list[tuple[str, Path]] = []
        self._handlers: set[Handler] = set()

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        role: Access,
        summary: str,
        description: str = "",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        params: type[BaseModel] | None = None,
        responses: Mapping[int, type[BaseModel] | None],
        errors: Mapping[int, str] | None = None,
        tags: Sequence[str] = (),
        reads_body: bool = False,
    ) -> Route:
        """Declare a REST endpoint under ``/api/``.

        ``role`` is the least role allowed (``PUBLIC`` for anyone); ``body``, ``query`` and
        ``params`` are the pydantic models the JSON body, the query string and the path
        parameters must match; ``responses`` maps success statuses to their body models
        (``None`` for no body); ``errors`` documents error statuses beyond those the table adds
        itself (400, 401, 403, 413, 415). With ``reads_body`` the handler reads the body itself
        (with :func:`validation_error` for a body that does not match), ``body`` only documents it.
        """
        if not is_api_path(path):
            raise RouteDeclarationError(f"{method} {path}: REST endpoints live under /api/")
        if not responses:
            raise RouteDeclarationError(f"{method} {path}: declare at least one response")
        route = Route(
            method=method.upper(),
            path=path,
            handler=handler,
            role=role,
            summary=summary,
            description=description,
            body=body,
            query=query,
            params=params,
            responses=dict(responses),
            errors=dict(errors or {}),
            tags=tuple(tags),
            reads_body=reads_body,
        )
        return self._declare(route)

    def page(
        self,
        path: str,
        handler: Handler,
        *,
        role: Access,
        summary: str,
        query: type[BaseModel] | None = None,
        params: type[BaseModel] | None = None,
    ) -> Route:
        """Declare a dashboard page (HTML, not in the OpenAPI document).

        A caller without a session is sent to ``/login``; one without the role gets a 403 page.
        """
        if is_api_path(path):
            raise RouteDeclarationError(f"GET {path}: pages live outside /api/")
        return self._declare(
            Route(
                method="GET",
                path=path,
                handler=handler,
                role=role,
                summary=summary,
                query=query,
                params=params,
                page=True,
            )
        )

    def add_static(self, prefix: str, directory: Path) -> None:
        """Serve the files under ``directory`` at ``prefix`` to anyone (no secrets there)."""
        if not directory.is_dir():
            raise RouteDeclarationError(f"static directory {directory} does not exist")
        self.statics.append((prefix.rstrip("/"), directory))

    def _declare(self, route: Route) -> Route:
        where = f"{route.method} {route.path}"
        if route.method not in _METHODS:
            raise RouteDeclarationError(f"{where}: method must be one of {', '.join(_METHODS)}")
        if not (route.role == PUBLIC or isinstance(route.role, Role)):
            raise RouteDeclarationError(f"{where}: declare role=PUBLIC or a Role (got {route.role!r})")
        if not route.summary:
            raise RouteDeclarationError(f"{where}: a summary is required")
        if route.body is not None and route.method in SAFE_METHODS:
            raise RouteDeclarationError(f"{where}: a {route.method} request has no body")
        names = set(_PATH_PARAM.findall(route.path))
        declared = set(route.params.model_fields) if route.params is not None else set()
        if names != declared:
            raise RouteDeclarationError(
                f"{where}: the params model must have exactly the path's parameters {sorted(names)} (has {sorted(declared)})"
            )
        if any(r.method == route.method and r.path == route.path for r in self.routes):
            raise RouteDeclarationError(f"{where} is declared twice")
        if any(r.operation_id == route.operation_id for r in self.routes):
            raise RouteDeclarationError(f"{where}: another route already uses the handler name {route.operation_id!r}")
        self.routes.append(route)
        return route

    def install(self, app: web.Application, authenticator: Authenticator) -> None:
        """Add every declared route to ``app``'s router, wrapped in its checks."""
        for route in self.routes:
            wrapped = _wrap(route, authenticator)
            self._handlers.add(wrapped)
            app.router.add_route(route.method, route.path, wrapped)
        for prefix, directory in self.statics:
            app.router.add_static(prefix, directory, append_version=False)

    def verify(self, app: web.Application) -> None:
        """Refuse any route of ``app`` that was not declared here (called at start-up)."""
        static_prefixes = {prefix for prefix, _ in self.statics}
        for resource in app.router.resources():
            if isinstance(resource, web.StaticResource):
                if resource.canonical not in static_prefixes:
                    raise RouteDeclarationError(f"static route {resource.canonical} was not declared")
                continue
            for route in resource:
                if route.handler not in self._handlers:
                    raise RouteDeclarationError(
                        f"{route.method} {resource.canonical} was added without a declared role; add it through the RouteTable"
                    )


def _wrap(route: Route, authenticator: Authenticator) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if route.role != PUBLIC:
            assert isinstance(route.role, Role)
            try:
                caller = await authenticator.authenticate(request)
            except ApiError as exc:
                if route.page and exc.status == 401:
                    caller = None
                else:
                    raise
            if caller is None:
                if route.page:
                    raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
                raise ApiError(
                    401,
                    "unauthenticated",
                    "sign in first: send Authorization: Bearer <access token or API token> or the session cookies",
                    headers={"WWW-Authenticate": 'Bearer realm="appguard"'},
                )
            if not caller.role.includes(route.role):
                raise ApiError(403, "forbidden", f"this needs the {route.role.value} role; you are {caller.role.value}")
            if caller.via_cookie and request.method not in SAFE_METHODS:
                authenticator.check_csrf(request, caller)
            request[_PRINCIPAL_KEY] = caller
        if route.params is not None:
            request[_PARAMS_KEY] = _validate_params(route.params, dict(request.match_info))
        if route.query is not None:
            request[_QUERY_KEY] = _validate_params(route.query, _query_dict(route.query, request))
        if route.body is not None and not route.reads_body:
            request[_BODY_KEY] = await _read_body(route.body, request)
        return await route.handler(request)

    handle.__name__ = route.handler.__name__
    handle.__doc__ = route.handler.__doc__
    return handle


def _is_list_field(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_field(arg) for arg in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset)


def _query_dict(model: type[BaseModel], request: web.Request) -> dict[str, Any]:
    # Repeated parameters (?status=a&status=b) fill list fields; other fields take one value.
    out: dict[str, Any] = {}
    for key in request.query:
        if key in out:
            continue
        values = request.query.getall(key)
        info = model.model_fields.get(key)
        many = info is not None and _is_list_field(info.annotation)
        if not many and len(values) > 1:
            raise ApiError(400, "invalid_parameter", f"{key} may be given only once", field=key)
        out[key] = values if many else values[0]
    return out


def validation_error(exc: ValidationError, code: str) -> ApiError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        message = f"{where}: unknown field"
    elif first["type"] == "missing":
        message = f"{where}: required"
    else:
        message = f"{where}: {first['msg']}" if where else first["msg"]
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ApiError(400, code, message, field=where or None)


def _validate_params(model: type[M], raw: dict[str, Any]) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, "invalid_parameter") from None


async def _read_body(model: type[M], request: web.Request) -> M:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the request body as Content-Type: application/json")
    # read() enforces the application's client_max_size and raises 413 beyond it.
    return validate_body(model, json_object_body(await request.read()))


def json_object_body(raw: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, decoded; 400 ``malformed_json`` otherwise."""
    if not raw.strip():
        raise ApiError(400, "malformed_json", "the request body is empty; send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", f"the request body must be a JSON object, not {_json_kind(data)}")
    return data


def validate_body(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``; 400 ``invalid_request`` naming the first field at fault."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, "invalid_request") from None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


ROUTES = web.AppKey("appguard_routes", RouteTable)
