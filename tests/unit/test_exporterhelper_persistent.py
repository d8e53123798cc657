"""The persistent sending queue and the ``file_storage`` extension it writes through."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.config import format_validation_error
from collector.consumer import RetryableError
from collector.exporterhelper import ExportError
from collector.persistent_queue import CorruptEntry, decode_entry, encode_entry
from collector.telemetry import Telemetry
from extensions.file_storage import FileStorage, FileStorageConfig, sanitize
from tests.unit.test_exporterhelper import ScriptedExporter, make, metric, span_names, traces, until

STORAGE = ComponentID("file_storage")


async def storage(tmp_path: Path, **raw: object) -> FileStorage:
    config = FileStorageConfig.model_validate({"directory": str(tmp_path), **raw})
    ext = FileStorage(CreateSettings(STORAGE, Kind.EXTENSION, Telemetry()), config)
    await ext.start(Host())
    return ext


def queue_dir(tmp_path: Path) -> Path:
    return tmp_path / "exporter_otlp_test_traces"


def persistent(tel: Telemetry, **queue: object) -> ScriptedExporter:
    return make(tel, {"sending_queue": {"storage": "file_storage", "num_consumers": 1, **queue}})


# ---- the extension


def test_file_storage_defaults_match_the_stock_extension(tmp_path: Path) -> None:
    cfg = FileStorageConfig.model_validate({"directory": str(tmp_path)})
    assert (cfg.timeout, cfg.fsync, cfg.create_directory, cfg.directory_permissions) == (1.0, False, False, "0750")
    c = cfg.compaction
    assert (c.on_start, c.on_rebound, c.max_transaction_size, c.rebound_needed_threshold_mib) == (False, False, 65536, 100)
    assert (c.rebound_trigger_threshold_mib, c.check_interval, c.cleanup_on_start) == (10, 5.0, False)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"directory": "/nonexistent/appguard-test"}, "does not exist"),
        ({"directory_permissions": "0999"}, "octal"),
        ({"compaction": {"on_rebound": True, "check_interval": 0}}, "check_interval"),
        ({"size": 1}, "unknown key"),
    ],
)
def test_file_storage_config_errors(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        FileStorageConfig.model_validate(raw)
    assert any(fragment in m for _, m in format_validation_error("extensions.file_storage", info.value))


async def test_default_directory_is_created_under_the_data_dir(tmp_path: Path) -> None:
    ext = FileStorage(CreateSettings(STORAGE, Kind.EXTENSION, Telemetry(), data_dir=str(tmp_path)), FileStorageConfig())
    await ext.start(Host())
    assert (tmp_path / "file_storage").is_dir()


async def test_create_directory_uses_directory_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    old = os.umask(0)
    try:
        ext = await storage(target, create_directory=True, directory_permissions="0700")
    finally:
        os.umask(old)
    assert target.is_dir() and (target.stat().st_mode & 0o777) == 0o700
    await ext.shutdown()


async def test_client_writes_atomically_and_cleans_interrupted_writes(tmp_path: Path) -> None:
    ext = await storage(tmp_path)
    client = await ext.client("exporter_otlp_x/y_traces")
    assert client.directory.name == "exporter_otlp_x~002Fy_traces" == sanitize("exporter_otlp_x/y_traces")
    client.write("a", b"1")
    client.write("b", b"22")
    client.delete("a")
    client.delete("missing")
    assert client.names() == ["b"] and client.read("b") == b"22"
    (client.directory / ".c.tmp").write_bytes(b"half")
    await ext.shutdown()
    ext = await storage(tmp_path)
    again = await ext.client("exporter_otlp_x/y_traces")
    assert not (again.directory / ".c.tmp").exists()
    assert again.names() == ["b"]
    await ext.shutdown()


async def test_a_locked_directory_is_refused_after_timeout(tmp_path: Path) -> None:
    first = await storage(tmp_path)
    await first.client("owner")
    second = await storage(tmp_path, timeout="100ms")
    with pytest.raises(ValueError, match="locked"):
        await second.client("owner")
    await first.shutdown()
    await second.client("owner")  # free once the holder is gone
    await second.shutdown()


# ---- the queue file format


def test_entry_round_trip_and_damage_detection() -> None:
    payload = traces(3)
    payload.metadata = {"x-tenant": ("a", "b")}
    back = decode_entry(encode_entry(payload))
    assert back.to_bytes() == payload.to_bytes()
    assert (back.items, back.signal, back.metadata) == (3, payload.signal, {"x-tenant": ("a", "b")})
    data = bytearray(encode_entry(payload))
    data[-1] ^= 0xFF
    with pytest.raises(CorruptEntry, match="checksum"):
        decode_entry(bytes(data))
    with pytest.raises(CorruptEntry):
        decode_entry(b"garbage")


# ---- the exporter with a persistent queue


async def test_request_is_on_disk_before_consume_returns_and_deleted_after_export(tmp_path: Path) -> None:
    ext = await storage(tmp_path)
    exp = persistent(Telemetry())
    exp.gate = asyncio.Event()
    await exp.start(Host({STORAGE: ext}))
    payload = traces(2)
    await exp.consume(payload)
    files = [p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"]
    assert len(files) == 1 and decode_entry(files[0].read_bytes()).to_bytes() == payload.to_bytes()
    exp.gate.set()
    await until(lambda: exp.delivered)
    await until(lambda: not [p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"])
    await exp.shutdown()
    await ext.shutdown()


async def test_queue_survives_a_restart_of_the_exporter(tmp_path: Path) -> None:
    tel = Telemetry()
    ext = await storage(tmp_path)
    down = persistent(tel)
    down.script = [ExportError("backend down", retryable=True) for _ in range(10_000)]
    await down.start(Host({STORAGE: ext}))
    sent = [traces(2, service=f"r{i}") for i in range(3)]
    for p in sent:
        await down.consume(p)
    await down.shutdown()
    await ext.shutdown()
    assert down.delivered == []
    assert len([p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"]) == 3

    ext = await storage(tmp_path)
    up = persistent(tel)
    await up.start(Host({STORAGE: ext}))
    await until(lambda: len(up.delivered) == 3)
    await up.shutdown()
    await ext.shutdown()
    assert [p.to_bytes() for p in up.delivered] == [p.to_bytes() for p in sent]
    assert span_names(up.delivered) == span_names(sent)
    assert not [p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"]


async def test_persistent_queue_full_is_refused_with_throttling(tmp_path: Path) -> None:
    tel = Telemetry()
    ext = await storage(tmp_path)
    exp = persistent(tel, queue_size=2)
    exp.gate = asyncio.Event()
    await exp.start(Host({STORAGE: ext}))
    await exp.consume(traces(1))
    await exp.consume(traces(1))
    with pytest.raises(RetryableError) as info:
        await exp.consume(traces(1))
    assert info.value.throttled
    assert metric(tel, "otelcol_exporter_enqueue_failed_spans_total") == 1
    exp.gate.set()
    await until(lambda: len(exp.delivered) == 2)
    await exp.shutdown()
    await ext.shutdown()


async def test_damaged_queue_file_is_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tel = Telemetry()
    d = queue_dir(tmp_path)
    d.mkdir()
    (d / f"{0:020d}.4.100.req").write_bytes(b"AGQ1 not really")
    (d / f"{1:020d}.1.10.req").write_bytes(encode_entry(traces(1, service="ok")))
    ext = await storage(tmp_path)
    exp = persistent(tel)
    with caplog.at_level(logging.ERROR, logger="appguard.test"):
        await exp.start(Host({STORAGE: ext}))
        await until(lambda: exp.delivered)
    await exp.shutdown()
    await ext.shutdown()
    assert span_names(exp.delivered) == ["ok-0-0"]
    assert metric(tel, "otelcol_exporter_send_failed_spans_total") == 4
    assert any("damaged" in r.getMessage() for r in caplog.records)
    assert not [p for p in d.iterdir() if p.suffix == ".req"]


async def test_storage_must_name_an_enabled_storage_extension(tmp_path: Path) -> None:
    exp = persistent(Telemetry())
    with pytest.raises(ValueError, match="not an enabled extension"):
        await exp.start(Host())
    exp2 = persistent(Telemetry())
    with pytest.raises(ValueError, match="not a storage extension"):
        await exp2.start(Host({STORAGE: make(Telemetry())}))


async def test_a_caller_cancelled_while_persisting_leaves_disk_and_queue_in_step(tmp_path: Path) -> None:
    tel = Telemetry()
    ext = await storage(tmp_path)
    exp = persistent(tel)
    exp.gate = asyncio.Event()
    await exp.start(Host({STORAGE: ext}))
    task = asyncio.create_task(exp.consume(traces(1)))
    await asyncio.sleep(0)  # the write has started in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len([p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"]) == 1
    exp.gate.set()
    await until(lambda: len(exp.delivered) == 1)
    await until(lambda: not [p for p in queue_dir(tmp_path).iterdir() if p.suffix == ".req"])
    await exp.shutdown()
    await ext.shutdown()
