"""Self-telemetry: the collector's own metrics, named as the stock collector names them.

One :class:`Telemetry` per service holds a prometheus-client registry. Components get small
recorders bound to their id (:meth:`Telemetry.receiver`, :meth:`Telemetry.exporter`,
:meth:`Telemetry.processor`) so the hot path does one ``inc`` per request, never per item.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.pdata import Signal

_SIGNALS = tuple(Signal)


class ReceiverMetrics:
    """Counts what one receiver accepted and refused, per transport."""

    def __init__(self, telemetry: Telemetry, receiver: str, transport: str) -> None:
        self._accepted = {
            s: telemetry.receiver_accepted[s].labels(receiver=receiver, transport=transport) for s in _SIGNALS
        }
        self._refused = {
            s: telemetry.receiver_refused[s].labels(receiver=receiver, transport=transport) for s in _SIGNALS
        }
        self._failed = {
            s: telemetry.receiver_failed[s].labels(receiver=receiver, transport=transport) for s in _SIGNALS
        }

    def accepted(self, signal: Signal, n: int) -> None:
        """Items handed to the pipeline and acknowledged to the client."""
        self._accepted[signal].inc(n)

    def refused(self, signal: Signal, n: int) -> None:
        """Items the pipeline refused with a retryable error (the client keeps them)."""
        self._refused[signal].inc(n)

    def failed(self, signal: Signal, n: int) -> None:
        """Items refused permanently (bad data)."""
        self._failed[signal].inc(n)


class ExporterMetrics:
    """Counts what one exporter sent, failed to send and could not enqueue; queue gauges."""

    def __init__(self, telemetry: Telemetry, exporter: str) -> None:
        self._sent = {s: telemetry.exporter_sent[s].labels(exporter=exporter) for s in _SIGNALS}
        self._failed = {s: telemetry.exporter_send_failed[s].labels(exporter=exporter) for s in _SIGNALS}
        self._enqueue_failed = {s: telemetry.exporter_enqueue_failed[s].labels(exporter=exporter) for s in _SIGNALS}
        self.telemetry = telemetry
        self.exporter = exporter

    def sent(self, signal: Signal, n: int) -> None:
        """Items the backend accepted."""
        self._sent[signal].inc(n)

    def send_failed(self, signal: Signal, n: int) -> None:
        """Items given up on (permanent error or retries exhausted)."""
        self._failed[signal].inc(n)

    def enqueue_failed(self, signal: Signal, n: int) -> None:
        """Items refused because the sending queue was full."""
        self._enqueue_failed[signal].inc(n)

    def queue_gauges(self, signal: Signal, size: Callable[[], float], capacity: float) -> None:
        """Report a queue's current size (read at scrape time) and capacity."""
        labels = {"exporter": self.exporter, "data_type": signal.value}
        self.telemetry.exporter_queue_size.labels(**labels).set_function(size)
        self.telemetry.exporter_queue_capacity.labels(**labels).set(capacity)


class ProcessorMetrics:
    """Items into and out of one processor."""

    def __init__(self, telemetry: Telemetry, processor: str, signal: Signal) -> None:
        self._in = telemetry.processor_incoming.labels(processor=processor, otel_signal=signal.value)
        self._out = telemetry.processor_outgoing.labels(processor=processor, otel_signal=signal.value)

    def incoming(self, n: int) -> None:
        self._in.inc(n)

    def outgoing(self, n: int) -> None:
        self._out.inc(n)


class Telemetry:
    """The service's own metrics registry and the standard metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.time()
        r = self.registry
        rl, el = ["receiver", "transport"], ["exporter"]
        self.receiver_accepted = {
            s: Counter(f"otelcol_receiver_accepted_{s.item_name}", f"Number of {s.item_name} successfully pushed into the pipeline.", rl, registry=r)
            for s in _SIGNALS
        }
        self.receiver_refused = {
            s: Counter(f"otelcol_receiver_refused_{s.item_name}", f"Number of {s.item_name} that could not be pushed into the pipeline.", rl, registry=r)
            for s in _SIGNALS
        }
        self.receiver_failed = {
            s: Counter(f"otelcol_receiver_failed_{s.item_name}", f"Number of {s.item_name} that failed to be processed (bad data).", rl, registry=r)
            for s in _SIGNALS
        }
        self.exporter_sent = {
            s: Counter(f"otelcol_exporter_sent_{s.item_name}", f"Number of {s.item_name} successfully sent to destination.", el, registry=r)
            for s in _SIGNALS
        }
        self.exporter_send_failed = {
            s: Counter(f"otelcol_exporter_send_failed_{s.item_name}", f"Number of {s.item_name} in failed attempts to send to destination.", el, registry=r)
            for s in _SIGNALS
        }
        self.exporter_enqueue_failed = {
            s: Counter(f"otelcol_exporter_enqueue_failed_{s.item_name}", f"Number of {s.item_name} failed to be added to the sending queue.", el, registry=r)
            for s in _SIGNALS
        }
        self.exporter_queue_size = Gauge("otelcol_exporter_queue_size", "Current size of the retry queue (in batches).", ["exporter", "data_type"], registry=r)
        self.exporter_queue_capacity = Gauge("otelcol_exporter_queue_capacity", "Fixed capacity of the retry queue (in batches).", ["exporter", "data_type"], registry=r)
        pl = ["processor", "otel_signal"]
        self.processor_incoming = Counter("otelcol_processor_incoming_items", "Number of items passed to the processor.", pl, registry=r)
        self.processor_outgoing = Counter("otelcol_processor_outgoing_items", "Number of items emitted from the processor.", pl, registry=r)
        self.batch_send_size = Histogram(
            "otelcol_processor_batch_batch_send_size", "Number of units in the batch.", ["processor"], registry=r,
            buckets=(10, 25, 50, 75, 100, 250, 500, 750, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 20000, 30000, 50000, 100000),
        )
        self.batch_size_trigger = Counter("otelcol_processor_batch_batch_size_trigger_send", "Number of times the batch was sent due to a size trigger.", ["processor"], registry=r)
        self.batch_timeout_trigger = Counter("otelcol_processor_batch_timeout_trigger_send", "Number of times the batch was sent due to a timeout trigger.", ["processor"], registry=r)
        self.dropped = Counter("appguard_dropped_items", "Items accepted by a receiver and then given up on, by component and reason.", ["component", "otel_signal", "reason"], registry=r)
        Gauge("otelcol_process_uptime", "Uptime of the process (seconds).", registry=r).set_function(lambda: time.time() - self.started_at)
        Gauge("otelcol_process_memory_rss", "Total physical memory (resident set size) in bytes.", registry=r).set_function(process_rss_bytes)
        Gauge("otelcol_process_cpu_seconds", "Total CPU user and system time in seconds.", registry=r).set_function(lambda: sum(os.times()[:2]))

    def receiver(self, receiver: str, transport: str) -> ReceiverMetrics:
        return ReceiverMetrics(self, receiver, transport)

    def exporter(self, exporter: str) -> ExporterMetrics:
        return ExporterMetrics(self, exporter)

    def processor(self, processor: str, signal: Signal) -> ProcessorMetrics:
        return ProcessorMetrics(self, processor, signal)


def process_rss_bytes() -> float:
    """Current resident set size of this process, from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._RESERVED and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str = "info", encoding: str = "console") -> None:
    """Configure the ``appguard`` loggers: console text or JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if encoding == "json":
        handler.setFormatter(JsonFormatter())
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s\t%(name)s\t%(message)s"))
    root = logging.getLogger("appguard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
