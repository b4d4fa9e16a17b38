"""The TLS transport under every Aegis listener: a handshake deadline and per-connection facts.

Twisted's TLS protocol holds a connection whose handshake stalls for as long as the peer
likes (60 s by default in practice), so a few hundred idle sockets can pin a listener.
:class:`TimedTLSFactory` aborts any connection whose handshake has not finished within
``handshake_timeout`` seconds (10 by default), measured on the clock passed in.

The TLS protocol is also the transport the HTTP layer sees. It carries a
:class:`TLSConnectionInfo` set by the SNI layer during the handshake: the server name that
the TLS library itself parsed (the only one that decides anything), the host it matched and
the certificate served. :func:`connection_info` reads it from any transport, so the HTTP layer
can apply its 421 rule without parsing TLS itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from aegis.certs.model import LoadedCertificate
from aegis.store.records import HostRecord
from aegis.tls.deadlines import HandshakeDeadlines

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True)
class TLSConnectionInfo:
    """What the handshake decided for one connection.

    ``server_name`` is the normalised SNI (None if the client sent none or an invalid one);
    ``raw_server_name`` the bytes as parsed by OpenSSL; ``step`` the selection step that
    chose ``certificate`` (see :mod:`aegis.tls.selection`).
    """

    server_name: str | None
    raw_server_name: bytes | None
    host: HostRecord | None
    certificate: LoadedCertificate
    step: str


class _HandshakeDeadline(TLSMemoryBIOProtocol):
    """A server TLS connection aborted if its handshake outlasts the factory's timeout
    (every connection of the factory on one :class:`~aegis.tls.deadlines.HandshakeDeadlines`,
    as on the socket-TLS listener)."""

    factory: TimedTLSFactory
    tls_info: TLSConnectionInfo | None = None
    _watched = False

    def makeConnection(self, transport: Any) -> None:
        self._watched = True
        self.factory.deadlines.watch(self)
        super().makeConnection(transport)
        self._check_deadline()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self._watched:  # only until the handshake is done, not per request
            self._check_deadline()

    def _check_deadline(self) -> None:
        # ``_handshakeDone`` is TLSMemoryBIOProtocol's documented flag; Twisted has no public
        # "handshake finished" hook on the TLS protocol itself (IHandshakeListener is for the
        # wrapped protocol, which belongs to the HTTP layer).
        if self._handshakeDone:
            self._forget_deadline()

    def _forget_deadline(self) -> None:
        self._watched = False
        self.factory.deadlines.forget(self)

    def handshake_timed_out(self) -> None:
        """The deadline passed with the handshake unfinished (see HandshakeDeadlines)."""
        self.abortConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        if self._watched:
            self._forget_deadline()
        super().connectionLost(reason)


class TimedTLSProtocol(_HandshakeDeadline, BufferingTLSTransport):
    """Handshake deadline; small writes gathered into one TLS record per reactor turn
    (Twisted's default: right for twisted.web, which writes a response piecemeal)."""


class DirectTimedTLSProtocol(_HandshakeDeadline):
    """Handshake deadline; every write becomes TLS records and leaves at once.

    For the proxy, which already writes a response head and its first body bytes as one
    ``write``: gathering would only add a timed call per response (measured: a few
    per cent of the proxy's time) and hold the bytes back until the next loop turn.
    """


class TimedTLSFactory(TLSMemoryBIOFactory):
    """Server-side TLS around ``wrapped`` with a handshake deadline.

    ``gather_writes=False`` selects :class:`DirectTimedTLSProtocol` (the proxy on a non-TCP
    HTTPS listener; TCP ones use :mod:`aegis.tls.direct`).
    """

    protocol: type[_HandshakeDeadline] = TimedTLSProtocol

    def __init__(
        self,
        creator: IOpenSSLServerConnectionCreator,
        wrapped: IProtocolFactory,
        clock: IReactorTime,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        gather_writes: bool = True,
    ) -> None:
        super().__init__(creator, False, wrapped, clock)
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.deadlines = HandshakeDeadlines(clock, handshake_timeout)
        if not gather_writes:
            self.protocol = DirectTimedTLSProtocol


def connection_info(transport: object) -> TLSConnectionInfo | None:
    """The :class:`TLSConnectionInfo` of the TLS connection under ``transport``, if any.

    Accepts the TLS protocol itself or any chain of protocol wrappers above or below it.
    """
    seen = 0
    current: Any = transport
    while current is not None and seen < 8:
        info = getattr(current, "tls_info", None)
        if isinstance(info, TLSConnectionInfo):
            return info
        current = getattr(current, "transport", None)
        seen += 1
    return None

