"""Shared server-side networking: endpoints, listening sockets and TLS from ``tls:`` blocks.

Every server of AppGuard (the OTLP receiver, the health check, the API) binds and secures its
listeners through these functions, so ``endpoint`` and ``tls`` mean the same everywhere.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import ssl

import grpc

from collector.configtypes import TLSServerConfig


def split_host_port(endpoint: str) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); ``[v6]:port`` and an empty host are accepted."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep:
        raise ValueError(f"endpoint {endpoint!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"endpoint {endpoint!r} has an invalid IPv6 address") from None
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"endpoint {endpoint!r}: write an IPv6 address in brackets, like [::1]:4317")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"endpoint {endpoint!r} has an invalid port {port_text!r}")
    return host, int(port_text)


def bind_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to, all on the same port.

    Binding ourselves (rather than letting the event loop do it) keeps port 0 meaning one
    ephemeral port for both 127.0.0.1 and ::1 of ``localhost``.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    bound_port = port
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # As for gRPC: worker processes of one machine may share the port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((addr[0], bound_port, *addr[2:]))
            except OSError as exc:
                sock.close()
                # An address family the machine lacks (no IPv6) is skipped, not fatal.
                if sockets and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue
                raise
            sock.listen(1024)
            sock.setblocking(False)
            bound_port = sock.getsockname()[1]
            sockets.append(sock)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    return sockets


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
