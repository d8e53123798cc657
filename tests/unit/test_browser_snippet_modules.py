"""The browser snippet's modules that need no page (``sdk/browser/src``), run in Node.

Each test runs a short ES module with ``node`` that imports the snippet's own source and prints
JSON; the assertions are here. Node has fetch's types, TextEncoder and CompressionStream, so the
transport runs as in a browser, against a fake fetch.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from typing import Any

import pytest

from tests.support.snippet_build import ROOT, SDK, ensure_node_modules


@pytest.fixture(scope="module", autouse=True)
def _node_modules() -> None:
    ensure_node_modules()


def run_node(body: str) -> Any:
    """Run ``body`` as an ES module beside the snippet's sources; it calls ``out(value)`` once."""
    script = "const out = (v) => process.stdout.write(JSON.stringify(v));\n" + body
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=SDK / "src",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_baggage_is_merged_without_repeating_the_session_member() -> None:
    got = run_node(
        """
        import { mergeBaggage } from './baggage.js';
        out([
          mergeBaggage(null, 'abc'),
          mergeBaggage('tenant=acme, session.id=old;prop=1 , user.tier=gold', 'abc'),
          mergeBaggage('', 'a b'),
        ]);
        """
    )
    assert got == ["session.id=abc", "tenant=acme,user.tier=gold,session.id=abc", "session.id=a%20b"]


def test_propagation_targets_are_origins_prefixes_or_patterns() -> None:
    got = run_node(
        """
        import { matchesTargets } from './baggage.js';
        const targets = ['https://api.example.com', 'https://cdn.example.com/v1/', /^https:\\/\\/[a-z]+\\.internal\\//];
        out([
          'https://api.example.com/orders?id=1',
          'https://api.example.com.evil.io/orders',
          'http://api.example.com/orders',
          'https://api.example.com:8443/orders',
          'https://cdn.example.com/v1/app.js',
          'https://cdn.example.com/v2/app.js',
          'https://billing.internal/charge',
          'not a url',
        ].map((u) => matchesTargets(u, targets)));
        """
    )
    assert got == [True, False, False, False, True, False, True, False]


def test_config_defaults_and_refusals() -> None:
    got = run_node(
        """
        import { resolveConfig, ConfigError } from './config.js';
        const key = '0123456789abcdef0123456789abcdef';
        const refused = (o) => { try { resolveConfig(o, 'https://ag.example.com'); return null; } catch (e) { return e instanceof ConfigError ? e.message : 'other ' + e; } };
        out({
          defaults: resolveConfig({ key }, 'https://ag.example.com/'),
          off: resolveConfig({ key, replay: false, endpoint: 'http://127.0.0.1:8080/' }, 'x').replay,
          partial: resolveConfig({ key, replay: { sampleRate: 0, bufferSeconds: 10 } }, 'https://a.b').replay,
          badKey: refused({ key: 'ABC' }),
          badRate: refused({ key, replay: { sampleRate: 2 } }),
          badEndpoint: refused({ key, endpoint: 'ftp://x' }),
          badIdle: refused({ key, sessionIdleMinutes: 0 }),
        });
        """
    )
    assert got["defaults"] == {
        "endpoint": "https://ag.example.com",
        "key": "0123456789abcdef0123456789abcdef",
        "service": "web",
        "environment": "production",
        "release": None,
        "user": None,
        "propagateTo": [],
        "replay": {
            "sampleRate": 1,
            "onErrorSampleRate": 1,
            "bufferSeconds": 60,
            "maskAllInputs": True,
            "maskTextSelector": None,
            "blockSelector": ".ag-block",
            "ignoreSelector": None,
            "flushSeconds": 5,
            "maxChunkBytes": 262144,
        },
        "sessionIdleMinutes": 30,
        "sessionMaxHours": 4,
        "debug": False,
    }
    assert got["off"] is None
    assert got["partial"]["sampleRate"] == 0 and got["partial"]["bufferSeconds"] == 10
    assert got["partial"]["onErrorSampleRate"] == 1
    assert "32 lowercase hex" in got["badKey"]
    assert got["badRate"].startswith("replay.sampleRate")
    assert got["badEndpoint"].startswith("endpoint")
    assert got["badIdle"].startswith("sessionIdleMinutes")


