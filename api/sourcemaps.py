"""Source map uploads: the maps of a release's minified JavaScript, per project.

``POST /api/projects/{project_id}/releases/{release}/sourcemaps`` takes, like Sentry's release
files, the maps of a build named by the **minified file** they belong to: its URL
(``https://shop.example/static/app.min.js``) or its path under any host (``~/static/app.min.js``).
Two forms:

- ``multipart/form-data``, one part per file, **the part's field name being the file's artifact
  name**: ``~/static/app.min.js.map`` is a map (filed under ``~/static/app.min.js``), and
  ``~/static/app.min.js`` the minified file itself, optional, stored with the map its
  ``sourceMappingURL`` comment (or its name plus ``.map``) points at. This is what
  ``appguard-collector sourcemaps upload`` sends;
- a raw body holding one map, with ``?name=`` the minified file's name (``Content-Encoding``
  gzip, deflate or br accepted).

Every map must parse (400 naming the file and why); a request larger than
``api.sourcemaps.max_upload_size`` (50 MiB by default, above the API's 1 MiB body limit) is
answered 413. A map uploaded again under the same name replaces the old one.

Who may upload: a member or an admin, signed in or through a personal API token
(``Authorization: Bearer agt_...``, what a build pipeline holds; :mod:`api.api_tokens`). A
project's ingest key is not enough: it is public (browser snippets and DSNs carry it), and maps
decide what every later event of the release shows. Viewers list a release's maps; members and
admins delete them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.errors import ApiError
from api.ingest import read_body
from api.projects import project_store
from api.routing import ROUTES, json_response, params, query
from api.services import Services, services
from exporters.errors.symbolicate import BrokenSourceMap, parse_source_map
from storage.sourcemaps import MAX_NAME_CHARS, MAX_RELEASE_CHARS, SourceMapInfo, SourceMapStore, artifact_name
from storage.users_store import Role

_ID_MAX = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAPPING_URL = re.compile(rb"//[#@] sourceMappingURL=(\S+)\s*$")
_CHUNK = 256 * 1024
_SETTING = "api.sourcemaps.max_upload_size"


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


Release = Annotated[str, Field(min_length=1, max_length=MAX_RELEASE_CHARS), AfterValidator(_printable)]
ArtifactName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(_printable)]


# --------------------------------------------------------------------------- models


class ReleaseParams(BaseModel):
    """The project and the release (``service.version``) in the path."""

    project_id: int = Field(ge=1, le=_ID_MAX)
    release: Release


class SourceMapParams(ReleaseParams):
    """One map of a release."""

    id: int = Field(ge=1, le=_ID_MAX)


class UploadQuery(BaseModel):
    """For a raw body: the minified file's URL or ``~/path`` the map belongs to."""

    model_config = ConfigDict(extra="forbid")

    name: ArtifactName | None = None


class SourceMapOut(BaseModel):
    """A stored map: `name` is the minified file's, `size` and `sha256` the map's as uploaded,
    `source_size` the minified file's when it was uploaded with it."""

    id: int
    project_id: int
    release: str
    name: str
    size: int
    sha256: str
    has_source: bool
    source_size: int | None
    created_at: datetime


class SourceMapList(BaseModel):
    """The maps of a release, by name."""

    sourcemaps: list[SourceMapOut]


def _out(info: SourceMapInfo) -> SourceMapOut:
    return SourceMapOut(
        id=info.id,
        project_id=info.project_id,
        release=info.release,
        name=info.name,
        size=info.map_size,
        sha256=info.sha256,
        has_source=info.has_source,
        source_size=info.source_size,
        created_at=info.created_at,
    )


# --------------------------------------------------------------------------- helpers


def max_upload_size(svc: Services) -> int:
    """``api.sourcemaps.max_upload_size``."""
    return svc.config.sourcemaps.max_upload_size


def _store(request: web.Request) -> SourceMapStore:
    return SourceMapStore(services(request).pool)


async def _project_or_404(request: web.Request, project_id: int) -> None:
    if await project_store(request).get_project(project_id) is None:
        raise ApiError(404, "project_not_found", f"there is no project {project_id}")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the upload is larger than the limit of {limit} bytes ({_SETTING})")


