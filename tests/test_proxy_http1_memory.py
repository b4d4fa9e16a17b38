"""HTTP/1.1 request-body timers in memory: a StringTransport client, a clock we advance."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport

from aegis.proxy._engine import ProxyEngine
from aegis.proxy._http1 import Http1Connection
from aegis.proxy.routing import ConnectionInfo, Forward, ProxyLimits, RequestHead


class _ForwardRouter:
    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward:
        return Forward("127.0.0.1", 9)


def _upload(limits: ProxyLimits) -> tuple[Http1Connection, StringTransport, MemoryReactorClock]:
    """A POST whose body has begun, forwarded to a connected upstream that never answers."""
    clock = MemoryReactorClock()
    proto = Http1Connection(ProxyEngine(_ForwardRouter(), clock, limits))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nxx")
    (_, _, factory, _, _), = clock.tcpClients
    upstream: Any = factory.buildProtocol(None)
    upstream.makeConnection(StringTransport())
    return proto, transport, clock


def _aborted(transport: StringTransport) -> bool:
    return bool(transport.disconnecting) or bool(getattr(transport, "aborting", False))


def test_body_idle_timeout_aborts_a_silent_client() -> None:
    proto, transport, clock = _upload(ProxyLimits(body_idle_timeout=2.0))
    for _ in range(3):  # a byte a second keeps it alive past 2 s
        proto.dataReceived(b"x")
        clock.advance(1.0)
    assert not _aborted(transport)
    clock.advance(3.0)
    assert _aborted(transport)


def test_body_idle_timer_stops_while_aegis_holds_the_client_back() -> None:
    proto, transport, clock = _upload(ProxyLimits(body_idle_timeout=2.0))
    proto.pause_reading()  # the upstream is slow to take the body: we stop reading
    clock.advance(5.0)
    assert not _aborted(transport)  # not the client's fault
    proto.resume_reading()
    clock.advance(3.0)  # now the client stays silent past the idle timeout
    assert _aborted(transport)


def test_request_timeout_still_caps_a_held_back_body() -> None:
    proto, transport, clock = _upload(ProxyLimits(body_idle_timeout=2.0, request_timeout=4.0))
    proto.pause_reading()
    clock.advance(3.0)
    assert not _aborted(transport)
    clock.advance(2.0)  # past the 4 s whole-request deadline, held back or not
    assert _aborted(transport)
