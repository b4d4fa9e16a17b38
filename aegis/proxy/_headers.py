"""Request validation and header rewriting, shared by the HTTP/1.1 and HTTP/2 front ends.

llhttp (through ``httptools``) already refuses most ambiguous framing: CL together with TE,
duplicate or empty ``Content-Length``, ``+5``, ``0x`` chunk sizes, bare LF, obs-fold, NUL and
bare CR in values, and transfer codings other than a final ``chunked``. What it lets through
and we refuse here: transfer codings before ``chunked`` (``gzip, chunked``: no upstream should
have to guess), ``Transfer-Encoding`` on HTTP/1.0, HTTP/0.9, a missing or repeated ``Host``,
targets that are neither origin-form nor absolute-form, ``CONNECT``.

Nothing the client sent is forwarded as raw bytes: the upstream request head is rebuilt here
from parsed fields, without hop-by-hop headers, with ``X-Forwarded-*`` and ``Forwarded`` set
by us (client-supplied ones are dropped, never extended: they cannot be trusted).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

from aegis.proxy.routing import ConnectionInfo, Forward, Headers, RequestHead

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})
_OURS = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"forwarded", b"x-real-ip",
})
_HOST_RE = re.compile(rb"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$")


class RequestRejected(Exception):
    """The request cannot be forwarded. ``status`` is 400, 405, 414 or 431; ``str()`` is a
    short public reason that names nothing internal."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@lru_cache(maxsize=4096)
def normalise_host(raw: bytes) -> tuple[str, int | None]:
    """``Host`` header value → (lowercase name without port or trailing dot, port or None).
    Cached: a proxy sees the same few Host values over and over."""
    match = _HOST_RE.match(raw.strip())
    if match is None:
        raise RequestRejected(400, "invalid Host header")
    port_text = match.group(1)
    name = raw.strip()
    if port_text is not None:
        name = name[: -(len(port_text) + 1)]
    port = int(port_text) if port_text is not None else None
    if port is not None and port > 65535:
        raise RequestRejected(400, "invalid Host header")
    text = name.decode("ascii").lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise RequestRejected(400, "invalid Host header")
    return text, port


def _split_absolute(target: bytes) -> tuple[bytes, bytes]:
    """``http://host:port/path?q`` → (``host:port``, ``/path?q``)."""
    rest = target.split(b"://", 1)[1]
    slash = rest.find(b"/")
    query = rest.find(b"?")
    cut = min(i for i in (slash, query, len(rest)) if i >= 0)
    authority, path = rest[:cut], rest[cut:]
    if path.startswith(b"?") or not path:
        path = b"/" + path
    if b"@" in authority:
        raise RequestRejected(400, "userinfo in request target")
    return authority, path


def validate_request(
    method: bytes,
    target: bytes,
    version: Literal["1.0", "1.1", "2"],
    headers: Headers,
    default_host: bytes | None = None,
) -> RequestHead:
    """Check what llhttp left to us and build the :class:`RequestHead`.

    ``default_host`` is HTTP/2's ``:authority``. Raises :class:`RequestRejected`.
    """
    if method == b"CONNECT":
        raise RequestRejected(405, "CONNECT is not supported")
    hosts: list[bytes] = []
    connection: list[bytes] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"host":
            hosts.append(value)
        elif lowered == b"transfer-encoding":
            if version == "1.0":
                raise RequestRejected(400, "Transfer-Encoding in an HTTP/1.0 request")
            if value.strip().lower() != b"chunked":
                raise RequestRejected(400, "unsupported transfer coding")
        elif lowered == b"connection":
            connection.append(value)
    tokens = connection_tokens(connection)
    if len(hosts) > 1:
        raise RequestRejected(400, "more than one Host header")
    if target.startswith((b"http://", b"https://")):
        authority, target = _split_absolute(target)
        hosts = [authority]
    elif target == b"*":
        if method != b"OPTIONS":
            raise RequestRejected(400, "invalid request target")
    elif not target.startswith(b"/"):
        raise RequestRejected(400, "invalid request target")
    if not hosts and default_host is not None:
        hosts = [default_host]
    if not hosts:
        if version == "1.1":
            raise RequestRejected(400, "missing Host header")
        return RequestHead(method, target, version, headers, "", None, tokens)
    host, port = normalise_host(hosts[0])
    return RequestHead(method, target, version, headers, host, port, tokens)


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Lowercase tokens of ``Connection`` header ``values`` (the callers already pick those
    fields out while they read the head)."""
    return frozenset(token.strip().lower() for value in values for token in value.split(b",")
                     if token.strip())


def wants_upgrade(head: RequestHead) -> bytes | None:
    """The ``Upgrade`` value when the client asks for one (``Connection: upgrade``)."""
    if head.version != "1.1" or b"upgrade" not in head.connection:
        return None
    return head.header(b"upgrade")


@lru_cache(maxsize=4096)
def _client_fields(client_host: str, scheme: str) -> tuple[bytes, bytes]:
    """(X-Forwarded-For/-Proto lines, start of the Forwarded line) for one client."""
    node = f'"[{client_host}]"' if ":" in client_host else client_host
    client = client_host.encode("ascii", "replace")
    proto = scheme.encode("ascii")
    return (b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (client, proto),
            b"Forwarded: for=%s;proto=%s" % (node.encode("ascii", "replace"), proto))


def upstream_head(
    head: RequestHead,
    conn: ConnectionInfo,
    forward: Forward,
    framing: Literal["none", "length", "chunked"],
    content_length: int | None,
    upgrade: bytes | None,
    via: bytes = b"",
) -> bytes:
    """Serialise the request head for the upstream from parsed fields only.

    ``via``: when set, a ``Via`` field line naming the protocol the request came in with
    (``1.1``, ``2``) and this pseudonym follows the client's own ``Via`` lines (RFC 9110
    7.6.3: separate field lines are the same as one comma-joined value).
    """
    named = head.connection
    out = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    host_value = forward.host_header
    for name, value in head.headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in _OURS or lowered in named:
            continue
        if lowered == b"host":
            if host_value is None:
                host_value = value
            continue
        if lowered == b"content-length":
            continue
        out += [name, b": ", value, b"\r\n"]
    if host_value is None:
        host_value = head.host.encode("ascii") if head.host else forward.host.encode("ascii")
    out += [b"Host: ", host_value, b"\r\n"]
    if framing == "length":
        out += [b"Content-Length: ", str(content_length).encode("ascii"), b"\r\n"]
    elif framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    original_host = head.header(b"host") or head.host.encode("ascii")
    lines, forwarded = _client_fields(conn.client_host, conn.scheme)
    out += [
        lines, b"X-Forwarded-Host: ", original_host, b"\r\n",
        forwarded, b";host=\"", original_host.replace(b'"', b""), b"\"\r\n",
    ]
    if via:
        out += [b"Via: ", head.version.encode("ascii"), b" ", via, b"\r\n"]
    if upgrade is not None:
        out += [b"Connection: upgrade\r\nUpgrade: ", upgrade, b"\r\n"]
    out.append(b"\r\n")
    return b"".join(out)


def client_response_headers(upstream: Headers, forward: Forward | None) -> Headers:
    """Upstream response headers (hop-by-hop ones already removed by the upstream
    connection) with the forward's own added, replacing same-named ones."""
    if forward is None or not forward.response_headers:
        return upstream
    replaced = {name.lower() for name, _ in forward.response_headers}
    kept = [(name, value) for name, value in upstream if name.lower() not in replaced]
    kept.extend(forward.response_headers)
    return kept
