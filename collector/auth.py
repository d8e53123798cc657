"""Authentication hooks between transports and authenticator extensions.

A receiver whose config has ``auth: {authenticator: ID}`` looks the extension up on the host
and calls :meth:`ServerAuthenticator.authenticate` with the request's headers (gRPC metadata
or HTTP headers, keys in lower case). An exporter with ``auth`` adds the headers that
:meth:`ClientAuthenticator.request_headers` returns to every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from collector.component import ComponentID, Host


class AuthenticationError(Exception):
    """The request's credentials are missing or wrong (HTTP 401, gRPC UNAUTHENTICATED)."""


@runtime_checkable
class ServerAuthenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> None:
        """Return when the request may pass; raise :class:`AuthenticationError` otherwise."""
        ...


@runtime_checkable
class ClientAuthenticator(Protocol):
    def request_headers(self) -> dict[str, str]:
        """Headers that authenticate an outgoing request."""
        ...


def server_authenticator(host: Host, ident: str, owner: str) -> ServerAuthenticator:
    """The extension ``ident`` as a server authenticator, or ``ValueError`` naming ``owner``."""
    try:
        ext = host.extension(ComponentID.parse(ident))
    except KeyError:
        raise ValueError(f"{owner}: auth.authenticator {ident!r} is not an enabled extension") from None
    if not isinstance(ext, ServerAuthenticator):
        raise ValueError(f"{owner}: extension {ident!r} cannot authenticate requests to a server")
    return ext


def client_authenticator(host: Host, ident: str, owner: str) -> ClientAuthenticator:
    """The extension ``ident`` as a client authenticator, or ``ValueError`` naming ``owner``."""
    try:
        ext = host.extension(ComponentID.parse(ident))
    except KeyError:
        raise ValueError(f"{owner}: auth.authenticator {ident!r} is not an enabled extension") from None
    if not isinstance(ext, ClientAuthenticator):
        raise ValueError(f"{owner}: extension {ident!r} cannot authenticate outgoing requests")
    return ext
