"""The body limit where it matters: in the HTTP channel, while the body arrives.

These tests drive the real admin Site (BodyLimitedRequest, no form parsing) through an
in-memory transport, byte by byte as a client would send them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from aegis.admin import MAX_BODY_BYTES, admin_site
from tests.test_admin_api import TOKEN, PipelineAPI, make_api


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "admin-limits-ca"


def connect(cache: Path) -> tuple[Any, StringTransport]:
    site = admin_site(make_api(cache, PipelineAPI), Clock())
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def head(method: str = "POST", extra: str = "", content_type: str = "application/json") -> bytes:
    return (
        f"{method} /api/v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1:9443\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: {content_type}\r\n{extra}\r\n"
    ).encode()


def status_and_body(raw: bytes) -> tuple[int, bytes]:
    first, _, rest = raw.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        decoded, data = b"", body
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded, data = decoded + data[:size], data[size + 2 :]
        body = decoded
    return int(first.split()[1]), body


def test_small_body_is_served(cache: Path) -> None:
    protocol, transport = connect(cache)
    body = b'{"name": "ok"}'
    protocol.dataReceived(head(extra=f"Content-Length: {len(body)}\r\n") + body)
    code, payload = status_and_body(transport.value())
    assert code == 201 and json.loads(payload) == {"name": "ok"}


def test_declared_length_over_the_limit_is_refused_before_any_body(cache: Path) -> None:
    protocol, transport = connect(cache)
    protocol.dataReceived(
        head(extra=f"Content-Length: {2 * 1024 * 1024}\r\nExpect: 100-continue\r\n")
    )
    code, payload = status_and_body(transport.value())
    assert code == 413
    assert json.loads(payload)["error"]["code"] == "body_too_large"
    assert b"100 Continue" not in transport.value()
    assert transport.disconnecting


def test_chunked_body_is_cut_off_at_the_limit_without_buffering_it(cache: Path) -> None:
    protocol, transport = connect(cache)
    protocol.dataReceived(head(extra="Transfer-Encoding: chunked\r\n"))
    request = protocol.requests[-1]
    chunk = b"a" * 65536
    sent = 0
    while not transport.value():
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
        assert sent <= MAX_BODY_BYTES + len(chunk), "no 413 past the limit"
    code, _ = status_and_body(transport.value())
    assert code == 413 and transport.disconnecting
    assert request.content.tell() <= MAX_BODY_BYTES
    # Whatever the client keeps sending is dropped, not stored.
    for _ in range(20):
        protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    assert request.content.tell() <= MAX_BODY_BYTES


def test_multipart_form_post_is_415_not_parsed(cache: Path) -> None:
    protocol, transport = connect(cache)
    body = b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n'
    protocol.dataReceived(
        head(
            content_type="multipart/form-data; boundary=x", extra=f"Content-Length: {len(body)}\r\n"
        )
        + body
    )
    code, payload = status_and_body(transport.value())
    assert code == 415
    assert json.loads(payload)["error"]["code"] == "unsupported_media_type"
