"""Alerting latency: from a brand-new error reaching the collector to its notification leaving
the queue, under a steady background load of spans.

The real CLI (pinned to core 0, as in the other benchmarks) runs::

    otlp (gRPC) -> batch -> errors (observers: [alerting])      + the alerting extension

with a rules file holding one ``new_issue`` rule (``group_wait: 0s``) that sends to a ``webhook``
channel pointing at a recording HTTP server in this process (loopback). The ``batch`` processor is
in the pipeline because ``config/default.yaml`` has it, so its ``timeout`` (200 ms by default) is
part of what a user waits; ``--no-batch`` leaves it out. The extension's ``group_check_interval``
(how often due notification groups are looked for) is its default, 1 s, unless
``--group-check-interval`` says otherwise; with ``group_wait: 0s`` it is the largest wait on the
way.

- **Background** (a process of its own on core 1): ``--rate`` spans/s, paced, in requests of 512
  spans of which 5% carry an exception of one issue already known (``bench_errors.stream_bodies``,
  with fresh trace ids in every request so that each is a new event, not a duplicate).
- **New errors** (this process): every ``--new-every`` seconds on average (each gap drawn between
  half and one and a half times it) one request with one span whose exception has a type,
  message and stack trace never seen before, so it opens a new issue. The time just before the
  gRPC call is its send time.
- **Receiver** (this process): the webhook notification naming that issue (``alerts[].issue.title``)
  is its arrival time.

Printed, in milliseconds (count, p50, p99, max):

- ``sent -> webhook received``: the figure asked for, error in to notification out;
- ``sent -> notification created``: receiving, batching, writing, the rule, the grouping wait
  (the notification's ``createdAt``, millisecond precision, against this process's wall clock);
- ``created -> webhook received``: the notification queue and the HTTP POST;

and the background spans/s asked and achieved, and the collector's CPU share. The first new
error is a warm-up (no background, not counted) that also shows the chain works.

Usage (from the repository root)::

    python -m bench.bench_alerting [--duration 40] [--rate 10000] [--new-every 0.5]
                                   [--group-check-interval 1] [--no-batch]

PostgreSQL: APPGUARD_BENCH_POSTGRES_DSN, else APPGUARD_TEST_POSTGRES_DSN, else
postgresql://postgres@127.0.0.1:5432/test (a scratch database, dropped afterwards). Redis:
APPGUARD_BENCH_REDIS_URL, else APPGUARD_TEST_REDIS_URL, else redis://127.0.0.1:6379/0 (keys under
a prefix of their own, deleted afterwards). Figures only; nothing fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import redis
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_errors import postgres_server, scratch_database, stored_events, stream_bodies
from bench.bench_issue_queries import percentile
from bench.common import Collector, free_port, pinned

TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: Spans in each background request (what ``stream_bodies`` builds).
SPANS_PER_REQUEST = 512
#: Background load before the first new error, and after the last one.
SETTLE = 2.0
TAIL = 3.0
#: How long notifications may take to come in once the background load stopped.
LATE = 10.0
#: The words naming each new exception: ``BenchNew<letters>Error``. Letters only, so that no
#: normalisation of digits in types or messages can make two of them look alike.
_NEW_TYPE = re.compile(r"BenchNew([a-z]+)Error")


def token(n: int) -> str:
    """The letters naming the ``n``-th new exception."""
    return "".join(chr(ord("a") + int(d)) for d in str(n))


# --------------------------------------------------------------------------- the collector


def rules_file(webhook_url: str) -> str:
    """One ``new_issue`` rule sending at once (``group_wait: 0s``) to the recording webhook."""
    return (
        "channels:\n"
        "  bench-hook:\n"
        "    type: webhook\n"
        f"    url: {webhook_url}\n"
        "rules:\n"
        "  - name: New issue\n"
        "    kind: issue\n"
        "    when: new_issue\n"
        "    channels: [bench-hook]\n"
        "    grouping: {group_wait: 0s, group_interval: 1s, repeat_interval: 1h}\n"
    )


def collector_config(
    grpc_port: int, dsn: str, redis_url: str, prefix: str, rules: Path, *, batch: bool, group_check_interval: float
) -> str:
    """otlp -> [batch] -> errors observed by the alerting extension, on the scratch database."""
    return (
        f"receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        "        max_recv_msg_size_mib: 64\n"
        + ("processors:\n  batch:\n" if batch else "")
        + "exporters:\n"
        f"  errors:\n    endpoint: '{dsn}'\n    retention:\n      max_age: 0\n    observers: [alerting]\n"
        "extensions:\n"
        "  alerting:\n"
        f"    postgres:\n      dsn: '{dsn}'\n"
        f"    redis:\n      url: {redis_url}\n      key_prefix: '{prefix}'\n"
        f"    rules_file: {rules}\n"
        f"    group_check_interval: {group_check_interval}s\n"
        "service:\n"
        "  extensions: [alerting]\n"
        "  pipelines:\n"
        "    traces:\n"
        "      receivers: [otlp]\n"
        f"      processors: [{'batch' if batch else ''}]\n"
        "      exporters: [errors]\n"
    )


# --------------------------------------------------------------------------- the load


def new_error_request(n: int) -> bytes:
    """One span failing with an exception no earlier request had: a new issue."""
    name = token(n)
    now = time.time_ns()
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (
        ("service.name", "checkout"),
        ("service.version", "1.4.2"),
        ("deployment.environment.name", "prod"),
        ("telemetry.sdk.language", "python"),
    ):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    span = rs.scope_spans.add().spans.add()
    span.trace_id = uuid.uuid4().bytes
    span.span_id = os.urandom(8)
    span.name = "POST /api/checkout"
    span.kind = Span.SPAN_KIND_SERVER
    span.start_time_unix_nano = now - 3_000_000
    span.end_time_unix_nano = now
    span.status.code = Status.STATUS_CODE_ERROR
    event = span.events.add()
    event.name = "exception"
    event.time_unix_nano = now
    error = f"BenchNew{name}Error"
    message = f"checkout step {name} failed"
    stacktrace = (
        "Traceback (most recent call last):\n"
        '  File "/app/shop/views.py", line 88, in checkout\n'
        f"    step_{name}(cart)\n"
        f'  File "/app/shop/steps/{name}.py", line 12, in step_{name}\n'
        f"    raise {error}({message!r})\n"
        f"{error}: {message}\n"
    )
    for key, value in (("exception.type", error), ("exception.message", message), ("exception.stacktrace", stacktrace)):
        kv = event.attributes.add()
        kv.key, kv.value.string_value = key, value
    return request.SerializeToString()


def salted(body: bytes, trace_id_offsets: list[int], salt: int) -> bytes:
    """``body`` with the first 8 bytes of every trace id (at ``trace_id_offsets``) set to
    ``salt``: new events for the errors exporter, at the cost of a copy."""
    out = bytearray(body)
    prefix = salt.to_bytes(8, "big")
    for at in trace_id_offsets:
        out[at : at + 8] = prefix
    return bytes(out)


async def background(target: str, rate: float, duration: float, in_flight: int = 64) -> dict[str, float]:
    """Send ``rate`` spans/s for ``duration`` seconds, paced (not as fast as possible); runs in
    a process of its own. Returns requests answered and refused, and the spans/s answered."""
    bodies, offsets = stream_bodies(8)
    interval = SPANS_PER_REQUEST / rate
    salt = int.from_bytes(os.urandom(4), "big") << 32
    answered = refused = late = 0
    slots = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)

        async def send(body: bytes) -> None:
            nonlocal answered, refused
            try:
                await call(body, timeout=10)
                answered += 1
            except grpc.aio.AioRpcError:
                refused += 1
            finally:
                slots.release()

        start = time.monotonic()
        n = 0
        while (due := start + n * interval) < start + duration:
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -interval:
                late += 1
            await slots.acquire()
            task = asyncio.create_task(send(salted(bodies[n % len(bodies)], offsets[n % len(offsets)], salt + n)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - start
    return {
        "requests": answered,
        "refused": refused,
        "behind_schedule": late,
        "seconds": elapsed,
        "spans_per_s": answered * SPANS_PER_REQUEST / elapsed,
    }


# --------------------------------------------------------------------------- the webhook


@dataclass
class Arrival:
    """When the notification naming one new issue came in, and when it was created."""

    received: float  # perf_counter
    received_wall: float  # epoch seconds
    created_wall: float  # the notification's createdAt, epoch seconds


@dataclass
class WebhookReceiver:
    """A loopback HTTP server recording, per new exception, the first notification naming it."""

    url: str = ""
    arrivals: dict[str, Arrival] = field(default_factory=dict)
    notifications: int = 0
    alerts: int = 0
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        received, received_wall = time.perf_counter(), time.time()
        payload: dict[str, Any] = json.loads(await request.read())
        created = datetime.fromisoformat(payload["createdAt"]).timestamp()
        self.notifications += 1
        for alert in payload["alerts"]:
            self.alerts += 1
            found = _NEW_TYPE.search((alert.get("issue") or {}).get("title") or "")
            if found and found.group(1) not in self.arrivals:
                self.arrivals[found.group(1)] = Arrival(received, received_wall, created)
        return web.Response(text="ok")

    async def wait_for(self, names: set[str], timeout: float) -> None:
        """Return once every one of ``names`` was notified, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not names <= self.arrivals.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- the run


