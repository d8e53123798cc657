"""Sentry Session Replay items as AppGuard replay sessions.

Sentry's browser SDK (its replay integration) records the page with rrweb, as AppGuard's own
snippet does, and sends each segment of a replay in one envelope as two items:

- ``replay_event``: JSON naming the replay (``replay_id``, 32 hex digits), the segment
  (``segment_id``), the URLs visited, the error and trace ids seen, the release, environment,
  user and the request's ``User-Agent``;
- ``replay_recording``: a header line (``{"segment_id": N}``) then the segment's rrweb events:
  a JSON array, or that array compressed with zlib (what the SDK's compression worker does).

:func:`replay_segments` pairs them into :class:`~storage.sessions.IncomingSegment` values
that the session store keeps like the snippet's segments: the replay id is the session id,
the segment id its sequence. Errors the same SDK reports carry the replay id in
``contexts.replay.replay_id``, which :mod:`api.sentry_mapping` turns into ``session.id``, so
the issue links to the replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from api.sentry_envelope import EnvelopeError
from api.sentry_mapping import service_name
from collector.pdata import InvalidData
from receivers.otlp.decompress import WEB_DECODERS, BodyTooLarge
from storage.sessions import IncomingSegment, SessionUser

# The largest event timestamp taken for seconds rather than milliseconds (in the year 2286).
_LATEST_SECONDS = 9_999_999_999


def _text(value: Any, limit: int = 2048) -> str | None:
    if isinstance(value, str) and value.strip():
        return value[:limit]
    return None


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib ``data`` decompressed by the ingest endpoints' bounded decoder; :class:`EnvelopeError`
    past ``limit`` or for data that is not zlib or is cut short."""
    if len(data) < 2 or data[0] & 0x0F != 8 or int.from_bytes(data[:2], "big") % 31:
        raise EnvelopeError("the replay recording cannot be decompressed: neither a JSON array nor zlib data")
    decoder = WEB_DECODERS["deflate"](limit)
    try:
        decoder.feed(data)
        return decoder.finish()
    except BodyTooLarge:
        raise EnvelopeError(f"the replay recording is larger than {limit} bytes (sessions.max_segment_size)") from None
    except InvalidData as exc:
        raise EnvelopeError(f"the replay recording cannot be decompressed: {exc}") from None


def recording_events(payload: bytes, limit: int) -> tuple[int | None, list[dict[str, Any]]]:
    """The segment id of a ``replay_recording`` payload's header and its rrweb events."""
    head, newline, body = payload.partition(b"\n")
    if not newline:
        raise EnvelopeError("the replay recording has no header line")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"the replay recording's header is not JSON: {exc}") from None
    segment = header.get("segment_id") if isinstance(header, dict) else None
    if segment is not None and (not isinstance(segment, int) or isinstance(segment, bool) or segment < 0):
        raise EnvelopeError("the replay recording's segment_id is not a non-negative integer")
    data = body if body.lstrip()[:1] == b"[" else _inflate(body, limit)
    if len(data) > limit:
        raise EnvelopeError(f"the replay recording is larger than {limit} bytes (sessions.max_segment_size)")
    try:
        events = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"the replay recording is not a JSON array of events: {exc}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise EnvelopeError("the replay recording is not a JSON array of event objects")
    for event in events:
        _timestamp_in_ms(event)
    return segment, events


def _timestamp_in_ms(event: dict[str, Any]) -> None:
    """rrweb stamps events in milliseconds, the replay SDK its own custom events (``performanceSpan``:
    navigation, resources, web vitals, memory) in seconds; as the SDK does, a stamp up to
    :data:`_LATEST_SECONDS` is taken for seconds."""
    stamp = event.get("timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and 0 < stamp <= _LATEST_SECONDS:
        event["timestamp"] = stamp * 1000


def replay_segment(
    replay_event: Mapping[str, Any], recording: bytes, *, project_id: int, limit: int
) -> IncomingSegment:
    """The session segment of one ``replay_event`` and its ``replay_recording``."""
    replay_id = _text(replay_event.get("replay_id"), 64)
    if replay_id is None:
        raise EnvelopeError("the replay_event has no replay_id")
    header_segment, events = recording_events(recording, limit)
    segment = replay_event.get("segment_id", header_segment)
    if not isinstance(segment, int) or isinstance(segment, bool) or segment < 0:
        raise EnvelopeError("the replay_event's segment_id is not a non-negative integer")
    if header_segment is not None and header_segment != segment:
        raise EnvelopeError(f"the replay_recording is segment {header_segment}, its replay_event segment {segment}")
    urls = replay_event.get("urls")
    request = replay_event.get("request") if isinstance(replay_event.get("request"), Mapping) else {}
    assert isinstance(request, Mapping)
    first_url = next((u for u in urls if isinstance(u, str)), None) if isinstance(urls, list) else None
    url = first_url or _text(request.get("url")) or ""
    headers = request.get("headers")
    agent = ""
    if isinstance(headers, Mapping):
        agent = next(
            (v for k, v in headers.items() if isinstance(k, str) and k.lower() == "user-agent" and isinstance(v, str)),
            "",
        )
    user = replay_event.get("user") if isinstance(replay_event.get("user"), Mapping) else {}
    assert isinstance(user, Mapping)
    return IncomingSegment(
        project_id=project_id,
        session_id=replay_id.lower(),
        sequence=segment,
        url=url[:2048],
        user_agent=agent[:1024],
        events=events,
        service=service_name(replay_event) if replay_event.get("release") or replay_event.get("server_name") else None,
        environment=_text(replay_event.get("environment"), 200),
        release=_text(replay_event.get("release"), 200),
        user=SessionUser(
            id=_text(user.get("id"), 256),
            email=_text(user.get("email"), 256),
            name=_text(user.get("username"), 256),
        ),
    )


def replay_segments(
    replay_events: Sequence[Mapping[str, Any]], recordings: Sequence[bytes], *, project_id: int, limit: int
) -> list[IncomingSegment]:
    """Pair an envelope's replay events with its recordings (in order; Sentry sends one of each)."""
    if len(replay_events) != len(recordings):
        raise EnvelopeError(
            f"{len(replay_events)} replay_event and {len(recordings)} replay_recording items: each recording needs its event"
        )
    return [
        replay_segment(event, recording, project_id=project_id, limit=limit)
        for event, recording in zip(replay_events, recordings, strict=True)
    ]
