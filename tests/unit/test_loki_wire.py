"""The hand-written push protobuf, checked against Loki's schema built with protobuf descriptors.

The descriptors below are made from Loki's ``pkg/push/push.proto`` (field names, numbers and
types) with ``descriptor_pb2``: a third reading of the schema, beside the exporter's encoder
and the test server's decoder, parsed by the protobuf library itself.
"""

from __future__ import annotations

import logging
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from exporters.loki import convert, wire
from tests.support.loki_server import decode_push, parse_labels
from tests.unit.test_loki_convert import NOW, SPAN, TRACE, logs

_F = descriptor_pb2.FieldDescriptorProto


def _logproto() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="loki_push_test.proto", package="logproto", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )

    def message(name: str, *fields: tuple[str, int, int, int, str | None]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)  # type: ignore[arg-type]
            if type_name:
                f.type_name = type_name

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    message("PushRequest", ("streams", 1, _F.TYPE_MESSAGE, rep, ".logproto.StreamAdapter"), ("format", 2, _F.TYPE_STRING, opt, None))
    message(
        "StreamAdapter",
        ("labels", 1, _F.TYPE_STRING, opt, None),
        ("entries", 2, _F.TYPE_MESSAGE, rep, ".logproto.EntryAdapter"),
        ("hash", 3, _F.TYPE_UINT64, opt, None),
    )
    message("LabelPairAdapter", ("name", 1, _F.TYPE_STRING, opt, None), ("value", 2, _F.TYPE_STRING, opt, None))
    message(
        "EntryAdapter",
        ("timestamp", 1, _F.TYPE_MESSAGE, opt, ".google.protobuf.Timestamp"),
        ("line", 2, _F.TYPE_STRING, opt, None),
        ("structuredMetadata", 3, _F.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
        ("parsed", 4, _F.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
    )
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    pool.Add(fdp)
    return {m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"logproto.{m.name}")) for m in fdp.message_type}


_CLASSES = _logproto()
PushRequest, StreamAdapter = _CLASSES["PushRequest"], _CLASSES["StreamAdapter"]


def test_encoding_matches_the_protobuf_library() -> None:
    req = logs(
        [
            {"time": NOW + 123_456_789, "body": "é" * 200, "trace_id": TRACE, "span_id": SPAN, "attrs": {"a": "x" * 300, "n": 1}},
            {"time": NOW, "body": "second"},
            {"time": 1_000_000_000, "body": ""},
        ],
        {"service.name": "shop"},
    )
    conv = convert.Converter(convert.LabelRules(), logging.getLogger("test")).convert(req)
    [push] = conv.pushes
    raw = push.encode()
    parsed = PushRequest.FromString(raw)
    # Serialized again by the library, the bytes are the same: fields in order, minimal varints.
    assert parsed.SerializeToString() == raw
    [stream] = parsed.streams
    assert dict(parse_labels(stream.labels)) == {"exporter": "OTLP", "job": "shop"}
    # In time order, whatever the order of the records.
    third, second, first = stream.entries
    assert (third.timestamp.seconds, third.timestamp.nanos) == (1, 0)
    assert third.line.startswith('{"body":"",')
    assert (second.timestamp.seconds, second.timestamp.nanos) == divmod(NOW, 1_000_000_000)
    assert (first.timestamp.seconds * 1_000_000_000 + first.timestamp.nanos) == NOW + 123_456_789
    assert [(p.name, p.value) for p in first.structuredMetadata] == [
        ("trace_id", TRACE.hex()), ("span_id", SPAN.hex()), ("a", "x" * 300), ("n", "1")
    ]
    assert '"é' in first.line
    # And the test server's own decoder reads the same.
    [decoded], _ = decode_push(raw, [])
    assert [(e.timestamp_ns, e.line, e.structured_metadata) for e in decoded.entries] == [
        (e.timestamp.seconds * 1_000_000_000 + e.timestamp.nanos, e.line, [(p.name, p.value) for p in e.structuredMetadata])
        for e in stream.entries
    ]


def _library_varint(n: int) -> bytes:
    # StreamAdapter.hash is a uint64, field 3: its encoding is the key byte, then the varint.
    return bytes(StreamAdapter(hash=n).SerializeToString()[1:])


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_varint(n: int) -> None:
    assert wire.varint(n) == _library_varint(n)
    assert wire.varint(0) == b"\x00"


_TEXT = st.text(st.characters(exclude_categories=["Cs"]))


@given(
    st.integers(min_value=0, max_value=2**63 - 1),
    _TEXT,
    st.lists(st.tuples(_TEXT, _TEXT), max_size=5),
)
def test_entry_round_trip(ts: int, line: str, pairs: list[tuple[str, str]]) -> None:
    metadata = b"".join(wire.metadata_pair(n, v) for n, v in pairs)
    stream = wire.stream('{a="b"}', [wire.entry(ts, line.encode(), metadata)])
    raw = wire.push_request([stream])
    parsed = PushRequest.FromString(raw)
    assert parsed.SerializeToString() == raw
    [entry] = parsed.streams[0].entries
    assert entry.timestamp.seconds * 1_000_000_000 + entry.timestamp.nanos == ts
    assert entry.line == line
    assert [(p.name, p.value) for p in entry.structuredMetadata] == pairs


@given(_TEXT)
def test_label_values_read_back_by_lokis_label_syntax(value: str) -> None:
    assert parse_labels(convert.label_string([("job", value), ("a", value)])) == [("a", value), ("job", value)]


def test_snappy_block_is_the_raw_format() -> None:
    data = b"loki " * 1000
    block = wire.snappy_block(data)
    assert bytes(cramjam.snappy.decompress_raw(block)) == data
    # A block starts with the uncompressed length as a varint, not a framing header.
    assert block.startswith(_library_varint(len(data)))
