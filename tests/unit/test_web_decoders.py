"""The bounded ``br`` decoder of the endpoints browsers and Sentry SDKs send to."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import brotli
import pytest

from collector.pdata import InvalidData
from receivers.otlp.decompress import DECODERS, WEB_DECODERS, BodyTooLarge, read_body


async def _chunks(data: bytes, size: int = 997) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _read(data: bytes, limit: int, encoding: str = "br", size: int = 997) -> bytes:
    return asyncio.run(read_body(_chunks(data, size), encoding, limit, WEB_DECODERS))


@pytest.mark.parametrize("size", [1, 997, 1 << 20])
def test_br_bodies_decode_whole_whatever_the_chunking(size: int) -> None:
    text = os.urandom(50_000) + b"a" * 300_000
    assert _read(brotli.compress(text), 1_000_000, size=size) == text
    assert _read(b"", 1_000, size=size) == b""


def test_a_br_bomb_stops_at_the_limit() -> None:
    bomb = brotli.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100
    with pytest.raises(BodyTooLarge):
        _read(bomb, 1_000_000)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (brotli.compress(os.urandom(20_000))[:-20], "truncated"),
        (bytes(range(256)) * 8, "cannot decompress"),
    ],
)
def test_corrupt_or_cut_br_bodies_are_invalid(data: bytes, why: str) -> None:
    with pytest.raises(InvalidData, match=why):
        _read(data, 1_000_000)


def test_the_otlp_receiver_does_not_take_br() -> None:
    assert "br" not in DECODERS and set(DECODERS) < set(WEB_DECODERS)
