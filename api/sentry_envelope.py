"""Sentry's wire formats as pure functions: envelopes, the auth header, DSNs and event ids.

An envelope (``POST /api/<project>/envelope/``) is a line of JSON headers followed by items,
each a line of JSON item headers and a payload::

    {"event_id":"9ec79c33ec9942ab8353589fcb2e04dc","dsn":"https://key@host/1"}\\n
    {"type":"event","length":41}\\n
    {"message":"hello","level":"error"}\\n
    {"type":"session"}\\n
    {"started":"2020-02-07T14:16:00Z"}

An item whose headers give ``length`` has a payload of exactly that many bytes (it may hold
newlines), followed by a newline or the end of the body; without ``length`` the payload runs
to the next newline. :func:`parse_envelope` checks the framing and the headers' JSON and
keeps payloads as bytes: only the items that are used are decoded (:meth:`EnvelopeItem.json`).
Anything malformed raises :class:`EnvelopeError` with a message that says where.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

#: Items an envelope may hold; a body of more is refused (a flood of empty items costs time).
MAX_ITEMS = 1000

_AUTH_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([^,\s]*)\s*")


class EnvelopeError(ValueError):
    """The body is not a well-formed envelope (or event); the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class EnvelopeItem:
    """One item: its ``type``, all of its headers and its payload's bytes."""

    type: str
    headers: Mapping[str, Any]
    payload: bytes
    index: int = 0

    def json(self) -> dict[str, Any]:
        """The payload decoded as a JSON object; :class:`EnvelopeError` if it is not one."""
        return json_object(self.payload, f"item {self.index} ({self.type})")


@dataclass(frozen=True, slots=True)
class Envelope:
    """The envelope's headers and its items in order."""

    headers: Mapping[str, Any]
    items: list[EnvelopeItem] = field(default_factory=list)

    @property
    def event_id(self) -> str | None:
        """The ``event_id`` header as 32 lower-case hex digits, if it is a valid id."""
        return normalize_event_id(self.headers.get("event_id"))

    @property
    def dsn(self) -> str | None:
        """The ``dsn`` header (browser SDKs and tunnels send it), if it is text."""
        dsn = self.headers.get("dsn")
        return dsn if isinstance(dsn, str) and dsn else None


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` decoded as a JSON object; :class:`EnvelopeError` naming ``what`` otherwise."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise EnvelopeError(f"{what} must be a JSON object")
    return value


def parse_envelope(body: bytes, *, max_items: int = MAX_ITEMS) -> Envelope:
    """Split an envelope into its headers and items; :class:`EnvelopeError` when malformed."""
    if not body.strip():
        raise EnvelopeError("the envelope is empty")
    end = body.find(b"\n")
    line = body if end < 0 else body[:end]
    headers = json_object(line, "the envelope header (first line)")
    items: list[EnvelopeItem] = []
    pos = len(body) if end < 0 else end + 1
    size = len(body)
    while pos < size:
        end = body.find(b"\n", pos)
        line = body[pos:] if end < 0 else body[pos:end]
        pos = size if end < 0 else end + 1
        if not line.strip():
            # Blank lines between items (and a trailing one) carry nothing.
            continue
        index = len(items) + 1
        if index > max_items:
            raise EnvelopeError(f"the envelope has more than {max_items} items")
        item_headers = json_object(line, f"the header of item {index}")
        kind = item_headers.get("type")
        if not isinstance(kind, str) or not kind:
            raise EnvelopeError(f"the header of item {index} has no type")
        length = item_headers.get("length")
        if length is None:
            end = body.find(b"\n", pos)
            payload = body[pos:] if end < 0 else body[pos:end]
            pos = size if end < 0 else end + 1
        else:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise EnvelopeError(f"item {index} ({kind}): length must be a non-negative integer")
            if pos + length > size:
                raise EnvelopeError(
                    f"item {index} ({kind}) declares {length} bytes but only {size - pos} remain in the envelope"
                )
            payload = body[pos : pos + length]
            pos += length
            if pos < size:
                if body[pos : pos + 1] != b"\n":
                    raise EnvelopeError(f"item {index} ({kind}): its payload is not followed by a newline")
                pos += 1
        items.append(EnvelopeItem(kind, item_headers, payload, index))
    return Envelope(headers, items)


def parse_auth_header(value: str) -> dict[str, str]:
    """The ``key=value`` pairs of an ``X-Sentry-Auth`` (or ``Authorization: Sentry``) header.

    ``Sentry sentry_key=abc, sentry_version=7, sentry_client=raven-python/1.0`` gives
    ``{"sentry_key": "abc", "sentry_version": "7", "sentry_client": "raven-python/1.0"}``;
    the ``Sentry`` scheme word is optional and pairs that do not parse are skipped.
    """
    text = value.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    pairs: dict[str, str] = {}
    for part in text.split(","):
        match = _AUTH_PAIR.fullmatch(part)
        if match is not None:
            pairs[match.group(1).lower()] = match.group(2)
    return pairs


def parse_dsn(dsn: str) -> tuple[str, str] | None:
    """``(public_key, project_id)`` of a DSN ``scheme://key[:secret]@host[:port][/path]/project``."""
    try:
        parts = urlsplit(dsn.strip())
    except ValueError:
        return None
    key = parts.username
    project = parts.path.rstrip("/").rpartition("/")[2]
    if not parts.scheme or not key or not project:
        return None
    return key, project


def normalize_event_id(value: Any) -> str | None:
    """An event id as Sentry writes it (32 lower-case hex digits), from either UUID form."""
    if not isinstance(value, str) or len(value) not in (32, 36):
        return None
    try:
        return uuid.UUID(value).hex
    except ValueError:
        return None
