"""Benchmark: session replay segments ingested per second over HTTP, and what a recorded minute
costs in storage.

Starts the real API alone (``appguard-collector api``) pinned to core 0, on a scratch database,
with the chosen segment storage (``postgres`` or ``directory``). This process, on core 1, sends
made-up visits (:mod:`bench.rrweb_workload`: a full snapshot of a page of a few
hundred nodes per page load, mouse moves, scrolls, clicks, inputs, mutations), gzip-compressed
as the snippet sends them, one segment per 10 s of recording, each visit under a new session
id, its segments one after the other as a browser sends them, ``--concurrency`` visits at a
time for ``--duration`` seconds.

Prints the segments answered 200 per second, the answers' p50/p99, the server's CPU, and from
the stored sessions: the raw rrweb JSON, the gzip bytes on the wire and the bytes stored (zstd)
per recorded minute, the compression ratio, and for ``postgres`` the bodies table's size on
disk. Figures only; nothing fails on timing.

Usage: python bench/bench_sessions.py [--concurrency 16] [--duration 10] [--storage postgres|directory]
                                      [--visit-minutes 5] [--level 3]
Servers as for bench_sentry.py (APPGUARD_BENCH_POSTGRES_DSN, APPGUARD_BENCH_REDIS_URL...).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_issue_queries import server_dsn
from bench.common import free_port, pinned
from bench.rrweb_workload import recording, split
from storage.migrations import migrate_dsn

VISITS = 8
JWT_SECRET = "bench-secret-of-the-session-replay-bench-0123456789"


def segment_bodies(visit_minutes: float) -> tuple[list[list[bytes]], int, int]:
    """Gzip request bodies of ``VISITS`` visits, by visit and sequence; raw and gzip bytes in all."""
    visits = []
    raw_total = gzip_total = 0
    start = int(time.time() * 1000) - int(visit_minutes * 60_000) - 60_000
    for seed in range(VISITS):
        events = recording(seed, start_ms=start, duration_s=visit_minutes * 60, error_every_s=90)
        bodies = []
        for sequence, part in enumerate(split(events, 10_000)):
            body = orjson.dumps(
                {
                    "sequence": sequence,
                    "url": "https://shop.example.com/",
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                    "service": "shop-web",
                    "events": part,
                }
            )
            raw_total += len(orjson.dumps(part))
            packed = gzip.compress(body, 6)
            gzip_total += len(packed)
            bodies.append(packed)
        visits.append(bodies)
    return visits, raw_total, gzip_total


def work(visits: list[list[bytes]]) -> Iterator[tuple[str, list[bytes]]]:
    """(session id, segment bodies) for ever: the visits in turn, each time under a new id."""
    for round_no in itertools.count():
        for visit_no, bodies in enumerate(visits):
            yield f"bench-{round_no:05d}-{visit_no:02d}-{uuid.uuid4().hex[:8]}", bodies


async def drive(
    base: str, key: str, visits: list[list[bytes]], concurrency: int, duration: float
) -> tuple[int, int, list[float], float]:
    """Send for ``duration`` seconds; (answered 200, other answers, latencies in ms, elapsed)."""
    jobs = work(visits)
    ok = failed = 0
    latencies: list[float] = []
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "X-AppGuard-Key": key}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            # One browser after another: a visit's segments in order, one at a time.
            nonlocal ok, failed
            while time.perf_counter() < deadline:
                session_id, bodies = next(jobs)
                for body in bodies:
                    if time.perf_counter() >= deadline:
                        break
                    sent = time.perf_counter()
                    url = f"{base}/api/sessions/{session_id}/segments"
                    async with session.post(url, data=body, headers=headers) as reply:
                        await reply.read()
                        if reply.status == 200:
                            ok += 1
                            latencies.append((time.perf_counter() - sent) * 1000)
                        else:
                            failed += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return ok, failed, latencies, elapsed


def wait_for(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/api/sessions", timeout=2)
        except urllib.error.HTTPError:
            return  # 401: up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--storage", choices=["postgres", "directory"], default="postgres")
    parser.add_argument("--visit-minutes", type=float, default=5.0)
    parser.add_argument("--level", type=int, default=3, help="zstd level of the stored segments")
    args = parser.parse_args()

    redis_url = os.environ.get(
        "APPGUARD_BENCH_REDIS_URL", os.environ.get("APPGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    dsn = server_dsn()
    name = f"appguard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    target = make_conninfo(dsn, dbname=name)
    workdir = Path(tempfile.mkdtemp(prefix="appguard-bench-sessions-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        asyncio.run(migrate_dsn(target))
        with psycopg.connect(target) as conn:
            row = conn.execute("SELECT public_key FROM appguard.project_keys WHERE project_id = 1").fetchone()
            assert row is not None
            key = row[0]
        port = free_port()
        sessions: dict[str, object] = {"storage": args.storage, "compression_level": args.level}
        if args.storage == "directory":
            sessions["directory"] = str(workdir / "replays")
        config = {
            "extensions": {
                "api": {
                    "endpoint": f"127.0.0.1:{port}",
                    "postgres": {"dsn": target, "pool_max_size": 8},
                    "redis": {"url": redis_url, "key_prefix": f"appguard-bench:{uuid.uuid4().hex[:8]}:"},
                    "auth": {"jwt_secret": JWT_SECRET},
                    "ingest": {"rate_limit_per_key": None, "rate_limit_per_address": None},
                    "sessions": sessions,
                }
            }
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        log = workdir / "log"
        proc = subprocess.Popen(
            pinned([sys.executable, "-m", "collector.cli", "api", "--config", str(workdir / "config.yaml")], 0),
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),  # noqa: SIM115
            env=dict(os.environ, APPGUARD_DATA_DIR=str(workdir / "data")),
        )
        base = f"http://127.0.0.1:{port}"
        wait_for(base, proc, log)
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {1})

        print(f"preparing {VISITS} visits of {args.visit_minutes:g} min ...", flush=True)
        visits, raw_bytes, gzip_bytes = segment_bodies(args.visit_minutes)
        segments = sum(len(v) for v in visits)
        recorded_minutes = VISITS * args.visit_minutes
        cpu_before = cpu_seconds(proc.pid)
        ok, failed, latencies, elapsed = asyncio.run(drive(base, key, visits, args.concurrency, args.duration))
        cpu = cpu_seconds(proc.pid) - cpu_before

        with psycopg.connect(target) as conn:
            stats = conn.execute(
                "SELECT count(*), coalesce(sum(raw_bytes), 0), coalesce(sum(stored_bytes), 0), "
                "coalesce(sum(duration_ms), 0) FROM appguard.sessions"
            ).fetchone()
            table = conn.execute("SELECT pg_total_relation_size('appguard.session_segment_bodies')").fetchone()
        assert stats is not None and table is not None
        stored_sessions, stored_raw, stored_zstd, duration_ms = stats
        minutes = duration_ms / 60_000 if duration_ms else 0.0

        print(
            f"\nstorage: {args.storage}, zstd level {args.level}, concurrency {args.concurrency}, {args.duration:g} s"
        )
        print(f"segments answered 200: {ok} ({ok / elapsed:.0f}/s), other answers: {failed}")
        if latencies:
            latencies.sort()
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(f"latency p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms")
        print(f"server CPU: {cpu:.1f} s for {elapsed:.1f} s ({cpu / elapsed:.0%} of one core)")
        print(f"\nthe workload: {segments} segments per {recorded_minutes:g} recorded minutes")
        print(f"  raw rrweb JSON  {raw_bytes / recorded_minutes / 1024:8.1f} KiB per recorded minute")
        print(f"  gzip on wire    {gzip_bytes / recorded_minutes / 1024:8.1f} KiB per recorded minute")
        if minutes:
            print(f"stored: {stored_sessions} sessions, {minutes:.0f} recorded minutes")
            print(f"  raw rrweb JSON  {stored_raw / minutes / 1024:8.1f} KiB per recorded minute")
            print(f"  zstd stored     {stored_zstd / minutes / 1024:8.1f} KiB per recorded minute")
            print(f"  ratio raw/zstd  {stored_raw / max(1, stored_zstd):8.1f}x")
            if args.storage == "postgres":
                print(f"  bodies table on disk {table[0] / minutes / 1024:8.1f} KiB per recorded minute")
            else:
                on_disk = sum(p.stat().st_blocks * 512 for p in (workdir / "replays").rglob("*.zst"))
                print(f"  files on disk   {on_disk / minutes / 1024:8.1f} KiB per recorded minute (blocks)")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
