"""HTTP/1.1 wire helpers of the client-facing connection: queued requests, serialised
responses. Kept apart so :mod:`aegis.proxy._http1` is about state, not bytes."""

from __future__ import annotations

from typing import Literal

from aegis.proxy._exchange import Exchange, error_body, reason_for
from aegis.proxy.routing import Headers, LocalResponse, RequestHead


class Request:
    """A parsed request head waiting for (or in) its exchange."""

    __slots__ = ("body", "complete", "discard", "exchange", "framing", "head", "keepalive",
                 "length", "received", "upgrade")

    def __init__(self, head: RequestHead, framing: Literal["none", "length", "chunked"],
                 length: int | None, keepalive: bool, upgrade: bytes | None) -> None:
        self.head = head
        self.framing = framing
        self.length = length
        self.keepalive = keepalive
        self.upgrade = upgrade
        self.body: list[bytes] = []
        self.received = 0  # body bytes read so far
        self.complete = False
        self.discard = False
        self.exchange: Exchange | None = None


# An upstream may answer before the request body is in (an early 401 or 413, an app that
# ignores the body). Up to this much of the rest is read and dropped so the connection stays
# open, as nginx does; a longer or chunked rest closes it, announced in the response head.
DISCARD_LIMIT = 1024 * 1024


def small_rest(request: Request) -> bool:
    """Whether the unread rest of ``request``'s body is short enough to read and drop."""
    return (request.complete or request.framing == "none"
            or (request.framing == "length" and request.length is not None
                and request.length - request.received <= DISCARD_LIMIT))


def response_head(status: int, reason: bytes, headers: Headers, extra: list[bytes]) -> bytes:
    """Status line, ``headers``, then ``extra`` (complete header lines), then the blank line."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_for(status))]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    lines += extra
    lines.append(b"\r\n")
    return b"".join(lines)


def local_response(response: LocalResponse, closing: bool, head_only: bool) -> bytes:
    """A complete :class:`LocalResponse`; framing headers are ours, never the router's."""
    headers = [(n, v) for n, v in response.headers
               if n.lower() not in (b"content-length", b"connection", b"transfer-encoding")]
    extra = [b"Content-Length: %d\r\n" % len(response.body)]
    if closing:
        extra.append(b"Connection: close\r\n")
    head = response_head(response.status, b"", headers, extra)
    return head if head_only else head + response.body


def rejection(status: int, reason: str) -> bytes:
    """The answer to a request we refuse: plain text, then the connection closes."""
    body = b"%s%s\n" % (error_body(status), reason.encode("ascii", "replace"))
    return response_head(status, b"", [(b"Content-Type", b"text/plain; charset=utf-8")],
                         [b"Content-Length: %d\r\n" % len(body), b"Connection: close\r\n"]
                         ) + body


class _ClosedParser:
    """The parser of a closed connection: whatever still arrives is dropped."""

    def feed_data(self, data: bytes) -> None:
        pass


CLOSED_PARSER = _ClosedParser()


def public_reason(exc: Exception) -> str:
    """llhttp's messages are fixed strings about the request itself: safe to echo."""
    text = str(exc) or "malformed request"
    return "".join(c for c in text if c.isprintable())[:120]
