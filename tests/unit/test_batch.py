"""The batch processor: config as the stock README writes it, batching of SDK-made OTLP data,
and failures downstream reaching every caller whose data was in the batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import PipelineID, parse_config
from collector.confmap import ConfigError, load_sources
from collector.consumer import ConsumeError, PermanentError, RetryableError
from collector.graph import build_graph
from collector.pdata import Payload, Signal
from collector.registry import Registry
from collector.split import resources_of
from collector.telemetry import Telemetry
from processors.batch import BatchConfig, BatchProcessor
from processors.batch import factory as batch_factory
from tests.support.components import Sink, factories
from tests.unit.test_split import LAYOUT, flatten, log_request, metric_request, trace_request

TESTDATA = Path(__file__).parent / "testdata"


class FailingSink:
    """A next consumer that refuses everything with the error it was given."""

    mutates_data = False

    def __init__(self, error: ConsumeError) -> None:
        self.error = error
        self.calls = 0

    async def consume(self, payload: Payload) -> None:
        self.calls += 1
        raise self.error


class MutatingSink(Sink):
    """Changes what it gets, as a processor that edits resources would."""

    mutates_data = True

    async def consume(self, payload: Payload) -> None:
        payload.mutable().resource_spans[0].resource.attributes.add(key="touched")  # type: ignore[union-attr]
        await super().consume(payload)


def make(next_consumer: object, telemetry: Telemetry | None = None, **config: object) -> BatchProcessor:
    settings = CreateSettings(ComponentID("batch"), Kind.PROCESSOR, telemetry or Telemetry())
    return BatchProcessor(settings, BatchConfig(**config), Signal.TRACES, next_consumer)  # type: ignore[arg-type]


def sample(bp: BatchProcessor, name: str, **labels: str) -> float:
    value = bp.settings.telemetry.registry.get_sample_value(name, labels or {"processor": "batch"})
    return value or 0.0


def traces(layout: dict[str, dict[str, int]], tag: str = "", **kwargs: object) -> Payload:
    """A payload as the OTLP receiver makes it: parsed from the bytes, bytes kept."""
    return Payload.from_bytes(Signal.TRACES, trace_request(layout, tag).SerializeToString(), **kwargs)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def registry() -> Registry:
    return Registry([*factories(), batch_factory])


def test_config_from_yaml() -> None:
    cfg = parse_config(load_sources([str(TESTDATA / "batch_config.yaml")]), registry())
    p = {str(k): v for k, v in cfg.processors.items()}
    assert p["batch"] == BatchConfig()
    assert p["batch"].model_dump() == {  # the stock defaults
        "send_batch_size": 8192,
        "timeout": 0.2,
        "send_batch_max_size": 0,
        "metadata_keys": [],
        "metadata_cardinality_limit": 1000,
    }
    assert p["batch/2"] == BatchConfig(send_batch_size=10000, timeout=10.0)
    assert p["batch/max"] == BatchConfig(send_batch_size=10000, send_batch_max_size=11000, timeout=10.0)
    assert p["batch/nodelay"] == BatchConfig(send_batch_max_size=10000, timeout=0.0)
    assert p["batch/tenants"] == BatchConfig(metadata_keys=["tenant_id"], metadata_cardinality_limit=10)


def test_invalid_config_names_each_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(load_sources([str(TESTDATA / "batch_invalid.yaml")]), registry())
    msg = str(info.value)
    assert "processors.batch/max_below_size: send_batch_max_size must be greater or equal to send_batch_size" in msg
    assert "processors.batch/duplicate_keys.metadata_keys: duplicate entry in metadata_keys: 'tenant_id'" in msg
    assert "processors.batch/negative_timeout.timeout" in msg
    assert "processors.batch/negative_size.send_batch_size" in msg
    assert "processors.batch/unknown_key.flush_interval: unknown key" in msg


async def test_size_trigger_merges_requests_and_releases_every_caller() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=10, timeout=60)
    inputs = [traces({f"svc{i}": {"a": 2}, f"other{i}": {"b": 2}}, tag=f"p{i}-") for i in range(3)]
    first = [asyncio.create_task(bp.consume(p)) for p in inputs[:2]]
    await settle()
    assert not sink.got and not any(t.done() for t in first)  # 8 spans: below the trigger
    await asyncio.gather(*first, bp.consume(inputs[2]))
    assert len(sink.got) == 1
    out = sink.got[0]
    assert out.items == 12 and out.has_raw  # a new payload, made from the requests' bytes
    assert out not in inputs
    assert len(resources_of(Signal.TRACES, out.message)) == 6
    assert flatten(Signal.TRACES, out.message) == [x for p in inputs for x in flatten(Signal.TRACES, p.message)]
    assert all(len(resources_of(Signal.TRACES, p.message)) == 2 for p in inputs)  # inputs untouched
    assert sample(bp, "otelcol_processor_batch_batch_size_trigger_send_total") == 1
    assert sample(bp, "otelcol_processor_batch_timeout_trigger_send_total") == 0
    assert sample(bp, "otelcol_processor_batch_batch_send_size_sum") == 12
    assert sample(bp, "otelcol_processor_batch_batch_send_size_count") == 1
    labels = {"processor": "batch", "otel_signal": "traces"}
    assert sample(bp, "otelcol_processor_incoming_items_total", **labels) == 12
    assert sample(bp, "otelcol_processor_outgoing_items_total", **labels) == 12


async def test_timeout_sends_a_lone_payload_unchanged() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=1000, timeout=0.05)
    payload = traces({"svc": {"s": 3}})
    task = asyncio.create_task(bp.consume(payload))
    await settle()
    assert not task.done() and not sink.got  # waiting for the timeout
    await task
    assert sink.got == [payload]
    assert sink.got[0] is payload  # the received bytes travel on (zero copy)
    assert sample(bp, "otelcol_processor_batch_timeout_trigger_send_total") == 1
    assert sample(bp, "otelcol_processor_batch_batch_size_trigger_send_total") == 0


async def test_timeout_starts_with_the_first_payload_of_a_batch() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=1000, timeout=0.05)
    await asyncio.gather(bp.consume(traces({"a": {"s": 1}})), bp.consume(traces({"b": {"s": 1}})))
    assert [p.items for p in sink.got] == [2]
    await bp.consume(traces({"c": {"s": 1}}))  # a new batch, with its own timer
    assert [p.items for p in sink.got] == [2, 1]


async def test_split_to_send_batch_max_size_keeps_resources_and_scopes() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=8, send_batch_max_size=8, timeout=60)
    payload = traces(LAYOUT, tag="x")  # 18 spans: checkout 3+2, cart 10, auth 1+1+1
    await bp.consume(payload)
    sizes = [p.items for p in sink.got]
    assert sizes == [8, 7, 3]  # cart's 10 spans are sliced, the first slice filling part one
    assert all(not p.has_raw for p in sink.got)  # parts are new messages
    assert [x for p in sink.got for x in flatten(Signal.TRACES, p.message)] == flatten(Signal.TRACES, payload.message)
    scopes = [[s.scope.name for s in r.scope_spans] for r in sink.got[0].message.resource_spans]  # type: ignore[union-attr]
    assert scopes == [["http", "db"], ["http"]]  # checkout's two scopes whole, then cart's slice
    assert sample(bp, "otelcol_processor_batch_batch_size_trigger_send_total") == 3
    assert sample(bp, "otelcol_processor_batch_batch_send_size_sum") == 18


@pytest.mark.parametrize("signal", [Signal.METRICS, Signal.LOGS])
async def test_metrics_and_logs_are_batched(signal: Signal) -> None:
    sink = Sink()
    settings = CreateSettings(ComponentID("batch"), Kind.PROCESSOR, Telemetry())
    bp = BatchProcessor(settings, BatchConfig(send_batch_size=5, timeout=60), signal, sink)
    build = metric_request if signal is Signal.METRICS else log_request
    inputs = [Payload.from_bytes(signal, build({f"svc{i}": {"s": 3}}).SerializeToString()) for i in range(2)]
    await asyncio.gather(*(bp.consume(p) for p in inputs))
    assert [p.items for p in sink.got] == [6]
    assert flatten(signal, sink.got[0].message) == [x for p in inputs for x in flatten(signal, p.message)]


async def test_metadata_keys_make_one_batch_per_combination() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=1000, timeout=0.05, metadata_keys=["Tenant_ID"], metadata_cardinality_limit=3)
    a1 = traces({"a1": {"s": 1}}, metadata={"tenant_id": ("a",), "other": ("x",)})
    a2 = traces({"a2": {"s": 2}}, metadata={"tenant_id": ("a",)})
    b = traces({"b": {"s": 1}}, metadata={"tenant_id": ("b",)})
    await asyncio.gather(bp.consume(a1), bp.consume(b), bp.consume(a2))
    by_items = {p.items: p for p in sink.got}
    assert set(by_items) == {3, 1}
    assert by_items[3].metadata == {"tenant_id": ("a",)}  # only the batching keys go on
    assert by_items[1] is b
    # An unset key and an empty value are different combinations.
    await asyncio.gather(bp.consume(traces({"c": {"s": 1}})))
    assert bp.metadata_cardinality == 3
    with pytest.raises(PermanentError, match="too many batcher metadata-value combinations"):
        await bp.consume(traces({"d": {"s": 1}}, metadata={"tenant_id": ("",)}))
    await bp.consume(traces({"a3": {"s": 1}}, metadata={"tenant_id": ("a",)}))  # a known one still goes


async def test_downstream_refusal_reaches_every_caller() -> None:
    sink = FailingSink(RetryableError("sending queue is full", throttled=True, retry_after=3))
    bp = make(sink, send_batch_size=6, timeout=60)
    results = await asyncio.gather(*(bp.consume(traces({f"s{i}": {"x": 2}})) for i in range(3)), return_exceptions=True)
    assert sink.calls == 1
    assert all(isinstance(r, RetryableError) for r in results)
    for r in results:
        assert isinstance(r, ConsumeError)
        assert r.throttled and r.retry_after == 3 and "sending queue is full" in str(r)
    assert len({id(r) for r in results}) == 3  # each caller gets its own exception
    labels = {"processor": "batch", "otel_signal": "traces"}
    assert sample(bp, "otelcol_processor_outgoing_items_total", **labels) == 0
    assert sample(bp, "otelcol_processor_batch_batch_size_trigger_send_total") == 0


async def test_permanent_refusal_is_retryable_for_a_shared_batch_only() -> None:
    sink = FailingSink(PermanentError("bad data"))
    bp = make(sink, send_batch_size=4, timeout=60)
    shared = await asyncio.gather(*(bp.consume(traces({f"s{i}": {"x": 2}})) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, RetryableError) for r in shared)
    with pytest.raises(PermanentError, match="bad data"):
        await bp.consume(traces({"alone": {"x": 4}}))


async def test_a_split_batch_fails_when_a_part_fails() -> None:
    class SecondPartFails(Sink):
        async def consume(self, payload: Payload) -> None:
            if self.got:
                raise RetryableError("second part refused")
            await super().consume(payload)

    sink = SecondPartFails()
    bp = make(sink, send_batch_size=4, send_batch_max_size=4, timeout=60)
    with pytest.raises(RetryableError, match="second part refused"):
        await bp.consume(traces({"a": {"s": 4}, "b": {"s": 4}}))
    assert [p.items for p in sink.got] == [4]


async def test_a_caller_that_goes_away_does_not_cancel_the_batch() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=1000, timeout=0.05)
    gone = asyncio.create_task(bp.consume(traces({"gone": {"s": 1}})))
    await settle()
    gone.cancel()
    await bp.consume(traces({"stays": {"s": 1}}))
    assert [p.items for p in sink.got] == [2]
    assert gone.cancelled()


async def test_shutdown_sends_everything_pending() -> None:
    sink = Sink()
    telemetry = Telemetry()
    bp = make(sink, telemetry, send_batch_size=1000, timeout=3600, metadata_keys=["tenant"])
    tasks = [asyncio.create_task(bp.consume(traces({t: {"s": 2}}, metadata={"tenant": (t,)}))) for t in ("a", "b")]
    await settle()
    assert not sink.got
    await bp.shutdown()
    assert all(t.done() and t.exception() is None for t in tasks)
    assert sorted(p.metadata["tenant"][0] for p in sink.got) == ["a", "b"]
    assert sample(bp, "otelcol_processor_batch_timeout_trigger_send_total") == 2
    with pytest.raises(RetryableError):
        await bp.consume(traces({"late": {"s": 1}}))


async def test_a_mutating_next_consumer_gets_a_copy() -> None:
    sink = MutatingSink()
    bp = make(sink, send_batch_size=1, timeout=60)
    assert bp.mutates_data is False
    payload = traces({"svc": {"s": 1}})
    await bp.consume(payload)
    assert sink.got[0] is not payload
    assert payload.has_raw  # the caller's payload was not touched
    assert "touched" not in [a.key for a in payload.message.resource_spans[0].resource.attributes]  # type: ignore[union-attr]


async def test_zero_timeout_sends_at_once_split_to_the_maximum() -> None:
    sink = Sink()
    bp = make(sink, timeout=0, send_batch_max_size=10000)
    payload = traces({"svc": {"s": 3}})
    await bp.consume(payload)
    assert sink.got == [payload]
    bp2 = make(Sink(), timeout=0, send_batch_size=0, send_batch_max_size=2)
    await bp2.consume(traces({"svc": {"s": 5}}))
    assert [p.items for p in bp2.next.got] == [2, 2, 1]  # type: ignore[attr-defined]


async def test_empty_requests_are_not_sent() -> None:
    sink = Sink()
    bp = make(sink, send_batch_size=1, timeout=60)
    await bp.consume(Payload.from_bytes(Signal.TRACES, b""))
    assert not sink.got


async def test_built_by_the_graph() -> None:
    raw = {
        "receivers": {"testrecv": None},
        "processors": {"batch": {"send_batch_size": 2, "timeout": "10s"}},
        "exporters": {"testsink": None},
        "service": {
            "pipelines": {"traces": {"receivers": ["testrecv"], "processors": ["batch"], "exporters": ["testsink"]}}
        },
    }
    graph = build_graph(parse_config(raw, registry()), Telemetry(), registry())
    _, _, processor = graph.processors[0]
    assert isinstance(processor, BatchProcessor) and processor.config.timeout == 10.0
    sink = graph.exporters[ComponentID("testsink")]
    entry = graph.entries[PipelineID(Signal.TRACES)]
    await asyncio.gather(entry.consume(traces({"a": {"s": 1}})), entry.consume(traces({"b": {"s": 1}})))
    assert [p.items for p in sink.got] == [2]  # type: ignore[attr-defined]
