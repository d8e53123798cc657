"""OTLP log records to Loki streams: labels, lines, structured metadata and tenants.

Each record becomes one Loki entry (timestamp, line, structured metadata) in the stream named
by its labels, in the push of its tenant. The rules are the stock Loki exporter's
(``pkg/translator/loki``), plus AppGuard's ``labels`` mapping and structured metadata:

* **Labels**, later ones winning on a name: the default labels (``exporter="OTLP"``, ``job``
  from ``service.namespace``/``service.name``, ``instance`` from ``service.instance.id``), the
  ``labels`` config's resource attributes, the ``loki.resource.labels`` hint on the resource,
  then per record ``level`` (from the ``level`` attribute, else the severity number's name),
  the ``labels`` config's attributes and record fields, and the ``loki.resource.labels`` /
  ``loki.attribute.labels`` hints on the record. Names are made Prometheus-valid (invalid
  characters become ``_``, a leading digit gets ``key_``); empty values are left out, as Loki
  drops them. Beyond ``max_label_names_per_series`` names, and for names or values longer
  than Loki accepts, a label is moved to the entry's structured metadata instead, so no data
  is lost to a 400.
* An attribute made a label, and every ``loki.*`` hint, is left out of the line and of the
  structured metadata.
* **Structured metadata** (Loki 3): ``trace_id`` and ``span_id`` (hex), then the record's
  other attributes and optionally the resource's, with sanitized names and string values,
  within Loki's default count and size limits.
* **Tenant**: the attribute named by a ``loki.tenant`` hint (resource first, then record),
  else the configured ``tenant``. Each tenant is a separate push.
* **Timestamp**: ``time_unix_nano``, else ``observed_time_unix_nano``, else now. Entries of a
  stream are sorted by timestamp, so Loki's per-stream order window never refuses them.

The work per record is kept to one pass over its attributes; what depends on the resource or
the scope is computed once for them, and a label set is formatted once per request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporters.loki import lines, wire
from processors._attraction import value_as_string

HINT_ATTRIBUTES = "loki.attribute.labels"
HINT_RESOURCES = "loki.resource.labels"
HINT_TENANT = "loki.tenant"
HINT_FORMAT = "loki.format"
HINTS = frozenset({HINT_ATTRIBUTES, HINT_RESOURCES, HINT_TENANT, HINT_FORMAT})

RECORD_FIELDS = ("traceID", "spanID", "severity", "severityN")

# Loki's default limits (limits_config), which a push must stay within to be accepted.
MAX_LABEL_NAMES_PER_SERIES = 15
MAX_LABEL_NAME_LENGTH = 1024
MAX_LABEL_VALUE_LENGTH = 2048
MAX_METADATA_ENTRIES = 128
MAX_METADATA_SIZE = 64 * 1024

# The ``level`` label for each OTLP severity number, as the stock exporter names them.
SEVERITY_LEVELS = (
    "UNSPECIFIED",
    *(f"{name}{n if n > 1 else ''}" for name in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL") for n in range(1, 5)),
)

_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_VALID_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_CACHE_LIMIT = 4096
_label_names: dict[str, str] = {}
_metadata_pairs: dict[tuple[str, str], tuple[bytes, int]] = {}


def label_name(name: str) -> str:
    """A Prometheus-valid label name for an attribute key (``service.name`` -> ``service_name``)."""
    out = _label_names.get(name)
    if out is None:
        out = _INVALID_LABEL_CHARS.sub("_", name)
        if out[:1].isdigit():
            out = "key_" + out
        if len(_label_names) >= _CACHE_LIMIT:
            _label_names.clear()
        _label_names[name] = out
    return out


def valid_label_name(name: str) -> bool:
    """Whether ``name`` matches ``[a-zA-Z_][a-zA-Z0-9_]*``."""
    return _VALID_LABEL_NAME.match(name) is not None


def quote(value: str) -> str:
    """A label value as a double-quoted string Loki's label parser reads back unchanged."""
    # JSON escaping is a subset of the Go escapes the PromQL lexer accepts, and it escapes
    # every character (newline, quote, backslash, controls) the lexer refuses raw.
    return lines.dumps(value)


