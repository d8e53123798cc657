"""Collector throughput: OTLP/gRPC in, through a pipeline, out; beside the bare receiver.

For each signal it measures two configs on one core (the collector pinned to core 0, the load
generator and the sink on core 1):
  ceiling:  otlp receiver -> nop exporter (the receiver parses, validates, counts)
  pipeline: otlp receiver -> [processors] -> otlp exporter -> sink process
and prints items/s for each, the collector's CPU share, items per CPU-second, peak RSS and the
ratio to the ceiling. With --processors it also measures that chain in front of the exporter.

    python -m bench.bench_pipeline [--duration 10] [--signals traces,logs,metrics]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import Collector, free_port, loadgen, pinned

_ITEM_METRIC = {"traces": "spans", "logs": "log_records", "metrics": "metric_points"}


def config(signal: str, grpc_port: int, exporter: str, processors: list[str], sink_port: int, consumers: int = 8) -> str:
    procs = {
        "memory_limiter": "  memory_limiter:\n    check_interval: 1s\n    limit_mib: 4000\n",
        "resource": "  resource:\n    attributes:\n      - key: deployment.environment.name\n        value: bench\n        action: upsert\n",
        "batch": "  batch:\n",
    }
    proc_section = "processors:\n" + "".join(procs[p] for p in processors) if processors else ""
    exporters = {
        "nop": "  nop:\n",
        "otlp": (
            f"  otlp:\n    endpoint: 127.0.0.1:{sink_port}\n    tls:\n      insecure: true\n"
            "    compression: none\n    sending_queue:\n"
            + (f"      num_consumers: {consumers}\n" if consumers else "      enabled: false\n")
        ),
        "otlp_batched": (
            f"  otlp:\n    endpoint: 127.0.0.1:{sink_port}\n    tls:\n      insecure: true\n"
            "    compression: none\n    sending_queue:\n      num_consumers: 8\n"
            "      batch:\n        min_size: 4096\n        max_size: 16384\n        flush_timeout: 50ms\n"
        ),
    }
    return (
        f"receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
        f"        max_recv_msg_size_mib: 64\n{proc_section}"
        f"exporters:\n{exporters[exporter]}"
        f"service:\n  pipelines:\n    {signal}:\n      receivers: [otlp]\n"
        f"      processors: [{', '.join(processors)}]\n      exporters: [{exporter.split('_')[0]}]\n"
    )


def measure(
    signal: str, exporter: str, processors: list[str], duration: float, concurrency: int, items: int, consumers: int = 8
) -> dict[str, float]:
    grpc_port, sink_port = free_port(), free_port()
    sink = None
    if exporter.startswith("otlp"):
        sink = subprocess.Popen(pinned([sys.executable, "-m", "bench.sink", "--port", str(sink_port)], 1), stdout=subprocess.PIPE, text=True)
    col = Collector(config(signal, grpc_port, exporter, processors, sink_port, consumers))
    try:
        target = f"127.0.0.1:{grpc_port}"
        loadgen(target, signal, items, concurrency, 2.0)  # warm-up
        name = f"otelcol_exporter_sent_{_ITEM_METRIC[signal]}_total"
        before = col.metrics().get(name, 0.0)
        cpu0 = col.cpu_seconds()
        t0 = time.monotonic()
        lg = loadgen(target, signal, items, concurrency, duration)
        # Let the queue drain: count what left the exporter during the window plus the drain.
        deadline = time.monotonic() + 10
        accepted_name = f"otelcol_receiver_accepted_{_ITEM_METRIC[signal]}_total"
        while time.monotonic() < deadline:
            m = col.metrics()
            if m.get(name, 0.0) >= m.get(accepted_name, 0.0):
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        after = col.metrics().get(name, 0.0)
        cpu = col.cpu_seconds() - cpu0
        return {
            "items_per_s": (after - before) / elapsed,
            "cpu": cpu / elapsed,
            "items_per_cpu_s": (after - before) / cpu if cpu else 0.0,
            "peak_rss_mib": col.peak_rss_mib(),
            "refused_requests": lg["refused"],
        }
    finally:
        col.stop()
        if sink is not None:
            sink.terminate()
            sink.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--items", type=int, default=512, help="items per request")
    p.add_argument("--signals", default="traces,logs,metrics")
    p.add_argument("--processors", default="", help="also measure this chain, e.g. memory_limiter,resource,batch")
    p.add_argument("--exporter-batch", action="store_true", help="turn on the exporter's sending_queue.batch")
    p.add_argument(
        "--num-consumers", type=int, default=8, help="the exporter's sending_queue.num_consumers; 0 turns the queue off"
    )
    a = p.parse_args()
    procs = [x for x in a.processors.split(",") if x]
    print(f"{'signal':<8} {'scenario':<40} {'items/s':>12} {'collector CPU':>13} {'items/CPU-s':>12} {'peak RSS MiB':>13} {'ratio':>6}")
    for signal in a.signals.split(","):
        ceiling = measure(signal, "nop", [], a.duration, a.concurrency, a.items)
        exporter = "otlp_batched" if a.exporter_batch else "otlp"
        piped = measure(signal, exporter, [], a.duration, a.concurrency, a.items, a.num_consumers)
        rows = [
            ("otlp -> nop (bare receiver, ceiling)", ceiling, ""),
            (f"otlp -> otlp -> sink ({a.num_consumers or 'no'} queue consumers)", piped, f"{piped['items_per_s'] / ceiling['items_per_s']:.2f}"),
        ]
        if procs:
            chain = measure(signal, exporter, procs, a.duration, a.concurrency, a.items, a.num_consumers)
            label = "otlp -> " + " -> ".join(procs) + " -> otlp"
            rows.append((label, chain, f"{chain['items_per_s'] / ceiling['items_per_s']:.2f}"))
        for scenario, r, shown in rows:
            print(
                f"{signal:<8} {scenario:<40} {r['items_per_s']:>12,.0f} {r['cpu'] * 100:>12.0f}% "
                f"{r['items_per_cpu_s']:>12,.0f} {r['peak_rss_mib']:>13.1f} {shown:>6}"
            )
        if procs:
            cost = 1 - chain["items_per_s"] / piped["items_per_s"]
            print(f"{signal:<8} the processor chain costs {cost:.0%} of the otlp -> otlp throughput")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
