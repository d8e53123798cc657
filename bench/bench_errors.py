"""Benchmark of the errors exporter: error events/s into PostgreSQL with grouping, and the
collector's throughput with and without the exporter on a stream where 5% of spans fail.

1. **Events into PostgreSQL** (in this process). OTLP requests whose spans all carry an
   ``exception`` event, made from the stack traces of ``tests/corpus`` (six languages, ~30
   issues, Zipf-like popularity), go through ``ErrorsExporter.push`` from several tasks at once:
   extraction, grouping, the event rows, and the group-commit writes. ``--unique`` is the share
   of events whose text was never seen before (other numbers in the message, every line number
   of the stack trace shifted, as ids vary and releases move code); the others repeat an earlier
   text exactly, which the grouper's cache answers. Printed: events/s, and CPU per event of this process and the server.
   A first line gives extraction and grouping alone, without the database.

2. **Collector throughput** (the CLI pinned to core 0, the load generator to core 1): OTLP/gRPC
   requests of 512 spans, 5% with an exception event (``bench.workload.traces_request``), each
   request with fresh trace ids so that no event is a duplicate, through

   - ``otlp -> nop``: the bare receiver, the ceiling;
   - ``otlp -> otlp``: forwarding to an OTLP sink (what a deployment without error tracking does);
   - ``otlp -> otlp + errors``: the same plus the errors exporter writing to PostgreSQL;
   - ``otlp -> otlp + errors + errormetrics``: plus the connector counting into a metrics pipeline.

   Printed: spans/s accepted while the exporters kept up (the receiver refuses when queues are
   full), error events stored per second, the collector's peak RSS.

Usage::

    python -m bench.bench_errors [--events 20000] [--unique 0.5] [--duration 10] [--skip-collector]

The server is APPGUARD_BENCH_POSTGRES_DSN, else APPGUARD_TEST_POSTGRES_DSN, else
postgresql://postgres@127.0.0.1:5432/test, else an embedded PostgreSQL in a temporary directory;
each part works in a scratch database dropped afterwards. Figures only; nothing fails on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_store import server_cpu
from bench.common import Collector, free_port, pinned
from bench.workload import traces_request
from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.pdata import Payload, Signal
from collector.telemetry import Telemetry
from exporters.errors.exporter import ErrorsExporter, ErrorsExporterConfig
from storage.embedded import EmbeddedPostgres

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "corpus"
_DIGITS = re.compile(r"\d+")
# Line numbers in any of the corpus' formats: "line 12", ":12" (file:line[:column]).
_LINE_NUMBERS = re.compile(r"(?<=line )\d+|(?<=:)\d+")

# --------------------------------------------------------------------------- part 1


def load_corpus() -> list[dict[str, str | None]]:
    """The corpus events: type, message, stack trace and language of each."""
    out: list[dict[str, str | None]] = []
    for issue_dir in sorted(p for p in CORPUS.glob("*/*") if p.is_dir()):
        for stem in sorted({p.stem for p in issue_dir.iterdir() if p.suffix in (".txt", ".json")}):
            txt, meta = issue_dir / f"{stem}.txt", issue_dir / f"{stem}.json"
            attrs = json.loads(meta.read_text()) if meta.exists() else {}
            out.append(
                {
                    "type": attrs.get("type"),
                    "message": attrs.get("message"),
                    "stacktrace": txt.read_text() if txt.exists() else None,
                    "language": attrs.get("language") or issue_dir.parent.name,
                }
            )
    return out


def _shifted(shift: int) -> Callable[[re.Match[str]], str]:
    """A replacement adding ``shift`` to the number matched."""
    return lambda match: str(int(match.group(0)) + shift)


def error_requests(count: int, per_request: int, unique: float, seed: int = 3) -> list[ExportTraceServiceRequest]:
    """``count`` spans with an exception each, ``per_request`` per request, one resource per language."""
    rng = random.Random(seed)
    corpus = load_corpus()
    weights = [1.0 / (rank + 1) for rank in range(len(corpus))]
    now = time.time_ns()
    requests: list[ExportTraceServiceRequest] = []
    serial = 0
    for start in range(0, count, per_request):
        request = ExportTraceServiceRequest()
        resources: dict[str, Any] = {}
        for _ in range(min(per_request, count - start)):
            entry = rng.choices(corpus, weights=weights)[0]
            language = entry["language"] or "python"
            scope = resources.get(language)
            if scope is None:
                rs = request.resource_spans.add()
                for key, value in (("service.name", f"shop-{language}"), ("telemetry.sdk.language", language), ("deployment.environment.name", "bench")):
                    kv = rs.resource.attributes.add()
                    kv.key, kv.value.string_value = key, value
                scope = resources[language] = rs.scope_spans.add()
            serial += 1
            span = scope.spans.add()
            span.trace_id = uuid.uuid4().bytes
            span.span_id = serial.to_bytes(8, "big")
            span.name = "GET /api/items"
            span.start_time_unix_nano = now + serial * 1000
            span.end_time_unix_nano = span.start_time_unix_nano + 5_000_000
            span.status.code = 2
            for key, value in (("user.id", f"user-{rng.randrange(500)}"), ("session.id", f"s-{rng.randrange(2000)}"), ("http.route", "/api/items")):
                kv = span.attributes.add()
                kv.key, kv.value.string_value = key, value
            event = span.events.add()
            event.name = "exception"
            event.time_unix_nano = span.end_time_unix_nano
            fresh = rng.random() < unique
            number = str(rng.randrange(10**9))
            shift = rng.randrange(1, 10**6)
            for key in ("type", "message", "stacktrace"):
                text = entry[key]
                if text is None:
                    continue
                if fresh and key == "message":
                    text = _DIGITS.sub(number, text)
                elif fresh and key == "stacktrace":
                    # Another release: the code moved, every line number differs.
                    text = _LINE_NUMBERS.sub(_shifted(shift), text)
                kv = event.attributes.add()
                kv.key, kv.value.string_value = f"exception.{key}", text
        requests.append(request)
    return requests


def exporter_for(dsn: str) -> ErrorsExporter:
    """An errors exporter pushing directly (no queue: the tasks of the benchmark are the workers)."""
    config = ErrorsExporterConfig.model_validate(
        {"endpoint": dsn, "pool_size": 4, "sending_queue": {"enabled": False}, "retry_on_failure": {"enabled": False}, "retention": {"max_age": 0}}
    )
    settings = CreateSettings(ComponentID("errors"), Kind.EXPORTER, Telemetry(), logging.getLogger("bench.errors"))
    return ErrorsExporter(settings, config, frozenset({Signal.TRACES}))


async def events_into_postgres(dsn: str, events: int, per_request: int, unique: float, concurrency: int) -> None:
    """Part 1: print events/s with grouping, with and without the database."""
    payloads = [Payload.from_bytes(Signal.TRACES, r.SerializeToString()) for r in error_requests(events, per_request, unique)]
    # Extraction and grouping alone, on a grouper of its own (an empty cache, as at start).
    alone = exporter_for(dsn)
    cpu = time.process_time()
    grouped = sum(len([alone.to_event(f) for f in alone.extractor.extract(p)]) for p in payloads)
    cpu = time.process_time() - cpu
    print(f"  extraction + grouping alone:     {grouped / cpu:9,.0f} events per CPU second ({cpu / grouped * 1e6:5.1f} us/event)")

    exporter = exporter_for(dsn)
    await exporter.start(Host())
    try:
        queue = list(payloads)

        async def worker() -> None:
            while queue:
                await exporter.push(queue.pop())

        server_before = server_cpu(dsn)
        cpu = time.process_time()
        wall = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        server_after = server_cpu(dsn)
    finally:
        await exporter.shutdown()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT count(*) FROM appguard.error_events")
        stored = (await cur.fetchone() or (0,))[0]
        cur = await conn.execute("SELECT count(*), sum(event_count) FROM appguard.issues")
        issues, counted = await cur.fetchone() or (0, 0)
    server = "n/a" if server_before is None or server_after is None else f"{(server_after - server_before) / events * 1e6:5.1f} us"
    print(
        f"  into PostgreSQL with grouping:   {events / wall:9,.0f} events/s ({stored} stored in {wall:.2f} s, "
        f"{issues} issues counting {counted}); CPU per event: this process {cpu / events * 1e6:5.1f} us, server {server}"
    )


# --------------------------------------------------------------------------- part 2


def stream_bodies(n: int) -> tuple[list[bytes], list[list[int]]]:
    """``n`` requests of 512 spans, 5% failing, timed now; and where each span's trace id sits."""
    now = time.time_ns()
    bodies: list[bytes] = []
    offsets: list[list[int]] = []
    for seed in range(n):
        request = traces_request(512, exception_ratio=0.05, seed=seed + 1)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    length = span.end_time_unix_nano - span.start_time_unix_nano
                    span.start_time_unix_nano = now - 60_000_000_000 + (span.start_time_unix_nano % 10**9)
                    span.end_time_unix_nano = span.start_time_unix_nano + length
                    for event in span.events:
                        event.time_unix_nano = span.end_time_unix_nano
        raw = request.SerializeToString()
        where: list[int] = []
        pos = 0
        for span in request.resource_spans[0].scope_spans[0].spans:
            # trace_id is field 1 of a Span: tag 0x0a, length 16, then the id.
            pos = raw.index(b"\x0a\x10" + span.trace_id, pos) + 2
            where.append(pos)
            pos += 16
        bodies.append(raw)
        offsets.append(where)
    return bodies, offsets


