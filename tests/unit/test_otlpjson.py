"""OTLP/JSON codec: the specification's deviations from proto3 JSON, both ways."""

from __future__ import annotations

import json

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData

from collector import otlpjson
from collector.pdata import InvalidData, Signal

TRACE_ID = "5B8EFFF798038103D269B633813FC60C"
SPAN_ID = "EEE19B7EC3C1B174"
PARENT_ID = "eee19b7ec3c1b173"

# The example request of the OTLP specification's repository, trimmed, with the liberties a
# receiver must accept: string and number int64s, enum names and numbers, snake_case keys,
# unknown fields.
TRACES_JSON = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]},
            "scope_spans": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "spans": [
                        {
                            "traceId": TRACE_ID,
                            "span_id": SPAN_ID,
                            "parentSpanId": PARENT_ID,
                            "name": "I'm a server span",
                            "startTimeUnixNano": "1544712660000000000",
                            "end_time_unix_nano": 1544712661000000000,
                            "kind": "SPAN_KIND_SERVER",
                            "status": {"code": 2, "message": "boom"},
                            "attributes": [
                                {"key": "my.span.attr", "value": {"intValue": "42"}},
                                {"key": "bytes", "value": {"bytesValue": "AQID"}},
                            ],
                            "links": [{"trace_id": "00000000000000000000000000000001", "spanId": "0000000000000002"}],
                            "aFieldFromTheFuture": {"nested": [1, 2]},
                        }
                    ],
                }
            ],
        }
    ]
}


def _bytes(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def test_traces_decode_with_every_liberty() -> None:
    msg = otlpjson.parse_request(Signal.TRACES, json.dumps(TRACES_JSON).encode())
    assert isinstance(msg, ExportTraceServiceRequest)
    rs = msg.resource_spans[0]
    assert rs.resource.attributes[0].value.string_value == "my.service"
    assert rs.scope_spans[0].scope.version == "1.0.0"
    span = rs.scope_spans[0].spans[0]
    assert span.trace_id == _bytes(TRACE_ID)
    assert span.span_id == _bytes(SPAN_ID)
    assert span.parent_span_id == _bytes(PARENT_ID)
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.end_time_unix_nano == 1544712661000000000
    assert span.kind == Span.SPAN_KIND_SERVER
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert span.attributes[0].value.int_value == 42
    # only ids are hex: other bytes stay base64 as proto3 JSON has them
    assert span.attributes[1].value.bytes_value == b"\x01\x02\x03"
    assert span.links[0].trace_id == _bytes("00000000000000000000000000000001")
    assert span.links[0].span_id == _bytes("0000000000000002")


def test_logs_and_metric_exemplar_ids_are_hex() -> None:
    logs = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"traceId": TRACE_ID, "spanId": SPAN_ID, "severityNumber": "SEVERITY_NUMBER_ERROR", "body": {"stringValue": "x"}}]}]}
        ]
    }
    msg = otlpjson.parse_request(Signal.LOGS, json.dumps(logs))
    assert isinstance(msg, ExportLogsServiceRequest)
    rec = msg.resource_logs[0].scope_logs[0].log_records[0]
    assert (rec.trace_id, rec.span_id, rec.severity_number) == (_bytes(TRACE_ID), _bytes(SPAN_ID), 17)

    metrics = {
        "resource_metrics": [
            {
                "scope_metrics": [
                    {
                        "metrics": [
                            {
                                "name": "requests",
                                "sum": {
                                    "aggregationTemporality": 2,
                                    "isMonotonic": True,
                                    "data_points": [
                                        {"asInt": "7", "timeUnixNano": "1", "exemplars": [{"asDouble": 1.5, "trace_id": TRACE_ID, "span_id": SPAN_ID}]}
                                    ],
                                },
                            },
                            {"name": "h", "exponentialHistogram": {"dataPoints": [{"count": "3", "exemplars": [{"spanId": SPAN_ID}]}]}},
                        ]
                    }
                ]
            }
        ]
    }
    m = otlpjson.parse_request(Signal.METRICS, json.dumps(metrics).encode())
    assert isinstance(m, ExportMetricsServiceRequest)
    metric = m.resource_metrics[0].scope_metrics[0].metrics[0]
    point = metric.sum.data_points[0]
    assert point.as_int == 7 and metric.sum.is_monotonic
    assert point.exemplars[0].trace_id == _bytes(TRACE_ID)
    assert point.exemplars[0].span_id == _bytes(SPAN_ID)
    exp = m.resource_metrics[0].scope_metrics[0].metrics[1].exponential_histogram.data_points[0]
    assert exp.count == 3 and exp.exemplars[0].span_id == _bytes(SPAN_ID)


