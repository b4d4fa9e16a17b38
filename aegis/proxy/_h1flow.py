"""Flow control and deadlines of one HTTP/1.x client connection.

:class:`ClientFlow` is the part of :class:`aegis.proxy._http1.Http1Connection` that decides
when to stop reading from the client (``_pause``/``_resume``, with the reasons that hold it),
what to stop when the client stops reading (``pauseProducing``: the tunnel, the HTTP/2
streams or the exchange's upstream), and when the connection's single deadline falls (the
engine's sweeper calls ``expired``): the header deadline, the body idle timeout, the
keep-alive timeout and the whole-request cap.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol

from aegis.proxy._timers import body_deadline


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
