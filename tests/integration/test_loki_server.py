"""The test Loki server refuses what Loki refuses, with Loki's status codes and messages.

Bodies are built by hand here (``exporters.loki.wire`` for the parts that are right), so that
each test breaks exactly one rule.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from exporters.loki import wire
from tests.support.loki_server import LokiLimits, LokiServer, go_time_string, parse_labels, rfc3339

NS = 1_000_000_000


def push_body(*streams: tuple[str, list[tuple[int, str, list[tuple[str, str]]]]]) -> bytes:
    """A snappy-compressed PushRequest of ``(labels, [(ts, line, metadata)])`` streams."""
    encoded = [
        wire.stream(labels, [wire.entry(ts, line.encode(), b"".join(wire.metadata_pair(n, v) for n, v in md)) for ts, line, md in entries])
        for labels, entries in streams
    ]
    return wire.snappy_block(wire.push_request(encoded))


@pytest.fixture
async def loki() -> AsyncIterator[LokiServer]:
    async with LokiServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, loki: LokiServer, body: bytes, *, content_type: str = "application/x-protobuf", **headers: str
) -> tuple[int, str]:
    async with http.post(loki.push_url, data=body, headers={"Content-Type": content_type, **headers}) as response:
        return response.status, (await response.text()).strip()


def now() -> int:
    return time.time_ns()


async def test_accepts_a_valid_push_and_records_it(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    t = now()
    body = push_body(('{job="shop", level="INFO"}', [(t, "a", [("trace_id", "abc")]), (t + 1, "b", [])]))
    assert await post(http, loki, body, **{"X-Scope-OrgID": "tenant-1"}) == (204, "")
    [push] = loki.pushes
    assert (push.tenant, push.content_type, push.status) == ("tenant-1", "application/x-protobuf", 204)
    [stream] = push.streams
    assert stream.labels == {"job": "shop", "level": "INFO"}
    assert [(e.timestamp_ns, e.line, e.structured_metadata) for e in stream.entries] == [(t, "a", {"trace_id": "abc"}), (t + 1, "b", {})]


async def test_ready(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    async with http.get(loki.url + "/ready") as response:
        assert response.status == 200


async def test_requires_a_snappy_block(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    plain = wire.push_request([wire.stream('{a="b"}', [wire.entry(now(), b"x", b"")])])
    status, text = await post(http, loki, plain)
    assert status == 400 and "snappy: corrupt input" in text
    # No Content-Type means protobuf too, as in Loki; gzip around the snappy block is fine.
    good = push_body(('{a="b"}', [(now(), "x", [])]))
    assert (await post(http, loki, good, content_type=""))[0] == 204
    assert (await post(http, loki, gzip.compress(good), **{"Content-Encoding": "gzip"}))[0] == 204
    status, text = await post(http, loki, good, **{"Content-Encoding": "zstd"})
    assert (status, text) == (400, 'Content-Encoding "zstd" not supported')
    assert loki.entry_count() == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # StreamAdapter.labels (1) sent as a varint.
        (b"\x0a\x02\x08\x01", "proto: wrong wireType = 0 for field Labels"),
        # EntryAdapter.timestamp (1) as a fixed64.
        (b"\x0a\x0b\x12\x09\x09" + b"\x00" * 8, "proto: wrong wireType = 1 for field Timestamp"),
        # Timestamp.nanos (2) length-delimited.
        (b"\x0a\x07\x12\x05\x0a\x03\x12\x01\x00", "proto: wrong wireType = 2 for field Nanos"),
        # PushRequest.streams as a varint.
        (b"\x08\x01", "proto: wrong wireType = 0 for field Streams"),
        # A length running past the end.
        (b"\x0a\x10\x0a\x02", "unexpected EOF"),
        # Nanos out of range.
        (b"\x0a\x0a\x12\x08\x0a\x06\x10\x80\x94\xeb\xdc\x03", "nanos not in range [0, 1e9)"),
        # A line that is not UTF-8.
        (b"\x0a\x06\x12\x04\x12\x02\xff\xfe", "invalid UTF-8"),
    ],
)
async def test_refuses_malformed_protobuf(loki: LokiServer, http: aiohttp.ClientSession, payload: bytes, message: str) -> None:
    status, text = await post(http, loki, wire.snappy_block(payload))
    assert status == 400
    assert message in text
    assert loki.pushes == []


async def test_refuses_unknown_fields_and_reports_them(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    # A StreamAdapter with a field 5 (varint) Loki's schema does not have.
    stream = b'\x0a\x07{a="b"}' + b"\x28\x01"
    status, text = await post(http, loki, wire.snappy_block(b"\x0a" + wire.varint(len(stream)) + stream))
    assert status == 400 and "unknown protobuf fields" in text
    assert loki.errors
    with pytest.raises(AssertionError, match="should not send"):
        await loki.wait_for_entries(1, timeout=0.1)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ('{foo.bar="x"}', "Error parsing labels '{foo.bar=\"x\"}' with error: 1:5: parse error: unexpected character inside braces: '.'"),
        ('{ab"', "Error parsing labels '{ab\"' with error: 1:4: parse error: unterminated quoted string"),
        ("{a=b}", 'Error parsing labels \'{a=b}\' with error: 1:4: parse error: unexpected identifier "b" in label set, expected string'),
        ("{}", "error at least one label pair is required per stream"),
        ('{a=""}', "error at least one label pair is required per stream"),
        ('{a="1", b="2", a="3"}', "stream '{a=\"1\", b=\"2\", a=\"3\"}' has duplicate label name: 'a'"),
        ("{" + ", ".join(f'l{i}="v"' for i in range(16)) + "}", "has 16 label names; limit 15"),
        ('{a="' + "v" * 2049 + '"}', "has label value too long"),
    ],
)
async def test_refuses_invalid_labels_as_loki(loki: LokiServer, http: aiohttp.ClientSession, labels: str, message: str) -> None:
    status, text = await post(http, loki, push_body((labels, [(now(), "x", [])])))
    assert status == 400
    assert message in text
    assert loki.pushes == []


async def test_service_name_is_not_counted_and_valid_streams_are_kept(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    fifteen = ", ".join(f'l{i}="v"' for i in range(15))
    body = push_body(
        ("{" + fifteen + ', service_name="s"}', [(now(), "kept", [])]),
        ("{" + fifteen + ', extra="e"}', [(now(), "refused", [])]),
    )
    status, text = await post(http, loki, body)
    assert status == 400 and "has 16 label names; limit 15" in text
    assert [e.line for _, e in loki.entries()] == ["kept"]


async def test_refuses_entries_as_loki(http: aiohttp.ClientSession) -> None:
    limits = LokiLimits(max_line_size=10, max_structured_metadata_entries_count=2)
    async with LokiServer(limits=limits) as loki:
        t = now()
        week_ago = t - 8 * 24 * 3600 * NS
        body = push_body(
            (
                '{job="a"}',
                [
                    (week_ago, "old", []),
                    (t + 3600 * NS, "future", []),
                    (t, "much too long", []),
                    (t, "meta", [("a", "1"), ("b", "2"), ("c", "3")]),
                    (t, "fine", [("a", "1")]),
                ],
            )
        )
        status, text = await post(http, loki, body)
        assert status == 400
        lines = text.splitlines()
        assert lines[0].startswith(f"1 errors like: entry for stream '{{job=\"a\"}}' has timestamp too old: {rfc3339(week_ago)}")
        assert "has timestamp too new" in lines[1]
        assert "Max entry size '10' bytes exceeded for stream '{job=\"a\"}' while adding an entry with length '13' bytes" in lines[2]
        assert "has too many structured metadata labels: '3', limit: '2'" in lines[3]
        assert [e.line for _, e in loki.entries()] == ["fine"]


async def test_entry_too_far_behind(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    t = now()
    behind = t - 2 * 3600 * NS
    status, text = await post(http, loki, push_body(('{job="a"}', [(t, "new", []), (behind, "late", []), (t - 60 * NS, "ok", [])])), **{"X-Scope-OrgID": "acme"})
    assert status == 400
    assert text.splitlines() == [
        f"entry with timestamp {go_time_string(behind)} ignored, reason: 'entry too far behind, entry timestamp is: "
        f"{rfc3339(behind)}, oldest acceptable timestamp is: {rfc3339(t - 3600 * NS)}',",
        "user 'acme', total ignored: 1 out of 3 for stream: {job=\"a\"}",
    ]
    assert [e.line for _, e in loki.entries()] == ["new", "ok"]


async def test_json_push(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    t = now()
    doc = {"streams": [{"stream": {"job": "shop", "level": "WARN"}, "values": [[str(t), "one"], [str(t + 1), "two", {"trace_id": "ab"}]]}]}
    body = json.dumps(doc).encode()
    assert (await post(http, loki, body, content_type="application/json"))[0] == 204
    assert (await post(http, loki, gzip.compress(body), content_type="application/json", **{"Content-Encoding": "gzip"}))[0] == 204
    assert [(labels, e.line, e.structured_metadata) for labels, e in loki.entries()][:2] == [
        ({"job": "shop", "level": "WARN"}, "one", {}), ({"job": "shop", "level": "WARN"}, "two", {"trace_id": "ab"})
    ]
    bad = json.dumps({"streams": [{"stream": {"foo.bar": "x"}, "values": [[str(t), "x"]]}]}).encode()
    status, text = await post(http, loki, bad, content_type="application/json")
    assert status == 400 and "unexpected character inside braces: '.'" in text
    status, text = await post(http, loki, b'{"streams": [{"stream": {}, "values": [[1, "x"]]}]}', content_type="application/json")
    assert status == 400 and "loghttp.PushRequest" in text


async def test_scripted_failures(loki: LokiServer, http: aiohttp.ClientSession) -> None:
    loki.fail_next(1, status=429, retry_after=1.5, message="Ingestion rate limit exceeded")
    loki.fail_next(1, status=500, tenant="b")
    body = push_body(('{a="b"}', [(now(), "x", [])]))
    async with http.post(loki.push_url, data=body, headers={"X-Scope-OrgID": "a"}) as response:
        assert (response.status, response.headers["Retry-After"], (await response.text()).strip()) == (429, "2", "Ingestion rate limit exceeded")
    # The 500 waits for tenant b.
    assert (await post(http, loki, body, **{"X-Scope-OrgID": "a"}))[0] == 204
    assert (await post(http, loki, body, **{"X-Scope-OrgID": "b"}))[0] == 500
    assert (await post(http, loki, body, **{"X-Scope-OrgID": "b"}))[0] == 204
    assert loki.answered_failures == 2
    assert [p.tenant for p in loki.pushes] == ["a", "b"]


async def test_multi_tenant_mode_requires_the_header(http: aiohttp.ClientSession) -> None:
    async with LokiServer(auth_enabled=True) as loki:
        assert await post(http, loki, push_body(('{a="b"}', [(now(), "x", [])]))) == (401, "no org id")


def test_label_parser_reads_go_escapes_and_metric_names() -> None:
    assert parse_labels('up{a="x\\ty\\u00e9\\101\\x42", b=`raw\\n`, c=\'q\'}') == [("__name__", "up"), ("a", "x\tyéAB"), ("b", "raw\\n"), ("c", "q")]
    assert parse_labels(' { a = "1" , } ') == [("a", "1")]


def test_server_in_a_thread() -> None:
    server = LokiServer()
    server.start_in_thread()
    try:
        import urllib.request

        request = urllib.request.Request(server.push_url, data=push_body(('{a="b"}', [(now(), "x", [])])), headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
        server.wait_for_entries_blocking(1)
    finally:
        server.stop_in_thread()
