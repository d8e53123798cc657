"""The Prometheus export is a rules file Prometheus accepts, and its rules fire when they should.

``promtool check rules`` validates the rendered file; ``promtool test rules`` evaluates it with
Prometheus' own engine over series of ``appguard_errors_total`` written here, so the count,
rate and percent-change expressions, the filters, the labels and the annotation templates are
checked by what Prometheus computes from them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerting.model import IssueRule, MetricRule, StoredRule, ThresholdRule
from alerting.promexport import prometheus_duration, render


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary (Debian's prometheus package); skip without it, except under CI."""
    found = os.environ.get("APPGUARD_PROMTOOL") or shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Prometheus export tests")
        pytest.skip(message)
    return found


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def threshold(rule_id: int, **spec: Any) -> StoredRule:
    return StoredRule(id=rule_id, project_id=1, spec=ThresholdRule.model_validate(spec))


RULES = [
    threshold(
        1,
        name="Checkout errors",
        window="5m",
        warning=30,
        critical=100,
        filters={"service": ["checkout", "cart.v2"], "environment": ["prod"]},
        labels={"team": "payments"},
        description="Runbook: {{ not a template }}",
    ),
    threshold(2, name="Error rate", measure="rate", window="5m", warning=1, per=["service"]),
    threshold(
        3,
        name="Timeout spike",
        compare="percent_change",
        window="5m",
        warning=100,
        per=[],
        filters={"exception_type": ["TimeoutError"]},
        **{"for": "1m"},
    ),
    threshold(4, name="Odd names", warning=1, per=["service"], filters={"service": ['we"ird\\svc']}),
    threshold(5, name="By level", warning=1, filters={"level": ["fatal"]}),
    threshold(6, name="Switched off", warning=1, enabled=False),
    StoredRule(id=7, project_id=1, spec=IssueRule(name="New issue", when="new_issue")),
    StoredRule(id=8, project_id=1, spec=MetricRule(name="Up", expr="up == 0")),
]


def series(
    service: str, values: str, *, environment: str = "prod", exception_type: str = "ValueError"
) -> dict[str, str]:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    labels = f"service_name={quoted(service)}, deployment_environment_name={quoted(environment)}"
    return {"series": f"appguard_errors_total{{{labels}, exception_type={quoted(exception_type)}}}", "values": values}


def test_durations_use_the_largest_exact_unit() -> None:
    assert [prometheus_duration(s) for s in (300, 90, 3600, 86400, 0.25, 1.5, 7200 + 60)] == [
        "5m", "90s", "1h", "1d", "250ms", "1500ms", "121m",
    ]  # fmt: skip


def test_the_rendered_file_passes_promtool_check(tmp_path: Path, promtool: str) -> None:
    text = render(RULES)
    (tmp_path / "rules.yml").write_text(text)
    checked = run_promtool(promtool, "check", "rules", "rules.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Rules 1 and 3..4 by their levels: 1 has two, 2, 3 and 4 one each; 5 to 8 are left out.
    assert "SUCCESS: 5 rules found" in checked.stdout
    doc = yaml.safe_load(text)
    names = [r["alert"] for r in doc["groups"][0]["rules"]]
    assert names == ["Checkout errors", "Checkout errors", "Error rate", "Timeout spike", "Odd names"]
    assert "#   By level (rule 5): filters.level has no label on appguard_errors_total" in text
    assert "Switched off" not in text and "New issue" not in text and "up == 0" not in text


def test_prometheus_evaluates_the_rules_as_meant(tmp_path: Path, promtool: str) -> None:
    (tmp_path / "rules.yml").write_text(render(RULES))
    # One sample a minute. checkout: 10 errors/min; cart.v2: 30/min; cartXv2 would match an
    # unescaped "cart.v2"; other: 100/min. Timeouts: 1/min for 10 minutes, then 10/min.
    inputs = [
        series("checkout", "0+10x30"),
        series("cart.v2", "0+30x30"),
        series("cartXv2", "0+30x30"),
        series("other", "0+100x30"),
        series("checkout", "0+100x30", environment="staging"),
        series("batch", "0+1x10 20+10x20", exception_type="TimeoutError"),
        series('we"ird\\svc', "0+1x30"),
    ]
    checkout = {"alertname": "Checkout errors", "rule": "1", "team": "payments", "deployment_environment_name": "prod"}
    description = {"description": "Runbook: {{ not a template }}"}
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "Checkout errors",
                        "exp_alerts": [
                            {
                                "exp_labels": {**checkout, "severity": "warning", "service_name": "checkout"},
                                "exp_annotations": {
                                    "summary": "checkout prod: 50 errors in 5m (above the warning level 30)",
                                    **description,
                                },
                            },
                            {
                                "exp_labels": {**checkout, "severity": "warning", "service_name": "cart.v2"},
                                "exp_annotations": {
                                    "summary": "cart.v2 prod: 150 errors in 5m (above the warning level 30)",
                                    **description,
                                },
                            },
                            {
                                "exp_labels": {**checkout, "severity": "critical", "service_name": "cart.v2"},
                                "exp_annotations": {
                                    "summary": "cart.v2 prod: 150 errors in 5m (above the critical level 100)",
                                    **description,
                                },
                            },
                        ],
                    },
                    {
                        # Per service only: checkout's two environments add up (10 + 100 per minute).
                        "eval_time": "10m",
                        "alertname": "Error rate",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "alertname": "Error rate",
                                    "rule": "2",
                                    "severity": "warning",
                                    "service_name": name,
                                },
                                "exp_annotations": {
                                    "summary": f"{name}: {value} errors/s over 5m (above the warning level 1)"
                                },
                            }
                            for name, value in (("checkout", "1.83"), ("other", "1.67"))
                        ],
                    },
                    {"eval_time": "8m", "alertname": "Timeout spike", "exp_alerts": []},
                    {
                        # 50 timeouts in 10m..15m against 5 in 5m..10m: +900%, above 100% since 13m.
                        "eval_time": "15m",
                        "alertname": "Timeout spike",
                        "exp_alerts": [
                            {
                                "exp_labels": {"alertname": "Timeout spike", "rule": "3", "severity": "warning"},
                                "exp_annotations": {
                                    "summary": "errors changed by 900% over the previous 5m (above the warning level 100)"
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "Odd names",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "alertname": "Odd names",
                                    "rule": "4",
                                    "severity": "warning",
                                    "service_name": 'we"ird\\svc',
                                },
                                "exp_annotations": {
                                    "summary": 'we"ird\\svc: 5 errors in 5m (above the warning level 1)'
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_promtool(tmp_path: Path, promtool: str) -> None:
    # The evaluation above can fail: the same rules with a threshold above what the data reach.
    (tmp_path / "rules.yml").write_text(render([threshold(1, name="High", warning=60, per=["service"])]))
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [series("checkout", "0+10x30")],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "High",
                        "exp_alerts": [
                            {"exp_labels": {"rule": "1", "severity": "warning", "service_name": "checkout"}}
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "High" in result.stdout + result.stderr
