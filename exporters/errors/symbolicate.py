"""Turn the frames of minified JavaScript back into the code that was written, with source maps.

A browser bundle's stack says ``at n (https://shop.example/static/app.min.js:1:67)``; each build
names its functions differently, so without help every deploy would open new issues. With the
source map uploaded for the release (``service.version``, see ``docs/sourcemaps.md``), a frame
becomes ``parseCoupon`` in ``src/coupons.js`` line 7 with the source lines around it, before the
event is grouped: the issue keeps its identity across builds.

:class:`Symbolicator` does the work in two steps, so that the database is asked once per batch:

1. :meth:`Symbolicator.prepare` takes the (project, release, path) of every candidate frame of
   a batch and makes their maps ready: paths not in its cache are resolved with one query per
   release (:meth:`storage.sourcemaps.SourceMapStore.resolve`), the maps not in its cache are
   fetched with one more query and parsed by symbolic off the event loop;
2. :meth:`Symbolicator.symbolicate` then rewrites the frames of one stack trace from the cache,
   without any I/O.

The cache is a bounded LRU of parsed maps keyed by (project, release, name), beside the
resolution of paths to names; a path without a map and a map that does not parse are
remembered for a short time only (``negative_ttl``), so an upload takes effect soon.

Frames keep their minified fields when they cannot be mapped, and say why in
``symbolication_error``: ``no source map for <url> in release <r>``, ``source map for <url> is
broken: <why>``, or that the map has no mapping at the frame's position. Files named by a path
rather than a URL (a Node.js server's) are only noted when another frame of the same stack was
mapped: an app that uploads no maps gets no notes on its server-side frames.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin

from symbolic.exceptions import SymbolicError
from symbolic.sourcemap import SourceMapTokenMatch, SourceMapView, SourceView

from exporters.errors.stacktrace import (
    DEFAULT_IN_APP,
    MAX_CONTEXT_LINES,
    Frame,
    InAppRules,
    ParsedStacktrace,
    js_module,
)
from storage.sourcemaps import SourceMapFiles, SourceMapInfo

# (project id, release, frame path) and (project id, release, artifact name).
PathKey = tuple[int, str, str]
MapKey = tuple[int, str, str]

# Pseudo-locations V8, SpiderMonkey and JavaScriptCore print for code that has no file.
_NOT_FILES = ("<anonymous>", "native", "[native code]", "eval code", "<unknown>")


class MapSource(Protocol):
    """Where maps come from: :class:`storage.sourcemaps.SourceMapStore` in production."""

    async def resolve(self, project_id: int, release: str, abs_paths: Iterable[str]) -> dict[str, SourceMapInfo | None]:
        """The map each path finds in the release (None: none)."""
        ...

    async def get_many(self, ids: Iterable[int]) -> dict[int, SourceMapFiles]:
        """The maps with these ids, with their bytes."""
        ...


class BrokenSourceMap(ValueError):
    """A source map symbolic cannot use; the message says why."""


def parse_source_map(map_bytes: bytes) -> SourceMapView:
    """Parse a source map, or raise :class:`BrokenSourceMap` saying why it cannot be used.

    The API checks uploads with this, so what is stored is what the symbolicator can read.
    """
    try:
        view = SourceMapView.from_json_bytes(map_bytes)
    except SymbolicError as exc:
        raise BrokenSourceMap(str(exc) or type(exc).__name__) from None
    if len(view) == 0:
        raise BrokenSourceMap("it has no mappings")
    return view


@dataclass(slots=True)
class LoadedMap:
    """A parsed map and, when it was uploaded, the minified file it belongs to."""

    name: str
    view: SourceMapView | None
    minified: SourceView | None
    error: str | None
    size: int

    @classmethod
    def load(cls, files: SourceMapFiles) -> LoadedMap:
        """Parse the stored bytes (CPU-bound: run it in a thread)."""
        name = files.info.name
        try:
            view = parse_source_map(files.map_bytes)
        except BrokenSourceMap as exc:
            return cls(name, None, None, str(exc), 0)
        minified = SourceView.from_bytes(files.source_bytes) if files.source_bytes is not None else None
        return cls(name, view, minified, None, len(files.map_bytes) + len(files.source_bytes or b""))


@dataclass(slots=True)
class _Resolved:
    map_key: MapKey | None
    map_id: int | None
    expires: float


@dataclass(slots=True)
class _Cached:
    loaded: LoadedMap
    expires: float


def frame_path(frame: Frame) -> str | None:
    """The location a frame's map is looked up by, or None when the frame cannot have one."""
    path = frame.abs_path or frame.filename
    if not path or frame.lineno is None or path in _NOT_FILES:
        return None
    if path.startswith(("node:", "internal/", "native ", "webpack/bootstrap")):
        return None
    return path


