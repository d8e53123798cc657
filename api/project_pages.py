"""The dashboard's projects page: every project with its keys and the DSNs to paste into an SDK.

``/projects`` is rendered on the server from :class:`storage.projects.ProjectStore`, the store
the REST API uses (:mod:`api.projects`); the browser sends every change to that API
(``api/static/js/projects.js``: create a project, rename it, add a key, revoke one, copy a DSN),
so its checks and roles apply unchanged. Viewers see the projects and DSNs without the controls.
"""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web

from api.issues import base_url
from api.pages import render
from api.projects import project_store
from api.routing import ROUTES, principal
from storage.projects import DEFAULT_PROJECT, ProjectKey
from storage.users_store import Role

#: Platforms the project form suggests (Sentry's ids); any other id is accepted too.
PLATFORMS: list[str] = [
    "python", "python-django", "python-fastapi", "python-flask", "javascript", "javascript-react", "node",
    "node-express", "java", "go", "ruby", "php", "dotnet", "other",
]  # fmt: skip


async def projects_page(request: web.Request) -> web.StreamResponse:
    """The projects, their keys and DSNs; for admins, the forms that change them."""
    store = project_store(request)
    projects = await store.list_projects()
    keys: defaultdict[int, list[ProjectKey]] = defaultdict(list)
    for key in await store.list_all_keys():
        keys[key.project_id].append(key)
    return render(
        request,
        "projects.html",
        title="Projects",
        projects=projects,
        keys=keys,
        base=base_url(request),
        default_project=DEFAULT_PROJECT,
        platforms=PLATFORMS,
        can_manage=principal(request).role.includes(Role.ADMIN),
    )


def register(app: web.Application) -> None:
    """Declare the projects page."""
    app[ROUTES].page("/projects", projects_page, role=Role.VIEWER, summary="Projects, their keys and DSNs")
