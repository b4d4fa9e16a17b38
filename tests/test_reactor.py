"""Aegis's reactor (:mod:`aegis.reactor`) against Twisted's own reactor conformance tests,
plus the immediate-write cases those tests do not single out.

Twisted's ``ReactorBuilder`` suites build a fresh reactor per test from a dotted name; here
they build only :class:`aegis.reactor.AegisReactor`, with the epoll reactor's known skips.
The rest of this project's suite also runs on it (``tests/conftest.py``).
"""

from __future__ import annotations

import socket
import unittest
from typing import Any

import pytest_twisted
import twisted.internet.test.test_core as core_tests
import twisted.internet.test.test_fdset as fdset_tests
import twisted.internet.test.test_tcp as tcp_tests
import twisted.internet.test.test_time as time_tests
import twisted.internet.test.test_tls as tls_tests
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from aegis.reactor import AegisReactor, ImmediateClient, ImmediateServer

AEGIS = "aegis.reactor.AegisReactor"
EPOLL = "twisted.internet.epollreactor.EPollReactor"

_BUILDERS: list[Any] = [
    tcp_tests.TCP4ClientTestsBuilder,
    tcp_tests.TCP6ClientTestsBuilder,
    tcp_tests.TCPPortTestsBuilder,
    tcp_tests.TCPFDPortTestsBuilder,
    tcp_tests.TCPConnectionTestsBuilder,
    tcp_tests.TCP4ConnectorTestsBuilder,
    tcp_tests.TCP6ConnectorTestsBuilder,
    tcp_tests.TCPTransportTestsBuilder,
    tcp_tests.AdoptStreamConnectionTestsBuilder,
    tcp_tests.TestBindAddressBuilder,
    tcp_tests.AbortConnectionTests,
    tls_tests.SSLClientTestsMixin,
    tls_tests.StartTLSClientTestsMixin,
    tls_tests.TLSPortTestsBuilder,
    tls_tests.AbortSSLConnectionTests,
    core_tests.SystemEventTestsBuilder,
    time_tests.TimeTestsBuilder,
    fdset_tests.ReactorFDSetTestsBuilder,
]

# Where the Aegis reactor differs from the epoll reactor on purpose (see aegis.reactor).
_LOG_CONTEXT = (
    "no per-event legacy log context (logPrefix), by design: Aegis logs with twisted.logger"
)
_SENT_AT_ONCE = (
    "asserts that bytes written just before abortConnection() stay buffered and are "
    "discarded, or that a 1 KB write overflows a 500-byte buffer; with immediate writes the "
    "kernel has already taken them (abortConnection discards what is still buffered)"
)
_DIFFERENCES: dict[str, dict[str, str]] = {
    "TCP4ClientTestsBuilder": {"test_logPrefix": _LOG_CONTEXT},
    "TCP6ClientTestsBuilder": {"test_logPrefix": _LOG_CONTEXT},
    "SSLClientTestsMixin": {"test_logPrefix": _LOG_CONTEXT},
    "StartTLSClientTestsMixin": {"test_logPrefix": _LOG_CONTEXT},
    "TCPTransportTestsBuilder": {"test_streamingProducer": _SENT_AT_ONCE},
    "AdoptStreamConnectionTestsBuilder": {"test_streamingProducer": _SENT_AT_ONCE},
    "AbortConnectionTests": {
        name: _SENT_AT_ONCE for name in (
            "test_clientAbortsConnectionThenLosesConnection", "test_clientAbortsConnectionTwice",
            "test_dataReceivedAbort", "test_resumeProducingAbort",
            "test_resumeProducingAbortLater", "test_resumeProducingThrows",
            "test_serverAbortsConnectionThenLosesConnection", "test_serverAbortsConnectionTwice",
        )
    },
    "ReactorFDSetTestsBuilder": {
        "test_lostFileDescriptor": "skipped for EPollReactor by class name; same epoll limits",
    },
}


def _skipped(reason: str) -> Any:
    @unittest.skip(reason)
    def test(self: object) -> None:
        pass  # never runs

    return test


