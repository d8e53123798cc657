"""Editing OTLP export requests at the protobuf wire level, where that saves re-encoding.

An ``Export*ServiceRequest`` is a list of ``Resource{Spans,Metrics,Logs}`` (field 1), each
holding its ``Resource`` (field 1) beside the scopes and their items. A stage that changes
only resources (the ``resource`` processor) re-encodes just those small messages and splices
them into the bytes the request arrived as; the spans, data points and log records are copied
as bytes. The walk reads a few varints per resource and per scope, never per item.
"""

from __future__ import annotations

from collections.abc import Sequence

_LEN = 2  # wire type of length-delimited fields


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def encode_varint(n: int) -> bytes:
    """``n`` (non-negative) as a protobuf varint."""
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
    if wire_type == 0:
        return _varint(buf, pos)[1]
    if wire_type == 1:
        end = pos + 8
    elif wire_type == _LEN:
        length, pos = _varint(buf, pos)
        end = pos + length
    elif wire_type == 5:
        end = pos + 4
    else:
        raise WireError(f"unsupported wire type {wire_type}")
    if end > len(buf):
        raise WireError("truncated field")
    return end


def _fields(buf: bytes) -> list[tuple[int, int, int, int, int]]:
    """(field number, wire type, start of the field, start of its value, end) for each field."""
    out = []
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _LEN:
            length, value = _varint(buf, pos)
            end = value + length
            if end > n:
                raise WireError("truncated field")
        else:
            value = pos
            end = _skip(buf, pos, wire_type)
        out.append((number, wire_type, start, value, end))
        pos = end
    return out


def _with_resource(block: bytes, resource: bytes) -> bytes:
    # The first Resource field is replaced; any later ones (protobuf would merge them) are
    # left out, since ``resource`` is already the whole, merged resource.
    parts: list[bytes] = []
    placed = False
    for number, wire_type, start, _value, end in _fields(block):
        if number == 1 and wire_type == _LEN:
            if not placed:
                parts.append(b"\x0a" + encode_varint(len(resource)) + resource)
                placed = True
            continue
        parts.append(block[start:end])
    if not placed:
        parts.insert(0, b"\x0a" + encode_varint(len(resource)) + resource)
    return b"".join(parts)


def replace_resources(raw: bytes, resources: Sequence[bytes | None]) -> bytes:
    """The request ``raw`` with the i-th resource replaced by ``resources[i]`` (``None``: kept).

    ``resources[i]`` is the serialized ``Resource`` of the i-th top-level entry.
    """
    parts: list[bytes] = []
    index = 0
    for number, wire_type, start, value, end in _fields(raw):
        if number == 1 and wire_type == _LEN:
            new = resources[index] if index < len(resources) else None
            index += 1
            if new is not None:
                block = _with_resource(raw[value:end], new)
                parts.append(b"\x0a" + encode_varint(len(block)) + block)
                continue
        parts.append(raw[start:end])
    if index != len(resources):
        raise WireError(f"the request has {index} resource entries, {len(resources)} were given")
    return b"".join(parts)
