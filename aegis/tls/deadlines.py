"""Handshake deadlines for a listening port, with one timer instead of one per connection.

Used by both HTTPS transports (:class:`aegis.tls.port.DirectTLSPort` and
:class:`aegis.tls.transport.TimedTLSFactory`); see :class:`HandshakeDeadlines`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


class TimedHandshake(Protocol):
    """A connection whose handshake can time out. It is forgotten when its handshake
    completes or it closes, so whatever is still watched at its deadline is stuck."""

    def getPeer(self) -> Any:
        """The client's address, for the log line."""

    def handshake_timed_out(self) -> None:
        """The deadline passed with the handshake unfinished: abort the connection."""


class HandshakeDeadlines:
    """The handshake deadline of every connection of a port, with one timer.

    All deadlines are the same length, so the oldest connection still handshaking is always
    the first to expire: connections sit in an insertion-ordered dict (O(1) to add and to
    forget when the handshake completes) and a single timed call wakes at the oldest
    deadline, instead of a ``callLater`` (a heap entry) and its cancellation per connection.
    """

    def __init__(self, clock: IReactorTime, timeout: float,
                 on_timeout: Callable[[], object] | None = None) -> None:
        self._clock = clock
        self.timeout = timeout
        self._on_timeout = on_timeout  # the metrics' count of timed-out handshakes
        self._pending: dict[TimedHandshake, float] = {}
        self._timer: IDelayedCall | None = None

    def watch(self, connection: TimedHandshake) -> None:
        self._pending[connection] = self._clock.seconds() + self.timeout
        if self._timer is None:
            self._timer = self._clock.callLater(self.timeout, self._sweep)

    def forget(self, connection: TimedHandshake) -> None:
        self._pending.pop(connection, None)

    def _sweep(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        expired = []
        for connection, deadline in self._pending.items():
            if deadline > now:
                self._timer = self._clock.callLater(deadline - now, self._sweep)
                break
            expired.append(connection)
        for connection in expired:
            del self._pending[connection]
            log.info("TLS handshake from {peer} did not finish within {timeout}s; closing",
                     peer=str(connection.getPeer()), timeout=self.timeout)
            if self._on_timeout is not None:
                self._on_timeout()
            connection.handshake_timed_out()


__all__ = ["HandshakeDeadlines", "TimedHandshake"]
