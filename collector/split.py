"""Merging export requests into one and splitting one into several of bounded size.

The batch processor and the exporters' batching share these. Both work per resource and per
scope, never per item, except where a single scope (or, for metrics, a single metric) holds
more items than a part may, and must be sliced.

Merging concatenates the requests' resource lists. :func:`merge_payloads` does it on the
protobuf bytes: an export request has a single repeated field, so the concatenation of
serialized requests *is* the serialized merged request. That costs a memory copy, far less
than copying messages, and keeps the zero-copy path to an OTLP exporter
(``bench/bench_batch.py`` measures the alternatives).

Splitting keeps every item under its own resource and scope: the parts repeat the resource
and scope (and metric) headers of the items they carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from collector.pdata import REQUEST_TYPES, ExportRequest, Payload, Signal, metric_point_count

# (resources field, scopes field, items field) of each signal's request.
_FIELDS: dict[Signal, tuple[str, str, str]] = {
    Signal.TRACES: ("resource_spans", "scope_spans", "spans"),
    Signal.METRICS: ("resource_metrics", "scope_metrics", "metrics"),
    Signal.LOGS: ("resource_logs", "scope_logs", "log_records"),
}


def resources_of(signal: Signal, message: ExportRequest) -> Any:
    """The request's repeated field of resource entries (``resource_spans``...)."""
    return getattr(message, _FIELDS[signal][0])


def merge_requests(signal: Signal, messages: Iterable[ExportRequest]) -> ExportRequest:
    """A new request holding the resource entries of ``messages`` in order (inputs unchanged)."""
    out = REQUEST_TYPES[signal]()
    dst = resources_of(signal, out)
    for message in messages:
        for entry in resources_of(signal, message):
            # add().CopyFrom measured cheaper than extend() or MergeFrom() of whole requests.
            dst.add().CopyFrom(entry)
    return out


def merge_payloads(
    signal: Signal,
    payloads: Sequence[Payload],
    *,
    metadata: Mapping[str, tuple[str, ...]] | None = None,
) -> Payload:
    """One new payload with the data of ``payloads``, in order, built from their bytes.

    The result carries the concatenated bytes and no parsed message: an OTLP exporter sends
    the bytes as they are, and a stage that reads the data parses them once, which is cheaper
    than copying the messages. Inputs that have no bytes attached are serialized (and keep
    those bytes, which does not change their data).
    """
    raw = b"".join(p.to_bytes() for p in payloads)
    return Payload(signal, None, raw, sum(p.items for p in payloads), dict(metadata or {}), None)


def split_request(signal: Signal, message: ExportRequest, max_items: int) -> list[ExportRequest]:
    """Requests of at most ``max_items`` items each, together holding ``message``'s data in order.

    Resources and scopes that fit are copied whole; one that does not fit in the part being
    filled but fits in an empty part starts a new part; only one larger than a whole part is
    sliced (its first slice filling the current part). ``message`` is returned as the only
    part when it is small enough, or when ``max_items`` is 0 (no limit); it is never changed.
    """
    if max_items <= 0:
        return [message]
    packer = _Packer(signal, max_items)
    total = sum(packer.size(0, entry) for entry in resources_of(signal, message))
    if total <= max_items:
        return [message]
    for entry in resources_of(signal, message):
        packer.place(0, entry)
    return packer.finish()


def _copy_fields_except(src: Message, dst: Message, skip: str) -> None:
    """Copy every set field of ``src`` into ``dst`` except the one named ``skip``."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


class _Packer:
    """Fills parts in order. Depths: 0 resource, 1 scope, 2 item (metrics: 2 metric, 3 point)."""

    def __init__(self, signal: Signal, max_items: int) -> None:
        self.signal = signal
        self.max = max_items
        self.fields = _FIELDS[signal]
        self.leaf = 3 if signal is Signal.METRICS else 2
        self.parts: list[ExportRequest] = []
        # src[d]: the node at depth d being sliced; open[d]: its header copy in the current part.
        self.src: list[Any] = [None] * self.leaf
        self._new_part()

    def _new_part(self) -> None:
        self.cur = REQUEST_TYPES[self.signal]()
        self.n = 0
        self.open: list[Any] = [None] * self.leaf

    def _close(self) -> None:
        if len(resources_of(self.signal, self.cur)):
            self.parts.append(self.cur)
        self._new_part()

    def finish(self) -> list[ExportRequest]:
        self._close()
        return self.parts

    def children(self, depth: int, node: Any) -> Any:
        """The repeated field of ``node``'s children."""
        if depth < 2:
            return getattr(node, self.fields[depth + 1])
        return getattr(node, node.WhichOneof("data")).data_points  # a metric's points

    def size(self, depth: int, node: Any) -> int:
        """Items under ``node``."""
        if depth == self.leaf:
            return 1
        if depth == 2:
            return metric_point_count(node)
        if depth == 1:
            if self.signal is Signal.METRICS:
                return sum(metric_point_count(m) for m in node.metrics)
            return len(getattr(node, self.fields[2]))
        return sum(self.size(1, scope) for scope in getattr(node, self.fields[1]))

    def _copy_header(self, depth: int, src: Any, dst: Any) -> None:
        if depth < 2:
            _copy_fields_except(src, dst, self.fields[depth + 1])
            return
        kind = src.WhichOneof("data")
        _copy_fields_except(src, dst, kind)
        data = getattr(dst, kind)
        data.SetInParent()
        _copy_fields_except(getattr(src, kind), data, "data_points")

    def _container(self, depth: int) -> Any:
        """Where a node of ``depth`` goes in the current part, adding its ancestors' headers."""
        container = resources_of(self.signal, self.cur)
        for d in range(depth):
            if self.open[d] is None:
                dst = container.add()
                self._copy_header(d, self.src[d], dst)
                self.open[d] = dst
            container = self.children(d, self.open[d])
        return container

    def place(self, depth: int, node: Any) -> None:
        size = self.size(depth, node)
        if size > self.max - self.n and self.n > 0 and size <= self.max:
            self._close()
        if size <= self.max - self.n:
            self._container(depth).add().CopyFrom(node)
            self.n += size
            return
        # Larger than a whole part: slice it one level down.
        self.src[depth] = node
        for d in range(depth, self.leaf):
            self.open[d] = None
        children = self.children(depth, node)
        if depth + 1 < self.leaf:
            for child in children:
                self.place(depth + 1, child)
            return
        start, total = 0, len(children)
        while start < total:
            if self.n == self.max:
                self._close()
            take = min(self.max - self.n, total - start)
            self._container(depth + 1).extend(children[start : start + take])
            self.n += take
            start += take