def test_a_script_tag_data_attributes_become_options() -> None:
    got = run_node(
        """
        import { optionsFromScript } from './config.js';
        out([
          optionsFromScript({ dataset: { key: 'k', service: 'shop', propagateTo: 'https://a.example, https://b.example',
                                         replaySampleRate: '0.25', maskAllInputs: 'false', blockSelector: '.private',
                                         sessionIdleMinutes: '10', debug: '' } }),
          optionsFromScript({ dataset: { key: 'k', replay: 'off' } }),
          optionsFromScript({ dataset: {} }),
          optionsFromScript(null),
        ]);
        """
    )
    assert got[0] == {
        "key": "k",
        "service": "shop",
        "propagateTo": ["https://a.example", "https://b.example"],
        "sessionIdleMinutes": 10,
        "debug": True,
        "replay": {"sampleRate": 0.25, "maskAllInputs": False, "blockSelector": ".private"},
    }
    assert got[1] == {"key": "k", "replay": False}
    assert got[2] is None and got[3] is None


def test_retry_after_and_which_statuses_are_retried() -> None:
    got = run_node(
        """
        import { retryAfterMs, retryable } from './transport.js';
        const now = Date.parse('2026-01-01T00:00:00Z');
        out({
          after: [retryAfterMs('3', now), retryAfterMs('Thu, 01 Jan 2026 00:00:05 GMT', now), retryAfterMs('soon', now),
                  retryAfterMs(null, now), retryAfterMs('86400', now)],
          retried: [200, 400, 401, 403, 413, 429, 500, 503].filter(retryable),
        });
        """
    )
    assert got["after"] == [3000, 5000, None, None, 60000]
    assert got["retried"] == [429, 500, 503]


TRANSPORT = """
import { Transport } from './transport.js';
globalThis.setTimeout = (fn) => Promise.resolve().then(fn);  // no real waiting between retries
const calls = [];
const answers = ANSWERS;
const fakeFetch = async (url, init) => {
  calls.push({ url, method: init.method, headers: init.headers, keepalive: init.keepalive,
               body: Buffer.from(init.body).toString('base64') });
  const a = answers.shift();
  if (a === 'network') throw new TypeError('Failed to fetch');
  return new Response('{}', { status: a, headers: a === 503 ? { 'Retry-After': '1' } : {} });
};
const t = new Transport({ endpoint: 'https://ag.example.com', key: 'k'.repeat(32) }, fakeFetch);
"""


def transport(answers: list[int | str], action: str) -> dict[str, Any]:
    result: dict[str, Any] = run_node(TRANSPORT.replace("ANSWERS", json.dumps(answers)) + action)
    return result


def test_a_send_is_retried_after_unavailable_and_network_errors_then_stops() -> None:
    got = transport([503, "network", 200], "out({ ok: await t.sendJson('/api/telemetry/event', { a: 1 }), calls });")
    assert got["ok"] is True
    assert len(got["calls"]) == 3
    call = got["calls"][0]
    assert call["url"] == "https://ag.example.com/api/telemetry/event"
    assert call["method"] == "POST" and call["keepalive"] is True
    assert call["headers"] == {"Content-Type": "application/json", "X-AppGuard-Key": "k" * 32}

    got = transport(["network"] * 6, "out({ ok: await t.sendJson('/x', {}), calls: calls.length });")
    assert got == {"ok": False, "calls": 4}
    for status in (400, 401, 403, 413):
        got = transport([status, 200], "out({ ok: await t.sendJson('/x', {}), calls: calls.length });")
        assert got == {"ok": False, "calls": 1}, status


def test_segments_are_gzipped_unless_the_page_is_unloading_and_big_bodies_skip_keepalive() -> None:
    got = transport(
        [200, 200, 200],
        """
        await t.sendSegment('/api/sessions/s/segments', '{"sequence":0,"events":[]}');
        await t.sendSegment('/api/sessions/s/segments', '{"sequence":1,"events":[]}', { unloading: true });
        await t.sendJson('/big', { pad: 'x'.repeat(70 * 1024) });
        out({ calls });
        """,
    )
    packed, plain, big = got["calls"]
    assert packed["headers"]["Content-Encoding"] == "gzip"
    assert gzip.decompress(__import__("base64").b64decode(packed["body"])) == b'{"sequence":0,"events":[]}'
    assert "Content-Encoding" not in plain["headers"]
    assert __import__("base64").b64decode(plain["body"]) == b'{"sequence":1,"events":[]}'
    assert (packed["keepalive"], plain["keepalive"], big["keepalive"]) == (True, True, False)


