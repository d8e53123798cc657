"""End to end: source maps keep a minified front end's issue the same across deploys.

The fixture shop (``tests/sourcemaps/app``, a bug in ``parseCoupon`` four calls deep) is built
twice by esbuild from npm, the second build with more code so every function gets another
minified name. Each build runs in Node.js under the URL a browser would load it from, and
throws its real ``Error.stack``. A member creates a personal API token over the API, and the real
CLI uploads each build's map for its release with ``appguard-collector sourcemaps upload`` and
that token in ``$APPGUARD_TOKEN``, as a CI job would (the project's ingest key, public, is
refused); the errors reach the real collector over OTLP/HTTP
(a log record from release 1.0.0, a span event from release 2.0.0) and land in ONE issue whose
frames show ``parseCoupon`` in ``src/coupons.js`` line 7, in PostgreSQL, through the API and
on the issue page. A third error, from release 3.0.0 whose map was never uploaded, stays
minified and says why.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.e2e.stack import Stack, StartStack, registered, rows, until
from tests.sourcemaps import fixture
from tests.support.process import REPO_ROOT

pytestmark = pytest.mark.e2e

ORIGINAL = ["onCheckoutClicked", "checkout", "computeTotal", "applyDiscount", "parseCoupon"]
ORIGINAL_FILES = ["src/main.js", "src/cart.js", "src/pricing.js", "src/pricing.js", "src/coupons.js"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[fixture.Build, fixture.Build]:
    if not fixture.have_node():
        pytest.skip("Node.js and npm are needed to build the fixture app")
    fixture.install()
    root = tmp_path_factory.mktemp("shop")
    return fixture.build(root / "v1", banner=False), fixture.build(root / "v2", banner=True)


@pytest.fixture
def stack(start_stack: StartStack) -> Stack:
    return start_stack(
        batch=False,
        errors={
            "observers": [],
            "pool_size": 2,
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": "1s"},
        },
        pipelines={"traces": ["errors"], "logs": ["errors"]},
    )


# --------------------------------------------------------------------------- sending


def _attributes(values: dict[str, str]) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        kv = KeyValue(key=key)
        kv.value.string_value = value
        out.append(kv)
    return out


def _resource(release: str) -> list[KeyValue]:
    return _attributes({"service.name": "shop-web", "service.version": release, "telemetry.sdk.language": "webjs"})


def _exception(error: dict[str, str]) -> list[KeyValue]:
    return _attributes(
        {"exception.type": error["type"], "exception.message": error["message"], "exception.stacktrace": error["stack"]}
    )


def as_log_record(error: dict[str, str], release: str) -> bytes:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend(_resource(release))
    record = rl.scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    record.severity_number = SeverityNumber.SEVERITY_NUMBER_ERROR
    record.severity_text = "ERROR"
    record.body.string_value = error["message"]
    record.attributes.extend(_exception(error))
    return request.SerializeToString()


def as_span_event(error: dict[str, str], release: str) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(_resource(release))
    span = rs.scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    span.name = "click #checkout"
    span.start_time_unix_nano = time.time_ns() - 1_000_000
    span.end_time_unix_nano = time.time_ns()
    span.status.code = Status.STATUS_CODE_ERROR
    event = span.events.add()
    event.name = "exception"
    event.time_unix_nano = span.end_time_unix_nano
    event.attributes.extend(_exception(error))
    return request.SerializeToString()


async def send(port: int, signal: str, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/v1/{signal}", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


def cli_upload(api_port: int, release: str, token: str, build: fixture.Build) -> subprocess.CompletedProcess[str]:
    """The CLI as a CI job runs it: the token in ``$APPGUARD_TOKEN``, not on the command line."""
    return subprocess.run(
        [
            sys.executable, "-m", "collector.cli", "sourcemaps", "upload", "--url", f"http://127.0.0.1:{api_port}",
            "--project", "1", "--release", release, "--url-prefix", "~/static", str(build.static_dir),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "APPGUARD_TOKEN": token},
    )  # fmt: skip


async def ci_token(base: str) -> str:
    """A personal API token of a member, made as a user would: register, sign in, POST /api/tokens."""
    async with registered(base) as owner:
        assert owner.registration["user"]["role"] == "admin"
    async with registered(base, "ci@example.com") as ci:
        session = (await ci.client.login("ci@example.com")).body
        assert session["user"]["role"] == "member"
        reply = await ci.client.call(
            "POST", "/api/tokens", json={"name": "ci source maps", "role": "member"}, token=session["access_token"]
        )
        assert reply.status == 201, reply.body
        return str(reply.body["token"])


# --------------------------------------------------------------------------- checks


EVENTS = (
    "SELECT e.issue_id, e.service_version, e.frames, e.attributes, i.event_count, i.culprit "
    "FROM appguard.error_events e JOIN appguard.issues i ON i.id = e.issue_id ORDER BY e.service_version"
)


def _app_frames(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames of the bundle (run.js, the page that calls it, and Node's own frames left out)."""
    return [
        f for f in frames if "run.js" not in f.get("abs_path", "") and not f.get("abs_path", "").startswith("node:")
    ]


