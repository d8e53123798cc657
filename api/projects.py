"""The project endpoints: projects and their client keys, the DSNs Sentry SDKs report with.

Thin handlers over :class:`storage.projects.ProjectStore`. Viewers read; projects and keys are
settings of the installation, like users, so only admins change them. Every key in an answer
carries its ``dsn``, built from the API's public address (:func:`api.issues.base_url`): what a
user pastes into ``sentry_sdk.init(dsn=...)``.

Keys are never deleted: ``DELETE /api/projects/{id}/keys/{key_id}`` revokes one (events sent with
it are refused from then on) and answers the key, flagged ``active: false``; revoking it again
changes nothing. A new project comes with one active key.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.errors import ApiError
from api.issues import base_url
from api.routing import ROUTES, body, json_response, params
from api.services import services
from storage.projects import Project, ProjectKey, ProjectNameTaken, ProjectStore
from storage.users_store import Role

_ID_MAX = 2**63 - 1

# Sentry's platform ids: lower-case words joined by "-" or "." (python, javascript-react).
_PLATFORM = re.compile(r"^(?:[a-z0-9]+(?:[.-][a-z0-9]+)*)?$")


def _platform(value: str) -> str:
    if not _PLATFORM.match(value):
        raise ValueError("use lower-case letters and digits joined by - or . (python, javascript-react), or nothing")
    return value


ProjectName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Platform = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), AfterValidator(_platform)]


# --------------------------------------------------------------------------- request models


class ProjectBody(BaseModel):
    """A new project: its name (unique, whatever the case) and the platform its SDK runs on."""

    model_config = ConfigDict(extra="forbid")

    name: ProjectName
    platform: Platform = ""


class ProjectPatch(BaseModel):
    """The changes to make to a project; give at least one."""

    model_config = ConfigDict(extra="forbid")

    name: ProjectName | None = None
    platform: Platform | None = None

    @model_validator(mode="after")
    def _something(self) -> ProjectPatch:
        if self.name is None and self.platform is None:
            raise ValueError("give name and/or platform")
        return self


class ProjectKeyBody(BaseModel):
    """A new client key: a label to tell keys apart and, optionally, its own rate limit."""

    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = ""
    rate_limit: int | None = Field(default=None, ge=1, le=1_000_000, description="events per minute; null: no limit")


class ProjectParams(BaseModel):
    """The project's id in the path."""

    id: int = Field(ge=1, le=_ID_MAX)


class ProjectKeyParams(BaseModel):
    """The project's and the key's ids in the path."""

    id: int = Field(ge=1, le=_ID_MAX)
    key_id: int = Field(ge=1, le=_ID_MAX)


# --------------------------------------------------------------------------- response models


class ProjectOut(BaseModel):
    """A project; its `id` is the last part of its DSNs and the issue list's `project`."""

    id: int
    name: str
    platform: str
    created_at: datetime


class ProjectKeyOut(BaseModel):
    """A client key with the DSN to configure an SDK with; `active` is false once revoked."""

    id: int
    project_id: int
    label: str
    public_key: str
    dsn: str
    active: bool
    rate_limit: int | None
    created_at: datetime
    revoked_at: datetime | None


class ProjectDetail(ProjectOut):
    """A project with its keys, revoked ones included, by id."""

    keys: list[ProjectKeyOut]


class ProjectList(BaseModel):
    """Every project, by id."""

    projects: list[ProjectOut]


class ProjectKeyList(BaseModel):
    """A project's keys, revoked ones included, by id."""

    keys: list[ProjectKeyOut]


# --------------------------------------------------------------------------- helpers


def project_store(request: web.Request) -> ProjectStore:
    """The projects of the application's database."""
    return ProjectStore(services(request).pool)


def project_out(project: Project) -> ProjectOut:
    """The API's view of a project."""
    return ProjectOut(id=project.id, name=project.name, platform=project.platform, created_at=project.created_at)