def label_string(labels: list[tuple[str, str]]) -> str:
    """``{a="x", b="y"}``, sorted by name, as Prometheus and Loki write a label set."""
    labels.sort()
    return "{" + ", ".join(f"{name}={quote(value)}" for name, value in labels) + "}"


def metadata_pair(name: str, value: str) -> tuple[bytes, int]:
    """An encoded structured metadata pair and its size as Loki counts it (name + value bytes)."""
    return wire.metadata_pair(name, value), len(name.encode()) + len(value.encode())


def attribute_metadata(key: str, value: str) -> tuple[bytes, int]:
    """:func:`metadata_pair` for an attribute (its key sanitized), cached: pairs repeat."""
    found = _metadata_pairs.get((key, value))
    if found is None:
        found = metadata_pair(label_name(key), value)
        if len(_metadata_pairs) >= _CACHE_LIMIT:
            _metadata_pairs.clear()
        _metadata_pairs[(key, value)] = found
    return found


def as_string(value: AnyValue) -> str:
    """A value as text, as ``pcommon.Value.AsString`` gives it (label and metadata values)."""
    if value.WhichOneof("value") == "string_value":
        return value.string_value
    return value_as_string(value)


def hint_names(value: AnyValue) -> list[str]:
    """The attribute names a hint lists: comma-separated text or a list of strings."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        names = value.string_value.split(",")
    elif kind == "array_value":
        names = [as_string(v) for v in value.array_value.values]
    else:
        names = [as_string(value)]
    return [n.strip() for n in names if n.strip()]


def lookup(attrs: Mapping[str, AnyValue], name: str) -> AnyValue | None:
    """The attribute ``name``, also inside maps: ``a.b.c`` finds key ``b.c`` of map ``a``, etc."""
    found = attrs.get(name)
    if found is not None:
        return found
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        outer = attrs.get(".".join(parts[:cut]))
        if outer is not None and outer.WhichOneof("value") == "kvlist_value":
            inner = {kv.key: kv.value for kv in outer.kvlist_value.values}
            return lookup(inner, ".".join(parts[cut:]))
    return None


@dataclass(frozen=True)
class LabelRules:
    """What the exporter's config says about labels, lines and metadata, ready for use."""

    exporter_label: bool = True
    job_label: bool = True
    instance_label: bool = True
    level_label: bool = True
    resource_labels: Mapping[str, str] = field(default_factory=dict)
    attribute_labels: Mapping[str, str] = field(default_factory=dict)
    record_labels: Mapping[str, str] = field(default_factory=dict)
    format: str = "json"
    tenant: str | None = None
    metadata: bool = True
    metadata_trace_context: bool = True
    metadata_attributes: bool = True
    metadata_resource: bool = False
    max_label_names: int = MAX_LABEL_NAMES_PER_SERIES
    max_metadata_entries: int = MAX_METADATA_ENTRIES
    max_metadata_size: int = MAX_METADATA_SIZE


@dataclass
class TenantPush:
    """The entries of one tenant in a request, by stream label string."""

    tenant: str | None
    streams: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)
    records: int = 0

    def encode(self) -> bytes:
        """The serialized PushRequest, entries of each stream in timestamp order."""
        out = []
        by_time = itemgetter(0)
        for labels, entries in self.streams.items():
            entries.sort(key=by_time)
            out.append(wire.stream(labels, [e for _, e in entries]))
        return wire.push_request(out)


@dataclass
class Conversion:
    """A request's records as per-tenant pushes, and the records that could not be sent."""

    pushes: list[TenantPush]
    records: int
    dropped: int


@dataclass
class _Resource:
    """What every record of one resource shares."""

    attrs: dict[str, AnyValue]
    labels: dict[str, str]
    items: list[tuple[str, AnyValue]]  # attributes for the line, hints and labels taken out
    line_json: bytes
    line_logfmt: list[tuple[str, Any]]
    metadata: list[tuple[bytes, int]]
    format: str | None
    tenant_attr: str | None
    tenant: str | None  # resolved already when the named attribute is the resource's


@dataclass
class _Target:
    """Where the records with one label set go, and what their labels left to metadata."""

    entries: list[tuple[int, bytes]]
    metadata: list[tuple[bytes, int]]


