"""The HTTPS listener's endpoint: TLS on the socket for TCP, Twisted's TLS protocol otherwise.

:func:`https_endpoint` takes the same listen description as every other listener
(``tcp:443``, ``tcp6:443:interface=::``, ``unix:/run/aegis.sock``) and the selection source
of the SNI layer. For TCP it listens with :class:`~aegis.tls.port.DirectTLSPort`, whose
connections run TLS through OpenSSL's socket BIO (the fast path, see
:mod:`aegis.tls.direct`); any other kind of socket gets the same SNI selection, policy and
handshake deadline through Twisted's memory-BIO TLS protocol (:func:`aegis.tls.sni.https_factory`).
Either way the protocol factory passed to ``listen`` is the plain HTTP one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from aegis.listeners import listen_endpoint
from aegis.monitor.counters import TrafficCounters
from aegis.tls.direct import TLSAcceptor
from aegis.tls.policy import INTERMEDIATE, TLSPolicy
from aegis.tls.port import DirectTLSPort
from aegis.tls.selection import SelectionSource
from aegis.tls.sni import SNIConnectionCreator, https_factory
from aegis.tls.transport import DEFAULT_HANDSHAKE_TIMEOUT


@implementer(IStreamServerEndpoint)
class DirectTLSEndpoint:
    """Listens on a TCP port with :class:`~aegis.tls.port.DirectTLSPort`."""

    def __init__(self, reactor: Any, port: int, backlog: int, interface: str,
                 acceptor: TLSAcceptor) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._acceptor = acceptor

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        def start() -> IListeningPort:
            port = DirectTLSPort(self._port, factory, self._backlog, self._interface,
                                 self._reactor, self._acceptor)
            port.startListening()
            return port

        return execute(start)


@implementer(IStreamServerEndpoint)
class _MemoryTLSEndpoint:
    """Any other endpoint, with Twisted's TLS protocol around the factory."""

    def __init__(self, inner: Any, wrap: Any) -> None:
        self._inner = inner
        self._wrap = wrap

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening: Deferred[IListeningPort] = self._inner.listen(self._wrap(factory))
        return listening


def https_endpoint(
    reactor: Any,
    description: str,
    selection: SelectionSource,
    *,
    policy: TLSPolicy = INTERMEDIATE,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    counters: TrafficCounters | None = None,
) -> IStreamServerEndpoint:
    """The HTTPS listener for ``description``: SNI selection from ``selection``, ``policy``
    (ALPN included), the handshake deadline, and the metrics' handshake ``counters``."""
    inner = listen_endpoint(reactor, description)
    if isinstance(inner, TCP4ServerEndpoint | TCP6ServerEndpoint):
        creator = SNIConnectionCreator(selection, reactor, policy, counters)
        acceptor = TLSAcceptor(creator.socket_connection, reactor, handshake_timeout, counters)
        # Twisted's TCP endpoints keep what they parsed in these attributes (stable since 2011).
        return DirectTLSEndpoint(reactor, inner._port, inner._backlog, inner._interface,
                                 acceptor)
    return _MemoryTLSEndpoint(inner, lambda factory: https_factory(
        selection, factory, reactor, policy=policy, handshake_timeout=handshake_timeout,
        counters=counters))


__all__ = ["DirectTLSEndpoint", "https_endpoint"]
