"""A minimal OTLP/gRPC sink for benchmarks: accepts every export, counts bytes and calls.

It does not parse what it gets, so it costs the collector under test as little as possible.
Prints its counts as JSON when it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import grpc

_SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": None,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": None,
    "opentelemetry.proto.collector.logs.v1.LogsService": None,
}


async def serve(port: int) -> None:
    counts = {"calls": 0, "bytes": 0}

    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        counts["calls"] += 1
        counts["bytes"] += len(request)
        return b""  # an empty Export*ServiceResponse

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    for service in _SERVICES:
        handler = grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)
    print(json.dumps(counts), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    asyncio.run(serve(p.parse_args().port))


if __name__ == "__main__":
    main()
