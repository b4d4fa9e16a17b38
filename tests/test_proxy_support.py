"""Loopback peers for the proxy tests: a scripted upstream and a raw-socket client.

No tests here. The upstream is a real TCP server on the test reactor, speaking HTTP/1.1
through its own small httptools parser, so each test can make it answer exactly as it
needs (stall, die mid-body, send malformed heads) and can see what arrived (heads, counts of
connections).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httptools
import trustme
from OpenSSL import SSL
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread

from aegis.proxy import proxy_factory
from aegis.proxy.routing import Forward, ProxyLimits, StaticRouter
from aegis.tls.direct import context_acceptor
from aegis.tls.policy import INTERMEDIATE, policy_context
from aegis.tls.port import DirectTLSPort


@dataclass
class Seen:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


Handler = Callable[["UpstreamProtocol", Seen], None]


def ok_handler(proto: UpstreamProtocol, seen: Seen) -> None:
    body = b"hello " + seen.path
    proto.transport.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Up: 1\r\n\r\n%s" % (len(body), body)
    )


class UpstreamProtocol(Protocol):
    def __init__(self, factory: UpstreamFactory, number: int) -> None:
        self.f = factory
        self.number = number
        self.parser = httptools.HttpRequestParser(self)
        self.tunnel = False

    def connectionMade(self) -> None:
        self.f.open += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.f.open -= 1

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel:
            self.f.on_tunnel(self, data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.tunnel = True

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.f.on_head(self)

    def on_body(self, body: bytes) -> None:
        self.f.body_bytes += len(body)
        if self.f.keep_bodies:
            self.body += body

    def on_message_complete(self) -> None:
        seen = Seen(self.parser.get_method(), self.url, self.headers, self.body, self.number)
        self.f.seen.append(seen)
        self.f.handler(self, seen)


@dataclass
class UpstreamFactory(Factory):
    handler: Handler = ok_handler
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    body_bytes: int = 0
    keep_bodies: bool = True
    on_head: Callable[[UpstreamProtocol], None] = lambda p: None
    on_tunnel: Callable[[UpstreamProtocol, bytes], None] = lambda p, d: p.transport.write(d)

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        self.connections += 1
        return UpstreamProtocol(self, self.connections)


def listen(factory: Any) -> Any:
    return global_reactor.listenTCP(0, factory, interface="127.0.0.1")


TLS_CA = trustme.CA()
TLS_LEAF = TLS_CA.issue_cert("app.test")


def tls_context() -> SSL.Context:
    """The HTTPS listener's policy (ALPN h2 and http/1.1) with a certificate for app.test."""
    context = policy_context(INTERMEDIATE)
    TLS_LEAF.configure_cert(context)
    return context


def listen_tls(factory: Any) -> Any:
    """``factory`` behind the HTTPS listener's transport (TLS on the socket)."""
    port = DirectTLSPort(0, factory, 50, "127.0.0.1", global_reactor,
                         context_acceptor(tls_context(), global_reactor))
    port.startListening()
    return port


def tls_client(port: int, timeout: float = 5.0) -> ssl.SSLSocket:
    """A client of :func:`listen_tls` that verifies app.test's certificate."""
    context = ssl.create_default_context()
    TLS_CA.configure_trust(context)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname="app.test")


@dataclass
class Rig:
    upstream: UpstreamFactory
    upstream_port: Any
    proxy_port: Any
    factory: Any

    @property
    def port(self) -> int:
        return int(self.proxy_port.getHost().port)

    def stop(self) -> Deferred[Any]:
        self.factory.engine.pool.close()
        d1 = self.upstream_port.stopListening()
        d2 = self.proxy_port.stopListening()
        return gatherResults([d for d in (d1, d2) if d is not None])


def make_rig(
    handler: Handler = ok_handler,
    limits: ProxyLimits | None = None,
    forward_port: int | None = None,
    tls: bool = False,
    **forward: Any,
) -> Rig:
    upstream = UpstreamFactory(handler=handler)
    up_port = listen(upstream)
    target = Forward("127.0.0.1", forward_port or up_port.getHost().port, **forward)
    router = StaticRouter({"app.test": target}, default=target)
    factory = proxy_factory(router, global_reactor, limits or ProxyLimits())
    return Rig(upstream, up_port, listen_tls(factory) if tls else listen(factory), factory)


def raw_exchange(
    port: int, data: bytes, timeout: float = 5.0, half_close: bool = False
) -> Deferred[bytes]:
    """Send ``data`` on a fresh socket from a thread; read until the proxy closes."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except (TimeoutError, ConnectionResetError):
                pass
            return b"".join(chunks)

    return deferToThread(run)


