"""The admin listener's HTTP/1.1 channel: twisted.web's parser with the proxy front's limits.

twisted.web's :class:`~twisted.web.http.HTTPChannel` parses well but defends little: an
over-long header line only calls ``loseConnection`` (over TLS that waits for the client's
close_notify, so the socket stays open and keeps reading), a head may arrive one byte
every few seconds for ever (each byte restarts the idle timer), and after an early answer
the rest of a body is still read, decrypted and buffered. :class:`LimitedHTTPChannel` adds
what the proxy's own HTTP/1.1 front does:

* **head size**: a request line plus header fields longer than :data:`MAX_HEAD_BYTES`
  (one line or all of them) is answered ``431`` and the connection closed;
* **header deadline**: a head must be complete :data:`HEADER_TIMEOUT` seconds after its
  first byte, else ``408`` and close (slowloris);
* **refusal closes**: after any refusal (``400``, ``408``, ``413``, ``431``) nothing more is
  parsed, the idle timer is not restarted, the socket stops being read (no more bytes are
  decrypted), and the connection is aborted :data:`REFUSAL_LINGER` seconds later at the
  latest, whatever the client does;
* **drain**: on shutdown an idle or refused connection closes at once, a busy one after its
  response.

Why limits around twisted.web rather than Klein behind the proxy engine's front: that front
is built around forwarding to an upstream connection (flow control, pooling, upstream
deadlines); an in-process resource would need a second, synchronous request path through
it. Klein's routes, request objects and StubTreq tests stay as they are this way, and the
few places twisted.web is weak are closed here, each with a test.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from zope.interface import implementer

from aegis.admin._errors import error_body
from aegis.listeners import IDrainable

#: Request line plus all header fields, in bytes (twisted.web's own default).
MAX_HEAD_BYTES = 16 * 1024
#: Seconds from the first byte of a request head until it must be complete.
HEADER_TIMEOUT = 10.0
#: Seconds a refused connection may take to receive its answer before it is aborted.
REFUSAL_LINGER = 2.0

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}


@implementer(IDrainable)
class LimitedHTTPChannel(HTTPChannel):
    """One admin connection (see the module docstring for the limits it adds)."""

    MAX_LENGTH = MAX_HEAD_BYTES
    totalHeadersSize = MAX_HEAD_BYTES
    header_timeout = HEADER_TIMEOUT

    def __init__(self) -> None:
        super().__init__()
        self.refused = False
        self._head_timer: IDelayedCall | None = None
        self._linger: IDelayedCall | None = None

    # -- input ------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # refused input neither counts as activity nor gets parsed
        if self.line_mode and not self._handlingRequest and self._head_timer is None:
            self._head_timer = self.callLater(self.header_timeout, self._head_too_slow)
        super().dataReceived(data)
        if not self.refused and self.line_mode and (
            self._receivedHeaderSize + len(self._buffer) > self.totalHeadersSize
        ):
            self.refuse(431, "header_too_large",
                        f"request heads are limited to {self.totalHeadersSize} bytes")

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(431, "header_too_large",
                        f"request heads are limited to {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(431, "header_too_large",
                    f"request heads are limited to {self.totalHeadersSize} bytes")

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_head_timer()
        super().allHeadersReceived()

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self.refuse(408, "header_timeout",
                    f"the request head did not arrive within {self.header_timeout:g} seconds")

    # -- refusal ----------------------------------------------------------------------------
    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` in the admin error shape on the raw transport and close.

        Written directly because no request has been dispatched (twisted.web answers
        malformed requests the same way). Idempotent: only the first refusal is sent.
        """
        if self.refused or self.transport is None:
            return
        self.refused = True
        self._cancel_head_timer()
        self.setTimeout(None)
        self.persistent = False
        body = error_body(code, message)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))
            + b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
            + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        _stop_reading(self.transport)
        self._linger = self.callLater(REFUSAL_LINGER, self._abort)
        self.loseConnection()

    def _abort(self) -> None:
        self._linger = None
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    # -- IDrainable ---------------------------------------------------------------------------
    def drain(self) -> None:
        """Close now when idle or refused, else after the current response."""
        self.persistent = False
        if self.refused:
            self._abort()
        elif not self._handlingRequest:
            self.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._cancel_head_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        super().connectionLost(reason)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None and self._head_timer.active():
            self._head_timer.cancel()
        self._head_timer = None


def _stop_reading(transport: Any) -> None:
    """Stop reading the socket under any TLS wrappers, so a refused client's further bytes
    are neither received nor decrypted (writing the answer continues)."""
    bottom = transport
    while getattr(bottom, "transport", None) is not None:
        bottom = bottom.transport
    pause = getattr(bottom, "pauseProducing", None)
    if pause is not None and not getattr(bottom, "disconnecting", False):
        pause()