async def loadgen(target: str, concurrency: int, duration: float) -> dict[str, float]:
    """Send the 5% stream with fresh trace ids in every request; runs in its own process."""
    import grpc

    bodies, offsets = stream_bodies(8)
    counter = int.from_bytes(os.urandom(4), "big") << 32
    sent = refused = 0
    method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    async with grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        deadline = time.monotonic() + duration

        async def worker(k: int) -> None:
            nonlocal sent, refused, counter
            i = k
            while time.monotonic() < deadline:
                body = bytearray(bodies[i % len(bodies)])
                counter += 1
                salt = counter.to_bytes(8, "big")
                for at in offsets[i % len(offsets)]:
                    body[at : at + 8] = salt
                try:
                    await call(bytes(body), timeout=10)
                    sent += 1
                except grpc.aio.AioRpcError:
                    refused += 1
                    await asyncio.sleep(0.01)
                i += 1

        start = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.monotonic() - start
    return {"requests": sent, "refused": refused, "seconds": elapsed}


def labelled_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The collector's self-metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def collector_config(scenario: str, grpc_port: int, sink_port: int, dsn: str) -> str:
    exporters = {
        "nop": "  nop:\n",
        "otlp": f"  otlp:\n    endpoint: 127.0.0.1:{sink_port}\n    tls:\n      insecure: true\n    compression: none\n",
        "errors": f"  errors:\n    endpoint: '{dsn}'\n    retention:\n      max_age: 0\n",
    }
    names = {"nop": ["nop"], "otlp": ["otlp"], "errors": ["otlp", "errors"], "errormetrics": ["otlp", "errors"]}[scenario]
    text = (
        f"receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n        max_recv_msg_size_mib: 64\n"
        "exporters:\n" + "".join(exporters[n] for n in names)
    )
    pipeline_exporters = list(names)
    if scenario == "errormetrics":
        text += "  nop:\nconnectors:\n  errormetrics:\n"
        pipeline_exporters.append("errormetrics")
    text += f"service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [{', '.join(pipeline_exporters)}]\n"
    if scenario == "errormetrics":
        text += "    metrics:\n      receivers: [errormetrics]\n      exporters: [nop]\n"
    return text


