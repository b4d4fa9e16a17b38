"""One-input fuzz targets, shared by the hypothesis tests (tests/fuzz/) and the atheris
scripts (fuzz/). Each takes bytes, drives one real parser in memory, and raises
AssertionError when a property breaks: an exception escaping the parser, or a 500.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from aegis.certs.errors import CertificateError
from aegis.certs.pem import parse_certificates, parse_private_key
from aegis.names import InvalidHostname, matches, normalise, normalise_sni
from tests.test_proxy_h2_memory import _TLSLikeTransport as H2Transport  # reports ALPN h2

TOKEN = "fuzz-admin-token-0123456789abcdef"


# -- PEM ---------------------------------------------------------------------------------------
def pem(data: bytes) -> None:
    """PEM parsing refuses with CertificateError only, and never echoes a body back."""
    text = data.decode("utf-8", "replace")
    for parse in (parse_certificates, parse_private_key):
        try:
            parse(text)  # type: ignore[operator]
        except CertificateError as error:
            assert "PRIVATE KEY-----" not in error.message
            assert error.field in ("cert_pem", "key_pem", "key_passphrase")


# -- hostnames ---------------------------------------------------------------------------------
def names(data: bytes) -> None:
    """normalise refuses with InvalidHostname only and is idempotent; SNI never raises;
    a wildcard covers exactly one label."""
    text = data.decode("utf-8", "replace")
    normalise_sni(data)
    normalise_sni(text)
    try:
        name = normalise(text)
    except InvalidHostname:
        return
    assert normalise(name) == name == name.lower()
    assert normalise(name.upper()) == name
    if name.startswith("*."):
        parent = name[2:]
        assert matches(name, "a." + parent)
        assert not matches(name, parent)
        assert not matches(name, "a.b." + parent)
    else:
        assert matches(name, name)


# -- HTTP/1.1 into the proxy front ---------------------------------------------------------
class _LocalRouter:
    def route(self, head: Any, conn: Any) -> Any:
        from aegis.proxy.routing import LocalResponse

        return LocalResponse(200, [(b"content-type", b"text/plain")], b"ok\n")


def proxy_connection() -> tuple[Any, StringTransport]:
    from aegis.proxy._engine import ProxyEngine
    from aegis.proxy._http1 import Http1Connection
    from aegis.proxy.routing import ProxyLimits

    proto = Http1Connection(ProxyEngine(_LocalRouter(), MemoryReactorClock(), ProxyLimits()))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def _split(data: bytes) -> list[bytes]:
    """Cut ``data`` where its first byte says, so one input also tries odd segmenting."""
    if not data:
        return [b""]
    step = 1 + data[0] % 64
    rest = data[1:]
    return [rest[i:i + step] for i in range(0, len(rest), step)] or [b""]


def http1(data: bytes) -> None:
    """Any bytes into the proxy's HTTP/1.1 front: no exception escapes, never a 500."""
    proto, transport = proxy_connection()
    for segment in _split(data):
        proto.dataReceived(segment)
        if transport.disconnecting:
            break
    assert b"HTTP/1.1 500" not in transport.value()


# -- HTTP/2 frames -----------------------------------------------------------------------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frames(data: bytes) -> None:
    """A client preface then any frames into the HTTP/2 front: no exception, never a 500.

    The input is cut into frames whose (type, flags, stream, length) header comes from the
    input, so h2's state machine sees well-formed frame headers with hostile contents."""
    frames, rest = b"", data
    while len(rest) >= 4:
        kind, flags, stream, size = rest[0] % 10, rest[1], rest[2] % 8, rest[3] % 48
        payload, rest = rest[4:4 + size], rest[4 + size:]
        frames += (len(payload).to_bytes(3, "big") + bytes([kind, flags])
                   + stream.to_bytes(4, "big") + payload)
    h2_raw(frames + rest)


