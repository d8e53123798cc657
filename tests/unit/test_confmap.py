"""Config sources: env expansion, merging, inline snippets, YAML errors."""

from __future__ import annotations

import pytest

from collector.confmap import ConfigError, expand, load_source, load_sources, merge


def test_env_expansion_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AG_HOST", "db.local")
    monkeypatch.setenv("AG_PORT", "5432")
    monkeypatch.delenv("AG_MISSING", raising=False)
    out = expand(
        {
            "a": "${env:AG_HOST}:${env:AG_PORT}",
            "port": "${env:AG_PORT}",
            "bare": "${AG_HOST}",
            "dflt": "${env:AG_MISSING:-fallback}",
            "empty": "x${env:AG_MISSING}y",
            "dollar": "cost $$5 and $${env:AG_HOST}",
            "list": ["${env:AG_HOST}"],
        }
    )
    assert out["a"] == "db.local:5432"
    assert out["port"] == 5432  # a whole-value reference takes its YAML type
    assert out["bare"] == "db.local"
    assert out["dflt"] == "fallback"
    assert out["empty"] == "xy"
    assert out["dollar"] == "cost $5 and ${env:AG_HOST}"
    assert out["list"] == ["db.local"]


def test_unknown_provider_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"exporters\.x\.endpoint: unsupported config provider 'vault'"):
        expand({"exporters": {"x": {"endpoint": "${vault:secret}"}}})


def test_merge_maps_deep_and_replaces_lists() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3], "e": 2}}
    assert merge(base, over) == {"a": {"b": 1, "c": [3], "e": 2}, "d": 1}


def test_several_files_merge_in_order(tmp_path) -> None:
    one = tmp_path / "one.yaml"
    two = tmp_path / "two.yaml"
    one.write_text("exporters:\n  debug:\n    verbosity: basic\n  file:\n    path: /tmp/x\n")
    two.write_text("exporters:\n  debug:\n    verbosity: detailed\n")
    out = load_sources([str(one), f"file:{two}", "yaml:exporters::file::append: true"])
    assert out == {"exporters": {"debug": {"verbosity": "detailed"}, "file": {"path": "/tmp/x", "append": True}}}


def test_bad_yaml_names_line_and_column(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  otlp:\n    protocols: [grpc\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line \d+, column \d+\)"):
        load_source(str(bad))


def test_top_level_must_be_a_map(tmp_path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a map"):
        load_source(str(bad))


def test_missing_file_and_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_source("/nonexistent/appguard.yaml")
    monkeypatch.setenv("AG_CFG", "service: {}")
    assert load_source("env:AG_CFG") == {"service": {}}
