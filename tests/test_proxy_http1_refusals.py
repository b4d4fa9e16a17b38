"""Refusals that come after a request head (issue 17, faults 8 and 9), in memory: what the
upstream sees, and that valid pipelined requests before a bad one are still answered."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport

from aegis.proxy._engine import ProxyEngine
from aegis.proxy._http1 import Http1Connection
from aegis.proxy.routing import ConnectionInfo, Forward, ProxyLimits, RequestHead


class _ForwardRouter:
    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward:
        return Forward("127.0.0.1", 9)


def client() -> tuple[Http1Connection, StringTransport, MemoryReactorClock]:
    clock = MemoryReactorClock()
    proto = Http1Connection(ProxyEngine(_ForwardRouter(), clock, ProxyLimits()))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


def connect_upstream(clock: MemoryReactorClock, index: int = 0) -> tuple[Any, StringTransport]:
    factory = clock.tcpClients[index][2]
    upstream: Any = factory.buildProtocol(None)
    transport = StringTransport()
    upstream.makeConnection(transport)
    return upstream, transport


CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_fault_8_a_bad_chunk_in_the_same_read_reaches_no_upstream() -> None:
    proto, transport, clock = client()
    proto.dataReceived(CHUNKED_HEAD + b"5\r\nhello\r\nzz\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.disconnecting
    assert clock.tcpClients == [], "the request was forwarded"


def test_fault_8_a_bad_chunk_in_a_later_read_aborts_the_upstream_mid_request() -> None:
    proto, transport, clock = client()
    proto.dataReceived(CHUNKED_HEAD + b"5\r\nhello\r\n")
    _upstream, upstream_transport = connect_upstream(clock)
    assert upstream_transport.value().startswith(b"POST /up HTTP/1.1")
    proto.dataReceived(b"0x3\r\nabc\r\n0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert upstream_transport.disconnecting or getattr(upstream_transport, "aborting", False)
    assert not upstream_transport.value().endswith(b"0\r\n\r\n"), "the upstream saw an end"


def test_fault_9_a_valid_pipelined_request_before_a_bad_one_is_answered() -> None:
    proto, transport, clock = client()
    proto.dataReceived(
        b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"GET /second HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    )
    assert transport.value() == b"", "the refusal overtook the first response"
    upstream, upstream_transport = connect_upstream(clock)
    assert upstream_transport.value().startswith(b"GET /first HTTP/1.1")
    assert b"/second" not in upstream_transport.value()
    upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 200 ")
    first, _, refusal = answer.partition(b"first")
    assert b"connection: close" not in first.lower()
    assert refusal.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in refusal
    assert transport.disconnecting
    assert len(clock.tcpClients) == 1


def test_fault_9_a_valid_request_and_one_with_a_bad_chunk_in_one_read() -> None:
    proto, transport, clock = client()
    proto.dataReceived(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n"
                       + CHUNKED_HEAD + b"zz\r\n")
    upstream, upstream_transport = connect_upstream(clock)
    assert b"POST /up" not in upstream_transport.value()
    upstream.dataReceived(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 204 ")
    assert b"HTTP/1.1 400 " in transport.value() and transport.disconnecting
    assert len(clock.tcpClients) == 1


def test_nothing_after_a_refusal_is_parsed_or_read() -> None:
    proto, transport, clock = client()
    proto.dataReceived(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\nGET /bad HTTP/9.9\r\n\r\n")
    assert transport.producerState == "paused"
    proto.dataReceived(b"GET /third HTTP/1.1\r\nHost: app.test\r\n\r\n")
    upstream, _upstream_transport = connect_upstream(clock)
    upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert transport.value().count(b"HTTP/1.1 ") == 2
    assert len(clock.tcpClients) == 1