async def test_one_issue_across_two_minified_builds(
    stack: Stack, builds: tuple[fixture.Build, fixture.Build], appguard_dsn: str
) -> None:
    http_port, api_port, base = stack.ports.http, stack.ports.api, stack.api
    [stored] = await rows(appguard_dsn, "SELECT public_key FROM appguard.project_keys WHERE project_id = 1")
    key = stored["public_key"]
    token = await ci_token(base)

    # The build pipeline uploads each build's map (and bundle) for its release, with its token;
    # neither the project's ingest key nor a made-up token gets anything stored.
    mistakes = (
        (key, "ingest key (the key of a DSN) cannot upload"),
        ("agt_" + "f" * 43, "HTTP 401: the API token is not valid"),
    )
    for wrong, reason in mistakes:
        refused = await asyncio.to_thread(cli_upload, api_port, "1.0.0", wrong, builds[0])
        assert refused.returncode == 1 and reason in refused.stderr, refused.stderr
    async with aiohttp.ClientSession() as http, http.post(
        f"{base}/api/projects/1/releases/1.0.0/sourcemaps?name=~/static/app.min.js",
        data=builds[0].map.read_bytes(), headers={"X-AppGuard-Key": key, "Content-Type": "application/json"},
    ) as r:  # fmt: skip
        assert r.status == 401, await r.text()
    for build, release in zip(builds, ("1.0.0", "2.0.0"), strict=True):
        done = await asyncio.to_thread(cli_upload, api_port, release, token, build)
        assert done.returncode == 0, done.stderr
        assert (
            f"uploaded ~/static/app.min.js (map {build.map.stat().st_size} bytes with its minified file)" in done.stdout
        )

    # The same bug, thrown by both builds: really minified, and named differently.
    first, second = fixture.run(builds[0].bundle), fixture.run(builds[1].bundle)
    assert first["message"] == second["message"] == "Cannot read properties of undefined (reading 'trim')"
    assert first["stack"].split("\n")[1].split(" (")[0] != second["stack"].split("\n")[1].split(" (")[0]
    third = fixture.run(builds[0].bundle)
    await send(http_port, "logs", as_log_record(first, "1.0.0"))
    await send(http_port, "traces", as_span_event(second, "2.0.0"))
    await send(http_port, "logs", as_log_record(third, "3.0.0"))

    events = await until(lambda: rows(appguard_dsn, EVENTS), lambda found: len(found) >= 3, what="three error events")
    assert [e["service_version"] for e in events] == ["1.0.0", "2.0.0", "3.0.0"]
    v1, v2, v3 = events
    assert v1["issue_id"] == v2["issue_id"] != v3["issue_id"]
    assert v1["event_count"] == 2 and v3["event_count"] == 1
    assert v1["culprit"] == "src/coupons.js in parseCoupon"
    for event in (v1, v2):
        frames = _app_frames(event["frames"][-1]["stacktrace"]["frames"])
        assert [f["function"] for f in frames] == ORIGINAL
        assert [f["filename"] for f in frames] == ORIGINAL_FILES
        assert frames[-1]["lineno"] == 7 and "coupon.code.trim()" in frames[-1]["context_line"]
        assert all(f["in_app"] and "symbolication_error" not in f for f in frames)
        # Only the page's own script, which is not minified and has no map, is noted.
        run_js = next(f["abs_path"] for f in event["frames"][-1]["stacktrace"]["frames"] if "run.js" in f["abs_path"])
        release = event["service_version"]
        assert event["attributes"]["appguard.symbolication_errors"] == [
            f"no source map for {run_js} in release {release}"
        ]

    # No map for release 3.0.0: the frames stay minified and say why.
    reason = f"no source map for {fixture.SCRIPT_URL} in release 3.0.0"
    minified = _app_frames(v3["frames"][-1]["stacktrace"]["frames"])
    assert [f["filename"] for f in minified] == ["/static/app.min.js"] * 5
    assert not set(ORIGINAL) & {f["function"].rsplit(".", 1)[-1] for f in minified}
    assert {f["symbolication_error"] for f in minified} == {reason}
    assert reason in v3["attributes"]["appguard.symbolication_errors"]

    # Through the API and on the page, as the dashboard shows them (the CI's token reads too).
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/api/issues/{v1['issue_id']}?project=1", headers=auth) as r:
            assert r.status == 200
            detail = await r.json()
        assert detail["counts"]["total"] == 2
        frames = _app_frames(detail["latest_event"]["exceptions"][-1]["frames"])
        assert [(f["function"], f["filename"]) for f in frames] == list(zip(ORIGINAL, ORIGINAL_FILES, strict=True))
        assert frames[-1]["lineno"] == 7
        async with http.get(f"{base}/api/issues/{v1['issue_id']}/events?project=1", headers=auth) as r:
            assert sorted(e["service_version"] for e in (await r.json())["events"]) == ["1.0.0", "2.0.0"]
        async with http.get(f"{base}/api/issues/{v3['issue_id']}?project=1", headers=auth) as r:
            minified_detail = await r.json()
        assert reason in minified_detail["latest_event"]["attributes"]["appguard.symbolication_errors"]
        async with http.get(f"{base}/issues/{v1['issue_id']}", headers=auth) as r:
            page = await r.text()
        assert r.status == 200 and "parseCoupon" in page and "src/coupons.js" in page and "coupon.code.trim()" in page
        async with http.get(f"{base}/issues/{v3['issue_id']}", headers=auth) as r:
            page = await r.text()
        assert "Frames not mapped to their source" in page and reason in page
        # The release's maps, as the build pipeline left them.
        async with http.get(f"{base}/api/projects/1/releases/2.0.0/sourcemaps", headers=auth) as r:
            listed = (await r.json())["sourcemaps"]
        assert [(m["name"], m["has_source"]) for m in listed] == [("~/static/app.min.js", True)]
