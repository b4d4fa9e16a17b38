"""The boundary between the proxy engine and the rest of Aegis.

The engine (``aegis.proxy._http1``, ``aegis.proxy._h2``) parses a request head, then asks a
:class:`Router` what to do with it: forward it to an upstream (:class:`Forward`) or answer it
here (:class:`LocalResponse`: redirects, 404, 421, ACME HTTP-01 answers). The hosts layer
implements the router; the engine knows nothing about hosts, certificates or the store.

``route`` runs on the reactor thread for every request, so it must answer from memory and
quickly; it must not raise (an exception is logged and answered with a plain 500).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class RequestHead:
    """A parsed, validated client request head.

    ``target`` is the origin-form path and query (``/a?b``; ``*`` for ``OPTIONS *``);
    absolute-form targets are reduced to origin form and their authority becomes ``host``.
    ``host`` is lowercase with no port and no trailing dot; ``port`` is the port named in the
    ``Host`` header, if any. ``headers`` are as received (names in their original case).
    ``connection`` holds the lowercase tokens of the ``Connection`` headers, read once here
    because both the upgrade check and the upstream head need them.
    """

    method: bytes
    target: bytes
    version: Literal["1.0", "1.1", "2"]
    headers: Headers
    host: str
    port: int | None = None
    connection: frozenset[bytes] = frozenset()

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class ConnectionInfo:
    """What the engine knows about the client connection.

    ``sni`` is the server name the TLS library parsed from the ClientHello (already lowercase
    ASCII, trailing dot kept as sent), None without TLS or without SNI. ``alpn`` is the
    negotiated protocol (``"h2"``, ``"http/1.1"``) or None.
    """

    scheme: Literal["http", "https"]
    client_host: str
    client_port: int
    sni: str | None = None
    alpn: str | None = None


@dataclass(frozen=True)
class Forward:
    """Send the request to ``scheme://host:port``.

    ``verify_tls`` checks an https upstream's certificate against the system trust roots and
    ``tls_server_name`` (default: ``host``). ``host_header`` replaces the client's ``Host``
    when set; otherwise it is passed through. ``response_headers`` are added to every response
    (the hosts layer puts ``Strict-Transport-Security`` here); they replace upstream headers
    of the same name.
    """

    host: str
    port: int
    scheme: Literal["http", "https"] = "http"
    verify_tls: bool = True
    tls_server_name: str | None = None
    host_header: bytes | None = None
    response_headers: Headers = field(default_factory=list)

    @property
    def pool_key(self) -> tuple[str, str, int, bool, str | None]:
        """Connections are shared only between forwards with the same key."""
        return (self.scheme, self.host, self.port, self.verify_tls, self.tls_server_name)


@dataclass(frozen=True)
class LocalResponse:
    """A small complete response the engine sends itself (bodies are at most a few KB)."""

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


class Router(Protocol):
    """Decides where a request goes. Must be fast, memory-only and must not raise."""

    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward | LocalResponse: ...


class AccessLog(Protocol):
    """Records one finished request (:meth:`aegis.logs.AccessLog.record`). Called on the
    reactor thread for every request: it must be cheap and must not raise. ``sent`` is the
    response body bytes sent, ``upstream_ms`` the upstream's time to its response head (None
    when Aegis answered itself)."""

    def __call__(self, head: RequestHead, conn: ConnectionInfo, status: int, sent: int,
                 upstream_ms: int | None) -> None: ...


@dataclass(frozen=True)
class ProxyLimits:
    """Limits and timeouts of the engine (seconds, bytes). Defaults follow nginx's spirit."""

    max_header_bytes: int = 32 * 1024
    max_header_count: int = 100
    # An upstream response's head (status lines and fields, interim 1xx heads included)
    # longer than this is a 502: a misbehaving upstream cannot grow memory without end.
    # Between nginx's one-page proxy_buffer_size and Go's (Caddy's) 10 MB.
    max_response_header_bytes: int = 1024 * 1024
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    body_idle_timeout: float = 60.0
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    upstream_idle_timeout: float = 30.0
    max_idle_per_upstream: int = 64
    max_per_upstream: int = 512
    max_h2_streams: int = 100
    # Where each request is recorded (None: nowhere). Not a limit, but every front and
    # exchange already holds the limits, so the per-request path reads it from here.
    access_log: AccessLog | None = None
    # Longest a client may take to send one whole request, head and body (HTTP/2: per stream)
    # (0: no limit, as nginx and Caddy). The idle timeouts above cannot stop a body
    # trickled one byte just inside ``body_idle_timeout`` at a time; this can.
    request_timeout: float = 0.0
    # RFC 9110 7.6.3 pseudonym for ``Via`` (b"": no Via, as nginx and Caddy by default).
    via: bytes = b""


class StaticRouter:
    """Sends every request to one upstream, or answers 404 for hosts it does not know.

    Small enough for tests and benchmarks; the hosts layer has the real router.
    """

    def __init__(self, routes: dict[str, Forward | LocalResponse],
                 default: Forward | LocalResponse | None = None) -> None:
        self._routes = routes
        self._default = default or LocalResponse(
            404, [(b"content-type", b"text/plain; charset=utf-8")],
            b"404 Not Found: no proxy host is configured for this name.\n")

    def route(self, head: RequestHead, conn: ConnectionInfo) -> Forward | LocalResponse:
        return self._routes.get(head.host, self._default)
