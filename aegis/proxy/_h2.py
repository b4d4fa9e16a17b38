"""HTTP/2 from clients (ALPN ``h2``), each stream proxied as one HTTP/1.1 exchange.

Built on the ``h2`` state machine directly. Flow control carries back-pressure end to end:

* request bodies: DATA is acknowledged (the client's window reopened) only while the stream's
  upstream can take more; when the upstream socket is full, acknowledgements stop and the
  client runs out of window;
* response bodies: data goes out as the stream's and connection's windows allow; while more
  than :data:`_HIGH_WATER` bytes wait for window, the upstream socket is paused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

from h2.config import H2Configuration
from h2.connection import H2Connection as H2State
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes
from twisted.logger import Logger

from aegis.proxy._exchange import Exchange, error_body
from aegis.proxy._headers import RequestRejected, validate_request
from aegis.proxy._timers import body_deadline
from aegis.proxy._upstream import UpstreamConnection
from aegis.proxy.routing import ConnectionInfo, Forward, Headers, LocalResponse

log = Logger()
_HIGH_WATER = 256 * 1024


class _Stream:
    """The :class:`~aegis.proxy._exchange.Front` of one HTTP/2 stream."""

    def __init__(self, owner: H2Connection, stream_id: int) -> None:
        self.owner = owner
        self.id = stream_id
        self.exchange: Exchange | None = None
        self.pending = bytearray()
        self.ending = False
        self.head_sent = False
        self.paused_upstream = False
        self.reading_paused = False
        self.unacked = 0
        self.closed = False
        self.deadline = 0.0  # request-body timer (the engine's sweeper); 0: not due
        self._request_deadline = 0.0
        self._body_timed = False  # between HEADERS and END_STREAM of a forwarded request

    # The request-body timeouts, as for HTTP/1.1: ``body_idle_timeout`` between DATA frames
    # (not while we hold the client back), capped by ``request_timeout`` for the whole body.
    def start_body_timer(self) -> None:
        limits, clock = self.owner.engine.limits, self.owner.engine.clock
        if limits.request_timeout:
            self._request_deadline = clock.seconds() + limits.request_timeout
        self._body_timed = True
        self._arm_body_timer()
        self.owner.engine.pool.sweeper.watch(self)

    def _arm_body_timer(self) -> None:
        engine = self.owner.engine
        self.deadline = body_deadline(engine.clock.seconds(), engine.limits.body_idle_timeout,
                                      self._request_deadline, self.reading_paused)

    def body_progress(self) -> None:
        if self._body_timed:
            self._arm_body_timer()

    def stop_body_timer(self) -> None:
        self._body_timed = False
        self.deadline = self._request_deadline = 0.0
        self.owner.engine.pool.sweeper.unwatch(self)

    def expired(self) -> None:
        """The request body stalled or took too long: reset the stream, drop the upstream."""
        self.stop_body_timer()
        log.info("HTTP/2 stream {id}: request body timed out; stream reset", id=self.id)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.cancel()
        self.owner.reset(self, ErrorCodes.CANCEL)

    # Front
    def send_interim(self, status: int, headers: Headers) -> None:
        if status == 100:
            return  # h2 clients do not need it: the body is already flowing
        self.owner.headers(self.id, status, headers, end=False)

    def send_head(self, status: int, reason: bytes, headers: Headers,
                  length: int | None, has_body: bool) -> None:
        self.head_sent = True
        if length is not None and status not in (204, 304):
            headers = [*headers, (b"content-length", b"%d" % length)]
        # With a body to come, the HEADERS frame waits for the first DATA frames (or for
        # the exchange's flush at the end of this upstream read): one write, one record.
        self.owner.headers(self.id, status, headers, end=not has_body, write=not has_body)
        if not has_body:
            self.closed = True

    def send_data(self, data: bytes) -> None:
        self.pending += data
        self.owner.flush(self, write=False)

    def flush(self) -> None:
        self.owner.write()  # the end of an upstream read: out with what is framed

    def send_end(self) -> None:
        if self.closed:
            self.owner.forget(self)
            return
        self.ending = True
        self.owner.flush(self)

    def send_error(self, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        if self.head_sent:
            self.owner.reset(self, ErrorCodes.INTERNAL_ERROR)
            return
        body = error_body(status)
        self.owner.local(self, LocalResponse(
            status, [(b"content-type", b"text/plain; charset=utf-8"), *headers], body))

    def pause_reading(self) -> None:
        self.reading_paused = True
        self.body_progress()  # the idle part pauses while we hold the client back

    def resume_reading(self) -> None:
        self.reading_paused = False
        self.body_progress()
        if self.unacked:
            unacked, self.unacked = self.unacked, 0
            self.owner.ack(self, unacked)

    def start_tunnel(self, upstream: UpstreamConnection, status: int, reason: bytes,
                     headers: Headers, rest: bytes) -> None:
        upstream.abort()  # no Upgrade over HTTP/2 (RFC 9113 8.6)
        self.owner.reset(self, ErrorCodes.PROTOCOL_ERROR)


class H2Connection:
    """Speaks HTTP/2 on the transport of the :class:`Http1Connection` that negotiated it."""

    def __init__(self, engine: Any, outer: Any, info: ConnectionInfo) -> None:
        self.engine = engine
        self.outer = outer
        self.transport = outer.transport
        self.info = info
        self.state = H2State(H2Configuration(client_side=False, header_encoding=None))
        self.state.local_settings.update({
            SettingCodes.MAX_CONCURRENT_STREAMS: engine.limits.max_h2_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: engine.limits.max_header_bytes,
        })
        self.state.initiate_connection()
        self.streams: dict[int, _Stream] = {}
        self._draining = False
        self._batching = False
        self._write()
        self._update_idle()

    def _update_idle(self) -> None:
        """An HTTP/2 connection with no open stream is idle: it gets the keep-alive timeout
        (the outer connection's sweeper deadline closes it); any open stream clears it."""
        if self.streams:
            self.outer._cancel_timer()
        else:
            self.outer._set_timer(self.engine.limits.keepalive_timeout)

    # -- transport side ---------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Handle one read; everything it frames (acks, local answers) leaves in one write."""
        self._batching = True
        try:
            self._received(data)
        finally:
            self._batching = False
        self._write()
        self._update_idle()

    def _received(self, data: bytes) -> None:
        try:
            events = self.state.receive_data(data)
        except H2Error as exc:
            log.info("HTTP/2 protocol error: {error}", error=type(exc).__name__)
            with contextlib.suppress(H2Error):
                self.state.close_connection(ErrorCodes.PROTOCOL_ERROR)
            self._close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._request(event.stream_id, event.headers, event.stream_ended is not None)
            elif isinstance(event, DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.stop_body_timer()
                if stream is not None and stream.exchange is not None:
                    stream.exchange.request_end()
            elif isinstance(event, StreamReset):
                self._cancel(event.stream_id)
            elif isinstance(event, WindowUpdated):
                for stream in list(self.streams.values()):
                    if stream.pending or stream.ending:
                        self.flush(stream)
            elif isinstance(event, ConnectionTerminated):
                self._close()

    def connectionLost(self, reason: Any) -> None:
        for stream_id in list(self.streams):
            self._cancel(stream_id)

    def pauseProducing(self) -> None:
        for stream in self.streams.values():
            if stream.exchange is not None:
                stream.exchange.pause_response()

    def resumeProducing(self) -> None:
        for stream in self.streams.values():
            if stream.exchange is not None and not stream.paused_upstream:
                stream.exchange.resume_response()

    def drain(self) -> None:
        self._draining = True
        self.state.close_connection()
        self._write()
        if not self.streams:
            self._close()

    # -- requests ---------------------------------------------------------------------------
    def _request(self, stream_id: int, raw: list[tuple[bytes, bytes]], ended: bool) -> None:
        stream = _Stream(self, stream_id)
        self.streams[stream_id] = stream
        pseudo: dict[bytes, bytes] = {}
        headers: Headers = []
        cookies: list[bytes] = []
        for name, value in raw:
            if name.startswith(b":"):
                pseudo[name] = value
            elif name == b"cookie":
                cookies.append(value)
            else:
                headers.append((name, value))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        authority = pseudo.get(b":authority")
        if authority is not None and not any(k == b"host" for k, _ in headers):
            headers.insert(0, (b"host", authority))
        try:
            head = validate_request(pseudo.get(b":method", b""), pseudo.get(b":path", b""),
                                    "2", headers)
        except RequestRejected as exc:
            self.local(stream, LocalResponse(exc.status, [], error_body(exc.status)))
            return
        framing: Literal["none", "length", "chunked"] = "none"
        length: int | None = None
        if not ended:
            declared = next((v for k, v in headers if k == b"content-length"), None)
            framing, length = ("length", int(declared)) if declared else ("chunked", None)
        try:
            decision = self.engine.router.route(head, self.info)
        except Exception:
            log.failure("router raised")
            decision = LocalResponse(500, [], error_body(500))
        if isinstance(decision, Forward):
            stream.exchange = Exchange(stream, self.engine.pool, self.engine.clock,
                                       self.engine.limits, head, self.info, decision,
                                       framing, length, counters=self.engine.counters)
            stream.exchange.start()  # END_STREAM arrives as its own StreamEnded event
            if not ended:
                stream.start_body_timer()
        else:
            self.local(stream, decision, head.method == b"HEAD")
            record = self.engine.limits.access_log
            if record is not None:
                record(head, self.info, decision.status, len(decision.body), None)

    def _data(self, stream_id: int, data: bytes, flow: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.exchange is None:
            self.state.acknowledge_received_data(flow, stream_id)
            return
        stream.exchange.request_data(data)
        stream.body_progress()
        if stream.reading_paused:
            stream.unacked += flow
        else:
            self.state.acknowledge_received_data(flow, stream_id)

    def _cancel(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.stop_body_timer()
        if stream is not None and stream.exchange is not None:
            stream.exchange.cancel()
        self._update_idle()

    # -- responses --------------------------------------------------------------------------
    def headers(self, stream_id: int, status: int, headers: Headers, end: bool,
                write: bool = True) -> None:
        out = [(b":status", b"%d" % status)]
        out += [(name.lower(), value) for name, value in headers]
        try:
            self.state.send_headers(stream_id, out, end_stream=end)
        except H2Error:
            self._cancel(stream_id)
        if write:
            self._write()

    def flush(self, stream: _Stream, write: bool = True) -> None:
        """Send what the flow-control windows allow; pause the upstream past high water."""
        state = self.state
        try:
            while stream.pending:
                window = min(state.local_flow_control_window(stream.id),
                             state.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = bytes(stream.pending[:window])
                del stream.pending[:window]
                state.send_data(stream.id, chunk)
            if stream.ending and not stream.pending:
                state.end_stream(stream.id)
                stream.closed = True
                self.forget(stream)
        except H2Error:
            self._cancel(stream.id)
        if write:
            self._write()
        exchange = stream.exchange
        if exchange is None:
            return
        if len(stream.pending) > _HIGH_WATER and not stream.paused_upstream:
            stream.paused_upstream = True
            exchange.pause_response()
        elif stream.paused_upstream and len(stream.pending) <= _HIGH_WATER // 2:
            stream.paused_upstream = False
            exchange.resume_response()

    def local(self, stream: _Stream, response: LocalResponse, head_only: bool = False) -> None:
        headers = [(n, v) for n, v in response.headers if n.lower() != b"content-length"]
        headers.append((b"content-length", b"%d" % len(response.body)))
        empty = head_only or not response.body
        self.headers(stream.id, response.status, headers, end=empty)
        stream.head_sent = True
        stream.exchange = None
        if empty:
            self.forget(stream)
            return
        stream.pending += response.body
        stream.ending = True
        self.flush(stream)

    def reset(self, stream: _Stream, code: ErrorCodes) -> None:
        stream.stop_body_timer()
        with contextlib.suppress(H2Error):
            self.state.reset_stream(stream.id, code)
        self.streams.pop(stream.id, None)
        self._write()
        self._update_idle()

    def ack(self, stream: _Stream, amount: int) -> None:
        try:
            self.state.acknowledge_received_data(amount, stream.id)
        except H2Error:
            return
        self._write()

    def forget(self, stream: _Stream) -> None:
        stream.stop_body_timer()
        self.streams.pop(stream.id, None)
        if self._draining and not self.streams:
            self._close()
        self._update_idle()

    def write(self) -> None:
        """Send every frame h2 has ready (outside a read: inside, the read's end does)."""
        self._write()

    def _write(self) -> None:
        if self._batching:
            return
        data = self.state.data_to_send()
        if data:
            self.transport.write(data)

    def _close(self) -> None:
        """Close after the frames ready now (GOAWAY, last DATA) have been written."""
        self._batching = False
        self._write()
        self.outer._close()
