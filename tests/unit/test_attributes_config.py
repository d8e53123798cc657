"""Config of the ``attributes`` processor, loaded from YAML as the stock collector writes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.component import ComponentID
from collector.config import Config, load_config
from collector.confmap import ConfigError
from collector.graph import build_graph
from collector.pdata import Signal
from collector.registry import Registry, builtin_factories
from collector.telemetry import Telemetry
from processors import attributes, resource
from processors._attraction import anyvalue_from_raw
from processors.attributes import AttributesConfig
from tests.support.components import Sink, factories
from tests.unit.test_attributes import settings

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture
def registry() -> Registry:
    ours = [f for f in builtin_factories() if f.type in ("attributes", "resource")]
    return Registry([*factories(), *ours])


@pytest.fixture
def config(registry: Registry) -> Config:
    return load_config([str(TESTDATA / "attributes_config.yaml")], registry)


def processor(config: Config, name: str) -> AttributesConfig:
    cfg = config.processors[ComponentID("attributes", name)]
    assert isinstance(cfg, AttributesConfig)
    return cfg


def test_valid_file_parses_and_builds_every_pipeline(config: Config, registry: Registry) -> None:
    assert len(config.processors) == 20
    graph = build_graph(config, Telemetry(), registry)
    assert len(graph.processors) == 17 + 4 + 2


def test_parsed_actions(config: Config) -> None:
    insert = processor(config, "insert").actions
    assert [(a.key, a.action, a.value, a.from_attribute) for a in insert] == [
        ("attribute1", "insert", 123, ""),
        ("string key", "insert", None, "anotherkey"),
    ]
    assert isinstance(insert[0].value, int)

    regex = processor(config, "regex_insert").actions[0]
    assert regex.compiled.creates == ("http_protocol", "http_domain", "http_path", "http_query_params")

    delete = processor(config, "delete").actions
    assert [(a.key, a.pattern) for a in delete] == [("credit_card", ""), ("duplicate_key", ""), ("", r"^secret\..*")]

    convert = processor(config, "convert").actions[0]
    assert (convert.key, convert.action, convert.converted_type) == ("http.status_code", "convert", "int")

    ctx = processor(config, "from_context").actions
    assert [(a.key, a.from_context) for a in ctx] == [("origin", "metadata.origin"), ("client.address", "client.address")]

    defaults = processor(config, "defaults").actions
    assert [(a.key, a.default_value) for a in defaults] == [("region", "us-east-1"), ("tenant_id", "default-tenant")]

    typed = processor(config, "typed_values").actions
    assert [a.value for a in typed] == [True, 1.5, [1, "two", 3.0], {"inner": "x", "n": 2}, "x"]
    assert typed[4].compiled.name == "upsert"


def test_parsed_include_exclude(config: Config) -> None:
    multi = processor(config, "excludemulti")
    assert multi.include is None and multi.exclude is not None
    assert multi.exclude.match_type == "strict"
    assert multi.exclude.services == ["svcA", "svcB"]
    assert [(a.key, a.value) for a in multi.exclude.attributes] == [("env", "dev"), ("test_request", None)]

    library = processor(config, "excludelibrary").exclude
    assert library is not None
    assert [(lib.name, lib.version) for lib in library.libraries] == [("mongo-java-driver", "3.8.0")]

    regexp = processor(config, "regexp")
    assert regexp.include is not None and regexp.include.services == ["auth.*"]
    assert regexp.exclude is not None and regexp.exclude.regexp is not None
    assert (regexp.exclude.regexp.cacheenabled, regexp.exclude.regexp.cachemaxnumentries) == (True, 100)

    severity = processor(config, "log_severity").include
    assert severity is not None and severity.log_severity_number is not None
    assert (severity.log_severity_number.min, severity.log_severity_number.match_undefined) == (5, True)

    assert processor(config, "metric_names").include.metric_names == ["http.server.duration"]  # type: ignore[union-attr]


def test_invalid_file_reports_every_processor(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([str(TESTDATA / "attributes_invalid.yaml")], registry)
    lines = str(info.value).splitlines()[1:]
    expected = {
        "processors.attributes/empty": 'missing required field "actions"',
        "processors.attributes/missing_key.actions.1": 'missing required field "key"',
        "processors.attributes/bad_action.actions.0": "unsupported action 'invalid'",
        "processors.attributes/no_value_source.actions.0": 'needs one of "value", "from_attribute", "from_context" or "default_value"',
        "processors.attributes/two_value_sources.actions.0": 'takes only one of "value", "from_attribute" and "from_context"',
        "processors.attributes/pattern_on_insert.actions.0": 'action "insert" does not use "pattern"',
        "processors.attributes/extract_without_pattern.actions.0": 'action "extract" needs "pattern"',
        "processors.attributes/extract_with_value.actions.0": 'action "extract" does not use "value"',
        "processors.attributes/bad_regex.actions.0": "invalid \"pattern\" '(?P<invalid.regex>.*?)$'",
        "processors.attributes/no_named_group.actions.0": "has no named group",
        "processors.attributes/unnamed_group.actions.0": "has an unnamed group",
        "processors.attributes/delete_without_key.actions.0": 'action "delete" needs "key", "pattern" or both',
        "processors.attributes/delete_bad_pattern.actions.0": "invalid \"pattern\" '[unclosed'",
        "processors.attributes/convert_without_type.actions.0": 'needs "converted_type"',
        "processors.attributes/convert_bad_type.actions.0": "invalid \"converted_type\" 'float'",
        "processors.attributes/auth_context.actions.0": "from_context 'auth.subject': authentication attributes are not available",
        "processors.attributes/unknown_key.actions.0.unknown": "unknown key",
        "processors.attributes/bad_match_type.include": "unrecognized match_type: 'expr'",
        "processors.attributes/bad_service_regexp.include": "services: invalid regexp '(unclosed'",
        "processors.attributes/regexp_attribute_not_string.include": "only supports a string value",
    }
    found = {}
    for line in lines:
        path, _, message = line.strip().partition(": ")
        found[path] = message
    assert set(found) == set(expected)
    for path, fragment in expected.items():
        assert fragment in found[path], (path, found[path])


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"key": "a", "value": 2**63, "action": "insert"}, '"value": integer 9223372036854775808 does not fit in 64 bits'),
        ({"key": "a", "default_value": 1, "action": "delete"}, 'action "delete" does not use "default_value"'),
        ({"key": "a", "converted_type": "int", "action": "hash"}, 'action "hash" does not use "converted_type"'),
        ({"key": "a", "from_attribute": "b", "action": "delete"}, 'action "delete" does not use "value"'),
        ({"key": "a", "value": 1, "action": "convert", "converted_type": "int"}, 'action "convert" does not use "value"'),
        ({"key": "a", "from_context": "metadata.", "action": "insert"}, "name a metadata key"),
        ({"action": "insert", "value": 1}, 'missing required field "key"'),
    ],
)
def test_more_action_errors(body: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=r"actions\.0") as info:
        AttributesConfig.model_validate({"actions": [body]})
    assert fragment in str(info.value)


def test_include_needs_a_match_type_only_for_values_and_lists() -> None:
    cfg = AttributesConfig.model_validate(
        {"include": {"attributes": [{"key": "present"}]}, "actions": [{"key": "a", "action": "delete"}]}
    )
    assert cfg.include is not None and cfg.include.match_type == ""
    with pytest.raises(ValueError, match="unrecognized match_type: ''"):
        AttributesConfig.model_validate({"include": {"span_names": ["x"]}, "actions": [{"key": "a", "action": "delete"}]})
    with pytest.raises(ValueError, match="can't have empty key"):
        AttributesConfig.model_validate(
            {"include": {"match_type": "strict", "attributes": [{"key": ""}]}, "actions": [{"key": "a", "action": "delete"}]}
        )


def test_signal_specific_errors_name_the_processor(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """
receivers:
  testrecv:
