"""The browser snippet, served to the pages that embed it: ``GET /sdk/appguard.js`` and its map.

The snippet is built from ``sdk/browser`` by the repository's ``npm ci`` (its ``postinstall``
runs ``sdk/browser/build.mjs``) into ``sdk/browser/dist``; nothing built is committed. The files
are public (any site may load them, so ``Access-Control-Allow-Origin: *``) and cached for an
hour, with an ETag for revalidation. Until the build has run, both paths answer 503 with the
command that builds it.
"""

from __future__ import annotations

from aiohttp import web

from api.routing import PUBLIC, ROUTES
from api.services import WEB_ROOT

#: Where ``sdk/browser/build.mjs`` writes the bundle.
SDK_DIST = WEB_ROOT / "sdk" / "browser" / "dist"

#: Not immutable: the URL carries no version, so a new build must reach browsers within the hour.
CACHE_CONTROL = "public, max-age=3600"

_NOT_BUILT = "The AppGuard browser snippet is not built: run npm ci at the root of the AppGuard repository.\n"


def _serve(name: str, content_type: str) -> web.StreamResponse:
    path = SDK_DIST / name
    if not path.is_file():
        return web.Response(
            status=503, text=_NOT_BUILT, content_type="text/plain", headers={"Cache-Control": "no-store"}
        )
    return web.FileResponse(
        path,
        headers={
            "Content-Type": content_type,
            "Cache-Control": CACHE_CONTROL,
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
        },
    )


async def sdk_script(request: web.Request) -> web.StreamResponse:
    """The snippet's script-tag build (``window.AppGuard``)."""
    return _serve("appguard.js", "text/javascript; charset=utf-8")


async def sdk_source_map(request: web.Request) -> web.StreamResponse:
    """The snippet's source map, for readable stacks in the browser's developer tools."""
    return _serve("appguard.js.map", "application/json")


def register(app: web.Application) -> None:
    """Declare the snippet's two public files."""
    routes = app[ROUTES]
    routes.page("/sdk/appguard.js", sdk_script, role=PUBLIC, summary="Browser snippet")
    routes.page("/sdk/appguard.js.map", sdk_source_map, role=PUBLIC, summary="Browser snippet source map")
