"""Local responses, TLS upstreams, draining, the access log, HTTP/1.0 clients, the sweeper."""

from __future__ import annotations

import gc
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface.verify import verifyObject

from aegis.listeners import IDrainable
from aegis.proxy import proxy_factory
from aegis.proxy._http1 import Http1Connection
from aegis.proxy._timers import Sweeper
from aegis.proxy._upstream import UpstreamConnection
from aegis.proxy.routing import Forward, LocalResponse, ProxyLimits, StaticRouter
from aegis.tls.direct import DirectTLSServer
from aegis.tls.socket_tls import SocketTLS
from bench.proxy.run_proxy import tls_context_factory
from tests.test_proxy_support import (
    Seen,
    UpstreamFactory,
    UpstreamProtocol,
    listen,
    make_rig,
    raw_exchange,
    tls_client,
)


def _router_rig(routes: dict[str, Any], default: Any = None,
                limits: ProxyLimits | None = None) -> tuple[Any, int]:
    factory = proxy_factory(StaticRouter(routes, default), reactor, limits or ProxyLimits())
    port = listen(factory)
    return port, port.getHost().port


@pytest_twisted.ensureDeferred
async def test_local_responses_and_unknown_hosts() -> None:
    redirect = LocalResponse(308, [(b"Location", b"https://a.test/")], b"")
    port, number = _router_rig({"a.test": redirect})
    try:
        raw = await raw_exchange(number, b"GET /x HTTP/1.1\r\nHost: A.Test.:80\r\n\r\n"
                                 b"HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
                                 b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n"
                                 b"Connection: close\r\n\r\n")
        first, second, third = raw.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"308 Permanent Redirect\r\n")
        assert b"Location: https://a.test/" in first and b"Content-Length: 0" in first
        assert second.startswith(b"404 ") and second.endswith(b"\r\n\r\n")  # HEAD: no body
        assert third.startswith(b"404 ") and third.endswith(b"configured for this name.\n")
    finally:
        await port.stopListening()


def _ok(proto: UpstreamProtocol, seen: Seen) -> None:
    proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest_twisted.ensureDeferred
async def test_tls_upstream_verified_or_not(tmp_path: Path) -> None:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    options = tls_context_factory(str(cert), str(key))
    upstream = UpstreamFactory(handler=_ok)
    up = listen(TLSMemoryBIOFactory(options, False, upstream))
    number = up.getHost().port
    port, proxy = _router_rig({
        "insecure.test": Forward("127.0.0.1", number, "https", verify_tls=False),
        "strict.test": Forward("127.0.0.1", number, "https", verify_tls=True),
    })
    try:
        raw = await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: insecure.test\r\n\r\n"
                                 b"GET / HTTP/1.1\r\nHost: insecure.test\r\n"
                                 b"Connection: close\r\n\r\n")
        assert raw.count(b"HTTP/1.1 200 OK") == 2
        assert upstream.connections == 1  # pooled over TLS too
        raw = await raw_exchange(proxy, b"GET / HTTP/1.1\r\nHost: strict.test\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 502 ")  # not trusted by the system roots
    finally:
        await port.stopListening()
        await up.stopListening()