class Converter:
    """Turns OTLP log requests into Loki pushes under a set of :class:`LabelRules`."""

    def __init__(self, rules: LabelRules, logger: logging.Logger) -> None:
        self.rules = rules
        self.logger = logger
        self._warned: set[str] = set()

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a data problem the first time it is seen, so a steady flow does not flood the log."""
        if key not in self._warned:
            self._warned.add(key)
            self.logger.warning(message + " (logged once)", *args)

    # ---- per resource

    def _resource(self, resource: Resource) -> _Resource:
        rules = self.rules
        attrs: dict[str, AnyValue] = {}
        items: list[tuple[str, AnyValue]] = []
        for kv in resource.attributes:
            attrs[kv.key] = kv.value
            if kv.key not in HINTS:
                items.append((kv.key, kv.value))
        labels: dict[str, str] = {}
        if rules.exporter_label:
            labels["exporter"] = "OTLP"
        if rules.job_label and "service.name" in attrs:
            job = as_string(attrs["service.name"])
            if "service.namespace" in attrs:
                job = f"{as_string(attrs['service.namespace'])}/{job}"
            labels["job"] = job
        if rules.instance_label and "service.instance.id" in attrs:
            labels["instance"] = as_string(attrs["service.instance.id"])
        promoted: set[str] = set()
        for key, name in rules.resource_labels.items():
            value = attrs.get(key)
            if value is not None:
                labels[name] = as_string(value)
                promoted.add(key)
        hint = attrs.get(HINT_RESOURCES)
        if hint is not None:
            promoted |= self._hinted(attrs, hint, labels)
        if promoted:
            items = [(k, v) for k, v in items if k not in promoted]
        fmt = attrs.get(HINT_FORMAT)
        tenant_hint = attrs.get(HINT_TENANT)
        tenant_attr = as_string(tenant_hint) if tenant_hint is not None else None
        tenant = None
        if tenant_attr is not None and tenant_attr in attrs:
            tenant = _tenant_value(attrs[tenant_attr])
        return _Resource(
            attrs=attrs,
            labels=labels,
            items=items,
            line_json=self._resources_json(items),
            line_logfmt=self._resources_logfmt(items),
            metadata=self._resource_metadata(items),
            format=as_string(fmt) if fmt is not None else None,
            tenant_attr=tenant_attr,
            tenant=tenant,
        )

    @staticmethod
    def _hinted(attrs: Mapping[str, AnyValue], hint: AnyValue, labels: dict[str, str]) -> set[str]:
        """Add the labels a hint names; return the attribute keys that became labels."""
        taken = set()
        for name in hint_names(hint):
            value = lookup(attrs, name)
            if value is not None:
                labels[label_name(name)] = as_string(value)
                taken.add(name)
        return taken

    @staticmethod
    def _resources_json(items: list[tuple[str, AnyValue]]) -> bytes:
        return lines.json_member("resources", {k: lines.raw_value(v) for k, v in items}) if items else b""

    @staticmethod
    def _resources_logfmt(items: list[tuple[str, AnyValue]]) -> list[tuple[str, Any]]:
        return lines.prefixed_pairs("resource_", [(k, lines.raw_value(v)) for k, v in items])

    def _resource_metadata(self, items: list[tuple[str, AnyValue]]) -> list[tuple[bytes, int]]:
        rules = self.rules
        if not (rules.metadata and rules.metadata_resource):
            return []
        return [attribute_metadata(k, as_string(v)) for k, v in items]

    # ---- per label set

    def _target(self, push: TenantPush, labels: dict[str, str]) -> _Target | None:
        """The stream for a label set (``None`` when no label is left), made Loki-valid."""
        rules = self.rules
        kept: list[tuple[str, str]] = []
        moved: list[tuple[bytes, int]] = []
        for name, value in labels.items():
            if not value or not name:
                continue
            if len(name.encode()) > MAX_LABEL_NAME_LENGTH or len(value.encode()) > MAX_LABEL_VALUE_LENGTH:
                self.warn_once("label-length", "label %s is longer than Loki accepts: sent as structured metadata instead", name)
                moved.append(metadata_pair(name, value))
            elif len(kept) >= rules.max_label_names:
                self.warn_once(
                    "label-count", "more than %d labels for a stream: %s and the labels after it are sent as structured metadata",
                    rules.max_label_names, name,
                )
                moved.append(metadata_pair(name, value))
            else:
                kept.append((name, value))
        if not kept:
            return None
        entries = push.streams.setdefault(label_string(kept), [])
        return _Target(entries, moved)

    # ---- per request

    def convert(self, message: ExportLogsServiceRequest, now_ns: int | None = None) -> Conversion:
        """Convert one OTLP logs request into one push per tenant."""
        rules = self.rules
        now = time.time_ns() if now_ns is None else now_ns
        pushes: dict[str | None, TenantPush] = {}
        targets: dict[tuple[Any, ...], _Target | None] = {}
        records = dropped = 0
        level_label = rules.level_label
        attribute_labels = rules.attribute_labels
        record_labels = rules.record_labels
        want_metadata = rules.metadata
        metadata_attrs = want_metadata and rules.metadata_attributes
        trace_context = want_metadata and rules.metadata_trace_context
        max_entries, max_size = rules.max_metadata_entries, rules.max_metadata_size
        encode_entry = wire.entry
        raw_value = lines.raw_value
        cached_pair = _metadata_pairs.get
        for r_index, rl in enumerate(message.resource_logs):
            res = self._resource(rl.resource)
            for sl in rl.scope_logs:
                scope_json = lines.scope_json(sl.scope)
                scope_logfmt = lines.scope_logfmt(sl.scope)
                tail = _join(res.line_json, scope_json)
                for rec in sl.log_records:
                    records += 1
                    severity = rec.severity_number
                    rec_labels: list[tuple[str, str]] = []
                    # (key, plain value, the AnyValue unless the value is a string): each
                    # attribute is read from the message once.
                    kept: list[Attr] = []
                    hints: dict[str, AnyValue] | None = None
                    level: str | None = None
                    for kv in rec.attributes:
                        key = kv.key
                        value = kv.value
                        if value.WhichOneof("value") == "string_value":
                            attr: Attr = (key, value.string_value, None)
                        else:
                            attr = (key, raw_value(value), value)
                        if key in HINTS:
                            if hints is None:
                                hints = {}
                            hints[key] = value
                            continue
                        name = attribute_labels.get(key)
                        if name is not None:
                            rec_labels.append((name, _text(attr)))
                        elif key == "level" and level_label and severity:
                            level = _text(attr)
                        else:
                            kept.append(attr)
                    if level_label and severity:
                        rec_labels.insert(0, ("level", level if level is not None else _level(severity)))
                    trace_hex = rec.trace_id.hex() if rec.trace_id else ""
                    span_hex = rec.span_id.hex() if rec.span_id else ""
                    if record_labels:
                        self._record_labels(rec, trace_hex, span_hex, rec_labels)
                    line_json, line_logfmt, res_metadata = tail, res.line_logfmt, res.metadata
                    fmt = res.format
                    tenant = res.tenant
                    if hints is not None:
                        line_json, line_logfmt, res_metadata, kept, fmt_hint = self._record_hints(
                            res, hints, kept, rec_labels, scope_json
                        )
                        fmt = fmt or fmt_hint
                    if tenant is None and (res.tenant_attr is not None or (hints and HINT_TENANT in hints)):
                        tenant = self._tenant(res, hints, rec.attributes)
                    tenant = tenant or rules.tenant
                    push = pushes.get(tenant)
                    if push is None:
                        push = pushes[tenant] = TenantPush(tenant)

                    stream_key = (tenant, r_index, *rec_labels)
                    target = targets.get(stream_key, _MISSING)
                    if target is _MISSING:
                        labels = dict(res.labels)
                        labels.update(rec_labels)
                        target = targets[stream_key] = self._target(push, labels)
                    if target is None:
                        dropped += 1
                        self.warn_once("no-labels", "a log record has no label at all: Loki refuses it, dropped")
                        continue
                    push.records += 1

                    # The line.
                    fmt = rules.format if fmt is None else self._format(fmt)
                    if fmt == "json":
                        record: dict[str, Any] = {}
                        if rec.HasField("body"):
                            record["body"] = raw_value(rec.body)
                        if trace_hex:
                            record["traceid"] = trace_hex
                        if span_hex:
                            record["spanid"] = span_hex
                        if rec.severity_text:
                            record["severity"] = rec.severity_text
                        if rec.flags:
                            record["flags"] = rec.flags
                        if kept:
                            record["attributes"] = {k: v for k, v, _ in kept}
                        line = lines.json_line(record, line_json)
                    elif fmt == "logfmt":
                        line = self._logfmt(rec, trace_hex, span_hex, kept, line_logfmt, scope_logfmt).encode()
                    else:
                        line = as_string(rec.body).encode() if rec.HasField("body") else b""

                    # The structured metadata.
                    metadata = b""
                    if want_metadata:
                        parts: list[bytes] = []
                        size = 0
                        if trace_context:
                            if trace_hex:
                                parts.append(_id_metadata("trace_id", trace_hex, _TRACE_ID_PAIR, 32))
                                size += 8 + len(trace_hex)
                            if span_hex:
                                parts.append(_id_metadata("span_id", span_hex, _SPAN_ID_PAIR, 16))
                                size += 7 + len(span_hex)
                        extra = target.metadata
                        if metadata_attrs and kept:
                            extra = [
                                cached_pair((k, raw)) or attribute_metadata(k, raw)
                                if value is None
                                else attribute_metadata(k, value_as_string(value))
                                for k, raw, value in kept
                            ] + extra
                        if res_metadata:
                            extra = extra + res_metadata
                        for encoded, n in extra:
                            if len(parts) >= max_entries or size + n > max_size:
                                self.warn_once(
                                    "metadata-limit", "structured metadata of an entry beyond %d pairs or %d bytes left out",
                                    max_entries, max_size,
                                )
                                break
                            parts.append(encoded)
                            size += n
                        metadata = b"".join(parts)
                    ts = rec.time_unix_nano or rec.observed_time_unix_nano or now
                    target.entries.append((ts, encode_entry(ts, line, metadata)))
        return Conversion([p for p in pushes.values() if p.records], records, dropped)

    # ---- the slower paths, taken only by records that need them

    def _record_labels(self, rec: Any, trace_hex: str, span_hex: str, out: list[tuple[str, str]]) -> None:
        values = {
            "traceID": trace_hex,
            "spanID": span_hex,
            "severity": rec.severity_text,
            "severityN": str(rec.severity_number) if rec.severity_number else "",
        }
        for field_name, name in self.rules.record_labels.items():
            if values[field_name]:
                out.append((name, values[field_name]))

    def _record_hints(
        self,
        res: _Resource,
        hints: dict[str, AnyValue],
        kept: list[Attr],
        rec_labels: list[tuple[str, str]],
        scope_json: bytes,
    ) -> tuple[bytes, list[tuple[str, Any]], list[tuple[bytes, int]], list[Attr], str | None]:
        """Apply a record's own hints: labels taken from its resource or attributes, its format."""
        line_json = _join(res.line_json, scope_json)
        line_logfmt, res_metadata = res.line_logfmt, res.metadata
        hint = hints.get(HINT_RESOURCES)
        if hint is not None:
            labels: dict[str, str] = {}
            taken = self._hinted(res.attrs, hint, labels)
            rec_labels.extend(labels.items())
            if taken:
                res_items = [(k, v) for k, v in res.items if k not in taken]
                line_json = _join(self._resources_json(res_items), scope_json)
                line_logfmt = self._resources_logfmt(res_items)
                res_metadata = self._resource_metadata(res_items)
        hint = hints.get(HINT_ATTRIBUTES)
        if hint is not None:
            labels = {}
            attrs = {k: AnyValue(string_value=raw) if value is None else value for k, raw, value in kept}
            taken = self._hinted(attrs, hint, labels)
            rec_labels.extend(labels.items())
            if taken:
                kept = [a for a in kept if a[0] not in taken]
        fmt = hints.get(HINT_FORMAT)
        return line_json, line_logfmt, res_metadata, kept, as_string(fmt) if fmt is not None else None

    @staticmethod
    def _tenant(res: _Resource, hints: dict[str, AnyValue] | None, attributes: Any) -> str | None:
        name = res.tenant_attr
        if name is None and hints is not None and HINT_TENANT in hints:
            name = as_string(hints[HINT_TENANT])
        if not name:
            return None
        value = res.attrs.get(name)
        if value is None:
            value = _find(attributes, name)
        return _tenant_value(value) if value is not None else None

    def _format(self, fmt: str) -> str:
        if fmt in lines.FORMATS:
            return fmt
        self.warn_once(f"format-{fmt}", "unknown loki.format hint %r: using %s", fmt, self.rules.format)
        return self.rules.format

    @staticmethod
    def _logfmt(
        rec: Any,
        trace_hex: str,
        span_hex: str,
        kept: list[Attr],
        resource_pairs: list[tuple[str, Any]],
        scope_pairs: list[tuple[str, Any]],
    ) -> str:
        kind = rec.body.WhichOneof("value") if rec.HasField("body") else None
        pairs = lines.body_pairs(kind, lines.raw_value(rec.body) if kind else None)
        if trace_hex:
            lines.set_pair(pairs, "traceID", trace_hex)
        if span_hex:
            lines.set_pair(pairs, "spanID", span_hex)
        if rec.severity_text:
            lines.set_pair(pairs, "severity", rec.severity_text)
        if rec.flags:
            lines.set_pair(pairs, "flags", rec.flags)
        if kept:
            pairs += lines.prefixed_pairs("attribute_", [(k, raw) for k, raw, _ in kept])
        return lines.logfmt(pairs + resource_pairs + scope_pairs)


