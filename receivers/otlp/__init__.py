"""``otlp``: receives traces, metrics and logs over OTLP/gRPC (4317) and OTLP/HTTP (4318).

The stock otlpreceiver's config keys and answers; see docs/otlp-receiver.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from collector.component import CreateSettings, Factory, Kind
from collector.consumer import Consumer
from collector.pdata import Signal
from receivers.otlp.config import OTLPReceiverConfig
from receivers.otlp.receiver import OTLPReceiver

__all__ = ["OTLPReceiver", "OTLPReceiverConfig", "factory"]


def _create(*, settings: CreateSettings, config: OTLPReceiverConfig, consumers: Mapping[Signal, Consumer]) -> OTLPReceiver:
    return OTLPReceiver(settings, config, consumers)


factory = Factory(
    type="otlp",
    kind=Kind.RECEIVER,
    config_class=OTLPReceiverConfig,
    create=_create,
    signals=frozenset(Signal),
    stability="stable",
    description="receives OTLP over gRPC and HTTP (protobuf and JSON)",
)
