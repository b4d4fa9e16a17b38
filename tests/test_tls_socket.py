"""The handshake path's own pieces: the C ALPN callback, the registry of handshaking socket
connections, and the SNI layer's per-second reuse of a choice."""

from __future__ import annotations

import contextlib
import errno
import gc
import socket
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pytest
import pytest_twisted
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from twisted.internet import reactor
from twisted.internet.address import IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher

from aegis.certs.model import LoadedCertificate
from aegis.tls.direct import DirectTLSServer, context_acceptor
from aegis.tls.endpoint import https_endpoint
from aegis.tls.policy import INTERMEDIATE, policy_context
from aegis.tls.selection import MemoryCertificates, SelectionState
from aegis.tls.sni import https_factory
from aegis.tls.socket_tls import SocketTLS, _alpn_selector
from tests.test_tls_loopback import client_context, der, in_thread, python_get
from tests.test_tls_support import (
    NOW,
    PKI,
    ClientCreator,
    echo_factory,
    handshake,
    port_number,
)

pki = PKI()
FALLBACK = pki.leaf("fallback.invalid", cert_id=None)


def _wire(*protocols: bytes) -> bytes:
    return b"".join(bytes([len(p)]) + p for p in protocols)


def _select(ours: tuple[bytes, ...], wire: bytes) -> tuple[int, bytes | None]:
    out = _ffi.new("const unsigned char **")
    outlen = _ffi.new("unsigned char *")
    offered = _ffi.new("unsigned char[]", wire or b"\0")
    result = _alpn_selector(ours)(_ffi.NULL, out, outlen, offered, len(wire), _ffi.NULL)
    chosen = _ffi.buffer(out[0], outlen[0])[:] if result == _lib.SSL_TLSEXT_ERR_OK else None
    return result, chosen


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (_wire(b"http/1.1", b"h2"), b"h2"),  # our preference, not the client's order
        (_wire(b"http/1.1"), b"http/1.1"),
        (_wire(b"spdy/3", b"h2c"), None),
        (b"", None),
        (b"\x08http/1", None),  # a length running past the end: no read beyond it
        (b"\x02h2\x09http/1.1", b"h2"),  # the well-formed first entry still counts
    ],
)
def test_alpn_choice(wire: bytes, expected: bytes | None) -> None:
    result, chosen = _select((b"h2", b"http/1.1"), wire)
    assert chosen == expected
    assert result == (_lib.SSL_TLSEXT_ERR_OK if expected else _lib.SSL_TLSEXT_ERR_NOACK)


class SwappableCertificates(MemoryCertificates):
    """A lookup whose answers the test changes, with or without a new ``generation``
    (the registry replaces its snapshot on every reload)."""

    def __init__(self, certificates: Iterable[LoadedCertificate]) -> None:
        super().__init__(certificates)
        self._generation = object()

    @property
    def generation(self) -> object:
        return self._generation

    def swap(self, certificates: Iterable[LoadedCertificate], announce: bool) -> None:
        self._certificates = tuple(certificates)
        if announce:
            self._generation = object()


def test_a_choice_is_reused_for_its_second_only_while_nothing_changed() -> None:
    clock = Clock()
    clock.advance(int(NOW.timestamp()) + 0.1)
    first, second, third = (pki.leaf("stored.example.com") for _ in range(3))
    lookup = SwappableCertificates([first])
    factory = https_factory(SelectionState(lookup, FALLBACK), echo_factory(), clock)

    def leaf() -> Any:
        return handshake(factory, ClientCreator(b"stored.example.com")).peer_leaf()

    assert leaf() == first.leaf
    lookup.swap([second], announce=False)
    assert leaf() == first.leaf  # same second, same generation: the choice is reused
    lookup.swap([second], announce=True)
    assert leaf() == second.leaf  # a new generation is seen at once
    lookup.swap([third], announce=False)
    clock.advance(1.0)
    assert leaf() == third.leaf  # a new second decides afresh


class WithoutGeneration:
    """A lookup that offers no ``generation`` (as the test doubles in test_tls_selection)."""

    def __init__(self, certificates: Iterable[LoadedCertificate]) -> None:
        self.inner = MemoryCertificates(certificates)

    def by_id(self, cert_id: int) -> LoadedCertificate | None:
        return self.inner.by_id(cert_id)

    def lookup(self, name: str, now: datetime, sources: frozenset[str]) -> Any:
        return self.inner.lookup(name, now, sources)


def test_a_lookup_without_generation_is_asked_every_time() -> None:
    clock = Clock()
    clock.advance(NOW.timestamp())
    first, second = (pki.leaf("stored.example.com") for _ in range(2))
    lookup = WithoutGeneration([first])
    factory = https_factory(SelectionState(lookup, FALLBACK), echo_factory(), clock)
    assert handshake(factory, ClientCreator(b"stored.example.com")).peer_leaf() == first.leaf
    lookup.inner = MemoryCertificates([second])
    assert handshake(factory, ClientCreator(b"stored.example.com")).peer_leaf() == second.leaf


