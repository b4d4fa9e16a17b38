"""The admin listener's HTTP/1.1 limits (issue 17, faults 2-4) in memory.

The transport is a StringTransport: ``loseConnection`` only marks it ``disconnecting``
(as over TLS, where the socket stays open until the client answers the close_notify),
``abortConnection`` marks it ``disconnected`` (the socket is gone), and
``producerState`` tells whether the socket is still being read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from aegis.admin import admin_site
from aegis.admin._channel import HEADER_TIMEOUT, MAX_HEAD_BYTES, REFUSAL_LINGER
from aegis.listeners import drain_protocol
from tests.test_admin_api import TOKEN, PipelineAPI, make_api
from tests.test_admin_limits import head, status_and_body


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "admin-channel-ca"


def connect(cache: Path) -> tuple[Any, StringTransport, Clock]:
    clock = Clock()
    site = admin_site(make_api(cache, PipelineAPI), clock)
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


def assert_refused(transport: StringTransport, clock: Clock, status: int, code: str) -> None:
    answer, payload = status_and_body(transport.value())
    assert answer == status
    assert json.loads(payload)["error"]["code"] == code
    assert b"connection: close" in transport.value().lower()
    assert transport.producerState == "paused", "the socket is still being read"
    assert transport.disconnecting
    clock.advance(REFUSAL_LINGER)
    assert transport.disconnected, "the refused connection stays open"


def test_fault_2_over_long_body_then_more_bytes_closes_for_good(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    protocol.dataReceived(head(extra=f"Content-Length: {2 * 1024 * 1024}\r\n") + b"x" * 70000)
    protocol.dataReceived(b"y" * 70000)  # more than declared would ever fit
    assert_refused(transport, clock, 413, "body_too_large")
    assert transport.value().count(b"HTTP/1.1") == 1


def test_fault_3_over_long_header_line_is_431_and_closes(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    protocol.dataReceived(b"GET /api/v1/openapi.json HTTP/1.1\r\nX-Long: ")
    for _ in range(5):
        protocol.dataReceived(b"a" * 8192)
    assert_refused(transport, clock, 431, "header_too_large")


def test_fault_3_many_short_header_lines_are_431(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    line = b"X-A: " + b"a" * 100 + b"\r\n"
    protocol.dataReceived(b"GET /api/v1/openapi.json HTTP/1.1\r\n" + line * (MAX_HEAD_BYTES // 100))
    assert_refused(transport, clock, 431, "header_too_large")


def test_fault_3_input_after_a_chunked_413_is_not_read_and_does_not_restart_the_timer(
    cache: Path,
) -> None:
    protocol, transport, clock = connect(cache)
    protocol.dataReceived(head(extra="Transfer-Encoding: chunked\r\n"))
    chunk = b"a" * 65536
    while not transport.value():
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    for _ in range(10):
        clock.advance(REFUSAL_LINGER / 20)
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert_refused(transport, clock, 413, "body_too_large")


def test_fault_4_a_head_sent_one_byte_at_a_time_meets_the_header_deadline(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    trickle = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1:9443\r\nX-Slow: " + b"a" * 50
    for byte in trickle[: int(HEADER_TIMEOUT // 5) + 1]:
        protocol.dataReceived(bytes([byte]))
        clock.advance(5)
    assert_refused(transport, clock, 408, "header_timeout")


def test_a_complete_head_in_time_is_served_and_keep_alive_continues(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    request = (f"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1:9443\r\n"
               f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
    for byte in request:
        protocol.dataReceived(bytes([byte]))
        clock.advance(HEADER_TIMEOUT / len(request) / 2)
    assert b"HTTP/1.1 408" not in transport.value()
    clock.advance(HEADER_TIMEOUT * 2)  # idle between requests: only the idle timeout runs
    assert not transport.disconnecting
    protocol.dataReceived(request)
    assert transport.value().count(b"HTTP/1.1 ") == 2


def test_pipelined_bad_request_line_is_400_and_closes(cache: Path) -> None:
    protocol, transport, clock = connect(cache)
    protocol.dataReceived(b"GARBAGE\r\n\r\n")
    assert_refused(transport, clock, 400, "bad_request")


def test_drain_closes_an_idle_connection_and_aborts_a_refused_one(cache: Path) -> None:
    protocol, transport, _ = connect(cache)
    drain_protocol(protocol, transport)
    assert transport.disconnecting
    protocol, transport, _ = connect(cache)
    protocol.dataReceived(b"GARBAGE\r\n\r\n")
    drain_protocol(protocol, transport)
    assert transport.disconnected
