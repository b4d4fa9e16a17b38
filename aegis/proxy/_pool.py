"""The per-upstream connection pool.

Idle connections are kept per :attr:`Forward.pool_key` (LIFO, so the warmest is reused and
surplus ones age out), closed after ``upstream_idle_timeout`` by the engine's sweeper, and
the number of connections per upstream is capped; callers beyond the cap wait in FIFO order.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from OpenSSL import SSL
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from aegis.proxy._timers import Sweeper
from aegis.proxy._upstream import UpstreamConnection, UpstreamUnavailable
from aegis.proxy.routing import Forward, ProxyLimits


class _ConnectFactory(ClientFactory):
    noisy = False

    def __init__(self, pool: UpstreamPool, key: tuple[Any, ...]) -> None:
        self.pool = pool
        self.key = key
        self.connected: Deferred[UpstreamConnection] = Deferred()

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        conn = UpstreamConnection(self.pool, self.key)
        conn.on_connected = self.connected
        return conn

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        timed_out = reason.check(ierror.TimeoutError) is not None
        status = 504 if timed_out else 502
        self.connected.errback(UpstreamUnavailable(status))


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerifyCreator:
    """TLS to an upstream without certificate verification (self-signed backends), SNI set."""

    def __init__(self, server_name: str) -> None:
        self._name = server_name.encode("idna") if server_name else b""
        self._context = CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self._name and not self._name.replace(b".", b"").isdigit():
            connection.set_tlsext_host_name(self._name)
        return connection


class _Key:
    """Per-upstream bookkeeping."""

    __slots__ = ("count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[UpstreamConnection] = []
        self.count = 0
        self.waiters: deque[Deferred[UpstreamConnection]] = deque()


class UpstreamPool:
    """Pooled upstream connections, keyed by :attr:`Forward.pool_key`."""

    def __init__(self, reactor: Any, limits: ProxyLimits) -> None:
        self._reactor: IReactorTCP = reactor
        self._clock: IReactorTime = reactor
        self.limits = limits
        self._keys: dict[tuple[Any, ...], _Key] = {}
        self._forwards: dict[tuple[Any, ...], Forward] = {}
        self._creators: dict[tuple[Any, ...], Any] = {}
        shortest = min(limits.header_timeout, limits.keepalive_timeout,
                       limits.body_idle_timeout, limits.upstream_timeout,
                       limits.upstream_idle_timeout, limits.request_timeout or 3600.0)
        self.sweeper = Sweeper(reactor, max(0.02, min(1.0, shortest / 4)))

    def idle_connection(self, forward: Forward) -> UpstreamConnection | None:
        """A pooled idle connection to ``forward``'s upstream, if one is ready (the common
        keep-alive case, without the cost of a Deferred)."""
        slot = self._keys.get(forward.pool_key)
        while slot is not None and slot.idle:
            conn = slot.idle.pop()
            if not conn._closed:
                conn.reused = True
                return conn
        return None

    def acquire(self, forward: Forward) -> Deferred[UpstreamConnection]:
        """An idle connection (``reused`` true) or a new one; fails with
        :class:`UpstreamUnavailable`."""
        key = forward.pool_key
        slot = self._keys.get(key)
        if slot is None:
            slot = self._keys[key] = _Key()
            self._forwards[key] = forward
        while slot.idle:
            conn = slot.idle.pop()
            if not conn._closed:
                conn.reused = True
                return succeed(conn)
        if slot.count >= self.limits.max_per_upstream:
            waiter: Deferred[UpstreamConnection] = Deferred()
            slot.waiters.append(waiter)
            return waiter
        return self.connect(forward)

    def connect(self, forward: Forward) -> Deferred[UpstreamConnection]:
        """Open a new connection regardless of idle ones (used for a retry)."""
        key = forward.pool_key
        slot = self._keys.setdefault(key, _Key())
        slot.count += 1
        factory = _ConnectFactory(self, key)
        wrapped: Any = factory
        if forward.scheme == "https":
            wrapped = TLSMemoryBIOFactory(self._creator(forward), True, factory)
        connected = factory.connected
        outer: Deferred[UpstreamConnection] = Deferred()

        def made(conn: UpstreamConnection) -> None:
            outer.callback(conn)

        def failed(failure: Failure) -> None:
            slot.count -= 1
            self._wake(key)
            outer.errback(failure)

        connected.addCallbacks(made, failed)
        self._reactor.connectTCP(forward.host, forward.port, wrapped,
                                 timeout=self.limits.connect_timeout)
        return outer

    def _creator(self, forward: Forward) -> Any:
        key = forward.pool_key
        creator = self._creators.get(key)
        if creator is None:
            name = forward.tls_server_name or forward.host
            creator = (optionsForClientTLS(name) if forward.verify_tls
                       else _NoVerifyCreator(name))
            self._creators[key] = creator
        return creator

    def release(self, conn: UpstreamConnection) -> None:
        """The exchange on ``conn`` finished; keep it if it can carry another."""
        slot = self._keys.get(conn.key)
        if slot is None or conn._closed:
            return
        if not conn.reusable:
            conn.close()
            return
        if slot.waiters:
            conn.reused = True
            slot.waiters.popleft().callback(conn)
            return
        if len(slot.idle) >= self.limits.max_idle_per_upstream:
            conn.close()
            return
        slot.idle.append(conn)
        conn.idle(self.limits.upstream_idle_timeout, self._clock)

    def lost(self, conn: UpstreamConnection) -> None:
        slot = self._keys.get(conn.key)
        if slot is None:
            return
        slot.count -= 1
        if conn in slot.idle:
            slot.idle.remove(conn)
        self._wake(conn.key)

    def _wake(self, key: tuple[Any, ...]) -> None:
        slot = self._keys[key]
        while slot.waiters and slot.count < self.limits.max_per_upstream:
            waiter = slot.waiters.popleft()
            self.connect(self._forwards[key]).chainDeferred(waiter)

    def idle_count(self, forward: Forward) -> int:
        slot = self._keys.get(forward.pool_key)
        return len(slot.idle) if slot else 0

    def close(self) -> None:
        """Close every idle connection (shutdown)."""
        for slot in self._keys.values():
            for conn in list(slot.idle):
                conn.close()
