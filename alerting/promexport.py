"""Threshold rules as a Prometheus alerting-rules file, for those who let Prometheus evaluate.

A :class:`~alerting.model.ThresholdRule` counts errors; the ``errormetrics`` connector counts
the same errors into ``appguard_errors_total`` (labels ``service_name``,
``deployment_environment_name``, ``exception_type``), so each enabled threshold rule becomes one
Prometheus alerting rule per severity level it sets:

- ``measure: count`` -> ``sum by (service_name, deployment_environment_name) (increase(appguard_errors_total{filters}[window])) > level``
- ``measure: rate`` -> the same with ``rate(...)`` (errors per second)
- ``compare: percent_change`` -> ``100 * (now - before) / before > level``, ``before`` being the
  same expression ``offset window`` (an error count rising from zero is an infinite change).

Filters on services, environments and exception types become label matchers; tags become
matchers on the label the Prometheus translation makes of the attribute name, which exists
only where the connector counts that attribute as one of its ``dimensions``. The metric has no
severity level, so rules filtering on ``level`` cannot be expressed; they are left out and
named in a comment at the top of the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import yaml

from alerting.model import RuleFilters, Severity, StoredRule, ThresholdRule

METRIC = "appguard_errors_total"

#: The label of ``appguard_errors_total`` each rule filter and ``per`` value is about.
LABELS = {"service": "service_name", "environment": "deployment_environment_name", "exception_type": "exception_type"}

_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]")
# Characters RE2 (Prometheus' regular expressions) gives a meaning to.
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def prometheus_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration in its largest exact unit (``300.0`` -> ``5m``)."""
    millis = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis >= size and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def _string(value: str) -> str:
    # A PromQL double-quoted string: backslashes, quotes and newlines escaped.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def label_name(attribute: str) -> str:
    """The Prometheus label an attribute name becomes (``http.route`` -> ``http_route``)."""
    name = _LABEL_INVALID.sub("_", attribute)
    return f"key_{name}" if name[:1].isdigit() else name


def _regex_literal(value: str) -> str:
    return _RE2_SPECIAL.sub(r"\\\1", value)


def _matchers(filters: RuleFilters) -> str:
    parts: list[str] = []
    for field, label in LABELS.items():
        values: list[str] = getattr(filters, field)
        if len(values) == 1:
            parts.append(f"{label}={_string(values[0])}")
        elif values:
            parts.append(f"{label}=~{_string('|'.join(_regex_literal(v) for v in values))}")
    parts += [f"{label_name(key)}={_string(value)}" for key, value in sorted(filters.tags.items())]
    return "{" + ", ".join(parts) + "}" if parts else ""


def measure_expr(rule: ThresholdRule, *, offset: bool = False) -> str:
    """The rule's measure per ``per`` labels over its window, optionally one window earlier."""
    window = prometheus_duration(rule.window)
    function = "increase" if rule.measure == "count" else "rate"
    shift = f" offset {window}" if offset else ""
    inner = f"{function}({METRIC}{_matchers(rule.filters)}[{window}]{shift})"
    labels = ", ".join(LABELS[p] for p in rule.per)
    return f"sum by ({labels}) ({inner})" if labels else f"sum({inner})"


def _number(value: float) -> str:
    return str(int(value)) if value == math.floor(value) and abs(value) < 1e15 else repr(value)


def threshold_exprs(rule: ThresholdRule) -> dict[Severity, str]:
    """One PromQL condition per severity level the rule sets."""
    if rule.compare == "static":
        value = measure_expr(rule)
    else:
        now, before = measure_expr(rule), measure_expr(rule, offset=True)
        value = f"100 * ({now} - {before}) / {before}"
    levels = ((Severity.WARNING, rule.warning), (Severity.CRITICAL, rule.critical))
    return {severity: f"{value} > {_number(level)}" for severity, level in levels if level is not None}


def _literal(text: str) -> str:
    # Annotations are Go templates: user text must not open an action.
    return text.replace("{{", '{{ "{{" }}')


def _summary(rule: ThresholdRule, severity: Severity, level: float) -> str:
    window = prometheus_duration(rule.window)
    where = " ".join(f"{{{{ $labels.{LABELS[p]} }}}}" for p in rule.per)
    if rule.compare == "percent_change":
        what = f'errors changed by {{{{ $value | printf "%.0f" }}}}% over the previous {window}'
    elif rule.measure == "rate":
        what = f'{{{{ $value | printf "%.3g" }}}} errors/s over {window}'
    else:
        what = f'{{{{ $value | printf "%.0f" }}}} errors in {window}'
    prefix = f"{where}: " if where else ""
    return f"{prefix}{what} (above the {severity.value} level {_number(level)})"


def _rule_entries(stored: StoredRule, rule: ThresholdRule) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    levels = {Severity.WARNING: rule.warning, Severity.CRITICAL: rule.critical}
    for severity, expr in threshold_exprs(rule).items():
        level = levels[severity]
        assert level is not None
        entry: dict[str, object] = {"alert": rule.name, "expr": expr}
        if rule.for_ > 0:
            entry["for"] = prometheus_duration(rule.for_)
        entry["labels"] = {**rule.labels, "severity": severity.value, "rule": str(stored.id)}
        annotations = {"summary": _summary(rule, severity, level)}
        if rule.description:
            annotations["description"] = _literal(rule.description)
        entry["annotations"] = annotations
        entries.append(entry)
    return entries


def render(rules: Iterable[StoredRule], *, group: str = "appguard") -> str:
    """A Prometheus rules file (``groups:``) of the enabled threshold rules among ``rules``."""
    entries: list[dict[str, object]] = []
    skipped: list[str] = []
    for stored in rules:
        spec = stored.spec
        if not isinstance(spec, ThresholdRule) or not spec.enabled:
            continue
        if spec.filters.level:
            skipped.append(f"#   {spec.name} (rule {stored.id}): filters.level has no label on {METRIC}")
            continue
        entries += _rule_entries(stored, spec)
    header = [
        "# Prometheus alerting rules exported by AppGuard from its enabled threshold rules.",
        f"# They read {METRIC}, counted by the errormetrics connector.",
    ]
    if skipped:
        header += ["# Left out, as they cannot be written in PromQL:", *skipped]
    body = yaml.safe_dump(
        {"groups": [{"name": group, "rules": entries}]}, sort_keys=False, allow_unicode=True, width=1000
    )
    return "\n".join(header) + "\n" + body