for _builder in _BUILDERS:
    _skips = dict(getattr(_builder, "skippedReactors", {}))
    if EPOLL in _skips:
        _skips[AEGIS] = _skips[EPOLL]
    _body: dict[str, Any] = {"_reactors": [AEGIS], "skippedReactors": _skips,
                             "__module__": __name__}
    for _name, _reason in _DIFFERENCES.get(_builder.__name__, {}).items():
        assert hasattr(_builder, _name), _name  # the upstream test still exists
        _body[_name] = _skipped(_reason)
    _ours = type(_builder.__name__, (_builder,), _body)
    globals().update(_ours.makeTestCaseClasses())
del _builder, _skips, _ours, _body, _name, _reason


def test_the_suite_runs_on_the_aegis_reactor_and_its_transports() -> None:
    assert isinstance(reactor, AegisReactor)
    assert ImmediateServer.write is ImmediateClient.write  # one code path, both directions


class Sink(Protocol):
    """Reads everything until the peer closes."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.made: Deferred[None] = Deferred()
        self.closed: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(bytes(self.data))


@implementer(IPushProducer)
class CountingProducer:
    def __init__(self) -> None:
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.resumes += 1

    def stopProducing(self) -> None:
        pass


class Writer(Protocol):
    """On connect: hand itself to the test, which writes through ``self.transport``."""

    def __init__(self, made: Deferred[Writer]) -> None:
        self.made = made
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.made.callback(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


async def _pair() -> tuple[Writer, Sink, Any]:
    """A server transport of ours (``Writer``) connected to a ``Sink`` client."""
    made: Deferred[Writer] = Deferred()
    factory = Factory.forProtocol(lambda: Writer(made))  # type: ignore[arg-type]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    sink = Sink()
    client = ClientFactory.forProtocol(lambda: sink)  # type: ignore[arg-type]
    reactor.connectTCP("127.0.0.1", port.getHost().port, client)
    writer = await made
    await sink.made
    return writer, sink, port


@pytest_twisted.ensureDeferred
async def test_a_small_write_leaves_at_once_without_queueing() -> None:
    writer, sink, port = await _pair()
    transport = writer.transport
    assert isinstance(transport, ImmediateServer)
    transport.write(b"hello")
    # Sent by the call itself: nothing queued, no interest in writability registered.
    assert transport._tempDataLen == 0 and len(transport.dataBuffer) == transport.offset
    assert transport.fileno() not in reactor._writes  # type: ignore[attr-defined]
    transport.loseConnection()
    assert await sink.closed == b"hello"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_refuses_is_queued_and_the_producer_paused() -> None:
    writer, sink, port = await _pair()
    transport = writer.transport
    assert isinstance(transport, ImmediateServer)
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    producer = CountingProducer()
    transport.registerProducer(producer, True)
    payload = bytes(range(256)) * 4096 * 4  # 4 MiB: far more than the socket buffers take
    transport.write(payload)
    assert transport._tempDataLen > 0  # the rest waits in Twisted's buffer, in order
    assert producer.pauses == 1
    transport.write(b"tail")  # queued behind, never sent ahead of the rest
    transport.unregisterProducer()
    transport.loseConnection()
    received = await sink.closed
    assert received == payload + b"tail"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_write_to_a_reset_peer_loses_the_connection_without_raising() -> None:
    writer, sink, port = await _pair()
    transport = writer.transport
    assert sink.transport is not None
    sink.transport.abortConnection()  # the peer resets the connection (RST)
    await sink.closed
    for _ in range(20):
        transport.write(b"x" * 65536)  # must not raise, whatever the socket says
        if writer.lost.called:
            break
        await _sleep(0.01)
    await writer.lost
    # epoll reports the reset as a hang-up, which Twisted calls ConnectionDone; either way
    # the connection is lost through connectionLost, not an exception from write().
    assert writer.reason is not None
    assert writer.reason.check(ConnectionLost, ConnectionDone) is not None, writer.reason
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_write_sequence_keeps_order() -> None:
    writer, sink, port = await _pair()
    transport = writer.transport
    transport.writeSequence([b"a", b"b", b"c"])
    transport.write(b"d")
    transport.loseConnection()
    assert await sink.closed == b"abcd"
    await port.stopListening()


async def _sleep(seconds: float) -> None:
    waiter: Deferred[None] = Deferred()
    reactor.callLater(seconds, waiter.callback, None)
    await waiter
