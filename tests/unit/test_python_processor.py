"""The ``python`` processor with real modules written to a temporary directory on sys.path."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.component import ComponentID, CreateSettings, Kind
from collector.config import parse_config
from collector.confmap import ConfigError
from collector.consumer import PermanentError
from collector.pdata import ExportRequest, Payload, Signal
from collector.registry import Registry, builtin_factories
from collector.telemetry import Telemetry
from processors.python import DROP, PythonConfig, factory
from tests.support.components import Sink, factories
from tests.unit.test_filter_processor import sdk_logs, sdk_metrics, sdk_traces, span_names
from tests.unit.test_ottl_compiler import attrs

DOCS = Path(__file__).parents[2] / "docs" / "python-processor.md"


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


_counter = 0


def write_module(directory: Path, source: str) -> str:
    """Write ``source`` as a new uniquely named module; its import name."""
    global _counter
    _counter += 1
    name = f"appguard_user_mod_{_counter}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    return name


async def run(config: dict[str, Any], signal: Signal, message: ExportRequest, **payload_kwargs: Any) -> Payload | None:
    sink = Sink()
    settings = CreateSettings(ComponentID("python", "t"), Kind.PROCESSOR, Telemetry(), logging.getLogger("test.python"))
    proc = factory.create(settings=settings, config=PythonConfig.model_validate(config), signal=signal, next_consumer=sink)
    payload = Payload.from_bytes(signal, message.SerializeToString(), **payload_kwargs)
    await proc.consume(payload)
    assert len(sink.got) <= 1
    return sink.got[0] if sink.got else None


async def test_per_request_changes_the_request_and_gets_its_arguments(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        """
        seen = []

        def tag(request, config, signal, metadata):
            seen.append((signal, dict(metadata), config))
            for rs in request.resource_spans:
                kv = rs.resource.attributes.add()
                kv.key = config["key"]
                kv.value.string_value = "yes"
        """,
    )
    message, _ = sdk_traces()
    out = await run(
        {"function": f"{name}:tag", "config": {"key": "scrubbed"}}, Signal.TRACES, message, metadata={"x-tenant": ("acme",)}
    )
    assert out is not None
    assert not out.has_raw
    assert [kv.key for kv in out.message.resource_spans[0].resource.attributes][-1] == "scrubbed"
    module = __import__(name)
    assert module.seen == [("traces", {"x-tenant": ("acme",)}, {"key": "scrubbed"})]


@pytest.mark.parametrize("result", ["False", "DROP"])
async def test_per_request_drop(module_dir: Path, result: str) -> None:
    name = write_module(module_dir, f"from processors.python import DROP\n\ndef drop(request):\n    return {result}\n")
    message, _ = sdk_traces()
    assert await run({"function": f"{name}.drop"}, Signal.TRACES, message) is None


async def test_async_functions_are_awaited(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        """
        import asyncio

        async def per_request(request):
            await asyncio.sleep(0)
            return len(request.resource_spans) > 0

        async def per_item(item, resource, scope):
            await asyncio.sleep(0)
            return item.name != "GET /healthz"
        """,
    )
    message, _ = sdk_traces()
    out = await run({"function": f"{name}:per_request"}, Signal.TRACES, message)
    assert out is not None and out.items == 5
    out = await run({"function": f"{name}:per_item", "per": "item"}, Signal.TRACES, message)
    assert out is not None and sorted(span_names(out.message)) == ["GET /users", "SELECT users"]


async def test_per_item_metrics_get_the_metric_and_empty_metrics_go(module_dir: Path) -> None:
    name = write_module(
        module_dir,
        """
        def points(item, resource, scope, metric):
            route = {kv.key: kv.value.string_value for kv in item.attributes}.get("http.route")
            return metric.name != "http.duration" and route != "/healthz"
        """,
    )
    out = await run({"function": f"{name}:points", "per": "item"}, Signal.METRICS, sdk_metrics())
    assert out is not None
    metrics = out.message.resource_metrics[0].scope_metrics[0].metrics
    assert [m.name for m in metrics] == ["http.requests", "queue.size"]
    assert len(metrics[0].sum.data_points) == 2
    assert out.items == 3


async def test_per_item_everything_dropped(module_dir: Path) -> None:
    name = write_module(module_dir, "def nothing(item, resource, scope):\n    return False\n")
    assert await run({"function": f"{name}:nothing", "per": "item"}, Signal.LOGS, sdk_logs()) is None


async def test_emptied_scopes_and_resources_go_but_not_others(module_dir: Path) -> None:
    name = write_module(module_dir, "def keep_b(item, resource, scope):\n    return item.name == 'b'\n")
    req = ExportTraceServiceRequest()
    for names in (["a"], ["b"]):
        rs = req.resource_spans.add()
        rs.scope_spans.add().spans.extend([])
        ss = rs.scope_spans.add()
        for n in names:
            ss.spans.add(name=n)
    out = await run({"function": f"{name}:keep_b", "per": "item"}, Signal.TRACES, req)
    assert out is not None
    # only what the function emptied is removed: originally empty scopes stay
    assert [[[sp.name for sp in ss.spans] for ss in rs.scope_spans] for rs in out.message.resource_spans] == [[[]], [[], ["b"]]]
    name = write_module(module_dir, "def none(item, resource, scope):\n    return False\n")
    req = ExportTraceServiceRequest()
    req.resource_spans.add().scope_spans.add().spans.add(name="a")
    req.resource_spans.add().scope_spans.add()
    out = await run({"function": f"{name}:none", "per": "item"}, Signal.TRACES, req)
    assert out is not None and [len(rs.scope_spans) for rs in out.message.resource_spans] == [1]


async def test_docs_example_scrubs_pii(module_dir: Path) -> None:
    source = re.search(r"```python\n(\"\"\"Scrub personal data.*?)```", DOCS.read_text(), re.S)
    assert source is not None, "the worked example is missing from docs/python-processor.md"
    package = module_dir / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "filters.py").write_text(source.group(1))
    config = {
        "function": "mypkg.filters:scrub_pii",
        "per": "item",
        "config": {"mask": "[redacted]", "drop_keys": ["enduser.id"], "drop_span_names": ["GET /healthz"]},
    }
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.spans.add(name="POST /signup").attributes.extend(
        attrs({"user.email": "ann@example.com", "enduser.id": "42", "card": "pay 4111 1111 1111 1111 now", "n": 3})
    )
    ss.spans.add(name="GET /healthz")
    out = await run(config, Signal.TRACES, req)
    assert out is not None
    [span] = out.message.resource_spans[0].scope_spans[0].spans
    values = {kv.key: kv.value.string_value or kv.value.int_value for kv in span.attributes}
    assert values == {"user.email": "[redacted]", "card": "pay [redacted] now", "n": 3}

    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "mail bob@corp.io about it"
    out = await run(config, Signal.LOGS, logs)
    assert out is not None
    assert out.message.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "mail [redacted] about it"


# -- errors ----------------------------------------------------------------------------------


async def test_propagate_refuses_the_request(module_dir: Path) -> None:
    name = write_module(module_dir, "def boom(request):\n    raise RuntimeError('no database')\n")
    message, _ = sdk_traces()
    with pytest.raises(PermanentError) as info:
        await run({"function": f"{name}:boom"}, Signal.TRACES, message)
    assert "RuntimeError: no database" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_ignore_keeps_and_logs(module_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = write_module(
        module_dir,
        """
        def half(item, resource, scope):
            item.name = item.name + "!"
            if item.name.startswith("GET /h"):
                raise ValueError("bad span")
        """,
    )
    message, _ = sdk_traces()
    with caplog.at_level(logging.WARNING, "test.python"):
        out = await run({"function": f"{name}:half", "per": "item", "error_mode": "ignore"}, Signal.TRACES, message)
    assert out is not None and out.items == 5
    assert sorted(span_names(out.message))[0] == "GET /healthz!"  # kept as the function left it
    assert len(caplog.records) == 1 and "failed 3 time(s)" in caplog.text and "ValueError: bad span" in caplog.text


async def test_silent_keeps_without_logging(module_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = write_module(module_dir, "def bad(request):\n    return 'yes'\n")
    message, _ = sdk_traces()
    with caplog.at_level(logging.DEBUG, "test.python"):
        out = await run({"function": f"{name}:bad", "error_mode": "silent"}, Signal.TRACES, message)
    assert out is not None and not caplog.records


async def test_a_wrong_return_value_is_an_error(module_dir: Path) -> None:
    name = write_module(module_dir, "def bad(request):\n    return 'yes'\n")
    message, _ = sdk_traces()
    with pytest.raises(PermanentError) as info:
        await run({"function": f"{name}:bad"}, Signal.TRACES, message)
    assert "returned 'yes'" in str(info.value)


def test_drop_is_falsy_and_named() -> None:
    assert not DROP and repr(DROP) == "DROP"


# -- config ----------------------------------------------------------------------------------


@pytest.fixture
def registry() -> Registry:
    return Registry([*factories(), *[f for f in builtin_factories() if f.type == "python"]])


def load(registry: Registry, processors: dict[str, Any]) -> Any:
    return parse_config(
        {
            "receivers": {"testrecv": None},
            "processors": processors,
            "exporters": {"testsink": None},
            "service": {"pipelines": {"traces": {"receivers": ["testrecv"], "processors": list(processors), "exporters": ["testsink"]}}},
        },
        registry,
    )


def test_config_errors_name_the_function_key(module_dir: Path, registry: Registry) -> None:
    name = write_module(
        module_dir,
        """
        NOT_CALLABLE = 3

        def one(request):
            pass

        def three(item, resource, scope):
            pass
        """,
    )
    broken = write_module(module_dir, "raise ImportError('missing C library')\n")
    with pytest.raises(ConfigError) as info:
        load(
            registry,
            {
                "python/a": {"function": "no_such_module_for_appguard:f"},
                "python/b": {"function": f"{name}:missing"},
                "python/c": {"function": f"{name}:NOT_CALLABLE"},
                "python/d": {"function": f"{name}:one", "per": "item"},
                "python/e": {"function": f"{name}:three"},
                "python/f": {"function": f"{broken}:f"},
                "python/g": {"function": "nocolon"},
                "python/h": {"function": f"{name}:one", "per": "sometimes"},
                "python/i": {},
            },
        )
    lines = str(info.value).splitlines()[1:]
    text = "\n".join(lines)
    assert "processors.python/a.function: cannot import module 'no_such_module_for_appguard': ModuleNotFoundError" in text
    assert f"processors.python/b.function: module '{name}' has no attribute 'missing'" in text
    assert f"processors.python/c.function: '{name}:NOT_CALLABLE' is not callable" in text
    assert f"processors.python/d.function: {name}:one must accept (item, resource, scope) for per: item" in text
    assert f"processors.python/e.function: {name}:three must accept (request) for per: request" in text
    assert f"processors.python/f.function: cannot import module '{broken}': ImportError: missing C library" in text
    assert "processors.python/g.function: 'nocolon' is not of the form 'package.module:function'" in text
    assert "processors.python/h.per: Input should be 'request' or 'item'" in text
    assert "processors.python/i.function: required key is missing" in text


def test_valid_config_from_yaml(module_dir: Path, registry: Registry) -> None:
    name = write_module(module_dir, "def f(item, resource, scope, **kwargs):\n    pass\n")
    config = load(registry, {"python/scrub": {"function": f"{name}:f", "per": "item", "config": {"mask": "x"}}})
    cfg = config.processors[ComponentID("python", "scrub")]
    assert isinstance(cfg, PythonConfig)
    assert cfg.keywords == frozenset({"config", "signal", "metric"})
    assert cfg.error_mode == "propagate" and cfg.config == {"mask": "x"}
