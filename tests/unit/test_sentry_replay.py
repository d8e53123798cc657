"""Sentry replay items (``replay_event`` + ``replay_recording``) as session segments."""

from __future__ import annotations

import zlib
from typing import Any

import orjson
import pytest

from api.sentry_envelope import EnvelopeError
from api.sentry_replay import recording_events, replay_segment, replay_segments

REPLAY_ID = "d2132d31b39445f1938d7e21b6bf0ec4"
EVENTS: list[dict[str, Any]] = [
    {"type": 4, "timestamp": 1767323045000, "data": {"href": "https://shop.test/cart", "width": 800, "height": 600}},
    {"type": 2, "timestamp": 1767323045010, "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}}},
    {"type": 5, "timestamp": 1767323046000, "data": {"tag": "breadcrumb", "payload": {"category": "ui.click"}}},
]


def replay_event(**changes: Any) -> dict[str, Any]:
    event = {
        "type": "replay_event",
        "replay_id": REPLAY_ID,
        "segment_id": 1,
        "urls": ["https://shop.test/cart"],
        "error_ids": [],
        "release": "shop@1.2.0",
        "environment": "production",
        "user": {"id": "u7", "email": "u7@example.com"},
        "request": {"url": "https://shop.test/cart", "headers": {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0"}},
    }
    event.update(changes)
    return event


def recording(segment: int | None, events: Any, *, compress: bool) -> bytes:
    header = orjson.dumps({"segment_id": segment} if segment is not None else {})
    data = orjson.dumps(events)
    return header + b"\n" + (zlib.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_a_replay_segment_becomes_a_session_segment(compress: bool) -> None:
    segment = replay_segment(replay_event(), recording(1, EVENTS, compress=compress), project_id=3, limit=1 << 20)
    assert (segment.project_id, segment.session_id, segment.sequence) == (3, REPLAY_ID, 1)
    assert segment.events == EVENTS
    assert (segment.url, segment.release, segment.environment, segment.service) == (
        "https://shop.test/cart", "shop@1.2.0", "production", "shop"
    )  # fmt: skip
    assert segment.user_agent.startswith("Mozilla/5.0") and segment.user.id == "u7" and segment.user.email == "u7@example.com"


def test_the_segment_id_may_come_from_the_recording_header_alone() -> None:
    event = replay_event()
    del event["segment_id"]
    assert replay_segment(event, recording(4, EVENTS, compress=True), project_id=1, limit=1 << 20).sequence == 4


@pytest.mark.parametrize(
    ("event", "payload", "why"),
    [
        (replay_event(replay_id=None), recording(1, EVENTS, compress=False), "no replay_id"),
        (replay_event(), b'{"segment_id": 1}', "no header line"),
        (replay_event(), b"not json\n[]", "header is not JSON"),
        (replay_event(), recording(2, EVENTS, compress=False), "is segment 2"),
        (replay_event(segment_id=-1), recording(None, EVENTS, compress=False), "non-negative"),
        (replay_event(), recording(1, EVENTS, compress=True)[:-8], "truncated"),
        (replay_event(), b'{"segment_id": 1}\n' + b"\x78\x9c" + bytes(range(200)), "cannot be decompressed"),
        (replay_event(), recording(1, {"not": "a list"}, compress=False), "cannot be decompressed"),
        (replay_event(), recording(1, [1, 2], compress=False), "array of event objects"),
    ],
)
def test_malformed_replay_items_are_refused_saying_why(event: dict[str, Any], payload: bytes, why: str) -> None:
    with pytest.raises(EnvelopeError, match=why):
        replay_segment(event, payload, project_id=1, limit=1 << 20)


def test_a_recording_bomb_stops_at_the_limit() -> None:
    bomb = b'{"segment_id": 0}\n' + zlib.compress(b"[" + b" " * 50_000_000 + b"]")
    with pytest.raises(EnvelopeError, match="larger than 1048576 bytes"):
        recording_events(bomb, 1 << 20)


def test_events_and_recordings_are_paired() -> None:
    pair = replay_segments([replay_event()], [recording(1, EVENTS, compress=True)], project_id=1, limit=1 << 20)
    assert [s.sequence for s in pair] == [1]
    with pytest.raises(EnvelopeError, match="each recording needs its event"):
        replay_segments([], [recording(1, EVENTS, compress=True)], project_id=1, limit=1 << 20)


def test_the_sdks_own_events_stamped_in_seconds_are_brought_to_milliseconds() -> None:
    span = {"type": 5, "timestamp": 1767323046.25, "data": {"tag": "performanceSpan", "payload": {"op": "navigation.navigate"}}}
    _, events = recording_events(recording(0, [*EVENTS, span], compress=True), 1 << 20)
    assert [e["timestamp"] for e in events] == [1767323045000, 1767323045010, 1767323046000, 1767323046250.0]
