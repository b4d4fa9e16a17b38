"""Shared pieces for the TLS tests: test PKI, hosts, and a loopback HTTPS server.

Certificates come from trustme (a root and an intermediate CA, so served chains are real).
The server is :func:`aegis.tls.sni.https_factory` around a tiny HTTP/1.1 responder that
answers every request with the SNI facts of its connection, so a test can see both which
certificate a client got and what the HTTP layer would be told.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from OpenSSL._util import lib as _lib
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.test.iosim import FakeAddress, IOPump, connectedServerAndClient
from zope.interface import implementer

from aegis.certs.model import LoadedCertificate
from aegis.store.records import HostRecord
from aegis.tls.transport import TimedTLSProtocol, connection_info

_ids = itertools.count(1)
NOW = datetime.now(UTC)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class PKI:
    """A root CA with an intermediate that signs every leaf."""

    root: trustme.CA = field(default_factory=trustme.CA)
    intermediate: trustme.CA = field(init=False)

    def __post_init__(self) -> None:
        self.intermediate = self.root.create_child_ca()

    def leaf(
        self,
        *names: str,
        source: str = "custom",
        cert_id: int | None = -1,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: trustme.KeyType = trustme.KeyType.ECDSA,
    ) -> LoadedCertificate:
        """A LoadedCertificate for ``names`` (stored id auto-assigned unless None)."""
        issued = self.intermediate.issue_cert(
            *names, not_before=not_before, not_after=not_after, key_type=key_type
        )
        chain = tuple(
            x509.load_pem_x509_certificate(blob.bytes()) for blob in issued.cert_chain_pems
        )
        key: Any = load_pem_private_key(issued.private_key_pem.bytes(), None)
        return LoadedCertificate(
            id=next(_ids) if cert_id == -1 else cert_id,
            source=source,
            names=tuple(names),
            leaf=chain[0],
            chain=chain,
            key=key,
            not_before=chain[0].not_valid_before_utc,
            not_after=chain[0].not_valid_after_utc,
        )


def host(
    domain: str,
    *aliases: str,
    ssl_mode: str = "custom",
    ssl_cert_id: int | None = None,
    tls_min_version: str = "1.2",
) -> HostRecord:
    return HostRecord(
        id=next(_ids),
        domain=domain,
        aliases=aliases,
        upstream="http://127.0.0.1:9",
        ssl_mode=ssl_mode,
        ssl_cert_id=ssl_cert_id,
        tls_min_version=tls_min_version,
        created_at=NOW,
        updated_at=NOW,
    )


class RecordingIssuance:
    """An IOnDemandIssuance that remembers what was asked."""

    def __init__(self) -> None:
        self.wanted: list[str] = []

    def certificate_wanted(self, hostname: str) -> None:
        self.wanted.append(hostname)


class SNIEcho(Protocol):
    """Answers each HTTP/1.1 request (keep-alive) with ``sni=<name> step=<step>``."""

    buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            info = connection_info(self.transport)
            body = (
                f"sni={info.server_name if info else None} step={info.step if info else None}"
            ).encode()
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def echo_factory() -> Factory:
    return Factory.forProtocol(SNIEcho)


def port_number(port: IListeningPort) -> int:
    return int(port.getHost().port)  # type: ignore[attr-defined]


def names_of(certificates: Iterable[LoadedCertificate]) -> list[tuple[str, ...]]:
    return [c.names for c in certificates]


def later(days: int) -> datetime:
    return NOW + timedelta(days=days)


# --- in-memory handshakes -------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class ClientCreator:
    """A pyOpenSSL client (cryptography's OpenSSL) with the knobs the tests turn."""

    def __init__(
        self,
        server_name: bytes | None = None,
        *,
        max_version: int | None = None,
        alpn: tuple[bytes, ...] = (),
        groups: str | None = None,
        ciphers: bytes | None = None,
        session: SSL.Session | None = None,
    ) -> None:
        self.session = session
        self._context: SSL.Context | None = None
        self.server_name = server_name
        self.max_version = max_version
        self.alpn = alpn
        self.groups = groups
        self.ciphers = ciphers

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        if self._context is None:  # one context, so its sessions can be resumed
            self._context = self._make_context()
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        if self.session is not None:
            connection.set_session(self.session)
        if self.server_name is not None:
            connection.set_tlsext_host_name(self.server_name)
        connection.set_app_data(tlsProtocol)
        return connection

    def _make_context(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_verify(SSL.VERIFY_NONE)
        if self.max_version is not None:
            context.set_max_proto_version(self.max_version)
        if self.alpn:
            context.set_alpn_protos(list(self.alpn))
        if self.groups is not None:
            assert _lib.SSL_CTX_set1_curves_list(context._context, self.groups.encode())
        if self.ciphers is not None:
            context.set_cipher_list(self.ciphers)
        return context


@implementer(IHandshakeListener)
class ClientProbe(Protocol):
    """Notes the handshake outcome and any bytes received."""

    def __init__(self) -> None:
        self.handshake_done = False
        self.lost: Failure | None = None
        self.received = b""

    def handshakeCompleted(self) -> None:
        self.handshake_done = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        self.lost = reason


@dataclass
class InMemoryHandshake:
    client: TLSMemoryBIOProtocol
    server: TimedTLSProtocol
    probe: ClientProbe
    pump: IOPump
    clock: Clock

    def exchange(self, data: bytes) -> bytes:
        """Send ``data`` from the client; return what the client received afterwards."""
        before = len(self.probe.received)
        self.client.write(data)
        for _ in range(3):  # both sides aggregate small TLS writes until the next tick
            self.clock.advance(0)
            self.pump.flush()
        return self.probe.received[before:]

    @property
    def ok(self) -> bool:
        return self.probe.handshake_done

    def peer_chain(self) -> list[x509.Certificate]:
        return self.client.getHandle().get_peer_cert_chain(as_cryptography=True) or []

    def peer_leaf(self) -> x509.Certificate | None:
        chain = self.peer_chain()
        return chain[0] if chain else None


def handshake(
    server_factory: Any, creator: ClientCreator, clock: Clock | None = None
) -> InMemoryHandshake:
    """Connect one in-memory client to ``server_factory`` and run the handshake.

    The client shares the server factory's clock, so :meth:`InMemoryHandshake.exchange` can
    drive both sides' write aggregation.
    """
    probe = ClientProbe()
    clock = clock or server_factory.clock
    client_factory = TLSMemoryBIOFactory(creator, True, Factory.forProtocol(lambda: probe), clock)
    client, server, pump = connectedServerAndClient(
        lambda: server_factory.buildProtocol(FakeAddress()),
        lambda: client_factory.buildProtocol(FakeAddress()),
        greet=False,
    )
    pump.flush()
    return InMemoryHandshake(client, server, probe, pump, clock)
