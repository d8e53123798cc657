"""Splicing re-encoded resources into received request bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.wire import WireError, encode_varint, replace_resources


def _request(n_resources: int, spans: int) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for r in range(n_resources):
        rs = req.resource_spans.add(schema_url=f"https://schema/{r}")
        if r % 2 == 0:
            rs.resource.attributes.add(key="service.name").value.string_value = f"svc{r}"
        for s in range(2):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}"
            for i in range(spans):
                ss.spans.add(name=f"op{i}", trace_id=bytes(16), span_id=i.to_bytes(8, "big") if i else bytes(8))
    return req


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=5),
    spans=st.integers(min_value=0, max_value=4),
    which=st.lists(st.booleans(), min_size=5, max_size=5),
    value=st.text(max_size=300),
)
def test_splice_equals_reencoding(n: int, spans: int, which: list[bool], value: str) -> None:
    req = _request(n, spans)
    raw = req.SerializeToString()
    new: list[bytes | None] = []
    for i, rs in enumerate(req.resource_spans):
        if which[i]:
            rs.resource.attributes.add(key="deployment.environment.name").value.string_value = value
            new.append(rs.resource.SerializeToString())
        else:
            new.append(None)
    spliced = replace_resources(raw, new)
    assert ExportTraceServiceRequest.FromString(spliced) == req
    assert spliced == req.SerializeToString()


def test_resource_added_where_there_was_none_and_unknown_fields_kept() -> None:
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    # an unknown top-level field (number 9, varint) must survive the splice untouched
    raw = req.SerializeToString() + b"\x48" + encode_varint(300)
    req.resource_logs[0].resource.attributes.add(key="k").value.int_value = 7
    spliced = replace_resources(raw, [req.resource_logs[0].resource.SerializeToString()])
    parsed = ExportLogsServiceRequest.FromString(spliced)
    assert parsed.resource_logs[0].resource == req.resource_logs[0].resource
    assert parsed.resource_logs[0].scope_logs == req.resource_logs[0].scope_logs
    assert spliced.endswith(b"\x48" + encode_varint(300))


def test_bad_bytes_and_wrong_count() -> None:
    raw = _request(2, 1).SerializeToString()
    with pytest.raises(WireError):
        replace_resources(raw[:-3], [None, None])
    with pytest.raises(WireError, match="2 resource entries, 1 were given"):
        replace_resources(raw, [None])
