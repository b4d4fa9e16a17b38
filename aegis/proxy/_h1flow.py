"""Flow control and deadlines of one HTTP/1.x client connection.

:class:`ClientFlow` is the part of :class:`aegis.proxy._http1.Http1Connection` that decides
when to stop reading from the client (``_pause``/``_resume``, with the reasons that hold it),
what to stop when the client stops reading (``pauseProducing``: the tunnel, the HTTP/2
streams or the exchange's upstream), and when the connection's single deadline falls (the
engine's sweeper calls ``expired``): the header deadline, the body idle timeout, the
keep-alive timeout and the whole-request cap; and how a refused request ends the connection
(``_fatal``: the pipelined requests before it are answered first).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from aegis.proxy._h1wire import CLOSED_PARSER, rejection
from aegis.proxy._timers import body_deadline

log = Logger()


class ClientFlow(Protocol):
    """Reasons the client is held back, and the one deadline of the connection."""

    engine: Any
    deadline: float
    _paused: set[str]
    _closed: bool
    _in_head: bool
    _in_body: bool
    _request_deadline: float
    _active: Any
    _tunnel: Any
    _delegate: Any
    _parser: Any
    _queue: Any
    _responding: bool
    _closing: bool
    _head_out: bool
    _rejection: tuple[int, str] | None

    def _dispatch(self) -> None:
        raise NotImplementedError

    # -- IPushProducer: our transport's send buffer -----------------------------------------
    def pauseProducing(self) -> None:
        if self._tunnel is not None:
            self._tunnel.transport.pauseProducing()
        elif self._delegate is not None:
            self._delegate.pauseProducing()
        elif self._active is not None and self._active.exchange is not None:
            self._active.exchange.pause_response()

    def resumeProducing(self) -> None:
        if self._tunnel is not None:
            self._tunnel.transport.resumeProducing()
        elif self._delegate is not None:
            self._delegate.resumeProducing()
        elif self._active is not None and self._active.exchange is not None:
            self._active.exchange.resume_response()

    def stopProducing(self) -> None:
        pass

    def _close(self) -> None:
        """Close after the buffered bytes are out. A transport still holding our producer
        would wait for it instead of closing, so it is unregistered first."""
        if self.transport is not None and not self._closed:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def _pause(self, why: str) -> None:
        if not self._paused and not self._closed:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        if why in self._paused:
            self._paused.discard(why)
            if not self._paused and not self._closed:
                self.transport.resumeProducing()  # type: ignore[union-attr]

    def _set_timer(self, seconds: float) -> None:
        deadline = self.engine.clock.seconds() + seconds
        if (self._in_head or self._in_body) and self._request_deadline:
            deadline = min(deadline, self._request_deadline)  # the whole-request limit
        self.deadline = deadline

    def _arm_body_timer(self) -> None:
        """Between request-body bytes (see :func:`~aegis.proxy._timers.body_deadline`)."""
        self.deadline = body_deadline(self.engine.clock.seconds(),
                                      self.engine.limits.body_idle_timeout,
                                      self._request_deadline, "upstream" in self._paused)

    def _cancel_timer(self) -> None:
        self.deadline = 0.0

    def expired(self) -> None:
        if self._active is not None and not self._in_body:
            return  # waiting for the upstream: the exchange has its own timeout
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- refusals ---------------------------------------------------------------------------
    def _fatal(self, status: int, reason: str) -> None:
        """Refuse with ``status`` and close.

        Only the request the error is in is refused: complete requests before it on the
        same connection (pipelined, perhaps in the same read) are answered first, then the
        refusal is sent and the connection closes. Nothing more is parsed or read. A
        request whose body framing breaks after it was forwarded has its upstream
        connection aborted, so the upstream never sees it complete.
        """
        self._cancel_timer()
        self._parser = CLOSED_PARSER
        broken = None
        if self._in_body:  # the last request with a complete head is the broken one
            broken = self._queue.pop() if self._queue else self._active
        self._in_head = self._in_body = False
        log.info("rejected request with {status}: {reason}", status=status, reason=reason)
        if broken is not None and broken is self._active:
            if broken.exchange is not None:
                broken.exchange.cancel()
            self._active = None
            self._responding = False
            self._closing = True
            if self._head_out:
                self._close()  # a response is under way: only a broken connection is honest
                return
        if self._active is None and not self._queue:
            self._send_rejection(status, reason)
            return
        self._rejection = (status, reason)
        self._pause("rejected")
        self._dispatch()

    def _send_rejection(self, status: int, reason: str) -> None:
        self._rejection = None
        self.transport.write(rejection(status, reason))  # type: ignore[union-attr]
        self._closing = True
        self._close()
