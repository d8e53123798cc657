"""A real Prometheus server for the integration tests (Debian's ``prometheus`` package).

Each :class:`PrometheusServer` runs its own ``prometheus`` process on a free loopback port,
with a temporary config and data directory, scraping the given targets every second (with
``honor_labels``, so the ``job`` and ``instance`` an exporter sets are kept) and, on request,
accepting remote write on ``/api/v1/write``::

    with PrometheusServer(binary, tmp_path, targets=["127.0.0.1:9464"]) as prom:
        prom.wait_for_value('up{instance="127.0.0.1:9464"}', 1)
        rows = prom.query("my_metric_total")

The ``prometheus_binary`` fixture finds the binary (``APPGUARD_PROMETHEUS`` or ``PATH``). It
skips the tests only on a developer machine without it; under CI (``CI`` set) a missing
binary is an error, so the tests cannot silently not run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, DataPointFlags, ScopeMetrics

from collector.pdata import Payload, Signal
from tests.support.daemon import Daemon


def find_prometheus() -> str | None:
    """The prometheus binary: ``$APPGUARD_PROMETHEUS``, else ``prometheus`` on PATH."""
    configured = os.environ.get("APPGUARD_PROMETHEUS")
    if configured:
        return configured
    return shutil.which("prometheus")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Path of the prometheus binary; skip without one, unless under CI (then fail)."""
    binary = find_prometheus()
    if binary is None:
        message = "the prometheus binary is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Prometheus integration tests")
        pytest.skip(message)
    return binary


class PrometheusServer(Daemon):
    """One ``prometheus`` process with its own config, data directory and port."""

    name = "prometheus"

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        targets: Sequence[str] = (),
        scheme: str = "http",
        remote_write_receiver: bool = False,
        exemplars: bool = False,
        scrape_interval: str = "1s",
    ) -> None:
        super().__init__(binary, workdir)
        self.config_path = self.root / "prometheus.yml"
        self.targets = list(targets)
        self.remote_write_receiver = remote_write_receiver
        self.exemplars = exemplars
        lines = [
            "global:",
            f"  scrape_interval: {scrape_interval}",
            f"  scrape_timeout: {scrape_interval}",
            "scrape_configs:",
        ]
        if self.targets:
            lines += [
                "  - job_name: appguard",
                "    honor_labels: true",
                f"    scheme: {scheme}",
                "    static_configs:",
                f"      - targets: [{', '.join(json.dumps(t) for t in self.targets)}]",
            ]
        else:
            lines[-1] = "scrape_configs: []"
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def remote_write_url(self) -> str:
        """Where a remote write sender posts (with ``remote_write_receiver``)."""
        return f"{self.url}/api/v1/write"

    def arguments(self) -> list[str]:
        args = [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
        ]
        if self.remote_write_receiver:
            args.append("--web.enable-remote-write-receiver")
        if self.exemplars:
            args.append("--enable-feature=exemplar-storage")
        return args

    # ---- the HTTP API

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (AssertionError on an API error)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read()[:500]!r}") from None
        if body.get("status") != "success":
            raise AssertionError(f"{url}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the vector's elements (``metric`` labels, ``value`` as a float)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return [{"metric": row["metric"], "value": float(row["value"][1])} for row in data["result"]]

    def series(self, match: str, *, start: float | None = None) -> list[dict[str, str]]:
        """``/api/v1/series``: the label sets matching ``match`` (the last hour by default)."""
        begin = start if start is not None else time.time() - 3600
        return list(self.api("series", **{"match[]": match, "start": str(begin), "end": str(time.time() + 60)}))

    def exemplars_of(self, expr: str, *, start: float) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars`` from ``start`` to now."""
        return list(self.api("query_exemplars", query=expr, start=str(start), end=str(time.time() + 60)))

    def targets_health(self) -> list[dict[str, Any]]:
        """The scrape targets and their health (``up``, ``lastError``)."""
        return list(self.api("targets")["activeTargets"])

    def wait_for(
        self, expr: str, check: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Query ``expr`` until ``check(result)`` holds; AssertionError with the last result."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while True:
            rows = self.query(expr)
            if check(rows):
                return rows
            if time.monotonic() > deadline:
                targets = self.targets_health() if self.targets else []
                raise AssertionError(f"{expr}: got {rows} after {timeout}s; targets: {targets}\n{self.log()[-2000:]}")
            time.sleep(0.2)

    def wait_for_value(self, expr: str, value: float, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until ``expr`` gives exactly one element of ``value``; return it."""
        rows = self.wait_for(
            expr, lambda r: len(r) == 1 and abs(r[0]["value"] - value) <= 1e-9 * max(1.0, abs(value)), timeout
        )
        return rows[0]


# --------------------------------------------------------------------------------------------
# OTLP metrics for the tests, built field by field so that every case is explicit

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def set_attributes(target: Any, values: Mapping[str, Any]) -> None:
    """Append ``values`` to a repeated KeyValue field (str, bool, int, float or bytes values)."""
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, bytes):
            kv.value.bytes_value = value
        else:
            kv.value.string_value = str(value)


def scope_metrics(
    request: ExportMetricsServiceRequest,
    resource: Mapping[str, Any],
    *,
    scope: str = "io.appguard.test",
    version: str = "1.0.0",
    scope_attributes: Mapping[str, Any] | None = None,
) -> ScopeMetrics:
    """A new resource (with ``resource`` attributes) and scope in ``request``."""
    rm = request.resource_metrics.add()
    set_attributes(rm.resource.attributes, resource)
    sm = rm.scope_metrics.add()
    sm.scope.name = scope
    sm.scope.version = version
    set_attributes(sm.scope.attributes, scope_attributes or {})
    return sm


def add_metric(
    sm: ScopeMetrics,
    name: str,
    kind: str,
    *,
    unit: str = "",
    description: str = "",
    monotonic: bool = False,
    temporality: int = CUMULATIVE,
) -> Any:
    """A metric of ``kind`` (gauge, sum, histogram, exponential_histogram, summary); its data."""
    metric = sm.metrics.add(name=name, unit=unit, description=description)
    data = getattr(metric, kind)
    if kind == "sum":
        data.is_monotonic = monotonic
    if kind in ("sum", "histogram", "exponential_histogram"):
        data.aggregation_temporality = temporality
    # Touch the oneof so that a metric without points still has its type.
    metric.SetInParent()
    data.SetInParent()
    return data


def add_exemplar(point: Any, value: float, trace_id: bytes, span_id: bytes, time_ns: int, **attributes: Any) -> None:
    """An exemplar on a point, with ``attributes`` as its filtered attributes."""
    e = point.exemplars.add(as_double=value, time_unix_nano=time_ns, trace_id=trace_id, span_id=span_id)
    set_attributes(e.filtered_attributes, attributes)


def payload_of(request: ExportMetricsServiceRequest) -> Payload:
    """The request as a pipeline payload, parsed from its bytes as a receiver would."""
    return Payload.from_bytes(Signal.METRICS, request.SerializeToString())
