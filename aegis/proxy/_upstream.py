"""Upstream HTTP/1.1 connections (the pool is in :mod:`aegis.proxy._pool`).

One :class:`UpstreamConnection` carries one exchange at a time (no pipelining to upstreams:
a stalled response must not hold later requests hostage). Responses are parsed by llhttp
(``httptools``) into a fresh parser per exchange, so a response that ends early (HEAD, 1xx
handling) can never leave stale parser state behind for the next request.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TxProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aegis.proxy._headers import HOP_BY_HOP, connection_tokens
from aegis.proxy.routing import Headers

if TYPE_CHECKING:
    from aegis.proxy._pool import UpstreamPool

log = Logger()
_FRAMING = HOP_BY_HOP | {b"content-length"}
_STANDARD_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade"})


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off on a TCP connection (what nginx and Go do for HTTP).

    The proxy often writes one message in two pieces (a request head, then body bytes that
    arrived with it). With Nagle on, the second piece waits for the peer to acknowledge the
    first, and the peer delays that ACK while it waits for the rest: a 40 ms stall on a
    loopback POST (measured: p90 43 ms). Transports without the option (UNIX sockets,
    in-memory tests) are left as they are.
    """
    with contextlib.suppress(AttributeError, OSError, NotImplementedError):
        transport.setTcpNoDelay(True)


