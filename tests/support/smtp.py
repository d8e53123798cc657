"""A real SMTP server for tests (aiosmtpd), keeping every message it accepts.

:class:`SmtpServer` listens on a free loopback port in aiosmtpd's own thread. It can offer
STARTTLS or TLS from the start with a self-signed certificate made here with ``cryptography``,
require AUTH (PLAIN / LOGIN) against a user table, refuse chosen recipients with a given SMTP
code, and be stopped and started again on the same port for outage tests::

    def test_mail(smtp_server):                       # plain SMTP, no auth
        ...send to smtp_server.host, smtp_server.port...
        msg = smtp_server.wait_for_messages(1)[0]
        assert msg.message["Subject"] == "..."

    def test_secure(smtp_server_factory):
        server = smtp_server_factory(security="starttls", users={"alerts": "s3cret"})

    server.refuse("nobody@example.com", 550, "5.1.1 No such user")
    server.stop(); ...; server.start()                # connection refused in between

Fixtures: ``smtp_certificate`` (session; the certificate and key files), ``smtp_server`` and
``smtp_server_factory`` (servers stopped after the test).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.net import free_port

Security = Literal["none", "starttls", "tls"]


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for ``localhost`` and ``127.0.0.1``, and its key, as files."""

    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context with this certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def make_certificate(directory: Path) -> Certificate:
    """Create a fresh EC P-256 self-signed certificate valid for a day, in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "smtp-cert.pem"
    key_path = directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Certificate(cert_path, key_path)


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: the envelope, the parsed message and how the session went."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    login: str | None
    tls: bool
    received_at: float


class _Handler:
    """aiosmtpd's handler hooks: refuse listed recipients, keep accepted messages."""

    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]) -> str:
        refusal = self.server.refusals.get(address.lower())
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        received = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            message=message,
            raw=raw,
            login=login,
            tls=session.ssl is not None or smtp.transport.get_extra_info("ssl_object") is not None,
            received_at=time.monotonic(),
        )
        with self.server.lock:
            self.server.messages.append(received)
        return "250 Message accepted for delivery"


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 (see the module's description)."""

    def __init__(
        self,
        *,
        security: Security = "none",
        certificate: Certificate | None = None,
        users: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        if security != "none" and certificate is None:
            raise ValueError("STARTTLS and TLS need a certificate")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.security = security
        self.certificate = certificate
        self.users = dict(users or {})
        self.lock = threading.Lock()
        self.messages: list[ReceivedMessage] = []
        self.refusals: dict[str, tuple[int, str]] = {}
        self.failed_logins: list[str] = []
        self._controller: Controller | None = None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.users.get(login) == password:
                return AuthResult(success=True, auth_data=auth_data)
            with self.lock:
                self.failed_logins.append(login)
        return AuthResult(success=False, handled=False)

    def start(self) -> SmtpServer:
        """Listen (again) on :attr:`port`; returns once the server answers."""
        if self._controller is not None:
            return self
        kwargs: dict[str, Any] = {}
        if self.users:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=self.security != "none")
        if self.security == "starttls":
            assert self.certificate is not None
            kwargs.update(tls_context=self.certificate.server_context(), require_starttls=True)
        elif self.security == "tls":
            assert self.certificate is not None
            kwargs.update(ssl_context=self.certificate.server_context())
        controller = Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="smtp.test",
            ready_timeout=10,
            **kwargs,
        )
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening (clients get connection refused); received messages are kept."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start` on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def refuse(self, address: str, code: int = 550, message: str = "5.1.1 Mailbox unavailable") -> None:
        """Answer ``RCPT TO:<address>`` with ``code message`` from now on."""
        self.refusals[address.lower()] = (code, message)

    def received(self) -> list[ReceivedMessage]:
        """The messages accepted so far, in arrival order."""
        with self.lock:
            return list(self.messages)

    def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until ``n`` messages were accepted; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while len(self.received()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"the SMTP server got {len(self.received())} messages, expected {n}")
            time.sleep(0.01)
        return self.received()

    async def wait_for_messages_async(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """:meth:`wait_for_messages` for async tests (does not block the event loop)."""
        deadline = time.monotonic() + timeout
        while len(self.received()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"the SMTP server got {len(self.received())} messages, expected {n}")
            await asyncio.sleep(0.01)
        return self.received()


@pytest.fixture(scope="session")
def smtp_certificate() -> Iterator[Certificate]:
    """A self-signed certificate for 127.0.0.1 / localhost, shared by the session."""
    with tempfile.TemporaryDirectory(prefix="appguard-smtp-") as directory:
        yield make_certificate(Path(directory))


@pytest.fixture
def smtp_server_factory(smtp_certificate: Certificate) -> Iterator[Callable[..., SmtpServer]]:
    """``factory(security="none"|"starttls"|"tls", users={...})``: a started :class:`SmtpServer`."""
    servers: list[SmtpServer] = []

    def factory(*, security: Security = "none", users: dict[str, str] | None = None) -> SmtpServer:
        server = SmtpServer(security=security, certificate=smtp_certificate, users=users)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server (no TLS, no AUTH) accepting every recipient not refused."""
    return smtp_server_factory()
