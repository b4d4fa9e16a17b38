"""One proxied request: the link between a client-side front and an upstream connection.

The front (an HTTP/1.1 connection or an HTTP/2 stream) feeds the request body in and gets
the response out through the small :class:`Front` protocol; the exchange owns the upstream
connection for the duration and applies back-pressure both ways:

* upstream send buffer full → ``front.pause_reading()`` (the client's socket stops being read);
* client send buffer full (or HTTP/2 window closed) → ``pause_response()`` pauses the upstream
  socket.

Failures map to statuses before the response head went out (connect refused → 502, no
answer within ``upstream_timeout`` → 504, malformed head → 502) and to an abort of the client
side after it (never a truncated response that looks complete).
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Literal, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from aegis.monitor.counters import TrafficCounters
from aegis.proxy._headers import client_response_headers, upstream_head
from aegis.proxy._pool import UpstreamPool
from aegis.proxy._upstream import UpstreamConnection, UpstreamUnavailable
from aegis.proxy.routing import ConnectionInfo, Forward, Headers, ProxyLimits, RequestHead


class Front(Protocol):
    """The client side of an exchange."""

    def send_interim(self, status: int, headers: Headers) -> None: ...
    def send_head(self, status: int, reason: bytes, headers: Headers,
                  length: int | None, has_body: bool) -> None: ...
    def send_data(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def send_end(self) -> None: ...
    def send_error(self, status: int,
                   headers: Sequence[tuple[bytes, bytes]] = ()) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def start_tunnel(self, upstream: UpstreamConnection, status: int, reason: bytes,
                     headers: Headers, rest: bytes) -> None: ...


class Exchange:
    """Forwards one request; see the module docstring."""

    def __init__(
        self,
        front: Front,
        pool: UpstreamPool,
        clock: IReactorTime,
        limits: ProxyLimits,
        head: RequestHead,
        conn: ConnectionInfo,
        forward: Forward,
        framing: Literal["none", "length", "chunked"],
        length: int | None,
        upgrade: bytes | None = None,
        counters: TrafficCounters | None = None,
    ) -> None:
        self.front = front
        self._counters = counters
        self.head = head
        self._pool = pool
        self._clock = clock
        self._limits = limits
        self._conn = conn
        self.forward = forward
        self._framing = framing
        self._length = length
        self._upgrade = upgrade
        self._upstream: UpstreamConnection | None = None
        self._pending: list[bytes] = []
        self._request_done = framing == "none"
        self._body_started = False
        self._retried = False
        self._head_sent = False
        self.finished = False
        self.status = 0
        self.sent = 0
        self._started = 0.0
        self._upstream_ms: int | None = None
        self.deadline = 0.0
        self._response_paused = False

    # -- from the front ---------------------------------------------------------------------
    def start(self) -> None:
        self._started = self._clock.seconds()
        self._pool.sweeper.watch(self)
        idle = self._pool.idle_connection(self.forward)
        if idle is not None:
            self._connected(idle)
            return
        self._pool.acquire(self.forward).addCallbacks(self._connected, self._connect_failed)

    def request_data(self, data: bytes) -> None:
        if self.finished or not data:
            return
        if self._framing == "chunked":
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self._upstream is None:
            self._pending.append(data)
            self.front.pause_reading()
            return
        self._body_started = True
        self._upstream.write(data)

    def request_end(self) -> None:
        if self.finished:
            return
        self._request_done = True
        if self._framing == "chunked":
            if self._upstream is None:
                self._pending.append(b"0\r\n\r\n")
            else:
                self._upstream.write(b"0\r\n\r\n")
        if self._upstream is not None:
            self._upstream.request_sent = True
            self._arm()

    def pause_response(self) -> None:
        self._response_paused = True
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume_response(self) -> None:
        self._response_paused = False
        if self._upstream is not None and self._upstream.transport is not None:
            self._upstream.transport.resumeProducing()  # type: ignore[attr-defined]

    def cancel(self) -> None:
        """The client went away: drop the upstream connection (it is mid-exchange)."""
        if self.finished:
            return
        self.finished = True
        self._disarm()
        if self._upstream is not None:
            self._upstream.abort()

    # -- connection setup -------------------------------------------------------------------
    def _connected(self, upstream: UpstreamConnection) -> None:
        if self.finished:
            self._pool.release(upstream)
            return
        self._upstream = upstream
        upstream.begin(self, self.head.method, self._request_done)
        head = upstream_head(self.head, self._conn, self.forward, self._framing,
                             self._length, self._upgrade, self._limits.via)
        if self._pending:  # body bytes that came while connecting leave with the head
            pending, self._pending = self._pending, []
            self._body_started = True
            upstream.write(b"".join([head, *pending]))
            self.front.resume_reading()
        else:
            upstream.write(head)
        if self._response_paused and upstream.transport is not None:
            upstream.transport.pauseProducing()  # type: ignore[attr-defined]
        if self._request_done:
            self._arm()

    def _connect_failed(self, failure: Failure) -> None:
        if self.finished:
            return
        value = failure.value
        status = value.status if isinstance(value, UpstreamUnavailable) else 502
        self._error(status)

    # -- timers -----------------------------------------------------------------------------
    def _arm(self) -> None:
        self.deadline = self._clock.seconds() + self._limits.upstream_timeout

    def _disarm(self) -> None:
        """No more timeouts for this exchange (it is over)."""
        self.deadline = 0.0
        self._pool.sweeper.unwatch(self)

    def expired(self) -> None:
        if self._upstream is not None:
            self._upstream.abort()
        self._error(504)

    # -- ResponseHandler (from the upstream connection) -------------------------------------
    def response_interim(self, status: int, headers: Headers) -> None:
        if not self.finished and self.head.version != "1.0":
            self.front.send_interim(status, self._via(client_response_headers(headers, None)))

    def _via(self, headers: Headers) -> Headers:
        """Our ``Via`` entry after the upstream's own, when configured (responses from
        upstreams are HTTP/1.1 here)."""
        if not self._limits.via:
            return headers
        return [*headers, (b"Via", b"1.1 " + self._limits.via)]

    def response_head(self, status: int, reason: bytes, headers: Headers,
                      length: int | None, has_body: bool) -> None:
        self._upstream_ms = int((self._clock.seconds() - self._started) * 1000)
        self.status = status
        self._head_sent = True
        self._arm()
        self.front.send_head(status, reason,
                             self._via(client_response_headers(headers, self.forward)),
                             length, has_body)

    def response_data(self, data: bytes) -> None:
        self.sent += len(data)
        if self.deadline:
            self.deadline = self._clock.seconds() + self._limits.upstream_timeout
        self.front.send_data(data)

    def response_flush(self) -> None:
        if not self.finished:
            self.front.flush()

    def response_end(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._disarm()
        self._upstream = None
        self.front.send_end()
        self._log()

    def response_upgraded(self, status: int, reason: bytes, headers: Headers,
                          rest: bytes) -> None:
        self.finished = True
        self._disarm()
        self.status = status
        upstream, self._upstream = self._upstream, None
        assert upstream is not None  # nosec B101 # narrows a type
        self._log()
        self.front.start_tunnel(upstream, status, reason,
                                self._via(client_response_headers(headers, self.forward)), rest)

    def upstream_failed(self, malformed: bool, got_bytes: bool) -> None:
        if self.finished:
            return
        upstream, self._upstream = self._upstream, None
        self._disarm()
        if (upstream is not None and upstream.reused and not got_bytes and not malformed
                and not self._body_started and not self._retried and self._request_done):
            # A pooled connection the upstream had just closed: try once on a fresh one.
            self._retried = True
            self._pool.connect(self.forward).addCallbacks(self._connected,
                                                          self._connect_failed)
            return
        self._error(502)

    def upstream_paused(self) -> None:
        self.front.pause_reading()

    def upstream_resumed(self) -> None:
        self.front.resume_reading()

    # -- endings ----------------------------------------------------------------------------
    def _error(self, status: int) -> None:
        if self.finished:
            return
        self.finished = True
        self._disarm()
        self.status = status if not self._head_sent else 0
        # the host's own response headers (HSTS on HTTPS) belong on our error pages too
        self.front.send_error(status, self.forward.response_headers)
        self._log()

    def _log(self) -> None:
        if self._counters is not None:  # the metrics: a few dict and list increments
            self._counters.proxied(self.head.host, self.status, self._upstream_ms)
        record = self._limits.access_log
        if record is not None:
            record(self.head, self._conn, self.status, self.sent, self._upstream_ms)


def error_body(status: int) -> bytes:
    """Plain error text that names nothing internal."""
    return _ERRORS.get(status, b"Error\n")


_ERRORS: dict[int, bytes] = {
    400: b"400 Bad Request\n",
    405: b"405 Method Not Allowed\n",
    408: b"408 Request Timeout\n",
    413: b"413 Content Too Large\n",
    414: b"414 URI Too Long\n",
    421: b"421 Misdirected Request\n",
    431: b"431 Request Header Fields Too Large\n",
    500: b"500 Internal Server Error\n",
    502: b"502 Bad Gateway: the upstream server could not be reached or answered badly.\n",
    504: b"504 Gateway Timeout: the upstream server did not answer in time.\n",
}
def reason_for(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"
