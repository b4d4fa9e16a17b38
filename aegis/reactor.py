"""Aegis's reactor: Twisted's epoll reactor with a leaner event loop for the proxy path.

Measured on the 2-core benchmark machine (``docs/performance.md``), a minimal keep-alive TLS
proxy on the stock epoll reactor spends about a third of its time in two places that are
not work:

* **Per-event logging context.** ``EPollReactor.doPoll`` wraps every read or write event in
  ``log.callWithLogger``, which asks the transport for its log prefix and pushes a context
  dictionary, only so that legacy ``twisted.python.log.msg`` calls made inside can be
  prefixed. Aegis logs through ``twisted.logger``, which does not use that context.
  :meth:`AegisReactor.doPoll` dispatches events directly; failures inside ``doRead`` and
  ``doWrite`` are still caught, logged and turned into a lost connection by the same
  ``_doReadOrWrite`` as before.
* **Deferred writes.** ``FileDescriptor.write`` only appends to a buffer and registers for
  writability, so every response costs two ``epoll_ctl`` calls and one more trip round the
  loop before ``send`` runs. :class:`ImmediateWriteMixin` sends at once when nothing is
  queued (what asyncio's transports and nginx do) and falls back to Twisted's buffering
  for whatever the kernel does not take, so back-pressure, producers and
  ``loseConnection`` behave exactly as before.

Together they raised a minimal proxy from about 1.0x to 1.8x Caddy's throughput. The
reactor is Twisted's own in every other respect, and ``tests/test_reactor.py`` runs
Twisted's TCP conformance tests against it; the whole test suite runs on it too.

``aegis run`` installs it. Under twistd, ask for it: ``twistd --reactor=aegis -n aegis``.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterable
from select import EPOLLIN, EPOLLOUT
from typing import Any

from twisted.internet import epollreactor, tcp
from twisted.internet.interfaces import IConnector
from twisted.internet.main import installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log as legacy_log


class ImmediateWriteMixin:
    """Send a write at once when the transport has nothing queued.

    Only plain-TCP transports take the fast path: ``startTLS`` transports (``self.TLS``),
    anything disconnecting, half-closed or with data waiting, and transports fed by a pull
    producer (which is asked for more only from ``doWrite``) use Twisted's own ``write``,
    which keeps ordering and error reporting unchanged. A socket error here
    is not raised: the data is queued instead and the next ``doWrite`` meets the same
    error and loses the connection the usual way. ``_send_now`` is how the bytes go out:
    :class:`aegis.tls.direct.DirectTLSServer` encrypts them there.
    """

    TLS: bool
    connected: int
    disconnecting: int
    _writeDisconnected: bool
    _tempDataLen: int
    dataBuffer: bytes
    offset: int
    producer: Any
    streamingProducer: bool
    socket: Any

    def write(self, data: bytes) -> None:
        if (
            data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and len(self.dataBuffer) == self.offset
            and (self.producer is None or self.streamingProducer)
            and isinstance(data, bytes)
        ):
            sent = self._send_now(data)
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)  # type: ignore[misc]

    def _send_now(self, data: bytes) -> int:
        """Bytes of ``data`` the kernel took at once (0 on any error: see the class)."""
        try:
            sent: int = self.socket.send(data)
        except OSError:
            return 0
        return sent

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        chunks = list(iovec)
        if not self.TLS and all(isinstance(chunk, bytes) for chunk in chunks):
            self.write(b"".join(chunks))
        else:
            super().writeSequence(chunks)  # type: ignore[misc]


class TrackingPort(tcp.Port):
    """A listening TCP port that knows its open connections (``connections``).

    :class:`aegis.listeners.GracefulListener` drains them on stop. Knowing them here costs a
    set insert and removal per connection; the alternative, wrapping every protocol in a
    ``ProtocolWrapper``, cost a ``zope.interface`` declaration per connection and one more
    call on every read and write (measured in ``docs/performance.md``).
    """

    def __init__(self, port: int, factory: Any, backlog: int = 50, interface: str = "",
                 reactor: Any = None) -> None:
        super().__init__(port, factory, backlog, interface, reactor)
        self.connections: set[Any] = set()


class TrackedServerMixin:
    """Registers an accepted connection with its :class:`TrackingPort` while it is open."""

    _connections: set[Any]

    def __init__(self, sock: Any, protocol: Any, client: tuple[object, ...],
                 server: TrackingPort, sessionno: int, reactor: Any) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)  # type: ignore[call-arg]
        self._track(server)

    def _track(self, server: TrackingPort) -> None:
        """Join ``server``'s open connections (a transport with its own ``__init__`` calls
        this itself)."""
        self._connections = server.connections
        self._connections.add(self)

    def connectionLost(self, reason: Any) -> None:
        self._connections.discard(self)
        super().connectionLost(reason)  # type: ignore[misc]


class ImmediateServer(TrackedServerMixin, ImmediateWriteMixin, tcp.Server):
    """An accepted TCP connection with immediate writes, known to its port."""


class ImmediateClient(ImmediateWriteMixin, tcp.Client):
    """An outgoing TCP connection with immediate writes."""


class ImmediatePort(TrackingPort):
    """A listening TCP port whose connections write immediately."""

    transport = ImmediateServer  # type: ignore[assignment]


class ImmediateConnector(tcp.Connector):
    """Makes :class:`ImmediateClient` transports."""

    def _makeTransport(self) -> ImmediateClient:
        return ImmediateClient(self.host, self.port, self.bindAddress, self, self.reactor)


class AegisReactor(epollreactor.EPollReactor):
    """The epoll reactor with direct event dispatch and immediate TCP writes.

    Each accepted connection and each proxied request costs a few reactor calls (register,
    dispatch, unregister); their bodies are inlined here (same checks, same order, same
    errors as Twisted's ``_add``, ``_remove`` and ``_doReadOrWrite``), which measured
    about 5% of a TLS handshake's CPU time in Python.
    """

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except InterruptedError:
            return
        selectables = self._selectables
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:  # removed by an earlier event of this round
                continue
            if event != EPOLLIN and event != EPOLLOUT:  # hang-ups, errors, both at once
                self._doReadOrWrite(selectable, fd, event)
                continue
            # One readiness, no hang-up: what _doReadOrWrite does in that case.
            try:
                if selectable.fileno() == -1:
                    why: Any = _NO_FILEDESC
                elif event == EPOLLIN:
                    why = selectable.doRead()
                else:
                    why = selectable.doWrite()
            except BaseException:
                why = sys.exc_info()[1]
                legacy_log.err()
            if why:
                self._disconnectSelectable(selectable, why, event == EPOLLIN)

    doIteration = doPoll

    def addReader(self, reader: Any) -> None:
        self._add_fast(reader, self._reads, self._writes, EPOLLIN, EPOLLOUT,
                       self._continuousPolling.addReader)

    def addWriter(self, writer: Any) -> None:
        self._add_fast(writer, self._writes, self._reads, EPOLLOUT, EPOLLIN,
                       self._continuousPolling.addWriter)

    def _add_fast(self, xer: Any, primary: set[int], other: set[int], event: int,
                  antievent: int, poll_continuously: Any) -> None:
        fd = xer.fileno()
        if fd in primary:
            return
        try:
            if fd in other:
                self._poller.modify(fd, event | antievent)
            else:
                self._poller.register(fd, event)
        except OSError as e:
            if e.errno == errno.EPERM:  # not pollable (a regular file): poll continuously
                poll_continuously(xer)
                return
            raise
        primary.add(fd)  # only once epoll has it, as Twisted does
        self._selectables[fd] = xer

    def removeReader(self, reader: Any) -> None:
        polling = self._continuousPolling
        if polling._readers and polling.isReading(reader):
            polling.removeReader(reader)
            return
        self._remove_fast(reader, self._reads, self._writes, EPOLLOUT)

    def removeWriter(self, writer: Any) -> None:
        polling = self._continuousPolling
        if polling._writers and polling.isWriting(writer):
            polling.removeWriter(writer)
            return
        self._remove_fast(writer, self._writes, self._reads, EPOLLIN)

    def _remove_fast(self, xer: Any, primary: set[int], other: set[int],
                     antievent: int) -> None:
        fd = xer.fileno()
        if fd == -1:  # closed already: find it by identity
            for fd, known in self._selectables.items():  # noqa: B007
                if xer is known:
                    break
            else:
                return
        if fd not in primary:
            return
        if fd in other:
            self._poller.modify(fd, antievent)
        else:
            del self._selectables[fd]
            self._poller.unregister(fd)
        primary.remove(fd)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> ImmediatePort:
        listening = ImmediatePort(port, factory, backlog, interface, self)
        listening.startListening()
        return listening

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30.0,
                   bindAddress: Any = None) -> IConnector:
        connector = ImmediateConnector(host, port, factory, timeout, bindAddress, self)
        connector.connect()
        return connector


def install() -> AegisReactor:
    """Install :class:`AegisReactor` as ``twisted.internet.reactor`` (before any import of
    it); the entry point of the ``aegis`` reactor plugin."""
    reactor = AegisReactor()
    installReactor(reactor)
    return reactor


__all__ = ["AegisReactor", "ImmediateWriteMixin", "TrackedServerMixin", "TrackingPort", "install"]
