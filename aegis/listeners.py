"""Listening services that stop gracefully.

On SIGTERM twistd stops the service tree. A :class:`GracefulListener` then

1. stops accepting new connections,
2. asks each open connection to finish: idle ones close now, busy ones after their current
   response (protocols say how through :class:`IDrainable`),
3. waits up to ``shutdown_timeout`` seconds, then aborts whatever is left,

and only then lets the reactor stop, so in-flight requests complete and the process exits 0.

Aegis's own TCP ports (:class:`aegis.reactor.TrackingPort`: the HTTPS listener's and, under
the Aegis reactor, every ``tcp:`` one) know their open connections, so protocols are used
as they are. Other ports (``unix:``, another reactor) get each protocol wrapped to learn when
it closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import Interface

log = Logger()


def listen_endpoint(reactor: Any, description: str) -> Any:
    """A server endpoint; TCP listeners get a backlog of 1024 unless one is given.

    Twisted's default backlog of 50 turns a burst of new connections (a page load through
    a CDN, a benchmark, a reconnect storm) into SYN retries that take seconds.
    """
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6") and "backlog=" not in description:
        description += ":backlog=1024"
    return serverFromString(reactor, description)


class IDrainable(Interface):
    """A connection protocol that can finish its current work and then close."""

    def drain() -> None:
        """Close when idle: now if nothing is in flight, else after the current exchange."""


def drain_protocol(protocol: IProtocol, transport: Any) -> None:
    """Ask ``protocol`` to finish and close, looking through TLS and HTTP wrappers
    (``wrappedProtocol``; twisted.web's HTTP/1.1-or-2 switch keeps its channel in
    ``_channel``). A protocol that cannot drain is disconnected through ``transport``."""
    inner: Any = protocol
    while inner is not None:
        if IDrainable.providedBy(inner):
            inner.drain()
            return
        if isinstance(inner, HTTPChannel):
            _drain_http_channel(inner)
            return
        inner = getattr(inner, "wrappedProtocol", None) or getattr(inner, "_channel", None)
    transport.loseConnection()


def _drain_http_channel(channel: HTTPChannel) -> None:
    """twisted.web has no drain API: turn keep-alive off so it closes after the response."""
    channel.persistent = False
    if not channel._handlingRequest:
        channel.loseConnection()


class _TrackedProtocol(ProtocolWrapper):
    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:  # noqa: B008
        super().connectionLost(reason)
        factory: _TrackingFactory = self.factory
        waiter = factory.closed.pop(self, None)
        if waiter is not None:
            waiter.callback(None)


class _TrackingFactory(WrappingFactory):
    """Wraps each protocol to track it, unless the port tracks connections itself
    (``wrap`` is then turned off once listening; TCP ports listen synchronously, before
    any connection is accepted)."""

    protocol = _TrackedProtocol

    noisy = False
    wrap = True

    def __init__(self, wrapped: IProtocolFactory) -> None:
        super().__init__(wrapped)
        self.closed: dict[_TrackedProtocol, Deferred[None]] = {}

    def buildProtocol(self, addr: Any) -> Any:
        if self.wrap:
            return super().buildProtocol(addr)
        return self.wrappedFactory.buildProtocol(addr)


_POLL_INTERVAL = 0.05  # how often a drain looks whether a tracking port's connections are gone


def _port_connections(port: Any) -> set[Any] | None:
    """The open connections of a port that tracks them (TrackingPort), else None."""
    connections = getattr(port, "connections", None)
    return connections if isinstance(connections, set) else None


class GracefulListener(Service):
    """Listens on ``endpoint`` with ``factory`` while running; drains on stop."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        clock: IReactorTime,
        shutdown_timeout: float,
        description: str,
        fatal: Callable[[str], None],
    ) -> None:
        self._endpoint = endpoint
        self._fatal = fatal
        self._factory = _TrackingFactory(factory)
        self._clock = clock
        self._timeout = shutdown_timeout
        self._description = description
        self._port: IListeningPort | None = None
        self._listening: Deferred[IListeningPort] | None = None

    def privilegedStartService(self) -> None:
        """Bind here, before twistd drops privileges, so ports below 1024 work with --uid."""
        super().privilegedStartService()
        self._listening = self._endpoint.listen(self._factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self._port = port
            if _port_connections(port) is not None:
                self._factory.wrap = False
            host = port.getHost()
            log.info(
                "{listener} listening on {address}",
                listener=self._description,
                address=f"{getattr(host, 'host', '')}:{getattr(host, 'port', '')}",
            )
            return port

        def failed(failure: Failure) -> None:
            self._fatal(f"{self._description} could not listen: {failure.getErrorMessage()}")

        self._listening.addCallbacks(listening, failed)

    def port(self) -> IListeningPort | None:
        """The listening port once bound (tests read the ephemeral port number from it)."""
        return self._port

    def port_number(self) -> int | None:
        """The bound TCP port number (``tcp:0`` included), or None before binding or for
        a socket without one (``unix:``)."""
        return getattr(self._port.getHost(), "port", None) if self._port is not None else None

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        stopped: Deferred[Any] = Deferred()
        stopping = port.stopListening()
        (stopping or succeed(None)).addCallback(lambda _: self._drain(port)).chainDeferred(stopped)
        return stopped

    def _drain(self, port: IListeningPort) -> Deferred[Any]:
        wrapped = list(self._factory.protocols)
        direct = _port_connections(port) or set()
        if not wrapped and not direct:
            return succeed(None)
        waiters = []
        for connection in wrapped:
            tracked: _TrackedProtocol = connection
            waiter: Deferred[None] = Deferred()
            self._factory.closed[tracked] = waiter
            waiters.append(waiter)
            drain_protocol(tracked.wrappedProtocol, tracked.transport)
        count = len(wrapped) + len(direct)
        for transport in list(direct):
            drain_protocol(transport.protocol, transport)
        if direct:
            waiters.append(self._until_empty(direct))
        log.info(
            "{listener}: waiting up to {timeout}s for {count} connection(s) to finish",
            listener=self._description, timeout=self._timeout, count=count,
        )
        everything = DeferredList(waiters)

        def abort_rest() -> None:
            for tracked in list(self._factory.closed):
                tracked.transport.abortConnection()  # type: ignore[union-attr]
            for transport in list(direct):
                transport.abortConnection()

        timer = self._clock.callLater(self._timeout, abort_rest)
        everything.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return everything

    def _until_empty(self, connections: set[Any]) -> Deferred[None]:
        """Fires once a tracking port's ``connections`` are all closed (polled: this runs
        once per stop, and costs nothing per connection)."""
        done: Deferred[None] = Deferred()

        def check() -> None:
            if connections:
                self._clock.callLater(_POLL_INTERVAL, check)
            else:
                done.callback(None)

        check()
        return done
