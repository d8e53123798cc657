"""The browser snippet's build (``sdk/browser/build.mjs``) and the route that serves it (``api.sdk``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import api.sdk
from api.routing import ROUTES, Principal, RouteTable
from tests.support.snippet_build import DIST, ROOT, SDK, ensure_node_modules


@pytest.fixture(scope="module")
def built() -> Path:
    """A fresh build, made the way the root's ``npm ci`` makes it (its postinstall script)."""
    ensure_node_modules()
    done = subprocess.run(
        ["node", "sdk/browser/build.mjs"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "built dist/appguard.js" in done.stdout
    return DIST


def test_the_root_npm_install_builds_the_snippet_from_pinned_packages() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    assert manifest["scripts"]["postinstall"] == "node sdk/browser/build.mjs"
    deps = manifest["dependencies"]
    assert {k: deps[k] for k in ("@rrweb/record", "web-vitals", "esbuild", "rrweb-player", "uplot")} == {
        "@rrweb/record": "2.1.6",
        "web-vitals": "6.2.3",
        "esbuild": "0.28.2",
        "rrweb-player": "2.1.7",
        "uplot": "1.6.32",
    }
    lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for name, version in deps.items():
        assert lock[f"node_modules/{name}"]["version"] == version, name
    package = json.loads((SDK / "package.json").read_text())
    assert package["name"] == "@appguard/browser"
    for name, version in package["devDependencies"].items():
        assert deps[name] == version, f"sdk/browser/package.json pins {name} {version}, the root {deps[name]}"


def test_the_build_is_ignored_by_git() -> None:
    done = subprocess.run(["git", "check-ignore", "-q", "sdk/browser/dist/appguard.js"], cwd=ROOT, check=False)
    assert done.returncode == 0


def test_the_script_build_defines_window_appguard_with_a_source_map(built: Path) -> None:
    script = (built / "appguard.js").read_text()
    assert script.startswith("var AppGuard=(()=>{")
    assert script.rstrip().endswith("//# sourceMappingURL=appguard.js.map")
    assert len(script.splitlines()) < 200  # minified (template literals keep their own line breaks)
    source_map = json.loads((built / "appguard.js.map").read_text())
    assert {"../src/browser.js", "../src/index.js", "../src/replay.js"} <= set(source_map["sources"])
    assert any("web-vitals" in s for s in source_map["sources"])
    assert len(source_map["sourcesContent"]) == len(source_map["sources"])

    module = (built / "appguard.esm.js").read_text()
    assert "export{" in module and "AppGuard=" not in module
    notices = (built / "THIRD_PARTY_NOTICES.txt").read_text()
    assert "@rrweb/record 2.1.6 (MIT)" in notices and "web-vitals 6.2.3 (Apache-2.0)" in notices


def test_the_script_build_runs_and_exposes_its_api(built: Path) -> None:
    # Node evaluates the IIFE with the few globals it touches before init (no data-key: no start).
    probe = f"""
        const vm = require('node:vm');
        const window = {{ document: {{ currentScript: null }}, location: {{ origin: 'https://shop.example' }},
                         TextEncoder, URL, console, setTimeout }};
        window.globalThis = window;
        vm.createContext(window);
        vm.runInContext(require('node:fs').readFileSync({json.dumps(str(built / "appguard.js"))}, 'utf8'), window);
        const api = window.AppGuard;
        console.log(JSON.stringify({{ keys: Object.keys(api).sort(), started: api.init({{ key: 'nope' }}), version: api.VERSION }}));
    """
    done = subprocess.run(["node", "-e", probe], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["keys"] == ["VERSION", "captureException", "flush", "getSessionId", "init", "setUser", "track"]
    assert got["started"] is False  # a bad key: refused with a warning, never a throw
    assert "key must be the project's ingest key" in done.stderr


class _NoCallers:
    async def authenticate(self, request: web.Request) -> Principal | None:
        return None

    def check_csrf(self, request: web.Request, principal: Principal) -> None:
        return None


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app[ROUTES] = RouteTable()
    api.sdk.register(app)
    app[ROUTES].install(app, _NoCallers())
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_route_serves_the_built_files_to_any_origin(
    built: Path, client: TestClient[web.Request, web.Application]
) -> None:
    resp = await client.get("/sdk/appguard.js", headers={"Origin": "https://shop.example"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Cache-Control"] == "public, max-age=3600"
    assert await resp.read() == (built / "appguard.js").read_bytes()
    etag = resp.headers["ETag"]
    again = await client.get("/sdk/appguard.js", headers={"If-None-Match": etag})
    assert again.status == 304

    resp = await client.get("/sdk/appguard.js.map")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(await resp.read())["mappings"]


async def test_before_the_build_the_route_says_how_to_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: TestClient[web.Request, web.Application]
) -> None:
    monkeypatch.setattr(api.sdk, "SDK_DIST", tmp_path / "dist")
    for path in ("/sdk/appguard.js", "/sdk/appguard.js.map"):
        resp = await client.get(path)
        assert resp.status == 503
        assert resp.content_type == "text/plain"
        assert "run npm ci" in await resp.text()
