"""The otlp receiver's config, loaded from YAML written as the stock otlpreceiver's docs write it."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import parse_config
from collector.configtypes import ServerAuthConfig, TLSServerConfig
from collector.confmap import ConfigError, load_sources
from collector.registry import Registry
from receivers.otlp import OTLPReceiverConfig
from receivers.otlp import factory as otlp_factory
from receivers.otlp.config import CORSConfig, GRPCServerConfig, HTTPServerConfig
from tests.support.components import factories

TESTDATA = Path(__file__).parent / "testdata"


def registry() -> Registry:
    return Registry([*factories(), otlp_factory])


def receivers(name: str) -> dict[str, OTLPReceiverConfig]:
    cfg = parse_config(load_sources([str(TESTDATA / name)]), registry())
    return {str(k): v for k, v in cfg.receivers.items()}  # type: ignore[misc]


def test_defaults_of_both_protocols() -> None:
    r = receivers("otlp_receiver_config.yaml")["otlp"]
    grpc, http = r.protocols.grpc, r.protocols.http
    assert grpc == GRPCServerConfig()
    assert grpc is not None and http is not None
    assert (grpc.endpoint, grpc.transport, grpc.max_recv_msg_size_mib, grpc.read_buffer_size) == ("localhost:4317", "tcp", 4, 512 * 1024)
    assert (grpc.tls, grpc.auth, grpc.include_metadata) == (None, None, False)
    assert http == HTTPServerConfig()
    assert http.endpoint == "localhost:4318"
    assert (http.traces_url_path, http.metrics_url_path, http.logs_url_path) == ("/v1/traces", "/v1/metrics", "/v1/logs")
    assert http.max_request_body_size == 20 * 1024 * 1024
    assert (http.cors, http.tls, http.auth, http.include_metadata) == (None, None, None, False)
    assert http.compression_algorithms == ["", "gzip", "zstd", "zlib", "deflate"]


def test_one_protocol_leaves_the_other_off() -> None:
    r = receivers("otlp_receiver_config.yaml")
    assert r["otlp/only_grpc"].protocols.grpc == GRPCServerConfig()
    assert r["otlp/only_grpc"].protocols.http is None
    for name in ("otlp/only_http_null", "otlp/only_http_empty_map"):
        assert r[name].protocols.grpc is None
        assert r[name].protocols.http == HTTPServerConfig()


def test_stock_testdata_config() -> None:
    r = receivers("otlp_receiver_config.yaml")["otlp/customized"]
    grpc, http = r.protocols.grpc, r.protocols.http
    assert grpc is not None and http is not None
    assert grpc.tls == TLSServerConfig(cert_file="test.crt", key_file="test.key")
    assert (grpc.max_recv_msg_size_mib, grpc.max_recv_msg_bytes) == (32, 32 * 1024 * 1024)
    assert (grpc.max_concurrent_streams, grpc.read_buffer_size, grpc.write_buffer_size) == (16, 1024, 1024)
    params = grpc.keepalive.server_parameters
    assert (params.max_connection_idle, params.max_connection_age, params.max_connection_age_grace) == (11.0, 12.0, 13.0)
    assert (params.time, params.timeout) == (30.0, 5.0)
    assert grpc.keepalive.enforcement_policy.min_time == 10.0
    assert grpc.keepalive.enforcement_policy.permit_without_stream is True
    assert http.auth == ServerAuthConfig(authenticator="test")
    assert http.tls == TLSServerConfig(cert_file="test.crt", key_file="test.key")
    assert http.cors == CORSConfig(allowed_origins=["https://*.test.com", "https://test.com"], max_age=7200)
    # paths are made absolute, as the stock SanitizedURLPath does
    assert (http.traces_url_path, http.metrics_url_path, http.logs_url_path) == ("/traces", "/v2/metrics", "/log/ingest")


def test_cors_limits_and_unix_socket() -> None:
    r = receivers("otlp_receiver_config.yaml")
    cors = r["otlp/cors"].protocols.http
    assert cors is not None
    assert cors.cors == CORSConfig(allowed_origins=["http://test.com", "https://*.example.com"], allowed_headers=["Example-Header"], max_age=7200)
    limits = r["otlp/limits"].protocols
    assert limits.grpc is not None and limits.http is not None
    assert (limits.grpc.endpoint, limits.grpc.max_recv_msg_bytes, limits.grpc.include_metadata) == ("0.0.0.0:4317", 64 << 20, True)
    assert limits.grpc.auth == ServerAuthConfig(authenticator="bearertokenauth")
    assert (limits.http.endpoint, limits.http.max_request_body_size) == ("[::1]:4318", 1048576)
    assert limits.http.compression_algorithms == ["", "gzip"]
    assert limits.http.response_headers == {"X-Served-By": "appguard"}
    uds = r["otlp/uds"].protocols.grpc
    assert uds is not None and (uds.transport, uds.endpoint) == ("unix", "/tmp/grpc_otlp.sock")


def test_zero_limits_mean_the_defaults() -> None:
    cfg = OTLPReceiverConfig.model_validate({"protocols": {"grpc": {"max_recv_msg_size_mib": 0}, "http": {"max_request_body_size": 0}}})
    assert cfg.protocols.grpc is not None and cfg.protocols.grpc.max_recv_msg_bytes == 4 << 20
    assert cfg.protocols.http is not None and cfg.protocols.http.max_request_body_size == 20 << 20


def test_invalid_configs_name_their_yaml_path() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(load_sources([str(TESTDATA / "otlp_receiver_invalid.yaml")]), registry())
    text = str(info.value)
    expected = [
        "receivers.otlp/no_protocols: must specify at least one protocol when using the OTLP receiver",
        "receivers.otlp/empty: must specify at least one protocol when using the OTLP receiver",
        "receivers.otlp/typo.protocols.htttp: unknown key",
        "receivers.otlp/thrift.protocols.thrift: unknown key",
        "receivers.otlp/no_port.protocols.grpc.endpoint: endpoint 'localhost' must be host:port",
        "receivers.otlp/bad_port.protocols.http.endpoint: endpoint 'localhost:99999' has an invalid port '99999'",
        "receivers.otlp/bad_path.protocols.http.traces_url_path: invalid HTTP URL path set for signal",
        "receivers.otlp/same_paths.protocols.http: traces_url_path, metrics_url_path and logs_url_path must differ",
        "receivers.otlp/unknown_compression.protocols.http.compression_algorithms: unknown compression algorithm 'brotli'",
        "receivers.otlp/unknown_key.protocols.grpc.max_recv_msg_size: unknown key",
    ]
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"
    assert text.count("\n  ") == len(expected)