def wanted_paths(parsed: ParsedStacktrace) -> set[str]:
    """The paths of a stack trace's frames that a source map may exist for."""
    if parsed.language != "javascript":
        return set()
    return {p for exc in parsed.exceptions for f in exc.frames if (p := frame_path(f)) is not None}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :meth:`Symbolicator.symbolicate` did to one stack trace."""

    mapped: int
    errors: tuple[str, ...]


class Symbolicator:
    """Maps minified JavaScript frames back to their sources; see the module docstring."""

    def __init__(
        self,
        source: MapSource,
        *,
        in_app: InAppRules = DEFAULT_IN_APP,
        max_maps: int = 64,
        max_bytes: int = 256 * 1024 * 1024,
        max_paths: int = 16384,
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.in_app = in_app
        self.max_maps = max_maps
        self.max_bytes = max_bytes
        self.max_paths = max_paths
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        self._paths: OrderedDict[PathKey, _Resolved] = OrderedDict()
        self._maps: OrderedDict[MapKey, _Cached] = OrderedDict()
        self._bytes = 0

    # ---- step 1: fetch what a batch needs

    async def prepare(self, wanted: Iterable[PathKey]) -> None:
        """Make ready the maps of these (project, release, path): one query per release whose
        paths are not cached, and one for the maps not cached. Raises what the store raises."""
        now = self._clock()
        keys = set(wanted)
        by_release: dict[tuple[int, str], set[str]] = {}
        for key in keys:
            hit = self._paths.get(key)
            if hit is None or hit.expires <= now:
                by_release.setdefault((key[0], key[1]), set()).add(key[2])
        for (project_id, release), paths in by_release.items():
            found = await self.source.resolve(project_id, release, paths)
            for path in paths:
                info = found.get(path)
                if info is None:
                    self._remember_path((project_id, release, path), _Resolved(None, None, now + self.negative_ttl))
                else:
                    resolved = _Resolved((project_id, release, info.name), info.id, now + self.ttl)
                    self._remember_path((project_id, release, path), resolved)
        await self._load_missing(keys, now)

    async def _load_missing(self, keys: set[PathKey], now: float) -> None:
        missing: dict[int, MapKey] = {}
        for key in keys:
            entry = self._paths.get(key)
            if entry is None or entry.map_key is None or entry.map_id is None:
                continue
            cached = self._maps.get(entry.map_key)
            if cached is None or cached.expires <= now:
                missing[entry.map_id] = entry.map_key
        if not missing:
            return
        fetched = await self.source.get_many(missing)
        for map_id, map_key in missing.items():
            files = fetched.get(map_id)
            if files is None:
                # Deleted since it was resolved: the paths that led to it have no map now.
                self._forget_map_paths(map_key, now)
                continue
            # symbolic parses megabytes of JSON in native code: off the event loop.
            loaded = await asyncio.to_thread(LoadedMap.load, files)
            expires = now + (self.ttl if loaded.error is None else self.negative_ttl)
            self._remember_map(map_key, _Cached(loaded, expires))

    def _remember_path(self, key: PathKey, entry: _Resolved) -> None:
        self._paths[key] = entry
        self._paths.move_to_end(key)
        while len(self._paths) > self.max_paths:
            self._paths.popitem(last=False)

    def _forget_map_paths(self, map_key: MapKey, now: float) -> None:
        for entry in self._paths.values():
            if entry.map_key == map_key:
                entry.map_key, entry.map_id, entry.expires = None, None, now + self.negative_ttl

    def _remember_map(self, key: MapKey, entry: _Cached) -> None:
        old = self._maps.pop(key, None)
        if old is not None:
            self._bytes -= old.loaded.size
        self._maps[key] = entry
        self._bytes += entry.loaded.size
        while len(self._maps) > 1 and (len(self._maps) > self.max_maps or self._bytes > self.max_bytes):
            _, evicted = self._maps.popitem(last=False)
            self._bytes -= evicted.loaded.size

    # ---- step 2: rewrite frames

    def symbolicate(self, parsed: ParsedStacktrace, project_id: int, release: str) -> Outcome:
        """Rewrite the frames of ``parsed`` that have a prepared map; note why on the others.

        Frames whose path was not passed to :meth:`prepare` are left alone. Mapped frames get
        their original file, function, line, column and source context, and ``in_app`` decided
        afresh from the original path.
        """
        mapped = 0
        failed: list[tuple[Frame, str, str]] = []
        for exc in parsed.exceptions:
            frames = exc.frames
            # The names callers used at their call sites: the original names of the functions
            # they called, for frames whose map has no minified file to find them in.
            call_names = [self._call_name(f, project_id, release) for f in frames]
            for index, frame in enumerate(frames):
                path = frame_path(frame)
                if path is None:
                    continue
                caller = call_names[index - 1] if index > 0 else None
                error = self._map_frame(frame, path, project_id, release, caller)
                if error is None:
                    mapped += 1
                elif error:
                    failed.append((frame, path, error))
        errors: dict[str, None] = {}
        for frame, path, error in failed:
            # A server's files (a path, not a URL) without any map are a Node.js app that uses
            # none: nothing to say. Once one frame of the stack was mapped, the others are noted.
            if not mapped and "://" not in path and self._without_map(path, project_id, release):
                continue
            frame.symbolication_error = error
            errors[error] = None
        return Outcome(mapped, tuple(errors))

    def _without_map(self, path: str, project_id: int, release: str) -> bool:
        resolved = self._paths.get((project_id, release, path))
        return resolved is not None and resolved.map_key is None

    def _loaded(self, path: str, project_id: int, release: str) -> LoadedMap | str | None:
        """The map for a path, the reason it has none, or None when it was not prepared."""
        resolved = self._paths.get((project_id, release, path))
        if resolved is None:
            return None
        if resolved.map_key is None:
            return f"no source map for {path} in release {release}"
        cached = self._maps.get(resolved.map_key)
        if cached is None:
            return None
        self._maps.move_to_end(resolved.map_key)
        if cached.loaded.error is not None:
            return f"source map for {path} is broken: {cached.loaded.error}"
        return cached.loaded

    def _token(self, frame: Frame, loaded: LoadedMap) -> SourceMapTokenMatch | None:
        assert loaded.view is not None and frame.lineno is not None and frame.colno is not None
        line, col = frame.lineno - 1, frame.colno - 1
        token = loaded.view.lookup(line, col)
        # symbolic answers the nearest token before the position, even on an earlier line.
        return token if token is not None and token.dst_line == line else None

    def _call_name(self, frame: Frame, project_id: int, release: str) -> str | None:
        path = frame_path(frame)
        if path is None or frame.colno is None:
            return None
        loaded = self._loaded(path, project_id, release)
        if not isinstance(loaded, LoadedMap):
            return None
        token = self._token(frame, loaded)
        return token.name if token is not None else None

    def _map_frame(self, frame: Frame, path: str, project_id: int, release: str, caller: str | None) -> str | None:
        """Rewrite one frame: None when mapped, else the reason ("" when not prepared)."""
        loaded = self._loaded(path, project_id, release)
        if loaded is None:
            return ""
        if isinstance(loaded, str):
            return loaded
        assert loaded.view is not None and frame.lineno is not None
        if frame.colno is None:
            return f"frame at {path}:{frame.lineno} has no column number, which a source map needs"
        token = self._token(frame, loaded)
        if token is None:
            return f"source map for {path} has no mapping for line {frame.lineno} column {frame.colno}"
        function = self._function_name(frame, loaded, caller)
        source = token.src or ""
        frame.abs_path = _resolve_source(path, source) if source else path
        frame.filename = display_path(source) if source else frame.filename
        frame.module = js_module(frame.filename or "")
        frame.function = function
        frame.lineno = token.src_line + 1
        frame.colno = token.src_col + 1
        frame.context_line = frame.pre_context = frame.post_context = None
        if token.src_id is not None:
            _add_context(frame, loaded.view, token.src_id, token.src_line)
        frame.in_app = self.in_app.is_in_app(frame, "javascript")
        frame.symbolication_error = None
        return None

    def _function_name(self, frame: Frame, loaded: LoadedMap, caller: str | None) -> str | None:
        minified_name = frame.function
        if loaded.minified is not None and loaded.view is not None and minified_name and frame.lineno and frame.colno:
            # V8 prints methods as 'Object.s': the minified name is the last part.
            short = minified_name.rsplit(".", 1)[-1]
            token = loaded.view.lookup(frame.lineno - 1, frame.colno - 1, short, loaded.minified)
            if token is not None and token.function_name:
                return token.function_name
        return caller or minified_name


def _resolve_source(minified_path: str, source: str) -> str:
    """A source of a map as an absolute location, relative to the minified file's."""
    if "://" in source:
        return source
    if "://" in minified_path:
        return urljoin(minified_path, source)
    if minified_path.startswith("/"):
        return posixpath.normpath(posixpath.join(posixpath.dirname(minified_path), source))
    return source