def measure(scenario: str, dsn: str, duration: float, concurrency: int) -> dict[str, float]:
    grpc_port, sink_port = free_port(), free_port()
    sink = None
    if scenario != "nop":
        sink = subprocess.Popen(pinned([sys.executable, "-m", "bench.sink", "--port", str(sink_port)], 1), stdout=subprocess.PIPE, text=True)
    col = Collector(collector_config(scenario, grpc_port, sink_port, dsn))
    try:
        target = f"127.0.0.1:{grpc_port}"
        run_loadgen(target, concurrency, 2.0)  # warm-up
        accepted = "otelcol_receiver_accepted_spans_total"
        before = sum(v for (n, _), v in labelled_metrics(col.metrics_port).items() if n == accepted)
        events_before = stored_events(dsn) if scenario in ("errors", "errormetrics") else 0
        t0 = time.monotonic()
        result = run_loadgen(target, concurrency, duration)
        # Wait for the queues to drain: what was accepted in the window is then exported.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = labelled_metrics(col.metrics_port)
            queued = sum(v for (n, _), v in m.items() if n == "otelcol_exporter_queue_size")
            if queued == 0:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        after = sum(v for (n, _), v in labelled_metrics(col.metrics_port).items() if n == accepted)
        events = (stored_events(dsn) - events_before) if scenario in ("errors", "errormetrics") else 0
        return {
            "spans_per_s": (after - before) / elapsed,
            "events_per_s": events / elapsed,
            "refused": result["refused"],
            "peak_rss_mib": col.peak_rss_mib(),
        }
    finally:
        col.stop()
        if sink is not None:
            sink.terminate()
            sink.wait(10)


