"""The browser snippet's build (``sdk/browser/dist``), made by ``npm ci`` at the repository's root."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "browser"
DIST = SDK / "dist"


def ensure_node_modules() -> None:
    """Run ``npm ci`` at the root unless the snippet's build dependencies are installed."""
    if not (ROOT / "node_modules" / "esbuild").is_dir() or not (ROOT / "node_modules" / "@rrweb" / "record").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT, check=True, timeout=900)


def ensure_snippet_built() -> Path:
    """``sdk/browser/dist``, built by ``npm ci`` (its postinstall) when missing."""
    if not (DIST / "appguard.js").is_file():
        ensure_node_modules()
        if not (DIST / "appguard.js").is_file():
            subprocess.run(["node", str(SDK / "build.mjs")], cwd=ROOT, check=True, timeout=300)
    if not (DIST / "appguard.js").is_file():
        raise RuntimeError("npm ci did not build sdk/browser/dist/appguard.js")
    return DIST
