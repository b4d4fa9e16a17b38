"""ACCEPTANCE 25 and the request-side limits: every ambiguous request → 400 (or 431) + close,
and nothing reaches the upstream."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from aegis.proxy.routing import ProxyLimits
from tests.test_proxy_support import make_rig, raw_exchange

H = b"Host: app.test\r\n"

SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n" + H + b"\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "duplicate_cl_differ": b"POST / HTTP/1.1\r\n"
    + H
    + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "empty_cl": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n",
    "plus_cl": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    "hex_chunk_size": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    "bare_lf_request_line": b"GET / HTTP/1.1\n" + H + b"\r\n",
    "bare_lf_header": b"GET / HTTP/1.1\r\nHost: app.test\nX: y\r\n\r\n",
    "bare_lf_chunk": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\n" + H + b"X-Folded: a\r\n b\r\n\r\n",
    "unknown_coding": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "coding_before_chunked": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_twice": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST / HTTP/1.1\r\n"
    + H
    + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_in_http10": b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
    "bare_cr": b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "missing_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",
    "bad_host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "relative_target": b"GET foo HTTP/1.1\r\n" + H + b"\r\n",
    "cl_overflow": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
}


@pytest.fixture(scope="module")
def rig():  # type: ignore[no-untyped-def]
    rig = make_rig()
    yield rig
    rig.stop()


@pytest.mark.parametrize("name", sorted(SMUGGLING))
@pytest_twisted.ensureDeferred
async def test_ambiguous_request_is_refused_and_closed(name: str, rig) -> None:  # type: ignore[no-untyped-def]
    before = len(rig.upstream.seen)
    raw = await raw_exchange(rig.port, SMUGGLING[name], half_close=False)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n"), raw[:80]
    assert b"Connection: close" in raw
    assert raw.count(b"HTTP/1.1 ") == 1  # nothing after the 400: the connection was closed
    assert len(rig.upstream.seen) == before  # nothing forwarded


@pytest_twisted.ensureDeferred
async def test_connect_is_refused(rig) -> None:  # type: ignore[no-untyped-def]
    raw = await raw_exchange(rig.port, b"CONNECT app.test:443 HTTP/1.1\r\n" + H + b"\r\n")
    assert raw.startswith(b"HTTP/1.1 405 ")


@pytest_twisted.ensureDeferred
async def test_good_request_after_smuggling_attempt_on_other_connection(rig) -> None:  # type: ignore[no-untyped-def]
    raw = await raw_exchange(rig.port, b"GET /fine HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"hello /fine")


@pytest_twisted.ensureDeferred
async def test_header_count_and_size_limits() -> None:
    rig = make_rig(limits=ProxyLimits(max_header_count=20, max_header_bytes=4096))
    try:
        many = b"".join(b"X-%d: v\r\n" % i for i in range(25))
        raw = await raw_exchange(rig.port, b"GET / HTTP/1.1\r\n" + H + many + b"\r\n")
        assert raw.startswith(b"HTTP/1.1 431 ")
        big = b"X-Big: " + b"a" * 10000 + b"\r\n"
        raw = await raw_exchange(rig.port, b"GET / HTTP/1.1\r\n" + H + big + b"\r\n")
        assert raw.startswith(b"HTTP/1.1 431 ")
        # a header that never ends is cut off at the limit too, not buffered forever
        raw = await raw_exchange(rig.port, b"GET / HTTP/1.1\r\n" + H + b"X: " + b"a" * 100000)
        assert raw.startswith(b"HTTP/1.1 431 ")
        assert rig.upstream.seen == []
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_slowloris_header_deadline_and_idle_timeout() -> None:
    rig = make_rig(limits=ProxyLimits(header_timeout=0.5, keepalive_timeout=0.5))
    try:

        def slow() -> tuple[float, bytes]:
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", rig.port), timeout=5) as sock:
                got = b""
                try:
                    for byte in b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: " + b"a" * 50:
                        sock.sendall(bytes([byte]))
                        time.sleep(0.05)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                with contextlib.suppress(ConnectionResetError, TimeoutError):
                    got += sock.recv(100)
            return time.monotonic() - start, got

        elapsed, got = await deferToThread(slow)
        assert elapsed < 2.5
        assert got == b""

        def idle() -> tuple[float, bytes]:
            with socket.create_connection(("127.0.0.1", rig.port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
                first = sock.recv(65536)
                start = time.monotonic()
                rest = b""
                try:
                    while chunk := sock.recv(100):
                        rest += chunk
                except ConnectionResetError:
                    pass
                return time.monotonic() - start, first + rest

        waited, got = await deferToThread(idle)
        assert got.startswith(b"HTTP/1.1 200 OK") and 0.3 < waited < 2.0
    finally:
        await rig.stop()
