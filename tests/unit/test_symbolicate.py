"""Symbolication of minified JavaScript frames with symbolic, on bundles esbuild really minified.

The fixture app (``tests/sourcemaps/app``) is built twice by esbuild from npm with different
code, so the same functions get other minified names; its real V8 stack traces are parsed,
mapped back with each build's map, and must then fingerprint alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from exporters.errors.grouping import default_hashes
from exporters.errors.stacktrace import Frame, ParsedStacktrace, parse_stacktrace
from exporters.errors.symbolicate import (
    BrokenSourceMap,
    Symbolicator,
    display_path,
    parse_source_map,
    wanted_paths,
)
from storage.sourcemaps import SourceMapFiles, SourceMapInfo, artifact_name, candidates, choose
from tests.sourcemaps import fixture

RELEASE_1, RELEASE_2 = "1.0.0", "2.0.0"
ORIGINAL = ["onCheckoutClicked", "checkout", "computeTotal", "applyDiscount", "parseCoupon"]


class MemorySource:
    """Maps in memory, matched like the PostgreSQL store; counts the queries it answers."""

    def __init__(self) -> None:
        self.files: dict[int, SourceMapFiles] = {}
        self.resolve_calls = 0
        self.get_calls = 0

    def add(self, project_id: int, release: str, name: str, map_bytes: bytes, source: bytes | None = None) -> None:
        info = SourceMapInfo(
            id=len(self.files) + 1,
            project_id=project_id,
            release=release,
            name=name,
            map_size=len(map_bytes),
            sha256=hashlib.sha256(map_bytes).hexdigest(),
            source_size=len(source) if source is not None else None,
            created_at=datetime.now(UTC),
        )
        self.files[info.id] = SourceMapFiles(info, map_bytes, source)

    async def resolve(self, project_id: int, release: str, abs_paths: Iterable[str]) -> dict[str, SourceMapInfo | None]:
        self.resolve_calls += 1
        rows = [f.info for f in self.files.values() if f.info.project_id == project_id and f.info.release == release]
        return {path: choose(rows, candidates(path)) for path in abs_paths}

    async def get_many(self, ids: Iterable[int]) -> dict[int, SourceMapFiles]:
        self.get_calls += 1
        return {i: self.files[i] for i in ids if i in self.files}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[fixture.Build, fixture.Build]:
    if not fixture.have_node():
        pytest.skip("Node.js and npm are needed to build the fixture app")
    fixture.install()
    root = tmp_path_factory.mktemp("builds")
    return fixture.build(root / "v1", banner=False), fixture.build(root / "v2", banner=True)


def _parse(stack: dict[str, str]) -> ParsedStacktrace:
    return parse_stacktrace(stack["stack"], language="webjs")


def _bundle_frames(parsed: ParsedStacktrace) -> list[Frame]:
    # The frames of the app; run.js and Node's own frames come after them.
    return [f for f in parsed.exceptions[-1].frames if "run.js" not in (f.abs_path or "") and not (f.abs_path or "").startswith("node:")]


def _symbolicate(source: MemorySource, parsed: ParsedStacktrace, release: str, **options: float) -> Symbolicator:
    symbolicator = Symbolicator(source, **options)  # type: ignore[arg-type]
    asyncio.run(symbolicator.prepare({(1, release, p) for p in wanted_paths(parsed)}))
    symbolicator.symbolicate(parsed, 1, release)
    return symbolicator


def test_two_builds_map_to_the_same_functions_and_fingerprint(builds: tuple[fixture.Build, fixture.Build]) -> None:
    source = MemorySource()
    parsed: list[ParsedStacktrace] = []
    minified_names: list[list[str | None]] = []
    for build, release in zip(builds, (RELEASE_1, RELEASE_2), strict=True):
        source.add(1, release, "~/static/app.min.js", build.map.read_bytes(), build.bundle.read_bytes())
        stack = _parse(fixture.run(build.bundle))
        minified_names.append([f.function for f in _bundle_frames(stack)])
        parsed.append(stack)
    # Really minified, and differently: without maps the two builds are two issues.
    assert minified_names[0] != minified_names[1]
    assert default_hashes(parsed[0]).primary != default_hashes(parsed[1]).primary

    for stack, release in zip(parsed, (RELEASE_1, RELEASE_2), strict=True):
        _symbolicate(source, stack, release)
        frames = _bundle_frames(stack)
        assert [f.function for f in frames] == ORIGINAL
        failing = frames[-1]
        assert failing.filename == "src/coupons.js"
        assert failing.abs_path == "http://127.0.0.1:8000/src/coupons.js"
        assert failing.lineno == 7
        assert failing.context_line is not None and "coupon.code.trim()" in failing.context_line
        assert failing.pre_context is not None and failing.pre_context[-2].startswith("export function parseCoupon")
        assert failing.in_app and failing.symbolication_error is None
        assert [f.filename for f in frames] == ["src/main.js", "src/cart.js", "src/pricing.js", "src/pricing.js", "src/coupons.js"]
    assert default_hashes(parsed[0]).primary == default_hashes(parsed[1]).primary


def test_without_the_minified_file_callers_name_the_functions(builds: tuple[fixture.Build, fixture.Build]) -> None:
    build = builds[1]
    source = MemorySource()
    source.add(1, RELEASE_2, "~/static/app.min.js", build.map.read_bytes())
    stack = _parse(fixture.run(build.bundle))
    outermost = _bundle_frames(stack)[0].function
    _symbolicate(source, stack, RELEASE_2)
    frames = _bundle_frames(stack)
    # Each function is named by the call its caller made; the outermost has no mapped caller.
    assert [f.function for f in frames[1:]] == ORIGINAL[1:]
    assert frames[0].function == outermost
    assert frames[0].filename == "src/main.js"


def test_missing_map_keeps_the_frame_and_says_why(builds: tuple[fixture.Build, fixture.Build]) -> None:
    stack = _parse(fixture.run(builds[0].bundle))
    before = [(f.function, f.lineno, f.colno) for f in _bundle_frames(stack)]
    _symbolicate(MemorySource(), stack, "9.9.9")
    frames = _bundle_frames(stack)
    assert [(f.function, f.lineno, f.colno) for f in frames] == before
    assert {f.symbolication_error for f in frames} == {
        f"no source map for {fixture.SCRIPT_URL} in release 9.9.9"
    }
    assert frames[-1].to_dict()["symbolication_error"].startswith("no source map for")


def test_server_files_without_any_map_are_not_noted() -> None:
    stack = parse_stacktrace("TypeError: x\n    at f (/srv/app/server.js:10:5)\n    at g (/srv/app/main.js:3:1)", language="nodejs")
    symbolicator = Symbolicator(MemorySource())
    asyncio.run(symbolicator.prepare({(1, "r1", p) for p in wanted_paths(stack)}))
    assert symbolicator.symbolicate(stack, 1, "r1").errors == ()
    assert [f.symbolication_error for f in stack.exceptions[-1].frames] == [None, None]


def test_broken_map_keeps_the_frame_and_says_why(builds: tuple[fixture.Build, fixture.Build]) -> None:
    source = MemorySource()
    source.add(1, RELEASE_1, "~/static/app.min.js", b'{"version": 3, "sources": ["a.js"], "mappings": "!!!"}')
    stack = _parse(fixture.run(builds[0].bundle))
    _symbolicate(source, stack, RELEASE_1)
    error = _bundle_frames(stack)[-1].symbolication_error
    assert error is not None and error.startswith(f"source map for {fixture.SCRIPT_URL} is broken: ")
    assert _bundle_frames(stack)[-1].filename == "/static/app.min.js"


def test_cache_asks_once_and_forgets_a_missing_map_after_a_while(builds: tuple[fixture.Build, fixture.Build]) -> None:
    build = builds[0]
    source = MemorySource()
    clock = Clock()
    symbolicator = Symbolicator(source, negative_ttl=30.0, ttl=300.0, clock=clock)
    keys = {(1, RELEASE_1, fixture.SCRIPT_URL)}
    asyncio.run(symbolicator.prepare(keys))
    asyncio.run(symbolicator.prepare(keys))
    assert source.resolve_calls == 1
    # Uploaded meanwhile: still "no map" until the negative entry expires.
    source.add(1, RELEASE_1, "~/static/app.min.js", build.map.read_bytes())
    stack = _parse(fixture.run(build.bundle))
    symbolicator.symbolicate(stack, 1, RELEASE_1)
    assert _bundle_frames(stack)[-1].symbolication_error is not None
    clock.now += 31
    asyncio.run(symbolicator.prepare(keys))
    assert source.resolve_calls == 2 and source.get_calls == 1
    stack = _parse(fixture.run(build.bundle))
    symbolicator.symbolicate(stack, 1, RELEASE_1)
    assert _bundle_frames(stack)[-1].function == "parseCoupon"
    # Found maps stay cached: no more queries within the ttl.
    asyncio.run(symbolicator.prepare(keys))
    assert (source.resolve_calls, source.get_calls) == (2, 1)


def test_parsed_maps_are_bounded(builds: tuple[fixture.Build, fixture.Build]) -> None:
    source = MemorySource()
    for build, release in zip(builds, (RELEASE_1, RELEASE_2), strict=True):
        source.add(1, release, "~/static/app.min.js", build.map.read_bytes())
    symbolicator = Symbolicator(source, max_maps=1)
    asyncio.run(symbolicator.prepare({(1, RELEASE_1, fixture.SCRIPT_URL)}))
    asyncio.run(symbolicator.prepare({(1, RELEASE_2, fixture.SCRIPT_URL)}))
    assert len(symbolicator._maps) == 1
    # The evicted map is fetched again when needed.
    asyncio.run(symbolicator.prepare({(1, RELEASE_1, fixture.SCRIPT_URL)}))
    assert source.get_calls == 3


def _hand_map(source_name: str) -> bytes:
    # One mapping: generated line 1 column 1 -> source 0, line 1 column 1.
    return json.dumps(
        {"version": 3, "sources": [source_name], "names": [], "mappings": "AAAA", "sourcesContent": ["module.exports = get;"]}
    ).encode()


def test_library_sources_are_not_in_app() -> None:
    source = MemorySource()
    source.add(1, "r1", "~/static/vendor.js", _hand_map("webpack://shop/./node_modules/lodash/get.js"))
    stack = parse_stacktrace(
        "TypeError: boom\n    at get (https://cdn.example/static/vendor.js:1:1)", language="webjs"
    )
    _symbolicate(source, stack, "r1")
    frame = stack.exceptions[-1].frames[0]
    assert frame.filename == "node_modules/lodash/get.js"
    assert frame.module == "lodash/get"
    assert frame.in_app is False
    assert frame.context_line == "module.exports = get;"


def test_a_position_without_mapping_says_so() -> None:
    source = MemorySource()
    source.add(1, "r1", "~/static/vendor.js", _hand_map("src/a.js"))
    stack = parse_stacktrace("TypeError: boom\n    at f (https://cdn.example/static/vendor.js:5:3)", language="webjs")
    _symbolicate(source, stack, "r1")
    error = stack.exceptions[-1].frames[0].symbolication_error
    assert error == "source map for https://cdn.example/static/vendor.js has no mapping for line 5 column 3"


def test_other_languages_have_nothing_to_map() -> None:
    parsed = parse_stacktrace('Traceback (most recent call last):\n  File "/app/x.js.py", line 1, in f\nValueError: x')
    assert wanted_paths(parsed) == set()


def test_parse_source_map_refuses_what_symbolic_cannot_use() -> None:
    with pytest.raises(BrokenSourceMap, match="bad json"):
        parse_source_map(b"not json")
    with pytest.raises(BrokenSourceMap, match="no mappings"):
        parse_source_map(b'{"version": 3, "sources": [], "mappings": ""}')
    assert len(parse_source_map(_hand_map("a.js"))) == 1


def test_matching_rules() -> None:
    url = "https://shop.example/static/app.min.js?v=3#x"
    wanted = candidates(url)
    assert wanted.exact == (url, "https://shop.example/static/app.min.js")
    assert wanted.tilde == "~/static/app.min.js"
    assert wanted.basename == "app.min.js"
    assert candidates("/srv/app/dist/app.js").tilde == "~/srv/app/dist/app.js"

    def row(i: int, name: str) -> SourceMapInfo:
        return SourceMapInfo(i, 1, "r", name, 1, "", None, datetime.now(UTC))

    exact, tilde, other = row(1, "https://shop.example/static/app.min.js"), row(2, "~/static/app.min.js"), row(3, "~/x/app.min.js")
    assert choose([tilde, exact], wanted) is exact
    assert choose([tilde, other], wanted) is tilde
    assert choose([other], wanted) is other
    # Two maps share the basename: no guess.
    assert choose([other, row(4, "~/y/app.min.js")], wanted) is None
    assert artifact_name("~/static/app.min.js.map") == "~/static/app.min.js"


def test_display_paths() -> None:
    assert display_path("webpack://shop/./src/a.js") == "src/a.js"
    assert display_path("webpack:///src/a.js") == "src/a.js"
    assert display_path("../../src/a.js") == "src/a.js"
    assert display_path("src/a.js?abc") == "src/a.js"


def test_frame_round_trips_its_symbolication_error() -> None:
    frame = Frame(function="n", filename="/static/app.min.js", lineno=1, colno=5, symbolication_error="why")
    assert Frame.from_dict(frame.to_dict()).symbolication_error == "why"
    assert "symbolication_error" not in Frame(function="n").to_dict()