def key_out(key: ProjectKey, base: str) -> ProjectKeyOut:
    """The API's view of a key, with its DSN at the API's public address ``base``."""
    return ProjectKeyOut(
        id=key.id,
        project_id=key.project_id,
        label=key.label,
        public_key=key.public_key,
        dsn=key.dsn(base),
        active=key.active,
        rate_limit=key.rate_limit,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


async def _detail(request: web.Request, project: Project) -> ProjectDetail:
    keys = await project_store(request).list_keys(project.id)
    base = base_url(request)
    return ProjectDetail(**project_out(project).model_dump(), keys=[key_out(k, base) for k in keys])


async def _project_or_404(request: web.Request, project_id: int) -> Project:
    project = await project_store(request).get_project(project_id)
    if project is None:
        raise _project_not_found(project_id)
    return project


def _project_not_found(project_id: int) -> ApiError:
    return ApiError(404, "project_not_found", f"there is no project {project_id}")


def _name_taken(exc: ProjectNameTaken) -> ApiError:
    return ApiError(409, "project_name_taken", str(exc), field="name")


# --------------------------------------------------------------------------- handlers


async def list_projects(request: web.Request) -> web.StreamResponse:
    """Every project, by id."""
    found = await project_store(request).list_projects()
    return json_response(ProjectList(projects=[project_out(p) for p in found]))


async def create_project(request: web.Request) -> web.StreamResponse:
    """Create a project, with one active key."""
    data = body(request, ProjectBody)
    try:
        project = await project_store(request).create_project(data.name, data.platform)
    except ProjectNameTaken as exc:
        raise _name_taken(exc) from None
    return json_response(await _detail(request, project), status=201)


async def get_project(request: web.Request) -> web.StreamResponse:
    """A project with its keys."""
    project = await _project_or_404(request, params(request, ProjectParams).id)
    return json_response(await _detail(request, project))


async def update_project(request: web.Request) -> web.StreamResponse:
    """Rename a project or change its platform."""
    target = params(request, ProjectParams)
    change = body(request, ProjectPatch)
    store = project_store(request)
    current = await _project_or_404(request, target.id)
    try:
        project = await store.rename_project(target.id, change.name or current.name, change.platform)
    except ProjectNameTaken as exc:
        raise _name_taken(exc) from None
    if project is None:
        raise _project_not_found(target.id)
    return json_response(await _detail(request, project))


async def list_project_keys(request: web.Request) -> web.StreamResponse:
    """A project's keys, revoked ones included."""
    project = await _project_or_404(request, params(request, ProjectParams).id)
    keys = await project_store(request).list_keys(project.id)
    base = base_url(request)
    return json_response(ProjectKeyList(keys=[key_out(k, base) for k in keys]))


async def create_project_key(request: web.Request) -> web.StreamResponse:
    """Add a client key to a project."""
    project = await _project_or_404(request, params(request, ProjectParams).id)
    data = body(request, ProjectKeyBody)
    key = await project_store(request).create_key(project.id, data.label, data.rate_limit)
    return json_response(key_out(key, base_url(request)), status=201)


async def revoke_project_key(request: web.Request) -> web.StreamResponse:
    """Revoke a key: events sent with it are refused from now on."""
    target = params(request, ProjectKeyParams)
    key = await project_store(request).revoke_key(target.id, target.key_id)
    if key is None:
        raise ApiError(404, "project_key_not_found", f"project {target.id} has no key {target.key_id}")
    return json_response(key_out(key, base_url(request)))


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the ``/api/projects`` endpoints."""
    routes = app[ROUTES]
    tags = ["projects"]
    not_found = {404: "no such project"}
    taken = {409: "another project has this name (whatever the case)"}
    routes.add(
        "GET", "/api/projects", list_projects, role=Role.VIEWER, summary="List projects",
        responses={200: ProjectList}, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/projects", create_project, role=Role.ADMIN, summary="Create a project",
        description="The project comes with one active key; its `dsn` is what the SDK is configured with.",
        body=ProjectBody, responses={201: ProjectDetail}, errors=taken, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/projects/{id}", get_project, role=Role.VIEWER, summary="A project with its keys",
        params=ProjectParams, responses={200: ProjectDetail}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "PATCH", "/api/projects/{id}", update_project, role=Role.ADMIN,
        summary="Rename a project or change its platform", params=ProjectParams, body=ProjectPatch,
        responses={200: ProjectDetail}, errors={**not_found, **taken}, tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", "/api/projects/{id}/keys", list_project_keys, role=Role.VIEWER, summary="A project's keys",
        params=ProjectParams, responses={200: ProjectKeyList}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "POST", "/api/projects/{id}/keys", create_project_key, role=Role.ADMIN, summary="Add a key to a project",
        params=ProjectParams, body=ProjectKeyBody, responses={201: ProjectKeyOut}, errors=not_found, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", "/api/projects/{id}/keys/{key_id}", revoke_project_key, role=Role.ADMIN, summary="Revoke a key",
        description="The key stays listed, with `active: false` and `revoked_at`; events sent with it are "
        "refused from then on. Revoking a revoked key changes nothing.",
        params=ProjectKeyParams, responses={200: ProjectKeyOut}, errors={404: "no such key in this project"},
        tags=tags,
    )  # fmt: skip
