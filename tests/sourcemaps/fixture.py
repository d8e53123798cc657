"""The source-map fixture app (``tests/sourcemaps/app``), minified by esbuild from npm.

:func:`build` bundles and minifies the app as a release would be built, into
``<dir>/dist/static/app.min.js`` with its map; :func:`run` executes such a bundle with Node.js
under a URL, the way a browser loads a ``<script src>``, and returns the real ``Error.stack``
of the checkout bug. Builds with ``banner=True`` hold more code, so the minifier gives the same
functions other short names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app"
ESBUILD = HERE / "node_modules" / ".bin" / "esbuild"
SCRIPT_URL = "http://127.0.0.1:8000/static/app.min.js"


def have_node() -> bool:
    """Whether Node.js and npm are installed (the fixture needs both)."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install() -> None:
    """``npm ci`` in this folder unless esbuild is already installed at the locked version."""
    locked = json.loads((HERE / "package-lock.json").read_text())["packages"]["node_modules/esbuild"]["version"]
    installed = HERE / "node_modules" / "esbuild" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == locked and ESBUILD.exists():
        return
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True, timeout=600)


@dataclass(frozen=True)
class Build:
    """A minified build: the bundle, its map, and the folder they were built in."""

    root: Path
    bundle: Path
    map: Path

    @property
    def static_dir(self) -> Path:
        """The folder served under ``/static/``."""
        return self.bundle.parent


def build(root: Path, *, banner: bool) -> Build:
    """Copy the app's sources to ``root/src`` and minify them into ``root/dist/static``."""
    src = root / "src"
    shutil.copytree(APP, src)
    out = root / "dist" / "static" / "app.min.js"
    subprocess.run(
        [
            str(ESBUILD), "src/main.js", "--bundle", "--minify", "--sourcemap", "--format=iife",
            f"--define:SHOW_BANNER={'true' if banner else 'false'}", f"--outfile={out}", "--log-level=warning",
        ],
        cwd=root, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return Build(root, out, out.with_name(out.name + ".map"))


def run(bundle: Path, url: str = SCRIPT_URL) -> dict[str, str]:
    """The ``{"type", "message", "stack"}`` of the error the bundle throws, loaded from ``url``."""
    done = subprocess.run(
        ["node", str(HERE / "run.js"), str(bundle), url], check=True, capture_output=True, text=True, timeout=60
    )
    result: dict[str, str] = json.loads(done.stdout)
    return result
