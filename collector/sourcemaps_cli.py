"""``appguard-collector sourcemaps upload``: send a build's source maps to AppGuard.

Run it in the build pipeline after the bundler, with the release the bundle reports as
``service.version``::

    appguard-collector sourcemaps upload --url http://appguard:8080 --project 1 \\
        --release 1.2.0 --url-prefix '~/static' dist/static

with a personal API token of a member in ``$APPGUARD_TOKEN`` (or ``--token``), created in the
dashboard under ``/settings/tokens`` or with ``POST /api/tokens``.

Every ``*.js.map`` (``.mjs.map``, ``.cjs.map``) under the directories given, and the maps of
the ``.js`` files given, is uploaded with its minified file, named by the file's path under the
prefix: ``dist/static/app.min.js`` becomes ``~/static/app.min.js``, which is how the frames of
``https://any.host/static/app.min.js`` find it. One request per map; what was stored is printed,
and the command exits non-zero on the first failure with the server's reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from storage.api_tokens import SECRET_PREFIX

_MAP_SUFFIXES = (".js.map", ".mjs.map", ".cjs.map")
_MAPPING_URL = re.compile(rb"//[#@] sourceMappingURL=(\S+)\s*$")


class UploadError(Exception):
    """An upload that cannot be done or was refused; the message is for the user."""


@dataclass(frozen=True)
class MapFile:
    """A map to upload: its path, the minified file's (if found) and the artifact name of that file."""

    map_path: Path
    minified_path: Path | None
    name: str


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sourcemaps upload`` to the CLI's subcommands."""
    p_maps = sub.add_parser("sourcemaps", help="manage the source maps of JavaScript releases")
    actions = p_maps.add_subparsers(dest="sourcemaps_command", required=True)
    up = actions.add_parser(
        "upload",
        help="upload the *.js.map files of a build (and their minified files) for a release",
        description="Upload source maps so that errors from minified JavaScript show the original code.",
    )
    up.add_argument("paths", nargs="+", metavar="DIR_OR_FILE", help="build folders to search, or .js / .js.map files")
    up.add_argument("--url", required=True, help="the AppGuard API, e.g. http://appguard:8080")
    up.add_argument("--project", type=int, default=1, help="project id (default 1)")
    up.add_argument("--release", required=True, help="the release, as the app reports it in service.version")
    up.add_argument(
        "--token",
        default=os.environ.get("APPGUARD_TOKEN"),
        help="a personal API token (agt_...) of a member or admin (default: $APPGUARD_TOKEN); "
        "prefer the variable, which does not show in process lists",
    )
    up.add_argument(
        "--url-prefix",
        default="~",
        help="what the files' paths are prefixed with: '~/static' for files served under /static/ on any host, "
        "or a full URL (default '~')",
    )
    up.add_argument("--no-sources", action="store_true", help="upload the maps only, not the minified files")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each upload")


def find_maps(paths: list[str], url_prefix: str, *, with_sources: bool = True) -> list[MapFile]:
    """The maps under ``paths``, named by their minified file's path under ``url_prefix``."""
    prefix = url_prefix.rstrip("/")
    found: list[MapFile] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            maps = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_MAP_SUFFIXES))
            for map_path in maps:
                found.append(_map_file(map_path, map_path.relative_to(path).as_posix(), prefix, with_sources))
        elif path.is_file() and path.name.endswith(".map"):
            found.append(_map_file(path, path.name, prefix, with_sources))
        elif path.is_file():
            beside = _map_of(path)
            if beside is None:
                raise UploadError(f"{path}: no source map next to it ({path.name}.map) nor named by a sourceMappingURL comment")
            found.append(MapFile(beside, path if with_sources else None, f"{prefix}/{path.name}"))
        else:
            raise UploadError(f"{path}: no such file or directory")
    if not found:
        raise UploadError(f"no *.js.map files found in {', '.join(paths)}")
    return found


def _map_file(map_path: Path, relative: str, prefix: str, with_sources: bool) -> MapFile:
    minified = map_path.with_name(map_path.name[:-4])
    has_minified = with_sources and minified.is_file()
    return MapFile(map_path, minified if has_minified else None, f"{prefix}/{relative[:-4]}")


def _map_of(minified: Path) -> Path | None:
    with open(minified, "rb") as fh:
        fh.seek(max(0, minified.stat().st_size - 4096))
        tail = fh.read()
    match = _MAPPING_URL.search(tail)
    if match is not None:
        url = match.group(1).decode("utf-8", "replace")
        if "://" not in url and not url.startswith("data:"):
            candidate = minified.parent / url
            if candidate.is_file():
                return candidate
    beside = minified.with_name(minified.name + ".map")
    return beside if beside.is_file() else None


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, file name, bytes) parts, and its content type."""
    boundary = f"appguard-{secrets.token_hex(16)}"
    chunks: list[bytes] = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{_quoted(field)}"; filename="{_quoted(filename)}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        )
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def upload(args: argparse.Namespace, item: MapFile) -> list[dict[str, object]]:
    """Upload one map (with its minified file); the stored maps the server answers."""
    parts = [(f"{item.name}.map", item.map_path.name, item.map_path.read_bytes())]
    if item.minified_path is not None:
        parts.append((item.name, item.minified_path.name, item.minified_path.read_bytes()))
    body, content_type = multipart(parts)
    url = f"{args.url.rstrip('/')}/api/projects/{args.project}/releases/{quote(args.release, safe='')}/sourcemaps"
    headers = {
        "Content-Type": content_type,
        "User-Agent": "appguard-collector sourcemaps upload",
        "Authorization": f"Bearer {args.token}",
    }
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise UploadError(f"{item.map_path}: refused with HTTP {exc.code}: {_reason(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise UploadError(f"{item.map_path}: cannot reach {args.url}: {reason}") from None
    stored = answer.get("sourcemaps") if isinstance(answer, dict) else None
    if not isinstance(stored, list):
        raise UploadError(f"{item.map_path}: unexpected answer from {url}")
    return stored


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(exc.read())
        return str(data["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(exc.reason)


def run(args: argparse.Namespace) -> int:
    """``sourcemaps upload``: 0 when every map was stored, 1 otherwise."""
    if not args.url.startswith(("http://", "https://")):
        print(f"Error: --url {args.url!r} must start with http:// or https://", file=sys.stderr)
        return 1
    if not args.token:
        print(
            "Error: give a personal API token of a member in $APPGUARD_TOKEN or --token "
            "(create one at /settings/tokens or with POST /api/tokens)",
            file=sys.stderr,
        )
        return 1
    if not args.token.startswith(SECRET_PREFIX) and args.token.count(".") != 2:
        # Neither an API token nor a session's JWT: most likely the key of a DSN, which used to work.
        print(
            "Error: the token is not a personal API token (agt_...); a project's ingest key (the key of a DSN) "
            "cannot upload source maps. Create a token at /settings/tokens or with POST /api/tokens",
            file=sys.stderr,
        )
        return 1
    try:
        items = find_maps(args.paths, args.url_prefix, with_sources=not args.no_sources)
        for item in items:
            for stored in upload(args, item):
                extra = " with its minified file" if stored.get("has_source") else ""
                print(
                    f"uploaded {stored.get('name')} (map {stored.get('size')} bytes{extra}) "
                    f"for release {args.release} of project {args.project}: #{stored.get('id')}"
                )
    except (UploadError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(items)} source map{'s' if len(items) != 1 else ''} uploaded")
    return 0
