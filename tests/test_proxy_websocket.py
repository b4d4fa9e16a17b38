"""WebSocket (any Upgrade) through the proxy: after the upstream's 101, bytes flow both ways
until either side closes. The upstream is a tiny real WebSocket echo server."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.test_proxy_support import Seen, UpstreamProtocol, make_rig, raw_exchange, tls_client

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _frame(payload: bytes, mask: bool, opcode: int = 1) -> bytes:
    head = bytes([0x80 | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _parse(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    """(opcode, unmasked payload, rest) or None when incomplete."""
    if len(buffer) < 2:
        return None
    opcode, size, masked, pos = buffer[0] & 0x0F, buffer[1] & 0x7F, buffer[1] & 0x80, 2
    if size == 126:
        size, pos = struct.unpack("!H", buffer[2:4])[0], 4
    elif size == 127:
        size, pos = struct.unpack("!Q", buffer[2:10])[0], 10
    key = b""
    if masked:
        key, pos = buffer[pos:pos + 4], pos + 4
    if len(buffer) < pos + size:
        return None
    payload = buffer[pos:pos + size]
    if masked:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return opcode, payload, buffer[pos + size:]


def _ws_handshake(proto: UpstreamProtocol, seen: Seen) -> None:
    key = seen.header(b"sec-websocket-key")
    if not key or seen.header(b"upgrade") != [b"websocket"]:
        proto.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return
    proto.ws_buffer = b""  # type: ignore[attr-defined]
    proto.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                          % _accept(key[0]))


def _ws_echo(proto: UpstreamProtocol, data: bytes) -> None:
    proto.ws_buffer += data  # type: ignore[attr-defined]
    while (parsed := _parse(proto.ws_buffer)) is not None:  # type: ignore[attr-defined]
        opcode, payload, proto.ws_buffer = parsed  # type: ignore[attr-defined]
        if opcode == 8:
            proto.transport.write(_frame(payload, mask=False, opcode=8))
            proto.transport.loseConnection()
            return
        proto.transport.write(_frame(b"echo:" + payload, mask=False))


def _client(port: int, tls: bool) -> list[bytes]:
    key = base64.b64encode(os.urandom(16))
    connection = tls_client(port) if tls else socket.create_connection(("127.0.0.1", port), 5)
    with connection as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: %s\r\n\r\n" % key
                     + _frame(b"early", mask=True))  # sent right behind the handshake
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: " + _accept(key) in head
        assert b"Upgrade: websocket" in head
        got: list[bytes] = []
        for message in (b"hello", b"x" * 200_000):
            sock.sendall(_frame(message, mask=True))
        sock.sendall(_frame(b"", mask=True, opcode=8))
        while True:
            parsed = _parse(buffer)
            if parsed is None:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                continue
            opcode, payload, buffer = parsed
            got.append(payload if opcode == 1 else b"<close>")
        return got


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest_twisted.ensureDeferred
async def test_websocket_echo_through_the_proxy(tls: bool) -> None:
    rig = make_rig(_ws_handshake, tls=tls)
    rig.upstream.on_tunnel = _ws_echo
    try:
        got = await deferToThread(_client, rig.port, tls)
        assert got == [b"echo:early", b"echo:hello", b"echo:" + b"x" * 200_000, b"<close>"]
        assert rig.upstream.seen[0].header(b"connection") == [b"upgrade"]
    finally:
        await rig.stop()


@pytest_twisted.ensureDeferred
async def test_refused_upgrade_is_an_ordinary_response_and_closes() -> None:
    rig = make_rig(_ws_handshake)
    try:
        raw = await raw_exchange(rig.port, b"GET /ws HTTP/1.1\r\nHost: app.test\r\n"
                                 b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"Connection: close" in raw
    finally:
        await rig.stop()
