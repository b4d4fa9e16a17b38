"""HTTP/2 front end in memory (an h2 client over a StringTransport that reports ALPN h2):
local answers, refused requests, GOAWAY on drain, routing sees SNI and ALPN."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
from twisted.internet.testing import MemoryReactorClock, StringTransport

from aegis.proxy._engine import ProxyEngine
from aegis.proxy.routing import ConnectionInfo, Forward, LocalResponse, ProxyLimits, RequestHead


class _Handle:
    def get_servername(self) -> bytes:
        return b"App.Test"

    def get_alpn_proto_negotiated(self) -> bytes:
        return b"h2"


class _TLSLikeTransport(StringTransport):
    def getHandle(self) -> _Handle:
        return _Handle()


class _Router:
    def __init__(self) -> None:
        self.seen: list[tuple[RequestHead, ConnectionInfo]] = []

    def route(self, head: RequestHead, conn: ConnectionInfo) -> LocalResponse:
        self.seen.append((head, conn))
        return LocalResponse(421, [(b"Content-Type", b"text/plain")], b"misdirected\n")


def _connect() -> tuple[Any, _TLSLikeTransport, h2.connection.H2Connection, _Router]:
    router = _Router()
    engine = ProxyEngine(router, MemoryReactorClock(), ProxyLimits())
    from aegis.proxy._http1 import Http1Connection

    proto = Http1Connection(engine)
    transport = _TLSLikeTransport()
    proto.makeConnection(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return proto, transport, client, router


def _exchange(proto: Any, transport: StringTransport, client: Any) -> list[Any]:
    proto.dataReceived(client.data_to_send())
    events = client.receive_data(transport.value())
    transport.clear()
    return list(events)


def test_local_response_over_h2_with_sni_and_alpn_in_connection_info() -> None:
    proto, transport, client, router = _connect()
    client.send_headers(1, [(":method", "GET"), (":path", "/x?y"), (":scheme", "https"),
                            (":authority", "other.test"), ("cookie", "a=1"),
                            ("cookie", "b=2")], end_stream=True)
    events = _exchange(proto, transport, client)
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert (b":status", b"421") in response.headers
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == b"misdirected\n"
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    head, conn = router.seen[0]
    assert (head.host, head.target, head.version) == ("other.test", b"/x?y", "2")
    assert head.header(b"cookie") == b"a=1; b=2"
    assert (conn.scheme, conn.sni, conn.alpn) == ("https", "app.test", "h2")


def test_refused_request_and_drain_sends_goaway() -> None:
    proto, transport, client, router = _connect()
    client.send_headers(1, [(":method", "CONNECT"), (":authority", "a.test:443")],
                        end_stream=False)
    events = _exchange(proto, transport, client)
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert (b":status", b"405") in response.headers
    assert router.seen == []
    proto.drain()
    events = list(client.receive_data(transport.value()))
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    assert transport.disconnecting


def test_h2_protocol_violation_closes_the_connection() -> None:
    proto, transport, client, _ = _connect()
    proto.dataReceived(client.data_to_send())
    transport.clear()
    proto.dataReceived(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA on stream 0
    assert transport.disconnecting
    events = list(client.receive_data(transport.value()))
    assert any(isinstance(e, h2.events.ConnectionTerminated) and e.error_code == 1
               for e in events)


class _ForwardRouter:
    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward:
        return Forward(host="127.0.0.1", port=9)


def test_idle_h2_connection_times_out_but_not_while_a_stream_is_open() -> None:
    clock = MemoryReactorClock()
    limits = ProxyLimits(keepalive_timeout=5.0)
    engine = ProxyEngine(_ForwardRouter(), clock, limits)
    from aegis.proxy._http1 import Http1Connection

    proto = Http1Connection(engine)
    transport = _TLSLikeTransport()
    proto.makeConnection(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    proto.dataReceived(client.data_to_send())
    clock.advance(4.0)
    assert not transport.disconnecting
    # a request waiting for its upstream (the memory reactor never connects): busy, not idle
    client.send_headers(1, [(":method", "GET"), (":path", "/"), (":scheme", "https"),
                            (":authority", "app.test")], end_stream=True)
    proto.dataReceived(client.data_to_send())
    for _ in range(20):
        clock.advance(2.0)
    assert not transport.disconnecting
    # the client gives up on the stream: the connection is idle again and times out
    client.reset_stream(1)
    proto.dataReceived(client.data_to_send())
    clock.advance(4.0)
    assert not transport.disconnecting
    clock.advance(2.0)
    assert transport.disconnecting


class _ForwardRouter:
    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward:
        return Forward("127.0.0.1", 9)


def _upload_stream(limits: ProxyLimits) -> tuple[Any, StringTransport, Any, MemoryReactorClock]:
    from aegis.proxy._http1 import Http1Connection

    clock = MemoryReactorClock()
    proto = Http1Connection(ProxyEngine(_ForwardRouter(), clock, limits))
    transport = _TLSLikeTransport()
    proto.makeConnection(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(1, [(":method", "POST"), (":path", "/up"), (":scheme", "https"),
                            (":authority", "app.test")])
    _exchange(proto, transport, client)
    # The upstream connection the exchange asked for: connected, silent, never answering.
    (_, _, factory, _, _), = clock.tcpClients
    upstream = factory.buildProtocol(None)
    upstream.makeConnection(StringTransport())
    return proto, transport, client, clock


def _resets(proto: Any, transport: StringTransport, client: Any) -> list[Any]:
    return [e for e in _exchange(proto, transport, client)
            if isinstance(e, h2.events.StreamReset)]


def test_h2_request_body_idle_timeout_resets_the_stream() -> None:
    proto, transport, client, clock = _upload_stream(ProxyLimits(body_idle_timeout=2.0))
    for _ in range(3):  # DATA every second keeps the stream alive past 2 s
        client.send_data(1, b"x")
        assert _resets(proto, transport, client) == []
        clock.advance(1.0)
    clock.advance(2.5)  # then silence: reset
    resets = _resets(proto, transport, client)
    assert [(r.stream_id, r.error_code) for r in resets] == [(1, h2.errors.ErrorCodes.CANCEL)]


def test_h2_request_timeout_caps_a_trickled_body() -> None:
    proto, transport, client, clock = _upload_stream(
        ProxyLimits(body_idle_timeout=5.0, request_timeout=3.0))
    resets: list[Any] = []
    for _ in range(3):  # one byte a second: never idle for 5 s
        client.send_data(1, b"x")
        resets += _resets(proto, transport, client)
        clock.advance(1.0)
    assert resets == []
    clock.advance(1.0)  # past the 3 s cap on the whole body
    resets = _resets(proto, transport, client)
    assert [r.stream_id for r in resets] == [1]


def test_h2_finished_request_body_stops_the_timer() -> None:
    proto, transport, client, clock = _upload_stream(ProxyLimits(body_idle_timeout=2.0))
    client.send_data(1, b"x", end_stream=True)
    _exchange(proto, transport, client)
    clock.advance(10.0)  # waiting for the upstream now: its own timeout, not the body's
    assert _resets(proto, transport, client) == []


def test_h2_body_idle_timer_runs_again_after_a_pause() -> None:
    proto, transport, client, clock = _upload_stream(ProxyLimits(body_idle_timeout=2.0))
    stream = proto._delegate.streams[1]
    stream.pause_reading()  # the upstream is slow: we hold the client back
    clock.advance(5.0)
    assert _resets(proto, transport, client) == []  # not the client's fault
    stream.resume_reading()
    clock.advance(3.0)  # the client now stays silent past the idle timeout
    assert [r.stream_id for r in _resets(proto, transport, client)] == [1]
