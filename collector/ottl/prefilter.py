"""Which items of an export request can contain a given string, read from its bytes.

Reading an attribute through the protobuf objects costs about a microsecond per key on a
freshly parsed request, while searching the request's bytes costs nanoseconds. For a
condition like ``attributes["k"] == "literal"``, an item whose bytes do not contain the
literal cannot match, so the filter first finds the literal in the request bytes, maps each
occurrence to the item (span or log record) it lies in, and then evaluates the condition for
those items only.

The mapping walks the protobuf wire format of the three levels every OTLP export request
shares: request field 1 (resource_*), in it field 2 (scope_*), in it field 2 (the items).
A request using the deprecated group wire types is not walked: every item then counts as a
candidate, so the answer is always right, only slower.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any


class _Unsupported(Exception):
    pass


class _Everything:
    """Stands for "every item may contain it" when the bytes cannot be walked."""

    def __contains__(self, item: object) -> bool:
        return True

    def get(self, key: object, default: Any = None) -> _Everything:
        return self


EVERYTHING = _Everything()
NOTHING: frozenset[int] = frozenset()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, pos: int, end: int, wanted: int) -> list[tuple[int, int]]:
    """(start, end) of every length-delimited field ``wanted`` in ``data[pos:end]``."""
    out = []
    while pos < end:
        key = data[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 2:
            # Most items are shorter than 16 KiB: one- and two-byte lengths inline.
            b1 = data[pos]
            if b1 < 0x80:
                length = b1
                pos += 1
            else:
                b2 = data[pos + 1]
                if b2 < 0x80:
                    length = (b1 & 0x7F) | (b2 << 7)
                    pos += 2
                else:
                    length, pos = _varint(data, pos)
            if key >> 3 == wanted:
                out.append((pos, pos + length))
            pos += length
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise _Unsupported
    if pos != end:
        raise _Unsupported
    return out


class ItemIndex:
    """The byte ranges of the items of one export request, computed on first use."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self._keys: list[tuple[int, int, int]] = []
        self._broken = False

    def _walk(self) -> bool:
        if self._starts is not None or self._broken:
            return not self._broken
        data = self.data
        starts: list[int] = []
        try:
            for ri, (rs_start, rs_end) in enumerate(_fields(data, 0, len(data), 1)):
                for si, (ss_start, ss_end) in enumerate(_fields(data, rs_start, rs_end, 2)):
                    for ii, (start, end) in enumerate(_fields(data, ss_start, ss_end, 2)):
                        starts.append(start)
                        self._ends.append(end)
                        self._keys.append((ri, si, ii))
        except (_Unsupported, IndexError):
            self._broken = True
            return False
        self._starts = starts
        return True

    def candidates(self, needle: bytes) -> Any:
        """``{(resource index, scope index): {item indexes}}`` of items containing ``needle``.

        Returns :data:`EVERYTHING` (every item is a candidate) when the bytes cannot be walked.
        """
        data = self.data
        pos = data.find(needle)
        if pos == -1:
            return {}
        if not self._walk():
            return EVERYTHING
        starts, ends, keys = self._starts, self._ends, self._keys
        assert starts is not None
        out: dict[tuple[int, int], set[int]] = {}
        size = len(needle)
        while pos != -1:
            i = bisect_right(starts, pos) - 1
            if i >= 0 and pos + size <= ends[i]:
                ri, si, ii = keys[i]
                out.setdefault((ri, si), set()).add(ii)
                # Skip to the end of this item: one hit is enough to make it a candidate.
                pos = data.find(needle, ends[i])
            else:
                pos = data.find(needle, pos + 1)
        return out
