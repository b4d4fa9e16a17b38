"""TLS on the socket (:mod:`aegis.tls.direct`) over real loopback connections.

The SNI, policy and deadline behaviour of the HTTPS listener is tested through it in
``test_tls_loopback.py``; here are the transport's own promises: bytes intact both ways under
back-pressure (including OpenSSL's retry-with-the-same-buffer rule), pause and resume, writes
held until the handshake is done, ``close_notify`` on close, the reasons ``connectionLost``
reports, a handshake flight bigger than the socket buffer, and the fallback to Twisted's TLS
protocol for non-TCP listeners. Clients are Python's ``ssl`` module in threads.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from aegis.tls.deadlines import HandshakeDeadlines
from aegis.tls.direct import DirectTLSServer, TLSAcceptor, context_acceptor
from aegis.tls.endpoint import DirectTLSEndpoint, https_endpoint
from aegis.tls.policy import certificate_context
from aegis.tls.selection import MemoryCertificates, SelectionState
from tests.test_tls_support import PKI

T = TypeVar("T")
PKI_ = PKI()
LEAF = PKI_.leaf("direct.example.com")
MANY_NAMES = PKI_.leaf(*(f"n{i:04d}.example.com" for i in range(1500)))
BLOCK = bytes(range(256)) * 4096  # 1 MiB with a pattern, so reordering would show


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    PKI_.root.configure_trust(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def connect(port: int, name: str = "direct.example.com") -> ssl.SSLSocket:
    """A verified TLS client; an EOF without ``close_notify`` raises (not a silent b"")."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    return client_context().wrap_socket(raw, server_hostname=name, suppress_ragged_eofs=False)


class Recorder(Protocol):
    """Remembers what arrived and why the connection ended; ``on_made`` runs at accept."""

    def __init__(self, on_made: Callable[[Recorder], None] = lambda p: None,
                 on_data: Callable[[Recorder, bytes], None] = lambda p, d: None) -> None:
        self.on_made = on_made
        self.on_data = on_data
        self.received = hashlib.sha256()
        self.count = 0
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.on_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)
        self.count += len(data)
        self.on_data(self, data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        self.reason = reason
        self.lost.callback(None)

    async def ended(self) -> Failure:
        """Why the connection ended, once it has."""
        await self.lost
        assert self.reason is not None
        return self.reason


class Server:
    def __init__(self, make: Callable[[], Recorder], acceptor: TLSAcceptor) -> None:
        self.protocols: list[Recorder] = []
        self._make = make
        self.acceptor = acceptor

    def factory(self) -> Factory:
        server = self

        class _Factory(Factory):
            def buildProtocol(self, addr: Any) -> Recorder:
                protocol = server._make()
                server.protocols.append(protocol)
                return protocol

        return _Factory()

    async def listen(self) -> Any:
        endpoint = DirectTLSEndpoint(reactor, 0, 50, "127.0.0.1", self.acceptor)
        return await endpoint.listen(self.factory())

    async def serve(self, client: Callable[..., T], *args: Any) -> T:
        """Listen, run ``client(port, *args)`` in a thread, stop listening; its result."""
        port = await self.listen()
        try:
            result: T = await deferToThread(client, port.getHost().port, *args)
            return result
        finally:
            await maybeDeferred(port.stopListening)


def acceptor(certificate: Any = LEAF, send_buffer: int | None = None,
             timeout: float = 10.0) -> TLSAcceptor:
    """One certificate; ``send_buffer`` shrinks the accepted socket's SO_SNDBUF so that
    OpenSSL meets a full socket (WANT_WRITE) on writes and in the handshake."""
    context = certificate_context(certificate)
    base = context_acceptor(context, reactor, timeout)
    if send_buffer is None:
        return base

    def connection(sock: socket.socket, transport: Any) -> SSL.Connection:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        return base.connection(sock, transport)

    return TLSAcceptor(connection, reactor, timeout)


def digest(*parts: bytes) -> str:
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part)
    return hashed.hexdigest()


