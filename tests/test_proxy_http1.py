"""HTTP/1.1 proxying over loopback against a real upstream: semantics, pooling, rewriting."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest_twisted
from twisted.internet.threads import deferToThread

from aegis.proxy.routing import ProxyLimits
from tests.test_proxy_support import Seen, UpstreamProtocol, make_rig, raw_exchange


def _split(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n\r\n")


@pytest_twisted.ensureDeferred
async def test_forwards_and_rewrites_headers() -> None:
    rig = make_rig()
    try:
        raw = await raw_exchange(
            rig.port,
            (
                b"GET /a?b=1 HTTP/1.1\r\nHost: App.Test:8080\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n"
                b"X-Forwarded-Proto: https\r\n"
                b"X-Forwarded-Host: evil\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n"
                b"Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: foo\r\nX-Kept: yes\r\n\r\n"
            ),
        )
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert raw.endswith(b"hello /a?b=1")
        assert b"X-Up: 1" in raw and b"Connection: close" in raw
        seen = rig.upstream.seen[0]
        assert seen.path == b"/a?b=1"
        assert seen.header(b"host") == [b"App.Test:8080"]
        assert seen.header(b"x-forwarded-for") == [b"127.0.0.1"]
        assert seen.header(b"x-forwarded-proto") == [b"http"]
        assert seen.header(b"x-forwarded-host") == [b"App.Test:8080"]
        assert seen.header(b"forwarded") == [b'for=127.0.0.1;proto=http;host="App.Test:8080"']
        for gone in (b"x-secret", b"keep-alive", b"te", b"upgrade", b"connection"):
            assert seen.header(gone) == [], gone
        assert seen.header(b"x-kept") == [b"yes"]
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_host_rewrite_and_response_headers() -> None:
    rig = make_rig(
        host_header=b"internal.svc", response_headers=[(b"Strict-Transport-Security", b"max-age=1")]
    )
    try:
        raw = await raw_exchange(
            rig.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
        )
        assert b"Strict-Transport-Security: max-age=1" in raw
        assert rig.upstream.seen[0].header(b"host") == [b"internal.svc"]
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_answered_in_order_over_one_pooled_connection() -> None:
    rig = make_rig()
    try:
        requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % i for i in range(20))
        raw = await raw_exchange(
            rig.port,
            requests + b"GET /last HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        bodies = [part.split(b"HTTP/1.1")[0] for part in _split(raw)[1:]]
        assert bodies == [b"hello /%d" % i for i in range(20)] + [b"hello /last"]
        # every request went over the same pooled upstream connection
        assert {s.connection for s in rig.upstream.seen} == {1}
        # and a second client connection reuses it too
        await raw_exchange(
            rig.port, b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
        )
        assert rig.upstream.connections == 1
    finally:
        await rig.stop()


def _status_handler(proto: UpstreamProtocol, seen: Seen) -> None:
    path = seen.path
    if path == b"/204":
        proto.transport.write(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
    elif path == b"/304":
        proto.transport.write(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')
    elif path == b"/chunked":
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
    elif path == b"/hop":
        proto.transport.write(b"HTTP/1.1 200 OK\r\nConnection: X-Private, keep-alive\r\n"
                              b"X-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: B\r\n"
                              b"Trailer: X-T\r\nUpgrade: h2c\r\nX-Public: 2\r\n"
                              b"Content-Length: 2\r\n\r\nok")
    elif path == b"/continue":
        proto.transport.write(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
    else:
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
        if seen.method != b"HEAD":
            proto.transport.write(b"hello world")


@pytest_twisted.ensureDeferred
async def test_head_204_304_chunked_and_1xx() -> None:
    rig = make_rig(_status_handler)
    try:
        raw = await raw_exchange(
            rig.port,
            (
                b"HEAD /x HTTP/1.1\r\nHost: app.test\r\n\r\n"
                b"GET /204 HTTP/1.1\r\nHost: app.test\r\n\r\n"
                b"GET /304 HTTP/1.1\r\nHost: app.test\r\n\r\n"
                b"GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n"
                b"GET /continue HTTP/1.1\r\nHost: app.test\r\n\r\n"
                b"GET /x HTTP/1.0\r\nHost: app.test\r\n\r\n"
            ),
        )
        parts = raw.split(b"HTTP/1.1 ")
        assert parts[1].startswith(b"200 OK\r\n") and b"Content-Length: 11\r\n\r\n" in parts[1]
        assert parts[1].endswith(b"\r\n\r\n")  # HEAD: no body bytes
        assert parts[2].startswith(b"204") and b"Content-Length" not in parts[2]
        assert b"Transfer-Encoding" not in parts[2] and parts[2].endswith(b"\r\n\r\n")
        assert parts[3].startswith(b"304") and b'ETag: "x"' in parts[3]
        assert parts[4].startswith(b"200") and b"Transfer-Encoding: chunked" in parts[4]
        assert parts[4].endswith(b"\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert b"X-Trailer" not in parts[4]
        assert parts[5].startswith(b"100 Continue\r\n\r\n")
        assert parts[6].startswith(b"200") and parts[6].endswith(b"ok")
        assert parts[7].startswith(b"200") and parts[7].endswith(b"hello world")
        assert rig.upstream.connections == 1
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_request_bodies_reframed() -> None:
    rig = make_rig()
    try:
        raw = await raw_exchange(
            rig.port,
            (
                b"POST /cl HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
                b"POST /ch HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
                b"GET /end HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
            ),
        )
        assert raw.count(b"200 OK") == 3
        cl, ch, _ = rig.upstream.seen
        assert cl.body == b"hello" and cl.header(b"content-length") == [b"5"]
        assert ch.body == b"abcde" and ch.header(b"transfer-encoding") == [b"chunked"]
        assert ch.header(b"x-t") == []
    finally:
        await rig.stop()



@pytest_twisted.ensureDeferred
async def test_hop_by_hop_response_headers_removed() -> None:
    rig = make_rig(_status_handler)
    try:
        raw = await raw_exchange(rig.port, b"GET /hop HTTP/1.1\r\nHost: app.test\r\n"
                                 b"Connection: close\r\n\r\n")
        head = raw.split(b"\r\n\r\n")[0].lower()
        assert raw.endswith(b"ok") and b"x-public: 2" in head
        for gone in (b"x-private", b"keep-alive", b"proxy-authenticate", b"trailer", b"upgrade"):
            assert gone not in head, gone
        assert b"connection: close" in head
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_via_is_off_by_default_and_added_both_ways_when_configured() -> None:
    rig = make_rig()
    try:
        raw = await raw_exchange(
            rig.port, b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        assert b"\r\nVia:" not in raw
        assert rig.upstream.seen[0].header(b"via") == []
    finally:
        await rig.stop()
    rig = make_rig(limits=ProxyLimits(via=b"aegis"))
    try:
        raw = await raw_exchange(
            rig.port,
            b"GET / HTTP/1.1\r\nHost: app.test\r\nVia: 1.0 corp-proxy\r\n"
            b"Connection: close\r\n\r\n",
        )
        head = raw.split(b"\r\n\r\n")[0]
        assert b"\r\nVia: 1.1 aegis" in head
        # the client's Via stays first; ours is appended as its own field line
        assert rig.upstream.seen[0].header(b"via") == [b"1.0 corp-proxy", b"1.1 aegis"]
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_request_timeout_stops_a_body_trickled_inside_the_idle_timeout() -> None:
    rig = make_rig(limits=ProxyLimits(body_idle_timeout=5.0, request_timeout=1.0))
    try:

        def trickle() -> tuple[float, bytes]:
            start = time.monotonic()
            got = b""
            with socket.create_connection(("127.0.0.1", rig.port), timeout=10) as sock:
                sock.sendall(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n")
                try:
                    for _ in range(100):  # one byte every 0.2 s: never idle for 5 s
                        sock.sendall(b"x")
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with contextlib.suppress(ConnectionResetError, TimeoutError):
                    got = sock.recv(100)
            return time.monotonic() - start, got

        elapsed, got = await deferToThread(trickle)
        assert 0.9 < elapsed < 3.0, elapsed  # cut at the 1 s limit (plus the sweep), not 20 s
        assert not got.startswith(b"HTTP/1.1 200")
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_request_timeout_leaves_a_prompt_request_and_idle_keepalive_alone() -> None:
    rig = make_rig(limits=ProxyLimits(request_timeout=0.5, keepalive_timeout=5.0))
    try:

        def two_requests() -> list[bytes]:
            answers = []
            with socket.create_connection(("127.0.0.1", rig.port), timeout=5) as sock:
                for last in (False, True):
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n"
                                 + (b"Connection: close\r\n" if last else b"") + b"\r\n")
                    answers.append(sock.recv(65536))
                    time.sleep(1.0)  # idle between requests: the keep-alive timeout applies
            return answers

        answers = await deferToThread(two_requests)
        assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers), answers
    finally:
        await rig.stop()


def _early_answer(proto: UpstreamProtocol) -> None:
    """An app that refuses a POST on its head, before its body (an early 401 or 413)."""
    if proto.url.startswith(b"/early"):
        proto.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest_twisted.ensureDeferred
async def test_early_upstream_answer_keeps_the_connection_when_little_body_is_left() -> None:
    """The rest of the body is read and dropped, then the next request is served on the same
    connection (a client reusing it must not meet a silently closed socket)."""
    rig = make_rig()
    rig.upstream.on_head = _early_answer

    def client() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", rig.port), timeout=5) as sock:
            sock.sendall(b"POST /early HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\n")
            first = _read_until(sock, b"nope")
            sock.sendall(b"0123456789GET /next HTTP/1.1\r\nHost: app.test\r\n\r\n")
            return first, _read_until(sock, b"hello /next")

    try:
        first, second = await deferToThread(client)
        assert first.startswith(b"HTTP/1.1 401 ") and b"Connection: close" not in first
        assert second.startswith(b"HTTP/1.1 200 OK") and second.endswith(b"hello /next")
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_early_upstream_answer_with_a_large_rest_announces_the_close() -> None:
    rig = make_rig()
    rig.upstream.on_head = _early_answer
    try:
        raw = await raw_exchange(rig.port, b"POST /early HTTP/1.1\r\nHost: app.test\r\n"
                                 b"Content-Length: 5000000\r\n\r\nsome")
        assert raw.startswith(b"HTTP/1.1 401 ") and b"Connection: close\r\n" in raw
        assert raw.endswith(b"nope")  # and then the proxy closed the connection
    finally:
        await rig.stop()
