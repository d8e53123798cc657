"""Made-up rrweb recordings shaped like real ones, for the session replay bench and tests.

A recording is what rrweb's ``record()`` emits on a shop's pages: per page load a Meta event
(``type`` 4) and a full snapshot (``type`` 2) of a DOM of a few hundred nodes (nav, product
cards with text, a form), then incremental snapshots (``type`` 3): mouse-move batches, clicks,
scrolls, form inputs and DOM mutations, at the rates a browsing visitor produces them; plus the
AppGuard snippet's custom events (``type`` 5): ``appguard.pageview`` on each page and SPA
navigation, ``appguard.error`` now and then. Everything follows from the seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

META, FULL_SNAPSHOT, INCREMENTAL, CUSTOM = 4, 2, 3, 5
MUTATION, MOUSE_MOVE, MOUSE_INTERACTION, SCROLL, INPUT = 0, 1, 2, 3, 5

_VOCABULARY = (
    "fresh organic coffee beans roasted daily shipping free order today cart checkout account sign in "
    "search products best seller new arrival sale price review stars delivery return policy contact help "
    "ethiopia colombia brazil kenya espresso filter grinder mug subscription gift card newsletter"
)
_WORDS = tuple(_VOCABULARY.split())
_TAGS = ("div", "span", "p", "a", "li", "button", "img", "h3", "section")
_PAGES = ("/", "/products", "/products/ethiopia-yirgacheffe", "/products/kenya-aa", "/cart", "/checkout", "/account")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


@dataclass
class _Dom:
    """The node ids of a page, so incremental events name nodes that exist."""

    next_id: int = 1
    elements: list[int] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    texts: list[int] = field(default_factory=list)

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _element(rng: random.Random, dom: _Dom, tag: str, depth: int, budget: list[int]) -> dict[str, Any]:
    node_id = dom.new_id()
    dom.elements.append(node_id)
    attributes: dict[str, Any] = {"class": f"{tag}-{rng.choice(_WORDS)} {rng.choice(_WORDS)}"}
    if tag == "a":
        attributes["href"] = rng.choice(_PAGES)
    elif tag == "img":
        attributes["src"] = f"/static/img/{rng.choice(_WORDS)}-{rng.randrange(1000)}.webp"
        attributes["alt"] = _text(rng, 3)
    children: list[dict[str, Any]] = []
    budget[0] -= 1
    if depth < 5 and tag not in ("img", "button"):
        for _ in range(rng.randint(1, 5)):
            if budget[0] <= 0:
                break
            if depth >= 2 and rng.random() < 0.5:
                text_id = dom.new_id()
                dom.texts.append(text_id)
                children.append({"type": 3, "textContent": _text(rng, rng.randint(2, 12)), "id": text_id})
                budget[0] -= 1
            else:
                children.append(_element(rng, dom, rng.choice(_TAGS), depth + 1, budget))
    return {"type": 2, "tagName": tag, "attributes": attributes, "childNodes": children, "id": node_id}


def _form(dom: _Dom) -> dict[str, Any]:
    fields = []
    for name in ("email", "name", "street", "city", "postcode"):
        input_id = dom.new_id()
        dom.inputs.append(input_id)
        fields.append(
            {
                "type": 2,
                "tagName": "input",
                "attributes": {"name": name, "type": "text"},
                "childNodes": [],
                "id": input_id,
            }
        )
    return {
        "type": 2,
        "tagName": "form",
        "attributes": {"class": "checkout-form"},
        "childNodes": fields,
        "id": dom.new_id(),
    }


def full_snapshot(rng: random.Random, nodes: int = 400) -> tuple[dict[str, Any], _Dom]:
    """A serialized document of about ``nodes`` nodes, and its ids."""
    dom = _Dom()
    budget = [nodes]
    sections = []
    while budget[0] > 0:
        sections.append(_element(rng, dom, "section", 1, budget))
    body = {
        "type": 2,
        "tagName": "body",
        "attributes": {},
        "childNodes": [*sections, _form(dom)],
        "id": dom.new_id(),
    }
    head = {
        "type": 2,
        "tagName": "head",
        "attributes": {},
        "childNodes": [
            {"type": 2, "tagName": "title", "attributes": {}, "childNodes": [], "id": dom.new_id()},
            {
                "type": 2,
                "tagName": "link",
                "attributes": {"rel": "stylesheet", "href": "/static/app.css"},
                "childNodes": [],
                "id": dom.new_id(),
            },
        ],
        "id": dom.new_id(),
    }
    html = {"type": 2, "tagName": "html", "attributes": {"lang": "en"}, "childNodes": [head, body], "id": dom.new_id()}
    document = {
        "type": 0,
        "childNodes": [{"type": 1, "name": "html", "publicId": "", "systemId": "", "id": dom.new_id()}, html],
        "id": 1,
    }
    return document, dom


def recording(
    seed: int = 1,
    *,
    start_ms: int = 1_767_225_600_000,
    duration_s: float = 120.0,
    page_every_s: float = 45.0,
    nodes: int = 400,
    origin: str = "https://shop.example.com",
    error_every_s: float = 0.0,
) -> list[dict[str, Any]]:
    """The events of one visit of ``duration_s`` seconds, a new page every ``page_every_s``
    (every other one an SPA navigation), an ``appguard.error`` every ``error_every_s`` (0: none)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    now = float(start_ms)
    end = start_ms + duration_s * 1000
    page_index = 0
    dom = _Dom()
    next_page = now
    next_error = now + error_every_s * 1000 if error_every_s else end + 1
    while now < end:
        if now >= next_page:
            url = origin + _PAGES[page_index % len(_PAGES)]
            ts = int(now)
            if page_index % 2 == 0:
                events.append({"type": META, "data": {"href": url, "width": 1440, "height": 900}, "timestamp": ts})
                document, dom = full_snapshot(rng, nodes)
                events.append(
                    {
                        "type": FULL_SNAPSHOT,
                        "data": {"node": document, "initialOffset": {"left": 0, "top": 0}},
                        "timestamp": ts,
                    }
                )
                navigation = "load"
            else:
                navigation = "push"
                events.append(_mutation(rng, dom, ts, adds=20))
            events.append(
                {
                    "type": CUSTOM,
                    "data": {
                        "tag": "appguard.pageview",
                        "payload": {"url": url, "title": _text(rng, 4), "navigation": navigation},
                    },
                    "timestamp": ts,
                }
            )
            page_index += 1
            next_page = now + page_every_s * 1000
        if now >= next_error:
            events.append(
                {
                    "type": CUSTOM,
                    "data": {
                        "tag": "appguard.error",
                        "payload": {
                            "event_id": f"{rng.getrandbits(128):032x}",
                            "type": "TypeError",
                            "message": _text(rng, 6),
                        },
                    },
                    "timestamp": int(now),
                }
            )
            next_error = now + error_every_s * 1000
        events.extend(_activity(rng, dom, int(now)))
        now += 500
    return events


