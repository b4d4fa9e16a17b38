"""The proxy side of a real `aegis run`: ACCEPTANCE 23, 25, 30 and faults 8, 9 over loopback."""

from __future__ import annotations

import time

import pytest

from aegis.testing.ports import free_port
from tests.e2e.conftest import Stack
from tests.e2e.test_admin_listener import status_of

APP = "e2e-proxy.example.com"
DEAD = "e2e-dead.example.com"


@pytest.fixture(scope="module")
def proxied(stack: Stack) -> Stack:
    for domain, port in ((APP, stack.upstream.port), (DEAD, free_port())):
        status, body = stack.api("POST", "/api/v1/hosts", {
            "domain": domain, "upstream": f"http://127.0.0.1:{port}", "ssl_mode": "none"})
        assert status == 201, body
    return stack


def get(host: str, path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def test_a_host_is_proxied_and_forwarded_headers_are_replaced(proxied: Stack) -> None:
    answer = proxied.exchange(proxied.plain_socket(), get(APP, "/hello").replace(
        b"Connection", b"X-Forwarded-For: 6.6.6.6\r\nConnection"))
    assert status_of(answer) == 200 and b"GET /hello" in answer
    assert b"6.6.6.6" not in answer.split(b"\r\n\r\n", 1)[1]


def test_line_23_refused_upstream(proxied: Stack) -> None:
    started = time.monotonic()
    answer = proxied.exchange(proxied.plain_socket(), get(DEAD))
    assert status_of(answer) == 502 and time.monotonic() - started < 1.5
    assert b"127.0.0.1" not in answer


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: +5\r\n\r\nabcde",
    b"POST / HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nabcde\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\nHost: %s\n\n",
    b"GET / HTTP/1.1\r\nHost: %s\r\nX: a\r\n b\r\n\r\n",
])
def test_line_25_smuggling(proxied: Stack, request_bytes: bytes) -> None:
    seen = len(proxied.upstream.seen)
    answer = proxied.exchange(proxied.plain_socket(), request_bytes.replace(b"%s", APP.encode()))
    assert status_of(answer) == 400 and b"connection: close" in answer.lower()
    assert len(proxied.upstream.seen) == seen, "a refused request reached the upstream"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/.well-known/acme-challenge/../../etc/passwd"),
    ("GET", "/.well-known/acme-challenge/%2e%2e%2fetc%2fpasswd"),
    ("GET", "/.well-known/acme-challenge/unknown-token"),
    ("POST", "/.well-known/acme-challenge/unknown-token"),
])
def test_line_30_http01_probes(proxied: Stack, method: str, path: str) -> None:
    request = f"{method} {path} HTTP/1.1\r\nHost: {APP}\r\nContent-Length: 0\r\n" \
              "Connection: close\r\n\r\n"
    seen = len(proxied.upstream.seen)
    answer = proxied.exchange(proxied.plain_socket(), request.encode())
    assert status_of(answer) in (400, 404)
    assert b"root:" not in answer and len(proxied.upstream.seen) == seen


def test_faults_8_and_9(proxied: Stack) -> None:
    # 8: a framing error in the same read as the head: nothing reaches the upstream.
    seen = len(proxied.upstream.seen)
    answer = proxied.exchange(proxied.plain_socket(), (
        f"POST /eight HTTP/1.1\r\nHost: {APP}\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\nzz\r\n").encode())
    assert status_of(answer) == 400
    assert len(proxied.upstream.seen) == seen
    # 9: a valid request pipelined before an invalid one is still answered, then the 400.
    answer = proxied.exchange(proxied.plain_socket(), (
        f"GET /nine HTTP/1.1\r\nHost: {APP}\r\n\r\n"
        f"GET /bad HTTP/1.1\r\nHost: {APP}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
    ).encode())
    assert answer.startswith(b"HTTP/1.1 200 ") and b"GET /nine" in answer
    assert b"HTTP/1.1 400 " in answer
    assert proxied.upstream.seen[-1] == "GET /nine"
