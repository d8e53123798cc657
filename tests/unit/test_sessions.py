"""Session replay pieces without servers: User-Agent parsing, what a segment's events say about
the session (pages, errors, URLs, times), the events check, cursors, the config, the wire
body of a segment and the directory backend's paths and files."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
from pydantic import ValidationError

from api.errors import ApiError
from api.sessions import parse_segment
from api.sessions_config import SessionsConfig
from bench.rrweb_workload import recording, split
from storage.session_blobs import DirectoryBlobs, UnsafeSessionId, check_session_id
from storage.sessions import (
    InvalidCursor,
    InvalidSegment,
    UserAgentInfo,
    check_events,
    decode_cursor,
    encode_cursor,
    normalize_event_id,
    parse_user_agent,
    summarize,
)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CHROME_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


def meta(href: str, ts: int) -> dict[str, Any]:
    return {"type": 4, "data": {"href": href, "width": 1280, "height": 800}, "timestamp": ts}


def custom(tag: str, payload: dict[str, Any], ts: int) -> dict[str, Any]:
    return {"type": 5, "data": {"tag": tag, "payload": payload}, "timestamp": ts}


def move(ts: float) -> dict[str, Any]:
    return {
        "type": 3,
        "data": {"source": 1, "positions": [{"x": 1, "y": 2, "id": 5, "timeOffset": 0}]},
        "timestamp": ts,
    }


# --------------------------------------------------------------------------- user agents


def test_user_agents_are_parsed_into_browser_os_and_device() -> None:
    chrome = parse_user_agent(CHROME_WINDOWS)
    assert (chrome.browser, chrome.browser_version, chrome.os, chrome.os_version) == (
        "Chrome",
        "120.0.6099",
        "Windows",
        "10",
    )
    assert chrome.device == ""
    iphone = parse_user_agent(SAFARI_IPHONE)
    assert (iphone.browser, iphone.os, iphone.os_version, iphone.device) == ("Mobile Safari", "iOS", "17.1.2", "iPhone")
    firefox = parse_user_agent(FIREFOX_LINUX)
    assert (firefox.browser, firefox.browser_version, firefox.os) == ("Firefox", "121.0", "Ubuntu")


def test_an_empty_or_unknown_user_agent_says_nothing() -> None:
    assert parse_user_agent("") == UserAgentInfo()
    unknown = parse_user_agent("definitely not a browser")
    assert (unknown.browser, unknown.os, unknown.device) == ("", "", "")


# --------------------------------------------------------------------------- summaries


def test_a_page_load_announced_twice_counts_once_and_spa_navigations_count() -> None:
    events = [
        meta("https://shop.example/", T0),
        {"type": 2, "data": {"node": {"type": 0, "childNodes": [], "id": 1}}, "timestamp": T0},
        custom("appguard.pageview", {"url": "https://shop.example/", "navigation": "load"}, T0 + 1),
        move(T0 + 500),
        custom("appguard.pageview", {"url": "https://shop.example/cart", "navigation": "push"}, T0 + 4000),
        # rrweb's checkout: a new Meta and full snapshot of the same page
        meta("https://shop.example/cart", T0 + 9000),
        custom("appguard.pageview", {"url": "https://shop.example/", "navigation": "pop"}, T0 + 12000),
    ]
    summary = summarize(events, "https://shop.example/ignored")
    assert summary.first_page_url == "https://shop.example/"
    assert summary.last_page_url == "https://shop.example/"
    assert summary.page_changes == 2  # / -> /cart -> /
    assert summary.urls == ["https://shop.example/", "https://shop.example/cart", "https://shop.example/ignored"]
    assert summary.first_timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert (summary.last_timestamp - summary.first_timestamp).total_seconds() == 12
    assert summary.event_count == len(events)


def test_a_segment_without_markers_is_on_the_page_it_was_sent_from() -> None:
    summary = summarize([move(T0 + 20), move(T0 + 10)], "https://shop.example/cart")
    assert summary.first_page_url is None and summary.last_page_url is None and summary.page_changes == 0
    assert summary.first_url == summary.last_url == "https://shop.example/cart"
    # Out-of-order events inside a segment: the times are the earliest and the latest.
    assert summary.first_timestamp < summary.last_timestamp


def test_error_markers_are_counted_and_their_ids_normalized() -> None:
    events = [
        custom("appguard.error", {"event_id": "0123456789ABCDEF0123456789abcdef", "type": "TypeError"}, T0),
        custom("appguard.error", {"type": "ReferenceError"}, T0 + 1),
        custom("appguard.event", {"name": "checkout", "properties": {}}, T0 + 2),
        custom("appguard.error", {"event_id": "not-a-uuid"}, T0 + 3),
    ]
    summary = summarize(events, "https://shop.example/")
    assert summary.error_count == 3
    assert summary.error_ids == ["01234567-89ab-cdef-0123-456789abcdef", "not-a-uuid"]
    assert normalize_event_id("01234567-89AB-cdef-0123-456789abcdef") == "01234567-89ab-cdef-0123-456789abcdef"


def test_the_generated_recording_counts_its_pages_and_errors() -> None:
    events = recording(3, duration_s=300, page_every_s=60, error_every_s=100)
    summary = summarize(events, "https://shop.example.com/")
    assert summary.page_changes + 1 == 5  # a page at 0, 60, 120, 180, 240 s
    assert summary.error_count == 2  # at 100 and 200 s
    segments = split(events, 10_000)
    assert sum(len(s) for s in segments) == len(events)
    assert all(s[-1]["timestamp"] - s[0]["timestamp"] < 10_000 for s in segments)


# --------------------------------------------------------------------------- the events check


@pytest.mark.parametrize(
    ("events", "field"),
    [
        ({"type": 4}, "events"),
        ([], "events"),
        ([1], "events[0]"),
        ([{"type": "4", "data": {}, "timestamp": T0}], "events[0].type"),
        ([{"type": True, "data": {}, "timestamp": T0}], "events[0].type"),
        ([move(T0), {"type": 3, "timestamp": T0}], "events[1].data"),
        ([{"type": 3, "data": {}}], "events[0].timestamp"),
        ([{"type": 3, "data": {}, "timestamp": "yesterday"}], "events[0].timestamp"),
        ([{"type": 3, "data": {}, "timestamp": T0 / 1000}], "events[0].timestamp"),  # seconds, not ms
        ([{"type": 3, "data": {}, "timestamp": T0 + 3 * 86_400_000}], "events[0].timestamp"),
    ],
)
def test_events_that_are_not_rrweb_events_are_refused_naming_the_field(events: Any, field: str) -> None:
    with pytest.raises(InvalidSegment) as caught:
        check_events(events, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert caught.value.field == field


def test_valid_events_pass_the_check() -> None:
    check_events([meta("https://a.example/", T0), move(T0 + 1.5)], now=datetime(2026, 1, 1, tzinfo=UTC))


# --------------------------------------------------------------------------- cursors


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert decode_cursor(encode_cursor(stamp, "abcdefgh-123")) == (stamp, "abcdefgh-123")
    for bad in ["", "nonsense!", "bm90LWEtY3Vyc29y", encode_cursor(stamp, "x")[:-3] + "AAA"]:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


# --------------------------------------------------------------------------- config


def test_the_config_defaults_and_checks() -> None:
    config = SessionsConfig()
    assert (config.storage, config.max_segment_size, config.max_session_size) == ("postgres", 2 << 20, 100 << 20)
    assert config.retention == 30 * 86400
    assert SessionsConfig.model_validate({"retention": "720h", "retention_interval": "10m"}).retention_interval == 600
    with pytest.raises(ValidationError, match="directory"):
        SessionsConfig.model_validate({"storage": "directory"})
    with pytest.raises(ValidationError, match="max_segment_size"):
        SessionsConfig.model_validate({"max_segment_size": 10 << 20, "max_session_size": 1 << 20})
    with pytest.raises(ValidationError):
        SessionsConfig.model_validate({"storage": "s3"})
    with pytest.raises(ValidationError):
        SessionsConfig.model_validate({"unknown": 1})


# --------------------------------------------------------------------------- the wire body


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "sequence": 0,
        "url": "https://shop.example/",
        "user_agent": CHROME_WINDOWS,
        "events": [meta("https://shop.example/", T0)],
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_a_segment_body_becomes_an_incoming_segment() -> None:
    segment = parse_segment(
        body(user={"id": 42, "email": "a@example.com", "username": "ann"}, service="shop-web", extra="ignored"),
        session_id="abcdefgh",
        project_id=3,
    )
    assert (segment.project_id, segment.session_id, segment.sequence) == (3, "abcdefgh", 0)
    assert (segment.user.id, segment.user.email, segment.user.name) == ("42", "a@example.com", "ann")
    assert segment.service == "shop-web" and segment.environment is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (body(sequence=-1), "sequence"),
        (body(sequence="1"), "sequence"),
        (body(sequence=True), "sequence"),
        (body(sequence=2**31), "sequence"),
        (body(sequence=...), "sequence"),
        (body(url=...), "url"),
        (body(url=7), "url"),
        (body(user_agent=...), "user_agent"),
        (body(events=...), "events"),
        (body(previous_session_id="../../x"), "previous_session_id"),
        (body(user={"email": ["x"]}), "user.email"),
    ],
)
def test_a_bad_segment_body_is_a_400_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_segment(raw, session_id="abcdefgh", project_id=1)
    assert caught.value.status == 400
    assert caught.value.field == field


@pytest.mark.parametrize("raw", [b"", b"   ", b"[1]", b"{not json", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_a_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_segment(raw, session_id="abcdefgh", project_id=1)
    assert (caught.value.status, caught.value.code) == (400, "malformed_json")


# --------------------------------------------------------------------------- the directory backend


@pytest.mark.parametrize("bad", ["../../etc", "short", "a/b/c/d/e/f", "..", "abc def gh", "x" * 65, "sess.ion.id", ""])
def test_session_ids_that_could_leave_the_folder_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafeSessionId):
        check_session_id(bad)
    with pytest.raises(UnsafeSessionId):
        DirectoryBlobs(tmp_path).path(bad, 0)


async def test_the_directory_backend_writes_reads_and_removes_files(tmp_path: Path) -> None:
    blobs = DirectoryBlobs(tmp_path / "replays")
    conn = cast(psycopg.AsyncConnection[Any], None)  # the directory backend does not use the transaction
    await blobs.put(conn, "session-0001", 0, b"zero")
    await blobs.put(conn, "session-0001", 2, b"two")
    await blobs.put(conn, "session-0001", 2, b"two again")  # replaced whole
    path = blobs.path("session-0001", 2)
    assert path.is_relative_to(tmp_path / "replays") and path.read_bytes() == b"two again"
    assert not list(path.parent.glob(".*.tmp"))
    assert await blobs.read("session-0001", [0, 1, 2]) == {0: b"zero", 2: b"two again"}
    await blobs.discard("session-0001", 0)
    assert await blobs.read("session-0001", [0]) == {}
    await blobs.remove([("session-0001", 2), ("session-0001", 0)])
    assert not (tmp_path / "replays" / "se").exists()
    assert (tmp_path / "replays").is_dir()
