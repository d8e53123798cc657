"""What both transports share: handing a parsed request to the pipelines, and the answers.

A transport parses the request once, wraps it in a :class:`~collector.pdata.Payload` and calls
:meth:`Handoff.push`, which counts it in the receiver's self-telemetry. A refusal comes back as
a :class:`~collector.consumer.ConsumeError`; :func:`refusal` turns it into the OTLP answer, a
``google.rpc.Status`` that gRPC sends as it is and HTTP sends as the body of a 4xx/5xx.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2

from collector.admission import BytesAdmission
from collector.consumer import ConsumeError, Consumer
from collector.pdata import InvalidData, Payload, Signal, count_items, parse_request
from collector.telemetry import ReceiverMetrics

# A RESOURCE_EXHAUSTED answer without RetryInfo tells an OTLP client not to retry, so a
# throttled refusal that names no delay still carries one, of this many seconds.
DEFAULT_THROTTLE_DELAY = 1.0


class Handoff:
    """Hands one transport's parsed requests to the consumer of their signal and counts them."""

    def __init__(
        self,
        consumers: Mapping[Signal, Consumer],
        metrics: ReceiverMetrics,
        logger: logging.Logger,
        admission: BytesAdmission | None = None,
    ) -> None:
        self.consumers = consumers
        self.metrics = metrics
        self.logger = logger
        # Transports hold ``admission.acquire(n)`` from before decoding until the answer.
        self.admission = admission or BytesAdmission(0, 0)

    async def push(self, payload: Payload) -> None:
        """Give ``payload`` to its pipelines; raise :class:`ConsumeError` when they refuse it."""
        n = payload.items
        if n == 0:
            # Nothing to deliver: the OTLP specification answers an empty request with success.
            return
        signal = payload.signal
        consumer = self.consumers[signal]
        try:
            await consumer.consume(payload)
        except ConsumeError as exc:
            if exc.retryable:
                self.metrics.refused(signal, n)
            else:
                self.metrics.failed(signal, n)
            raise
        except Exception as exc:
            # A bug downstream: the client keeps the data (retryable), as the stock collector
            # does with errors it cannot classify, and the log says where it broke.
            self.logger.exception("pipeline failed on %d %s", n, signal.item_name)
            self.metrics.refused(signal, n)
            raise ConsumeError(f"internal error: {exc}", retryable=True) from exc
        self.metrics.accepted(signal, n)


@dataclass(frozen=True)
class Refusal:
    """The answer to a request that was not accepted, for either transport.

    ``retry_after`` is the delay the status's RetryInfo carries (HTTP sends it as
    ``Retry-After``), or ``None`` when the answer names none.
    """

    code: grpc.StatusCode
    http_status: int
    status: status_pb2.Status
    retry_after: float | None


def rpc_status(code: grpc.StatusCode, message: str, *, retry_after: float | None = None, bad_data: bool = False) -> status_pb2.Status:
    """A ``google.rpc.Status`` with RetryInfo (when a delay is known) or BadRequest details."""
    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is not None:
        seconds = math.floor(retry_after)
        delay = Duration(seconds=seconds, nanos=int((retry_after - seconds) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if bad_data:
        violation = error_details_pb2.BadRequest.FieldViolation(description=message)
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    return status


def refusal(exc: ConsumeError) -> Refusal:
    """The OTLP answer to a pipeline's refusal.

    Throttled retryable: RESOURCE_EXHAUSTED with RetryInfo / HTTP 429. Other retryable:
    UNAVAILABLE / 503. Permanent: INVALID_ARGUMENT / 400.
    """
    message = str(exc) or type(exc).__name__
    if exc.retryable and exc.throttled:
        delay = exc.retry_after if exc.retry_after is not None else DEFAULT_THROTTLE_DELAY
        status = rpc_status(grpc.StatusCode.RESOURCE_EXHAUSTED, message, retry_after=delay)
        return Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, status, delay)
    if exc.retryable:
        status = rpc_status(grpc.StatusCode.UNAVAILABLE, message, retry_after=exc.retry_after)
        return Refusal(grpc.StatusCode.UNAVAILABLE, 503, status, exc.retry_after)
    status = rpc_status(grpc.StatusCode.INVALID_ARGUMENT, message, bad_data=True)
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, 400, status, None)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up so the client never comes back early."""
    return str(max(0, math.ceil(seconds)))


def bad_data_count(signal: Signal, data: bytes) -> int:
    """Items in a protobuf request refused as bad data (0 when it does not even parse).

    Only on the error path: a request refused for an id of the wrong length still counts
    its items in the ``failed`` metric.
    """
    try:
        return count_items(signal, parse_request(signal, data, check_ids=False))
    except InvalidData:
        return 0


def client_metadata(pairs: Iterable[tuple[str, str | bytes]]) -> dict[str, tuple[str, ...]]:
    """HTTP headers or gRPC metadata as a payload carries them: values by lower-case key.

    Binary gRPC values (``-bin`` keys) are left out: payload metadata holds text.
    """
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        if isinstance(value, str):
            out.setdefault(key.lower(), []).append(value)
    return {k: tuple(v) for k, v in out.items()}
