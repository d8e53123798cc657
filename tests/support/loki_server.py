"""A Loki push server for tests: ``POST /loki/api/v1/push`` decoded as strictly as Loki does.

It reads what a Loki 3 distributor and ingester read, and refuses what they refuse, with
their status codes and messages:

* protobuf (``Content-Type: application/x-protobuf`` or none) must come in a snappy *block*
  (not the framed format), optionally inside ``Content-Encoding: gzip`` or ``deflate``;
  ``application/json`` is Loki's JSON push (``{"streams": [{"stream": {...}, "values":
  [["<ns>", "<line>", {metadata}]]}]}``);
* the protobuf is decoded by hand with Loki's field numbers (``pkg/push/push.proto``): a wrong
  wire type, a truncated field, a malformed varint or bad UTF-8 is a 400;
* a stream's label string is parsed with the syntax of Prometheus' ``ParseMetric`` (as Loki's
  ``syntax.ParseLabels``): ``{name="value", ...}`` with Go string escapes; then Loki's
  ``ValidateLabels``: no labels, more than 15 label names (``service_name`` not counted),
  names or values too long, duplicate names;
* each entry is checked as ``ValidateEntry`` does (too old, too far in the future, line too
  long, structured metadata too large or too many), and against the stream's newest entry
  (``entry too far behind``, a one hour window);
* a request with refused parts answers 400 with the messages (Loki keeps the valid streams and
  entries, and so does this server); an accepted one answers 204.

Unlike Loki it also refuses unknown protobuf fields, and it keeps what a well-behaved client
should never send (unknown fields, ``parsed`` entries, an empty push) in :attr:`errors`, which
the ``wait_*`` helpers raise. It can be told to answer the next requests with 429 (and a
``Retry-After``), 500, 400... and answers ``GET /ready``::

    async with LokiServer() as loki:
        exporter_config = {"endpoint": loki.push_url}
        loki.fail_next(1, status=429, retry_after=1)
        ...
        await loki.wait_for_entries(10)
        assert loki.streams()[0].labels == {"job": "shop", "level": "INFO"}

From synchronous code: ``start_in_thread()`` / ``stop_in_thread()``. As a program,
``python -m tests.support.loki_server --port 3100`` prints a JSON line per push.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gzip
import json
import signal as os_signal
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import cramjam
from aiohttp import web

from tests.support.threaded import ThreadedServer

PUSH_PATH = "/loki/api/v1/push"
_NS = 1_000_000_000


# --------------------------------------------------------------------------------------------
# Limits (Loki's limits_config defaults)


@dataclass
class LokiLimits:
    """The per-tenant limits the server enforces, with Loki's defaults."""

    max_label_names_per_series: int = 15
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    reject_old_samples: bool = True
    reject_old_samples_max_age: float = 168 * 3600.0
    creation_grace_period: float = 600.0
    max_line_size: int = 256 * 1024
    allow_structured_metadata: bool = True
    max_structured_metadata_size: int = 64 * 1024
    max_structured_metadata_entries_count: int = 128
    # Half of the ingester's max_chunk_age (2h): how far behind a stream's newest entry an
    # entry may be.
    out_of_order_window: float = 3600.0


# --------------------------------------------------------------------------------------------
# The protobuf, decoded by hand


class WireError(ValueError):
    """The body is not a valid PushRequest."""


VARINT, I64, LEN, I32 = 0, 1, 2, 5