def display_path(source: str) -> str:
    """A map's source name as the frame's file name: ``webpack://shop/./src/a.js`` -> ``src/a.js``,
    ``../../src/a.js`` -> ``src/a.js``."""
    path = source
    scheme_end = path.find("://")
    if scheme_end > 0:
        rest = path[scheme_end + 3 :]
        # webpack://<namespace>/./src/a.js, webpack:///src/a.js
        path = rest.split("/", 1)[1] if "/" in rest else rest
    path = _strip_query(path)
    while path.startswith(("./", "../", "/")):
        path = path[path.find("/") + 1 :]
    return path or source


def _strip_query(path: str) -> str:
    for marker in ("?", "#"):
        cut = path.find(marker)
        if cut >= 0:
            path = path[:cut]
    return path


def _add_context(frame: Frame, view: SourceMapView, src_id: int, line: int) -> None:
    source = view.get_sourceview(src_id)
    if source is None:
        return
    count = len(source)
    if count == 0 or line >= count:
        return
    first = max(0, line - MAX_CONTEXT_LINES)
    frame.pre_context = [_clip(text) for text in source[first:line]] or None
    frame.context_line = _clip(source[line])
    frame.post_context = [_clip(text) for text in source[line + 1 : line + 1 + MAX_CONTEXT_LINES]] or None


# Source lines kept whole up to this length (a bundled library's source may be one long line).
_CONTEXT_MAX_CHARS = 400


def _clip(text: str) -> str:
    return text if len(text) <= _CONTEXT_MAX_CHARS else text[: _CONTEXT_MAX_CHARS - 1] + "…"

