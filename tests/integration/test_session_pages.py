"""The session replay pages over HTTP, on sessions sent to the ingest endpoint with a project's key
and error events written through ErrorStore: who may see them, what the list shows and filters,
its pages, what a session's page renders (its errors linked to their issues, the moment to start
at) and the Content-Security-Policy the player needs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from api.session_pages import PAGE_SIZE, ms_duration
from storage.errors_store import ErrorEvent
from storage.projects import ProjectStore
from tests.support.api import ApiClient
from tests.support.issue_data import Seeder, ev

T0 = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)


def session_ids(page: str) -> list[str]:
    return re.findall(r'<tr data-session-id="([A-Za-z0-9_-]+)"', page)


def recording(
    start: int, duration_ms: int, url: str, *, errors: Sequence[str] = (), pages: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """A small rrweb recording: a page load, a snapshot, page views, error markers, a last move."""
    events: list[dict[str, Any]] = [
        {"type": 4, "data": {"href": url, "width": 1000, "height": 600}, "timestamp": start},
        {
            "type": 2,
            "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
            "timestamp": start,
        },
    ]
    for n, page in enumerate(pages):
        events.append(
            {
                "type": 5,
                "data": {"tag": "appguard.pageview", "payload": {"url": page, "title": page}},
                "timestamp": start + 10 + n,
            }
        )
    for n, event_id in enumerate(errors):
        payload = {"event_id": event_id, "type": "TypeError", "message": f"failure {n}"}
        events.append({"type": 5, "data": {"tag": "appguard.error", "payload": payload}, "timestamp": start + 100 + n})
    events.append({"type": 3, "data": {"source": 1, "positions": []}, "timestamp": start + duration_ms})
    return events


class Sessions:
    """Sends sessions to the ingest endpoint with project keys."""

    def __init__(self, http: ApiClient, keys: dict[int, str]) -> None:
        self.http = http
        self.keys = keys

    async def send(
        self,
        session_id: str,
        events: list[dict[str, Any]],
        *,
        project: int = 1,
        sequence: int = 0,
        user: dict[str, str] | None = None,
        agent: str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        service: str = "shop-web",
    ) -> None:
        reply = await self.http.call(
            "POST",
            f"/api/sessions/{session_id}/segments",
            json={
                "sequence": sequence,
                "url": events[0]["data"].get("href", "https://shop.example.com/"),
                "user_agent": agent,
                "service": service,
                "environment": "production",
                "user": user,
                "events": events,
            },
            headers={"X-AppGuard-Key": self.keys[project]},
        )
        assert reply.status == 200, reply.body


@pytest.fixture
async def sessions(http: ApiClient, pool: AsyncConnectionPool[Any]) -> Sessions:
    projects = ProjectStore(pool)
    other = await projects.create_project("Second shop")
    keys = {}
    for project_id in (1, other.id):
        found = [key for key in await projects.list_keys(project_id) if key.revoked_at is None]
        keys[project_id] = found[0].public_key if found else (await projects.create_key(project_id)).public_key
    return Sessions(http, keys)


async def page_of(http: ApiClient, path: str, token: str) -> str:
    reply = await http.call("GET", path, token=token)
    assert reply.status == 200, reply.body
    assert isinstance(reply.body, str)
    return reply.body


async def test_anonymous_visitors_are_sent_to_sign_in(http: ApiClient) -> None:
    for path in ("/sessions", "/sessions/abcdefgh12345678?t=5"):
        reply = await http.call("GET", path, allow_redirects=False)
        assert reply.status == 303
        assert reply.headers["Location"].startswith("/login?next=/sessions")
    # The player's script and styles are public files, like the rest of the front end.
    for path in (
        "/vendor/rrweb-player/rrweb-player.js",
        "/vendor/rrweb-player/style.css",
        "/static/js/session-player.js",
    ):
        assert (await http.call("GET", path)).status == 200, path


async def test_the_list_shows_filters_and_pages_sessions(
    http: ApiClient, sessions: Sessions, tokens: dict[str, str]
) -> None:
    viewer = tokens["viewer"]
    alice, bob, firefox = "alice-session-01", "bob-session-0001", "firefox-session1"
    await sessions.send(
        alice,
        recording(
            T0,
            95_000,
            "https://shop.example.com/cart",
            errors=[uuid.uuid4().hex],
            pages=["https://shop.example.com/checkout"],
        ),
        user={"id": "u-1", "email": "alice@example.com", "username": "Alice"},
    )
    await sessions.send(bob, recording(T0 + 60_000, 2_500, "https://shop.example.com/home"), user={"id": "u-2"})
    await sessions.send(
        firefox,
        recording(T0 + 120_000, 20_000, "https://shop.example.com/search?q=<b>"),
        agent="Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        service="search-web",
    )

    body = await page_of(http, "/sessions", viewer)
    # Newest first; the navigation has the new section.
    assert session_ids(body) == [firefox, bob, alice]
    assert '<a href="/sessions" aria-current="page">Sessions</a>' in body
    row = body[body.index(f'data-session-id="{alice}"') : body.index("</tr>", body.index(f'data-session-id="{alice}"'))]
    assert ">Alice<" in row
    assert "1m 35s" in row
    assert re.search(r'class="num pages">2<', row)
    assert re.search(r'<span class="badge level-error">1</span>', row)
    assert "Chrome 124" in row and "Linux" in row
    assert "https://shop.example.com/cart" in row and "shop-web" in row and "production" in row
    # The recorded URL is escaped.
    assert "search?q=&lt;b&gt;" in body and "q=<b>" not in body

    async def listing(qs: str) -> tuple[list[str], str]:
        found = await page_of(http, "/sessions?" + qs, viewer)
        return session_ids(found), found

    assert (await listing("has_errors=true"))[0] == [alice]
    assert (await listing("has_errors=false"))[0] == [firefox, bob]
    assert (await listing("user=alice@example.com"))[0] == [alice]
    assert (await listing("user=u-2"))[0] == [bob]
    assert (await listing("url=CHECKOUT"))[0] == [alice]
    assert (await listing("browser=firefox"))[0] == [firefox]
    assert (await listing("min_duration=10"))[0] == [firefox, alice]
    assert (await listing("min_duration=10&max_duration=60"))[0] == [firefox]
    assert (await listing("max_duration=2.5"))[0] == [bob]
    # The form shows the filters it applied.
    ids, found = await listing(
        "has_errors=true&user=alice%40example.com&url=checkout&browser=Chrome&min_duration=1&max_duration=600"
    )
    assert ids == [alice]
    assert '<option value="true" selected>with errors</option>' in found
    for name, value in (
        ("user", "alice@example.com"),
        ("url", "checkout"),
        ("browser", "Chrome"),
        ("min_duration", "1"),
        ("max_duration", "600"),
    ):
        assert f'name="{name}" value="{value}"' in found, name
    # Filters it cannot use are shown, not failed on.
    for qs, problem in (
        ("min_duration=soon", "min_duration: &#39;soon&#39; is not a number of seconds"),
        ("min_duration=60&max_duration=5", "min_duration must not exceed max_duration"),
        ("has_errors=maybe", "has_errors"),
        ("cursor=not-a-cursor", "cursor"),
        ("project=first", "project"),
    ):
        ids, found = await listing(qs)
        assert ids == [], qs
        assert 'id="filter-error"' in found and problem in found, (qs, found[found.find("filter-error") :][:200])


async def test_the_list_is_per_project_and_paged(http: ApiClient, sessions: Sessions, tokens: dict[str, str]) -> None:
    other = max(sessions.keys)
    sent = [f"paged-session-{n:03d}" for n in range(PAGE_SIZE + 3)]
    for n, session_id in enumerate(sent):
        await sessions.send(session_id, recording(T0 + n * 1000, 1000, f"https://shop.example.com/p/{n}"))
    await sessions.send("other-project-1", recording(T0 + 500_000, 1000, "https://two.example.com/"), project=other)

    first = await page_of(http, "/sessions?project=1", tokens["viewer"])
    assert f'<option value="{other}">Second shop</option>' in first
    assert '<option value="1" selected>' in first
    newest_first = list(reversed(sent))
    assert session_ids(first) == newest_first[:PAGE_SIZE]
    found = re.search(r'<a rel="next" href="([^"]+)">', first)
    assert found is not None
    second = await page_of(http, found.group(1).replace("&amp;", "&"), tokens["viewer"])
    assert session_ids(second) == newest_first[PAGE_SIZE:]
    assert 'rel="next"' not in second and 'id="first-page"' in second
    assert session_ids(await page_of(http, f"/sessions?project={other}", tokens["viewer"])) == ["other-project-1"]
    assert session_ids(await page_of(http, "/sessions", tokens["viewer"]))[0] == "other-project-1"


async def test_a_session_page_lists_its_errors_with_their_issues(
    http: ApiClient, sessions: Sessions, seed: Seeder, tokens: dict[str, str]
) -> None:
    session_id = "replay-with-errors-1"
    first, second, unstored = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = T0 + 3_600_000 - 600_000  # ten minutes ago
    await sessions.send(
        session_id,
        recording(start, 30_000, "https://shop.example.com/cart", errors=[first.hex, unstored.hex]),
        user={"id": "u-9", "email": "ada@example.com", "username": "Ada <admin>"},
    )
    at = datetime.fromtimestamp((start + 100) / 1000, UTC)
    ids = await seed(
        [
            ErrorEvent(fingerprint="session-cart", timestamp=at, type="TypeError", message="total is <undefined>",
                       event_id=first, session_id=session_id, service_name="shop-web"),
            ErrorEvent(fingerprint="session-api", timestamp=at + timedelta(seconds=5), type="ValueError",
                       message="bad quantity", event_id=second, session_id=session_id, service_name="api"),
        ]
    )  # fmt: skip

    reply = await http.call("GET", f"/sessions/{session_id}?t={start + 100}&event={first}", token=tokens["viewer"])
    assert reply.status == 200, reply.body
    body = reply.body
    # The player's root carries the moment and the event; the errors link to their issues.
    assert f'data-session-id="{session_id}" data-t="{start + 100}" data-event="{first}"' in body
    assert f'href="/issues/{ids["session-cart"]}?event={first}"' in body
    assert f'href="/issues/{ids["session-api"]}?event={second}"' in body
    assert "total is &lt;undefined&gt;" in body and "<undefined>" not in body
    assert "Ada &lt;admin&gt;" in body
    chosen = re.search(rf'<li class="session-error" data-event-id="{first}"[^>]*>', body)
    assert chosen is not None and 'aria-current="true"' in chosen.group(0)
    other = re.search(rf'<li class="session-error" data-event-id="{second}"[^>]*>', body)
    assert other is not None and "aria-current" not in other.group(0)
    # Two stored errors and one only recorded: three errors, as the API counts them.
    assert re.search(r'id="session-error-count">3<', body)
    assert re.search(r'id="session-duration">30s<', body)
    assert '<script type="module" src="/static/js/session-player.js"></script>' in body
    assert '<link rel="stylesheet" href="/vendor/rrweb-player/style.css">' in body
    # The replay rebuilds the recorded page's styles and images: inline styles and images from
    # anywhere are admitted on this page only, scripts still from this origin only.
    csp = reply.headers["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in csp and "img-src * data: blob:" in csp
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    listing = await http.call("GET", "/sessions", token=tokens["viewer"])
    assert "unsafe-inline" not in listing.headers["Content-Security-Policy"]

    # The issue page links to the replay at the event's moment.
    issue = await page_of(http, f"/issues/{ids['session-cart']}?event={first}", tokens["viewer"])
    moment = int(at.timestamp() * 1000)
    assert f'href="https://guard.example.com/sessions/{session_id}?t={moment}&amp;event={first}"' in issue


async def test_errors_of_another_projects_session_link_to_that_project(
    http: ApiClient, sessions: Sessions, seed: Seeder, tokens: dict[str, str]
) -> None:
    other = max(sessions.keys)
    event_id = uuid.uuid4()
    await sessions.send("second-project-replay", recording(T0, 5000, "https://two.example.com/"), project=other)
    ids = await seed([ev("two", 30, event_id=event_id, session_id="second-project-replay", project_id=other)])
    body = await page_of(http, "/sessions/second-project-replay", tokens["viewer"])
    assert f'href="/issues/{ids["two"]}?event={event_id}&amp;project={other}"' in body
    assert 'data-t="" data-event=""' in body


async def test_a_session_page_refuses_what_it_cannot_show(http: ApiClient, tokens: dict[str, str]) -> None:
    viewer = tokens["viewer"]
    assert (await http.call("GET", "/sessions/no-such-session", token=viewer)).status == 404
    bad_id = await http.call("GET", "/sessions/bad%20id!", token=viewer)
    assert bad_id.status == 400 and "session_id" in bad_id.body
    bad_t = await http.call("GET", "/sessions/abcdefgh12345678?t=yesterday", token=viewer)
    assert bad_t.status == 400 and "t:" in bad_t.body


def test_durations_read_like_a_clock() -> None:
    assert [ms_duration(v) for v in (0, 400, 4_999, 95_000, 3_725_000)] == ["0s", "<1s", "4s", "1m 35s", "1h 02m"]
