"""Reading a rules file: the example validates, and every problem names its YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.channels.specs import EmailSpec, SlackSpec
from alerting.model import IssueRule, MetricRule, ThresholdRule
from alerting.rulefile import RuleFileError, load, parse
from alerting.store import REDACTED, InvalidDefinition, parse_rule, with_stored_secrets

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "alert-rules.example.yaml"


def problems(text: str, tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RuleFileError) as caught:
        load(path)
    assert str(path) in str(caught.value)
    return caught.value.problems


def test_the_example_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPGUARD_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("APPGUARD_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/XYZ")
    monkeypatch.setenv("APPGUARD_WEBHOOK_SECRET", "0123456789abcdef0123")
    loaded = load(EXAMPLE)
    assert sorted(loaded.channels) == ["alertmanager", "ops-mail", "pager", "team-slack"]
    mail = loaded.channels["ops-mail"]
    assert isinstance(mail, EmailSpec) and mail.password == "s3cret" and mail.from_ == "appguard@example.com"
    slack = loaded.channels["team-slack"]
    assert isinstance(slack, SlackSpec) and slack.webhook_url.endswith("/XYZ")
    kinds = [type(rule) for rule in loaded.rules]
    assert kinds == [IssueRule, IssueRule, IssueRule, ThresholdRule, ThresholdRule, MetricRule]
    checkout = loaded.rules[3]
    assert isinstance(checkout, ThresholdRule)
    assert (checkout.window, checkout.for_, checkout.critical) == (300.0, 120.0, 200.0)
    assert checkout.grouping.repeat_interval == 4 * 3600
    metric = loaded.rules[5]
    assert isinstance(metric, MetricRule) and not metric.enabled and "{{ $value }}" in metric.annotations["summary"]
    # Every channel a rule names is defined in the file.
    assert {c for rule in loaded.rules for c in rule.channels} <= set(loaded.channels)


def test_a_missing_variable_is_reported_on_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPGUARD_TEST_UNSET_HOOK", raising=False)
    found = problems("channels:\n  s:\n    type: slack\n    webhook_url: ${env:APPGUARD_TEST_UNSET_HOOK}\n", tmp_path)
    assert found == [("channels.s.webhook_url", "must be an http:// or https:// URL")]


def test_every_problem_is_listed_with_its_path(tmp_path: Path) -> None:
    text = """
channels:
  mail:
    type: email
    to: [not-an-address]
    from: a@example.com
    host: smtp
  hook:
    type: pigeon
rules:
  - name: fine
    kind: threshold
    warning: 5
  - name: negative window
    kind: threshold
    window: -5
    warning: 1
  - name: frequency without counts
    kind: issue
    when: frequency
  - name: nameless kind
    kind: banana
  - name: fine
    kind: issue
    when: new_issue
  - kind: threshold
    warning: 1
    critical: 0.5
    filters: {service: [checkout, 3]}
    extra_key: 1
  - just a string
unknown_top: 1
"""
    found = problems(text, tmp_path)
    assert ("unknown_top", "unknown key (expected channels or rules)") in found
    assert ("channels.mail.to[0]", "String should match pattern '^[^@\\s]+@[^@\\s]+$'") in found
    assert ("channels.hook.type", "must be one of 'email', 'slack', 'webhook', 'alertmanager' (got 'pigeon')") in found
    assert ("rules[1].window", "Input should be greater than or equal to 0") in found
    assert ("rules[2].events", "a frequency rule needs events or users (or both)") in found
    assert ("rules[3].kind", "must be one of 'issue', 'threshold', 'metric' (got 'banana')") in found
    assert ("rules[4].name", "'fine' is already the name of rules[0]") in found
    paths = [path for path, _ in found]
    assert {"rules[5].name", "rules[5].filters.service[1]", "rules[5].extra_key"} <= set(paths)
    assert ("rules[6]", "must be an object (a map)") in found
    # The model check on levels runs only once the fields validate; fixed, it names critical.
    fixed = text.replace("filters: {service: [checkout, 3]}\n    extra_key: 1\n", "name: levels\n")
    assert ("rules[5].critical", "must not be below warning") in problems(fixed, tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: {a: 1}\n", [("rules", "must be a list of rules")]),
        ("channels: [a]\n", [("channels", "must be a map of channel name -> settings")]),
        (
            "rules:\n  - kind: threshold\n    name: x\n    warning: 1\n    window: 0s\n",
            [("rules[0].window", "must be longer than 0s")],
        ),
        (
            "rules:\n  - kind: issue\n    name: x\n    when: new_issue\n    events: 3\n",
            [("rules[0].events", "only frequency rules count events or users, not new_issue")],
        ),
        ("rules:\n  - name: x\n    when: new_issue\n", [("rules[0].kind", "required")]),
    ],
)
def test_shapes_that_are_refused(tmp_path: Path, text: str, expected: list[tuple[str, str]]) -> None:
    assert problems(text, tmp_path) == expected


def test_a_tree_that_is_not_a_map() -> None:
    with pytest.raises(RuleFileError) as caught:
        parse(["a"], "inline")
    assert caught.value.problems == [("", "the top level must be a map with channels: and rules:")]
    assert str(caught.value).startswith("invalid rules file inline:")


def test_an_empty_file_defines_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    loaded = load(path)
    assert (loaded.channels, loaded.rules) == ({}, [])


def test_bad_yaml_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("rules:\n  - name: [unclosed\n")
    with pytest.raises(Exception, match="not valid YAML"):
        load(path)
    with pytest.raises(Exception, match="not found"):
        load(tmp_path / "absent.yaml")


def test_parse_rule_names_the_field_as_written() -> None:
    with pytest.raises(InvalidDefinition) as caught:
        parse_rule({"kind": "threshold", "name": "x", "warning": 1, "for": "soon"})
    assert caught.value.field == "for"
    assert caught.value.message == "for: 'soon' is not a duration (like 5s, 200ms, 1m30s)"
    with pytest.raises(InvalidDefinition) as caught:
        parse_rule({"kind": "threshold", "name": "x"})
    assert (caught.value.field, caught.value.message) == ("warning", "warning: give warning or critical (or both)")
    with pytest.raises(InvalidDefinition) as caught:
        parse_rule({"kind": "threshold", "name": "x", "warning": 1, "grouping": {"group_by": ["not a label"]}})
    assert caught.value.field == "grouping.group_by[0]"


def test_stored_secrets_are_kept_only_for_the_same_type() -> None:
    stored = SlackSpec(webhook_url="https://hooks.slack.com/services/T/B/secret")
    sent = {"type": "slack", "webhook_url": REDACTED, "channel": "#x"}
    assert with_stored_secrets(sent, stored)["webhook_url"] == stored.webhook_url
    assert with_stored_secrets({"type": "slack"}, stored)["webhook_url"] == stored.webhook_url
    new = {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/new"}
    assert with_stored_secrets(new, stored) == new
    with pytest.raises(InvalidDefinition) as caught:
        with_stored_secrets({"type": "webhook", "url": "http://x", "secret": REDACTED}, stored)
    assert caught.value.field == "secret"
    with pytest.raises(InvalidDefinition):
        with_stored_secrets(sent, None)
    # A secret left out of a new channel is simply not set.
    assert "password" not in with_stored_secrets({"type": "email"}, None)