@pytest_twisted.ensureDeferred
async def test_socket_connections_leave_the_handshake_registry() -> None:
    """Every accepted connection is registered for the SNI callback while it handshakes; after
    completed, refused and abandoned handshakes nothing is left (no leak per connection)."""
    stored = pki.leaf("stored.example.com")
    state = SelectionState(MemoryCertificates([stored]), FALLBACK)
    endpoint = https_endpoint(reactor, "tcp:0:interface=127.0.0.1", state)
    port = await endpoint.listen(echo_factory())
    try:
        registry = port.acceptor.connection.__self__._handshaking.by_ssl
        number = port_number(port)
        for _ in range(5):
            _leaf, body = await in_thread(python_get, number, "stored.example.com")
            assert body
        await in_thread(_plain_text_to_tls_port, number)  # a failed handshake
        await in_thread(_connect_and_leave, number)  # closed before any ClientHello
        for _ in range(50):
            if not registry and not port.connections:
                break
            await _sleep(0.02)
        assert registry == {}
        assert port.connections == set()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_closed_connections_are_freed_without_the_cycle_collector() -> None:
    """A completed connection's transport and ``SSL*`` go as soon as it is closed. A
    reference cycle (the transport and its TLS connection) used to leave each one to the
    cyclic garbage collector, whose delayed frees cost the allocator several per cent of a
    handshake. (A failed handshake's exception keeps its frames, and with them the
    transport, for as long as the exception is kept: not a cycle.)"""
    stored = pki.leaf("stored.example.com")
    state = SelectionState(MemoryCertificates([stored]), FALLBACK)
    endpoint = https_endpoint(reactor, "tcp:0:interface=127.0.0.1", state)
    port = await endpoint.listen(Factory.forProtocol(Hello))
    gc.collect()
    gc.disable()
    earlier = {id(o) for o in gc.get_objects() if isinstance(o, DirectTLSServer | SocketTLS)}
    try:
        number = port_number(port)
        for _ in range(3):
            _leaf, body = await in_thread(python_get, number, "stored.example.com")
            assert body
        for _ in range(50):
            if not port.connections:
                break
            await _sleep(0.02)
        assert port.connections == set()
        await _sleep(0.05)  # the last close ends its reactor turn
        alive = [o for o in gc.get_objects()
                 if isinstance(o, DirectTLSServer | SocketTLS) and id(o) not in earlier]
        assert alive == []
    finally:
        gc.enable()
        await port.stopListening()


def _plain_text_to_tls_port(number: int) -> None:
    with socket.create_connection(("127.0.0.1", number), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            raw.recv(100)


def _connect_and_leave(number: int) -> None:
    socket.create_connection(("127.0.0.1", number), timeout=10).close()


class Hello(Protocol):
    """Answers a request, and keeps nothing about its connection once it is closed."""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def test_contexts_with_pyopenssl_callbacks_are_refused_with_a_clear_error() -> None:
    """pyOpenSSL's callback wrappers look connections up in its own registry, which socket
    connections are not in: such a context would fail every ALPN handshake, so say so."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_alpn_select_callback(lambda connection, offered: offered[0])
    with pytest.raises(ValueError, match="install_alpn"):
        context_acceptor(context, reactor)
    context_acceptor(policy_context(INTERMEDIATE), reactor)  # ALPN as a C callback: fine


def _ipv6_get(number: int) -> tuple[bytes, bytes]:
    context = client_context()
    with (
        socket.create_connection(("::1", number), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="stored.example.com") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return tls.getpeercert(binary_form=True) or b"", tls.recv(4096)


@pytest_twisted.ensureDeferred
async def test_ipv6_listener_accepts_and_selects() -> None:
    """``tcp6:`` goes through the same accept path, with IPv6 peer addresses."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    stored = pki.leaf("stored.example.com")
    state = SelectionState(MemoryCertificates([stored]), FALLBACK)
    peers: list[Any] = []
    factory = echo_factory()
    build = factory.buildProtocol

    def recording(addr: Any) -> Any:
        peers.append(addr)
        return build(addr)

    factory.buildProtocol = recording  # type: ignore[method-assign]
    endpoint = https_endpoint(reactor, r"tcp6:0:interface=\:\:1", state)
    port = await endpoint.listen(factory)
    try:
        leaf, body = await in_thread(_ipv6_get, port.getHost().port)
    finally:
        await port.stopListening()
    assert leaf == der(stored.leaf)
    assert b"sni=stored.example.com step=domain_match" in body
    assert isinstance(peers[0], IPv6Address) and peers[0].host == "::1"


@pytest_twisted.ensureDeferred
async def test_accept_errors_are_logged_after_the_accepting_read() -> None:
    """An ``accept()`` failure (here ENOBUFS) is logged, once the accepting read is over."""
    state = SelectionState(MemoryCertificates([]), FALLBACK)
    port = await https_endpoint(reactor, "tcp:0:interface=127.0.0.1", state).listen(
        Factory.forProtocol(Hello))
    seen: list[dict[str, Any]] = []
    during: list[int] = []

    class Failing:
        def accept(self) -> Any:
            during.append(len(seen))
            raise OSError(errno.ENOBUFS, "no buffer space")

    globalLogPublisher.addObserver(seen.append)
    real, port._listener = port._listener, Failing()
    try:
        port.doRead()
    finally:
        port._listener = real
        globalLogPublisher.removeObserver(seen.append)
        await port.stopListening()
    assert during == [0]
    errors = [e for e in seen if e.get("acceptError") == "ENOBUFS"]
    assert len(errors) == 1 and "Could not accept" in errors[0]["log_format"]

