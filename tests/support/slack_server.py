"""A Slack incoming-webhook endpoint for tests: Slack itself cannot run here, so this speaks
its protocol and checks messages as strictly as Slack does where it matters.

``POST <webhook_url>`` with a JSON body. The server answers as Slack's webhooks do:

* ``200 ok`` for an accepted message;
* ``400 invalid_payload`` for a body that is not a JSON object, ``400 no_text`` for a message
  with neither ``text`` nor ``blocks``, ``400 invalid_blocks`` for Block Kit that breaks the
  rules below (the reason is kept in :attr:`refused`);
* ``404 no_service`` for a path that is not the webhook's;
* whatever :meth:`fail_next` scripted (``429`` with ``Retry-After``, ``500``, ``404
  channel_not_found``...);
* with ``rate_limit`` set, ``429 rate_limited`` (``Retry-After: 1``) for a message arriving
  sooner than ``rate_limit`` seconds after the previous accepted one.

Block Kit rules checked (https://api.slack.com/reference/block-kit): ``blocks`` is a list of
at most 50 objects of a known ``type``, unique ``block_id`` of at most 255 characters; text
objects are ``{"type": "plain_text" | "mrkdwn", "text": ...}`` (``emoji`` only on plain_text,
``verbatim`` only on mrkdwn) with a non-empty text; a header's text is plain_text of at most
150 characters; a section has ``text`` (at most 3000) or ``fields`` (at most 10 of at most
2000 each); a button has a plain_text label of at most 75 characters and an http(s) ``url`` of
at most 3000; a context has 1 to 10 text or image elements. Unknown keys anywhere are refused.

Accepted messages are kept with their arrival time (``time.monotonic()``)::

    async with SlackServer() as slack:
        spec = SlackSpec(webhook_url=slack.webhook_url)
        slack.fail_next(1, status=429, retry_after=3)
        ...
        [message] = await slack.wait_for_messages(1)
        assert message.payload["blocks"][0]["type"] == "header"

The ``slack_server`` fixture gives a started server (stopped after the test).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.support.threaded import ThreadedServer

BLOCK_TYPES = frozenset(
    {"actions", "context", "divider", "file", "header", "image", "input", "rich_text", "section", "video"}
)
_TOP_LEVEL = frozenset(
    {
        "text", "blocks", "attachments", "channel", "username", "icon_emoji", "icon_url", "mrkdwn",
        "thread_ts", "reply_broadcast", "unfurl_links", "unfurl_media", "parse", "link_names",
    }
)


class BlockError(ValueError):
    """A Block Kit rule the message breaks; the message says where."""


def _keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise BlockError(f"{where}: unknown keys {sorted(unknown)}")


def _text_object(obj: Any, where: str, *, max_length: int, plain_only: bool = False) -> None:
    if not isinstance(obj, dict):
        raise BlockError(f"{where}: a text object is an object")
    kind = obj.get("type")
    if kind not in ("plain_text", "mrkdwn") or (plain_only and kind != "plain_text"):
        raise BlockError(f"{where}.type: must be {'plain_text' if plain_only else 'plain_text or mrkdwn'}, not {kind!r}")
    _keys(obj, {"type", "text", "emoji"} if kind == "plain_text" else {"type", "text", "verbatim"}, where)
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise BlockError(f"{where}.text: must be a non-empty string")
    if len(text) > max_length:
        raise BlockError(f"{where}.text: must be at most {max_length} characters, got {len(text)}")
    for flag in ("emoji", "verbatim"):
        if flag in obj and not isinstance(obj[flag], bool):
            raise BlockError(f"{where}.{flag}: must be a boolean")


def _url(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) > 3000:
        raise BlockError(f"{where}: must be an http(s) URL of at most 3000 characters")


def _element(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise BlockError(f"{where}: an element is an object")
    kind = obj.get("type")
    if kind == "button":
        _keys(obj, {"type", "text", "url", "action_id", "value", "style", "accessibility_label"}, where)
        _text_object(obj.get("text"), f"{where}.text", max_length=75, plain_only=True)
        if "url" in obj:
            _url(obj["url"], f"{where}.url")
        if "action_id" in obj and (not isinstance(obj["action_id"], str) or len(obj["action_id"]) > 255):
            raise BlockError(f"{where}.action_id: at most 255 characters")
        if "style" in obj and obj["style"] not in ("primary", "danger"):
            raise BlockError(f"{where}.style: primary or danger")
    elif kind == "image":
        _keys(obj, {"type", "image_url", "alt_text"}, where)
        _url(obj.get("image_url"), f"{where}.image_url")
        if not isinstance(obj.get("alt_text"), str):
            raise BlockError(f"{where}.alt_text: required")
    else:
        raise BlockError(f"{where}.type: element type {kind!r} is not supported here")


def validate_blocks(blocks: Any) -> None:
    """Raise :class:`BlockError` unless ``blocks`` follows the rules in the module's description."""
    if not isinstance(blocks, list):
        raise BlockError("blocks: must be a list")
    if len(blocks) > 50:
        raise BlockError(f"blocks: at most 50, got {len(blocks)}")
    ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            raise BlockError(f"{where}: a block is an object")
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            raise BlockError(f"{where}.type: unknown block type {kind!r}")
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or len(block_id) > 255 or block_id in ids:
                raise BlockError(f"{where}.block_id: unique, at most 255 characters")
            ids.add(block_id)
        if kind == "header":
            _keys(block, {"type", "block_id", "text"}, where)
            _text_object(block.get("text"), f"{where}.text", max_length=150, plain_only=True)
        elif kind == "section":
            _keys(block, {"type", "block_id", "text", "fields", "accessory", "expand"}, where)
            if "text" not in block and "fields" not in block:
                raise BlockError(f"{where}: a section needs text or fields")
            if "text" in block:
                _text_object(block["text"], f"{where}.text", max_length=3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    raise BlockError(f"{where}.fields: 1 to 10 text objects")
                for j, field in enumerate(fields):
                    _text_object(field, f"{where}.fields[{j}]", max_length=2000)
            if "accessory" in block:
                _element(block["accessory"], f"{where}.accessory")
        elif kind == "divider":
            _keys(block, {"type", "block_id"}, where)
        elif kind == "context":
            _keys(block, {"type", "block_id", "elements"}, where)
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                raise BlockError(f"{where}.elements: 1 to 10 elements")
            for j, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") in ("plain_text", "mrkdwn"):
                    _text_object(element, f"{where}.elements[{j}]", max_length=3000)
                else:
                    _element(element, f"{where}.elements[{j}]")
        elif kind == "actions":
            _keys(block, {"type", "block_id", "elements"}, where)
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                raise BlockError(f"{where}.elements: 1 to 25 elements")
            for j, element in enumerate(elements):
                _element(element, f"{where}.elements[{j}]")


@dataclass(frozen=True)
class SlackMessage:
    """An accepted message: its JSON, the headers (lower-case names) and its arrival time."""

    payload: dict[str, Any]
    headers: dict[str, str]
    received_at: float


@dataclass(frozen=True)
class _Answer:
    status: int
    body: str
    retry_after: float | None


class SlackServer(ThreadedServer):
    """A recording Slack incoming webhook on 127.0.0.1 (a free port unless ``port`` is given)."""

    thread_name = "slack-server"

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", rate_limit: float | None = None) -> None:
        self.host = host
        self._port = port
        self.rate_limit = rate_limit
        self.path = f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
        self._lock = threading.Lock()
        self._messages: list[SlackMessage] = []
        self._script: list[_Answer] = []
        #: Arrival time of every request to the webhook, answered or not.
        self.arrivals: list[float] = []
        #: (reason, payload) of messages answered ``invalid_blocks`` / ``no_text`` / ``invalid_payload``.
        self.refused: list[tuple[str, Any]] = []
        #: Requests answered 429 because they came too soon (with ``rate_limit``).
        self.throttled = 0
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        assert self._port, "the server was never started"
        return self._port

    @property
    def webhook_url(self) -> str:
        """The incoming webhook's URL (what a Slack channel's ``webhook_url`` holds)."""
        return f"http://{self.host}:{self.port}{self.path}"

    def fail_next(self, n: int, *, status: int = 500, body: str = "rollup_error", retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` and ``body`` (plus ``Retry-After``
        in whole seconds when given), without looking at them."""
        with self._lock:
            self._script.extend(_Answer(status, body, retry_after) for _ in range(n))

    @property
    def messages(self) -> list[SlackMessage]:
        """The accepted messages, in arrival order."""
        with self._lock:
            return list(self._messages)

    async def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[SlackMessage]:
        """Wait until ``n`` messages were accepted; AssertionError (with the refusals) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"Slack accepted {len(self.messages)} messages, expected {n}; refused: {self.refused}")
            await asyncio.sleep(0.01)
        return self.messages

    async def _webhook(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        with self._lock:
            self.arrivals.append(arrived)
            answer = self._script.pop(0) if self._script else None
        if answer is not None:
            headers = {}
            if answer.retry_after is not None:
                headers["Retry-After"] = str(max(0, int(-(-answer.retry_after // 1))))
            return web.Response(status=answer.status, text=answer.body, headers=headers)
        if request.path != self.path:
            return web.Response(status=404, text="no_service")
        body = await request.read()
        if request.content_type != "application/json":
            return self._refuse("invalid_payload", f"Content-Type {request.content_type!r}", body)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return self._refuse("invalid_payload", str(exc), body)
        if not isinstance(payload, dict):
            return self._refuse("invalid_payload", "not an object", payload)
        unknown = set(payload) - _TOP_LEVEL
        if unknown:
            return self._refuse("invalid_payload", f"unknown keys {sorted(unknown)}", payload)
        text, blocks = payload.get("text"), payload.get("blocks")
        if text is not None and not isinstance(text, str):
            return self._refuse("invalid_payload", "text must be a string", payload)
        if not text and not blocks:
            return self._refuse("no_text", "neither text nor blocks", payload)
        if blocks is not None:
            try:
                validate_blocks(blocks)
            except BlockError as exc:
                return self._refuse("invalid_blocks", str(exc), payload)
        with self._lock:
            if self.rate_limit is not None and self._messages and arrived - self._messages[-1].received_at < self.rate_limit:
                self.throttled += 1
                return web.Response(status=429, text="rate_limited", headers={"Retry-After": "1"})
            self._messages.append(SlackMessage(payload, {k.lower(): v for k, v in request.headers.items()}, arrived))
        return web.Response(text="ok")

    def _refuse(self, error: str, reason: str, payload: Any) -> web.Response:
        with self._lock:
            self.refused.append((f"{error}: {reason}", payload))
        return web.Response(status=400, text=error)

    async def start(self) -> None:
        """Serve (again, on the same port after :meth:`stop`)."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._webhook)
        runner = web.AppRunner(app, access_log=None)
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


@pytest.fixture
async def slack_server() -> AsyncIterator[SlackServer]:
    """A started :class:`SlackServer` (no rate limit), stopped after the test."""
    async with SlackServer() as server:
        yield server
