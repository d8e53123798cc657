"""The filter processor's config: YAML as the stock README writes it, and every error named by
its YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from collector.component import ComponentID
from collector.config import load_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.pdata import Signal
from collector.registry import Registry, builtin_factories
from collector.telemetry import Telemetry
from processors.filter import FilterConfig
from tests.support.components import factories

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture
def registry() -> Registry:
    return Registry([*factories(), *[f for f in builtin_factories() if f.type == "filter"]])


def test_valid_file_compiles_every_processor(registry: Registry) -> None:
    config = load_config([str(TESTDATA / "filter_config.yaml")], registry)
    ottl = config.processors[ComponentID("filter", "ottl")]
    assert isinstance(ottl, FilterConfig)
    assert ottl.error_mode == "ignore"
    assert [c.context for c in ottl.program(Signal.TRACES).conditions] == ["span", "span", "span", "spanevent", "spanevent"]
    assert [c.context for c in ottl.program(Signal.METRICS).conditions] == ["metric", "metric", "datapoint", "datapoint"]
    assert [c.context for c in ottl.program(Signal.LOGS).conditions] == ["log", "log"]

    multiline = config.processors[ComponentID("filter", "multiline")]
    assert isinstance(multiline, FilterConfig)
    assert len(multiline.program(Signal.TRACES).conditions) == 1
    assert multiline.program(Signal.METRICS).empty

    basic = config.processors[ComponentID("filter", "basic")]
    assert isinstance(basic, FilterConfig)
    assert [c.context for c in basic.program(Signal.TRACES).conditions] == ["resource", "span", "span", "spanevent", "spanevent"]
    assert [c.context for c in basic.program(Signal.METRICS).conditions] == ["metric", "datapoint"]

    advanced = config.processors[ComponentID("filter", "advanced")]
    assert isinstance(advanced, FilterConfig)
    assert [(c.context, c.error_mode) for c in advanced.program(Signal.LOGS).conditions] == [
        ("log", "propagate"),
        ("resource", "silent"),
        ("log", None),
    ]
    empty = config.processors[ComponentID("filter", "empty")]
    assert isinstance(empty, FilterConfig) and empty.error_mode == "ignore"
    assert all(empty.program(s).empty for s in Signal)

    graph = build_graph(config, Telemetry(), registry)
    assert len(graph.processors) == 12


def test_invalid_file_reports_every_problem_with_its_path(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([str(TESTDATA / "filter_invalid.yaml")], registry)
    lines = str(info.value).splitlines()[1:]
    paths = [line.strip().split(": ", 1)[0] for line in lines]
    assert paths == [
        "processors.filter/bad_syntax.traces.span[1]",
        "processors.filter/bad_syntax.traces.spanevent[0]",
        "processors.filter/bad_syntax.metrics.metric[0]",
        "processors.filter/bad_syntax.metrics.datapoint[0]",
        "processors.filter/bad_syntax.logs.log_record[0]",
        "processors.filter/bad_semantics.traces.span[0]",
        "processors.filter/bad_semantics.traces.span[1]",
        "processors.filter/bad_semantics.traces.span[2]",
        "processors.filter/bad_semantics.traces.span[3]",
        "processors.filter/bad_semantics.traces.span[4]",
        "processors.filter/bad_semantics.traces.span[5]",
        "processors.filter/bad_semantics.traces.span[6]",
        "processors.filter/legacy.spans",
        "processors.filter/legacy.metrics.exclude",
        "processors.filter/legacy.logs.include",
        "processors.filter/inferred.trace_conditions",
        "processors.filter/inferred.metric_conditions[0].context",
        "processors.filter/inferred.log_conditions",
        "processors.filter/inferred.trace_conditions[0]",
        "processors.filter/bad_error_mode.error_mode",
    ]
    text = "\n".join(lines)
    # The condition text and the column are in the message.
    assert "processors.filter/bad_syntax.traces.span[1]: invalid OTTL condition: column 12: " in text
    assert "(got 'attributes[test] == \"pass\"')" in text
    assert "backreferences are not supported by RE2" in text
    assert "lookbehind assertions are not supported by RE2" in text
    assert "HasAttrKeyOnDatapoint is only available in the metric context" in text
    assert "processors.filter/bad_semantics.traces.span[6]: condition cannot be empty" in text
    assert "legacy include/exclude filters are not supported by AppGuard; write OTTL conditions instead" in text
    assert 'missing context name for path "name"' in text
    assert "configuring multiple configuration styles is not supported" in text
    assert 'cannot use the context-inferred "log_conditions" and logs.log_record at the same time' in text


@pytest.mark.parametrize(
    ("body", "path", "fragment"),
    [
        ({"traces": {"span": ['name == "a"', "name =="]}}, "traces.span[1]", "column 8: expected a value"),
        ({"traces": {"include": {"match_type": "strict"}}}, "traces.include", "legacy include/exclude"),
        ({"metrics": {"regexp": {"cacheenabled": True}}}, "metrics.regexp", "legacy include/exclude"),
        ({"trace_conditions": ['span.name == "a"'], "traces": {"spanevent": ['name == "b"']}}, "trace_conditions", "at the same time"),
        ({"log_conditions": [{"conditions": ["body == 1"], "error_mode": "loud"}]}, "log_conditions[0].error_mode", "Input should be"),
        ({"log_conditions": [{"conditions": ["body == 1"], "contxt": "log"}]}, "log_conditions[0].contxt", "unknown key"),
        ({"log_conditions": [5]}, "log_conditions[0]", "expected a condition or a group"),
        ({"metric_conditions": ['metric.name == "x" and IsMatch(datapoint.attributes["a"], "[")']}, "metric_conditions[0]", "missing closing ]"),
        ({"traces": {"span": [None]}}, "traces.span.0", "valid string"),
        ({"unknown": 1}, "unknown", "Extra inputs"),
    ],
)
def test_more_errors(body: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        FilterConfig.model_validate(body)
    errors = info.value.errors()
    assert any(".".join(str(p) for p in e["loc"]) == path and fragment in e["msg"] for e in errors), errors


def test_group_context_is_case_insensitive() -> None:
    config = FilterConfig.model_validate({"log_conditions": [{"context": "LOG", "conditions": ['severity_text == "DEBUG"']}]})
    assert config.program(Signal.LOGS).conditions[0].context == "log"


def test_a_single_string_is_one_condition() -> None:
    config = FilterConfig.model_validate({"logs": {"log_record": 'severity_text == "DEBUG"'}})
    assert [c.text for c in config.program(Signal.LOGS).conditions] == ['severity_text == "DEBUG"']