@dataclass
class Sent:
    """When a new error's request left this process (just before the call)."""

    at: float  # perf_counter
    at_wall: float  # epoch seconds
    answered: bool = False


def schedule(count: int, every: float, seed: int = 7) -> list[float]:
    """Seconds from the first send to each of ``count`` sends, ``every`` apart on average.

    The gaps are drawn between half and one and a half times ``every``: at a fixed period the
    sends would keep one phase against the dispatcher's fixed cadence and sample only one or
    two points of the wait it adds.
    """
    rng = random.Random(seed)
    offsets = [0.0]
    for _ in range(count - 1):
        offsets.append(offsets[-1] + rng.uniform(0.5, 1.5) * every)
    return offsets


async def send_new_errors(call: grpc.aio.UnaryUnaryMultiCallable, first: int, offsets: list[float]) -> dict[str, Sent]:
    """Send new errors ``first``, ``first + 1``... at ``offsets`` seconds from now; returns once
    all were answered."""
    sent: dict[str, Sent] = {}

    async def one(name: str, body: bytes) -> None:
        record = sent[name] = Sent(time.perf_counter(), time.time())
        try:
            # The receiver starts after the self-metrics, which tell the collector is up.
            await call(body, timeout=10, wait_for_ready=True)
            record.answered = True
        except grpc.aio.AioRpcError as exc:
            print(f"  new error {name} refused: {exc.code().name}", file=sys.stderr)

    start = time.monotonic()
    calls = []
    for k, offset in enumerate(offsets):
        body = new_error_request(first + k)
        wait = start + offset - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        calls.append(asyncio.create_task(one(token(first + k), body)))
    await asyncio.gather(*calls)
    return sent