# message -> field number -> (field name, wire type)
_SCHEMA: dict[str, dict[int, tuple[str, int]]] = {
    "PushRequest": {1: ("Streams", LEN), 2: ("Format", LEN)},
    "StreamAdapter": {1: ("Labels", LEN), 2: ("Entries", LEN), 3: ("Hash", VARINT)},
    "EntryAdapter": {1: ("Timestamp", LEN), 2: ("Line", LEN), 3: ("StructuredMetadata", LEN), 4: ("Parsed", LEN)},
    "LabelPairAdapter": {1: ("Name", LEN), 2: ("Value", LEN)},
    "Timestamp": {1: ("Seconds", VARINT), 2: ("Nanos", VARINT)},
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise WireError("unexpected EOF")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if i == 9 and byte > 1:
                raise WireError("proto: integer overflow")
            return result, pos + i + 1
        shift += 7
    raise WireError("proto: integer overflow")


def fields(buf: bytes, message: str, unknown: list[str]) -> list[tuple[str, int | bytes]]:
    """The fields of one message, checked against Loki's schema, in wire order.

    Unknown field numbers are skipped, as gogo-protobuf does, and reported in ``unknown``.
    """
    schema = _SCHEMA[message]
    out: list[tuple[str, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"proto: {message}: illegal tag 0 (wire type {wire_type})")
        if wire_type in (3, 4) or wire_type > 5:
            raise WireError(f"proto: {message}: illegal wireType {wire_type}")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _varint(buf, pos)
        elif wire_type == LEN:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise WireError("unexpected EOF")
            value, pos = buf[pos : pos + length], pos + length
        else:
            size = 8 if wire_type == I64 else 4
            if pos + size > len(buf):
                raise WireError("unexpected EOF")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        known = schema.get(number)
        if known is None:
            unknown.append(f"{message} field {number} (wire type {wire_type})")
            continue
        name, expected = known
        if wire_type != expected:
            raise WireError(f"proto: wrong wireType = {wire_type} for field {name}")
        out.append((name, value))
    return out


def _text(value: int | bytes, name: str) -> str:
    assert isinstance(value, bytes)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"proto: {name}: invalid UTF-8") from None


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class RawEntry:
    """An entry as decoded, before validation."""

    timestamp_ns: int
    line: str
    structured_metadata: list[tuple[str, str]]
    parsed: list[tuple[str, str]]


@dataclass
class RawStream:
    """A stream as decoded: its label string as sent and its entries."""

    labels: str
    entries: list[RawEntry]


def _pairs(value: int | bytes, unknown: list[str]) -> tuple[str, str]:
    assert isinstance(value, bytes)
    name = val = ""
    for fname, fvalue in fields(value, "LabelPairAdapter", unknown):
        if fname == "Name":
            name = _text(fvalue, "Name")
        else:
            val = _text(fvalue, "Value")
    return name, val


def _timestamp(value: int | bytes, unknown: list[str]) -> int:
    assert isinstance(value, bytes)
    seconds = nanos = 0
    for fname, fvalue in fields(value, "Timestamp", unknown):
        assert isinstance(fvalue, int)
        if fname == "Seconds":
            seconds = _signed64(fvalue)
        else:
            nanos = _signed64(fvalue)
            if not -(1 << 31) <= nanos < 1 << 31:
                raise WireError("proto: Nanos: integer overflow for int32")
    # gogo's StdTimeUnmarshal validates the timestamp as google.protobuf.Timestamp requires.
    if not 0 <= nanos < _NS:
        raise WireError(f"timestamp: seconds:{seconds} nanos:{nanos}: nanos not in range [0, 1e9)")
    if not -62135596800 <= seconds < 253402300800:
        raise WireError(f"timestamp: seconds:{seconds} nanos:{nanos}: before 0001-01-01 or after 10000-01-01")
    return seconds * _NS + nanos


def decode_push(buf: bytes, unknown: list[str]) -> tuple[list[RawStream], str]:
    """The streams and ``format`` of a serialized PushRequest (:class:`WireError` if malformed)."""
    streams: list[RawStream] = []
    push_format = ""
    for name, value in fields(buf, "PushRequest", unknown):
        if name == "Format":
            push_format = _text(value, "Format")
            continue
        assert isinstance(value, bytes)
        labels, entries = "", []
        for sname, svalue in fields(value, "StreamAdapter", unknown):
            if sname == "Labels":
                labels = _text(svalue, "Labels")
            elif sname == "Entries":
                assert isinstance(svalue, bytes)
                ts, line, metadata, parsed = 0, "", [], []
                for ename, evalue in fields(svalue, "EntryAdapter", unknown):
                    if ename == "Timestamp":
                        ts = _timestamp(evalue, unknown)
                    elif ename == "Line":
                        line = _text(evalue, "Line")
                    elif ename == "StructuredMetadata":
                        metadata.append(_pairs(evalue, unknown))
                    else:
                        parsed.append(_pairs(evalue, unknown))
                entries.append(RawEntry(ts, line, metadata, parsed))
        streams.append(RawStream(labels, entries))
    return streams, push_format


def decode_json_push(body: bytes) -> list[RawStream]:
    """The streams of Loki's JSON push body (``ValueError`` with the reason if malformed)."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"loghttp.PushRequest: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("streams", []), list):
        raise ValueError("loghttp.PushRequest: streams must be an array")
    streams = []
    for s in doc.get("streams", []):
        if not isinstance(s, dict) or not isinstance(s.get("stream", {}), dict) or not isinstance(s.get("values", []), list):
            raise ValueError("loghttp.PushRequest: a stream is {\"stream\": {...}, \"values\": [...]}")
        labels = s.get("stream", {})
        if not all(isinstance(v, str) for v in labels.values()):
            raise ValueError("loghttp.PushRequest: label values must be strings")
        entries = []
        for v in s.get("values", []):
            if not isinstance(v, list) or len(v) not in (2, 3) or not isinstance(v[0], str) or not isinstance(v[1], str):
                raise ValueError(f"loghttp.PushRequest: unexpected value {v!r}, expected [\"<ns>\", \"<line>\", {{metadata}}]")
            if not v[0].isdigit():
                raise ValueError(f"loghttp.PushRequest: invalid timestamp {v[0]!r}")
            metadata = v[2] if len(v) == 3 else {}
            if not isinstance(metadata, dict) or not all(isinstance(x, str) for x in metadata.values()):
                raise ValueError("loghttp.PushRequest: structured metadata is an object of strings")
            entries.append(RawEntry(int(v[0]), v[1], list(metadata.items()), []))
        streams.append(RawStream(labels_string(sorted(labels.items())), entries))
    return streams


# --------------------------------------------------------------------------------------------
# Label strings (Prometheus' ParseMetric syntax)


class LabelParseError(ValueError):
    """A label string Loki cannot parse; the message is PromQL's ``line:col: parse error: ...``."""

    def __init__(self, text: str, pos: int, message: str) -> None:
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{line}:{col}: parse error: {message}")


_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT = _IDENT_START | frozenset("0123456789")
_METRIC_START = _IDENT_START | {":"}
_METRIC = _IDENT | {":"}
_SIMPLE_ESCAPES = {"a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v", "\\": b"\\"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _go_rune(c: str) -> str:
    # Go's %q of a rune: single-quoted, escaped.
    return "'" + ("\\'" if c == "'" else json.dumps(c)[1:-1]) + "'"


def _string(text: str, pos: int) -> tuple[str, int]:
    """A quoted string starting at ``text[pos]`` and the position after it (Go escapes)."""
    quote = text[pos]
    start = pos
    pos += 1
    out = bytearray()
    if quote == "`":
        end = text.find("`", pos)
        if end < 0:
            raise LabelParseError(text, start, "unterminated raw string")
        return text[pos:end], end + 1
    while True:
        if pos >= len(text) or text[pos] == "\n":
            raise LabelParseError(text, start, "unterminated quoted string")
        c = text[pos]
        if c == quote:
            break
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            pos += 1
            continue
        pos += 1
        if pos >= len(text):
            raise LabelParseError(text, start, "unterminated quoted string")
        e = text[pos]
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
            pos += 1
        elif e == quote:
            out += e.encode()
            pos += 1
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = text[pos + 1 : pos + 1 + n]
            if len(digits) != n or not set(digits) <= _HEX:
                raise LabelParseError(text, pos - 1, "illegal character in escape sequence")
            value = int(digits, 16)
            if e == "x":
                out.append(value)
            else:
                if value > 0x10FFFF or 0xD800 <= value < 0xE000:
                    raise LabelParseError(text, pos - 1, "escape sequence is an invalid Unicode code point")
                out += chr(value).encode()
            pos += 1 + n
        elif e in "01234567":
            digits = text[pos : pos + 3]
            if len(digits) != 3 or not set(digits) <= set("01234567") or int(digits, 8) > 255:
                raise LabelParseError(text, pos - 1, "illegal character in escape sequence")
            out.append(int(digits, 8))
            pos += 3
        else:
            raise LabelParseError(text, pos - 1, "unknown escape sequence " + _go_rune(e))
    try:
        return out.decode("utf-8"), pos + 1
    except UnicodeDecodeError:
        raise LabelParseError(text, start, "invalid UTF-8 rune") from None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _token(text: str, pos: int) -> str:
    if pos >= len(text):
        return "end of input"
    c = text[pos]
    if c in _IDENT_START:
        end = pos
        while end < len(text) and text[end] in _IDENT:
            end += 1
        return f'identifier "{text[pos:end]}"'
    if c in "\"'`":
        # The lexer reads the string before the parser can object to it: its errors come first.
        _string(text, pos)
        return "string"
    return json.dumps(c)


def parse_labels(text: str) -> list[tuple[str, str]]:
    """The labels of ``{name="value", ...}`` (an optional metric name first), in order.

    Raises :class:`LabelParseError` with PromQL's message when ``text`` is not a label set.
    """
    labels: list[tuple[str, str]] = []
    pos = _skip_space(text, 0)
    if pos < len(text) and text[pos] in _METRIC_START:
        end = pos
        while end < len(text) and text[end] in _METRIC:
            end += 1
        labels.append(("__name__", text[pos:end]))
        pos = _skip_space(text, end)
        if pos >= len(text):
            return labels
    if pos >= len(text) or text[pos] != "{":
        raise LabelParseError(text, pos, f"unexpected {_token(text, pos)}, expected label set")
    pos += 1
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise LabelParseError(text, pos, "unexpected end of input inside braces")
        if text[pos] == "}":
            pos += 1
            break
        if text[pos] not in _IDENT_START:
            if text[pos] in "\"'`,=":
                raise LabelParseError(text, pos, f'unexpected {_token(text, pos)} in label set, expected identifier or "}}"')
            raise LabelParseError(text, pos, f"unexpected character inside braces: {_go_rune(text[pos])}")
        end = pos
        while end < len(text) and text[end] in _IDENT:
            end += 1
        name = text[pos:end]
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] not in _IDENT and text[pos] not in " \t\r\n=,}\"'`!~":
            raise LabelParseError(text, pos, f"unexpected character inside braces: {_go_rune(text[pos])}")
        if pos >= len(text):
            raise LabelParseError(text, pos, "unexpected end of input inside braces")
        if text[pos] != "=" or text[pos : pos + 2] == "=~":
            raise LabelParseError(text, pos, f'unexpected {_token(text, pos)} in label set, expected "="')
        pos = _skip_space(text, pos + 1)
        if pos >= len(text):
            raise LabelParseError(text, pos, "unexpected end of input inside braces")
        if text[pos] not in "\"'`":
            raise LabelParseError(text, pos, f"unexpected {_token(text, pos)} in label set, expected string")
        value, pos = _string(text, pos)
        labels.append((name, value))
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "}":
            pos += 1
            break
        if pos >= len(text):
            raise LabelParseError(text, pos, "unexpected end of input inside braces")
        raise LabelParseError(text, pos, f'unexpected {_token(text, pos)} in label set, expected "," or "}}"')
    pos = _skip_space(text, pos)
    if pos < len(text):
        raise LabelParseError(text, pos, f"unexpected {_token(text, pos)}")
    return labels


def labels_string(labels: list[tuple[str, str]]) -> str:
    """Prometheus' ``Labels.String()``: ``{a="x", b="y"}``."""
    return "{" + ", ".join(f"{n}={json.dumps(v, ensure_ascii=False)}" for n, v in labels) + "}"


# --------------------------------------------------------------------------------------------
# Go's time formats, for Loki's messages


def _utc(ts_ns: int) -> datetime.datetime:
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(microseconds=ts_ns // 1000)


def rfc3339(ts_ns: int) -> str:
    """``time.Format(time.RFC3339)`` in UTC."""
    return _utc(ts_ns).strftime("%Y-%m-%dT%H:%M:%SZ")


def go_time_string(ts_ns: int) -> str:
    """``time.Time.String()`` in UTC: ``2024-05-01 10:00:00.5 +0000 UTC``."""
    frac = ts_ns % _NS
    text = _utc(ts_ns).strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + " +0000 UTC"


# --------------------------------------------------------------------------------------------
# What the server recorded


@dataclass
class Entry:
    """An accepted entry."""

    timestamp_ns: int
    line: str
    structured_metadata: dict[str, str]


@dataclass
class Stream:
    """An accepted stream of one push: labels as sent, as parsed (sorted, empties dropped)."""

    labels_string: str
    labels: dict[str, str]
    entries: list[Entry]


@dataclass
class Push:
    """One push request the server answered (204, or 400 with some parts refused)."""

    tenant: str | None
    content_type: str
    content_encoding: str
    headers: dict[str, str]
    streams: list[Stream]
    status: int
    message: str
    received_at: float = field(default_factory=time.monotonic)

    @property
    def entry_count(self) -> int:
        """Entries accepted from this push."""
        return sum(len(s.entries) for s in self.streams)


@dataclass
class _Answer:
    status: int
    retry_after: float | None
    message: str
    tenant: str | None


class _Refusals:
    """Validation errors of one push, grouped by reason as Loki's distributor reports them."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {}
        self.ingester: list[str] = []

    def add(self, reason: str, message: str) -> None:
        self.groups.setdefault(reason, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.groups or self.ingester)

    def text(self) -> str:
        groups = list(self.groups.values())
        if len(groups) == 1 and len(groups[0]) == 1:
            out = groups[0]
        else:
            out = [f"{len(msgs)} errors like: {msgs[0]}" for msgs in groups]
        return "\n".join(out + self.ingester)


class LokiServer(ThreadedServer):
    """A recording Loki push endpoint on 127.0.0.1 (a free port unless ``port`` is given)."""

    thread_name = "loki-server"

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        limits: LokiLimits | None = None,
        auth_enabled: bool = False,
    ) -> None:
        self.host = host
        self._port = port
        self.limits = limits or LokiLimits()
        self.auth_enabled = auth_enabled
        self._lock = threading.Lock()
        self._pushes: list[Push] = []
        self._script: list[_Answer] = []
        self._newest: dict[tuple[str, str], int] = {}
        self.errors: list[str] = []
        self.answered_failures = 0
        self.refused: list[Push] = []
        self._runner: web.AppRunner | None = None
        self.on_push: Callable[[Push], None] | None = None

    # ---- addresses

    @property
    def port(self) -> int:
        """The port served (known once started)."""
        assert self._port, "the server was never started"
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: Loki's base URL (``/otlp`` is not served)."""
        return f"http://{self.host}:{self.port}"

    @property
    def push_url(self) -> str:
        """The push endpoint, for the ``loki`` exporter's ``endpoint``."""
        return self.url + PUSH_PATH

    # ---- behaviour

    def fail_next(
        self, n: int, *, status: int = 500, retry_after: float | None = None, message: str = "injected failure", tenant: str | None = None
    ) -> None:
        """Answer the next ``n`` pushes (of ``tenant`` only, if given) with ``status``.

        ``retry_after`` is sent as a ``Retry-After`` header (whole seconds, rounded up). Such
        pushes are not recorded.
        """
        with self._lock:
            self._script.extend(_Answer(status, retry_after, message, tenant) for _ in range(n))

    # ---- what was received

    @property
    def pushes(self) -> list[Push]:
        """Every push with accepted entries or answered 204, in arrival order."""
        with self._lock:
            return list(self._pushes)

    def streams(self, tenant: str | None = None) -> list[Stream]:
        """Accepted streams of every push, or of the pushes with ``X-Scope-OrgID: <tenant>``."""
        return [s for p in self.pushes if tenant is None or p.tenant == tenant for s in p.streams]

    def entries(self, tenant: str | None = None) -> list[tuple[dict[str, str], Entry]]:
        """Accepted entries with their stream's labels, in arrival order."""
        return [(s.labels, e) for s in self.streams(tenant) for e in s.entries]

    def entry_count(self) -> int:
        """Entries accepted so far."""
        return sum(p.entry_count for p in self.pushes)

    def clear(self) -> None:
        """Forget what was received, the scripted answers, stream state and errors."""
        with self._lock:
            self._pushes.clear()
            self._script.clear()
            self._newest.clear()
            self.errors.clear()
            self.refused.clear()
            self.answered_failures = 0

    def _check(self, n: int) -> bool:
        if self.errors:
            raise AssertionError(f"the Loki server got requests a client should not send: {self.errors}")
        return self.entry_count() >= n

    async def wait_for_entries(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least ``n`` entries were accepted; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._check(n):
            if time.monotonic() > deadline:
                raise AssertionError(f"the Loki server accepted {self.entry_count()} entries, expected {n}")
            await asyncio.sleep(0.01)

    def wait_for_entries_blocking(self, n: int, timeout: float = 10.0) -> None:
        """:meth:`wait_for_entries` for synchronous code (the server runs in its own thread)."""
        deadline = time.monotonic() + timeout
        while not self._check(n):
            if time.monotonic() > deadline:
                raise AssertionError(f"the Loki server accepted {self.entry_count()} entries, expected {n}")
            time.sleep(0.01)

    # ---- handling a push

    def _next_answer(self, tenant: str | None) -> _Answer | None:
        with self._lock:
            for i, answer in enumerate(self._script):
                if answer.tenant is None or answer.tenant == tenant:
                    self.answered_failures += 1
                    return self._script.pop(i)
        return None

    def _error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    async def _ready(self, _: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _push(self, request: web.Request) -> web.Response:
        tenant = request.headers.get("X-Scope-OrgID")
        if self.auth_enabled and not tenant:
            return web.Response(status=401, text="no org id\n")
        answer = self._next_answer(tenant)
        if answer is not None:
            headers = {}
            if answer.retry_after is not None:
                headers["Retry-After"] = str(max(0, int(-(-answer.retry_after // 1))))
            return web.Response(status=answer.status, text=answer.message + "\n", headers=headers)
        body = await request.read()
        encoding = request.headers.get("Content-Encoding", "")
        media_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding not in ("", "snappy"):
                return web.Response(status=400, text=f'Content-Encoding "{encoding}" not supported\n')
        except (OSError, EOFError, zlib.error) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        unknown: list[str] = []
        try:
            if media_type == "application/json":
                raw_streams = decode_json_push(body)
            else:
                try:
                    proto = bytes(cramjam.snappy.decompress_raw(body))
                except cramjam.DecompressionError as exc:
                    raise WireError(str(exc).split(" (")[0]) from None
                raw_streams, _ = decode_push(proto, unknown)
        except ValueError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        if unknown:
            self._error(f"unknown protobuf fields: {unknown}")
            return web.Response(status=400, text=f"unknown protobuf fields: {', '.join(unknown)}\n")
        if not raw_streams:
            self._error("an empty push (no streams)")
        if any(e.parsed for s in raw_streams for e in s.entries):
            self._error("entries carry `parsed` labels, which are Loki's own")
        refusals = _Refusals()
        streams = [s for s in (self._stream(tenant or "fake", raw, refusals) for raw in raw_streams) if s is not None]
        status = 400 if refusals else 204
        message = refusals.text()
        push = Push(
            tenant,
            media_type,
            encoding,
            {k.lower(): v for k, v in request.headers.items()},
            streams,
            status,
            message,
        )
        with self._lock:
            if status == 204 or push.entry_count:
                self._pushes.append(push)
            if status != 204:
                self.refused.append(push)
        if self.on_push is not None:
            self.on_push(push)
        if status == 204:
            return web.Response(status=204)
        return web.Response(status=400, text=message + "\n")

    def _stream(self, tenant: str, raw: RawStream, refusals: _Refusals) -> Stream | None:
        """Validate one stream as Loki's distributor and ingester do; the accepted part."""
        limits = self.limits
        try:
            parsed = parse_labels(raw.labels)
        except LabelParseError as exc:
            refusals.add("invalid_labels", f"Error parsing labels '{raw.labels}' with error: {exc}")
            return None
        labels = sorted((n, v) for n, v in parsed if v)
        if not labels:
            refusals.add("missing_labels", "error at least one label pair is required per stream")
            return None
        count = len(labels) - (1 if any(n == "service_name" for n, _ in labels) else 0)
        if count > limits.max_label_names_per_series:
            refusals.add(
                "max_label_names_per_series",
                f"entry for stream '{raw.labels}' has {count} label names; limit {limits.max_label_names_per_series}",
            )
            return None
        last = ""
        for name, value in labels:
            if len(name.encode()) > limits.max_label_name_length:
                refusals.add("label_name_too_long", f"stream '{raw.labels}' has label name too long: '{name}'")
                return None
            if len(value.encode()) > limits.max_label_value_length:
                refusals.add("label_value_too_long", f"stream '{raw.labels}' has label value too long: '{value}'")
                return None
            if name == last:
                refusals.add("duplicate_label_names", f"stream '{raw.labels}' has duplicate label name: '{name}'")
                return None
            last = name
        canonical = labels_string(labels)
        now = time.time_ns()
        oldest = now - int(limits.reject_old_samples_max_age * _NS)
        newest_allowed = now + int(limits.creation_grace_period * _NS)
        accepted: list[Entry] = []
        behind: list[str] = []
        key = (tenant, canonical)
        for e in raw.entries:
            metadata_size = sum(len(n.encode()) + len(v.encode()) for n, v in e.structured_metadata)
            if limits.reject_old_samples and e.timestamp_ns < oldest:
                refusals.add(
                    "greater_than_max_sample_age",
                    f"entry for stream '{canonical}' has timestamp too old: {rfc3339(e.timestamp_ns)}, "
                    f"oldest acceptable timestamp is: {rfc3339(oldest)}",
                )
                continue
            if e.timestamp_ns > newest_allowed:
                refusals.add("too_far_in_future", f"entry for stream '{canonical}' has timestamp too new: {rfc3339(e.timestamp_ns)}")
                continue
            if limits.max_line_size and len(e.line.encode()) > limits.max_line_size:
                refusals.add(
                    "line_too_long",
                    f"Max entry size '{limits.max_line_size}' bytes exceeded for stream '{canonical}' "
                    f"while adding an entry with length '{len(e.line.encode())}' bytes",
                )
                continue
            if e.structured_metadata:
                if not limits.allow_structured_metadata:
                    refusals.add(
                        "disallowed_structured_metadata",
                        f"stream '{canonical}' includes structured metadata, but this feature is disallowed. Please see "
                        "`limits_config.allow_structured_metadata` or contact your Loki administrator to enable it.",
                    )
                    continue
                if limits.max_structured_metadata_size and metadata_size > limits.max_structured_metadata_size:
                    refusals.add(
                        "structured_metadata_too_large",
                        f"stream '{canonical}' has structured metadata too large: '{metadata_size}' bytes, limit: "
                        f"'{limits.max_structured_metadata_size}' bytes. Please see `limits_config.max_structured_metadata_size` "
                        "or contact your Loki administrator to increase it.",
                    )
                    continue
                n = len(e.structured_metadata)
                if limits.max_structured_metadata_entries_count and n > limits.max_structured_metadata_entries_count:
                    refusals.add(
                        "structured_metadata_too_many",
                        f"stream '{canonical}' has too many structured metadata labels: '{n}', limit: "
                        f"'{limits.max_structured_metadata_entries_count}'. Please see "
                        "`limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it.",
                    )
                    continue
            with self._lock:
                newest = self._newest.get(key)
                cutoff = None if newest is None else newest - int(limits.out_of_order_window * _NS)
                if cutoff is not None and e.timestamp_ns < cutoff:
                    behind.append(
                        f"entry with timestamp {go_time_string(e.timestamp_ns)} ignored, reason: 'entry too far behind, "
                        f"entry timestamp is: {rfc3339(e.timestamp_ns)}, oldest acceptable timestamp is: {rfc3339(cutoff)}',"
                    )
                    continue
                if newest is None or e.timestamp_ns > newest:
                    self._newest[key] = e.timestamp_ns
            accepted.append(Entry(e.timestamp_ns, e.line, dict(e.structured_metadata)))
        if behind:
            refusals.ingester += [
                *behind,
                f"user '{tenant}', total ignored: {len(behind)} out of {len(raw.entries)} for stream: {canonical}",
            ]
        return Stream(raw.labels, dict(labels), accepted)

    # ---- lifecycle

    async def start(self) -> None:
        """Serve (again, on the same port after :meth:`stop`)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(PUSH_PATH, self._push)
        app.router.add_get("/ready", self._ready)
        # Bodies are decompressed here, as Loki does by the declared Content-Encoding.
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving (clients see connection refused); what was received is kept."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None



def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, printing a JSON line per push."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=3100, help="0 for a free port")
    parser.add_argument("--auth-enabled", action="store_true", help="require X-Scope-OrgID, as a multi-tenant Loki")
    args = parser.parse_args(argv)

    def show(p: Push) -> None:
        print(json.dumps({"tenant": p.tenant, "status": p.status, "streams": len(p.streams), "entries": p.entry_count}), flush=True)

    async def serve() -> None:
        server = LokiServer(port=args.port, auth_enabled=args.auth_enabled)
        server.on_push = show
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            print(json.dumps({"ready": True, "port": server.port}), flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
