"""Loki's push protobuf, written by hand, and the snappy block that carries it.

The messages are those of Loki's ``pkg/push/push.proto`` (package ``logproto``)::

    PushRequest      { repeated StreamAdapter streams = 1; string format = 2; }
    StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
                       repeated LabelPairAdapter structuredMetadata = 3; repeated LabelPairAdapter parsed = 4; }
    LabelPairAdapter { string name = 1; string value = 2; }
    Timestamp        { int64 seconds = 1; int32 nanos = 2; }

Only ``streams``, ``labels``, ``entries``, ``timestamp``, ``line`` and ``structuredMetadata`` are
written (``format``, ``hash`` and ``parsed`` are Loki's own). Encoding by hand lets an entry be
encoded once, the moment its record is converted, and streams be joined from those bytes:
about twice as fast as filling upb messages field by field, and the structured metadata pairs
that repeat from record to record are encoded once and reused. Varints are minimal and zero
scalars are left out, as a protobuf library writes them.
"""

from __future__ import annotations

from collections.abc import Iterable

import cramjam

# Field keys: (field number << 3) | wire type, where 0 is a varint and 2 length-delimited.
_PUSH_STREAMS = b"\x0a"  # PushRequest.streams = 1
_STREAM_LABELS = b"\x0a"  # StreamAdapter.labels = 1
_STREAM_ENTRIES = b"\x12"  # StreamAdapter.entries = 2
_ENTRY_TIMESTAMP = b"\x0a"  # EntryAdapter.timestamp = 1
_ENTRY_LINE = b"\x12"  # EntryAdapter.line = 2
_ENTRY_METADATA = b"\x1a"  # EntryAdapter.structuredMetadata = 3
_PAIR_NAME = b"\x0a"  # LabelPairAdapter.name = 1
_PAIR_VALUE = b"\x12"  # LabelPairAdapter.value = 2
_TS_SECONDS = b"\x08"  # Timestamp.seconds = 1 (varint)
_TS_NANOS = b"\x10"  # Timestamp.nanos = 2 (varint)

_ONE_BYTE = [bytes((i,)) for i in range(128)]
_NS_PER_S = 1_000_000_000
# Caches of encodings that repeat; cleared when full, since their keys come from the data.
_CACHE_LIMIT = 4096


def varint(n: int) -> bytes:
    """The minimal base-128 varint of a non-negative integer below 2**64."""
    if n < 0x80:
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    if n < 0x800000000:
        # Up to five bytes: every nanoseconds field of a timestamp.
        if n < 0x10000000:
            return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80, n >> 21))
        return bytes(
            ((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80, ((n >> 21) & 0x7F) | 0x80, n >> 28)
        )
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _delimited(key: bytes, data: bytes) -> bytes:
    return key + varint(len(data)) + data


def metadata_pair(name: str, value: str) -> bytes:
    """One ``structuredMetadata`` field (a LabelPairAdapter) of an entry."""
    body = b""
    if name:
        body = _delimited(_PAIR_NAME, name.encode())
    if value:
        body += _delimited(_PAIR_VALUE, value.encode())
    return _ENTRY_METADATA + varint(len(body)) + body


def metadata_prefix(name: str, value_length: int) -> bytes:
    """The bytes of a ``structuredMetadata`` pair up to its value, for values of a fixed length.

    Trace and span ids (32 and 16 hex digits) are then encoded with one concatenation.
    """
    assert value_length > 0
    head = _delimited(_PAIR_NAME, name.encode()) + _PAIR_VALUE + varint(value_length)
    return _ENTRY_METADATA + varint(len(head) + value_length) + head


_seconds_cache: dict[int, bytes] = {}


def _timestamp(ts_ns: int) -> bytes:
    """The ``timestamp`` field of an entry for a time in nanoseconds since the epoch."""
    seconds, nanos = divmod(ts_ns, _NS_PER_S)
    head = _seconds_cache.get(seconds)
    if head is None:
        # Records of one batch mostly share their second: its encoding is kept.
        head = _TS_SECONDS + varint(seconds) if seconds else b""
        if len(_seconds_cache) >= _CACHE_LIMIT:
            _seconds_cache.clear()
        _seconds_cache[seconds] = head
    body = head + _TS_NANOS + varint(nanos) if nanos else head
    return _ENTRY_TIMESTAMP + _ONE_BYTE[len(body)] + body


def entry(ts_ns: int, line: bytes, metadata: bytes) -> bytes:
    """One ``entries`` field of a stream: timestamp, line and encoded metadata pairs."""
    body = _timestamp(ts_ns)
    if line:
        body += _ENTRY_LINE + varint(len(line)) + line
    body += metadata
    return _STREAM_ENTRIES + varint(len(body)) + body


def stream(labels: str, entries: Iterable[bytes]) -> bytes:
    """One ``streams`` field of a push request from its label string and encoded entries."""
    body = _delimited(_STREAM_LABELS, labels.encode()) + b"".join(entries)
    return _PUSH_STREAMS + varint(len(body)) + body


def push_request(streams: Iterable[bytes]) -> bytes:
    """A serialized PushRequest from encoded ``streams`` fields."""
    return b"".join(streams)


def snappy_block(data: bytes) -> bytes:
    """``data`` in the snappy block format Loki expects of a protobuf push (not framed)."""
    return bytes(cramjam.snappy.compress_raw(data))
