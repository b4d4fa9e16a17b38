"""The admin listener of a real `aegis run` over loopback: ACCEPTANCE 10-14 and issue 17's
faults 2-7 (the ones the listener had), each as a client would meet it."""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aegis.admin import AdminAPI
from aegis.admin._routing import MAX_ROW_ID
from tests.e2e.conftest import ADMIN_TOKEN, Stack, trickle
from tests.fuzz.targets import concrete


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def head(stack: Stack, path: str = "/api/v1/openapi.json", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{stack.port('admin listener')}\r\n"
            f"{extra}\r\n").encode()



def server_fds(stack: Stack) -> int:
    assert stack.aegis.process is not None
    return len(os.listdir(f"/proc/{stack.aegis.process.pid}/fd"))


def test_line_10_and_fault_2_big_bodies(stack: Stack) -> None:
    status, body = stack.api("POST", "/api/v1/hosts", raw=b'{"domain": "' + b"a" * 2_000_000
                             + b'"}')
    assert status == 413 and body["error"]["code"] == "body_too_large"
    before = server_fds(stack)

    def overrun() -> None:
        """Fault 2: a declared length over the limit, more bytes than declared, then close."""
        declared = 1_200_000
        sock = stack.admin_socket()
        with contextlib.suppress(OSError):
            sock.sendall(head(stack, extra=f"Content-Length: {declared}\r\n"
                              "Content-Type: application/json\r\n")
                         + b"x" * (declared + 100_000))
        sock.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda _: overrun(), range(20)))
    time.sleep(3)  # REFUSAL_LINGER, not the 30 s idle timeout
    assert server_fds(stack) <= before


def test_fault_3_long_header_line(stack: Stack) -> None:
    sock = stack.admin_socket()
    started = time.monotonic()
    answer = stack.exchange(sock, head(stack, extra="X-Long: " + "a" * 40000 + "\r\n"))
    assert status_of(answer) == 431
    assert time.monotonic() - started < 5


def test_fault_4_header_deadline(stack: Stack) -> None:
    started = time.monotonic()
    received = trickle(stack, stack.admin_socket(), head(stack, extra="X-Slow: " + "a" * 100))
    assert status_of(received) == 408, received[:100]
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("path", ["/api/v1/certificates/{}", "/api/v1/hosts/{}"])
def test_fault_5_huge_ids(stack: Stack, path: str) -> None:
    for number in (MAX_ROW_ID + 1, 2**64, 10**30):
        for method in ("GET", "DELETE"):
            status, body = stack.api(method, path.format(number))
            assert status == 404 and body["error"]["code"] == "not_found"


def test_fault_6_query_token(stack: Stack) -> None:
    status, _ = stack.api("GET", f"/api/v1/certificates?token={ADMIN_TOKEN}", token=None)
    assert status == 401
    stack.aegis.wait_for("/api/v1/certificates?<redacted>")
    assert ADMIN_TOKEN not in stack.aegis.text()


def test_fault_7_two_hosts(stack: Stack) -> None:
    port = stack.port("admin listener")
    answer = stack.exchange(stack.admin_socket(), (
        f"GET /api/v1/openapi.json HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n").encode())
    assert status_of(answer) == 400 and b"duplicate_host" in answer


@pytest.mark.parametrize("raw", [b'{"domain": 5}', b'{"domain": "a.example.com", "x": 1}',
                                 b"[" * 100 + b"]" * 100, b'{"domain": "\xff"}',
                                 b'{"domain": "a\\u0000.example.com"}', b"{", b'"text"'])
def test_line_11_bad_json(stack: Stack, raw: bytes) -> None:
    status, body = stack.api("POST", "/api/v1/hosts", raw=raw)
    assert status in (400, 422) and set(body["error"]) == {"code", "message", "field"}


@pytest.mark.parametrize("name", ["a.com;touch /tmp/x", "$(id).example.com", "a\nb.example.com",
                                  "*.com", "a*.example.com", "`id`.example.com"])
def test_line_12_metacharacters(stack: Stack, name: str) -> None:
    status, body = stack.api("POST", "/api/v1/hosts",
                             {"domain": name, "upstream": "http://127.0.0.1:9"})
    assert status in (400, 422) and body["error"]["field"] == "domain"
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < time.time() - 600


def test_line_13_every_route_needs_the_token(stack: Stack) -> None:
    for op in AdminAPI.operations:
        if op.public:
            continue
        for token in (None, "wrong-token"):
            status, body = stack.api(op.method, concrete(op.openapi_path), token=token,
                                     raw=b"{}" if op.body is not None else None)
            assert status == 401, (op.method, op.path, token)
            assert body["error"]["code"] in ("unauthorized", "invalid_token")


def test_line_14_host_origin_content_type(stack: Stack) -> None:
    status, body = stack.api("GET", "/api/v1/hosts", headers={"Host": "rebound.example"})
    assert status == 403 and body["error"]["code"] == "forbidden_host"
    status, body = stack.api("GET", "/api/v1/hosts", headers={"Origin": "https://evil.example"})
    assert status == 403 and body["error"]["code"] == "forbidden_origin"
    status, body = stack.api("POST", "/api/v1/hosts", raw=b"domain=a.example.com",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
