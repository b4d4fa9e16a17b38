"""Handshake deadlines for a listening port, with one timer instead of one per connection.

Used by :class:`aegis.tls.direct.DirectTLSPort`; see :class:`HandshakeDeadlines`.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class TimedHandshake(Protocol):
    """A connection whose handshake can time out."""

    def handshake_timed_out(self, timeout: float) -> None:
        """The deadline passed; close if the handshake is still running."""


class HandshakeDeadlines:
    """The handshake deadline of every connection of a port, with one timer.

    All deadlines are the same length, so the oldest connection still handshaking is always
    the first to expire: connections sit in an insertion-ordered dict (O(1) to add and to
    forget when the handshake completes) and a single timed call wakes at the oldest
    deadline, instead of a ``callLater`` (a heap entry) and its cancellation per connection.
    """

    def __init__(self, clock: IReactorTime, timeout: float) -> None:
        self._clock = clock
        self.timeout = timeout
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
            connection.handshake_timed_out(self.timeout)


__all__ = ["HandshakeDeadlines", "TimedHandshake"]