def run_loadgen(target: str, concurrency: int, duration: float) -> dict[str, float]:
    cmd = pinned(
        [sys.executable, "-m", "bench.bench_errors", "--loadgen", target, "--concurrency", str(concurrency), "--duration", str(duration)], 1
    )
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def stored_events(dsn: str) -> int:
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM appguard.error_events").fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------- main


@contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    """A database of its own on ``dsn``'s server, dropped afterwards."""
    name = f"appguard_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def postgres_server() -> Iterator[str]:
    """The configured server, else an embedded one for the run."""
    dsn = os.environ.get(
        "APPGUARD_BENCH_POSTGRES_DSN",
        os.environ.get("APPGUARD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        data_dir = tempfile.mkdtemp(prefix="appguard-bench-pg-")
        embedded = EmbeddedPostgres(data_dir, database="bench")
        dsn = embedded.start()
        print(f"no server at the configured DSN; using an embedded PostgreSQL ({dsn})")
        try:
            yield dsn
        finally:
            embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    yield dsn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="error events for part 1")
    parser.add_argument("--per-request", type=int, default=200, help="error events per request in part 1")
    parser.add_argument("--unique", type=float, default=0.5, help="share of never-seen-before texts in part 1 (0 and 1 are run too)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per collector scenario")
    parser.add_argument("--skip-collector", action="store_true")
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--loadgen", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(loadgen(args.loadgen, args.concurrency, args.duration))))
        return
    logging.basicConfig(level=logging.WARNING)
    with postgres_server() as server:
        if not args.skip_store:
            for unique in sorted({0.0, args.unique, 1.0}):
                print(f"error events into PostgreSQL: {args.events} events, {args.per_request} per request, {unique:.0%} unique texts, {args.concurrency} tasks")
                with scratch_database(server) as dsn:
                    asyncio.run(events_into_postgres(dsn, args.events, args.per_request, unique, args.concurrency))
        if not args.skip_collector:
            print(f"\ncollector, OTLP/gRPC, 512 spans per request, 5% with an exception, {args.duration:.0f} s per scenario")
            print(f"  {'scenario':<40} {'spans/s':>10} {'events/s':>9} {'refused':>8} {'peak RSS MiB':>13}")
            for scenario, label in (
                ("nop", "otlp -> nop (ceiling)"),
                ("otlp", "otlp -> otlp"),
                ("errors", "otlp -> otlp + errors"),
                ("errormetrics", "otlp -> otlp + errors + errormetrics"),
            ):
                with scratch_database(server) as dsn:
                    r = measure(scenario, dsn, args.duration, args.concurrency)
                print(f"  {label:<40} {r['spans_per_s']:>10,.0f} {r['events_per_s']:>9,.0f} {r['refused']:>8.0f} {r['peak_rss_mib']:>13.1f}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