def test_encode_uses_hex_ids_camel_case_and_integer_enums() -> None:
    msg = otlpjson.parse_request(Signal.TRACES, json.dumps(TRACES_JSON))
    doc = json.loads(otlpjson.dumps(msg))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == TRACE_ID.lower()
    assert span["spanId"] == SPAN_ID.lower()
    assert span["parentSpanId"] == PARENT_ID
    assert span["links"][0] == {"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002"}
    assert span["kind"] == 2
    assert span["startTimeUnixNano"] == "1544712660000000000"
    assert "aFieldFromTheFuture" not in span


def test_round_trip_of_data_documents() -> None:
    # TracesData (what the file exporter writes) has the same shape as the export request.
    data = TracesData()
    span = data.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(16)), bytes(range(8)), "x"
    text = otlpjson.dumps(data)
    assert b'"traceId":"000102030405060708090a0b0c0d0e0f"' in text
    assert otlpjson.parse(text, TracesData) == data


def test_encode_other_messages_plainly() -> None:
    status = status_pb2.Status(code=3, message="bad")
    assert json.loads(otlpjson.dumps(status)) == {"code": 3, "message": "bad"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"resourceSpans": [', "invalid JSON"),
        (b"[]", "must be an object"),
        (b'{"resourceSpans": 7}', "resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "startTimeUnixNano"),
    ],
)
def test_bad_documents(body: bytes, expected: str) -> None:
    with pytest.raises(InvalidData, match=expected):
        otlpjson.parse_request(Signal.TRACES, body)


@pytest.mark.parametrize(
    ("span", "field"),
    [
        ({"traceId": "abcd"}, "resourceSpans[0].scopeSpans[0].spans[1].traceId"),
        ({"spanId": TRACE_ID}, "resourceSpans[0].scopeSpans[0].spans[1].spanId"),
        ({"parent_span_id": "zz" * 8}, "resourceSpans[0].scopeSpans[0].spans[1].parent_span_id"),
        ({"links": [{}, {"spanId": "0102030405 6070"}]}, "resourceSpans[0].scopeSpans[0].spans[1].links[1].spanId"),
        ({"traceId": 12}, "resourceSpans[0].scopeSpans[0].spans[1].traceId"),
        # base64, as plain proto3 JSON would write it, is not what OTLP/JSON carries
        ({"traceId": "W47/95gDgQPSabYzgT/GDA=="}, "resourceSpans[0].scopeSpans[0].spans[1].traceId"),
    ],
)
def test_bad_ids_name_the_field(span: dict[str, object], field: str) -> None:
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE_ID}, span]}]}]}
    with pytest.raises(InvalidData) as info:
        otlpjson.parse_request(Signal.TRACES, json.dumps(doc))
    assert str(info.value).startswith(field + ":")


def test_bad_log_record_id() -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"spanId": "0011"}]}]}]}
    with pytest.raises(InvalidData, match=r"resourceLogs\[0\]\.scopeLogs\[0\]\.logRecords\[0\]\.spanId"):
        otlpjson.parse_request(Signal.LOGS, json.dumps(doc))


def test_empty_ids_and_empty_document() -> None:
    msg = otlpjson.parse_request(Signal.TRACES, b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","name":"n"}]}]}]}')
    assert msg.resource_spans[0].scope_spans[0].spans[0].trace_id == b""  # type: ignore[union-attr]
    assert otlpjson.parse_request(Signal.LOGS, b"{}") == ExportLogsServiceRequest()
