"""Server-side TLS from a ``tls:`` block (stock ``configtls`` server keys), for both transports."""

from __future__ import annotations

import ssl

import grpc

from collector.configtypes import TLSServerConfig

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


def _version(text: str | None, default: ssl.TLSVersion) -> ssl.TLSVersion:
    if not text:
        return default
    try:
        return _VERSIONS[text]
    except KeyError:
        raise ValueError(f"unknown TLS version {text!r} (use 1.0, 1.1, 1.2 or 1.3)") from None


def server_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """An SSL context serving ``cert_file``; with ``client_ca_file``, clients must present a cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # The stock collector's default minimum is TLS 1.2.
    ctx.minimum_version = _version(tls.min_version, ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = _version(tls.max_version, ssl.TLSVersion.MAXIMUM_SUPPORTED)
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(tls.client_ca_file)
    return ctx


def grpc_server_credentials(tls: TLSServerConfig) -> grpc.ServerCredentials:
    """gRPC credentials for the same settings (gRPC picks the TLS versions itself)."""
    _version(tls.min_version, ssl.TLSVersion.TLSv1_2)
    _version(tls.max_version, ssl.TLSVersion.MAXIMUM_SUPPORTED)
    with open(tls.cert_file, "rb") as f:
        cert = f.read()
    with open(tls.key_file, "rb") as f:
        key = f.read()
    client_ca = None
    if tls.client_ca_file:
        with open(tls.client_ca_file, "rb") as f:
            client_ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)