def test_the_session_rolls_over_after_idling_and_numbers_segments() -> None:
    got = run_node(
        """
        import { SessionStore } from './session.js';
        const rolled = [];
        const store = new SessionStore({ idleMs: 1000, maxMs: 10000, decideReplay: () => 'error' });
        store.onRollover((next, old) => rolled.push([next.id, old.id]));
        const a = store.current({ now: 0 });
        const seq = [store.takeSequence(a.id), store.takeSequence(a.id), store.takeSequence('other')];
        const stillA = store.current({ now: 900, touch: true });
        const afterTouch = store.current({ now: 1800 });  // 900 ms after the touch: still in force
        const b = store.current({ now: 3000 });            // idle for 2.1 s: a new session
        let now = 3000;
        while (now < 3000 + 10000) { now += 500; store.current({ now, touch: true }); }
        const c = store.current({ now: now + 1 });         // never idle, but older than maxMs
        out({ a, seq, stillA: stillA.id === a.id, afterTouch: afterTouch.id === a.id, b, c, rolled,
              expired: store.peek(now + 1 + 1001) });
        """
    )
    a, b, c = got["a"], got["b"], got["c"]
    assert a["previous_id"] is None and a["replay"] == "error" and a["sequence"] == 0
    assert got["seq"] == [0, 1, None]
    assert got["stillA"] and got["afterTouch"]
    assert b["id"] != a["id"] and b["previous_id"] == a["id"] and b["sequence"] == 0
    assert c["previous_id"] == b["id"]
    assert got["rolled"] == [[b["id"], a["id"]], [c["id"], b["id"]]]
    assert got["expired"] is None


def test_errors_and_values_take_the_wire_shape() -> None:
    got = run_node(
        """
        import { describeError } from './errors.js';
        import { scalars, eventId, uuid } from './util.js';
        import { chunkEvents } from './replay.js';
        const err = new SyntaxError('bad token');
        out({
          error: describeError(err),
          text: describeError('plain reason', 'UnhandledRejection'),
          object: describeError({ code: 7 }, 'UnhandledRejection'),
          scalars: scalars({ s: 'x', n: 1.5, b: true, nan: NaN, nil: null, o: { a: [1] }, f() {}, u: undefined }),
          ids: [eventId(), uuid()],
          chunks: chunkEvents(['aaaa', 'bb', 'cccccccccc', 'd'], 8),
        });
        """
    )
    assert got["error"]["type"] == "SyntaxError" and got["error"]["message"] == "bad token"
    assert got["error"]["stacktrace"].startswith("SyntaxError: bad token\n    at ")
    assert got["text"] == {"type": "UnhandledRejection", "message": "plain reason", "stacktrace": ""}
    assert got["object"] == {"type": "UnhandledRejection", "message": '{"code":7}', "stacktrace": ""}
    assert got["scalars"] == {"s": "x", "n": 1.5, "b": True, "nan": "NaN", "nil": "null", "o": '{"a":[1]}'}
    event_id, session_id = got["ids"]
    assert len(event_id) == 32 and int(event_id, 16) >= 0 and event_id == event_id.lower()
    assert len(session_id) == 36 and session_id[14] == "4"
    assert got["chunks"] == [["aaaa", "bb"], ["cccccccccc"], ["d"]]


def test_the_snippet_sources_import_only_npm_packages_declared_at_the_root() -> None:
    declared = set(json.loads((ROOT / "package.json").read_text())["dependencies"])
    imported = set()
    for source in (SDK / "src").glob("*.js"):
        for line in source.read_text().splitlines():
            if line.startswith("import ") and ' from "' in line:
                target = line.rsplit(' from "', 1)[1].split('"', 1)[0]
                if not target.startswith("."):
                    imported.add(target)
    assert imported == {"@rrweb/record", "web-vitals"}
    assert imported <= declared