class UpstreamUnavailable(Exception):
    """Connecting failed. ``status`` is 502 (refused, unresolvable) or 504 (timed out)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"upstream unavailable ({status})")
        self.status = status


class ResponseHandler(Protocol):
    """What an upstream connection reports to the exchange using it. Header lists passed
    on are already free of hop-by-hop headers, ``Content-Length`` and the headers
    ``Connection`` names."""

    def response_interim(self, status: int, headers: Headers) -> None: ...
    def response_head(self, status: int, reason: bytes, headers: Headers,
                      length: int | None, has_body: bool) -> None: ...
    def response_data(self, data: bytes) -> None: ...
    def response_flush(self) -> None: ...
    def response_end(self) -> None: ...
    def response_upgraded(self, status: int, reason: bytes, headers: Headers,
                          rest: bytes) -> None: ...
    def upstream_failed(self, malformed: bool, got_bytes: bool) -> None: ...
    def upstream_paused(self) -> None: ...
    def upstream_resumed(self) -> None: ...


@implementer(IPushProducer)
class UpstreamConnection(TxProtocol):
    """A pooled HTTP/1.1 client connection. It registers itself as the push producer of its
    own transport, so a full upstream send buffer pauses the client that feeds it."""

    def __init__(self, pool: UpstreamPool, key: tuple[Any, ...]) -> None:
        self.pool = pool
        self.key = key
        self.handler: ResponseHandler | None = None
        self.reused = False
        self.reusable = True
        self.tunnel: Any = None
        self._parser: Any = None
        self._parser_ready = False  # the parser sits between two complete responses
        self._head_only = False
        self._status = 0
        self._reason = b""
        self._headers: Headers = []
        self._final = False
        self._got_bytes = False
        self._closed = False
        self._keepalive = True
        self.deadline = 0.0
        self.on_connected: Deferred[UpstreamConnection] | None = None
        self._done_in_feed = False
        self.request_sent = True
        self._head_bytes = 0  # bytes read while a response head is still coming
        self._length: int | None = None
        self._chunked = False
        self._upgrade_headers: Headers = []

    # -- Twisted protocol -------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        no_delay(self.transport)
        waiting, self.on_connected = self.on_connected, None
        if waiting is not None:
            waiting.callback(self)

    def begin(self, handler: ResponseHandler, method: bytes, request_sent: bool) -> None:
        """Start an exchange: responses from now on go to ``handler``. ``request_sent`` is
        false while a request body is still to come (the exchange sets it when done): a
        response that ends before then leaves the connection unusable."""
        self.request_sent = request_sent
        if self.deadline:
            self.deadline = 0.0
            self.pool.sweeper.unwatch(self)
        self.handler = handler
        self._head_only = method == b"HEAD"
        if not self._parser_ready:  # a fresh parser unless the last response ended cleanly
            self._parser = httptools.HttpResponseParser(self)
        self._parser_ready = False
        self._final = False
        self._got_bytes = False
        self._keepalive = True
        self._headers = []
        self._head_bytes = 0

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.handler is None:
            # Bytes nobody asked for: this connection's framing can no longer be trusted.
            self.reusable = False
            self.close()
            return
        self._got_bytes = True
        self._done_in_feed = False
        if not self._final:  # still in the head (or between interim heads)
            self._head_bytes += len(data)
            limit = self.pool.limits.max_response_header_bytes
            if self._head_bytes > limit:
                log.warn("upstream response head longer than {limit} bytes: answered 502",
                         limit=limit)
                self._fail(malformed=True)
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgraded(data[offset:])
            return
        except httptools.HttpParserError:
            self._fail(malformed=True)
            return
        if self.handler is not None and not self._done_in_feed:
            self.handler.response_flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        self._parser, self._parser_ready = None, False  # its callbacks are ours: a cycle
        self.pool.sweeper.unwatch(self)
        self.pool.lost(self)
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.unregisterProducer()
            tunnel.loseConnection()
            return
        handler, self.handler = self.handler, None
        if handler is None:
            return
        if self._final and self._status and not self._head_only and self._close_delimited():
            handler.response_end()
            return
        handler.upstream_failed(False, self._got_bytes)

    # -- IPushProducer (our transport's buffer) ---------------------------------------------
    def pauseProducing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.pauseProducing()
        elif self.handler is not None:
            self.handler.upstream_paused()

    def resumeProducing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.resumeProducing()
        elif self.handler is not None:
            self.handler.upstream_resumed()

    def stopProducing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------
    # After a response completes, the same feed may still hold bytes nobody asked for; the
    # checks on ``_done_in_feed`` turn them into a parse error instead of letting them reach
    # the next exchange (which may already have begun on this connection).
    def on_message_begin(self) -> None:
        if self._done_in_feed:
            raise ValueError("unsolicited response")

    def on_status(self, status: bytes) -> None:
        if self._done_in_feed:
            raise ValueError("unsolicited response")
        self._reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sorted in on_headers_complete, in one loop: a response has several headers, and
        # this callback is the proxy's most frequent call. (A field of a response after a
        # finished one cannot get here: on_message_begin refuses that response first.)
        if not self._final:  # after the head: trailers, dropped (hop-by-hop by nature)
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise ValueError("status out of range")
        self._status = status
        raw, self._headers = self._headers, []
        headers: Headers = []
        connection: list[bytes] = []
        length: int | None = None
        chunked = False
        for name, value in raw:
            lowered = name.lower()
            if lowered not in _FRAMING:
                headers.append((name, value))
            elif lowered == b"content-length":  # framing: never forwarded, the front re-frames
                length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = True
            elif lowered == b"connection":
                connection.append(value)
        named = connection_tokens(connection)
        if named - _STANDARD_TOKENS:
            headers = [(k, v) for k, v in headers if k.lower() not in named]
        if status == 101:
            self._upgrade_headers = headers
            return
        if 100 <= status < 200:
            if self.handler is not None:
                self.handler.response_interim(status, headers)
            return
        self._final = True
        if b"close" in named:
            self._keepalive = False
        if self._parser.get_http_version() != "1.1":
            self._keepalive = False
        has_body = not (self._head_only or status in (204, 304))
        if has_body and length is None and not chunked:
            self._keepalive = False
        self._length = length
        self._chunked = chunked
        assert self.handler is not None  # nosec B101 # narrows a type
        self.handler.response_head(status, self._reason, headers, length, has_body)
        if not has_body:
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self._done_in_feed:
            raise ValueError("unsolicited body")
        if self.handler is not None and not self._head_only:
            self.handler.response_data(body)

    def on_message_complete(self) -> None:
        if not self._final:
            return  # an interim (1xx) response: the final one follows on the same parser
        # llhttp has reset for the next message, so the next exchange may reuse the parser.
        # Never after a HEAD response with a length: llhttp would still expect its body.
        self._parser_ready = True
        if not self._head_only and self._status not in (204, 304):
            self._complete()

    # -- internals --------------------------------------------------------------------------
    def _close_delimited(self) -> bool:
        return self._length is None and not self._chunked

    def _complete(self) -> None:
        """Back to the pool first, so the client's next request can reuse this connection."""
        handler, self.handler = self.handler, None
        self._done_in_feed = True
        if not self._keepalive or not self.request_sent:
            self.reusable = False
        self.pool.release(self)
        if handler is not None:
            handler.response_end()

    def _upgraded(self, rest: bytes) -> None:
        handler, self.handler = self.handler, None
        self.reusable = False
        if handler is None or self._status != 101:
            self._fail(malformed=True, handler=handler)
            return
        handler.response_upgraded(101, self._reason, self._upgrade_headers, rest)

    def _fail(self, malformed: bool, handler: ResponseHandler | None = None) -> None:
        handler = handler or self.handler
        self.handler = None
        self.reusable = False
        self.transport.abortConnection()  # type: ignore[union-attr]
        if handler is not None:
            handler.upstream_failed(malformed, True)

    def idle(self, timeout: float, clock: IReactorTime) -> None:
        """Idle in the pool: closed by the sweeper after ``timeout`` seconds."""
        self.deadline = clock.seconds() + timeout
        self.pool.sweeper.watch(self)

    def expired(self) -> None:
        self.close()

    def close(self) -> None:
        """Close once written out (our producer is unregistered first, or the transport
        would wait for it forever)."""
        if not self._closed and self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection without reuse (the exchange was abandoned)."""
        self.handler = None
        self.reusable = False
        if not self._closed:
            self.transport.abortConnection()  # type: ignore[union-attr]