exporters:
  testsink:
processors:
  attributes/spans_only:
    include:
      match_type: strict
      span_names: [checkout]
    actions:
      - key: a
        action: delete
service:
  pipelines:
    logs:
      receivers: [testrecv]
      processors: [attributes/spans_only]
      exporters: [testsink]
"""
    )
    config = load_config([str(path)], registry)
    with pytest.raises(ConfigError, match=r"processors\.attributes/spans_only\.include: span_names are not valid for log records"):
        build_graph(config, Telemetry(), registry)


def test_compiled_value_is_the_otlp_value(config: Config) -> None:
    action = processor(config, "typed_values").actions[3]
    assert action.value == {"inner": "x", "n": 2}
    step_value = AnyValue()
    step_value.kvlist_value.values.add(key="inner").value.string_value = "x"
    step_value.kvlist_value.values.add(key="n").value.int_value = 2
    assert anyvalue_from_raw(action.value) == step_value


@pytest.mark.parametrize("page", ["attributes.md", "resource.md"])
def test_examples_in_the_docs_are_valid(page: str) -> None:
    text = (Path(__file__).parents[2] / "docs" / page).read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith("processors:")]
    assert blocks
    for block in blocks:
        for ident, body in yaml.safe_load(block)["processors"].items():
            factory = attributes.factory if ident.startswith("attributes") else resource.factory
            config = factory.config_class.model_validate(body)
            built = 0
            for signal in Signal:
                try:
                    factory.create(settings=settings(ident), config=config, signal=signal, next_consumer=Sink())
                    built += 1
                except ConfigError as exc:
                    # include/exclude blocks are for one signal; the others must say so.
                    assert "in a" in str(exc)
            assert built, ident
