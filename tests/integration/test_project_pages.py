"""The projects page and the issue list's project filter over HTTP, on projects made through the
API and issues written through ErrorStore: DSNs shown with their copy buttons, revoked keys
flagged, controls for admins only, hostile names escaped, and /issues listing one project's
issues at a time."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

from api.dashboard import IssuesPageQuery
from api.extension import ApiExtension
from tests.support.api import ApiClient
from tests.support.issue_data import Seeder, dataset, ev

SCRIPT = "<script>alert(1)</script>"


async def browser_of(api: ApiExtension, email: str) -> ApiClient:
    """A client signed in with session cookies, as the dashboard is."""
    browser = ApiClient(f"http://127.0.0.1:{api.port}")
    reply = await browser.login(email, cookies=True)
    assert reply.status == 200, reply.body
    return browser


def section(body: str, project_id: int) -> str:
    start = body.index(f'<section class="panel project" id="project-{project_id}"')
    return body[start : body.index("</section>", start)]


def key_rows(part: str) -> dict[str, str]:
    return dict(re.findall(r'<tr data-key-id="(\d+)"(.*?)</tr>', part, re.S))


def issue_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'<tr data-issue-id="(\d+)"', page)]


def chosen_project(page: str) -> str:
    menu = page[page.index('<select name="project">') : page.index("</select>", page.index('<select name="project">'))]
    [value] = re.findall(r'<option value="(\d+)" selected>', menu)
    return value


async def test_the_projects_page_shows_keys_and_dsns_with_controls_for_admins(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str]
) -> None:
    admin = tokens["admin"]
    made = await http.call("POST", "/api/projects", json={"name": f"Shop {SCRIPT}", "platform": "node"}, token=admin)
    assert made.status == 201, made.body
    project_id = made.body["id"]
    first = made.body["keys"][0]
    second = (await http.call("POST", f"/api/projects/{project_id}/keys", json={"label": "web"}, token=admin)).body
    revoked = (await http.call("DELETE", f"/api/projects/{project_id}/keys/{first['id']}", token=admin)).body
    default_key = (await http.call("GET", "/api/projects/1/keys", token=admin)).body["keys"][0]
    retired = (await http.call("POST", "/api/projects", json={"name": "Retired"}, token=admin)).body
    gone_key = retired["keys"][0]["id"]
    assert (await http.call("DELETE", f"/api/projects/{retired['id']}/keys/{gone_key}", token=admin)).status == 200

    browser = await browser_of(api, "admin@example.com")
    try:
        page = await browser.call("GET", "/projects")
    finally:
        await browser.close()
    assert page.status == 200, page.body
    body = page.body
    assert 'href="/projects" aria-current="page">Projects<' in body
    assert '<script type="module" src="/static/js/projects.js"></script>' in body
    # The hostile name is text, wherever it shows.
    assert SCRIPT not in body and "Shop &lt;script&gt;alert(1)&lt;/script&gt;" in body

    # The default project and its seeded key, at the public URL.
    default = section(body, 1)
    assert '<h2 id="project-1-name" class="project-name">default</h2>' in default
    assert f'<code class="dsn">https://{default_key["public_key"]}@guard.example.com/1</code>' in default
    assert 'href="/issues?project=1"' in default

    # The new project: its revoked key flagged, without copy or revoke; the other one with both.
    shop = section(body, project_id)
    assert '<span class="badge platform">node</span>' in shop
    rows = key_rows(shop)
    assert list(rows) == [str(first["id"]), str(second["id"])]
    gone = rows[str(first["id"])]
    assert 'data-active="false"' in gone and ">revoked</span>" in gone and revoked["revoked_at"] is not None
    assert f'<code class="dsn muted">{first["dsn"]}</code>' in gone
    assert 'data-action="copy"' not in gone and 'data-action="revoke"' not in gone
    live = rows[str(second["id"])]
    assert 'data-active="true"' in live and ">web</td>" in live and ">active</span>" in live
    assert f'<code class="dsn">{second["dsn"]}</code>' in live
    assert second["dsn"] == f"https://{second['public_key']}@guard.example.com/{project_id}"
    assert 'data-action="copy"' in live and 'data-action="revoke"' in live
    # A project whose keys are all revoked says that its events are refused.
    assert 'class="muted no-active-key"' not in shop and 'class="muted no-active-key"' not in default
    assert 'class="muted no-active-key"' in section(body, retired["id"])

    # An admin gets the forms: a new project, a key per project, each project's settings.
    assert 'id="project-form"' in body
    assert body.count('<form class="key-form alert-form"') == 3
    assert f'<form class="settings-form alert-form" data-project-id="{project_id}"' in shop
    assert 'value="Shop &lt;script&gt;alert(1)&lt;/script&gt;"' in shop


async def test_viewers_and_members_see_the_dsns_without_the_controls(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str]
) -> None:
    made = await http.call("POST", "/api/projects", json={"name": "Mobile"}, token=tokens["admin"])
    dsn = made.body["keys"][0]["dsn"]
    for email in ("viewer@example.com", "member@example.com"):
        browser = await browser_of(api, email)
        try:
            page = await browser.call("GET", "/projects")
        finally:
            await browser.close()
        assert page.status == 200
        body = page.body
        assert f'<code class="dsn">{dsn}</code>' in body and 'data-action="copy"' in body
        for control in ('id="project-form"', 'class="key-form', 'class="settings-form', 'data-action="revoke"'):
            assert control not in body, (email, control)


async def test_the_issue_list_shows_one_project_at_a_time(
    api: ApiExtension, http: ApiClient, tokens: dict[str, str], seed: Seeder
) -> None:
    made = await http.call("POST", "/api/projects", json={"name": "Mobile app"}, token=tokens["admin"])
    mobile = made.body["id"]
    default_ids = await seed(dataset())
    mobile_ids = await seed([
        ev("crash", 3, project_id=mobile, type="NSRangeException", service_name="ios-app", environment="beta"),
        ev("anr", 8, project_id=mobile, type="ANRError", service_name="android-app", environment="beta"),
        # The same fingerprint as an issue of the default project: a separate issue here.
        ev("cart", 4, project_id=mobile, service_name="ios-app", environment="beta"),
    ])  # fmt: skip
    assert mobile_ids["cart"] != default_ids["cart"]

    browser = await browser_of(api, "viewer@example.com")
    try:
        first = await browser.call("GET", "/issues")
        chosen = await browser.call("GET", f"/issues?project={mobile}")
        narrowed = await browser.call("GET", f"/issues?project={mobile}&service=android-app")
        unknown = await browser.call("GET", "/issues?project=99")
        bad = await browser.call("GET", "/issues?project=mobile")
        # An issue of the other project opens from its link, with its own events and chart.
        link = f'href="/issues/{mobile_ids["crash"]}?project={mobile}"'
        opened = await browser.call("GET", f"/issues/{mobile_ids['crash']}?project={mobile}")
        elsewhere = await browser.call("GET", f"/issues/{mobile_ids['crash']}")
    finally:
        await browser.close()

    # Without a choice: the default project's issues, and a menu of the projects by name.
    assert first.status == 200
    assert set(issue_ids(first.body)) == {default_ids[name] for name in ("cart", "pool", "login", "old")}
    assert chosen_project(first.body) == "1"
    assert f'<option value="{mobile}">Mobile app</option>' in first.body
    assert '<option value="ios-app">' not in first.body

    # The other project: only its issues, its own filter values, and it stays chosen.
    assert chosen.status == 200
    assert set(issue_ids(chosen.body)) == set(mobile_ids.values())
    assert chosen_project(chosen.body) == str(mobile)
    assert '<option value="ios-app">' in chosen.body and '<option value="beta">' in chosen.body
    assert '<option value="checkout">' not in chosen.body and '<option value="staging">' not in chosen.body
    assert issue_ids(narrowed.body) == [mobile_ids["anr"]]
    assert link in chosen.body
    assert opened.status == 200 and "NSRangeException" in opened.body
    assert f'data-src="/api/issues/{mobile_ids["crash"]}/stats?project={mobile}&amp;statsPeriod=14d"' in opened.body
    assert elsewhere.status == 404

    # A project without issues lists none; one that is not a number is named as the problem.
    assert unknown.status == 200 and issue_ids(unknown.body) == []
    assert bad.status == 200 and issue_ids(bad.body) == []
    assert 'id="search-error"' in bad.body and "project" in bad.body[bad.body.index('id="search-error"') :]


def test_the_issue_list_links_keep_the_project() -> None:
    form = IssuesPageQuery.model_validate({"project": "3", "service": "ios-app", "query": "is:unresolved"})
    assert form.api_query()["project"] == "3"
    link = urlsplit(html.unescape(form.link(cursor="next-page")))
    assert parse_qs(link.query) == {
        "project": ["3"], "service": ["ios-app"], "query": ["is:unresolved"], "sort": ["last_seen"],
        "cursor": ["next-page"],
    }  # fmt: skip
    # No project chosen: the link leaves it out (the default project).
    assert "project" not in IssuesPageQuery.model_validate({}).api_query()
    assert "project=" not in IssuesPageQuery.model_validate({}).link()