@pytest_twisted.ensureDeferred
async def test_large_response_through_a_small_send_buffer_arrives_intact() -> None:
    """Writes of every size, far more than the kernel takes at once, to a reader that starts
    late: OpenSSL's WANT_WRITE retries must resume exactly where they stopped."""
    sizes = [1, 100, 16384, 16385, 3 * 1024 * 1024 + 7, 70000, 5]
    pieces = [BLOCK[: size % len(BLOCK)] if size < len(BLOCK) else (BLOCK * 4)[:size]
              for size in sizes] * 3

    def send_all(protocol: Recorder) -> None:
        for piece in pieces:
            protocol.transport.write(piece)  # type: ignore[union-attr]
        protocol.transport.loseConnection()  # type: ignore[union-attr]

    server = Server(lambda: Recorder(on_made=send_all), acceptor(send_buffer=4096))

    def read_all(port: int) -> bytes:
        with connect(port) as tls:
            time.sleep(0.5)  # the server's buffer fills meanwhile
            received = []
            while chunk := tls.recv(1 << 20):  # b"" only after close_notify
                received.append(chunk)
            return b"".join(received)

    data = await server.serve(read_all)
    assert len(data) == sum(len(p) for p in pieces)
    assert digest(data) == digest(*pieces)
    reason = await server.protocols[0].ended()
    assert reason.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_upload_with_pauses_arrives_intact_and_in_order() -> None:
    """The protocol pauses the transport after each MiB; nothing is lost or reordered,
    including plaintext OpenSSL already decrypted before the pause."""
    total = 24 * len(BLOCK)

    def pause_per_mib(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        if protocol.count // len(BLOCK) != (protocol.count - len(data)) // len(BLOCK):
            transport.pauseProducing()
            reactor.callLater(0.01, transport.resumeProducing)
        if protocol.count == total:
            transport.write(protocol.received.hexdigest().encode())
            transport.loseConnection()

    server = Server(lambda: Recorder(on_data=pause_per_mib), acceptor())

    def upload(port: int) -> bytes:
        with connect(port) as tls:
            for _ in range(24):
                tls.sendall(BLOCK)
            answer = b""
            while chunk := tls.recv(1024):
                answer += chunk
            return answer

    answer = await server.serve(upload)
    assert answer == digest(*[BLOCK] * 24).encode()


@pytest_twisted.ensureDeferred
async def test_writes_before_the_handshake_are_held_then_sent() -> None:
    def greet(protocol: Recorder) -> None:
        assert protocol.transport is not None
        protocol.transport.write(b"hello ")
        protocol.transport.writeSequence([b"before ", b"handshake"])

    server = Server(lambda: Recorder(on_made=greet), acceptor())

    def read(port: int) -> bytes:
        with connect(port) as tls:
            got = b""
            while len(got) < 22:
                got += tls.recv(100)
            return got

    assert await server.serve(read) == b"hello before handshake"


@pytest_twisted.ensureDeferred
async def test_connection_facts_for_the_http_layer() -> None:
    seen: dict[str, Any] = {}

    def facts(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        seen["ssl"] = ISSLTransport.providedBy(transport)
        seen["direct"] = isinstance(transport, DirectTLSServer)
        seen["alpn"] = transport.negotiatedProtocol
        seen["sni"] = transport.getHandle().get_servername()
        seen["peer"] = transport.getPeer().host
        transport.write(b"ok")

    server = Server(lambda: Recorder(on_data=facts), acceptor())

    def ask(port: int) -> bytes:
        with connect(port) as tls:
            tls.sendall(b"?")
            return tls.recv(10)

    assert await server.serve(ask) == b"ok"
    assert seen == {"ssl": True, "direct": True, "alpn": b"h2",
                    "sni": b"direct.example.com", "peer": "127.0.0.1"}


@pytest.mark.parametrize("ending", ["close_notify", "abrupt"])
@pytest_twisted.ensureDeferred
async def test_how_the_peer_ended_reaches_connection_lost(ending: str) -> None:
    server = Server(Recorder, acceptor())

    def talk_and_end(port: int) -> None:
        tls = connect(port)
        tls.sendall(b"x")
        time.sleep(0.1)
        if ending == "close_notify":
            tls.unwrap().close()
        else:
            socket.socket(fileno=tls.detach()).close()  # TCP closes, no close_notify

    await server.serve(talk_and_end)
    reason = await server.protocols[0].ended()
    expected = ConnectionDone if ending == "close_notify" else ConnectionLost
    assert reason.check(expected), reason
    assert server.protocols[0].count == 1


@pytest_twisted.ensureDeferred
async def test_a_failed_handshake_reaches_the_protocol_as_the_tls_error() -> None:
    server = Server(Recorder, acceptor())

    def plain_http(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            return s.recv(100)

    await server.serve(plain_http)
    reason = await server.protocols[0].ended()
    assert reason.check(SSL.Error), reason
    assert server.protocols[0].count == 0


@pytest_twisted.ensureDeferred
async def test_close_during_the_handshake_closes_without_finishing_it() -> None:
    server = Server(lambda: Recorder(on_made=lambda p: p.transport.loseConnection()),  # type: ignore[union-attr]
                    acceptor())

    def handshake(port: int) -> str:
        try:
            connect(port).close()
        except (ssl.SSLError, OSError) as refused:
            return type(refused).__name__
        return "completed"

    assert await server.serve(handshake) != "completed"
    reason = await server.protocols[0].ended()
    assert reason.check(ConnectionDone)


@pytest_twisted.ensureDeferred
async def test_abort_mid_response_is_not_a_clean_end() -> None:
    def start_then_abort(protocol: Recorder, data: bytes) -> None:
        transport: Any = protocol.transport
        transport.write(b"partial")
        transport.abortConnection()

    server = Server(lambda: Recorder(on_data=start_then_abort), acceptor())

    def read_to_end(port: int) -> str:
        with connect(port) as tls:
            tls.sendall(b"go")
            try:
                while tls.recv(100):
                    pass
            except (ssl.SSLError, OSError) as cut:
                return type(cut).__name__
            return "clean"

    assert await server.serve(read_to_end) != "clean"
    reason = await server.protocols[0].ended()
    assert reason.check(ConnectionAborted)


def slow_reader_echo(port: int, name: str) -> bytes:
    """A client with a 4 KB receive buffer that sends its ClientHello, then reads nothing for
    half a second: the server's flight fills both socket buffers meanwhile."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", port))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with raw:
        slept = False
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                if not slept:
                    time.sleep(0.5)
                    slept = True
                data = raw.recv(65536)
                assert data, "server closed during the handshake"
                incoming.write(data)
        tls.write(b"ping")
        raw.sendall(outgoing.read())
        while True:
            try:
                return tls.read(10)
            except ssl.SSLWantReadError:
                incoming.write(raw.recv(65536))


@pytest_twisted.ensureDeferred
async def test_handshake_flight_larger_than_the_socket_buffers() -> None:
    """A certificate with 1,500 names (about 40 KB) to a client that does not read yet, through
    a 4 KB send buffer: the handshake itself meets WANT_WRITE and continues when the socket
    drains."""
    server = Server(lambda: Recorder(on_data=lambda p, d: p.transport.write(d)),  # type: ignore[union-attr]
                    acceptor(MANY_NAMES, send_buffer=4096))
    answer = await server.serve(slow_reader_echo, "n1499.example.com")
    assert answer == b"ping"


@pytest_twisted.ensureDeferred
async def test_unix_socket_listener_uses_twisted_tls_with_the_same_selection(
        tmp_path: Path) -> None:
    state = SelectionState(MemoryCertificates([LEAF]), LEAF)
    path = tmp_path / "https.sock"
    endpoint = https_endpoint(reactor, f"unix:{path}", state)
    assert not isinstance(endpoint, DirectTLSEndpoint)
    protocols: list[Recorder] = []

    class Echo(Factory):
        def buildProtocol(self, addr: Any) -> Recorder:
            protocol = Recorder(on_data=lambda p, d: p.transport.write(d))  # type: ignore[union-attr]
            protocols.append(protocol)
            return protocol

    port = await endpoint.listen(Echo())
    try:
        def echo() -> bytes:
            raw = socket.socket(socket.AF_UNIX)
            raw.connect(str(path))
            with client_context().wrap_socket(raw, server_hostname="direct.example.com") as tls:
                tls.sendall(b"unix")
                return tls.recv(10)

        assert await deferToThread(echo) == b"unix"
    finally:
        await maybeDeferred(port.stopListening)


def test_tcp_descriptions_get_the_direct_endpoint() -> None:
    state = SelectionState(MemoryCertificates([LEAF]), LEAF)
    assert isinstance(https_endpoint(reactor, "tcp:0:interface=127.0.0.1", state),
                      DirectTLSEndpoint)
    assert isinstance(https_endpoint(reactor, "tcp6:0:interface=\\:\\:1", state),
                      DirectTLSEndpoint)


class _Handshaking:
    """Records the clock time of each timeout (all watched at t=0 time out at t=10 s)."""

    def __init__(self, clock: Clock, started: float = 0.0) -> None:
        self.clock = clock
        self.started = started
        self.timed_out: list[float] = []

    def getPeer(self) -> str:
        return "peer"

    def handshake_timed_out(self) -> None:
        self.timed_out.append(self.clock.seconds() - self.started)


def test_handshake_deadlines_expire_in_order_with_one_timer() -> None:
    clock = Clock()
    deadlines = HandshakeDeadlines(clock, 10.0)
    first, second, done, third = (_Handshaking(clock) for _ in range(4))
    deadlines.watch(first)
    clock.advance(3)
    second.started = done.started = 3.0
    deadlines.watch(second)
    deadlines.watch(done)
    clock.advance(3)
    third.started = 6.0
    deadlines.watch(third)
    deadlines.forget(done)  # its handshake finished
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(4)  # t=10: only the first has expired
    assert (first.timed_out, second.timed_out, third.timed_out) == ([10.0], [], [])
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(3)  # t=13
    assert second.timed_out == [10.0] and third.timed_out == [] and done.timed_out == []
    clock.advance(3)  # t=16
    assert third.timed_out == [10.0]
    assert clock.getDelayedCalls() == []  # nothing left to watch: no timer either
    deadlines.watch(first)
    assert len(clock.getDelayedCalls()) == 1
