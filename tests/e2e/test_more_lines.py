"""More ACCEPTANCE lines against the shared `aegis run`: 18, 20, 21 (TLS and slow clients),
24 (a malformed upstream) and 26-27 (a certificate from Pebble, which rejects nonces)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Stack, trickle, wait_until
from tests.e2e.test_admin_listener import status_of
from tests.e2e.test_tls import names, served_leaf
from tests.fuzz.targets import client_hello


def test_line_18_client_hello_in_one_byte_segments(stack: Stack) -> None:
    hello = client_hello(b"app.unknown.example")
    with socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), 10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in hello:
            raw.sendall(bytes([byte]))
            time.sleep(0.0005)
        raw.settimeout(10)
        first = raw.recv(5)
    assert first[:1] == b"\x16", first  # a ServerHello record, as unsplit
    assert served_leaf(stack, b"app.unknown.example") is not None


def test_line_20_stalled_handshakes_do_not_starve_new_clients(stack: Stack) -> None:
    stalled = [socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), 10)
               for _ in range(200)]
    try:
        started = time.monotonic()
        assert served_leaf(stack, b"fresh.example.org") is not None
        assert time.monotonic() - started < 1.0
    finally:
        for sock in stalled:
            sock.close()


def test_line_21_slowloris_after_the_handshake_meets_the_header_deadline(stack: Stack) -> None:
    import ssl

    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", stack.port("HTTPS listener")), 30)
    tls = context.wrap_socket(raw, server_hostname="slow.example.org")
    started = time.monotonic()
    trickle(stack, tls, b"GET / HTTP/1.1\r\nHost: slow.example.org\r\nX: " + b"a" * 100)
    assert time.monotonic() - started < 15  # the 10 s header deadline, not the idle timeout
    assert served_leaf(stack, b"other.example.org") is not None  # others unaffected


@contextlib.contextmanager
def malformed_upstream() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nBad Header Line\r\n\r\nhello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_line_24_a_malformed_upstream_head_is_502(stack: Stack) -> None:
    with malformed_upstream() as port:
        status, body = stack.api("POST", "/api/v1/hosts", {
            "domain": "e2e-malformed.example.com", "upstream": f"http://127.0.0.1:{port}",
            "ssl_mode": "none"})
        assert status == 201, body
        answer = stack.exchange(stack.plain_socket(), b"GET / HTTP/1.1\r\nHost: "
                                b"e2e-malformed.example.com\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 502 and b"hello" not in answer


def test_lines_26_27_a_letsencrypt_host_gets_a_certificate_from_pebble(stack: Stack) -> None:
    if stack.pebble is None:
        pytest.skip("pebble is not installed")
    status, host = stack.api("POST", "/api/v1/hosts", {
        "domain": "e2e-le.example.test", "upstream": f"http://127.0.0.1:{stack.upstream.port}",
        "ssl_mode": "letsencrypt"})
    assert status == 201, host
    wait_until(lambda: names(served_leaf(stack, b"e2e-le.example.test"))
               == ["e2e-le.example.test"], timeout=60)
    status, certificates = stack.api("GET", "/api/v1/certificates")
    issued = [c for c in certificates if c["source"] == "letsencrypt"]
    assert issued and issued[0]["auto_renew"] is True