def _activity(rng: random.Random, dom: _Dom, ts: int) -> Iterator[dict[str, Any]]:
    """What half a second of browsing emits: usually a mouse-move batch, sometimes more."""
    if rng.random() < 0.8:
        x, y = rng.randrange(1440), rng.randrange(900)
        positions = []
        for step in range(rng.randint(4, 12)):
            x, y = max(0, x + rng.randint(-40, 40)), max(0, y + rng.randint(-30, 30))
            positions.append({"x": x, "y": y, "id": rng.choice(dom.elements), "timeOffset": -450 + step * 40})
        yield {"type": INCREMENTAL, "data": {"source": MOUSE_MOVE, "positions": positions}, "timestamp": ts}
    if rng.random() < 0.25:
        yield {
            "type": INCREMENTAL,
            "data": {"source": SCROLL, "id": 1, "x": 0, "y": rng.randrange(4000)},
            "timestamp": ts + 120,
        }
    if rng.random() < 0.12:
        target = rng.choice(dom.elements)
        for kind in (1, 0, 2):  # mouse down, up, click
            yield {
                "type": INCREMENTAL,
                "data": {
                    "source": MOUSE_INTERACTION,
                    "type": kind,
                    "id": target,
                    "x": rng.randrange(1440),
                    "y": rng.randrange(900),
                },
                "timestamp": ts + 200,
            }
    if dom.inputs and rng.random() < 0.08:
        yield {
            "type": INCREMENTAL,
            "data": {"source": INPUT, "text": _text(rng, 2), "isChecked": False, "id": rng.choice(dom.inputs)},
            "timestamp": ts + 300,
        }
    if rng.random() < 0.15:
        yield _mutation(rng, dom, ts + 350, adds=rng.randint(0, 4))


def _mutation(rng: random.Random, dom: _Dom, ts: int, *, adds: int) -> dict[str, Any]:
    new_nodes = []
    for _ in range(adds):
        node_id = dom.new_id()
        dom.elements.append(node_id)
        new_nodes.append(
            {
                "parentId": rng.choice(dom.elements[:-1]),
                "nextId": None,
                "node": {
                    "type": 2,
                    "tagName": rng.choice(_TAGS),
                    "attributes": {"class": rng.choice(_WORDS)},
                    "childNodes": [],
                    "id": node_id,
                },
            }
        )
    texts = [{"id": rng.choice(dom.texts), "value": _text(rng, 3)}] if dom.texts and rng.random() < 0.6 else []
    attributes = (
        [{"id": rng.choice(dom.elements), "attributes": {"class": f"{rng.choice(_WORDS)} active"}}]
        if rng.random() < 0.5
        else []
    )
    return {
        "type": INCREMENTAL,
        "data": {"source": MUTATION, "texts": texts, "attributes": attributes, "removes": [], "adds": new_nodes},
        "timestamp": ts,
    }


def split(events: list[dict[str, Any]], every_ms: int = 10_000) -> list[list[dict[str, Any]]]:
    """The events cut into segments of ``every_ms`` of recording, as the snippet flushes them."""
    segments: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    bound: float | None = None
    for event in events:
        if bound is None:
            bound = event["timestamp"] + every_ms
        if event["timestamp"] >= bound and current:
            segments.append(current)
            current = []
            bound = event["timestamp"] + every_ms
        current.append(event)
    if current:
        segments.append(current)
    return segments
