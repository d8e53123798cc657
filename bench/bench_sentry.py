"""Benchmark: Sentry envelopes per second through the ``api`` extension's ingest, into issues.

Starts the real CLI pinned to core 0: the ``otlp`` receiver (HTTP), ``batch``, the ``errors``
exporter writing to a scratch database, and the ``api`` extension whose Sentry ingest posts to
that receiver, all in one process. This process, on core 1, sends envelopes made by the real
``sentry-sdk`` (an exception with a chained cause, four in-app frames with source context, a
user, tags, a trace context), gzip-compressed as the SDK sends them, each with its own event id,
``--concurrency`` requests in flight for ``--duration`` seconds.

Prints the envelopes answered 200 per second, the answers' p50/p99, the collector's CPU, and
how many of the events were stored into their issue once the pipeline drained. Figures only;
nothing fails on timing.

Usage: python bench/bench_sentry.py [--concurrency 16] [--duration 8] [--batch-timeout 200ms]
The PostgreSQL server is APPGUARD_BENCH_POSTGRES_DSN, else APPGUARD_TEST_POSTGRES_DSN, else
postgresql://postgres@127.0.0.1:5432/test; Redis is APPGUARD_BENCH_REDIS_URL, else
APPGUARD_TEST_REDIS_URL, else redis://127.0.0.1:6379/0.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_issue_queries import server_dsn
from bench.common import Collector, free_port

PREBUILT = 40_000


class CouponError(Exception):
    pass


def apply_coupon(cart: dict[str, float], code: str) -> float:
    total = cart["total"]
    return total / len(code.strip())


def checkout(cart: dict[str, float], code: str) -> float:
    try:
        return apply_coupon(cart, code)
    except ZeroDivisionError as exc:
        raise CouponError("empty coupon") from exc


def sdk_event() -> dict[str, Any]:
    """One event exactly as sentry-sdk makes it (captured by a transport of our own)."""
    import sentry_sdk
    from sentry_sdk.transport import Transport

    captured: list[Any] = []

    class Capture(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            captured.append(envelope)

    sentry_sdk.init(
        dsn="http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1",
        transport=Capture,
        release="shop@2.4.0",
        environment="production",
        default_integrations=False,
        traces_sample_rate=1.0,
    )
    sentry_sdk.set_user({"id": "u1", "email": "u1@example.com"})
    sentry_sdk.set_tag("shop", "eu")
    with sentry_sdk.start_transaction(op="http.server", name="POST /checkout"):
        try:
            checkout({"total": 10.0}, "  ")
        except CouponError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush()
    for envelope in captured:
        for item in envelope.items:
            if item.type == "event":
                return orjson.loads(item.get_bytes())  # type: ignore[no-any-return]
    raise RuntimeError("the SDK sent no event")


def bodies(event: dict[str, Any], count: int) -> list[bytes]:
    """``count`` gzip-compressed envelopes of the event, each with its own event id."""
    out = []
    for _ in range(count):
        event_id = uuid.uuid4().hex
        payload = orjson.dumps({**event, "event_id": event_id})
        envelope = b"\n".join(
            [orjson.dumps({"event_id": event_id}), orjson.dumps({"type": "event", "length": len(payload)}), payload]
        )
        out.append(gzip.compress(envelope, 6))
    return out


def config(dsn: str, redis_url: str, http_port: int, api_port: int, batch_timeout: str) -> str:
    return f"""
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{http_port}
processors:
  batch:
    timeout: {batch_timeout}
exporters:
  errors:
    endpoint: "{dsn}"
    observers: [api]
extensions:
  api:
    endpoint: 127.0.0.1:{api_port}
    postgres:
      dsn: "{dsn}"
    redis:
      url: {redis_url}
      key_prefix: "appguard-bench-sentry:{uuid.uuid4().hex[:8]}:"
    auth:
      jwt_secret: bench-sentry-secret-0123456789abcdefghijkl
    sentry:
      otlp_endpoint: http://127.0.0.1:{http_port}