def row(label: str, samples: list[float]) -> str:
    """``label``, then count, p50, p99 and max in milliseconds."""
    if not samples:
        return f"  {label:<32} {0:>6}"
    ms = [s * 1000 for s in samples]
    return (
        f"  {label:<32} {len(ms):>6} {percentile(ms, 0.5):>9.0f} {percentile(ms, 0.99):>9.0f} {max(ms):>9.0f}"
    )


async def measure(args: argparse.Namespace, dsn: str, redis_url: str, prefix: str) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        with tempfile.TemporaryDirectory(prefix="appguard-bench-alerting-") as tmp:
            rules = Path(tmp) / "alert-rules.yaml"
            rules.write_text(rules_file(receiver.url))
            grpc_port = free_port()
            config = collector_config(
                grpc_port,
                dsn,
                redis_url,
                prefix,
                rules,
                batch=args.batch,
                group_check_interval=args.group_check_interval,
            )
            collector = await asyncio.to_thread(Collector, config)
            try:
                await _measure(args, collector, receiver, f"127.0.0.1:{grpc_port}", dsn)
            finally:
                await asyncio.to_thread(collector.stop)
    finally:
        await receiver.stop()


async def _measure(
    args: argparse.Namespace, collector: Collector, receiver: WebhookReceiver, target: str, dsn: str
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)
        # Warm-up: the extension may still be synchronising its rules when the metrics answer.
        warm = await send_new_errors(call, 0, [0.0])
        if all(s.answered for s in warm.values()):
            await receiver.wait_for(set(warm), 60)
        if not set(warm) <= receiver.arrivals.keys():
            raise RuntimeError(
                "the warm-up error was not notified within 60 s; the collector's log:\n"
                + (collector.dir / "log").read_text()
            )

        offsets = schedule(max(1, int(args.duration / args.new_every)), args.new_every)
        loadgen = await asyncio.create_subprocess_exec(
            *pinned(
                [
                    sys.executable, "-m", "bench.bench_alerting", "--loadgen", target,
                    "--rate", str(args.rate), "--duration", str(SETTLE + offsets[-1] + TAIL),
                ],
                1,
            ),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.sleep(SETTLE)
            cpu0, t0 = collector.cpu_seconds(), time.monotonic()
            sent = await send_new_errors(call, 1, offsets)
            await receiver.wait_for(set(sent), TAIL)
            cpu = (collector.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            out, _ = await loadgen.communicate()
        finally:
            if loadgen.returncode is None:
                loadgen.kill()
                await loadgen.wait()
        await receiver.wait_for(set(sent), LATE)
    if loadgen.returncode != 0:
        raise RuntimeError(f"the background load generator failed (exit status {loadgen.returncode})")
    load = json.loads(out.decode().strip().splitlines()[-1])
    events = await asyncio.to_thread(stored_events, dsn)

    total, created, queued = [], [], []
    for name, s in sent.items():
        a = receiver.arrivals.get(name)
        if a is None:
            continue
        total.append(a.received - s.at)
        created.append(a.created_wall - s.at_wall)
        queued.append(a.received_wall - a.created_wall)
    refused = sum(1 for s in sent.values() if not s.answered)
    missing = len(sent) - len(total)
    print(
        f"  background: {args.rate:,.0f} spans/s asked, {load['spans_per_s']:,.0f} answered "
        f"({SPANS_PER_REQUEST} spans a request, 5% with an exception of a known issue; "
        f"{load['refused']:.0f} requests refused, {load['behind_schedule']:.0f} sent late); "
        f"{events:,} error events stored in all"
    )
    print(
        f"  new issues: {len(sent)} sent, one every {args.new_every:g} s on average; {len(total)} notified, {missing} missing, "
        f"{refused} refused; {receiver.notifications} notifications with {receiver.alerts} alerts in all"
    )
    print(f"  collector CPU while measuring: {cpu:.0%} of a core")
    print(f"\n  {'ms':<32} {'count':>6} {'p50':>9} {'p99':>9} {'max':>9}")
    print(row("sent -> webhook received", total))
    print(row("sent -> notification created", created))
    print(row("created -> webhook received", queued))


# --------------------------------------------------------------------------- main


def redis_server() -> str:
    """The Redis URL to use; it must answer."""
    url = os.environ.get(
        "APPGUARD_BENCH_REDIS_URL", os.environ.get("APPGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    return url


@contextmanager
def redis_prefix(url: str) -> Iterator[str]:
    """A key prefix of its own on ``url``; every key under it is deleted afterwards."""
    prefix = f"appguard-bench:{uuid.uuid4().hex[:8]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of new errors under load")
    parser.add_argument("--rate", type=float, default=10_000.0, help="background spans per second")
    parser.add_argument("--new-every", type=float, default=0.5, help="seconds between two new errors")
    parser.add_argument(
        "--group-check-interval", type=float, default=1.0, help="the extension's group_check_interval, in seconds"
    )
    parser.add_argument(
        "--batch", action=argparse.BooleanOptionalAction, default=True, help="a batch processor in the pipeline"
    )
    parser.add_argument("--loadgen", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(background(args.loadgen, args.rate, args.duration))))
        return
    logging.basicConfig(level=logging.WARNING)
    redis_url = redis_server()
    print(
        f"alerting latency: a new issue's error in -> its webhook notification out, "
        f"{args.duration:g} s under {args.rate:,.0f} spans/s"
    )
    print(
        f"  otlp -> {'batch -> ' if args.batch else ''}errors (observers: [alerting]); rule new_issue, "
        f"group_wait 0s; group_check_interval {args.group_check_interval:g}s; 2 queue workers"
    )
    with postgres_server() as server, scratch_database(server) as dsn, redis_prefix(redis_url) as prefix:
        asyncio.run(measure(args, dsn, redis_url, prefix))


if __name__ == "__main__":
    main()
