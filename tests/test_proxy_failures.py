"""ACCEPTANCE 23-24: upstream refused, stalled, malformed, dying mid-body; pool hygiene."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor

from aegis.proxy.routing import ProxyLimits
from aegis.testing.ports import free_port
from tests.test_proxy_support import Seen, UpstreamProtocol, make_rig, raw_exchange

GET = b"GET /%s HTTP/1.1\r\nHost: app.test\r\n\r\n"
LAST = b"GET /%s HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"


def _no_internal_address(raw: bytes, *ports: int) -> None:
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"127.0.0.1" not in body
    for port in ports:
        assert str(port).encode() not in raw


@pytest_twisted.ensureDeferred
async def test_refused_upstream_is_502_within_a_second() -> None:
    dead = free_port()
    rig = make_rig(forward_port=dead)
    try:
        start = time.monotonic()
        raw = await raw_exchange(rig.port, GET % b"x")
        assert time.monotonic() - start < 1.0
        assert raw.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert b"Content-Type: text/plain" in raw or b"content-type: text/plain" in raw
        _no_internal_address(raw, dead)
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_error_pages_carry_the_hosts_response_headers() -> None:
    # The hosts layer puts HSTS into a forward's response headers for HTTPS: Aegis's own
    # 502 for that host must carry it too, like every proxied response does.
    hsts = (b"Strict-Transport-Security", b"max-age=31536000")
    rig = make_rig(forward_port=free_port(), response_headers=[hsts])
    try:
        raw = await raw_exchange(rig.port, GET % b"x")
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 502 ")
        assert b"\r\nStrict-Transport-Security: max-age=31536000" in head
    finally:
        await rig.stop()


def _stall(proto: UpstreamProtocol, seen: Seen) -> None:
    if seen.path == b"/slowbody":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")


@pytest_twisted.ensureDeferred
async def test_stalled_upstream_is_504_at_the_configured_timeout() -> None:
    rig = make_rig(_stall, limits=ProxyLimits(upstream_timeout=0.4))
    try:
        start = time.monotonic()
        raw = await raw_exchange(rig.port, GET % b"x")
        elapsed = time.monotonic() - start
        assert 0.35 < elapsed < 1.5
        assert raw.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
        _no_internal_address(raw, rig.upstream_port.getHost().port)
        # stalled mid-body: the client sees a short body and a closed connection
        raw = await raw_exchange(rig.port, GET % b"slowbody")
        assert raw.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100" in raw
        assert raw.endswith(b"partial")
    finally:
        await rig.stop()


def _dies(proto: UpstreamProtocol, seen: Seen) -> None:
    if seen.path == b"/cl":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly-some")
    else:
        proto.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nsome\r\n")
    reactor.callLater(0.05, proto.transport.loseConnection)


@pytest_twisted.ensureDeferred
async def test_upstream_dying_mid_body_closes_the_client_without_a_clean_end() -> None:
    rig = make_rig(_dies)
    try:
        raw = await raw_exchange(rig.port, GET % b"cl" + GET % b"after")
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"only-some")
        assert raw.count(b"HTTP/1.1") == 1  # the pipelined request was not answered
        raw = await raw_exchange(rig.port, GET % b"chunked")
        assert raw.endswith(b"4\r\nsome\r\n")  # no terminating 0-chunk: visibly truncated
    finally:
        await rig.stop()


def _malformed(proto: UpstreamProtocol, seen: Seen) -> None:
    if seen.path == b"/bad":
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\nok"
        )
    elif seen.path == b"/badcl":
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"
        )
    elif seen.path == b"/status":
        proto.transport.write(b"HTTP/1.1 999 What\r\nContent-Length: 2\r\n\r\nok")
    elif seen.path == b"/extra":
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n"
            b"X-Injected: 1\r\nContent-Length: 0\r\n\r\n"
        )
    else:
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest_twisted.ensureDeferred
async def test_malformed_upstream_head_is_502_and_connection_not_reused() -> None:
    rig = make_rig(_malformed)
    try:
        for path in (b"bad", b"badcl", b"status"):
            raw = await raw_exchange(rig.port, GET % path + GET % b"good")
            assert raw.startswith(b"HTTP/1.1 502 Bad Gateway"), (path, raw)
            _no_internal_address(raw, rig.upstream_port.getHost().port)
        connections = rig.upstream.connections
        assert connections == 3  # every malformed answer cost its connection
        raw = await raw_exchange(rig.port, GET % b"good" + LAST % b"good")
        assert raw.count(b"200 OK") == 2
        # unsolicited bytes after a response never reach the next exchange
        raw = await raw_exchange(rig.port, GET % b"extra" + GET % b"good" + LAST % b"good")
        assert b"X-Injected" not in raw
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_pool_limits_and_idle_timeout() -> None:
    rig = make_rig(limits=ProxyLimits(upstream_idle_timeout=0.3, max_per_upstream=1))
    try:
        from twisted.internet.defer import gatherResults

        answers = await gatherResults(
            [
                raw_exchange(
                    rig.port, b"GET /%d HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n" % i
                )
                for i in range(5)
            ]
        )
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
        assert rig.upstream.connections == 1  # one connection at most, shared in turn
        assert rig.upstream.open == 1
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.6, lambda: None)
        assert rig.upstream.open == 0  # the idle connection was closed
        raw = await raw_exchange(rig.port, LAST % b"again")
        assert raw.startswith(b"HTTP/1.1 200") and rig.upstream.connections == 2
    finally:
        await rig.stop()


def _closing_upstream(proto: UpstreamProtocol, seen: Seen) -> None:
    proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    proto.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_upstream_closing_keepalive_connections_is_retried_for_bodyless_requests() -> None:
    rig = make_rig(_closing_upstream)
    try:
        raw = await raw_exchange(rig.port, GET % b"1" + GET % b"2" + LAST % b"3")
        assert raw.count(b"HTTP/1.1 200 OK") == 3
    finally:
        await rig.stop()


def _endless(proto: UpstreamProtocol, seen: Seen) -> None:
    proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"z" * 1000)


@pytest_twisted.ensureDeferred
async def test_client_leaving_mid_response_drops_the_upstream_connection() -> None:
    rig = make_rig(_endless)
    try:
        import socket

        from twisted.internet.task import deferLater
        from twisted.internet.threads import deferToThread

        def leave() -> bytes:
            with socket.create_connection(("127.0.0.1", rig.port), timeout=5) as sock:
                sock.sendall(GET % b"x")
                return sock.recv(100)

        assert (await deferToThread(leave)).startswith(b"HTTP/1.1 200 OK")
        await deferLater(reactor, 0.3, lambda: None)
        assert rig.upstream.open == 0  # mid-response: never returned to the pool
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_upload_failing_upstream_gives_502_or_close_never_a_fake_success() -> None:
    dead = free_port()
    rig = make_rig(forward_port=dead)
    try:
        raw = await raw_exchange(rig.port, b"POST /u HTTP/1.1\r\nHost: app.test\r\n"
                                 b"Content-Length: 1000000\r\n\r\n" + b"a" * 1000000)
        assert raw.startswith(b"HTTP/1.1 502 ") or raw == b""
        assert b"200 OK" not in raw
    finally:
        await rig.stop()


def _long_heads(proto: UpstreamProtocol, seen: Seen) -> None:
    size = {b"/over": 70_000, b"/under": 40_000}.get(seen.path, 0)
    proto.transport.write(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * size
                          + b"\r\nContent-Length: 2\r\n\r\nok")


@pytest_twisted.ensureDeferred
async def test_an_upstream_head_over_the_limit_is_502() -> None:
    """A misbehaving upstream cannot grow Aegis's memory with an endless response head."""
    rig = make_rig(_long_heads, limits=ProxyLimits(max_response_header_bytes=64 * 1024))
    try:
        raw = await raw_exchange(rig.port, LAST % b"over")
        assert raw.startswith(b"HTTP/1.1 502 Bad Gateway"), raw[:80]
        raw = await raw_exchange(rig.port, LAST % b"under")
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"\r\n\r\nok")
    finally:
        await rig.stop()
