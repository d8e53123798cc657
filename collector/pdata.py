"""Pipeline data: OTLP export requests travelling between components.

A :class:`Payload` wraps one OTLP export request of one signal. It is parsed once, by the
receiver, into the upb-backed ``opentelemetry.proto`` message; while no stage mutates it, the
bytes it arrived as stay attached, so an OTLP exporter can send them on without serializing
again. A stage that changes the data asks for :meth:`Payload.mutable`, which detaches the
bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric


class Signal(enum.StrEnum):
    """The three OTLP signals; the value is the name used in YAML pipeline ids."""

    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"

    @property
    def item_name(self) -> str:
        """The name of one item, as used in the self-telemetry metric names."""
        return _ITEM_NAMES[self]


_ITEM_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}

ExportRequest = ExportTraceServiceRequest | ExportMetricsServiceRequest | ExportLogsServiceRequest
ExportResponse = ExportTraceServiceResponse | ExportMetricsServiceResponse | ExportLogsServiceResponse

REQUEST_TYPES: dict[Signal, type[ExportRequest]] = {
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}
RESPONSE_TYPES: dict[Signal, type[ExportResponse]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}


class InvalidData(ValueError):
    """The bytes or the message are not valid OTLP (a permanent error for the sender)."""


def count_items(signal: Signal, message: ExportRequest) -> int:
    """Number of spans, metric data points or log records in ``message``.

    Works per scope (and per metric for metrics), never per span.
    """
    n = 0
    if signal is Signal.TRACES:
        for rs in message.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                n += len(ss.spans)
    elif signal is Signal.LOGS:
        for rl in message.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                n += len(sl.log_records)
    else:
        for rm in message.resource_metrics:  # type: ignore[union-attr]
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    n += metric_point_count(m)
    return n


def metric_point_count(metric: Metric) -> int:
    """Data points in one metric, whatever its type (0 for a metric without data)."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return 0
    return len(getattr(metric, kind).data_points)


def _check_ids(signal: Signal, message: ExportRequest) -> None:
    # Like the stock collector's pdata, an id is either absent or of its exact length. This is
    # the one per-item pass of the receiver, so it stays minimal: ``(n | 16) != 16`` is true
    # for every length but 0 and 16 (likewise with 8).
    if signal is Signal.TRACES:
        for rs in message.resource_spans:  # type: ignore[union-attr]
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if (
                        (len(span.trace_id) | 16) != 16
                        or (len(span.span_id) | 8) != 8
                        or (len(span.parent_span_id) | 8) != 8
                    ):
                        raise InvalidData("span has a trace_id, span_id or parent_span_id of the wrong length")
                    if span.links:
                        for link in span.links:
                            if (len(link.trace_id) | 16) != 16 or (len(link.span_id) | 8) != 8:
                                raise InvalidData("span link has an id of the wrong length")
    elif signal is Signal.LOGS:
        for rl in message.resource_logs:  # type: ignore[union-attr]
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if (len(rec.trace_id) | 16) != 16 or (len(rec.span_id) | 8) != 8:
                        raise InvalidData("log record has a trace_id or span_id of the wrong length")


def parse_request(signal: Signal, data: bytes, *, check_ids: bool = True) -> ExportRequest:
    """Parse the protobuf bytes of an export request, raising :class:`InvalidData`."""
    try:
        message = REQUEST_TYPES[signal].FromString(data)
    except DecodeError as exc:
        raise InvalidData(f"malformed {signal} protobuf: {exc}") from None
    if check_ids:
        _check_ids(signal, message)
    return message


@dataclass(eq=False)
class Payload:
    """One OTLP export request of one signal, moving through a pipeline.

    ``metadata`` holds the client's request metadata (HTTP headers or gRPC metadata, keys in
    lower case) for processors that read ``from_context`` or batch by ``metadata_keys``.
    """

    signal: Signal
    _message: ExportRequest | None = None
    _raw: bytes | None = None
    items: int = -1
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    client_address: str | None = None

    @classmethod
    def from_message(
        cls,
        signal: Signal,
        message: ExportRequest,
        *,
        raw: bytes | None = None,
        items: int | None = None,
        metadata: Mapping[str, tuple[str, ...]] | None = None,
        client_address: str | None = None,
    ) -> Payload:
        """Wrap a parsed message; ``raw`` may carry the bytes it was parsed from."""
        return cls(
            signal,
            message,
            raw,
            count_items(signal, message) if items is None else items,
            metadata or {},
            client_address,
        )

    @classmethod
    def from_bytes(cls, signal: Signal, raw: bytes, **kwargs: object) -> Payload:
        """Parse ``raw`` (validated) and wrap it with its bytes kept."""
        message = parse_request(signal, raw)
        return cls.from_message(signal, message, raw=raw, **kwargs)  # type: ignore[arg-type]

    @property
    def message(self) -> ExportRequest:
        """The parsed request. Treat it as read-only; call :meth:`mutable` to change it."""
        if self._message is None:
            assert self._raw is not None
            self._message = REQUEST_TYPES[self.signal].FromString(self._raw)
        return self._message

    def mutable(self) -> ExportRequest:
        """The parsed request, for changing in place: the attached bytes are dropped."""
        message = self.message
        self._raw = None
        return message

    def refresh_count(self) -> int:
        """Recount the items after a stage changed the message."""
        self.items = count_items(self.signal, self.message)
        return self.items

    def replace_bytes(self, raw: bytes) -> None:
        """Attach ``raw`` as the encoding of the message a stage just changed in place.

        For a stage that edits the message and re-encodes only what it changed (see
        :mod:`collector.wire`): the caller guarantees that ``raw`` parses to the message.
        """
        self._raw = raw

    def drop_parsed(self) -> None:
        """Free the parsed message while the bytes are attached (it is parsed again on demand)."""
        if self._raw is not None:
            self._message = None

    def to_bytes(self) -> bytes:
        """Protobuf bytes of the request: the received bytes while unchanged."""
        if self._raw is None:
            self._raw = self.message.SerializeToString()
        return self._raw

    @property
    def has_raw(self) -> bool:
        """Whether the bytes as received (or last serialized) are attached."""
        return self._raw is not None

    def copy(self) -> Payload:
        """An independent copy, for a consumer that mutates while others keep the original."""
        if self._raw is not None:
            return Payload(self.signal, None, self._raw, self.items, self.metadata, self.client_address)
        clone = REQUEST_TYPES[self.signal]()
        clone.CopyFrom(self.message)  # type: ignore[arg-type]
        return Payload(self.signal, clone, None, self.items, self.metadata, self.client_address)

    def byte_size(self) -> int:
        """Serialized size in bytes (for the ``bytes`` queue sizer and admission control)."""
        if self._raw is not None:
            return len(self._raw)
        return self.message.ByteSize()

    def is_empty(self) -> bool:
        """True when the request holds no resource at all."""
        msg = self.message
        if self.signal is Signal.TRACES:
            return len(msg.resource_spans) == 0  # type: ignore[union-attr]
        if self.signal is Signal.METRICS:
            return len(msg.resource_metrics) == 0  # type: ignore[union-attr]
        return len(msg.resource_logs) == 0  # type: ignore[union-attr]
