"""The collector config: the stock collector's sections, checked before anything starts.

``load_config`` turns merged YAML into a :class:`Config` whose component configs are typed
models, or raises :class:`~collector.confmap.ConfigError` naming the YAML path of the first
problems found (``exporters.otlp/prod.endpoint: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collector.component import ComponentID, Kind
from collector.configtypes import ComponentConfig
from collector.confmap import ConfigError, load_sources
from collector.pdata import Signal
from collector.registry import Registry, default_registry

_TOP_KEYS = ("receivers", "processors", "exporters", "connectors", "extensions", "service")


@dataclass(frozen=True)
class PipelineID:
    """``signal[/name]``: ``traces``, ``logs/errors``..."""

    signal: Signal
    name: str = ""

    def __str__(self) -> str:
        return f"{self.signal.value}/{self.name}" if self.name else self.signal.value


@dataclass
class PipelineConfig:
    """One pipeline's component ids, in order."""

    receivers: list[ComponentID]
    processors: list[ComponentID]
    exporters: list[ComponentID]


class PrometheusPullExporter(BaseModel):
    model_config = ConfigDict(extra="allow")
    host: str = "localhost"
    port: int = Field(8888, ge=0, le=65535)


class _PullExporter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prometheus: PrometheusPullExporter


class _Pull(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exporter: _PullExporter


class MetricReader(BaseModel):
    """One entry of ``service.telemetry.metrics.readers`` (only ``pull`` is served)."""

    model_config = ConfigDict(extra="forbid")
    pull: _Pull


class MetricsTelemetry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    address: str | None = None
    readers: list[MetricReader] | None = None

    def endpoint(self) -> tuple[str, int] | None:
        """Where to serve ``/metrics``, or ``None`` when metrics are off."""
        if self.level == "none":
            return None
        if self.readers:
            prom = self.readers[0].pull.exporter.prometheus
            return prom.host, prom.port
        if self.address:
            host, _, port = self.address.rpartition(":")
            return host or "0.0.0.0", int(port)
        return "localhost", 8888


class LogsTelemetry(BaseModel):
    model_config = ConfigDict(extra="allow")
    level: Literal["debug", "info", "warn", "warning", "error", "DEBUG", "INFO", "WARN", "ERROR"] = "info"
    encoding: Literal["console", "json"] = "console"


class TelemetryConfig(BaseModel):
    """``service.telemetry``: own logs and metrics (``traces`` and ``resource`` accepted)."""

    model_config = ConfigDict(extra="forbid")
    logs: LogsTelemetry = Field(default_factory=LogsTelemetry)
    metrics: MetricsTelemetry = Field(default_factory=MetricsTelemetry)
    traces: dict[str, Any] | None = None
    resource: dict[str, Any] | None = None


@dataclass
class ServiceConfig:
    extensions: list[ComponentID] = field(default_factory=list)
    pipelines: dict[PipelineID, PipelineConfig] = field(default_factory=dict)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    shutdown_timeout: float = 30.0


@dataclass
class Config:
    """A validated config: typed component configs by id, and the service section."""

    receivers: dict[ComponentID, ComponentConfig] = field(default_factory=dict)
    processors: dict[ComponentID, ComponentConfig] = field(default_factory=dict)
    exporters: dict[ComponentID, ComponentConfig] = field(default_factory=dict)
    connectors: dict[ComponentID, ComponentConfig] = field(default_factory=dict)
    extensions: dict[ComponentID, ComponentConfig] = field(default_factory=dict)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def section(self, kind: Kind) -> dict[ComponentID, ComponentConfig]:
        return getattr(self, kind.section)  # type: ignore[no-any-return]


class _Errors:
    """Collects problems so one run reports them all."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.broken = set()

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    # ids present in the YAML whose own config was refused: references to them are not
    # reported again as "not configured"
    broken: set[tuple[Kind, ComponentID]]

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(self.items))


def format_validation_error(base: str, exc: ValidationError) -> list[tuple[str, str]]:
    """Pydantic errors as (YAML path, message) pairs."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
        path = ".".join([base, *loc]) if loc else base
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                msg += f" (got {err['input']!r})"
        out.append((path, msg))
    return out


def _id_list(value: Any, path: str, errors: _Errors) -> list[ComponentID]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add(path, "must be a list of component ids")
        return []
    ids: list[ComponentID] = []
    for i, item in enumerate(value):
        try:
            ids.append(ComponentID.parse(item))
        except ValueError as exc:
            errors.add(f"{path}[{i}]", str(exc))
    return ids


def _parse_components(kind: Kind, raw: Any, registry: Registry, errors: _Errors) -> dict[ComponentID, ComponentConfig]:
    section = kind.section
    out: dict[ComponentID, ComponentConfig] = {}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        errors.add(section, "must be a map of component id to its config")
        return out
    for key, body in raw.items():
        path = f"{section}.{key}"
        try:
            ident = ComponentID.parse(str(key))
        except ValueError as exc:
            errors.add(path, str(exc))
            continue
        factory = registry.get(kind, ident.type)
        errors.broken.add((kind, ident))
        if factory is None:
            known = ", ".join(registry.types(kind)) or "none"
            errors.add(path, f"unknown {kind.value} type {ident.type!r} (known: {known})")
            continue
        if ident in out:
            errors.add(path, f"duplicate {kind.value} id {ident}")
            continue
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            errors.add(path, "must be a map of settings (or empty)")
            continue
        try:
            out[ident] = factory.config_class.model_validate(dict(body))
            errors.broken.discard((kind, ident))
        except ValidationError as exc:
            for p, m in format_validation_error(path, exc):
                errors.add(p, m)
        except ValueError as exc:
            errors.add(path, str(exc))
    return out


def _parse_pipeline_id(key: str) -> PipelineID:
    signal_text, sep, name = str(key).partition("/")
    try:
        signal = Signal(signal_text)
    except ValueError:
        raise ValueError(f"unknown signal {signal_text!r} (use traces, metrics or logs)") from None
    if sep and not name:
        raise ValueError("empty pipeline name after '/'")
    return PipelineID(signal, name)


def _parse_service(raw: Any, cfg: Config, registry: Registry, errors: _Errors) -> None:
    if raw is None:
        errors.add("service", "is missing: a config needs service.pipelines")
        return
    if not isinstance(raw, Mapping):
        errors.add("service", "must be a map")
        return
    for key in raw:
        if key not in ("extensions", "pipelines", "telemetry", "shutdown_timeout"):
            errors.add(f"service.{key}", "unknown key")
    svc = cfg.service
    svc.extensions = _id_list(raw.get("extensions"), "service.extensions", errors)
    for i, ext in enumerate(svc.extensions):
        if ext not in cfg.extensions and (Kind.EXTENSION, ext) not in errors.broken:
            errors.add(f"service.extensions[{i}]", f"references extension {str(ext)!r} which is not configured")
    try:
        svc.telemetry = TelemetryConfig.model_validate(raw.get("telemetry") or {})
    except ValidationError as exc:
        for p, m in format_validation_error("service.telemetry", exc):
            errors.add(p, m)
    if "shutdown_timeout" in raw:
        from collector.configtypes import parse_duration

        try:
            svc.shutdown_timeout = float(parse_duration(raw["shutdown_timeout"]))
        except ValueError as exc:
            errors.add("service.shutdown_timeout", str(exc))
    pipelines = raw.get("pipelines")
    if not isinstance(pipelines, Mapping) or not pipelines:
        errors.add("service.pipelines", "at least one pipeline is required")
        return
    for key, body in pipelines.items():
        path = f"service.pipelines.{key}"
        try:
            pid = _parse_pipeline_id(str(key))
        except ValueError as exc:
            errors.add(path, str(exc))
            continue
        if not isinstance(body, Mapping):
            errors.add(path, "must be a map with receivers, processors and exporters")
            continue
        for k in body:
            if k not in ("receivers", "processors", "exporters"):
                errors.add(f"{path}.{k}", "unknown key")
        pipe = PipelineConfig(
            _id_list(body.get("receivers"), f"{path}.receivers", errors),
            _id_list(body.get("processors"), f"{path}.processors", errors),
            _id_list(body.get("exporters"), f"{path}.exporters", errors),
        )
        _check_pipeline(pid, pipe, path, cfg, registry, errors)
        svc.pipelines[pid] = pipe
    _check_connectors(cfg, registry, errors)


def _check_pipeline(pid: PipelineID, pipe: PipelineConfig, path: str, cfg: Config, registry: Registry, errors: _Errors) -> None:
    if not pipe.receivers:
        errors.add(f"{path}.receivers", "a pipeline needs at least one receiver")
    if not pipe.exporters:
        errors.add(f"{path}.exporters", "a pipeline needs at least one exporter")
    for role, ids, own_kind in (
        ("receivers", pipe.receivers, Kind.RECEIVER),
        ("processors", pipe.processors, Kind.PROCESSOR),
        ("exporters", pipe.exporters, Kind.EXPORTER),
    ):
        seen: set[ComponentID] = set()
        for i, ident in enumerate(ids):
            where = f"{path}.{role}[{i}]"
            if ident in seen:
                errors.add(where, f"{ident} is listed twice")
                continue
            seen.add(ident)
            if ident in cfg.section(own_kind):
                factory = registry.get(own_kind, ident.type)
                if factory is not None and pid.signal not in factory.signals:
                    errors.add(where, f"{own_kind.value} {ident} does not support {pid.signal.value}")
            elif own_kind is not Kind.PROCESSOR and ident in cfg.connectors:
                continue  # checked with the connector's other side
            elif (own_kind, ident) in errors.broken or (Kind.CONNECTOR, ident) in errors.broken:
                continue  # its own config error is already reported
            else:
                kinds = own_kind.value if own_kind is Kind.PROCESSOR else f"{own_kind.value} or connector"
                errors.add(where, f"references {kinds} {str(ident)!r} which is not configured")


def _check_connectors(cfg: Config, registry: Registry, errors: _Errors) -> None:
    for ident in cfg.connectors:
        as_exporter = {p.signal for p, pipe in cfg.service.pipelines.items() if ident in pipe.exporters}
        as_receiver = {p.signal for p, pipe in cfg.service.pipelines.items() if ident in pipe.receivers}
        path = f"connectors.{ident}"
        if not as_exporter or not as_receiver:
            if as_exporter or as_receiver:
                errors.add(path, "a connector must be used both as an exporter and as a receiver")
            continue
        factory = registry.get(Kind.CONNECTOR, ident.type)
        assert factory is not None
        for src in as_exporter:
            if not any((src, dst) in factory.connects for dst in as_receiver):
                errors.add(path, f"connector {ident} cannot take {src.value} to {'/'.join(sorted(s.value for s in as_receiver))}")


def parse_config(raw: Mapping[str, Any], registry: Registry | None = None) -> Config:
    """Check a merged, expanded config tree and build the typed :class:`Config`."""
    registry = registry or default_registry()
    errors = _Errors()
    for key in raw:
        if key not in _TOP_KEYS:
            errors.add(str(key), f"unknown top-level key (expected one of {', '.join(_TOP_KEYS)})")
    cfg = Config()
    for kind in (Kind.RECEIVER, Kind.PROCESSOR, Kind.EXPORTER, Kind.CONNECTOR, Kind.EXTENSION):
        setattr(cfg, kind.section, _parse_components(kind, raw.get(kind.section), registry, errors))
    _parse_service(raw.get("service"), cfg, registry, errors)
    errors.raise_if_any()
    return cfg


def load_config(sources: list[str], registry: Registry | None = None) -> Config:
    """Read the ``--config`` sources and validate them."""
    return parse_config(load_sources(sources), registry)