_MISSING: Any = object()
Attr = tuple[str, Any, AnyValue | None]


def _text(attr: Attr) -> str:
    # A string attribute's value is its text; others are formatted as pcommon does.
    return attr[1] if attr[2] is None else value_as_string(attr[2])


_TRACE_ID_PAIR = wire.metadata_prefix("trace_id", 32)
_SPAN_ID_PAIR = wire.metadata_prefix("span_id", 16)


def _id_metadata(name: str, hex_id: str, prefix: bytes, length: int) -> bytes:
    # pdata lets only full-length ids through, but the fallback keeps any length right.
    return prefix + hex_id.encode() if len(hex_id) == length else wire.metadata_pair(name, hex_id)


def _join(*parts: bytes) -> bytes:
    return b",".join(p for p in parts if p)


def _level(severity: int) -> str:
    return SEVERITY_LEVELS[severity] if 0 <= severity < len(SEVERITY_LEVELS) else "UNSPECIFIED"


def _tenant_value(value: AnyValue) -> str | None:
    # As the stock exporter, only a string attribute names a tenant.
    return value.string_value or None if value.WhichOneof("value") == "string_value" else None


def _find(attributes: Any, name: str) -> AnyValue | None:
    kv: KeyValue
    for kv in attributes:
        if kv.key == name:
            return kv.value
    return None


def rules_from(config: Any) -> LabelRules:
    """The :class:`LabelRules` of an exporter config (see ``LokiExporterConfig``)."""
    labels = config.labels
    defaults = config.default_labels_enabled
    sm = config.structured_metadata

    def targets(mapping: Mapping[str, str], name: Callable[[str], str]) -> dict[str, str]:
        return {key: target or name(key) for key, target in mapping.items()}

    return LabelRules(
        exporter_label=defaults.exporter,
        job_label=defaults.job,
        instance_label=defaults.instance,
        level_label=defaults.level,
        resource_labels=targets(labels.resource, label_name),
        attribute_labels=targets(labels.attributes, label_name),
        record_labels=targets(labels.record, label_name),
        format=config.format,
        tenant=config.tenant or None,
        metadata=sm.enabled,
        metadata_trace_context=sm.trace_context,
        metadata_attributes=sm.attributes,
        metadata_resource=sm.resource,
        max_label_names=config.max_label_names_per_series,
        max_metadata_entries=sm.max_entries,
        max_metadata_size=sm.max_size,
    )
