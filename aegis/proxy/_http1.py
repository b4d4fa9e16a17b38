"""The HTTP/1.1 client-facing connection: llhttp parsing, pipelining, timeouts, tunnels.

Requests are parsed by one ``httptools.HttpRequestParser`` per connection and answered
strictly in order. Only one request is forwarded at a time; pipelined requests behind it are
parsed, queued, and the socket is paused while any wait (so at most one read's worth of
bytes is ever held). Everything ambiguous ends in a 400 and a closed connection.

One read timer covers the connection's states: ``keepalive_timeout`` while idle between
requests, ``header_timeout`` (absolute, slowloris) from the first byte of a head until it is
complete, ``body_idle_timeout`` (reset by every read) while a request body arrives. While a
request is being read, ``request_timeout`` (if set) caps both: the whole request, head and
body, must arrive within it, or the connection is dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import httptools
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from aegis.listeners import IDrainable
from aegis.proxy._exchange import Exchange, error_body
from aegis.proxy._h1flow import ClientFlow
from aegis.proxy._h1wire import (
    CLOSED_PARSER,
    Request,
    local_response,
    public_reason,
    response_head,
    small_rest,
)
from aegis.proxy._headers import RequestRejected, validate_request, wants_upgrade
from aegis.proxy._upstream import UpstreamConnection, no_delay
from aegis.proxy.routing import ConnectionInfo, Forward, Headers, LocalResponse, RequestHead

log = Logger()


@implementer(IPushProducer, IDrainable)
class Http1Connection(ClientFlow):
    """One client connection speaking HTTP/1.x (or handing over to HTTP/2 after ALPN)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info: ConnectionInfo | None = None
        self._parser: Any = httptools.HttpRequestParser(self)
        self._delegate: Any = None
        self._url = b""
        self._headers: Headers = []
        self._head_bytes = 0
        self._in_head = False
        self._in_body = False
        self._reject: tuple[int, str] | None = None
        self._queue: deque[Request] = deque()
        self._active: Request | None = None
        self._responding = False
        self._chunked_out = False
        self._closing = False
        self._closed = False
        self._paused: set[str] = set()
        self.deadline = 0.0
        self._tunnel: UpstreamConnection | None = None
        self._upgrade_rest: list[bytes] | None = None
        self._head_out = False
        self._head_size = 0
        self._held = b""
        self._request_deadline = 0.0
        # A refusal waiting for the pipelined requests before it to be answered.
        self._rejection: tuple[int, str] | None = None

    # -- connection lifecycle ---------------------------------------------------------------
    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        no_delay(self.transport)
        self.engine.pool.sweeper.watch(self)
        self._set_timer(self.engine.limits.header_timeout)

    def _connection_info(self) -> ConnectionInfo:
        info = self.engine.connection_info(self.transport)
        assert isinstance(info, ConnectionInfo)  # nosec B101 # narrows a type
        return info

    def dataReceived(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.dataReceived(data)
            return
        if self.info is None:
            self.info = self._connection_info()
            if self.info.alpn == "h2":
                self._cancel_timer()
                self._delegate = self.engine.h2_connection(self, self.info)
                self._delegate.dataReceived(data)
                return
        if self._tunnel is not None:
            self._tunnel.write(data)
            return
        if self._upgrade_rest is not None:
            self._upgrade_rest.append(data)
            return
        if self._in_body:
            self._arm_body_timer()
        elif not self._in_head:
            self._in_head = True
            self._head_bytes = 0
            total = self.engine.limits.request_timeout
            self._request_deadline = self.engine.clock.seconds() + total if total else 0.0
            self._set_timer(self.engine.limits.header_timeout)
        if self._in_head:
            self._head_bytes += len(data)  # raw bound; reset when a head completes
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._upgrade_rest = [data[offset:]]
            self._pause("upgrade")
            self._dispatch()
            return
        except httptools.HttpParserCallbackError as exc:
            if self._reject is None:
                # Our own code raised inside a parser callback: a bug, not a bad request.
                log.failure("proxy request handling failed",
                            Failure(exc.__context__ or exc))
                self._fatal(500, "internal error")
                return
            status, reason = self._reject
            self._reject = None
            self._fatal(status, reason)
            return
        except httptools.HttpParserError as exc:
            status, reason = self._reject or (400, public_reason(exc))
            self._reject = None
            self._fatal(status, reason)
            return
        if self._in_head and self._head_bytes > self.engine.limits.max_header_bytes + 65536:
            self._fatal(431, "request head too large")
            return
        self._dispatch()

    def _dispatch(self) -> None:
        """Start the first queued request if none is active (after a read is parsed)."""
        if self._active is None and self._queue and not self._closed:
            self._next()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        # The parser holds our bound callbacks: left in place, that reference cycle would
        # keep this protocol, its transport and the TLS connection until the cyclic garbage
        # collector's next run instead of freeing them now.
        self._parser = CLOSED_PARSER
        self.engine.pool.sweeper.unwatch(self)
        if self._delegate is not None:
            self._delegate.connectionLost(reason)
            return
        if self._tunnel is not None:
            self._tunnel.abort()
            self._tunnel = None
        for request in [self._active, *self._queue]:
            if request is not None and request.exchange is not None:
                request.exchange.cancel()
        self._queue.clear()
        self._active = None

    def drain(self) -> None:
        """Finish the response in flight, then close; close now when idle."""
        if self._delegate is not None:
            self._delegate.drain()
            return
        self._closing = True
        if self._active is None and not self._in_head and self._tunnel is None:
            self._close()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.engine.limits.max_header_bytes:
            self._reject = (414, "request target too long")
            raise ValueError("target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # trailer fields of a chunked body: dropped
        self._headers.append((name, value))
        self._head_size += len(name) + len(value) + 4
        if len(self._headers) > self.engine.limits.max_header_count:
            self._reject = (431, "too many header fields")
            raise ValueError("too many headers")
        if self._head_size > self.engine.limits.max_header_bytes:
            self._reject = (431, "request head too large")
            raise ValueError("head too large")

    def on_headers_complete(self) -> None:
        parser = self._parser
        raw_version = parser.get_http_version()
        if raw_version not in ("1.0", "1.1"):
            self._reject = (400, "unsupported HTTP version")
            raise ValueError(raw_version)
        version: Literal["1.0", "1.1"] = "1.1" if raw_version == "1.1" else "1.0"
        try:
            head = validate_request(parser.get_method(), self._url, version, self._headers)
        except RequestRejected as exc:
            self._reject = (exc.status, str(exc))
            raise
        framing: Literal["none", "length", "chunked"] = "none"
        length: int | None = None
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                framing, length = "length", int(value)
            elif lowered == b"transfer-encoding":
                framing = "chunked"
        # After an Upgrade request llhttp parses nothing more: the connection becomes a
        # tunnel (upstream said 101) or closes after the response (it did not).
        keepalive = parser.should_keep_alive() and not parser.should_upgrade()
        request = Request(head, framing, length, keepalive, wants_upgrade(head))
        self._in_head = False
        self._head_bytes = 0
        self._in_body = framing != "none"
        if self._in_body:
            self._arm_body_timer()
        else:
            self._cancel_timer()
        self._queue.append(request)
        if self._active is not None or len(self._queue) > 1:
            self._pause("pipeline")
        # Dispatched by dataReceived once this read is parsed: a framing error later in the
        # same bytes (a bad chunk size) then refuses the request before anything of it
        # reaches an upstream.

    def on_body(self, body: bytes) -> None:
        request = self._queue[-1] if self._queue else self._active
        if request is None:
            return
        request.received += len(body)
        if request.discard:
            return
        if request.exchange is not None:
            request.exchange.request_data(body)
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        request = self._queue[-1] if self._queue else self._active
        if request is None:
            return
        request.complete = True
        if request.exchange is not None:
            request.exchange.request_end()
        elif request is self._active and not self._responding:
            self._finished_exchange()

    # -- dispatch ---------------------------------------------------------------------------
    def _next(self) -> None:
        if not self._queue:
            self._resume("pipeline")
            return
        request = self._queue.popleft()
        self._active = request
        if not self._queue:
            self._resume("pipeline")
        assert self.info is not None  # nosec B101 # narrows a type
        try:
            decision = self.engine.router.route(request.head, self.info)
        except Exception:
            log.failure("router raised")
            decision = LocalResponse(500, [], error_body(500))
        if not request.keepalive:
            self._closing = True
        if isinstance(decision, Forward):
            exchange = Exchange(self, self.engine.pool, self.engine.clock, self.engine.limits,
                                request.head, self.info, decision, request.framing,
                                request.length, request.upgrade,
                                counters=self.engine.counters)
            request.exchange = exchange
            self._responding = True
            exchange.start()
            body, request.body = request.body, []
            for chunk in body:
                exchange.request_data(chunk)
            if request.complete:
                exchange.request_end()
            return
        request.discard = True
        request.body = []
        self._local(request.head, decision)
        if request.complete:
            self._finished_exchange()

    def _local(self, head: RequestHead, response: LocalResponse) -> None:
        self.transport.write(local_response(  # type: ignore[union-attr]
            response, self._closing, head.method == b"HEAD"))
        assert self.info is not None  # nosec B101 # narrows a type
        record = self.engine.limits.access_log
        if record is not None:
            record(head, self.info, response.status, len(response.body), None)

    def _finished_exchange(self) -> None:
        """The active request's response is out and its body fully read."""
        self._active = None
        self._responding = False
        self._head_out = False
        if self._closing:
            self._close()
            return
        if self._queue:
            self._next()
        elif self._rejection is not None:
            self._send_rejection(*self._rejection)  # the requests before it are answered
        elif not self._in_head:
            self._set_timer(self.engine.limits.keepalive_timeout)

    # -- Front (called by the exchange) -----------------------------------------------------
    def send_interim(self, status: int, headers: Headers) -> None:
        self.transport.write(response_head(status, b"", headers, []))  # type: ignore[union-attr]

    def send_head(self, status: int, reason: bytes, headers: Headers,
                  length: int | None, has_body: bool) -> None:
        assert self._active is not None  # nosec B101 # narrows a type
        version = self._active.head.version
        lines: list[bytes] = []
        self._chunked_out = False
        self._head_out = True
        if length is not None and status not in (204, 304) and status >= 200:
            lines.append(b"Content-Length: %d\r\n" % length)
        elif has_body:
            if version == "1.1":
                self._chunked_out = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self._closing = True
        if not small_rest(self._active):
            self._closing = True  # the upstream answered early; too much body left to drop
        if self._closing:
            lines.append(b"Connection: close\r\n")
        elif version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        # Held back until the first body bytes (or the end, or the end of this upstream
        # read): head and a small body then leave in one write, one TLS record.
        self._held = response_head(status, reason, headers, lines)

    def send_data(self, data: bytes) -> None:
        if self._chunked_out:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self._held:
            data, self._held = self._held + data, b""
        self.transport.write(data)  # type: ignore[union-attr]

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.transport.write(held)  # type: ignore[union-attr]

    def send_end(self) -> None:
        if self._chunked_out:
            self._held += b"0\r\n\r\n"
            self._chunked_out = False
        self.flush()
        self._resume("upstream")
        request = self._active
        if request is not None and not request.complete:
            if self._closing:  # announced in the head: see small_rest
                self._close()
                return
            # The upstream answered before the whole body arrived: read the rest, drop it,
            # and go on with the next request when it is in (the body timers still run).
            request.discard = True
            request.exchange = None
            self._responding = False
            return
        self._finished_exchange()

    def send_error(self, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        request = self._active
        if request is None or self._closed:
            return
        self.flush()
        if self._head_out:
            # The response head went out already: only a broken connection is honest now.
            self._close()
            self._closing = True
            return
        self._closing = True
        self._responding = False
        request.exchange = None
        request.discard = True
        self._local(request.head, LocalResponse(
            status, [(b"content-type", b"text/plain; charset=utf-8"), *headers],
            error_body(status)))
        self._close()

    def pause_reading(self) -> None:
        self._pause("upstream")
        if self._in_body:
            self._arm_body_timer()  # the idle part stops while we hold the client back

    def resume_reading(self) -> None:
        self._resume("upstream")
        if self._in_body:
            self._arm_body_timer()

    def start_tunnel(self, upstream: UpstreamConnection, status: int, reason: bytes,
                     headers: Headers, rest: bytes) -> None:
        assert self._active is not None  # nosec B101 # narrows a type
        self.flush()
        upgrade = b"Connection: upgrade\r\nUpgrade: %s\r\n" % (self._active.upgrade or b"")
        self.transport.write(  # type: ignore[union-attr]
            response_head(status, reason, headers, [upgrade]) + rest)
        self._cancel_timer()
        self._tunnel = upstream
        upstream.tunnel = self.transport
        buffered, self._upgrade_rest = self._upgrade_rest or [], None
        self._active = None
        self._paused.clear()
        self.transport.resumeProducing()  # type: ignore[union-attr]
        if buffered:
            upstream.write(b"".join(buffered))