def _slow(proto: UpstreamProtocol, seen: Seen) -> None:
    reactor.callLater(0.3, proto.transport.write,
                      b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")


@pytest_twisted.ensureDeferred
async def test_drain_finishes_the_response_in_flight_then_closes() -> None:
    upstream = UpstreamFactory(handler=_slow)
    up = listen(upstream)
    protocols: list[Any] = []
    factory = proxy_factory(StaticRouter({}, Forward("127.0.0.1", up.getHost().port)),
                            reactor, ProxyLimits())
    original = factory.buildProtocol

    def build(addr: Any) -> Any:
        protocol = original(addr)
        protocols.append(protocol)
        return protocol

    factory.buildProtocol = build  # type: ignore[method-assign]
    port = listen(factory)
    try:
        pending = raw_exchange(port.getHost().port,
                               b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
                               b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        await deferLater(reactor, 0.1, lambda: None)
        assert verifyObject(IDrainable, protocols[0])
        protocols[0].drain()
        raw = await pending
        assert raw.count(b"HTTP/1.1 200 OK") == 1 and raw.endswith(b"slow")
        assert b"Connection: close" in raw
    finally:
        await port.stopListening()
        await up.stopListening()


@pytest_twisted.ensureDeferred
async def test_access_log_records_and_http10_close_delimited() -> None:
    records: list[tuple[Any, ...]] = []
    upstream = UpstreamFactory(handler=lambda p, s: (
        p.transport.write(b"HTTP/1.1 200 OK\r\n\r\nstreamed-without-length"),
        p.transport.loseConnection()))
    up = listen(upstream)
    port, number = _router_rig({"local.test": LocalResponse(404, [], b"nope")},
                               Forward("127.0.0.1", up.getHost().port),
                               ProxyLimits(access_log=lambda *record: records.append(record)))
    try:
        raw = await raw_exchange(number, b"GET /p?q=1 HTTP/1.0\r\nHost: log.test\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding" not in raw and b"Connection: close" in raw
        assert raw.endswith(b"streamed-without-length")
        raw = await raw_exchange(number, b"GET /c HTTP/1.1\r\nHost: log.test\r\n"
                                 b"Connection: close\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in raw and raw.endswith(b"\r\n0\r\n\r\n")
        await raw_exchange(number, b"GET /l HTTP/1.1\r\nHost: local.test\r\n"
                           b"Connection: close\r\n\r\n")
    finally:
        await port.stopListening()
        await up.stopListening()
    (head, conn, status, sent, upstream_ms), second, local = records
    assert (head.host, head.method, head.target, head.version, status, sent) == (
        "log.test", b"GET", b"/p?q=1", "1.0", 200, 23)
    assert conn.client_host == "127.0.0.1" and isinstance(upstream_ms, int)
    assert second[0].target == b"/c"
    assert (local[0].target, local[2], local[3], local[4]) == (b"/l", 404, 4, None)


def test_sweeper_fires_only_passed_deadlines_and_stops_when_empty() -> None:
    clock = Clock()
    sweeper = Sweeper(clock, 0.25)
    fired: list[str] = []

    class Thing:
        def __init__(self, name: str, deadline: float) -> None:
            self.name, self.deadline = name, deadline

        def expired(self) -> None:
            fired.append(self.name)
            sweeper.unwatch(self)

    early, late, none = Thing("early", 1.0), Thing("late", 3.0), Thing("none", 0.0)
    for thing in (early, late, none):
        sweeper.watch(thing)
    clock.advance(1.0)
    assert fired == ["early"]
    clock.advance(1.0)
    assert fired == ["early"]
    sweeper.unwatch(none)
    clock.advance(1.0)
    assert fired == ["early", "late"]
    clock.advance(0.25)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest_twisted.ensureDeferred
async def test_nagle_is_off_towards_the_client_and_the_upstream(tls: bool) -> None:
    """Without TCP_NODELAY a request head and the body bytes written after it wait for a
    delayed ACK: measured p90 43 ms for a keep-alive POST through the proxy (0.7 ms with it)."""
    rig = make_rig(tls=tls)
    fronts: list[Any] = []
    build = rig.factory.buildProtocol

    def recording(addr: Any) -> Any:
        fronts.append(build(addr))
        return fronts[-1]

    rig.factory.buildProtocol = recording
    try:
        def post() -> tuple[socket.socket, bytes]:
            """One keep-alive POST; the connection stays open for the checks."""
            connection = tls_client(rig.port) if tls else socket.create_connection(
                ("127.0.0.1", rig.port), 5)
            connection.sendall(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n"
                               b"\r\nabc")
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += connection.recv(65536)
            return connection, answer

        connection, answer = await deferToThread(post)
        assert answer.startswith(b"HTTP/1.1 200 OK")
        client_socket = fronts[0].transport.socket  # plain TCP and TLS on the socket alike
        assert client_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        pooled = rig.factory.engine.pool.idle_connection(
            Forward("127.0.0.1", rig.upstream_port.getHost().port))
        assert pooled is not None
        upstream_socket = pooled.transport.getHandle()
        assert upstream_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        pooled.close()
        connection.close()
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_closed_connections_are_freed_without_the_cycle_collector() -> None:
    """Client and upstream connections go as soon as they are closed: their HTTP parsers
    hold bound callbacks, a reference cycle that used to keep each protocol, its transport
    and its TLS connection until the cyclic garbage collector ran."""
    rig = make_rig(tls=True)

    def get() -> bytes:
        with tls_client(rig.port) as connection:
            connection.sendall(b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            return answer

    ours = (Http1Connection, UpstreamConnection, DirectTLSServer, SocketTLS)
    gc.collect()
    gc.disable()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, ours)}  # other tests' own
    try:
        for _ in range(3):
            assert (await deferToThread(get)).startswith(b"HTTP/1.1 200 OK")
        rig.factory.engine.pool.close()  # the pooled upstream connections, too
        alive: list[Any] = []
        for _ in range(50):
            await deferLater(reactor, 0.02, lambda: None)
            alive = [o for o in gc.get_objects() if isinstance(o, ours) and id(o) not in earlier]
            if not alive:
                break
        assert alive == []
    finally:
        gc.enable()
        await rig.stop()