def h2_raw(frames: bytes) -> None:
    """The preface, an empty SETTINGS frame, then ``frames`` as they are."""
    from aegis.proxy._engine import ProxyEngine
    from aegis.proxy._http1 import Http1Connection
    from aegis.proxy.routing import ProxyLimits

    proto = Http1Connection(ProxyEngine(_LocalRouter(), MemoryReactorClock(), ProxyLimits()))
    transport = H2Transport()
    proto.makeConnection(transport)
    proto.dataReceived(H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    for segment in _split(frames):
        if transport.disconnecting:
            break
        proto.dataReceived(segment)
    assert b":status500" not in transport.value().replace(b"\x00", b"")


# -- ClientHello -------------------------------------------------------------------------------
@functools.cache
def _tls_factory() -> Any:
    from aegis.tls.selection import MemoryCertificates, SelectionState
    from aegis.tls.sni import https_factory
    from tests.test_tls_support import NOW, PKI, echo_factory, host

    pki = PKI()
    fallback = pki.leaf("fallback.invalid", cert_id=None)
    app = pki.leaf("app.example.com")
    state = SelectionState(MemoryCertificates([app]), fallback,
                           hosts=[host("app.example.com", ssl_cert_id=app.id)])
    clock = Clock()
    clock.advance(NOW.timestamp())
    return https_factory(state, echo_factory(), clock)


def client_hello(server_name: bytes | None) -> bytes:
    """The first flight of a real OpenSSL client."""
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    with contextlib.suppress(SSL.WantReadError):
        connection.do_handshake()
    return connection.bio_read(65536)


def _server() -> tuple[Any, StringTransport]:
    protocol = _tls_factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def tls(data: bytes) -> None:
    """A real ClientHello with input-chosen SNI, bytes overwritten and segmenting, then the
    rest of the input as raw records: nothing escapes the TLS layer, and a server that
    answers answers with TLS records (or closes)."""
    name_length = data[0] % 40 if data else 0
    name = data[1:1 + name_length] or None
    try:
        hello = bytearray(client_hello(name))
    except (SSL.Error, ValueError, TypeError):  # a name the client library itself refuses
        hello = bytearray(client_hello(b"app.example.com"))
    patch = data[1 + name_length:]
    for index in range(0, len(patch) - 1, 2):
        hello[patch[index] * 7 % len(hello)] = patch[index + 1]
    protocol, transport = _server()
    for segment in _split(bytes(hello[:1]) + bytes(hello)):
        protocol.dataReceived(segment)
        if transport.disconnecting:
            break
    output = transport.value()
    assert not output or output[0] in (0x14, 0x15, 0x16, 0x17)


# -- admin JSON bodies and the admin channel ---------------------------------------------------
@functools.cache
def admin_resource() -> Any:
    from aegis.admin import AdminAddress, AdminAPI, AdminContext, TokenVerifier
    from aegis.admin._guards import token_digest
    from aegis.crypto.keywrap import KeyWrapper, MasterKey
    from aegis.localca import LocalCA, admin_certificate_names
    from aegis.store.memory import MemoryStore

    directory = Path(tempfile.mkdtemp(prefix="aegis-fuzz-ca-"))
    authority = LocalCA(directory).ensure(
        admin_certificate_names(None), ("aegis.invalid",), datetime.now(UTC))
    context = AdminContext(store=MemoryStore(), wrapper=KeyWrapper(MasterKey.generate()),
                           local_ca=authority, clock=Clock())
    return AdminAPI(context, TokenVerifier(token_digest(TOKEN)),
                    AdminAddress(None, lambda: 9443))


def admin_operations() -> list[Any]:
    from aegis.admin import AdminAPI

    return list(AdminAPI.operations)


def concrete(path: str) -> str:
    from aegis.admin._routing import path_parameters

    for name, kind in path_parameters(path):
        path = path.replace(f"{{{name}}}", "1" if kind == "integer" else "x")
    return path


def admin_call(method: str, path: str, body: bytes,
               content_type: str = "application/json") -> tuple[int, bytes]:
    """One request through StubTreq against the real Klein app; returns (status, body)."""
    from treq.testing import StubTreq

    stub = StubTreq(admin_resource().resource())
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type,
               "X-Cloudflare-Token": "t" * 40}
    deferred = stub.request(method, "https://127.0.0.1:9443" + path, headers=headers,
                            data=body)
    stub.flush()
    box: list[Any] = []
    deferred.addBoth(box.append)
    response = box[0]
    content = stub.content(response)
    stub.flush()
    payload: list[Any] = []
    content.addBoth(payload.append)
    return int(response.code), bytes(payload[0])


def check_admin_answer(status: int, payload: bytes) -> None:
    assert status != 500 and status < 600, payload[:300]
    if status >= 400:
        error = json.loads(payload)["error"]
        assert set(error) == {"code", "message", "field"}
    assert b"PRIVATE KEY" not in payload
    assert TOKEN.encode() not in payload


def admin_json(data: bytes) -> None:
    """Any bytes as the body of every admin write: a 4xx in the error shape, never 500."""
    operations = [op for op in admin_operations() if op.method in ("POST", "PUT", "PATCH")]
    op = operations[data[0] % len(operations)] if data else operations[0]
    status, payload = admin_call(op.method, concrete(op.openapi_path), data[1:])
    check_admin_answer(status, payload)


def admin_channel(data: bytes) -> None:
    """Any bytes into the admin listener's HTTP/1.1 channel: never a 500, never a raise."""
    from aegis.admin import admin_site

    site = admin_site(admin_resource(), Clock())
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    for segment in _split(data):
        protocol.dataReceived(segment)
        if transport.disconnecting:
            break
    assert b"HTTP/1.1 500" not in transport.value()
