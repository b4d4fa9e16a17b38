"""The HTTPS proxy listener's transport: TLS on the socket itself, no memory BIOs.

Why
===
Twisted's TLS is a *protocol* over TCP (``TLSMemoryBIOProtocol``): every read is copied
into an OpenSSL memory BIO and drained with an ``SSL_read`` loop that ends in a raised
``WantReadError``; every write is encrypted into a second BIO, copied out and handed to the
TCP transport; each connection re-declares the transport's interfaces through
``zope.interface``. Measured on the benchmark machine (``docs/performance.md``), that layer
cost about as much per keep-alive request as the whole proxy logic, and a fifth of each new
handshake. Here OpenSSL reads and writes the non-blocking socket directly (``SSL_set_fd``),
as nginx does: one ``SSL_read`` per record into one reused buffer, one ``SSL_write`` per
response, no copies through Python, no exception on the hot path.

Contract (the same as Twisted's TLS protocol, for the protocol above)
=====================================================================
* The protocol is connected at accept. What it writes before the handshake completes is
  held and sent once it has; ``dataReceived`` only ever gets application data.
* ``getHandle()`` is the :class:`~aegis.tls.socket_tls.SocketTLS` (``get_servername``,
  ``get_alpn_proto_negotiated``: what the pyOpenSSL ``Connection`` answered);
  ``negotiatedProtocol`` is the ALPN result; the SNI layer records its
  :class:`~aegis.tls.transport.TLSConnectionInfo` as ``tls_info`` on this transport.
* A handshake not finished within the acceptor's ``handshake_timeout`` is aborted. A failed
  handshake reaches ``connectionLost`` as the ``SSL.Error``; the peer's ``close_notify`` as
  ``ConnectionDone``.
* ``loseConnection`` sends the buffered bytes, then a ``close_notify``, then closes; it does
  not wait for the peer's ``close_notify`` (neither do nginx nor browsers).
* Back-pressure is Twisted's own: writes the kernel does not take are buffered by
  ``FileDescriptor`` and producers are paused and resumed as for plain TCP.

OpenSSL rules this relies on: pyOpenSSL contexts set ``SSL_MODE_ENABLE_PARTIAL_WRITE`` and
``SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER``, and ``FileDescriptor`` retries a write that got
``WANT_WRITE`` with the same bytes at the same offset (plus possibly more), which is what
``SSL_write`` requires. Renegotiation is off (:mod:`aegis.tls.policy`), so after the handshake
a write never waits for a read; the case is still handled.

The per-connection objects are created by an :class:`TLSAcceptor`: the SNI layer's
:meth:`~aegis.tls.sni.SNIConnectionCreator.socket_connection`, the clock and the deadline.
:class:`aegis.tls.port.DirectTLSPort` accepts the connections;
:func:`aegis.tls.endpoint.https_endpoint` puts it on a listening port.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import address, error, main, tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aegis.reactor import ImmediateWriteMixin, TrackedServerMixin
from aegis.tls.acceptor import TLSAcceptor, context_acceptor, server_connection
from aegis.tls.socket_tls import SocketTLS

if TYPE_CHECKING:
    from aegis.tls.port import DirectTLSPort

log = Logger()

_WANT_READ = _lib.SSL_ERROR_WANT_READ
_WANT_WRITE = _lib.SSL_ERROR_WANT_WRITE
_ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
_RECORDS_PER_EVENT = 4  # then yield to other connections (a bulk upload must not hog the loop)
_READ_SIZE = 16 * 1024 + 256  # one TLS record's plaintext: SSL_read returns one record at most

# One read buffer for every connection: reads run on the reactor thread only, and each
# record is copied out to ``bytes`` before the next read.
_read_buffer = _ffi.new("char[]", _READ_SIZE)
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


@implementer(ISSLTransport)
class DirectTLSServer(TrackedServerMixin, ImmediateWriteMixin, tcp.Server):
    """An accepted TCP connection speaking TLS through OpenSSL's socket BIO.

    Made by :class:`aegis.tls.port.DirectTLSPort`, which calls :meth:`start_handshake` once
    the protocol is connected.
    """

    tls_info: Any = None
    _handshake_writing = False
    _read_wants_write = False
    _write_wants_read = False
    _paused = False
    _close_after_handshake = False

    def __init__(self, sock: socket.socket, protocol: Any, client: tuple[object, ...],
                 server: DirectTLSPort, sessionno: int, reactor: Any) -> None:
        # What tcp.Server.__init__ sets up, without its per-connection formatting of the
        # log prefix and repr strings (built here only when asked for: ``logstr``,
        # ``repstr``). One new connection per handshake makes this a hot path.
        self.reactor = reactor
        self._tempDataBuffer: list[bytes] = []
        self._tempDataLen = 0
        self.socket = sock
        sock.setblocking(False)
        self.fileno = sock.fileno
        self.protocol = protocol
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        self._loop: Any = reactor  # callLater and the poller's disconnect handling
        self._tls = server.acceptor.connection(sock, self)
        self._ssl = self._tls.ssl  # the SSL*, for the direct calls on the hot path
        self._handshaking = True
        self._held: list[bytes] = []
        self._deadlines = server.deadlines
        self._deadlines.watch(self)
        self._track(server)
        self.startReading()
        self.connected = 1

    @property
    def logstr(self) -> str:  # type: ignore[override]
        return f"{self.protocol.__class__.__name__},{self.sessionno},{self.hostname}"

    @property
    def repstr(self) -> str:  # type: ignore[override]
        return (f"<{self.protocol.__class__.__name__} #{self.sessionno} on "
                f"{self.server._realPortNumber}>")

    def start_handshake(self) -> None:
        """Called by the port right after ``makeConnection``: the ClientHello is usually
        already waiting (a client sends it as soon as it is connected), so handshaking now
        saves a trip round the event loop; if not, this costs one ``EAGAIN`` read."""
        self._outside_poller(self._handshake, "TLS handshake failed")

    def _outside_poller(self, step: Callable[[], Any], failed: str) -> None:
        """Run a read step the poller did not dispatch, handling its result as the poller's
        ``_doReadOrWrite`` would: an exception is logged and loses the connection, and a
        reason to disconnect disconnects."""
        try:
            why = step()
        except BaseException:
            log.failure(failed)
            why = main.CONNECTION_LOST
        if why is not None:
            self._loop._disconnectSelectable(self, why, True)

    # -- facts for the protocol above -------------------------------------------------------
    def getHandle(self) -> SocketTLS:  # type: ignore[override]
        """The TLS connection (``get_servername``, ``get_alpn_proto_negotiated``)."""
        return self._tls

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol agreed in the handshake, or None."""
        return self._tls.get_alpn_proto_negotiated() or None

    def getPeerCertificate(self) -> Any:
        return self._tls.get_peer_certificate()

    # -- handshake --------------------------------------------------------------------------
    def _handshake(self) -> Any:
        result = _lib.SSL_do_handshake(self._ssl)
        if result == 1:
            return self._handshake_done()
        code = _lib.SSL_get_error(self._ssl, result)
        if code == _WANT_READ:
            if self._handshake_writing:
                self._handshake_writing = False
                self.stopWriting()
            return None
        if code == _WANT_WRITE:  # the kernel did not take our whole flight
            self._handshake_writing = True
            self.startWriting()
            return None
        failed = self._tls.error(result, code)  # alert, EOF, reset, callback failure
        _lib.ERR_clear_error()
        counters = getattr(getattr(self.server, "acceptor", None), "counters", None)
        if counters is not None:
            counters.handshake_ended(failed)
        return failed

    def _handshake_done(self) -> Any:
        self._handshaking = False
        self._tls.handshake_over()
        self._deadlines.forget(self)
        if self._handshake_writing:
            self._handshake_writing = False
            self.stopWriting()
        held, self._held = self._held, []
        for data in held:
            self.write(data)
        if self._close_after_handshake:
            self.loseConnection()
        return None

    def handshake_timed_out(self) -> None:
        """The deadline passed with the handshake unfinished (see HandshakeDeadlines)."""
        self.abortConnection()

    # -- reading ----------------------------------------------------------------------------
    def doRead(self) -> Any:
        if self._handshaking:
            return self._handshake()
        if self._read_wants_write:
            return None  # doWrite reads once the socket can take OpenSSL's bytes
        return self._read_records()

    def _read_records(self) -> Any:
        """Deliver the next record(s).

        OpenSSL reads the socket exactly (read-ahead is off): a record header, then its
        body. What it has not read stays in the kernel, where the poller sees it, so one
        record per readiness event is enough and no read is wasted on ``EAGAIN``. Only
        plaintext OpenSSL holds after a read (``SSL_pending``) is read on at once.
        """
        ssl = self._ssl
        for _ in range(_RECORDS_PER_EVENT):
            count = _lib.SSL_read(ssl, _read_buffer, _READ_SIZE)
            if count <= 0:
                return self._read_failed(count)
            if self._write_wants_read:
                self._write_wants_read = False
                self.startWriting()
            why = self._dataReceived(_ffi.unpack(_read_buffer, count))
            if (why is not None or self._paused or not self.connected or self.disconnecting
                    or self._aborting):
                return why
            if not _lib.SSL_pending(ssl):
                return None
        self._loop.callLater(0, self._read_later)  # yield to other connections
        return None

    def _read_failed(self, count: int) -> Any:
        code = _lib.SSL_get_error(self._ssl, count)
        if code == _WANT_READ:
            return None
        if code == _WANT_WRITE:  # a read that must send first (e.g. a TLS 1.3 KeyUpdate)
            self._read_wants_write = True
            self.startWriting()
            return None
        _lib.ERR_clear_error()
        if code == _ZERO_RETURN:  # the peer's close_notify: answer it, as TLS asks
            if len(self.dataBuffer) == self.offset and not self._tempDataLen:
                self._send_close_notify()
            return main.CONNECTION_DONE
        return main.CONNECTION_LOST  # EOF without close_notify, reset, or a TLS error

    def _read_later(self) -> None:
        """A read outside the poller's dispatch, with the poller's handling of its result."""
        if self.disconnected or not self.connected or self._paused or self._handshaking:
            return
        self._outside_poller(self.doRead, "TLS read failed")

    def pauseProducing(self) -> None:
        self._paused = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        was_paused, self._paused = self._paused, False
        super().resumeProducing()
        if (was_paused and not self._handshaking and self.connected and not self.disconnecting
                and _lib.SSL_pending(self._ssl)):
            # Plaintext OpenSSL read before the pause waits where the poller cannot see it.
            self._loop.callLater(0, self._read_later)

    # -- writing ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._handshaking and data and self.connected and not self.disconnecting:
            self._held.append(bytes(data))
            return
        super().write(data)  # sent at once when nothing is queued (ImmediateWriteMixin)

    def _send_now(self, data: bytes) -> int:
        sent = self.writeSomeData(data)
        return sent if isinstance(sent, int) else 0  # an error: the next doWrite closes

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))  # always through write: held during the handshake

    def writeSomeData(self, data: Any) -> Any:
        """Encrypt and send as much of ``data`` as the socket takes.

        With partial writes on, ``SSL_write`` returns after each record, so loop. A call that
        fails after earlier records went out reports the bytes sent: ``FileDescriptor`` then
        retries from exactly where the failed call started, as OpenSSL requires.
        """
        ssl = self._ssl
        length = len(data)
        if not length:
            return 0
        sent = count = 0
        if type(data) is bytes:  # the usual case: one record, and no buffer object for it
            count = _lib.SSL_write(ssl, data, length)
            if count == length:
                return count
            sent = max(count, 0)
        if sent or type(data) is not bytes:
            with _ffi.from_buffer(data) as buffer:
                while sent < length:
                    count = _lib.SSL_write(ssl, buffer + sent, length - sent)
                    if count <= 0:
                        break
                    sent += count
        if sent:
            return sent
        code = _lib.SSL_get_error(ssl, count)
        if code == _WANT_WRITE:
            return 0
        if code == _WANT_READ:
            self._write_wants_read = True
            return 0
        _lib.ERR_clear_error()
        return main.CONNECTION_LOST

    def doWrite(self) -> Any:
        if self._handshaking:
            return self._handshake()
        if self._read_wants_write:
            self._read_wants_write = False
            why = self._read_records()
            if why is not None:
                return why
            if len(self.dataBuffer) == self.offset and not self._tempDataLen:
                if not self._read_wants_write:
                    self.stopWriting()
                return None
        if self._write_wants_read:
            self.stopWriting()  # the next read restarts writing
            return None
        return super().doWrite()

    # -- closing ----------------------------------------------------------------------------
    def loseConnection(self) -> None:
        if self._handshaking and self.connected and not self.disconnecting:
            if self._held:
                # Held bytes go out once the handshake is done (bounded by its deadline).
                self._close_after_handshake = True
                return
            # Nothing to say: no reason to finish a handshake only to close it.
            self.disconnecting = 1
            self.stopReading()
            self.stopWriting()
            self._loop.callLater(0, self.connectionLost, Failure(main.CONNECTION_DONE))
            return
        super().loseConnection()

    def _postLoseConnection(self) -> Any:
        self._send_close_notify()
        return main.CONNECTION_DONE

    def _closeWriteConnection(self) -> Any:
        self._send_close_notify()
        return super()._closeWriteConnection()

    def _send_close_notify(self) -> None:
        if not self._handshaking:
            _lib.SSL_shutdown(self._ssl)  # one attempt; a full socket buffer just skips it
            _lib.ERR_clear_error()

    def connectionLost(self, reason: Failure) -> None:
        if self._handshaking:  # otherwise _handshake_done did this
            self._tls.handshake_over()
            self._deadlines.forget(self)
        self._held = []
        self._connections.discard(self)  # as TrackedServerMixin
        # What tcp.Connection.connectionLost and FileDescriptor.connectionLost do, in the
        # same order, in one call: this runs once per connection, for every handshake.
        if not hasattr(self, "socket"):  # called twice (see tcp.Connection.connectionLost)
            return
        self.disconnected = 1
        self.connected = 0
        if self.producer is not None:
            self.producer.stopProducing()
            self.producer = None
        self.reactor.removeReader(self)
        self.reactor.removeWriter(self)
        skt = self.socket
        aborted = reason.type is not None and issubclass(reason.type, error.ConnectionAborted)
        try:
            if not aborted:
                if self._shouldShutdown:
                    skt.shutdown(socket.SHUT_RDWR)
            else:  # an abort: reset, as Twisted does
                skt.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        try:  # noqa: SIM105 (contextlib.suppress: two more calls per connection)
            skt.close()
        except OSError:
            pass
        protocol = self.protocol
        del self.protocol
        del self.socket
        del self.fileno
        protocol.connectionLost(reason)

    # The peer's ``close_notify`` ends the connection (it was answered in ``_read_failed``):
    # no half-closed TLS here, so no adaptation to ``IHalfCloseableProtocol`` per closed
    # connection, and no call in between.
    readConnectionLost = connectionLost


__all__ = ["DirectTLSServer", "TLSAcceptor", "context_acceptor", "server_connection"]