service:
  extensions: [api]
  pipelines:
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [errors]
"""


async def wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as reply:
                    if reply.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer")
            await asyncio.sleep(0.2)


async def load(url: str, headers: dict[str, str], prebuilt: list[bytes], concurrency: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    details: list[str] = []
    next_body = 0
    deadline = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_body
        while time.monotonic() < deadline and next_body < len(prebuilt):
            body = prebuilt[next_body]
            next_body += 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as reply:
                answer = await reply.read()
                statuses[reply.status] = statuses.get(reply.status, 0) + 1
                if reply.status != 200 and len(details) < 5:
                    details.append(f"{reply.status} {answer[:200].decode(errors='replace')}")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "statuses": statuses,
        "details": details,
        "exhausted": next_body >= len(prebuilt),
    }


def stored_events(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(event_count), 0) FROM appguard.issues").fetchone()
        return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument(
        "--batch-timeout", default="200ms", help="the batch processor's timeout: each answer waits for its batch"
    )
    args = parser.parse_args()
    redis_url = os.environ.get(
        "APPGUARD_BENCH_REDIS_URL", os.environ.get("APPGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    server = server_dsn()
    name = f"appguard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server, dbname=name)
    print(f"building {PREBUILT:,} envelopes of a sentry-sdk event")
    prebuilt = bodies(sdk_event(), PREBUILT)
    print(f"envelope: {len(prebuilt[0])} bytes gzip-compressed")
    http_port, api_port = free_port(), free_port()
    collector = Collector(config(dsn, redis_url, http_port, api_port, args.batch_timeout))
    try:
        base = f"http://127.0.0.1:{api_port}"
        # Extensions start before the pipelines: the receiver may listen a moment after the API.
        asyncio.run(wait_for(f"{base}/api/openapi.json"))
        asyncio.run(wait_for(f"http://127.0.0.1:{http_port}/v1/logs"))
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT public_key FROM appguard.project_keys WHERE project_id = 1 ORDER BY id LIMIT 1").fetchone()
        assert row is not None
        headers = {
            "X-Sentry-Auth": f"Sentry sentry_version=7, sentry_client=bench/1.0, sentry_key={row[0]}",
            "Content-Encoding": "gzip",
            "Content-Type": "application/x-sentry-envelope",
        }
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})  # the load generator beside the collector's core
        cpu_before = collector.cpu_seconds()
        result = asyncio.run(load(f"{base}/api/1/envelope/", headers, prebuilt, args.concurrency, args.duration))
        cpu = collector.cpu_seconds() - cpu_before
        answered = result["statuses"].get(200, 0)
        deadline = time.monotonic() + 60
        stored, last = stored_events(dsn), -1
        while stored < answered and stored != last and time.monotonic() < deadline:
            time.sleep(1.0)
            last, stored = stored, stored_events(dsn)
        latencies = sorted(result["latencies"])
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
        print(f"\n{args.concurrency} requests in flight, batch timeout {args.batch_timeout}, {result['elapsed']:.1f} s"
              + (" (ran out of prebuilt envelopes)" if result["exhausted"] else ""))
        print(f"answers: {dict(sorted(result['statuses'].items()))}")
        for detail in result["details"]:
            print(f"  e.g. {detail}")
        print(f"envelopes/s answered 200: {answered / result['elapsed']:,.0f}")
        print(f"latency p50 / p99: {p50:.1f} / {p99:.1f} ms")
        print(f"collector CPU: {cpu / result['elapsed'] * 100:.0f} % of a core")
        print(f"events stored into issues: {stored:,} of {answered:,} answered")
        print(f"collector peak RSS: {collector.peak_rss_mib():.0f} MiB")
        for line in (collector.dir / "log").read_text(errors="replace").splitlines():
            if "WARNING" in line or "ERROR" in line:
                print(f"collector: {line[:300]}")
    finally:
        collector.stop()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
