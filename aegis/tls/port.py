"""The HTTPS listener's listening port: accepts connections as :class:`DirectTLSServer`.

Why not Twisted's ``tcp.Port.doRead`` as it is
==============================================
Every new TLS connection passes through the accept loop once, and on the handshake benchmark
(``bench/handshake``) Python's share of a handshake was about a third, spread over many
small costs. Two of them are here:

* ``socket.accept()`` converts the listener's family and type to enums on every call;
  this loop asks the C ``_accept`` for the descriptor and wraps it with known constants.
* After ``makeConnection`` the new transport starts its handshake at once
  (:meth:`DirectTLSServer.start_handshake`): a client sends its ClientHello right after
  connecting, so it is usually already waiting, and reading it now saves a trip round the
  event loop.

Everything else is Twisted's loop: the growing number of accepts per event, the ``EMFILE``
recovery with the reserved descriptor, the logging of accept errors, IPv6 scope ids.
"""

from __future__ import annotations

import _socket
import socket
from typing import Any, cast

from twisted.internet import tcp
from twisted.logger import ILogObserver, Logger

from aegis.reactor import TrackingPort
from aegis.tls.deadlines import HandshakeDeadlines
from aegis.tls.direct import DirectTLSServer, TLSAcceptor

log = Logger()


class _Listener:
    """The listening socket as ``tcp._accept`` uses it (``accept()`` only), without the
    standard library's per-call enum conversions."""

    __slots__ = ("_accept", "_family")

    def __init__(self, listening: socket.socket) -> None:
        self._accept = listening._accept  # type: ignore[attr-defined]
        self._family = int(listening.family)

    def accept(self) -> tuple[Any, Any]:
        descriptor, address = self._accept()
        # The C socket type: socket.socket's Python __init__ only adds makefile() state.
        return _socket.socket(self._family, socket.SOCK_STREAM, 0, descriptor), address


class DirectTLSPort(TrackingPort):
    """A listening TCP port whose connections are :class:`DirectTLSServer`."""

    transport = DirectTLSServer  # type: ignore[assignment]

    def __init__(self, port: int, factory: Any, backlog: int, interface: str, reactor: Any,
                 acceptor: TLSAcceptor) -> None:
        super().__init__(port, factory, backlog, interface, reactor)
        self.acceptor = acceptor
        # Outlives stopListening on purpose: accepted connections keep their deadline.
        counters = acceptor.counters
        self.deadlines = HandshakeDeadlines(
            acceptor.clock, acceptor.handshake_timeout,
            None if counters is None else counters.handshake_timed_out)
        self._listener: _Listener | None = None

    def startListening(self) -> None:
        super().startListening()
        self._listener = _Listener(self.socket)
        # What tcp._BuffersLogs does per accepting read, made once: accept's events wait
        # until the batch is accepted (a log observer must not take the descriptor that
        # Twisted keeps for EMFILE), then go to the port's observer.
        self._accept_events: list[Any] = []
        self._accept_log = Logger(namespace=self._logger.namespace,
                                  observer=cast(ILogObserver, self._accept_events.append))

    def _flush_accept_log(self) -> None:
        events = self._accept_events
        while events:
            self._logger.observer(events.pop(0))

    def doRead(self) -> None:
        """Accept what is waiting (see the module's docstring for what differs from
        ``tcp.Port.doRead``)."""
        listener = self._listener
        if listener is None:  # not listening (any more)
            return
        try:
            accepted = 0
            try:
                clients = tcp._accept(self._accept_log, range(self.numberAccepts), listener,
                                      tcp._reservedFD)
                for skt, addr in clients:
                    accepted += 1
                    self._connect(skt, addr)
            finally:
                self._flush_accept_log()
            if accepted == self.numberAccepts:
                self.numberAccepts += 20
            else:
                self.numberAccepts = max(1, accepted)
        except BaseException:
            log.failure("accepting a connection failed")

    def _connect(self, skt: socket.socket, addr: Any) -> None:
        if len(addr) == 4:  # IPv6: keep the scope id, as Twisted does
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0], *addr[1:])
        factory: Any = self.factory
        protocol = factory.buildProtocol(self._addressType("TCP", *addr))  # _buildAddr
        if protocol is None:
            skt.close()
            return
        session = self.sessionno
        self.sessionno = session + 1
        transport = DirectTLSServer(skt, protocol, addr, self, session, self.reactor)
        protocol.makeConnection(transport)
        transport.start_handshake()

    def connectionLost(self, reason: Any) -> None:
        self._listener = None
        super().connectionLost(reason)


__all__ = ["DirectTLSPort"]
