"""What the alerting end-to-end tests share: the collector's config and the rules file they
write, the application that fails (through the real OpenTelemetry SDK), and waiting.

A test writes its rules file with :func:`write_rules` (channels from :func:`email_channel`,
:func:`slack_channel`, :func:`alertmanager_channel`), builds the collector's YAML with
:func:`collector_config` and runs it with :func:`collector` (or
:class:`~tests.support.process.CollectorProcess`); :func:`fail` then sends errors the way an
instrumented application does, and :func:`until` waits for what the user would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from alerting.queue import NotificationQueue
from tests.e2e.sdk import fail
from tests.e2e.stack import until
from tests.support.alertmanager import AlertmanagerServer
from tests.support.process import CollectorProcess
from tests.support.slack_server import SlackServer
from tests.support.smtp import SmtpServer

__all__ = ["fail", "until"]

#: Grouping for tests: a new group goes out 200 ms after its first alert, never repeated.
QUICK_GROUPING: Mapping[str, str] = {"group_wait": "200ms", "group_interval": "1s", "repeat_interval": "1h"}

#: The notification queue of the end-to-end tests: quick polling and retries.
QUICK_QUEUE: Mapping[str, Any] = {
    "poll_interval": "100ms",
    "retry": {"initial_interval": "100ms", "max_interval": "1s"},
}

#: Where the ``alerting`` extension keeps its keys under the ``redis.key_prefix`` of its config.
ALERTING_KEYS = "alerting:"


# --------------------------------------------------------------------------- rules file


def email_channel(smtp: SmtpServer, *, to: str = "oncall@example.com", **extra: Any) -> dict[str, Any]:
    """An ``email`` channel to ``to`` through the test's SMTP server (plain SMTP)."""
    return {"type": "email", "to": [to], "from": "appguard@example.com", "host": smtp.host, "port": smtp.port, **extra}


def slack_channel(slack: SlackServer) -> dict[str, Any]:
    """A ``slack`` channel posting to the test's Slack webhook."""
    return {"type": "slack", "webhook_url": slack.webhook_url}


def alertmanager_channel(alertmanager: AlertmanagerServer) -> dict[str, Any]:
    """An ``alertmanager`` channel to the test's Alertmanager."""
    return {"type": "alertmanager", "url": alertmanager.url}


def write_rules(
    path: Path,
    channels: Mapping[str, Mapping[str, Any]],
    rules: Sequence[Mapping[str, Any]],
    *,
    grouping: Mapping[str, Any] = QUICK_GROUPING,
) -> Path:
    """Write a rules file of ``channels`` (name -> settings) and ``rules``; a rule without a
    ``grouping`` of its own gets ``grouping``. Returns ``path``."""
    tree = {
        "channels": {name: dict(spec) for name, spec in channels.items()},
        "rules": [{**rule, "grouping": dict(rule.get("grouping", grouping))} for rule in rules],
    }
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


# --------------------------------------------------------------------------- collector


def collector_config(
    *,
    grpc_port: int,
    dsn: str,
    redis_url: str,
    redis_prefix: str,
    rules_file: Path,
    metrics_port: int | None = None,
    prometheus_url: str | None = None,
    evaluation_interval: str = "500ms",
    queue: Mapping[str, Any] = QUICK_QUEUE,
) -> str:
    """The collector's YAML: OTLP/gRPC on ``grpc_port`` -> the ``errors`` exporter (observed by
    the ``alerting`` extension) on ``dsn``; the extension with ``rules_file``, its queue in
    ``redis_url`` under ``redis_prefix`` and the ``queue`` settings. With ``metrics_port`` the
    traces also go through the ``errormetrics`` connector to a ``prometheus`` exporter there;
    ``prometheus_url`` is the Prometheus that metric rules query."""
    alerting: dict[str, Any] = {
        "postgres": {"dsn": dsn},
        "redis": {"url": redis_url, "key_prefix": redis_prefix},
        "rules_file": str(rules_file),
        "dashboard_url": "http://127.0.0.1:8080",
        "evaluation_interval": evaluation_interval,
        "group_check_interval": "100ms",
        "queue": dict(queue),
    }
    if prometheus_url is not None:
        alerting["prometheus"] = {"endpoint": prometheus_url}
    config: dict[str, Any] = {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
        "exporters": {"errors": {"endpoint": dsn, "observers": ["alerting"]}},
        "extensions": {"alerting": alerting},
        "service": {
            "extensions": ["alerting"],
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["errors"]}},
        },
    }
    if metrics_port is not None:
        config["exporters"]["prometheus"] = {"endpoint": f"127.0.0.1:{metrics_port}"}
        config["connectors"] = {"errormetrics": {"metrics_flush_interval": "200ms"}}
        pipelines = config["service"]["pipelines"]
        pipelines["traces"]["exporters"].append("errormetrics")
        pipelines["metrics"] = {"receivers": ["errormetrics"], "exporters": ["prometheus"]}
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.asynccontextmanager
async def collectors(configs: Sequence[str], workdir: Path) -> AsyncIterator[list[CollectorProcess]]:
    """The CLI running each of ``configs`` (one process each, in a folder of its own under
    ``workdir``), all started at once and ready; stopped on leaving, where each exit must be
    clean, except those the test killed (:meth:`CollectorProcess.kill`). The blocking parts
    run in threads, so servers on the test's event loop keep answering meanwhile."""
    procs: list[CollectorProcess] = []
    try:
        for n, config in enumerate(configs):
            folder = workdir / f"replica-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            proc = CollectorProcess(config, folder)
            await asyncio.to_thread(proc.start)
            procs.append(proc)
        await asyncio.gather(*(asyncio.to_thread(proc.wait_ready) for proc in procs))
        yield procs
    finally:
        alive = [proc for proc in procs if proc.proc is not None and proc.proc.returncode != -signal.SIGKILL]
        codes = await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in alive))
        for proc, code in zip(alive, codes, strict=True):
            assert code == 0, proc.output()


@contextlib.asynccontextmanager
async def collector(config: str, workdir: Path) -> AsyncIterator[CollectorProcess]:
    """:func:`collectors` with one config."""
    async with collectors([config], workdir) as procs:
        yield procs[0]


@contextlib.asynccontextmanager
async def notification_queue(redis_url: str, redis_prefix: str) -> AsyncIterator[NotificationQueue]:
    """The notification queue of collectors configured with ``redis_prefix``, to look at its
    sizes (:meth:`NotificationQueue.stats`) and dead letters as the API does."""
    queue = NotificationQueue.from_url(redis_url, prefix=redis_prefix + ALERTING_KEYS)
    try:
        yield queue
    finally:
        await queue.close()


# --------------------------------------------------------------------------- the application


def total_of_empty_cart() -> float:
    """Fails with ZeroDivisionError."""
    return sum([]) / len([])


def charge(amount: str) -> int:
    """Fails with ValueError unless ``amount`` is a number."""
    return int(amount)


def find_coupon(code: str) -> str:
    """Fails with KeyError for every code."""
    coupons: dict[str, str] = {}
    return coupons[code]


# --------------------------------------------------------------------------- waiting


def named(alertmanager: AlertmanagerServer, name: str) -> list[dict[str, Any]]:
    """The active alerts of that name in Alertmanager."""
    return [a for a in alertmanager.alerts() if a["labels"].get("alertname") == name]
