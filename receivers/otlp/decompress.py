"""Reading an HTTP request body with its Content-Encoding undone, within a size limit.

The limit applies to the decompressed size (as the OTLP specification asks) and to the bytes
on the wire. Decompression is incremental and each step's output is bounded, so a small
compressed "bomb" is refused as soon as its output passes the limit, having cost no more
memory than the limit itself.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, Callable

import brotli
import zstandard

from collector.pdata import InvalidData

# Decompressed bytes produced per step: the most a step can overshoot the limit by.
_STEP = 64 * 1024
# One zstd byte can stand for up to 32 KiB of output (a 4-byte RLE block makes 128 KiB), so
# zstd input is fed in slices small enough that one slice cannot overshoot the room left by
# more than half of it.
_ZSTD_MAX_RATIO = 65536
_ZSTD_MIN_SLICE = 64


class BodyTooLarge(Exception):
    """The body, compressed or not, is larger than ``max_request_body_size``."""


class _Decoder:
    """Takes the body's chunks as they arrive and gives the decoded body at the end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0
        self.out = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLarge(f"request body larger than {self.limit} bytes")
        self._decode(chunk)

    def _decode(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _emit(self, data: bytes) -> None:
        self.out += data
        if len(self.out) > self.limit:
            raise BodyTooLarge(f"decompressed request body larger than {self.limit} bytes")

    def finish(self) -> bytes:
        """The whole decoded body; ``InvalidData`` if a compressed stream was cut short."""
        return bytes(self.out)


class _Identity(_Decoder):
    def _decode(self, chunk: bytes) -> None:
        self.out += chunk


class _Zlib(_Decoder):
    """gzip (several members allowed), or zlib/raw deflate told apart by the zlib header."""

    def __init__(self, limit: int, gzip: bool) -> None:
        super().__init__(limit)
        self.gzip = gzip
        self.name = "gzip" if gzip else "deflate"
        self.head = b""
        self.d: zlib._Decompress | None = None

    def _new(self, start: bytes) -> zlib._Decompress:
        if self.gzip:
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        # A zlib stream starts with a 2-byte header naming deflate whose value is a multiple
        # of 31; anything else is taken as raw deflate, which some clients send as "deflate".
        is_zlib = start[0] & 0x0F == 8 and int.from_bytes(start[:2], "big") % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)

    def _decode(self, chunk: bytes) -> None:
        if self.d is None:
            self.head += chunk
            if len(self.head) < 2:
                return
            chunk, self.head = self.head, b""
            self.d = self._new(chunk)
        try:
            self._inflate(self.d, chunk)
        except zlib.error as exc:
            raise InvalidData(f"cannot decompress the {self.name} body: {exc}") from None

    def _inflate(self, d: zlib._Decompress, data: bytes) -> None:
        while True:
            piece = d.decompress(data, _STEP)
            self._emit(piece)
            data = d.unconsumed_tail
            if d.eof:
                data = d.unused_data
                if not data:
                    return
                if not self.gzip:
                    raise InvalidData(f"data after the end of the {self.name} stream")
                self.d = d = zlib.decompressobj(zlib.MAX_WBITS | 16)  # the next gzip member
                continue
            # A full step may leave output pending inside zlib even with no input left.
            if not data and len(piece) < _STEP:
                return

    def finish(self) -> bytes:
        if self.d is None and not self.head:
            return b""
        if self.d is None or not self.d.eof:
            raise InvalidData(f"the {self.name} body is truncated")
        return bytes(self.out)


class _Zstd(_Decoder):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        # The window a frame may ask for is capped near the limit: a bigger one is of no use
        # for a body that small and would only cost memory.
        window = 1 << max(20, min(27, (limit - 1).bit_length()))
        self.dctx = zstandard.ZstdDecompressor(max_window_size=window)
        self.d = self.dctx.decompressobj()
        self.started = False

    def _decode(self, chunk: bytes) -> None:
        pending: bytes | memoryview = memoryview(chunk)
        self.started = True
        try:
            while pending:
                if self.d.eof:
                    self.d = self.dctx.decompressobj()  # another frame follows
                size = max(_ZSTD_MIN_SLICE, (self.limit - len(self.out)) // _ZSTD_MAX_RATIO)
                data, pending = pending[:size], pending[size:]
                self._emit(self.d.decompress(data))
                if self.d.eof and self.d.unused_data:
                    pending = self.d.unused_data + bytes(pending)
        except zstandard.ZstdError as exc:
            raise InvalidData(f"cannot decompress the zstd body: {exc}") from None

    def finish(self) -> bytes:
        if self.started and not self.d.eof:
            raise InvalidData("the zstd body is truncated")
        return bytes(self.out)


class _Brotli(_Decoder):
    """``br``: each call's output is capped, the rest drained before more input is given."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.d = brotli.Decompressor()
        self.started = False

    def _decode(self, chunk: bytes) -> None:
        self.started = True
        try:
            self._emit(self.d.process(chunk, output_buffer_limit=_STEP))
            while not self.d.can_accept_more_data():
                self._emit(self.d.process(b"", output_buffer_limit=_STEP))
        except brotli.error as exc:
            raise InvalidData(f"cannot decompress the br body: {exc}") from None

    def finish(self) -> bytes:
        if not self.started:
            return b""
        try:
            while not self.d.is_finished():
                piece = self.d.process(b"", output_buffer_limit=_STEP)
                if not piece:
                    raise InvalidData("the br body is truncated")
                self._emit(piece)
        except brotli.error as exc:
            raise InvalidData(f"cannot decompress the br body: {exc}") from None
        return bytes(self.out)


DECODERS: dict[str, Callable[[int], _Decoder]] = {
    "": _Identity,
    "gzip": lambda limit: _Zlib(limit, gzip=True),
    "zlib": lambda limit: _Zlib(limit, gzip=False),
    "deflate": lambda limit: _Zlib(limit, gzip=False),
    "zstd": _Zstd,
}

#: The encodings of the OTLP receiver plus ``br``, which browsers and Sentry SDKs send.
WEB_DECODERS: dict[str, Callable[[int], _Decoder]] = {**DECODERS, "br": _Brotli}


async def read_body(
    chunks: AsyncIterable[bytes], encoding: str, limit: int, decoders: dict[str, Callable[[int], _Decoder]] = DECODERS
) -> bytes:
    """Read and decode a body of ``encoding`` (a key of ``decoders``, :data:`DECODERS` by default).

    Raises :class:`BodyTooLarge` past ``limit`` bytes (on the wire or decoded) and
    :class:`~collector.pdata.InvalidData` for a corrupt compressed body.
    """
    decoder = decoders[encoding](limit)
    async for chunk in chunks:
        decoder.feed(chunk)
    return decoder.finish()