async def _read_part(part: BodyPartReader, budget: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > budget:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_multipart(request: web.Request, limit: int) -> dict[str, bytes]:
    """The parts of a multipart upload by field name, within ``limit`` bytes altogether."""
    files: dict[str, bytes] = {}
    used = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_upload", "nested multipart bodies are not accepted")
            name = part.name or ""
            if not name or len(name) > MAX_NAME_CHARS or _CONTROL.search(name):
                raise ApiError(
                    400,
                    "invalid_upload",
                    "every part's field name must be its file's artifact name (~/static/app.min.js.map), "
                    f"1 to {MAX_NAME_CHARS} printable characters",
                    field=name or None,
                )
            if name in files:
                raise ApiError(400, "invalid_upload", f"{name}: sent twice", field=name)
            data = await _read_part(part, limit - used, limit)
            used += len(data)
            files[name] = data
    except (ValueError, HttpProcessingError, web.RequestPayloadError) as exc:
        # A missing or bad boundary, a part's headers garbled, a body cut short.
        raise ApiError(400, "invalid_upload", f"cannot read the multipart body: {exc}") from None
    if not files:
        raise ApiError(400, "invalid_upload", "the upload holds no file")
    return files


@dataclass(frozen=True)
class Artifact:
    """A map to store under the minified file's ``name``, with that file when it came along."""

    name: str
    map_bytes: bytes
    source: bytes | None


def pair_files(files: dict[str, bytes]) -> list[Artifact]:
    """Pair the maps and minified files of a multipart upload (see the module docstring)."""
    maps = {name: data for name, data in files.items() if name.endswith(".map")}
    sources = {name: data for name, data in files.items() if not name.endswith(".map")}
    paired: dict[str, str] = {}  # map name -> minified file name
    for name, data in sources.items():
        wanted = [f"{name}.map"]
        found = _MAPPING_URL.search(data[-4096:])
        if found is not None:
            url = found.group(1).decode("utf-8", "replace")
            if "://" not in url and not url.startswith("data:"):
                wanted.insert(0, posixpath.normpath(posixpath.join(posixpath.dirname(name), url)))
        map_name = next((m for m in wanted if m in maps), None)
        if map_name is None:
            raise ApiError(
                400,
                "invalid_upload",
                f"{name}: no source map for it in the upload (send it as {wanted[0]})",
                field=name,
            )
        paired[map_name] = name
    artifacts = []
    for name, data in maps.items():
        minified = paired.get(name)
        if minified is None:
            artifacts.append(Artifact(artifact_name(name), data, None))
        else:
            artifacts.append(Artifact(minified, data, sources[minified]))
    return artifacts


def _check_map(name: str, data: bytes) -> None:
    try:
        parse_source_map(data)
    except BrokenSourceMap as exc:
        raise ApiError(400, "invalid_source_map", f"{name}: not a usable source map: {exc}", field=name) from None


# --------------------------------------------------------------------------- handlers


async def upload_sourcemaps(request: web.Request) -> web.StreamResponse:
    """Store the source maps of a release (multipart, or one map as the raw body with ?name=)."""
    target = params(request, ReleaseParams)
    options = query(request, UploadQuery)
    limit = max_upload_size(services(request))
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    if request.content_type.startswith("multipart/"):
        if options.name is not None:
            raise ApiError(400, "invalid_parameter", "name is for a raw body; a multipart part is named by its field", field="name")
        if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
            raise ApiError(415, "unsupported_media_type", "send a multipart upload without Content-Encoding")
        artifacts = pair_files(await _read_multipart(request, limit))
    else:
        if options.name is None:
            raise ApiError(
                400, "invalid_parameter", "name: required for a raw body (the minified file's URL or ~/path)", field="name"
            )
        artifacts = [Artifact(artifact_name(options.name), await read_body(request, limit, _SETTING), None)]
    for artifact in artifacts:
        if not artifact.map_bytes:
            raise ApiError(400, "invalid_source_map", f"{artifact.name}: the map is empty", field=artifact.name)
        _check_map(artifact.name, artifact.map_bytes)
    await _project_or_404(request, target.project_id)
    store = _store(request)
    stored = [
        await store.put(target.project_id, target.release, a.name, a.map_bytes, a.source) for a in artifacts
    ]
    return json_response(SourceMapList(sourcemaps=[_out(info) for info in stored]), status=201)


async def list_sourcemaps(request: web.Request) -> web.StreamResponse:
    """The maps of a release."""
    target = params(request, ReleaseParams)
    await _project_or_404(request, target.project_id)
    found = await _store(request).list_maps(target.project_id, target.release)
    return json_response(SourceMapList(sourcemaps=[_out(info) for info in found]))


async def delete_sourcemap(request: web.Request) -> web.StreamResponse:
    """Delete one map of a release; its frames stay minified in events stored from then on."""
    target = params(request, SourceMapParams)
    if not await _store(request).delete(target.project_id, target.release, target.id):
        raise ApiError(
            404, "sourcemap_not_found", f"release {target.release} of project {target.project_id} has no map {target.id}"
        )
    return web.Response(status=204)


# --------------------------------------------------------------------------- registration


def register(app: web.Application) -> None:
    """Declare the source map endpoints."""
    routes = app[ROUTES]
    tags = ["sourcemaps"]
    path = "/api/projects/{project_id}/releases/{release}/sourcemaps"
    routes.add(
        "POST", path, upload_sourcemaps, role=Role.MEMBER, summary="Upload source maps of a release",
        description="multipart/form-data with one part per file, named by its artifact name "
        "(`~/static/app.min.js.map`, optionally `~/static/app.min.js`), or one map as the raw body with "
        "`?name=`. Needs a member or admin: a build pipeline sends a personal API token "
        "(`Authorization: Bearer agt_...`); a project's ingest key is refused. See docs/sourcemaps.md.",
        params=ReleaseParams, query=UploadQuery, responses={201: SourceMapList},
        errors={404: "no such project", 413: f"larger than {_SETTING}"},
        tags=tags,
    )  # fmt: skip
    routes.add(
        "GET", path, list_sourcemaps, role=Role.VIEWER, summary="List the source maps of a release",
        params=ReleaseParams, responses={200: SourceMapList}, errors={404: "no such project"}, tags=tags,
    )  # fmt: skip
    routes.add(
        "DELETE", path + "/{id}", delete_sourcemap, role=Role.MEMBER, summary="Delete a source map",
        params=SourceMapParams, responses={204: None}, errors={404: "no such map in this release"}, tags=tags,
    )  # fmt: skip
