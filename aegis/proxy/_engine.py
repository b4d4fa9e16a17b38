"""The proxy engine: shared state of every client connection, and the listener factory."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.protocol import Factory

from aegis.monitor.counters import TrafficCounters
from aegis.proxy._http1 import Http1Connection
from aegis.proxy._pool import UpstreamPool
from aegis.proxy.routing import ConnectionInfo, ProxyLimits, Router


class ProxyEngine:
    """Router, upstream pool, clock and limits shared by every connection of a listener
    (or of several listeners: ports 80 and 443 may share one engine and so one pool)."""

    def __init__(self, router: Router, reactor: Any, limits: ProxyLimits,
                 counters: TrafficCounters | None = None) -> None:
        self.router = router
        self.clock: IReactorTime = reactor
        self.limits = limits
        # requests by host and status class, upstream latency: bumped once per exchange
        self.counters = counters or TrafficCounters()
        self.pool = UpstreamPool(reactor, limits)

    def connection_info(self, transport: Any) -> ConnectionInfo:
        """Scheme, client address, SNI and ALPN as the TLS library saw them."""
        peer = transport.getPeer()
        host = str(getattr(peer, "host", "")) or "unknown"
        port = int(getattr(peer, "port", 0) or 0)
        handle = transport.getHandle() if hasattr(transport, "getHandle") else None
        if handle is None or not hasattr(handle, "get_servername"):
            return ConnectionInfo("http", host, port)
        raw_sni = handle.get_servername()
        alpn_raw = handle.get_alpn_proto_negotiated()
        sni = raw_sni.decode("ascii", "replace").lower() if raw_sni else None
        alpn = alpn_raw.decode("ascii", "replace") if alpn_raw else None
        return ConnectionInfo("https", host, port, sni, alpn)

    def h2_connection(self, outer: Http1Connection, info: ConnectionInfo) -> Any:
        from aegis.proxy._h2 import H2Connection

        return H2Connection(self, outer, info)


class _ProxyFactory(Factory):
    noisy = False

    def __init__(self, engine: ProxyEngine) -> None:
        self.engine = engine

    def buildProtocol(self, addr: Any) -> Http1Connection:
        return Http1Connection(self.engine)


def proxy_factory(router: Router, reactor: Any, limits: ProxyLimits | None = None,
                  engine: ProxyEngine | None = None) -> IProtocolFactory:
    """A protocol factory for a proxy listener, plain TCP or wrapped in TLS.

    Under TLS, offer ALPN ``h2`` and ``http/1.1``; the connection reads the negotiated
    protocol from ``transport.getHandle()`` on its first bytes and speaks it.
    """
    if engine is None:
        engine = ProxyEngine(router, reactor, limits or ProxyLimits())
    return _ProxyFactory(engine)
