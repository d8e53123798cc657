"""The source map endpoints over HTTP against the real PostgreSQL: multipart and raw uploads,
who may upload (members and admins, signed in or with an API token) and who may not (viewers,
anyone holding only a project's ingest key), maps that do not parse refused naming the file,
uploads far above the API's 1 MiB body limit accepted, the upload limit answered 413, listing,
replacing and deleting; and the rows as stored (zstd)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest
import zstandard

import api.sourcemaps
from collector.sourcemaps_cli import multipart
from tests.support.api import ApiClient

PATH = "/api/projects/1/releases/1.2.0/sourcemaps"
MINIFIED = b"(()=>{function n(o){return o.code.trim()}globalThis.f=n;})();\n//# sourceMappingURL=app.min.js.map\n"


def source_map(content: str = "export function parseCoupon(c) {\n  return c.code.trim();\n}\n") -> bytes:
    return json.dumps(
        {"version": 3, "sources": ["../src/coupons.js"], "names": ["parseCoupon"], "mappings": "AAAA",
         "sourcesContent": [content]}
    ).encode()  # fmt: skip


def rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode(), args).fetchall()


def ingest_key(dsn: str, project_id: int = 1) -> str:
    [(key,)] = rows(dsn, "SELECT public_key FROM appguard.project_keys WHERE project_id = %s", project_id)
    return str(key)


async def upload(
    http: ApiClient, parts: list[tuple[str, bytes]], *, path: str = PATH, token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:  # fmt: skip
    body, content_type = multipart([(name, name.rsplit("/", 1)[-1], data) for name, data in parts])
    return await http.call("POST", path, data=body, token=token, headers={"Content-Type": content_type, **(headers or {})})


async def test_a_member_uploads_a_map_with_its_minified_file(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    the_map = source_map()
    reply = await upload(
        http, [("~/static/app.min.js.map", the_map), ("~/static/app.min.js", MINIFIED)], token=tokens["member"]
    )
    assert reply.status == 201, reply.body
    [stored] = reply.body["sourcemaps"]
    assert (stored["name"], stored["release"], stored["project_id"]) == ("~/static/app.min.js", "1.2.0", 1)
    assert (stored["size"], stored["sha256"]) == (len(the_map), hashlib.sha256(the_map).hexdigest())
    assert (stored["has_source"], stored["source_size"]) == (True, len(MINIFIED))

    [(name, basename, map_zstd, source_zstd, size)] = rows(
        appguard_dsn, "SELECT name, basename, map_zstd, source_zstd, map_size FROM appguard.source_maps"
    )
    assert (name, basename, size) == ("~/static/app.min.js", "app.min.js", len(the_map))
    assert zstandard.ZstdDecompressor().decompress(map_zstd) == the_map
    assert zstandard.ZstdDecompressor().decompress(source_zstd) == MINIFIED

    listed = await http.call("GET", PATH, token=tokens["viewer"])
    assert listed.status == 200 and listed.body == reply.body
    # Another release has none.
    other = await http.call("GET", "/api/projects/1/releases/1.3.0/sourcemaps", token=tokens["viewer"])
    assert other.body == {"sourcemaps": []}


async def test_uploading_again_replaces_and_a_map_alone_is_filed_under_its_minified_file(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    first = await upload(http, [("~/static/app.min.js.map", source_map("one"))], token=tokens["admin"])
    second = await upload(http, [("~/static/app.min.js.map", source_map("two"))], token=tokens["admin"])
    assert first.status == second.status == 201
    assert second.body["sourcemaps"][0]["name"] == "~/static/app.min.js"
    assert second.body["sourcemaps"][0]["has_source"] is False
    [(sha,)] = rows(appguard_dsn, "SELECT sha256 FROM appguard.source_maps")
    assert sha == hashlib.sha256(source_map("two")).hexdigest()


async def test_a_build_pipeline_uploads_with_an_api_token_and_an_ingest_key_is_refused(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str
) -> None:
    made = await http.call("POST", "/api/tokens", json={"name": "ci"}, token=tokens["member"])
    assert made.status == 201, made.body
    ok = await upload(http, [("~/a.js.map", source_map())], token=made.body["token"])
    assert ok.status == 201, ok.body
    # Ingest keys are public (snippets, DSNs): they upload nothing, in the header or the query.
    key = ingest_key(appguard_dsn)
    refused = await upload(http, [("~/b.js.map", source_map())], headers={"X-AppGuard-Key": key})
    assert (refused.status, refused.error_code) == (401, "unauthenticated")
    in_query = await upload(http, [("~/b.js.map", source_map())], path=f"{PATH}?key={key}")
    assert (in_query.status, in_query.error_code) == (401, "unauthenticated")
    nobody = await upload(http, [("~/b.js.map", source_map())])
    assert (nobody.status, nobody.error_code) == (401, "unauthenticated")
    viewer = await upload(http, [("~/b.js.map", source_map())], token=tokens["viewer"])
    assert (viewer.status, viewer.error_code) == (403, "forbidden")
    revoked = await http.call("DELETE", f"/api/tokens/{made.body['id']}", token=tokens["member"])
    assert revoked.status == 204
    late = await upload(http, [("~/b.js.map", source_map())], token=made.body["token"])
    assert (late.status, late.error_code) == (401, "api_token_revoked")
    assert rows(appguard_dsn, "SELECT name FROM appguard.source_maps") == [("~/a.js",)]


async def test_a_raw_body_names_its_minified_file_in_the_query(http: ApiClient, tokens: dict[str, str]) -> None:
    name = "https://shop.example/static/app.min.js"
    reply = await http.call(
        "POST", f"{PATH}?name={name}.map", data=source_map(), token=tokens["member"],
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert reply.status == 201, reply.body
    assert reply.body["sourcemaps"][0]["name"] == name
    missing = await http.call(
        "POST", PATH, data=source_map(), token=tokens["member"], headers={"Content-Type": "application/json"}
    )
    assert (missing.status, missing.error_code, missing.body["error"]["field"]) == (400, "invalid_parameter", "name")


async def test_a_broken_map_is_refused_naming_the_file(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    reply = await upload(
        http,
        [("~/static/good.js.map", source_map()), ("~/static/bad.js.map", b'{"version": 3, "mappings": "!!"')],
        token=tokens["member"],
    )
    assert (reply.status, reply.error_code) == (400, "invalid_source_map")
    assert reply.body["error"]["field"] == "~/static/bad.js"
    assert reply.body["error"]["message"].startswith("~/static/bad.js: not a usable source map: ")
    lonely = await upload(http, [("~/static/app.min.js", MINIFIED)], token=tokens["member"])
    assert (lonely.status, lonely.error_code) == (400, "invalid_upload")
    assert "~/static/app.min.js.map" in lonely.body["error"]["message"]
    garbage = await http.call(
        "POST", PATH, data=b"--x\r\nnot a part", token=tokens["member"],
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )  # fmt: skip
    assert garbage.status == 400
    # Nothing of a refused upload is stored, and the server goes on serving.
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.source_maps") == [(0,)]
    assert (await http.call("GET", PATH, token=tokens["viewer"])).status == 200


async def test_maps_of_several_megabytes_are_accepted(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    big = source_map("// padding\n" * 300_000)  # 3.3 MB, above the API's 1 MiB body limit
    assert len(big) > 3 * 1024 * 1024
    reply = await upload(http, [("~/static/vendor.js.map", big)], token=tokens["member"])
    assert reply.status == 201, reply.body
    [(size, stored)] = rows(appguard_dsn, "SELECT map_size, length(map_zstd) FROM appguard.source_maps")
    assert size == len(big) and stored < size // 10


async def test_uploads_over_the_limit_are_answered_413(
    http: ApiClient, tokens: dict[str, str], appguard_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.sourcemaps, "max_upload_size", lambda svc: 64 * 1024)
    big = source_map("x" * 100_000)
    declared = await upload(http, [("~/static/vendor.js.map", big)], token=tokens["member"])
    assert (declared.status, declared.error_code) == (413, "body_too_large")
    assert "api.sourcemaps.max_upload_size" in declared.body["error"]["message"]

    # Sent in chunks without a Content-Length: counted while read.
    body, content_type = multipart([("~/static/vendor.js.map", "vendor.js.map", big)])

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    async with aiohttp.ClientSession() as session, session.post(
        http.base + PATH, data=chunks(), headers={"Content-Type": content_type, "Authorization": f"Bearer {tokens['member']}"}
    ) as resp:
        assert resp.status == 413
    assert rows(appguard_dsn, "SELECT count(*) FROM appguard.source_maps") == [(0,)]


async def test_members_delete_maps_viewers_do_not(http: ApiClient, tokens: dict[str, str], appguard_dsn: str) -> None:
    reply = await upload(http, [("~/a.js.map", source_map()), ("~/b.js.map", source_map())], token=tokens["member"])
    ids = {m["name"]: m["id"] for m in reply.body["sourcemaps"]}
    refused = await http.call("DELETE", f"{PATH}/{ids['~/a.js']}", token=tokens["viewer"])
    assert refused.status == 403
    done = await http.call("DELETE", f"{PATH}/{ids['~/a.js']}", token=tokens["member"])
    assert done.status == 204
    again = await http.call("DELETE", f"{PATH}/{ids['~/a.js']}", token=tokens["member"])
    assert (again.status, again.error_code) == (404, "sourcemap_not_found")
    # The id must be of this release.
    elsewhere = await http.call("DELETE", f"/api/projects/1/releases/9.9/sourcemaps/{ids['~/b.js']}", token=tokens["admin"])
    assert elsewhere.status == 404
    listed = await http.call("GET", PATH, token=tokens["viewer"])
    assert [m["name"] for m in listed.body["sourcemaps"]] == ["~/b.js"]


async def test_unknown_projects_and_bad_releases(http: ApiClient, tokens: dict[str, str]) -> None:
    reply = await upload(http, [("~/a.js.map", source_map())], path="/api/projects/77/releases/1/sourcemaps", token=tokens["member"])
    assert (reply.status, reply.error_code) == (404, "project_not_found")
    listed = await http.call("GET", "/api/projects/77/releases/1/sourcemaps", token=tokens["viewer"])
    assert listed.status == 404
    long_release = "r" * 201
    bad = await http.call("GET", f"/api/projects/1/releases/{long_release}/sourcemaps", token=tokens["viewer"])
    assert (bad.status, bad.body["error"]["field"]) == (400, "release")
