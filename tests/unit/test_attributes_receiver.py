"""``from_context`` end to end: the SDK's OTLP exporters send to the real OTLP receiver over
loopback, with a header; the attributes processor fills attributes from the request's
metadata and the client's address."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.component import ComponentID, CreateSettings, Host, Kind
from collector.pdata import Signal
from collector.telemetry import Telemetry
from processors import attributes
from receivers import otlp
from tests.support.components import Sink
from tests.unit.test_attributes import attrs_dict, settings


def _spans() -> Any:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "web"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("GET /", attributes={"tenant": "from-sdk"}):
        pass
    return memory.get_finished_spans()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_metadata_and_client_address_from_a_real_client(protocol: str) -> None:
    sink = Sink()
    config = attributes.AttributesConfig.model_validate(
        {
            "actions": [
                {"key": "tenant", "from_context": "metadata.x-tenant", "action": "upsert"},
                {"key": "client.address", "from_context": "client.address", "action": "insert"},
                {"key": "missing", "from_context": "metadata.x-not-sent", "default_value": "none", "action": "insert"},
            ]
        }
    )
    proc = attributes.factory.create(settings=settings("attributes"), config=config, signal=Signal.TRACES, next_consumer=sink)
    receiver_config = otlp.factory.config_class.model_validate(
        {"protocols": {protocol: {"endpoint": "127.0.0.1:0", "include_metadata": True}}}
    )
    receiver = otlp.factory.create(
        settings=CreateSettings(ComponentID("otlp"), Kind.RECEIVER, Telemetry()),
        config=receiver_config,
        consumers={Signal.TRACES: proc},
    )
    await receiver.start(Host())
    try:
        if protocol == "grpc":
            exporter: Any = GrpcSpanExporter(
                endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True, headers=(("x-tenant", "acme"),)
            )
        else:
            exporter = HttpSpanExporter(
                endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces", headers={"X-Tenant": "acme"}
            )
        result = await asyncio.to_thread(exporter.export, _spans())
        assert result.name == "SUCCESS"
        exporter.shutdown()
    finally:
        await receiver.shutdown()
    assert len(sink.got) == 1
    span = sink.got[0].message.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[union-attr]
    assert attrs_dict(span.attributes) == {"tenant": "acme", "client.address": "127.0.0.1", "missing": "none"}
